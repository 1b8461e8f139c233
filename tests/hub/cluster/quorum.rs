//! No quorum: two of the three NATS servers die. Writes are refused
//! UNAVAILABLE saying why, the write health says NOT_SERVING, and reads
//! (Lookup, Subscribe) go on from each hub's local copy.

use std::time::Duration;

use dip_hub::proto;
use tokio::time::Instant;
use tonic::Code;

use super::{WITHIN, events_through, publish_request, two_hubs};
use crate::harness::phone;

const ORG: &str = "dot-regulator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_nats_quorum_writes_are_refused_and_reads_go_on() {
    let (mut nats, _pki, hubs, leader) = two_hubs().await;
    let mut client = hubs[leader].client(ORG).await;
    for n in 1..=3 {
        client
            .publish(publish_request(n, &format!("q{n}")))
            .await
            .expect("writes with a quorum");
    }
    nats.wait_replicated(3).await;

    nats.kill(1);
    nats.kill(2);
    // The leader cannot renew its lease: its write health turns NOT_SERVING.
    let deadline = Instant::now() + WITHIN;
    while hubs[leader].takes_writes().await {
        assert!(
            Instant::now() < deadline,
            "the leader still says it takes writes 30 s without a quorum"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every write is refused UNAVAILABLE; once the lease's renewal has failed
    // (a few seconds) the refusal says the quorum is missing.
    let deadline = Instant::now() + WITHIN;
    loop {
        let refused = tokio::time::timeout(
            Duration::from_secs(15),
            client.publish(publish_request(4, "q4")),
        )
        .await
        .expect("the refusal comes within 15 s")
        .expect_err("no write without a quorum");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        if refused.message().contains("cannot reach a quorum") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s without a quorum and the refusal does not say so: {}",
            refused.message()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reads go on from the local copies.
    for hub in &hubs {
        let events = events_through(hub, ORG, 3).await;
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let found = hub
            .client(ORG)
            .await
            .lookup(proto::LookupRequest {
                kind: proto::IndicatorKind::PhoneNumber as i32,
                value: phone(2),
            })
            .await
            .expect("lookup without a quorum")
            .into_inner();
        assert!(found.found, "Lookup answers from {}", hub.addr());
    }
}
