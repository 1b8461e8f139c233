//! EXPIRED: the hub emits it itself when valid_until passes, also for indicators
//! whose time passed while the hub was down. No test sleeps to synchronise: each
//! waits for the EXPIRED event on a stream, with a timeout only as an upper bound.

use std::time::Duration;

use dip_hub::indicator::now_millis;
use dip_hub::proto::{self, EventType, IndicatorKind, IndicatorStatus};

use crate::harness::*;

/// Upper bound for an expiry to arrive (the hub expires within milliseconds).
const EXPIRY_WITHIN: Duration = Duration::from_secs(20);

pub(crate) fn expiring(n: u64, in_millis: i64) -> proto::Indicator {
    proto::Indicator {
        valid_until: Some(dip_hub::wire::timestamp(now_millis() + in_millis)),
        ..phone_indicator(n)
    }
}

pub(crate) async fn expired_events(
    client: &mut Client,
) -> tonic::Streaming<proto::SubscribeResponse> {
    client
        .subscribe(proto::SubscribeRequest {
            filter: Some(proto::Filter {
                types: vec![EventType::Expired as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next EXPIRED event on a stream filtered to EXPIRED (heartbeats skipped),
/// within [`EXPIRY_WITHIN`] overall.
pub(crate) async fn next_expired(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
) -> proto::Event {
    let next = async {
        loop {
            let message = stream
                .message()
                .await
                .expect("stream healthy")
                .expect("stream open");
            if let Some(event) = message.events.into_iter().next() {
                return event;
            }
        }
    };
    let event = tokio::time::timeout(EXPIRY_WITHIN, next)
        .await
        .expect("an EXPIRED event arrives in time");
    assert_eq!(event.r#type, EventType::Expired as i32);
    event
}

async fn lookup(client: &mut Client, value: &str) -> proto::IndicatorState {
    let response = client
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: value.into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(response.found, "{value} is known");
    response.state.expect("state")
}

#[tokio::test]
async fn the_hub_expires_an_indicator_when_its_valid_until_passes() {
    let hub = TestHub::start().await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = expired_events(&mut regulator).await;
    let mut police = hub.client("mumbai-police").await;
    let published = publish(&mut police, vec![expiring(1, 300)]).await;

    let event = next_expired(&mut stream).await;
    assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(1));
    assert_eq!(event.source_org, "dip-hub", "the hub itself expires it");
    assert_eq!(event.sequence, published.events[0].sequence + 1);

    let state = lookup(&mut regulator, &phone(1)).await;
    assert_eq!(state.status, IndicatorStatus::Expired as i32);
    assert_eq!(state.history_length, 2);

    // An expired indicator takes no more lifecycle events ...
    let status = police
        .revoke(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
            reason: "mistake".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("not active");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    // ... but publishing it again starts a new life.
    let again = publish(&mut police, vec![phone_indicator(1)]).await;
    assert_eq!(again.events[0].r#type, EventType::Published as i32);
    let state = lookup(&mut regulator, &phone(1)).await;
    assert_eq!(state.status, IndicatorStatus::Active as i32);
}

/// The expiry task sleeps until the earliest valid_until it knows; one committed
/// later but due sooner wakes it (otherwise it would sleep for the hour).
#[tokio::test]
async fn a_sooner_valid_until_wakes_the_hub_early() {
    let hub = TestHub::start().await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = expired_events(&mut regulator).await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![expiring(1, 3_600_000), expiring(3, 200)]).await;
    // Once the short one has expired the task goes back to sleep, for the hour.
    let event = next_expired(&mut stream).await;
    assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(3));
    publish(&mut police, vec![expiring(2, 300)]).await;

    let event = next_expired(&mut stream).await;
    assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(2));
    let state = lookup(&mut regulator, &phone(1)).await;
    assert_eq!(state.status, IndicatorStatus::Active as i32);
}

/// Extending valid_until (a later report) or revoking first means no EXPIRED at
/// the old time. Shown by ordering: a third indicator due after both old times
/// expires, and it is the only EXPIRED event.
#[tokio::test]
async fn extended_or_revoked_indicators_do_not_expire_at_the_old_time() {
    let hub = TestHub::start().await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = expired_events(&mut regulator).await;
    let mut police = hub.client("mumbai-police").await;
    // Generous margins: the extension and the revocation must land before the
    // old time even on a loaded machine (checked below, not assumed).
    let old_due = now_millis() + 1_500;
    publish(&mut police, vec![expiring(1, 1_500), expiring(2, 1_500)]).await;
    publish(&mut police, vec![expiring(1, 3_600_000)]).await;
    police
        .revoke(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(2),
            reason: "false positive".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("revoked");
    assert!(
        now_millis() < old_due,
        "the extension and the revocation landed before the old time (else this test proves nothing)"
    );
    publish(&mut police, vec![expiring(3, 2_000)]).await;

    let event = next_expired(&mut stream).await;
    assert_eq!(
        event.indicator.as_ref().expect("indicator").value,
        phone(3),
        "the first EXPIRED is the third indicator's"
    );
    assert_eq!(
        lookup(&mut regulator, &phone(1)).await.status,
        IndicatorStatus::Active as i32
    );
    assert_eq!(
        lookup(&mut regulator, &phone(2)).await.status,
        IndicatorStatus::Revoked as i32
    );
}

#[tokio::test]
async fn an_indicator_whose_time_passed_while_the_hub_was_down_expires_at_restart() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let valid_until = now_millis() + 2_000;
    let published = publish(
        &mut police,
        vec![proto::Indicator {
            valid_until: Some(dip_hub::wire::timestamp(valid_until)),
            ..phone_indicator(1)
        }],
    )
    .await;
    drop(police);
    let (pki, data) = hub.stop().await;
    assert!(
        now_millis() < valid_until,
        "the hub stopped before the indicator was due (else this test proves nothing)"
    );

    // What is awaited here is wall-clock time passing while the hub is down: sleep
    // exactly until the indicator is due (no signal exists for that).
    let remaining = valid_until - now_millis() + 1;
    tokio::time::sleep(Duration::from_millis(remaining.max(0) as u64)).await;

    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = expired_events(&mut regulator).await;
    let event = next_expired(&mut stream).await;
    assert_eq!(event.indicator.as_ref().expect("indicator").value, phone(1));
    assert_eq!(event.sequence, published.events[0].sequence + 1);
    let state = lookup(&mut regulator, &phone(1)).await;
    assert_eq!(state.status, IndicatorStatus::Expired as i32);
}

/// Many indicators due at once (several scan batches): each expires exactly once,
/// in one EXPIRED event, none is left active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_indicators_due_at_once_all_expire_exactly_once() {
    const COUNT: u64 = 2_000;
    let hub = TestHub::start().await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = expired_events(&mut regulator).await;
    let mut police = hub.client("mumbai-police").await;
    let due_at = now_millis() + 1_500;
    let valid_until = dip_hub::wire::timestamp(due_at);
    for batch in 0..COUNT / 1000 {
        let indicators = (batch * 1000..(batch + 1) * 1000)
            .map(|n| proto::Indicator {
                valid_until: Some(valid_until),
                ..phone_indicator(n)
            })
            .collect();
        publish(&mut police, indicators).await;
    }
    let events = tokio::time::timeout(EXPIRY_WITHIN, collect_events(&mut stream, COUNT as usize))
        .await
        .expect("every indicator expires in time");
    let values: std::collections::HashSet<_> = events
        .iter()
        .map(|e| e.indicator.as_ref().expect("indicator").value.clone())
        .collect();
    assert_eq!(values.len() as u64, COUNT, "each exactly once");
    assert!(
        events.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in sequence order"
    );
    assert!(events.iter().all(|e| e.source_org == "dip-hub"));
    eprintln!(
        "{COUNT} EXPIRED events received {} ms after valid_until",
        now_millis() - due_at
    );
    for n in [0, COUNT / 2, COUNT - 1] {
        assert_eq!(
            lookup(&mut regulator, &phone(n)).await.status,
            IndicatorStatus::Expired as i32
        );
    }
}
