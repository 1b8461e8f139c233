//! Subscriptions users can rely on: durable named cursors (resume after a killed
//! client and after a restart of the hub), heartbeats that tell a client it is
//! caught up, slow subscribers that hold back nobody and still get everything,
//! and snapshots that, followed by a subscription, stay exact.

use dip_hub::proto::ValueName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dip_hub::proto::{self, Category, EventType, IndicatorKind, Risk, Tlp};
use tokio::sync::watch;
use tonic::Code;

use crate::harness::*;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(60);

fn consumer_request(consumer: &str) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        consumer: consumer.into(),
        heartbeat_seconds: 1,
        ..Default::default()
    }
}

async fn subscribe(
    client: &mut Client,
    request: proto::SubscribeRequest,
) -> tonic::Streaming<proto::SubscribeResponse> {
    client
        .subscribe(request)
        .await
        .expect("subscribe accepted")
        .into_inner()
}

async fn ack(client: &mut Client, consumer: &str, sequence: u64) -> Result<u64, tonic::Status> {
    client
        .ack(proto::AckRequest {
            consumer: consumer.into(),
            sequence,
        })
        .await
        .map(|r| r.into_inner().acknowledged_sequence)
}

async fn next_message(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
) -> proto::SubscribeResponse {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message within the time limit")
        .expect("stream healthy")
        .expect("stream open")
}

/// The next message is a heartbeat saying that everything up to `head` (the
/// hub's head) was delivered; no event comes before it (so none was duplicated).
async fn assert_caught_up(stream: &mut tonic::Streaming<proto::SubscribeResponse>, head: u64) {
    let message = next_message(stream).await;
    let sequences: Vec<u64> = message.events.iter().map(|e| e.sequence).collect();
    assert!(sequences.is_empty(), "unexpected events {sequences:?}");
    let heartbeat = message.heartbeat.expect("a heartbeat");
    assert_eq!(
        heartbeat.head_sequence, head,
        "the heartbeat carries the head"
    );
    assert_eq!(heartbeat.delivered_through, head, "caught up");
}

fn sequences(events: &[proto::Event]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

fn with(risk: Risk, tlp: Tlp, mut indicator: proto::Indicator) -> proto::Indicator {
    indicator.risk = risk as i32;
    indicator.tlp = tlp as i32;
    indicator
}

fn upi_indicator(n: u64) -> proto::Indicator {
    indicator(
        IndicatorKind::UpiId,
        &format!("mule{n}@okaxis"),
        Category::MuleAccount,
    )
}

/// The digest formula of the README, computed here independently of the hub's
/// code: the sum modulo 2^256 of SHA-256("KIND:value") as big-endian integers.
fn readme_digest<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sum = [0u8; 32];
    for (kind, value) in keys {
        let hash =
            ring::digest::digest(&ring::digest::SHA256, format!("{kind}:{value}").as_bytes());
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let total = u16::from(sum[i]) + u16::from(hash.as_ref()[i]) + carry;
            sum[i] = total as u8;
            carry = total >> 8;
        }
    }
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_name(kind: i32) -> &'static str {
    IndicatorKind::try_from(kind)
        .expect("known kind")
        .short_name()
}

async fn snapshot(client: &mut Client, filter: proto::Filter) -> dip_hub::client::Snapshot {
    dip_hub::client::snapshot(client, filter)
        .await
        .expect("a complete snapshot whose digest matches what arrived")
}

fn phones_only() -> proto::Filter {
    proto::Filter {
        kinds: vec![IndicatorKind::PhoneNumber as i32],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_named_consumer_resumes_right_after_its_last_ack_when_the_client_is_killed() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..10).map(phone_indicator).collect()).await;
    {
        let mut bank = hub.client("alpha-bank").await;
        let mut stream = subscribe(&mut bank, consumer_request("fraud-desk")).await;
        let events = collect_events(&mut stream, 10).await;
        assert_eq!(sequences(&events), (1..=10).collect::<Vec<_>>());
        assert_eq!(ack(&mut bank, "fraud-desk", 6).await.expect("ack"), 6);
        // The client dies with events 7..10 received but not acknowledged.
        drop(stream);
        drop(bank);
    }
    publish(&mut police, (10..15).map(phone_indicator).collect()).await;

    let mut bank = hub.client("alpha-bank").await;
    let mut stream = subscribe(&mut bank, consumer_request("fraud-desk")).await;
    let events = collect_events(&mut stream, 9).await;
    assert_eq!(sequences(&events), (7..=15).collect::<Vec<_>>());
    assert_caught_up(&mut stream, 15).await;

    // Names are per organisation: beta-bank's "fraud-desk" has acknowledged nothing.
    let mut other = hub.client("beta-bank").await;
    let mut stream = subscribe(&mut other, consumer_request("fraud-desk")).await;
    assert_eq!(collect_events(&mut stream, 1).await[0].sequence, 1);

    // An explicit start wins over the cursor.
    let mut stream = subscribe(
        &mut bank,
        proto::SubscribeRequest {
            after_sequence: 12,
            ..consumer_request("fraud-desk")
        },
    )
    .await;
    assert_eq!(
        sequences(&collect_events(&mut stream, 3).await),
        vec![13, 14, 15]
    );
}

#[tokio::test]
async fn a_named_consumer_resumes_after_a_restart_of_the_hub() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..10).map(phone_indicator).collect()).await;
    let mut tsp = hub.client("tsp-one").await;
    let mut stream = subscribe(&mut tsp, consumer_request("block-list")).await;
    collect_events(&mut stream, 10).await;
    assert_eq!(ack(&mut tsp, "block-list", 4).await.expect("ack"), 4);
    let before = snapshot(&mut tsp, proto::Filter::default()).await;
    drop(stream);
    drop(tsp);
    drop(police);

    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut tsp = hub.client("tsp-one").await;
    let mut stream = subscribe(&mut tsp, consumer_request("block-list")).await;
    let events = collect_events(&mut stream, 6).await;
    assert_eq!(sequences(&events), (5..=10).collect::<Vec<_>>());
    assert_caught_up(&mut stream, 10).await;

    // The state view and its digest come back as they were.
    let after = snapshot(&mut tsp, proto::Filter::default()).await;
    assert_eq!(after.as_of_sequence, before.as_of_sequence);
    assert_eq!(after.digest, before.digest);
    assert_eq!(after.indicators, before.indicators);
    let found = tsp
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(3),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(found.found);
}

#[tokio::test]
async fn acks_move_forward_only_and_bad_acks_are_refused_without_changing_anything() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..10).map(phone_indicator).collect()).await;
    let mut bank = hub.client("alpha-bank").await;

    assert_eq!(ack(&mut bank, "desk", 5).await.expect("ack"), 5);
    assert_eq!(
        ack(&mut bank, "desk", 3).await.expect("ack"),
        5,
        "never back"
    );
    assert_eq!(ack(&mut bank, "desk", 5).await.expect("ack"), 5);

    let beyond = ack(&mut bank, "desk", 11)
        .await
        .expect_err("beyond the head");
    assert_eq!(beyond.code(), Code::InvalidArgument);
    assert!(
        beyond.message().contains("sequence") && beyond.message().contains("10"),
        "{}",
        beyond.message()
    );
    for name in ["", "fraud desk", "desk/1", &"x".repeat(65)] {
        let refused = ack(&mut bank, name, 2).await.expect_err("bad name");
        assert_eq!(refused.code(), Code::InvalidArgument, "{name:?}");
        assert!(
            refused.message().contains("consumer"),
            "{}",
            refused.message()
        );
    }
    let refused = bank
        .subscribe(consumer_request("fraud desk"))
        .await
        .expect_err("bad name");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let mut stream = subscribe(&mut bank, consumer_request("desk")).await;
    let events = collect_events(&mut stream, 5).await;
    assert_eq!(sequences(&events), (6..=10).collect::<Vec<_>>());
    assert_caught_up(&mut stream, 10).await;
}

/// One stream, filtered by kind, minimum risk and TLP, gets the same selection
/// from the log (catch-up) as from the live feed; a heartbeat then tells it it is
/// caught up although the newest event did not match.
#[tokio::test]
async fn filters_apply_during_catch_up_exactly_as_live() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mix = |base: u64| {
        vec![
            phone_indicator(base),                                       // matches
            with(Risk::Medium, Tlp::Green, phone_indicator(base + 1)),   // too low
            upi_indicator(base + 2),                                     // other kind
            with(Risk::VeryHigh, Tlp::Red, phone_indicator(base + 3)),   // TLP:RED of another org
            with(Risk::VeryHigh, Tlp::Amber, phone_indicator(base + 4)), // matches
            upi_indicator(base + 5),                                     // other kind, last
        ]
    };
    let matching =
        |response: &proto::PublishResponse| [0, 4].map(|i| response.events[i].sequence).to_vec();
    let early = publish(&mut police, mix(0)).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = subscribe(
        &mut bank,
        proto::SubscribeRequest {
            filter: Some(proto::Filter {
                kinds: vec![IndicatorKind::PhoneNumber as i32],
                min_risk: Risk::High as i32,
                ..Default::default()
            }),
            heartbeat_seconds: 1,
            ..Default::default()
        },
    )
    .await;
    let caught_up = collect_events(&mut stream, 2).await;
    assert_eq!(sequences(&caught_up), matching(&early));
    assert_caught_up(&mut stream, 6).await;

    let late = publish(&mut police, mix(100)).await;
    let live = collect_events(&mut stream, 2).await;
    assert_eq!(sequences(&live), matching(&late));
    assert_caught_up(&mut stream, 12).await;
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_carrying_the_head() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..3).map(phone_indicator).collect()).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = subscribe(
        &mut bank,
        proto::SubscribeRequest {
            heartbeat_seconds: 1,
            ..Default::default()
        },
    )
    .await;
    let events = collect_events(&mut stream, 3).await;
    let last_seen = events.last().expect("events").sequence;
    // Caught up: the head a heartbeat carries is the last sequence seen.
    assert_caught_up(&mut stream, last_seen).await;
    assert_caught_up(&mut stream, last_seen).await;

    publish(&mut police, vec![phone_indicator(3)]).await;
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(sequences(&events), vec![4]);
    assert_caught_up(&mut stream, 4).await;
}

/// Invariant 4: a subscriber that reads nothing while far more than the feed's
/// ring is published holds back neither the publisher nor the fast subscribers,
/// and then still gets every event exactly once, in order (from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_subscriber_holds_back_nobody_and_still_gets_every_event_in_order() {
    const BATCHES: u64 = 200;
    const BATCH: u64 = 50;
    const TOTAL: u64 = BATCHES * BATCH;
    let pki = TestPki::new();
    let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_with(pki, data, |c| c.feed_capacity = 64).await;

    // Subscribed before anything is published, and not read until the end:
    // 10 000 events (over a megabyte) against a ring of 64 and windows of 16 KiB.
    // Small HTTP/2 windows: a subscriber that does not read is held back by the
    // hub within a few kilobytes.
    let mut slow_client = hub
        .client_with_windows("tsp-two", 16 * 1024, 16 * 1024)
        .await;
    let mut slow = subscribe(
        &mut slow_client,
        proto::SubscribeRequest {
            heartbeat_seconds: 1,
            ..Default::default()
        },
    )
    .await;

    let mut fast = Vec::new();
    for org in ["alpha-bank", "tsp-one", "dot-regulator"] {
        let mut client = hub.client(org).await;
        let mut stream = subscribe(&mut client, subscribe_request(0)).await;
        fast.push(tokio::spawn(async move {
            let events = collect_events(&mut stream, TOTAL as usize).await;
            (client, sequences(&events))
        }));
    }
    let mut police = hub.client("mumbai-police").await;
    let publisher = tokio::spawn(async move {
        for b in 0..BATCHES {
            publish(
                &mut police,
                (b * BATCH..(b + 1) * BATCH).map(phone_indicator).collect(),
            )
            .await;
        }
    });
    tokio::time::timeout(PATIENCE, publisher)
        .await
        .expect("the publisher is not held back")
        .expect("publisher");
    for subscriber in fast {
        let (_client, got) = tokio::time::timeout(PATIENCE, subscriber)
            .await
            .expect("fast subscribers finish while the slow one reads nothing")
            .expect("subscriber");
        assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>());
    }

    let events = collect_events(&mut slow, TOTAL as usize).await;
    assert_eq!(
        sequences(&events),
        (1..=TOTAL).collect::<Vec<_>>(),
        "every event exactly once, in order"
    );
    assert_caught_up(&mut slow, TOTAL).await;
}

#[tokio::test]
async fn a_snapshot_holds_exactly_the_active_indicators_the_filter_and_tlp_allow() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    for b in 0..3 {
        let n = if b < 2 { 1000 } else { 500 };
        publish(
            &mut police,
            (b * 1000..b * 1000 + n).map(phone_indicator).collect(),
        )
        .await;
    }
    let very_high: Vec<proto::Indicator> = (5000..5010)
        .map(|n| with(Risk::VeryHigh, Tlp::Green, phone_indicator(n)))
        .chain((6000..6005).map(|n| with(Risk::VeryHigh, Tlp::Red, phone_indicator(n))))
        .collect();
    publish(&mut police, very_high).await;
    for n in [5000, 5001, 6000] {
        police
            .revoke(proto::RevokeRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: phone(n),
                reason: "false positive".into(),
                idempotency_key: String::new(),
            })
            .await
            .expect("revoke");
    }
    let head = 2500 + 15 + 3;
    let very_high = proto::Filter {
        min_risk: Risk::VeryHigh as i32,
        ..Default::default()
    };

    // A TSP does not see TLP:RED of others; revoked indicators are not active.
    let mut tsp = hub.client("tsp-one").await;
    let got = snapshot(&mut tsp, very_high.clone()).await;
    assert_eq!(got.as_of_sequence, head);
    let values: BTreeSet<String> = got
        .indicators
        .iter()
        .map(|s| s.indicator.as_ref().expect("indicator").value.clone())
        .collect();
    let expected: BTreeSet<String> = (5002..5010).map(phone).collect();
    assert_eq!(values, expected);
    assert_eq!(
        got.digest,
        readme_digest(expected.iter().map(|v| ("PHONE_NUMBER", v.as_str())))
    );
    // The police sees TLP:RED.
    let got = snapshot(&mut police, very_high).await;
    assert_eq!(got.indicators.len(), 8 + 4);

    // A large snapshot comes in chunks, each with the same as_of_sequence, the
    // count and the digest on the last one only.
    let mut stream = tsp
        .snapshot(proto::SnapshotRequest {
            filter: Some(phones_only()),
        })
        .await
        .expect("snapshot")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.expect("stream healthy") {
        messages.push(message);
    }
    assert!(messages.len() >= 3, "{} messages", messages.len());
    assert!(messages.iter().all(|m| m.as_of_sequence == head));
    let (last, rest) = messages.split_last().expect("messages");
    assert!(last.last && rest.iter().all(|m| !m.last && m.digest.is_empty()));
    let all: Vec<&proto::IndicatorState> = messages.iter().flat_map(|m| &m.indicators).collect();
    assert_eq!(last.count, all.len() as u64);
    assert_eq!(all.len(), 2500 + 8);
    assert_eq!(
        last.digest,
        readme_digest(all.iter().map(|s| {
            let i = s.indicator.as_ref().expect("indicator");
            (kind_name(i.kind), i.value.as_str())
        }))
    );

    // Nothing matches: one last message, empty digest.
    let none = snapshot(
        &mut tsp,
        proto::Filter {
            kinds: vec![IndicatorKind::UpiId as i32],
            ..Default::default()
        },
    )
    .await;
    assert!(none.indicators.is_empty());
    assert_eq!(none.digest, "0".repeat(64));

    let refused = tsp
        .snapshot(proto::SnapshotRequest {
            filter: Some(proto::Filter {
                types: vec![EventType::Revoked as i32],
                ..Default::default()
            }),
        })
        .await
        .expect_err("types do not apply");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("filter.types"),
        "{}",
        refused.message()
    );
}

/// A TSP's block list: a snapshot taken while publishers are busy, then the
/// events after its sequence applied to it, equals the hub's final state
/// (final snapshot, its digest, and Lookup of every indicator).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_then_a_subscription_from_its_sequence_stays_exact() {
    const PER_ROUND: u64 = 20;
    const ROUNDS_AFTER_SNAPSHOT: u64 = 4;
    let hub = TestHub::start().await;

    // Police: each round publishes 20 new numbers (every 7th TLP:RED) and revokes
    // every 5th number of the round before. Rounds done are announced.
    let (rounds_done, mut rounds) = watch::channel(0u64);
    let (stop_tx, stop) = watch::channel(None::<u64>);
    let mut police = hub.client("mumbai-police").await;
    let police_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut head = 0;
            let mut round = 0u64;
            loop {
                if stop.borrow().is_some_and(|last| round > last) {
                    return head;
                }
                let numbers = round * PER_ROUND..(round + 1) * PER_ROUND;
                let batch = numbers
                    .map(|n| {
                        let tlp = if n % 7 == 0 { Tlp::Red } else { Tlp::Green };
                        with(Risk::High, tlp, phone_indicator(n))
                    })
                    .collect();
                let published = publish(&mut police, batch).await;
                head = head.max(published.events.last().expect("events").sequence);
                if round > 0 {
                    for n in ((round - 1) * PER_ROUND..round * PER_ROUND).filter(|n| n % 5 == 0) {
                        let revoked = police
                            .revoke(proto::RevokeRequest {
                                kind: IndicatorKind::PhoneNumber as i32,
                                value: phone(n),
                                reason: "closed".into(),
                                idempotency_key: String::new(),
                            })
                            .await
                            .expect("revoke");
                        head = head.max(revoked.into_inner().events[0].sequence);
                    }
                }
                rounds_done.send_replace(round + 1);
                round += 1;
            }
        }
    });
    // A bank: reports every 3rd green number of each finished round (a sighting,
    // or a new life when the police revoked it already) and a UPI ID (not a phone).
    let mut bank = hub.client("alpha-bank").await;
    let bank_task = tokio::spawn({
        let mut rounds = rounds.clone();
        async move {
            let mut head = 0;
            let mut done = 0;
            loop {
                let available = *rounds.borrow_and_update();
                for round in done..available {
                    let batch: Vec<_> = (round * PER_ROUND..(round + 1) * PER_ROUND)
                        .filter(|n| n % 3 == 0 && n % 7 != 0)
                        .map(phone_indicator)
                        .chain([upi_indicator(round)])
                        .collect();
                    let published = publish(&mut bank, batch).await;
                    head = head.max(published.events.last().expect("events").sequence);
                }
                done = available;
                if rounds.changed().await.is_err() {
                    return head;
                }
            }
        }
    });

    // The snapshot, while they publish.
    rounds.wait_for(|r| *r >= 3).await.expect("police rounds");
    let mut tsp = hub.client("tsp-one").await;
    let first = snapshot(&mut tsp, phones_only()).await;
    let as_of = first.as_of_sequence;
    assert!(as_of > 0);
    assert_eq!(
        first.digest,
        readme_digest(first.indicators.iter().map(|s| {
            let i = s.indicator.as_ref().expect("indicator");
            (kind_name(i.kind), i.value.as_str())
        }))
    );
    let started_at = *rounds.borrow();
    stop_tx.send_replace(Some(started_at + ROUNDS_AFTER_SNAPSHOT));

    let mut block_list: BTreeMap<String, u64> = first
        .indicators
        .iter()
        .map(|s| {
            (
                s.indicator.as_ref().expect("indicator").value.clone(),
                s.last_sequence,
            )
        })
        .collect();
    let mut stream = subscribe(
        &mut tsp,
        proto::SubscribeRequest {
            filter: Some(phones_only()),
            after_sequence: as_of,
            heartbeat_seconds: 1,
            ..Default::default()
        },
    )
    .await;

    let police_head = tokio::time::timeout(PATIENCE, police_task)
        .await
        .expect("police finishes")
        .expect("police");
    // The bank finishes the rounds announced, then sees the channel close.
    let bank_head = tokio::time::timeout(PATIENCE, bank_task)
        .await
        .expect("bank finishes")
        .expect("bank");
    let head = police_head.max(bank_head);
    assert!(head > as_of, "events after the snapshot");

    // Apply events until a heartbeat says everything up to the head was delivered.
    let mut last = as_of;
    loop {
        let message = next_message(&mut stream).await;
        for event in &message.events {
            assert!(event.sequence > last, "in order, no duplicate");
            last = event.sequence;
            let value = event.indicator.as_ref().expect("indicator").value.clone();
            match EventType::try_from(event.r#type).expect("type") {
                EventType::Published | EventType::Sighting => {
                    block_list.insert(value, event.sequence);
                }
                EventType::Revoked | EventType::Expired => {
                    block_list.remove(&value);
                }
                _ => {}
            }
        }
        if message
            .heartbeat
            .is_some_and(|h| h.delivered_through >= head)
        {
            break;
        }
    }

    let last_snapshot = snapshot(&mut tsp, phones_only()).await;
    let final_values: BTreeSet<String> = last_snapshot
        .indicators
        .iter()
        .map(|s| s.indicator.as_ref().expect("indicator").value.clone())
        .collect();
    let local: BTreeSet<String> = block_list.keys().cloned().collect();
    assert_eq!(local, final_values);
    assert_eq!(
        readme_digest(local.iter().map(|v| ("PHONE_NUMBER", v.as_str()))),
        last_snapshot.digest
    );
    // And Lookup agrees, number by number (TLP:RED ones are not shown to a TSP).
    let published_up_to = (started_at + ROUNDS_AFTER_SNAPSHOT + 1) * PER_ROUND;
    let mut active = 0;
    for n in 0..published_up_to {
        let found = tsp
            .lookup(proto::LookupRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: phone(n),
            })
            .await
            .expect("lookup")
            .into_inner();
        let is_active = found
            .state
            .is_some_and(|s| s.status == proto::IndicatorStatus::Active as i32);
        assert_eq!(is_active, local.contains(&phone(n)), "number {n}");
        active += usize::from(is_active);
    }
    assert_eq!(active, local.len());
    assert!(local.len() > first.indicators.len());
    assert_eq!(last_snapshot.as_of_sequence, head);
}

/// The status of a Subscribe refused before any message.
async fn refused(client: &mut Client, request: proto::SubscribeRequest) -> tonic::Status {
    match tokio::time::timeout(PATIENCE, client.subscribe(request))
        .await
        .expect("an answer within the time limit")
    {
        Ok(_) => panic!("a Subscribe past the head was accepted"),
        Err(status) => status,
    }
}

/// Regression: `Subscribe(after_sequence = head + 100)` was accepted, heartbeats
/// claimed `delivered_through = head + 100` and the next 100 events never reached
/// the stream (a client resuming against a hub restored from an older backup, or
/// the wrong hub, lost them silently). Every start position past the head is now
/// OUT_OF_RANGE naming the hub's head: after_sequence, a snapshot's as_of
/// sequence beyond it, and a consumer's stored cursor.
#[tokio::test]
async fn resuming_past_the_head_is_out_of_range_naming_the_head() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (1..=3).map(phone_indicator).collect()).await;
    let mut bank = hub.client("alpha-bank").await;

    let status = refused(&mut bank, subscribe_request(103)).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().starts_with("after_sequence: is 103")
            && status.message().contains("newest durable sequence 3"),
        "{}",
        status.message()
    );

    // Snapshot then subscribe: exact at as_of, refused beyond it.
    let snap = snapshot(&mut bank, proto::Filter::default()).await;
    assert_eq!(snap.as_of_sequence, 3);
    let status = refused(&mut bank, subscribe_request(snap.as_of_sequence + 1)).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let mut exact = subscribe(&mut bank, subscribe_request(snap.as_of_sequence)).await;
    publish(&mut police, vec![phone_indicator(4)]).await;
    let events = collect_events(&mut exact, 1).await;
    assert_eq!(events[0].sequence, 4);
    drop(exact);

    // A consumer's cursor past the head (e.g. the database restored from a
    // backup older than the cursor's ack): written with the hub stopped.
    ack(&mut bank, "desk", 4).await.expect("ack at the head");
    let (pki, data) = hub.stop().await;
    {
        let log = dip_hub::log::Log::open(&data.path().join("db")).expect("open the log");
        log.set_cursors(&[("alpha-bank".into(), "desk".into(), 40)])
            .expect("cursor");
        log.flush().expect("flush");
    }
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    let status = refused(&mut bank, consumer_request("desk")).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("consumer: desk's acknowledged sequence is 40")
            && status.message().contains("newest durable sequence 4"),
        "{}",
        status.message()
    );
    hub.stop().await;
}
