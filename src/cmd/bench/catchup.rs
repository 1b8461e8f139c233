//! Scenario "catchup": a new subscriber reads a long log from the beginning.
//!
//! Owns: filling the log (concurrent publishers, large batches; the fill rate is
//! reported too), then one new subscriber from sequence 0, timed until it has
//! received every event, each exactly once and in order; then the hub is
//! stopped and started again on the same database, timed from the new process's
//! spawn until it answers (start-up: open the log, replay the state view). Must
//! never time the fill as part of the catch-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::proto;

use super::Workload;
use super::hub::{BenchDir, ChildHub, publisher_org, subscriber_org};
use super::receive::{self, SequenceCheck};
use super::report::{self, Outcome};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub events: u64,
    pub batch: usize,
    pub publishers: usize,
    /// Bound on the catch-up read.
    pub timeout: Duration,
    pub indicator_bytes: usize,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    tracing::info!(?plan, "filling the log");
    let fill_cpu = hub.cpu_meter();
    let fill_start = Instant::now();
    fill(hub, bench, workload, plan, 0).await?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let fill_cpu = fill_cpu.note();

    tracing::info!(events = plan.events, "a new subscriber catches up");
    let channel = hub.channel(bench, &subscriber_org(1)).await?;
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let mut stream = receive::subscribe(
        channel,
        proto::SubscribeRequest {
            after_sequence: 0,
            ..Default::default()
        },
    )
    .await?;
    let mut check = SequenceCheck::new(1);
    let deadline = start + plan.timeout;
    let mut errors = 0;
    while !check.reached(plan.events) {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                tracing::warn!(timeout = ?plan.timeout, "catch-up did not finish in time");
                errors += 1;
                break;
            }
            Ok(message) => message,
        };
        match message {
            Ok(Some(message)) => {
                for event in &message.events {
                    check.observe(event.sequence);
                }
            }
            Ok(None) => {
                tracing::warn!("the hub ended the catch-up stream");
                errors += 1;
                break;
            }
            Err(status) => {
                tracing::warn!(%status, "the catch-up stream failed");
                errors += 1;
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.note();
    let mut outcome = Outcome::new(
        "catchup",
        format!(
            "1 new subscriber, {} events of {} B",
            report::thousands(plan.events as f64),
            plan.indicator_bytes
        ),
        check.received as f64 / secs,
        "events/s",
    );
    outcome.missed = Some(check.missed_until(plan.events));
    outcome.duplicated = Some(check.duplicated);
    outcome.errors = errors;
    outcome.notes.push(format!(
        "read {} events in {secs:.2} s; fill: {} publishers x batch {} = {} events/s ({fill_secs:.1} s)",
        report::thousands(check.received as f64),
        plan.publishers,
        plan.batch,
        report::thousands(plan.events as f64 / fill_secs),
    ));
    outcome.notes.push(cpu);
    outcome.notes.push(format!("while filling: {fill_cpu}"));
    Ok(outcome)
}

/// Stops `hub` (SIGTERM) and starts a new one on its database, noting how long
/// the new process took from spawn until it answered; returns the new hub.
pub async fn restart(
    hub: ChildHub,
    bench: &BenchDir,
    mut outcome: Outcome,
    startup: Duration,
) -> Result<(ChildHub, Result<Outcome>)> {
    let first_peak = hub.peak_rss();
    hub.terminate().await?;
    let start = Instant::now();
    let hub = ChildHub::start(bench, "catchup", startup).await?;
    outcome.notes.push(format!(
        "restart on the filled database: serving {:.2} s after spawn",
        start.elapsed().as_secs_f64(),
    ));
    // The peak reported is the filled hub's, not the restarted one's.
    outcome.server_peak_rss_bytes = first_peak;
    Ok((hub, Ok(outcome)))
}

/// Publishes new indicators `first..plan.events` with concurrent publishers.
pub async fn fill(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
    first: u64,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(first));
    let mut tasks = Vec::with_capacity(plan.publishers);
    for n in 1..=plan.publishers {
        let mut client = hub.client(bench, &publisher_org(n)).await?;
        let next = Arc::clone(&next);
        let workload = workload.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(plan.batch as u64, Ordering::Relaxed);
                if first >= plan.events {
                    return Ok::<(), anyhow::Error>(());
                }
                let last = (first + plan.batch as u64).min(plan.events);
                let request = proto::PublishRequest {
                    indicators: (first..last).map(|n| workload.plain(n)).collect(),
                    idempotency_key: String::new(),
                };
                client.publish(request).await.map_err(remote)?;
            }
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| anyhow!("a filling publisher failed: {e}"))??;
    }
    Ok(())
}
