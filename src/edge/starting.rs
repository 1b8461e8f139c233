//! Start-up as clients see it: while the hub opens its database and replays the
//! state view, the gRPC listener already accepts (mutual TLS as always), health
//! answers NOT_SERVING and the hub's and admin's RPCs answer UNAVAILABLE ("the
//! hub is starting"), so that a client learns the hub is not ready instead of
//! hanging in the listen queue or being told it is listening.
//!
//! Owns: that phase and its end (connections made during it are sent GOAWAY and
//! reconnect to the full hub). Must never serve anything but health and the
//! UNAVAILABLE answers, nor outlast start-up.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::Status;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::admin::AdminService;
use crate::api::HubService;
use crate::error::{Error, Result};
use crate::proto::server::admin_service_server::AdminServiceServer;
use crate::proto::server::indicator_hub_service_server::IndicatorHubServiceServer;
use crate::server::Severable;

/// How long connections made during start-up get to close after it, before the
/// full hub takes the listener over (they are sent GOAWAY and reconnect).
const STARTING_DRAIN: Duration = Duration::from_secs(1);

/// Serves only `health` (NOT_SERVING) on `incoming` until `starting` ends, so
/// that a client connecting meanwhile learns that the hub is starting rather
/// than waiting in the listen queue; then sends those connections GOAWAY.
pub(crate) async fn serve_health_while<T>(
    incoming: Pin<&mut (impl Stream<Item = io::Result<Severable>> + ?Sized)>,
    health: HealthServer<impl Health>,
    starting: JoinHandle<Result<T>>,
) -> Result<T> {
    let (started, started_signal) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(Starting::<IndicatorHubServiceServer<HubService>>::default())
        .add_service(Starting::<AdminServiceServer<AdminService>>::default())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = started_signal.await;
        });
    tokio::pin!(server);
    let mut starting = starting;
    let mut server_ended = false;
    let outcome = tokio::select! {
        outcome = &mut starting => outcome,
        served = &mut server => {
            server_ended = true;
            if let Err(error) = served {
                tracing::warn!(%error, "serving health during start-up failed");
            }
            (&mut starting).await
        }
    };
    let _ = started.send(());
    if !server_ended && tokio::time::timeout(STARTING_DRAIN, server).await.is_err() {
        tracing::debug!("connections made during start-up still open; the hub serves on");
    }
    outcome.map_err(|e| Error::Unavailable(format!("start-up was interrupted: {e}")))?
}

/// Answers every RPC of service `S` with UNAVAILABLE while the hub starts.
struct Starting<S>(PhantomData<fn() -> S>);

impl<S> Default for Starting<S> {
    fn default() -> Self {
        Starting(PhantomData)
    }
}

impl<S> Clone for Starting<S> {
    fn clone(&self) -> Self {
        Starting(PhantomData)
    }
}

impl<S: NamedService> NamedService for Starting<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Starting<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        ready(Ok(Status::unavailable(
            "the hub is starting (opening its database and replaying the state view); \
             health is NOT_SERVING until it can answer: retry shortly",
        )
        .into_http()))
    }
}
