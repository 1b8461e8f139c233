//! Scenario "fanout": many subscribers, one publisher at a fixed pace.
//!
//! Owns: S subscribers, each on its own connection and certificate, subscribed
//! before publishing starts; one publisher sending R events per second (the
//! events due at each tick share a Publish; requests overlap up to a bound, so a
//! slow hub shows as a publisher that falls behind its pace, reported). Every
//! indicator's description carries its send time; subscribers record now minus
//! that time (same machine clock) and check that they receive exactly the
//! published sequences, once each, in order. Must never report a run as
//! lossless without every subscriber having accounted for every sequence.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::proto;

use super::hub::{BenchDir, ChildHub, publisher_org, subscriber_org};
use super::receive::{self, SequenceCheck, now_micros};
use super::report::{self, Latency, Outcome};
use super::{FanoutSpec, Workload};

/// TLS handshakes in progress at once while subscribers connect.
const CONNECT_CONCURRENCY: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub spec: FanoutSpec,
    pub duration: Duration,
    pub max_batch: usize,
    pub in_flight: usize,
    pub drain: Duration,
    pub indicator_bytes: usize,
}

/// Sent to subscribers once publishing is over: the last sequence and until when
/// they may take to receive it.
#[derive(Clone, Copy, Debug)]
pub(super) struct End {
    pub(super) last: u64,
    pub(super) deadline: Instant,
}

/// What one subscriber saw.
pub(super) struct Seen {
    pub(super) check: SequenceCheck,
    pub(super) latency: Histogram<u64>,
    pub(super) last_delivery: Option<Instant>,
    /// Deliveries slower than [`SLOW`]: how many, and when the first and last came.
    pub(super) slow: Slow,
    pub(super) error: Option<anyhow::Error>,
}

/// A delivery slower than this is counted in [`Seen::slow`].
pub(super) const SLOW: Duration = Duration::from_millis(50);

/// When the slow deliveries happened (to tell one burst from a steady cost).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Slow {
    pub(super) count: u64,
    pub(super) first: Option<Instant>,
    pub(super) last: Option<Instant>,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    let FanoutSpec { subscribers, rate } = plan.spec;
    tracing::info!(?plan, "connecting subscribers");
    let channels: Vec<_> = futures_util::stream::iter(1..=subscribers)
        .map(|n| async move { hub.channel(bench, &subscriber_org(n)).await })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let (end_tx, end_rx) = watch::channel(None::<End>);
    let mut readers = JoinSet::new();
    for channel in channels {
        // The hub joins the subscriber to its live feed before answering, so once
        // `subscribe` returns no published event can be missed.
        let stream = receive::subscribe(
            channel?,
            proto::SubscribeRequest {
                after_sequence: 0,
                ..Default::default()
            },
        )
        .await?;
        readers.spawn(read(stream, end_rx.clone()));
    }

    tracing::info!(subscribers, rate, "publishing");
    let publisher = hub.client(bench, &publisher_org(1)).await?;
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let published = publish_paced(publisher, workload, plan).await;
    let publish_elapsed = start.elapsed();
    let last = published.acked;
    end_tx.send_replace(Some(End {
        last,
        deadline: Instant::now() + plan.drain,
    }));

    let mut latency = report::histogram();
    let (mut delivered, mut missed, mut duplicated, mut errors) = (0, 0, 0, published.errors);
    let mut last_delivery = start;
    while let Some(seen) = readers.join_next().await {
        let seen = seen.map_err(|e| anyhow!("a subscriber task failed: {e}"))?;
        delivered += seen.check.received;
        missed += seen.check.missed_until(last);
        duplicated += seen.check.duplicated;
        if let Some(at) = seen.last_delivery {
            last_delivery = last_delivery.max(at);
        }
        report::absorb(
            &mut latency,
            &seen.latency,
            seen.error,
            "a subscriber",
            &mut errors,
        )?;
    }
    let cpu = cpu.note();
    let delivery_secs = (last_delivery - start).as_secs_f64().max(f64::EPSILON);
    let mut outcome = Outcome::new(
        "fanout",
        format!(
            "{subscribers} subscribers x {rate} events/s, {} B, {} s",
            plan.indicator_bytes,
            plan.duration.as_secs()
        ),
        delivered as f64 / delivery_secs,
        "deliveries/s",
    );
    outcome.latency_kind = Some("end-to-end");
    outcome.latency = Latency::of(&latency);
    outcome.missed = Some(missed);
    outcome.duplicated = Some(duplicated);
    outcome.errors = errors;
    let publish_secs = publish_elapsed.as_secs_f64();
    outcome.notes.push(format!(
        "publisher: {} events acked in {publish_secs:.1} s = {}/s (asked {rate}/s), {} requests",
        report::thousands(last as f64),
        report::thousands(last as f64 / publish_secs),
        report::thousands(published.requests as f64),
    ));
    outcome.notes.push(format!(
        "last delivery {:.2} s after the last publish",
        (last_delivery.max(start + publish_elapsed) - (start + publish_elapsed)).as_secs_f64()
    ));
    outcome.notes.push(cpu);
    Ok(outcome)
}

pub(super) struct Published {
    /// Events acknowledged; on a fresh hub they are sequences 1..=acked.
    pub(super) acked: u64,
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// Each Publish's time to its answer.
    pub(super) ack_latency: Histogram<u64>,
}

/// Publishes `rate` events per second for the plan's duration: at each wake-up,
/// the events due by then go out in one request (at most `max_batch` each),
/// without waiting for earlier answers (at most `in_flight` outstanding).
pub(super) async fn publish_paced(
    client: dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient<
        tonic::transport::Channel,
    >,
    workload: &Workload,
    plan: Plan,
) -> Published {
    let rate = plan.spec.rate;
    let total = rate * plan.duration.as_secs();
    let slots = Arc::new(Semaphore::new(plan.in_flight));
    let mut requests = JoinSet::new();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let elapsed = start.elapsed();
        // Event k (0-based) is due at k / rate seconds.
        let due = ((elapsed.as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let count = (due - sent).min(plan.max_batch as u64);
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let stamp = now_micros();
            let request = proto::PublishRequest {
                indicators: (sent..sent + count)
                    .map(|n| workload.stamped(n, stamp))
                    .collect(),
                idempotency_key: String::new(),
            };
            let mut client = client.clone();
            let answer_within = plan.drain;
            requests.spawn(async move {
                let asked = Instant::now();
                // Bounded: a hub that never answers is an error, not a hung bench.
                let answer = tokio::time::timeout(answer_within, client.publish(request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within the drain time, {answer_within:?}"
                        )))
                    });
                drop(slot);
                answer.map(|r| (r.into_inner().events.len() as u64, asked.elapsed()))
            });
            sent += count;
        }
        let next_due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(next_due).await;
    }
    let mut published = Published {
        acked: 0,
        requests: 0,
        errors: 0,
        ack_latency: report::histogram(),
    };
    while let Some(answer) = requests.join_next().await {
        match answer {
            Ok(Ok((events, took))) => {
                published.acked += events;
                published.requests += 1;
                report::record(&mut published.ack_latency, took.as_micros() as u64);
            }
            Ok(Err(status)) => {
                tracing::warn!(%status, "a paced publish failed");
                published.errors += 1;
            }
            Err(error) => {
                tracing::warn!(%error, "a paced publish task failed");
                published.errors += 1;
            }
        }
    }
    published
}

/// Reads one subscriber's stream until it has every published sequence, the
/// drain deadline passes, or the stream ends.
pub(super) async fn read(
    mut stream: tonic::Streaming<receive::LightResponse>,
    mut end: watch::Receiver<Option<End>>,
) -> Seen {
    let mut seen = Seen {
        check: SequenceCheck::new(1),
        latency: report::histogram(),
        last_delivery: None,
        slow: Slow::default(),
        error: None,
    };
    loop {
        let ending = *end.borrow_and_update();
        if let Some(End { last, .. }) = ending
            && seen.check.reached(last)
        {
            break;
        }
        let deadline = async {
            match ending {
                Some(End { deadline, .. }) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = stream.message() => message,
            _ = end.changed(), if ending.is_none() => continue,
            () = deadline => break,
        };
        match message {
            Ok(Some(message)) => {
                let now = now_micros();
                let at = Instant::now();
                for event in &message.events {
                    seen.check.observe(event.sequence);
                    let stamp = event
                        .indicator
                        .as_ref()
                        .and_then(|i| receive::stamp_of(&i.description));
                    if let Some(sent) = stamp {
                        let took = now.saturating_sub(sent);
                        report::record(&mut seen.latency, took);
                        if took > SLOW.as_micros() as u64 {
                            seen.slow.count += 1;
                            seen.slow.first.get_or_insert(at);
                            seen.slow.last = Some(at);
                        }
                    }
                }
                if !message.events.is_empty() {
                    seen.last_delivery = Some(at);
                }
            }
            Ok(None) => {
                seen.error = Some(anyhow!("the hub ended the stream"));
                break;
            }
            Err(status) => {
                seen.error = Some(remote(status));
                break;
            }
        }
    }
    seen
}
