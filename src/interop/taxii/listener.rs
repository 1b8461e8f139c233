//! Serves the TAXII routes over HTTPS with mutual TLS, on a listener the caller
//! bound.
//!
//! Owns: the TAXII connections: the hub's TLS configuration (same CA, CRLs and
//! server certificate, reloaded the same way) offering ALPN `http/1.1` instead
//! of `h2`, the accept loop (`tls::incoming`, so an unknown or revoked
//! certificate never gets an HTTP exchange), HTTP/1.1 with a header timeout,
//! and each request carrying the connection's [`PeerInfo`]. Must never bind its
//! own port, accept a connection `tls::incoming` did not verify, or keep
//! serving after `stop`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::taxii::{Taxii, routes};
use crate::tls::{self, PeerInfo};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request in progress at shutdown may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves TAXII on `listener` until `stop` is cancelled; `configs` carries the
/// hub's current TLS configuration (see `credentials`).
pub async fn serve(
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
    taxii: Taxii,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "TAXII 2.1 serving at /taxii2/");
    }
    let router = routes::router(taxii);
    let incoming = tls::incoming(listener, http1_configs(configs, stop.clone()));
    tokio::pin!(incoming);
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            conn = incoming.next() => match conn {
                Some(Ok(conn)) => conn,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let peer: PeerInfo = conn.peer().clone();
            let remote = peer.remote_addr;
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(peer.clone());
                router.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(conn), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(DRAIN_TIMEOUT, connection).await {
                        Ok(served) => served,
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "TAXII connection ended");
            }
        });
    }
}

/// The hub's TLS configurations, each offering HTTP/1.1 instead of HTTP/2,
/// following reloads until `stop`.
fn http1_configs(
    mut configs: watch::Receiver<Arc<ServerConfig>>,
    stop: CancellationToken,
) -> watch::Receiver<Arc<ServerConfig>> {
    let http1 = |config: &Arc<ServerConfig>| {
        let mut config = ServerConfig::clone(config);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    let (sender, receiver) = watch::channel(http1(&configs.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = sender.closed() => return,
                changed = configs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let config = http1(&configs.borrow_and_update());
                    sender.send_replace(config);
                }
            }
        }
    });
    receiver
}
