//! Indicator lifecycle through the real server: PUBLISHED, SIGHTING, REVOKED,
//! ACTION_TAKEN, what Lookup shows, idempotency keys (also across a restart) and
//! TLP on Subscribe and Lookup. (EXPIRED: see `expiry`.)

use dip_hub::proto::{
    self, ActionType, Category, EventType, IndicatorKind, IndicatorStatus, Risk, Tlp,
};
use tonic::Code;

use crate::harness::*;

pub fn with_risk(mut indicator: proto::Indicator, risk: Risk) -> proto::Indicator {
    indicator.risk = risk as i32;
    indicator
}

pub fn with_tlp(mut indicator: proto::Indicator, tlp: Tlp) -> proto::Indicator {
    indicator.tlp = tlp as i32;
    indicator
}

pub async fn lookup(
    client: &mut Client,
    kind: IndicatorKind,
    value: &str,
) -> proto::LookupResponse {
    client
        .lookup(proto::LookupRequest {
            kind: kind as i32,
            value: value.into(),
        })
        .await
        .expect("lookup")
        .into_inner()
}

pub async fn state(client: &mut Client, value: &str) -> proto::IndicatorState {
    let found = lookup(client, IndicatorKind::PhoneNumber, value).await;
    assert!(found.found, "{value} is found");
    found.state.expect("state")
}

pub async fn revoke(
    client: &mut Client,
    value: &str,
    reason: &str,
    idempotency_key: &str,
) -> Result<proto::RevokeResponse, tonic::Status> {
    client
        .revoke(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: value.into(),
            reason: reason.into(),
            idempotency_key: idempotency_key.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn report_action(
    client: &mut Client,
    value: &str,
    action: ActionType,
    note: &str,
) -> Result<proto::ReportActionResponse, tonic::Status> {
    client
        .report_action(proto::ReportActionRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: value.into(),
            action: action as i32,
            note: note.into(),
            idempotency_key: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The sequence the next event gets: a probe publish by the regulator. Shows
/// whether anything was written since.
pub async fn next_sequence(hub: &TestHub, probe: u64) -> u64 {
    let mut regulator = hub.client("dot-regulator").await;
    publish(&mut regulator, vec![phone_indicator(900_000_000 + probe)])
        .await
        .events[0]
        .sequence
}

#[tokio::test]
async fn another_org_reporting_is_a_sighting_and_a_reporter_escalates_with_published() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut bank = hub.client("alpha-bank").await;
    let first = publish(
        &mut police,
        vec![with_risk(phone_indicator(1), Risk::Medium)],
    )
    .await;
    assert_eq!(first.events[0].r#type, EventType::Published as i32);
    // Another organisation, in another spelling of the same number.
    let mut sighting = with_risk(phone_indicator(1), Risk::High);
    sighting.value = "09000 000001".into();
    let second = publish(&mut bank, vec![sighting]).await;
    assert_eq!(second.events[0].r#type, EventType::Sighting as i32);
    // A reporter reporting again is an update: PUBLISHED, here a risk escalation.
    let third = publish(
        &mut bank,
        vec![with_risk(phone_indicator(1), Risk::VeryHigh)],
    )
    .await;
    assert_eq!(third.events[0].r#type, EventType::Published as i32);
    // A lower risk later does not lower the state's.
    let fourth = publish(
        &mut police,
        vec![with_risk(phone_indicator(1), Risk::Medium)],
    )
    .await;
    assert_eq!(fourth.events[0].r#type, EventType::Published as i32);

    let mut regulator = hub.client("dot-regulator").await;
    let mut stream = regulator
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 4).await;
    let state = state(&mut regulator, &phone(1)).await;
    assert_eq!(state.status, IndicatorStatus::Active as i32);
    assert_eq!(state.source_org, "mumbai-police");
    assert_eq!(state.reporters, vec!["alpha-bank", "mumbai-police"]);
    assert_eq!(
        state.indicator.as_ref().expect("indicator").risk,
        Risk::VeryHigh as i32
    );
    assert_eq!(state.history_length, 4);
    assert_eq!(state.last_sequence, fourth.events[0].sequence);
    assert_eq!(
        state.first_seen, events[0].time,
        "first seen: the first report"
    );
    assert_eq!(
        state.last_seen, events[3].time,
        "last seen: the latest report"
    );
}

#[tokio::test]
async fn only_the_source_or_the_regulator_revokes() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1), phone_indicator(2)]).await;

    let mut bank = hub.client("beta-bank").await;
    let denied = revoke(&mut bank, &phone(1), "not fraud", "")
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("only its source organisation (mumbai-police) or the regulator revokes"),
        "{}",
        denied.message()
    );
    let mut other_police = hub.client("delhi-police").await;
    let denied = revoke(&mut other_police, &phone(1), "not fraud", "")
        .await
        .expect_err("denied");
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "another LE org is not the source"
    );
    assert_eq!(next_sequence(&hub, 1).await, 3, "the denials wrote nothing");

    let revoked = revoke(&mut police, &phone(1), "false positive: a hospital", "")
        .await
        .expect("the source revokes");
    assert_eq!(revoked.events[0].r#type, EventType::Revoked as i32);
    let mut regulator = hub.client("dot-regulator").await;
    revoke(&mut regulator, &phone(2), "court order", "")
        .await
        .expect("the regulator revokes");

    let one = state(&mut bank, &phone(1)).await;
    assert_eq!(one.status, IndicatorStatus::Revoked as i32);
    assert_eq!(one.revoke_reason, "false positive: a hospital");
    assert_eq!(one.history_length, 2);
    let two = state(&mut bank, &phone(2)).await;
    assert_eq!(two.status, IndicatorStatus::Revoked as i32);
    assert_eq!(two.revoke_reason, "court order");

    let again = revoke(&mut police, &phone(1), "again", "")
        .await
        .expect_err("already revoked");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(
        again.message().contains("no longer active"),
        "{}",
        again.message()
    );
    let unknown = revoke(&mut police, &phone(3), "never published", "")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let empty = revoke(&mut police, &phone(2), "  ", "")
        .await
        .expect_err("no reason");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty.message().starts_with("reason: is empty"),
        "{}",
        empty.message()
    );

    let mut stream = bank
        .subscribe(proto::SubscribeRequest {
            filter: Some(proto::Filter {
                types: vec![EventType::Revoked as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 2).await;
    assert_eq!(events[0].reason, "false positive: a hospital");
    assert_eq!(events[0].source_org, "mumbai-police");
    assert_eq!(events[1].source_org, "dot-regulator");
}

#[tokio::test]
async fn actions_taken_are_recorded_in_the_state() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    let mut tsp = hub.client("tsp-one").await;
    let disconnected = report_action(
        &mut tsp,
        &phone(1),
        ActionType::NumberDisconnected,
        "ticket 42",
    )
    .await
    .expect("action");
    assert_eq!(disconnected.events[0].r#type, EventType::ActionTaken as i32);
    let mut platform = hub.client("chat-platform").await;
    report_action(
        &mut platform,
        &phone(1),
        ActionType::AccountDeregistered,
        "",
    )
    .await
    .expect("a platform reports actions");

    let state = state(&mut police, &phone(1)).await;
    assert_eq!(
        state.status,
        IndicatorStatus::Active as i32,
        "actions do not end it"
    );
    assert_eq!(state.history_length, 3);
    let actions: Vec<_> = state
        .actions
        .iter()
        .map(|a| {
            let action = a.action.as_ref().expect("action");
            (
                a.org.as_str(),
                action.r#type,
                action.note.as_str(),
                a.sequence,
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                "tsp-one",
                ActionType::NumberDisconnected as i32,
                "ticket 42",
                2
            ),
            (
                "chat-platform",
                ActionType::AccountDeregistered as i32,
                "",
                3
            ),
        ]
    );
    assert_eq!(
        state.reporters,
        vec!["mumbai-police"],
        "acting is not reporting"
    );

    let unknown = report_action(&mut tsp, &phone(2), ActionType::NumberDisconnected, "")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let unset = report_action(&mut tsp, &phone(1), ActionType::Unspecified, "")
        .await
        .expect_err("no action");
    assert_eq!(unset.code(), Code::InvalidArgument);
    assert!(
        unset.message().starts_with("action: is not set"),
        "{}",
        unset.message()
    );
}

async fn publish_keyed(
    client: &mut Client,
    key: &str,
    indicators: Vec<proto::Indicator>,
) -> proto::PublishResponse {
    client
        .publish(proto::PublishRequest {
            indicators,
            idempotency_key: key.into(),
        })
        .await
        .expect("publish")
        .into_inner()
}

/// The refusal of an idempotency key reused for a different request.
async fn key_reused(
    result: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
    key: &str,
    first: u64,
) {
    let status = result.expect_err("a reused key with a different request is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(&format!(
            "idempotency_key: {key:?} was first used at sequence {first} for a different request"
        )),
        "{}",
        status.message()
    );
}

/// Regression: an idempotency key reused for a different request (Publish with
/// key K, then Revoke with K; or other indicators) answered OK with
/// `replayed = true` and the first request's answer, and did nothing. The key is
/// now bound to the fingerprint of the validated request: the same request
/// replays the original answer (also after a restart), any other is refused with
/// FAILED_PRECONDITION naming the key and the sequence it was first used at.
#[tokio::test]
async fn the_same_org_and_idempotency_key_replays_the_original_answer_also_after_a_restart() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let original = publish_keyed(
        &mut police,
        "case-17",
        vec![phone_indicator(1), phone_indicator(2)],
    )
    .await;
    assert!(!original.replayed);
    assert_eq!(
        original
            .events
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );

    // Same key, same request: the original answer, nothing new.
    let replay = publish_keyed(
        &mut police,
        "case-17",
        vec![phone_indicator(1), phone_indicator(2)],
    )
    .await;
    assert!(replay.replayed);
    assert_eq!(
        replay.events, original.events,
        "same sequences, event ids and types"
    );
    // Same key, another request: other indicators, another field, another RPC.
    let keyed = |indicators| proto::PublishRequest {
        indicators,
        idempotency_key: "case-17".into(),
    };
    key_reused(
        police.publish(keyed(vec![phone_indicator(3)])).await,
        "case-17",
        1,
    )
    .await;
    let mut riskier = phone_indicator(2);
    riskier.risk = Risk::VeryHigh as i32;
    key_reused(
        police
            .publish(keyed(vec![phone_indicator(1), riskier]))
            .await,
        "case-17",
        1,
    )
    .await;
    key_reused(
        revoke(&mut police, &phone(1), "closed", "case-17")
            .await
            .map(tonic::Response::new),
        "case-17",
        1,
    )
    .await;
    assert!(
        !lookup(&mut police, IndicatorKind::PhoneNumber, &phone(3))
            .await
            .found
    );
    assert!(
        lookup(&mut police, IndicatorKind::PhoneNumber, &phone(1))
            .await
            .found,
        "the refused revoke revoked nothing"
    );

    // Another organisation's keys are its own.
    let mut other = hub.client("delhi-police").await;
    let theirs = publish_keyed(&mut other, "case-17", vec![phone_indicator(4)]).await;
    assert!(!theirs.replayed);
    assert_eq!(theirs.events[0].sequence, 3, "the replay moved nothing");

    // A keyed revoke replays too, rather than failing as already revoked.
    let revoked = revoke(&mut police, &phone(1), "false positive", "undo-1")
        .await
        .expect("revoke");
    let again = revoke(&mut police, &phone(1), "false positive", "undo-1")
        .await
        .expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.events, revoked.events);
    drop((police, other));

    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut police = hub.client("mumbai-police").await;
    let after_restart = publish_keyed(
        &mut police,
        "case-17",
        vec![phone_indicator(1), phone_indicator(2)],
    )
    .await;
    assert!(after_restart.replayed);
    assert_eq!(after_restart.events, original.events);
    key_reused(
        police
            .publish(proto::PublishRequest {
                indicators: vec![phone_indicator(5)],
                idempotency_key: "case-17".into(),
            })
            .await,
        "case-17",
        1,
    )
    .await;
    assert_eq!(
        next_sequence(&hub, 1).await,
        5,
        "nothing written by the replays"
    );
}

/// Two concurrent publishes with the same key: one is written, the other replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_write_once() {
    let hub = TestHub::start().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut police = hub.client("mumbai-police").await;
        tasks.push(tokio::spawn(async move {
            publish_keyed(&mut police, "burst", vec![phone_indicator(1)]).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert!(answers.iter().all(|a| a.events == answers[0].events));
    assert_eq!(next_sequence(&hub, 1).await, 2);
}

#[tokio::test]
async fn tlp_red_reaches_only_law_enforcement_the_regulator_and_the_source() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut bank = hub.client("alpha-bank").await;
    let mut bank_stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let mut regulator = hub.client("dot-regulator").await;
    let mut regulator_stream = regulator
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();

    publish(&mut police, vec![with_tlp(phone_indicator(1), Tlp::Red)]).await;
    publish(&mut police, vec![with_tlp(phone_indicator(2), Tlp::Green)]).await;
    publish(&mut police, vec![with_tlp(phone_indicator(3), Tlp::Red)]).await;
    publish(&mut police, vec![with_tlp(phone_indicator(4), Tlp::Amber)]).await;

    let seen: Vec<u64> = collect_events(&mut bank_stream, 2)
        .await
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(
        seen,
        vec![2, 4],
        "the bank gets the GREEN and AMBER events, in order, no RED"
    );
    let seen: Vec<u64> = collect_events(&mut regulator_stream, 4)
        .await
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seen, vec![1, 2, 3, 4]);

    assert!(
        !lookup(&mut bank, IndicatorKind::PhoneNumber, &phone(1))
            .await
            .found
    );
    assert!(
        lookup(&mut bank, IndicatorKind::PhoneNumber, &phone(2))
            .await
            .found
    );
    for org in ["mumbai-police", "delhi-police", "dot-regulator"] {
        let mut client = hub.client(org).await;
        assert!(
            lookup(&mut client, IndicatorKind::PhoneNumber, &phone(1))
                .await
                .found,
            "{org} sees the RED indicator"
        );
    }
    // A bank cannot act on (nor learn of) a RED indicator it cannot see.
    let hidden = report_action(&mut bank, &phone(1), ActionType::AccountFrozen, "")
        .await
        .expect_err("hidden");
    assert_eq!(hidden.code(), Code::NotFound);
    // A GREEN report of the same number by another bank does not expose it.
    let mut other_bank = hub.client("beta-bank").await;
    let report = publish(
        &mut other_bank,
        vec![with_tlp(phone_indicator(1), Tlp::Green)],
    )
    .await;
    assert_eq!(
        report.events[0].r#type,
        EventType::Published as i32,
        "not SIGHTING: that would reveal the RED indicator"
    );
    assert!(
        !lookup(&mut bank, IndicatorKind::PhoneNumber, &phone(1))
            .await
            .found
    );
    let red = lookup(&mut regulator, IndicatorKind::PhoneNumber, &phone(1)).await;
    assert_eq!(
        red.state.expect("state").indicator.expect("indicator").tlp,
        Tlp::Red as i32
    );
}

/// A bank's own RED indicator: it sees what happens to it (revoked by the
/// regulator), another bank does not.
#[tokio::test]
async fn the_source_of_a_red_indicator_sees_its_lifecycle() {
    let hub = TestHub::start().await;
    let mut bank = hub.client("alpha-bank").await;
    let mut other_bank = hub.client("beta-bank").await;
    let upi = with_tlp(
        indicator(
            IndicatorKind::UpiId,
            "Mule.Account@OKAXIS",
            Category::MuleAccount,
        ),
        Tlp::Red,
    );
    publish(&mut bank, vec![upi]).await;
    assert!(
        lookup(&mut bank, IndicatorKind::UpiId, "mule.account@okaxis")
            .await
            .found
    );
    assert!(
        !lookup(&mut other_bank, IndicatorKind::UpiId, "mule.account@okaxis")
            .await
            .found
    );

    let mut regulator = hub.client("dot-regulator").await;
    regulator
        .revoke(proto::RevokeRequest {
            kind: IndicatorKind::UpiId as i32,
            value: "mule.account@okaxis".into(),
            reason: "account verified".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("revoke");
    // A marker everyone sees, so that "nothing else arrived" can be asserted.
    let marker = publish(&mut regulator, vec![phone_indicator(1)])
        .await
        .events[0]
        .sequence;

    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 3).await;
    let types: Vec<i32> = events.iter().map(|e| e.r#type).collect();
    assert_eq!(
        types,
        vec![
            EventType::Published as i32,
            EventType::Revoked as i32,
            EventType::Published as i32
        ],
        "the source sees the regulator's REVOKED of its RED indicator"
    );
    let mut stream = other_bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events[0].sequence, marker, "another bank sees neither");
}
