//! Scenario "publish": durable publish throughput and ack latency.
//!
//! Owns: N concurrent publishers, each on its own connection and certificate,
//! each publishing `batch` new indicators per request for a fixed time: with
//! `in_flight` 1 one unary Publish at a time, each awaiting its ack (which the
//! hub gives only once the events are flushed to disk); above 1 over one
//! PublishStream with `in_flight` requests awaiting their acks. Measures acked
//! events per second and the ack latency (from sending a request to its
//! answer). Must never count an event that was not acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::Channel;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::client::{self, PublishStream};
use dip_hub::proto;
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;

use super::Workload;
use super::hub::{BenchDir, ChildHub, publisher_org};
use super::report::{self, Latency, Outcome};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub publishers: usize,
    pub batch: usize,
    /// Requests awaiting their ack per publisher (1: the unary call).
    pub in_flight: usize,
    pub duration: Duration,
    pub indicator_bytes: usize,
}

/// What one publisher did.
struct Tally {
    events: u64,
    requests: u64,
    latency: Histogram<u64>,
    error: Option<anyhow::Error>,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    let mut clients = Vec::with_capacity(plan.publishers);
    for n in 1..=plan.publishers {
        clients.push(hub.client(bench, &publisher_org(n)).await?);
    }
    tracing::info!(?plan, "publishing");
    let numbers = Arc::new(AtomicU64::new(0));
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let deadline = start + plan.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (workload, numbers) = (workload.clone(), Arc::clone(&numbers));
            match plan.in_flight {
                1 => tokio::spawn(publisher(client, workload, plan.batch, numbers, deadline)),
                in_flight => tokio::spawn(streamer(
                    client, workload, plan.batch, in_flight, numbers, deadline,
                )),
            }
        })
        .collect();
    let mut latency = report::histogram();
    let (mut events, mut requests, mut errors) = (0, 0, 0);
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| anyhow!("a publisher task failed: {e}"))?;
        events += tally.events;
        requests += tally.requests;
        report::absorb(
            &mut latency,
            &tally.latency,
            tally.error,
            "a publisher",
            &mut errors,
        )?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu.note();
    let mut outcome = Outcome::new(
        "publish",
        format!(
            "{} publishers x batch {}, {}, {} B, {} s",
            plan.publishers,
            plan.batch,
            match plan.in_flight {
                1 => "unary, 1 in flight".to_string(),
                n => format!("PublishStream, {n} in flight"),
            },
            plan.indicator_bytes,
            plan.duration.as_secs()
        ),
        events as f64 / elapsed,
        "acked events/s",
    );
    outcome.latency_kind = Some("ack");
    outcome.latency = Latency::of(&latency);
    outcome.errors = errors;
    outcome.notes.push(format!(
        "{} acked events in {elapsed:.1} s, {} requests/s",
        report::thousands(events as f64),
        report::thousands(requests as f64 / elapsed)
    ));
    outcome.notes.push(cpu);
    Ok(outcome)
}

/// Publishes batches of new indicators one at a time until `deadline`.
async fn publisher(
    mut client: IndicatorHubServiceClient<Channel>,
    workload: Workload,
    batch: usize,
    numbers: Arc<AtomicU64>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally {
        events: 0,
        requests: 0,
        latency: report::histogram(),
        error: None,
    };
    while Instant::now() < deadline {
        let first = numbers.fetch_add(batch as u64, Ordering::Relaxed);
        let request = proto::PublishRequest {
            indicators: (first..first + batch as u64)
                .map(|n| workload.plain(n))
                .collect(),
            idempotency_key: String::new(),
        };
        let sent = Instant::now();
        match client.publish(request).await {
            Ok(response) => {
                report::record(&mut tally.latency, sent.elapsed().as_micros() as u64);
                tally.events += response.into_inner().events.len() as u64;
                tally.requests += 1;
            }
            Err(status) => {
                tally.error = Some(remote(status));
                break;
            }
        }
    }
    tally
}

/// Publishes batches of new indicators over one PublishStream, `in_flight`
/// requests awaiting their acks, until `deadline`; then waits for the acks of
/// what it sent.
async fn streamer(
    mut client: IndicatorHubServiceClient<Channel>,
    workload: Workload,
    batch: usize,
    in_flight: usize,
    numbers: Arc<AtomicU64>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally {
        events: 0,
        requests: 0,
        latency: report::histogram(),
        error: None,
    };
    let stream = match PublishStream::open(&mut client, in_flight).await {
        Ok(stream) => stream,
        Err(status) => {
            tally.error = Some(remote(status));
            return tally;
        }
    };
    let (sender, mut answers) = stream.split();
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut next_id = 0u64;
    loop {
        while sent_at.len() < in_flight && Instant::now() < deadline {
            let first = numbers.fetch_add(batch as u64, Ordering::Relaxed);
            let request = proto::PublishRequest {
                indicators: (first..first + batch as u64)
                    .map(|n| workload.plain(n))
                    .collect(),
                idempotency_key: String::new(),
            };
            sent_at.push_back(Instant::now());
            if let Err(status) = sender.send(next_id, request).await {
                tally.error = Some(remote(status));
                return tally;
            }
            next_id += 1;
        }
        let Some(sent) = sent_at.pop_front() else {
            break;
        };
        match client::next_answer(&mut answers).await {
            Ok(Some(answer)) => match answer.outcome {
                Ok(response) => {
                    report::record(&mut tally.latency, sent.elapsed().as_micros() as u64);
                    tally.events += response.events.len() as u64;
                    tally.requests += 1;
                }
                Err(status) => {
                    tally.error = Some(remote(status));
                    break;
                }
            },
            Ok(None) => {
                tally.error = Some(anyhow!("the PublishStream ended with requests unanswered"));
                break;
            }
            Err(status) => {
                tally.error = Some(remote(status));
                break;
            }
        }
    }
    tally
}
