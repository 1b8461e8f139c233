//! Scenario "abuse": one member leaks streams while others work.
//!
//! Owns: the misbehaving member (`bench-sub-001`: `--abuse-streams` Subscribe
//! streams from sequence 0 over `--abuse-connections` connections, never read),
//! the publisher (`bench-pub-1`, `--abuse-events` events paced at
//! `--abuse-rate`/s, each Publish's ack latency recorded), and the honest member
//! (`bench-sub-002`, one stream read at once: end-to-end latency and the check
//! that it receives every event once, in order). The hub's peak RSS is read by
//! the caller from its own process. Must never read the stalled streams (that is
//! the abuse) nor leave them open after the run.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use anyhow::{Result, anyhow};

use dip_hub::proto;

use super::fanout::{self, End};
use super::hub::{BenchDir, ChildHub, publisher_org, subscriber_org};
use super::receive;
use super::report::{self, Latency, Outcome};
use super::{FanoutSpec, Workload};

/// Subscribe calls being opened at once.
const OPEN_CONCURRENCY: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub streams: usize,
    pub connections: usize,
    pub events: u64,
    pub rate: u64,
    pub max_batch: usize,
    pub in_flight: usize,
    pub drain: Duration,
    pub indicator_bytes: usize,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    tracing::info!(?plan, "opening the stalled streams");
    let abuser = subscriber_org(1);
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        channels.push(hub.channel(bench, &abuser).await?);
    }
    let opened: Vec<_> = futures_util::stream::iter(0..plan.streams)
        .map(|n| {
            let channel = channels[n % channels.len()].clone();
            receive::subscribe(channel, proto::SubscribeRequest::default())
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let mut stalled = Vec::with_capacity(opened.len());
    let mut refused = 0u64;
    for stream in opened {
        match stream {
            Ok(stream) => stalled.push(stream),
            Err(error) => {
                tracing::warn!(%error, "a stalled stream was refused");
                refused += 1;
            }
        }
    }

    let (end_tx, end_rx) = watch::channel(None::<End>);
    let honest = receive::subscribe(
        hub.channel(bench, &subscriber_org(2)).await?,
        proto::SubscribeRequest::default(),
    )
    .await?;
    let reader = tokio::spawn(fanout::read(honest, end_rx));

    tracing::info!(streams = stalled.len(), "publishing");
    let publisher = hub.client(bench, &publisher_org(1)).await?;
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let paced = fanout::Plan {
        spec: FanoutSpec {
            subscribers: 1,
            rate: plan.rate,
        },
        duration: Duration::from_secs(plan.events.div_ceil(plan.rate).max(1)),
        max_batch: plan.max_batch,
        in_flight: plan.in_flight,
        drain: plan.drain,
        indicator_bytes: plan.indicator_bytes,
    };
    let published = fanout::publish_paced(publisher, workload, paced).await;
    let publish_secs = start.elapsed().as_secs_f64();
    end_tx.send_replace(Some(End {
        last: published.acked,
        deadline: Instant::now() + plan.drain,
    }));
    let seen = reader
        .await
        .map_err(|e| anyhow!("the honest subscriber failed: {e}"))?;
    let cpu = cpu.note();
    drop(stalled);

    let receive_secs = seen.last_delivery.map_or(f64::EPSILON, |at| {
        (at - start).as_secs_f64().max(f64::EPSILON)
    });
    let mut outcome = Outcome::new(
        "abuse",
        format!(
            "{} stalled streams on {} connections; {} events x {} B at {}/s; 1 honest subscriber",
            plan.streams,
            plan.connections,
            report::thousands(plan.events as f64),
            plan.indicator_bytes,
            plan.rate
        ),
        seen.check.received as f64 / receive_secs,
        "honest deliveries/s",
    );
    outcome.latency_kind = Some("end-to-end (honest)");
    outcome.latency = Latency::of(&seen.latency);
    outcome.missed = Some(seen.check.missed_until(published.acked));
    outcome.duplicated = Some(seen.check.duplicated);
    outcome.errors = published.errors + refused + u64::from(seen.error.is_some());
    if let Some(error) = seen.error {
        tracing::warn!(%error, "the honest subscriber stopped on an error");
    }
    let ack = Latency::of(&published.ack_latency);
    outcome.notes.push(format!(
        "publisher: {} events acked in {publish_secs:.1} s = {}/s; ack p50 {} / p99 {} / max {}",
        report::thousands(published.acked as f64),
        report::thousands(published.acked as f64 / publish_secs),
        ack.map_or("-".into(), |a| report::micros(a.p50_us)),
        ack.map_or("-".into(), |a| report::micros(a.p99_us)),
        ack.map_or("-".into(), |a| report::micros(a.max_us)),
    ));
    outcome.notes.push(format!(
        "{} stalled streams open, {refused} refused",
        plan.streams as u64 - refused
    ));
    if let (Some(first), Some(last)) = (seen.slow.first, seen.slow.last) {
        outcome.notes.push(format!(
            "honest deliveries over {} ms: {}, from {:.2} s to {:.2} s after publishing began",
            fanout::SLOW.as_millis(),
            report::thousands(seen.slow.count as f64),
            (first - start).as_secs_f64(),
            (last - start).as_secs_f64(),
        ));
    }
    outcome.notes.push(cpu);
    Ok(outcome)
}
