//! HTTP/2 serving of the gRPC routes over connections already accepted and
//! authenticated.
//!
//! Owns: the HTTP/2 settings of every connection (concurrent calls, receive
//! windows, and the per-call send buffer, which bounds what a call whose client
//! does not read holds in the transport: tonic's own server does not expose it),
//! handing every request its connection's [`PeerInfo`], and the graceful drain on
//! shutdown (GOAWAY; calls in flight finish; then every connection task has
//! ended). Must never accept or authenticate connections (`tls`, `server`) nor
//! know which services the routes hold.

use std::future::Future;
use std::io;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::Connected;

use crate::tls::PeerInfo;

/// The HTTP/2 settings of every connection.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Calls one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// What a client may send on one call before the hub reads it.
    pub stream_window: u32,
    /// What a client may send on one connection before the hub reads it.
    pub connection_window: u32,
    /// What one call may hold buffered for sending beyond what the client's
    /// flow-control window lets out.
    pub max_send_buffer: usize,
}

/// Serves `routes` on every connection from `incoming` until `signal`
/// completes; then stops accepting, drains every connection gracefully and
/// returns once all have closed.
pub async fn serve<C>(
    routes: Routes,
    incoming: impl Stream<Item = io::Result<C>>,
    settings: Settings,
    signal: impl Future<Output = ()>,
) where
    C: AsyncRead + AsyncWrite + Connected<ConnectInfo = PeerInfo> + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_stream_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_send_buf_size(settings.max_send_buffer);
    let draining = CancellationToken::new();
    // Every connection task holds a sender; `recv` returns None once all ended.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(signal);
    tokio::pin!(incoming);
    loop {
        let conn = tokio::select! {
            () = &mut signal => break,
            conn = incoming.next() => conn,
        };
        match conn {
            None => break,
            Some(Err(error)) => tracing::debug!(%error, "an incoming connection failed"),
            Some(Ok(conn)) => spawn_connection(
                conn,
                &builder,
                routes.clone(),
                draining.clone(),
                alive.clone(),
            ),
        }
    }
    draining.cancel();
    drop(alive);
    let _ = all_closed.recv().await;
}

fn spawn_connection<C>(
    conn: C,
    builder: &http2::Builder<TokioExecutor>,
    routes: Routes,
    draining: CancellationToken,
    alive: mpsc::Sender<()>,
) where
    C: AsyncRead + AsyncWrite + Connected<ConnectInfo = PeerInfo> + Unpin + Send + 'static,
{
    let peer = conn.connect_info();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            // Handlers read the caller from here (`tls::peer_of`).
            request.extensions_mut().insert(peer.clone());
            let mut routes = routes.clone();
            async move {
                std::future::poll_fn(|cx| {
                    Service::<hyper::Request<hyper::body::Incoming>>::poll_ready(&mut routes, cx)
                })
                .await?;
                routes.call(request).await
            }
        });
    let connection = builder.serve_connection(TokioIo::new(conn), service);
    tokio::spawn(async move {
        let _alive = alive;
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended");
                }
                return;
            }
            () = draining.cancelled() => {}
        }
        connection.as_mut().graceful_shutdown();
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended while draining");
        }
    });
}
