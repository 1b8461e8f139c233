//! The spine: publish → subscribe → lookup, the catch-up/live handoff, and restart
//! durability. Identity and refusals are in `security`.

use std::collections::HashSet;

use dip_hub::proto::{self, Category, EventType, IndicatorKind};

use crate::harness::*;

#[tokio::test]
async fn publish_then_subscribe_then_lookup() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let response = publish(
        &mut police,
        vec![indicator(
            IndicatorKind::PhoneNumber,
            "098765 43210",
            Category::FraudCall,
        )],
    )
    .await;
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].sequence, 1);
    assert_eq!(response.events[0].r#type, EventType::Published as i32);
    assert!(!response.replayed);

    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    let event = &events[0];
    assert_eq!(event.sequence, 1);
    assert_eq!(event.event_id, response.events[0].event_id);
    assert_eq!(event.source_org, "mumbai-police");
    let indicator = event.indicator.as_ref().expect("indicator");
    assert_eq!(indicator.value, "+919876543210", "normalized to E.164");

    let found = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: "+91 98765-43210".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(found.found);
    let state = found.state.expect("state");
    assert_eq!(state.source_org, "mumbai-police");
    assert_eq!(state.reporters, vec!["mumbai-police".to_string()]);
    assert_eq!(state.last_sequence, 1);

    let missing = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: "9123456789".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(!missing.found);
}

/// Subscribers that join while publishers are busy see every event exactly once,
/// in order, across the hand-over from the log to the live feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_hands_over_to_live_without_gap_or_duplicate() {
    const PUBLISHERS: u64 = 4;
    const BATCHES: u64 = 40;
    const BATCH: u64 = 25;
    const TOTAL: u64 = PUBLISHERS * BATCHES * BATCH;
    let hub = TestHub::start().await;

    // One subscriber before anything is published, more as publishing goes on.
    let mut early = hub.client("dot-regulator").await;
    let mut early_stream = early
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();

    let (progress_tx, mut progress) = tokio::sync::mpsc::channel::<u64>(1024);
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = hub.client("mumbai-police").await;
        let progress_tx = progress_tx.clone();
        publishers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let indicators = (0..BATCH)
                    .map(|i| phone_indicator(p * 1_000_000 + b * 1000 + i))
                    .collect();
                let response = publish(&mut client, indicators).await;
                let _ = progress_tx
                    .send(response.events.last().map_or(0, |e| e.sequence))
                    .await;
            }
        }));
    }
    drop(progress_tx);

    // Join mid-way: once some events are acknowledged, and later again.
    let mut late_streams = Vec::new();
    let mut joined_at = vec![TOTAL / 10, TOTAL / 2];
    while let Some(acked) = progress.recv().await {
        if joined_at.first().is_some_and(|at| acked >= *at) {
            joined_at.remove(0);
            let mut client = hub.client("delhi-police").await;
            late_streams.push(
                client
                    .subscribe(subscribe_request(0))
                    .await
                    .expect("subscribe")
                    .into_inner(),
            );
        }
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    assert_eq!(
        late_streams.len(),
        2,
        "both late subscribers joined while publishing"
    );

    for stream in std::iter::once(&mut early_stream).chain(late_streams.iter_mut()) {
        let events = collect_events(stream, TOTAL as usize).await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=TOTAL).collect();
        assert_eq!(sequences, expected, "every event exactly once, in order");
        let values: HashSet<_> = events
            .iter()
            .map(|e| e.indicator.as_ref().unwrap().value.clone())
            .collect();
        assert_eq!(values.len() as u64, TOTAL);
    }
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_event_and_continues_the_sequence() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let response = publish(&mut police, vec![phone_indicator(n)]).await;
        acked.push(response.events[0].clone());
    }
    drop(police);
    let (pki, data) = hub.stop().await;

    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 20).await;
    for (event, ack) in events.iter().zip(&acked) {
        assert_eq!(event.sequence, ack.sequence);
        assert_eq!(event.event_id, ack.event_id);
    }
    let mut police = hub.client("mumbai-police").await;
    let next = publish(&mut police, vec![phone_indicator(99)]).await;
    assert_eq!(
        next.events[0].sequence, 21,
        "the sequence continues after a restart"
    );
    let state = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(7),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(state.found, "the state view survives the restart");
}

#[tokio::test]
async fn a_resumed_subscription_continues_exactly_after_its_last_sequence() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..10).map(phone_indicator).collect()).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let first = collect_events(&mut stream, 10).await;
    drop(stream);
    publish(&mut police, (10..15).map(phone_indicator).collect()).await;
    let last = first.last().expect("events").sequence;
    let mut stream = bank
        .subscribe(subscribe_request(last))
        .await
        .expect("subscribe")
        .into_inner();
    let rest = collect_events(&mut stream, 5).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (11..=15).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn subscribers_get_only_what_their_filter_asks_for() {
    let hub = TestHub::start().await;
    let mut tsp = hub.client("tsp-one").await;
    let mut stream = tsp
        .subscribe(proto::SubscribeRequest {
            filter: Some(proto::Filter {
                kinds: vec![IndicatorKind::Imei as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    publish(
        &mut police,
        vec![
            phone_indicator(1),
            indicator(
                IndicatorKind::Imei,
                "490154203237518",
                Category::StolenHandset,
            ),
            phone_indicator(2),
        ],
    )
    .await;
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sequence, 2);
    assert_eq!(
        events[0].indicator.as_ref().unwrap().kind,
        IndicatorKind::Imei as i32
    );
}
