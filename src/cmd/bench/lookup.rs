//! Scenario "lookup": the current state of random known indicators.
//!
//! Owns: loading the indicators (batches of 1000), then concurrent clients, each
//! on its own connection, each awaiting its answer, looking up indicators at
//! random for a fixed time. Must never count an answer that did not find the
//! indicator as a success.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::proto;
use dip_hub::validate::MAX_BATCH;

use super::hub::{BenchDir, ChildHub, publisher_org, subscriber_org};
use super::report::{self, Latency, Outcome};
use super::{Workload, phone};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub indicators: u64,
    pub clients: usize,
    pub duration: Duration,
}

struct Tally {
    lookups: u64,
    latency: Histogram<u64>,
    error: Option<anyhow::Error>,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    tracing::info!(?plan, "loading indicators");
    let mut publisher = hub.client(bench, &publisher_org(1)).await?;
    let mut loaded = 0;
    while loaded < plan.indicators {
        let last = (loaded + MAX_BATCH as u64).min(plan.indicators);
        let request = proto::PublishRequest {
            indicators: (loaded..last).map(|n| workload.plain(n)).collect(),
            idempotency_key: String::new(),
        };
        publisher.publish(request).await.map_err(remote)?;
        loaded = last;
    }

    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let (lookups, latency, errors) = measure(hub, bench, plan).await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.note();
    let mut outcome = Outcome::new(
        "lookup",
        format!(
            "{} clients, {} indicators, {} s",
            plan.clients,
            report::thousands(plan.indicators as f64),
            plan.duration.as_secs()
        ),
        lookups as f64 / secs,
        "lookups/s",
    );
    outcome.latency_kind = Some("lookup");
    outcome.latency = Latency::of(&latency);
    outcome.errors = errors;
    outcome.notes.push(cpu);
    Ok(outcome)
}

/// `plan.clients` clients, each on its own connection, look up random indicators
/// among the first `plan.indicators` for `plan.duration`: lookups that found
/// their indicator, their latency, and the clients that failed.
pub async fn measure(
    hub: &ChildHub,
    bench: &BenchDir,
    plan: Plan,
) -> Result<(u64, Histogram<u64>, u64)> {
    let mut clients = Vec::with_capacity(plan.clients);
    for n in 1..=plan.clients {
        clients.push(hub.client(bench, &subscriber_org(n)).await?);
    }
    tracing::info!(clients = plan.clients, "looking up");
    let start = Instant::now();
    let deadline = start + plan.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            tokio::spawn(async move {
                let mut tally = Tally {
                    lookups: 0,
                    latency: report::histogram(),
                    error: None,
                };
                let mut random = XorShift::new(index as u64 + 1);
                while Instant::now() < deadline {
                    let n = random.next() % plan.indicators;
                    let sent = Instant::now();
                    let answer = client
                        .lookup(proto::LookupRequest {
                            kind: proto::IndicatorKind::PhoneNumber as i32,
                            value: phone(n),
                        })
                        .await;
                    match answer {
                        Ok(response) if response.get_ref().found => {
                            report::record(&mut tally.latency, sent.elapsed().as_micros() as u64);
                            tally.lookups += 1;
                        }
                        Ok(_) => {
                            tally.error = Some(anyhow!(
                                "{} was published but the lookup did not find it",
                                phone(n)
                            ));
                            break;
                        }
                        Err(status) => {
                            tally.error = Some(remote(status));
                            break;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut latency = report::histogram();
    let (mut lookups, mut errors) = (0, 0);
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| anyhow!("a lookup task failed: {e}"))?;
        lookups += tally.lookups;
        report::absorb(
            &mut latency,
            &tally.latency,
            tally.error,
            "a lookup client",
            &mut errors,
        )?;
    }
    Ok((lookups, latency, errors))
}

/// A small deterministic pseudo-random sequence (xorshift64*), enough to spread lookups.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
