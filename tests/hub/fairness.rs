//! Fairness: other members' publish acks and deliveries while one member floods
//! publishes within its limits and another holds its maximum of Subscribe
//! streams without reading them.
//!
//! Owns: the README's fairness bound, checked against a baseline measured in the
//! same test on the same hub (so a loaded machine moves both alike). Must never
//! read the stalled streams, nor run its load past its count or time bounds.

use std::time::Duration;

use dip_hub::proto;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::harness::{Client, TestHub, indicator, phone_indicator, publish};

/// Probes (one publish by police, its delivery to beta-bank) per phase.
const PROBES: u64 = 30;
/// The flooding member's batches: bounded in count, and stopped after the probes.
const FLOOD_BATCHES: u64 = 2_000;
const FLOOD_BATCH: u64 = 50;
/// Whole-test bound.
const TEST_BOUND: Duration = Duration::from_secs(240);

/// The bound the README states: under load, the median publish ack and delivery
/// of another member stay within `FACTOR` times their unloaded median plus
/// `SLACK`, and none takes longer than `CEILING`.
const FACTOR: u32 = 10;
const SLACK: Duration = Duration::from_millis(250);
const CEILING: Duration = Duration::from_secs(5);

/// Publish-ack and delivery latencies of `PROBES` probes, numbered from `first`.
async fn probe(
    police: &mut Client,
    beta: &mut tonic::Streaming<proto::SubscribeResponse>,
    first: u64,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut acks = Vec::new();
    let mut deliveries = Vec::new();
    for n in first..first + PROBES {
        let start = Instant::now();
        let ack = publish(police, vec![phone_indicator(n)]).await;
        acks.push(start.elapsed());
        let sequence = ack.events[0].sequence;
        loop {
            let message = tokio::time::timeout(CEILING * 2, beta.message())
                .await
                .expect("the probe is delivered")
                .expect("stream healthy")
                .expect("stream open");
            if message.events.iter().any(|e| e.sequence == sequence) {
                break;
            }
        }
        deliveries.push(start.elapsed());
    }
    (acks, deliveries)
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn check(what: &str, base: Vec<Duration>, loaded: Vec<Duration>) {
    let (base_median, _) = median(base);
    let (loaded_median, loaded_max) = median(loaded);
    let bound = base_median * FACTOR + SLACK;
    eprintln!(
        "fairness: {what}: median {base_median:?} unloaded, {loaded_median:?} under load \
         (bound {bound:?}), slowest {loaded_max:?} (ceiling {CEILING:?})"
    );
    assert!(
        loaded_median <= bound,
        "{what}: median {loaded_median:?} under load, more than {FACTOR} x {base_median:?} + {SLACK:?}"
    );
    assert!(
        loaded_max <= CEILING,
        "{what}: slowest {loaded_max:?} under load, more than {CEILING:?}"
    );
}

#[tokio::test]
async fn other_members_stay_within_the_bound_while_one_floods_and_another_stalls_streams() {
    tokio::time::timeout(TEST_BOUND, async {
        let hub = TestHub::start().await;
        let mut police = hub.client("mumbai-police").await;
        let mut beta = hub
            .client("beta-bank")
            .await
            .subscribe(proto::SubscribeRequest {
                filter: Some(proto::Filter {
                    kinds: vec![proto::IndicatorKind::PhoneNumber as i32],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("beta subscribes")
            .into_inner();

        let (base_acks, base_deliveries) = probe(&mut police, &mut beta, 0).await;

        // alpha-bank holds its 64 streams (BANK's limit) and never reads them.
        let alpha = hub.client("alpha-bank").await;
        let mut stalled = Vec::new();
        for _ in 0..64 {
            let stream = alpha
                .clone()
                .subscribe(proto::SubscribeRequest::default())
                .await
                .expect("within alpha-bank's limit");
            stalled.push(stream.into_inner());
        }
        // delhi-police floods UPI IDs in batches, within its limits (it backs off
        // when told to retry).
        let stop = CancellationToken::new();
        let (flooding, mut started) = tokio::sync::watch::channel(0u64);
        let flood = tokio::spawn({
            let stop = stop.clone();
            let mut flooder = hub.client("delhi-police").await;
            async move {
                let mut acked = 0u64;
                for batch in 0..FLOOD_BATCHES {
                    if stop.is_cancelled() {
                        break;
                    }
                    let indicators = (0..FLOOD_BATCH)
                        .map(|i| {
                            indicator(
                                proto::IndicatorKind::UpiId,
                                &format!("flood{}@okaxis", batch * FLOOD_BATCH + i),
                                proto::Category::MuleAccount,
                            )
                        })
                        .collect();
                    let sent = flooder
                        .publish(proto::PublishRequest {
                            indicators,
                            idempotency_key: String::new(),
                        })
                        .await;
                    match sent {
                        Ok(_) => {
                            acked += FLOOD_BATCH;
                            flooding.send_replace(acked);
                        }
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                acked
            }
        });
        started
            .wait_for(|acked| *acked > 0)
            .await
            .expect("the flood publishes");

        let before = *started.borrow();
        let (acks, deliveries) = probe(&mut police, &mut beta, PROBES).await;
        let during = *started.borrow();
        stop.cancel();
        let flooded = flood.await.expect("flood task");
        assert!(
            during > before,
            "the flood went on while the probes ran ({before} then {during} events acked)"
        );
        eprintln!("fairness: {flooded} flood events, 64 stalled streams");
        check("publish ack", base_acks, acks);
        check("delivery", base_deliveries, deliveries);
        drop(stalled);
    })
    .await
    .expect("the fairness test ends within its bound");
}
