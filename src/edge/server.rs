//! Wires the hub together and serves it until shutdown.
//!
//! Owns: start-up (open the log, apply stored registry changes, replay, start the
//! writer and the audit trail; meanwhile only health answers, NOT_SERVING), serving over the given listeners (gRPC with
//! mutual TLS: the hub, admin, health and reflection services; Prometheus
//! metrics over plain HTTP; TAXII 2.1 over HTTPS with mutual TLS), reloading TLS credentials when triggered, and the
//! shutdown drain with its grace timeout (after which every remaining connection
//! is severed, so that the hub always stops). Must never bind its own port or listen
//! for signals: callers (main, tests) pass bound listeners, a shutdown future and
//! a reload trigger.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::Connected;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::{self, AdminService};
use crate::api::{Hub, HubService};
use crate::audit::Audit;
use crate::budget::Budget;
use crate::cluster;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::cursor::Cursors;
use crate::error::{Error, Result};
use crate::expiry;
use crate::http2;
use crate::limits::{self, Limiter};
use crate::log::Log;
use crate::metrics::{self, Metrics};
use crate::org_changes::OrgApplier;
use crate::proto::server::admin_service_server::AdminServiceServer;
use crate::proto::server::indicator_hub_service_server::IndicatorHubServiceServer;
use crate::registry::Registry;
use crate::sequencer::Sequencer;
use crate::starting;
use crate::streams::Streams;
use crate::taxii::{self, Taxii};
use crate::tls;

/// What `dip-hub serve` prints on stdout once the hub answers (database open,
/// state view replayed; `Controls::ready`), followed by the bound address
/// (`listening on 127.0.0.1:7443`): how a parent process that started the hub on
/// port 0 learns where it is, and that it is ready.
pub const LISTENING_PREFIX: &str = "listening on ";

/// Largest request the hub decodes (a full batch of 1000 indicators fits).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Concurrent HTTP/2 streams (calls) one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// HTTP/2 receive windows: what a client may send before the hub reads it, per
/// stream and per connection (the hub's memory for request bodies in transit).
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// What one call may hold buffered for sending beyond its client's window
/// (hyper's default is 400 KiB: with a thousand stalled calls, 400 MiB).
pub const SEND_BUFFER_BYTES: usize = 32 * 1024;

/// The already-bound listeners the hub serves on.
pub struct Listeners {
    /// gRPC over mutual TLS.
    pub grpc: TcpListener,
    /// Prometheus metrics over plain HTTP (`/metrics`); none: no metrics endpoint.
    pub metrics: Option<TcpListener>,
    /// TAXII 2.1 over HTTPS with mutual TLS (`/taxii2/`); none: no TAXII server.
    pub taxii: Option<TcpListener>,
}

/// How the caller steers a running hub.
pub struct Controls {
    /// Completes when the hub should shut down.
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    /// Each message reloads the TLS credentials and CRLs (e.g. on SIGHUP).
    pub reload: Option<mpsc::Receiver<()>>,
    /// Called once the hub can answer (database open, state view replayed, health
    /// SERVING), e.g. to announce that it is listening.
    pub ready: Option<Box<dyn FnOnce() + Send>>,
}

impl Controls {
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Controls {
        Controls {
            shutdown: Box::pin(shutdown),
            reload: None,
            ready: None,
        }
    }
}

/// Serves the hub on `listener` until `shutdown` completes, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listeners = Listeners {
        grpc: listener,
        metrics: None,
        taxii: None,
    };
    serve(config, listeners, Controls::new(shutdown)).await
}

/// Serves the hub on `listeners` until `controls.shutdown` completes, then drains.
pub async fn serve(config: Config, listeners: Listeners, controls: Controls) -> Result<()> {
    config.validate()?;
    let registry = Registry::load(&config.registry)?;
    let metrics = Metrics::new();
    let limiter = Limiter::new(config.role_limits.clone(), metrics.clone());

    let data_dir = config.data_dir.clone();
    let feed_capacity = config.feed_capacity;
    let (tls_files, start_registry, start_metrics) =
        (config.tls.clone(), registry.clone(), metrics.clone());
    let (credentials, tls_current) =
        tokio::task::spawn_blocking(move || Credentials::load(tls_files))
            .await
            .map_err(|e| Error::Unavailable(format!("start-up was interrupted: {e}")))??;
    // Connections are accepted (and authenticated) from now on; until the hub
    // can answer, only health does, NOT_SERVING.
    let sever = CancellationToken::new();
    let grpc_addr = listeners
        .grpc
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    // Each organisation's connection limit applies from the first connection.
    let admitted = Admission {
        limiter: limiter.clone(),
        registry: registry.clone(),
    };
    let mut incoming = Box::pin(Severable::all(
        admitted.connections(tls::incoming(listeners.grpc, tls_current.clone())),
        &sever,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    let stop = CancellationToken::new();
    let stop_cluster = stop.clone();
    set_health(&health, ServingStatus::NotServing).await;
    let cluster_servers = config.cluster.clone();
    let starting = tokio::spawn(async move {
        // Cluster mode: the log is the cluster's JetStream stream.
        let node = match cluster_servers.is_empty() {
            true => None,
            false => Some(cluster::Node::join(&cluster_servers, grpc_addr.to_string()).await?),
        };
        let backend = node.as_ref().map(|node| node.backend_factory());
        let shared_cursors = node.as_ref().map(|node| node.cursors.clone());
        // The cluster's registry changes through its last revision, applied before serving.
        let shared_changes = match &node {
            Some(node) => Some(node.registry.current().await?),
            None => None,
        };
        tokio::task::spawn_blocking(move || {
            let log = Log::open(&data_dir)?;
            let changes = admin::apply_stored(&log, &start_registry)?;
            if changes > 0 {
                tracing::info!(
                    changes,
                    "applied stored organisation changes over the registry file"
                );
            }
            let (sequencer, feed, writer) = match backend {
                None => Sequencer::start_with(log.clone(), feed_capacity, start_metrics)?,
                Some(backend) => Sequencer::start_on(
                    log.clone(),
                    Box::new(backend(log.clone())?),
                    feed_capacity,
                    start_metrics,
                )?,
            };
            let (mut cursors, cursor_thread) = Cursors::start(log.clone())?;
            if let Some(shared) = shared_cursors {
                cursors = cursors.shared(shared);
            }
            let org_sync = shared_changes
                .map(|(changes, last)| {
                    let applier = OrgApplier::new(log.clone(), start_registry.clone());
                    for (org_id, bytes, revision) in &changes {
                        match applier.apply_blocking(org_id, bytes, *revision) {
                            Ok(_) => {}
                            // Not a change any hub wrote: reported, not applied.
                            Err(error @ Error::Corrupt { .. }) => {
                                tracing::error!(%error, org = %org_id, revision, "skipped an unreadable registry change");
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    if !changes.is_empty() {
                        tracing::info!(
                            changes = changes.len(),
                            revision = last,
                            "applied the cluster's registry changes"
                        );
                    }
                    Ok::<_, Error>((applier, last))
                })
                .transpose()?;
            Ok::<_, Error>((
                log,
                sequencer,
                feed,
                writer,
                cursors,
                cursor_thread,
                node,
                org_sync,
            ))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("start-up was interrupted: {e}")))?
    });
    tracing::info!(addr = %grpc_addr, "hub starting: health answers NOT_SERVING until the database is open and replayed");
    let (log, sequencer, feed, writer, cursors, cursor_thread, node, org_sync) =
        starting::serve_health_while(incoming.as_mut(), health_service.clone(), starting).await?;
    let applier = sequencer.applier();

    let (audit, audit_task) = Audit::start(log.clone(), metrics.clone());
    let expiry = expiry::spawn(
        log.clone(),
        sequencer.clone(),
        sequencer.expiry_alarm(),
        stop.clone(),
    );
    let hub = Hub {
        log: log.clone(),
        feed: feed.clone(),
        view: sequencer.view(),
        sequencer,
        cursors,
        registry,
        stop: stop.clone(),
        streams: Streams::new(stop.clone()),
        credentials,
        metrics: metrics.clone(),
        audit,
        limits: limiter.clone(),
        budget: Budget::new(config.subscriber_budget_bytes),
    };
    tracing::info!(
        addr = %grpc_addr,
        head = feed.committed(),
        data_dir = %config.data_dir.display(),
        "hub serving"
    );

    let side_tasks = CancellationToken::new();
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            log.clone(),
            feed.clone(),
            side_tasks.clone(),
        ))
    });
    let taxii_task = listeners.taxii.map(|listener| {
        tokio::spawn(taxii::serve(
            listener,
            tls_current.clone(),
            Taxii::new(hub.clone()),
            stop.clone(),
        ))
    });
    let reload_task = controls
        .reload
        .map(|reload| tokio::spawn(reload_on_trigger(hub.clone(), reload, side_tasks.clone())));

    set_health(&health, ServingStatus::Serving).await;
    // In a cluster the write health follows the lease from now on.
    let mut cluster_tasks = node
        .as_ref()
        .map(|node| node.run(applier, feed.clone(), health.clone(), stop_cluster.clone()))
        .unwrap_or_default();
    // In a cluster, registry changes go to the shared bucket and come back from it.
    let mut admin_service = AdminService::new(hub.clone());
    if let (Some(node), Some((org_applier, last))) = (&node, org_sync) {
        let org_applier = org_applier.with_streams(hub.streams.clone());
        cluster_tasks.push(node.registry.clone().follow(
            org_applier.clone(),
            last,
            stop_cluster.clone(),
        ));
        admin_service = admin_service.shared(node.registry.clone(), org_applier);
    }
    if let Some(ready) = controls.ready {
        ready();
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::Config(format!("gRPC reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

    let hub_service = IndicatorHubServiceServer::new(HubService::new(hub.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let admin_service = AdminServiceServer::new(admin_service);
    drop(hub);
    // Cut after the grace timeout (`sever`): tonic's connection tasks outlive its
    // server future, and with them the services and every hub handle.
    let stopping = stop.clone();
    let shutdown = controls.shutdown;
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending streams");
        set_health(&health, ServingStatus::NotServing).await;
        stopping.cancel();
    };
    {
        let routes = tonic::service::Routes::new(hub_service)
            .add_service(admin_service)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare();
        let settings = http2::Settings {
            max_concurrent_streams: MAX_STREAMS_PER_CONNECTION,
            stream_window: STREAM_WINDOW_BYTES,
            connection_window: CONNECTION_WINDOW_BYTES,
            max_send_buffer: SEND_BUFFER_BYTES,
        };
        let serve = http2::serve(routes, incoming, settings, signal);
        tokio::pin!(serve);
        tokio::select! {
            () = &mut serve => {},
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(config.shutdown_grace).await;
            } => {
                tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace timeout: closing remaining connections");
                sever.cancel();
            }
        }
        // The server future, holding the services and every connection, ends here.
    };
    // Every hub handle is gone once the side tasks end: the writer drains its
    // queue and stops, the audit trail stores what is queued; then everything
    // is flushed.
    side_tasks.cancel();
    for task in [metrics_task, taxii_task, reload_task]
        .into_iter()
        .flatten()
    {
        let _ = task.await;
    }
    // The expiry task holds a sequencer handle; it ends on the stop token
    // (cancelled by the shutdown signal, and here whatever ended the server).
    stop.cancel();
    if let Err(error) = expiry.await {
        tracing::error!(%error, "the expiry task failed");
    }
    // The cluster's replica consumer holds a handle on the writer too.
    for task in cluster_tasks {
        let _ = task.await;
    }
    if audit_task.await.is_err() {
        tracing::error!("the audit task panicked");
    }
    tokio::task::spawn_blocking(move || {
        if writer.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
        if cursor_thread.join().is_err() {
            tracing::error!("the cursor thread panicked");
        }
        log.flush()
    })
    .await
    .map_err(|e| Error::Unavailable(format!("shutdown was interrupted: {e}")))??;
    tracing::info!("hub stopped");
    Ok(())
}

/// Sets the health of the whole server ("") and of each hub service at once.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in [
        "",
        <IndicatorHubServiceServer<HubService> as NamedService>::NAME,
        <AdminServiceServer<AdminService> as NamedService>::NAME,
        cluster::WRITE_HEALTH_SERVICE,
    ] {
        health.set_service_status(service, status).await;
    }
}

/// Reloads the TLS credentials on every trigger until `stop`.
async fn reload_on_trigger(hub: Hub, mut reload: mpsc::Receiver<()>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            trigger = reload.recv() => {
                if trigger.is_none() {
                    return;
                }
                match admin::reload_tls(&hub).await {
                    Ok(loaded) => tracing::info!(
                        crl_files = loaded.crl_files,
                        revoked_serials = loaded.revoked.len(),
                        "reload: TLS credentials and CRLs in force"
                    ),
                    Err(error) => tracing::error!(%error, "reload failed; the previous TLS credentials stay in force"),
                }
            }
        }
    }
}

/// The connection limit at the accept edge: a connection of an organisation
/// that already has its limit of open connections is closed right after the
/// handshake (counted in metrics, logged); the others carry a permit until they close.
struct Admission {
    limiter: Limiter,
    registry: Registry,
}

impl Admission {
    fn connections(
        self,
        incoming: impl Stream<Item = io::Result<tls::AuthenticatedConn>>,
    ) -> impl Stream<Item = io::Result<(tls::AuthenticatedConn, limits::Permit)>> {
        incoming.filter_map(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(error) => return Some(Err(error)),
            };
            let org_id = &conn.identity().org_id;
            let org = self.registry.get(org_id);
            match self.limiter.acquire_connection(org_id, org.as_ref()) {
                Ok(permit) => Some(Ok((conn, permit))),
                Err(error) => {
                    tracing::warn!(peer = %conn.remote_addr(), %error, "connection closed");
                    None
                }
            }
        })
    }
}

/// A connection that fails every read and write once `severed` is cancelled, so
/// that the task serving it ends (and drops the services it holds).
pub(crate) struct Severable {
    conn: tls::AuthenticatedConn,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The organisation's connection limit, held while the connection is open.
    _permit: limits::Permit,
}

impl Severable {
    fn all(
        incoming: impl Stream<Item = io::Result<(tls::AuthenticatedConn, limits::Permit)>>,
        sever: &CancellationToken,
    ) -> impl Stream<Item = io::Result<Severable>> {
        let sever = sever.clone();
        incoming.map(move |conn| {
            conn.map(|(conn, permit)| Severable {
                conn,
                severed: Box::pin(sever.clone().cancelled_owned()),
                _permit: permit,
            })
        })
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.severed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the hub shut down after its grace timeout",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Severable {
    type ConnectInfo = tls::PeerInfo;

    fn connect_info(&self) -> tls::PeerInfo {
        self.conn.connect_info()
    }
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}
