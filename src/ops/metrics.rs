//! Prometheus metrics, and the plain-HTTP listener that serves them at `/metrics`.
//!
//! Owns: the hub's counters, gauges and histograms, and their text exposition
//! (OpenMetrics, which Prometheus scrapes). Hot paths only touch atomics: events
//! published are counted in a fixed table indexed by kind and event type (no
//! label lookup, no allocation per event); a subscription's progress is one
//! atomic store per frame. What is costly to keep current (subscriber lag, the
//! database size on disk) is computed when scraped. Must never block a request
//! or the writer, never bind its own port (the caller passes a bound listener),
//! and never expose indicator values or organisation data beyond counts.

use crate::proto::ValueName;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::feed::Feed;
use crate::indicator::{EventType, Kind};
use crate::log::Log;

/// Kind values 0..=KINDS-1 (0 is unspecified, never stored).
const KINDS: usize = 10;
/// Event type values 0..=TYPES-1.
const TYPES: usize = 6;
/// How long one metrics HTTP connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

type Labels = [(&'static str, &'static str); 2];
/// `org` and `limit` of a refusal.
type LimitLabels = [(&'static str, String); 2];

/// The hub's metrics; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// `published[kind * TYPES + type]`, resolved once at start.
    published: Vec<Counter>,
    delivered_events: Counter,
    delivered_frames: Counter,
    publish_latency: Histogram,
    publishes_in_flight: Gauge,
    subscribers: Gauge,
    lag_max: Gauge,
    lag_total: Gauge,
    log_size: Gauge,
    disk_available: Gauge,
    head: Gauge,
    audit_recorded: Counter,
    audit_dropped: Counter,
    admin_actions: Counter,
    /// Follows `Log::syncs` at scrape time (serialized by the lock).
    log_fsyncs: Mutex<Counter>,
    limit_refusals: Family<LimitLabels, Counter>,
    subscribers_stalled: Counter,
    subscribers_released: Counter,
    positions: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dip");
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events_published",
            "Events committed to the log (durable), by indicator kind and event type",
            events.clone(),
        );
        let mut published = Vec::with_capacity(KINDS * TYPES);
        for kind in 0..KINDS {
            for event_type in 0..TYPES {
                let kind = Kind::try_from(kind as i32).map_or("UNKNOWN", |k| k.short_name());
                let event_type =
                    EventType::try_from(event_type as i32).map_or("UNKNOWN", |t| t.short_name());
                published.push(
                    events
                        .get_or_create(&[("kind", kind), ("type", event_type)])
                        .clone(),
                );
            }
        }
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let delivered_events = counter(
            &mut registry,
            "events_delivered",
            "Events handed to subscribers' streams (one per subscriber)",
        );
        let delivered_frames = counter(
            &mut registry,
            "frames_delivered",
            "Subscribe responses sent (event batches and heartbeats)",
        );
        let publish_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "publish_latency_seconds",
            "Time from a Publish request's arrival to its durable answer",
            publish_latency.clone(),
        );
        let publishes_in_flight = gauge(
            &mut registry,
            "publishes_in_flight",
            "Publish requests received and not yet answered",
        );
        let subscribers = gauge(&mut registry, "subscribers", "Open Subscribe streams");
        let lag_max = gauge(
            &mut registry,
            "subscriber_lag_max",
            "Largest number of durable events a subscriber has not yet been served",
        );
        let lag_total = gauge(
            &mut registry,
            "subscriber_lag_total",
            "Durable events not yet served, summed over subscribers",
        );
        let log_size = gauge(
            &mut registry,
            "log_size_bytes",
            "Bytes the database takes on disk",
        );
        let disk_available = gauge(
            &mut registry,
            "disk_available_bytes",
            "Bytes available to the hub on the filesystem that holds its database",
        );
        let head = gauge(
            &mut registry,
            "durable_head_sequence",
            "The newest durable sequence",
        );
        let audit_recorded = counter(
            &mut registry,
            "audit_entries_recorded",
            "Audit trail entries stored",
        );
        let audit_dropped = counter(
            &mut registry,
            "audit_entries_dropped",
            "Audit trail entries dropped because the audit queue was full or storage failed",
        );
        let admin_actions = counter(
            &mut registry,
            "admin_actions",
            "Admin RPCs that changed something (onboard, status, CRL reload)",
        );
        let log_fsyncs = counter(
            &mut registry,
            "log_fsyncs",
            "Real syncs (fdatasync) of the database files; every acknowledged publish, ack and admin change waits for one",
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Calls and connections refused because an organisation reached one of its limits, by organisation and limit",
            limit_refusals.clone(),
        );
        let subscribers_stalled = counter(
            &mut registry,
            "subscribers_stalled",
            "Times a Subscribe stream dropped a frame for the subscribers' memory budget (it continues from the log once its client reads)",
        );
        let subscribers_released = counter(
            &mut registry,
            "subscribers_released",
            "Times the subscribers' memory budget released the frames a stream most behind had queued (it continues from the log once its client reads)",
        );
        Metrics {
            inner: Arc::new(Inner {
                log_fsyncs: Mutex::new(log_fsyncs),
                registry,
                published,
                delivered_events,
                delivered_frames,
                publish_latency,
                publishes_in_flight,
                subscribers,
                lag_max,
                lag_total,
                log_size,
                disk_available,
                head,
                audit_recorded,
                audit_dropped,
                admin_actions,
                limit_refusals,
                subscribers_stalled,
                subscribers_released,
                positions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// One event committed (called by the writer after the flush).
    pub fn published(&self, kind: Kind, event_type: EventType) {
        let index = (kind as usize).min(KINDS - 1) * TYPES + (event_type as usize).min(TYPES - 1);
        if let Some(counter) = self.inner.published.get(index) {
            counter.inc();
        }
    }

    /// A frame of `events` events sent to a subscriber.
    pub fn delivered(&self, events: usize) {
        self.inner.delivered_frames.inc();
        self.inner.delivered_events.inc_by(events as u64);
    }

    pub fn publish_latency(&self, elapsed: Duration) {
        self.inner.publish_latency.observe(elapsed.as_secs_f64());
    }

    /// A Publish request in progress until the returned guard is dropped.
    pub fn publish_started(&self) -> InFlight {
        self.inner.publishes_in_flight.inc();
        InFlight(self.inner.publishes_in_flight.clone())
    }

    pub fn audit_recorded(&self, n: usize) {
        self.inner.audit_recorded.inc_by(n as u64);
    }

    pub fn audit_dropped(&self, n: usize) {
        self.inner.audit_dropped.inc_by(n as u64);
    }

    pub fn admin_action(&self) {
        self.inner.admin_actions.inc();
    }

    /// A call or connection of `org` refused at `limit`.
    pub fn limit_refused(&self, org: &str, limit: &'static str) {
        self.inner
            .limit_refusals
            .get_or_create(&[("org", org.to_string()), ("limit", limit.to_string())])
            .inc();
    }

    /// A Subscribe stream went over the memory budget.
    pub fn subscriber_stalled(&self) {
        self.inner.subscribers_stalled.inc();
    }

    /// The budget released what `streams` Subscribe streams had queued.
    pub fn subscribers_released(&self, streams: usize) {
        self.inner.subscribers_released.inc_by(streams as u64);
    }

    /// Tracks one subscription's progress until the returned handle is dropped.
    pub fn subscriber(&self, served_up_to: u64) -> SubscriberProgress {
        let position = Arc::new(AtomicU64::new(served_up_to));
        let mut positions = self
            .inner
            .positions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        positions.retain(|p| p.strong_count() > 0);
        positions.push(Arc::downgrade(&position));
        SubscriberProgress { position }
    }

    /// Brings `dip_log_fsyncs_total` up to `total` syncs (read from the log at scrape time).
    pub fn log_synced(&self, total: u64) {
        let counter = self
            .inner
            .log_fsyncs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let shown = counter.get();
        if total > shown {
            counter.inc_by(total - shown);
        }
    }

    /// The exposition, with scrape-time values (`head`, the disk) filled in.
    pub fn render(&self, head: u64, disk: Disk) -> String {
        let inner = &self.inner;
        let (count, max, total) = {
            let mut positions = inner
                .positions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            positions.retain(|p| p.strong_count() > 0);
            positions
                .iter()
                .filter_map(Weak::upgrade)
                .map(|p| head.saturating_sub(p.load(Ordering::Relaxed)))
                .fold((0u64, 0u64, 0u64), |(n, max, total), lag| {
                    (n + 1, max.max(lag), total.saturating_add(lag))
                })
        };
        inner.subscribers.set(to_i64(count));
        inner.lag_max.set(to_i64(max));
        inner.lag_total.set(to_i64(total));
        inner.head.set(to_i64(head));
        if let Some(size) = disk.log_size {
            inner.log_size.set(to_i64(size));
        }
        if let Some(available) = disk.available {
            inner.disk_available.set(to_i64(available));
        }
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &inner.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

/// Counts one request in flight while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a scrape read from the disk (None: reading it failed).
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk {
    /// Bytes the database takes.
    pub log_size: Option<u64>,
    /// Bytes available on its filesystem.
    pub available: Option<u64>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One subscription's position: every durable event up to it has been served
/// (sent or filtered out).
pub struct SubscriberProgress {
    position: Arc<AtomicU64>,
}

impl SubscriberProgress {
    pub fn served_up_to(&self, sequence: u64) {
        self.position.store(sequence, Ordering::Relaxed);
    }
}

/// Serves `GET /metrics` over plain HTTP/1.1 on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    log: Log,
    feed: Feed,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics serving at /metrics");
    }
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection failed");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let (metrics, log, feed, stop) = (metrics.clone(), log.clone(), feed.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                scrape(request, metrics.clone(), log.clone(), feed.clone())
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            tokio::select! {
                () = stop.cancelled() => {}
                served = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {
                    if let Ok(Err(error)) = served {
                        tracing::debug!(%peer, %error, "metrics connection ended");
                    }
                }
            }
        });
    }
}

async fn scrape(
    request: Request<hyper::body::Incoming>,
    metrics: Metrics,
    log: Log,
    feed: Feed,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found; try /metrics\n"));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    metrics.log_synced(log.syncs());
    let disk = tokio::task::spawn_blocking(move || {
        let read = |what: &str, value: Result<u64>| {
            value
                .map_err(|error| tracing::warn!(%error, "reading {what} failed"))
                .ok()
        };
        Disk {
            log_size: read("the database size", log.size_on_disk()),
            available: read("the free disk space", log.disk_available()),
        }
    })
    .await
    .unwrap_or_default();
    let text = metrics.render(feed.committed(), disk);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_type_and_reports_lag() {
        let metrics = Metrics::new();
        metrics.published(Kind::UpiId, EventType::Published);
        metrics.published(Kind::UpiId, EventType::Published);
        metrics.published(Kind::Imei, EventType::Revoked);
        let slow = metrics.subscriber(3);
        let fast = metrics.subscriber(10);
        let text = metrics.render(
            10,
            Disk {
                log_size: Some(4096),
                available: Some(1 << 30),
            },
        );
        assert!(
            text.contains(r#"dip_events_published_total{kind="UPI_ID",type="PUBLISHED"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"dip_events_published_total{kind="IMEI",type="REVOKED"} 1"#));
        assert!(text.contains("dip_subscribers 2"));
        assert!(text.contains("dip_subscriber_lag_max 7"));
        assert!(text.contains("dip_log_size_bytes 4096"));
        assert!(text.contains("dip_disk_available_bytes 1073741824"));
        let publishing = metrics.publish_started();
        assert!(
            metrics
                .render(10, Disk::default())
                .contains("dip_publishes_in_flight 1")
        );
        drop(publishing);
        assert!(
            metrics
                .render(10, Disk::default())
                .contains("dip_publishes_in_flight 0")
        );
        assert!(text.contains("dip_durable_head_sequence 10"));
        drop((slow, fast));
        assert!(
            metrics
                .render(10, Disk::default())
                .contains("dip_subscribers 0")
        );
    }
}
