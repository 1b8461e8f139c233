//! PublishStream through the real server: answers in request order once
//! durable, each refusal in its own slot without ending the stream, the same
//! idempotency and limits as the unary Publish, one total order across streams,
//! and a client that stops reading is held back without holding anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dip_hub::client::{PublishStream, StreamAnswer};
use dip_hub::proto;
use tonic::Code;

use crate::harness::{Client, SOON, TestHub, collect_events, indicator, phone_indicator, publish};

/// The HTTP/2 receive windows of a client that stops reading: per call 64 KiB
/// (the protocol's default), so that what the transport holds for it is small;
/// per connection large, because h2 closes a connection whose unread small DATA
/// frames exceed half of it ("too_many_data_frames").
const NARROW_CALL_WINDOW: u32 = 65_535;
const NARROW_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

fn request(indicators: Vec<proto::Indicator>, key: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        indicators,
        idempotency_key: key.into(),
    }
}

async fn next(stream: &mut PublishStream) -> StreamAnswer {
    tokio::time::timeout(SOON, stream.answer())
        .await
        .expect("answered in time")
        .expect("the stream goes on")
        .expect("an answer")
}

fn published(answer: &StreamAnswer) -> &proto::PublishResponse {
    match &answer.outcome {
        Ok(response) => response,
        Err(status) => panic!("request {} refused: {status:?}", answer.correlation_id),
    }
}

fn refused(answer: &StreamAnswer, code: Code, names: &[&str]) {
    let status = answer.outcome.as_ref().expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    for name in names {
        assert!(
            status.message().contains(name),
            "{:?} should name {name:?}",
            status.message()
        );
    }
}

async fn open(client: &mut Client) -> PublishStream {
    PublishStream::open(client, 16).await.expect("stream opens")
}

#[tokio::test]
async fn answers_come_in_request_order_once_durable_with_their_correlation_ids() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let stream = open(&mut police).await;
    let count = 300u64;
    let (sender, mut answers) = stream.split();
    let sending = tokio::spawn(async move {
        for n in 0..count {
            // Correlation ids in no particular order: the hub echoes, never sorts.
            sender
                .send(7_000 - n, request(vec![phone_indicator(n)], ""))
                .await
                .expect("sent");
        }
    });
    for n in 0..count {
        let answer = tokio::time::timeout(SOON, dip_hub::client::next_answer(&mut answers))
            .await
            .expect("in time")
            .expect("the stream goes on")
            .expect("an answer");
        assert_eq!(answer.correlation_id, 7_000 - n);
        let response = published(&answer);
        assert_eq!(response.events.len(), 1);
        assert_eq!(response.events[0].sequence, n + 1, "in order, no gap");
        assert_eq!(
            response.events[0].r#type,
            proto::EventType::Published as i32
        );
    }
    sending.await.expect("sender");
    let end = dip_hub::client::next_answer(&mut answers).await;
    assert!(
        matches!(end, Ok(None)),
        "ends well once the requests end: {end:?}"
    );

    // What was answered is stored: a subscriber reads every event from the log.
    let mut events = police
        .subscribe(crate::harness::subscribe_request(0))
        .await
        .expect("subscribes")
        .into_inner();
    let events = collect_events(&mut events, count as usize).await;
    assert_eq!(events.len() as u64, count);
    assert_eq!(events.last().map(|e| e.sequence), Some(count));
}

#[tokio::test]
async fn a_refused_request_is_answered_in_its_slot_and_the_stream_goes_on() {
    let hub = TestHub::start().await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = open(&mut bank).await;
    let mut bad_value = phone_indicator(2);
    bad_value.value = "not a number".into();
    let disconnected = indicator(
        proto::IndicatorKind::PhoneNumber,
        &crate::harness::phone(3),
        proto::Category::Disconnected,
    );
    stream
        .send(1, request(vec![phone_indicator(1)], ""))
        .await
        .expect("sent");
    stream
        .send(2, request(vec![phone_indicator(9), bad_value], ""))
        .await
        .expect("sent");
    stream
        .send(3, request(vec![disconnected], ""))
        .await
        .expect("sent");
    stream.send(4, request(vec![], "")).await.expect("sent");
    stream
        .send(5, request(vec![phone_indicator(5)], ""))
        .await
        .expect("sent");
    stream.finish();

    let first = next(&mut stream).await;
    assert_eq!(published(&first).events[0].sequence, 1);
    let second = next(&mut stream).await;
    assert_eq!(second.correlation_id, 2);
    refused(
        &second,
        Code::InvalidArgument,
        &["indicators[1].value", "expected"],
    );
    let third = next(&mut stream).await;
    refused(
        &third,
        Code::PermissionDenied,
        &["indicators[0]", "DISCONNECTED"],
    );
    let fourth = next(&mut stream).await;
    refused(&fourth, Code::InvalidArgument, &["indicators", "1 to 1000"]);
    let fifth = next(&mut stream).await;
    assert_eq!(fifth.correlation_id, 5);
    assert_eq!(
        published(&fifth).events[0].sequence,
        2,
        "nothing of a refused request was stored"
    );
    assert!(matches!(stream.answer().await, Ok(None)));

    // The all-or-nothing batch stored nothing: indicator 9 is unknown.
    let lookup = bank
        .lookup(proto::LookupRequest {
            kind: proto::IndicatorKind::PhoneNumber as i32,
            value: crate::harness::phone(9),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(!lookup.found);
}

#[tokio::test]
async fn a_request_without_its_publish_is_refused_naming_the_field() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let mut answers = police
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("opens")
        .into_inner();
    requests
        .send(proto::PublishStreamRequest {
            correlation_id: 42,
            publish: None,
        })
        .await
        .expect("sent");
    drop(requests);
    let answer = dip_hub::client::next_answer(&mut answers)
        .await
        .expect("goes on")
        .expect("answer");
    assert_eq!(answer.correlation_id, 42);
    refused(&answer, Code::InvalidArgument, &["publish", "missing"]);
}

#[tokio::test]
async fn an_idempotency_key_replays_on_the_stream_as_on_the_unary_call() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let batch = || vec![phone_indicator(1), phone_indicator(2)];
    let mut stream = open(&mut police).await;
    stream
        .send(1, request(batch(), "load-1"))
        .await
        .expect("sent");
    // The same key again in the same stream, before the first is answered.
    stream
        .send(2, request(batch(), "load-1"))
        .await
        .expect("sent");
    stream
        .send(3, request(vec![phone_indicator(3)], "load-1"))
        .await
        .expect("sent");
    stream.finish();
    let first = next(&mut stream).await;
    let first = published(&first).clone();
    assert!(!first.replayed);
    let again = next(&mut stream).await;
    let again = published(&again);
    assert!(again.replayed);
    assert_eq!(
        again.events, first.events,
        "the first answer, not new events"
    );
    let other = next(&mut stream).await;
    refused(&other, Code::FailedPrecondition, &["load-1"]);

    // A new stream, and the unary call, get the same answer: nothing twice.
    let mut stream = open(&mut police).await;
    stream
        .send(9, request(batch(), "load-1"))
        .await
        .expect("sent");
    let replay = next(&mut stream).await;
    assert_eq!(published(&replay).events, first.events);
    let unary = police
        .publish(request(batch(), "load-1"))
        .await
        .expect("unary replay")
        .into_inner();
    assert!(unary.replayed);
    assert_eq!(unary.events, first.events);
    let head = publish(&mut police, vec![phone_indicator(4)]).await;
    assert_eq!(head.events[0].sequence, 3, "two events stored, once");
}

#[tokio::test]
async fn the_publish_rate_refuses_in_the_slot_and_other_organisations_are_served() {
    let hub = TestHub::start().await;
    crate::limits::set_limits(
        &hub,
        "mumbai-police",
        proto::OrgLimits {
            publish_events_per_second: Some(1),
            publish_burst: Some(3),
            ..Default::default()
        },
    )
    .await;
    let mut police = hub.client("mumbai-police").await;
    let mut stream = open(&mut police).await;
    let three = |from: u64| (from..from + 3).map(phone_indicator).collect::<Vec<_>>();
    stream.send(1, request(three(0), "")).await.expect("sent");
    stream.send(2, request(three(10), "")).await.expect("sent");
    stream
        .send(3, request((20..24).map(phone_indicator).collect(), ""))
        .await
        .expect("sent");
    stream.finish();
    assert_eq!(published(&next(&mut stream).await).events.len(), 3);
    refused(
        &next(&mut stream).await,
        Code::ResourceExhausted,
        &["publish_events_per_second", "retry after"],
    );
    refused(
        &next(&mut stream).await,
        Code::ResourceExhausted,
        &["publish_burst", "4 events"],
    );
    assert!(matches!(stream.answer().await, Ok(None)));
    let mut delhi = hub.client("delhi-police").await;
    let answer = publish(&mut delhi, vec![phone_indicator(100)]).await;
    assert_eq!(answer.events[0].sequence, 4, "nothing refused was stored");
}

#[tokio::test]
async fn streams_of_many_publishers_share_one_gapless_order() {
    let hub = TestHub::start().await;
    let (publishers, each) = (6u64, 200u64);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let org = if p % 2 == 0 {
            "mumbai-police"
        } else {
            "delhi-police"
        };
        let mut client = hub.client(org).await;
        tasks.push(tokio::spawn(async move {
            let stream = PublishStream::open(&mut client, 64).await.expect("opens");
            let (sender, mut answers) = stream.split();
            let sending = tokio::spawn(async move {
                for n in 0..each {
                    let value = p * 1_000_000 + n;
                    sender
                        .send(n, request(vec![phone_indicator(value)], ""))
                        .await
                        .expect("sent");
                }
            });
            let mut sequences = Vec::new();
            while let Some(answer) = dip_hub::client::next_answer(&mut answers)
                .await
                .expect("goes on")
            {
                assert_eq!(answer.correlation_id, sequences.len() as u64);
                sequences.push(published(&answer).events[0].sequence);
            }
            sending.await.expect("sender");
            sequences
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let sequences = tokio::time::timeout(SOON * 3, task)
            .await
            .expect("in time")
            .expect("publisher");
        assert_eq!(sequences.len() as u64, each);
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "one stream's answers are in sequence order"
        );
        all.extend(sequences);
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=publishers * each).collect();
    assert_eq!(all, expected, "every sequence once, no gap");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_held_back_and_others_are_served() {
    let hub = TestHub::start().await;
    crate::limits::set_limits(
        &hub,
        "mumbai-police",
        proto::OrgLimits {
            publishes_in_flight: Some(4),
            ..Default::default()
        },
    )
    .await;
    let total = 20_000u64;
    let pulled = Arc::new(AtomicU64::new(0));
    let counted = pulled.clone();
    // Requests as the transport pulls them: the count says how far the hub let
    // the client go.
    let requests = tokio_stream::StreamExt::map(tokio_stream::iter(0..total), move |n| {
        counted.fetch_add(1, Ordering::Relaxed);
        proto::PublishStreamRequest {
            correlation_id: n,
            publish: Some(request(vec![phone_indicator(n)], "")),
        }
    });
    // A small HTTP/2 stream window, so that what the transport holds on the
    // client's side is small next to what it sends.
    let mut police = hub
        .client_with_windows(
            "mumbai-police",
            NARROW_CALL_WINDOW,
            NARROW_CONNECTION_WINDOW,
        )
        .await;
    let mut answers = police
        .publish_stream(requests)
        .await
        .expect("opens")
        .into_inner();
    // The client reads nothing. Wait until the transport stops pulling (no
    // request pulled for 300 ms; at most 20 s).
    let mut last = u64::MAX;
    for _ in 0..66 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = pulled.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let held = pulled.load(Ordering::Relaxed);
    assert!(
        held < total,
        "the hub held the client back ({held} of {total} pulled)"
    );

    // Meanwhile everyone else is served at once, and the stalled stream has
    // not run ahead: the head is below what the client had pulled.
    let mut delhi = hub.client("delhi-police").await;
    let answer = tokio::time::timeout(
        SOON,
        delhi.publish(request(vec![phone_indicator(9_999_999)], "")),
    )
    .await
    .expect("served while another stream stalls")
    .expect("published")
    .into_inner();
    assert!(answer.events[0].sequence <= held + 1);

    // Once the client reads again, every request is answered, in order.
    let mut expected = 0;
    let mut sequences = 0;
    while let Some(answer) = tokio::time::timeout(SOON, dip_hub::client::next_answer(&mut answers))
        .await
        .expect("in time")
        .expect("goes on")
    {
        assert_eq!(answer.correlation_id, expected);
        expected += 1;
        sequences += published(&answer).events.len() as u64;
    }
    assert_eq!(expected, total);
    assert_eq!(sequences, total);
}

#[tokio::test]
async fn a_suspended_organisations_stream_ends_permission_denied() {
    let hub = TestHub::start().await;
    let mut bank = hub.client("beta-bank").await;
    let mut stream = open(&mut bank).await;
    stream
        .send(1, request(vec![phone_indicator(1)], ""))
        .await
        .expect("sent");
    assert!(published(&next(&mut stream).await).events.len() == 1);
    hub.admin("dot-regulator")
        .await
        .set_org_status(proto::SetOrgStatusRequest {
            id: "beta-bank".into(),
            status: proto::OrgStatus::Suspended as i32,
            reason: "a test suspends it".into(),
        })
        .await
        .expect("suspended");
    let end = tokio::time::timeout(SOON, stream.answer())
        .await
        .expect("ends in time");
    let status = end.expect_err("ends with a status");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("suspended"), "{status:?}");
}

/// A group must see the state changes of the groups committed before it. Two organisations
/// stream the same indicators at once; each indicator is PUBLISHED once (the
/// first in sequence order) and a SIGHTING for the other, never two PUBLISHED.
#[tokio::test]
async fn each_group_is_planned_on_the_state_the_earlier_ones_leave() {
    let hub = TestHub::start().await;
    let count = 300u64;
    let mut tasks = Vec::new();
    for org in ["mumbai-police", "delhi-police"] {
        let mut client = hub.client(org).await;
        tasks.push(tokio::spawn(async move {
            let stream = PublishStream::open(&mut client, 32).await.expect("opens");
            let (sender, mut answers) = stream.split();
            let sending = tokio::spawn(async move {
                for n in 0..count {
                    sender
                        .send(n, request(vec![phone_indicator(n)], ""))
                        .await
                        .expect("sent");
                }
            });
            let mut events = Vec::new();
            while let Some(answer) = dip_hub::client::next_answer(&mut answers)
                .await
                .expect("goes on")
            {
                let event = published(&answer).events[0].clone();
                events.push((answer.correlation_id, event.sequence, event.r#type));
            }
            sending.await.expect("sender");
            events
        }));
    }
    let mut by_indicator: std::collections::HashMap<u64, Vec<(u64, i32)>> = Default::default();
    for task in tasks {
        let events = tokio::time::timeout(SOON * 3, task)
            .await
            .expect("in time")
            .expect("publisher");
        assert_eq!(events.len() as u64, count);
        for (n, sequence, kind) in events {
            by_indicator.entry(n).or_default().push((sequence, kind));
        }
    }
    for (n, mut events) in by_indicator {
        events.sort_unstable();
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            vec![
                proto::EventType::Published as i32,
                proto::EventType::Sighting as i32
            ],
            "indicator {n}: published first, then sighted: {events:?}"
        );
    }
}
