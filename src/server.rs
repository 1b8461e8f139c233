//! Wires the hub together and serves it until shutdown.
//!
//! Owns: start-up (open the log, replay, start the writer), serving over the given
//! listener with mutual TLS, and the shutdown drain with its grace timeout. Must
//! never bind its own port or listen for signals: callers (main, tests) pass a
//! bound listener and a shutdown future.

use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Hub, HubService};
use crate::config::{Config, read_text};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::proto::server::indicator_hub_server::IndicatorHubServer;
use crate::registry::Registry;
use crate::sequencer::Sequencer;
use crate::tls;

/// Largest request the hub decodes (a full batch of 1000 indicators fits).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Serves the hub on `listener` until `shutdown` completes, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let registry = Registry::load(&config.registry)?;
    let tls_config = tls::server_config(
        &read_text(&config.tls.ca_cert)?,
        &read_text(&config.tls.server_cert)?,
        &read_text(&config.tls.server_key)?,
        &config
            .tls
            .crls
            .iter()
            .map(|p| read_text(p))
            .collect::<Result<Vec<_>>>()?,
    )?;
    let (_tls_updates, tls_current) = tokio::sync::watch::channel(tls_config);

    let data_dir = config.data_dir.clone();
    let feed_capacity = config.feed_capacity;
    let (log, sequencer, feed, writer) = tokio::task::spawn_blocking(move || {
        let log = Log::open(&data_dir)?;
        let (sequencer, feed, writer) = Sequencer::start(log.clone(), feed_capacity)?;
        Ok::<_, Error>((log, sequencer, feed, writer))
    })
    .await
    .map_err(|e| Error::Unavailable(format!("start-up was interrupted: {e}")))??;

    let stop = CancellationToken::new();
    let hub = Hub {
        log: log.clone(),
        feed: feed.clone(),
        sequencer,
        registry,
        stop: stop.clone(),
    };
    tracing::info!(
        addr = %listener.local_addr().map_err(|e| Error::io("listener address", e))?,
        head = feed.committed(),
        data_dir = %config.data_dir.display(),
        "hub serving"
    );

    let service =
        IndicatorHubServer::new(HubService::new(hub)).max_decoding_message_size(MAX_REQUEST_BYTES);
    let stopping = stop.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending streams");
        stopping.cancel();
    };
    let served = {
        let serve = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(tls::incoming(listener, tls_current), signal);
        tokio::pin!(serve);
        tokio::select! {
            served = &mut serve => served,
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(config.shutdown_grace).await;
            } => {
                tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace timeout: closing remaining connections");
                Ok(())
            }
        }
        // The server future, holding the service and every connection, ends here.
    };
    // The service (and with it every sequencer handle) is gone: the writer drains
    // its queue and stops; then everything is flushed.
    tokio::task::spawn_blocking(move || {
        if writer.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
        log.flush()
    })
    .await
    .map_err(|e| Error::Unavailable(format!("shutdown was interrupted: {e}")))??;
    tracing::info!("hub stopped");
    served.map_err(|e| Error::Tls(format!("serving: {e}")))
}
