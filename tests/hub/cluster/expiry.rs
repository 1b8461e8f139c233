//! Expiry in a cluster: only the leader writes EXPIRED, so each expiry is one
//! event in the log (not one per node), a follower's refused scans log no
//! error, and after the leader dies the next leader expires what falls due.

use dip_hub::indicator::now_millis;
use dip_hub::proto::{self, EventType};

use super::{ClusterHub, WITHIN, events_through, two_hubs, wait_for_leader};
use crate::expiry::{expired_events, expiring, next_expired};
use crate::harness::phone;

const REGULATOR: &str = "dot-regulator";

/// How many EXPIRED events of `phone(n)` `events` hold.
fn expiries(events: &[proto::Event], n: u64) -> usize {
    events
        .iter()
        .filter(|e| e.r#type == EventType::Expired as i32)
        .filter(|e| e.indicator.as_ref().is_some_and(|i| i.value == phone(n)))
        .count()
}

async fn publish(hub: &ClusterHub, indicator: proto::Indicator) -> u64 {
    hub.client("mumbai-police")
        .await
        .publish(proto::PublishRequest {
            indicators: vec![indicator],
            idempotency_key: String::new(),
        })
        .await
        .expect("the leader writes")
        .into_inner()
        .events[0]
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_expiry_is_written_once_by_the_leader_and_the_next_leader_takes_over() {
    let (_nats, _pki, mut hubs, leader) = two_hubs().await;
    let follower = 1 - leader;

    // Due on both hubs: one EXPIRED, delivered by both.
    let mut streams = Vec::new();
    for hub in &hubs {
        streams.push(expired_events(&mut hub.client(REGULATOR).await).await);
    }
    let published = publish(&hubs[leader], expiring(1, 1_000)).await;
    let mut at = Vec::new();
    for stream in &mut streams {
        let event = next_expired(stream).await;
        assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(1));
        assert_eq!(event.source_org, "dip-hub");
        at.push(event.sequence);
    }
    assert_eq!(at[0], at[1], "both hubs deliver the same EXPIRED event");
    assert_eq!(at[0], published + 1);
    // Later events, then the whole log on each hub: one expiry, not one per hub.
    let head = publish(&hubs[leader], crate::harness::phone_indicator(100)).await;
    for hub in &hubs {
        let events = events_through(hub, REGULATOR, head).await;
        assert_eq!(events.len() as u64, head);
        assert_eq!(expiries(&events, 1), 1, "phone 1 expired once in the log");
    }
    let errors = hubs[follower]
        .hub
        .as_mut()
        .expect("running")
        .lines_at("ERROR");
    assert!(
        errors.is_empty(),
        "the follower's refused expiry scans log no error: {errors:?}"
    );

    // Falls due after the leader is killed: the next leader expires it.
    let published = publish(&hubs[leader], expiring(2, 2_500)).await;
    let killed_at = now_millis();
    hubs[leader].kill();
    let (_, took) = wait_for_leader(&[&hubs[follower]], WITHIN).await;
    eprintln!("the follower leads {took:?} after the leader was killed");
    // EXPIRED events after phone 2's publish, as the new leader serves them.
    let mut stream = hubs[follower]
        .client(REGULATOR)
        .await
        .subscribe(proto::SubscribeRequest {
            after_sequence: published,
            filter: Some(proto::Filter {
                types: vec![EventType::Expired as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let event = next_expired(&mut stream).await;
    assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(2));
    assert!(event.sequence > published);
    let time = event.time.as_ref().map_or(0, dip_hub::wire::millis);
    assert!(
        time >= killed_at,
        "written by the new leader, after the old one was killed ({time} < {killed_at})"
    );

    // The old leader, restarted, holds the same log: phone 2 expired once.
    let head = event.sequence;
    hubs[leader].restart().await;
    let on_new = events_through(&hubs[follower], REGULATOR, head).await;
    let on_old = events_through(&hubs[leader], REGULATOR, head).await;
    assert_eq!(on_new, on_old, "both hubs serve the same log");
    assert_eq!(expiries(&on_new, 2), 1, "phone 2 expired once in the log");
}
