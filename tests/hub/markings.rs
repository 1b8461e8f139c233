//! TLP changes and block lists (issue 9, part 2): only an indicator's source sets
//! its marking; another organisation's marking protects its own report; a
//! source narrowing its marking tells those it hid the indicator from with a
//! WITHDRAWN. Whatever the markings do, README's block-list recipe (PUBLISHED or
//! SIGHTING adds; REVOKED, EXPIRED or WITHDRAWN removes), applied to a snapshot
//! and the events after it, equals the final snapshot, its digest and Lookup,
//! for every organisation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dip_hub::proto::{self, Category, EventType, IndicatorKind, Tlp};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tonic::Code;

use crate::harness::*;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(60);

/// Every organisation of the development registry, one or more of each role.
const ORGS: &[&str] = &[
    "dot-regulator",
    "mumbai-police",
    "alpha-bank",
    "beta-bank",
    "tsp-one",
    "upi-switch",
    "chat-platform",
];

fn phones_only() -> proto::Filter {
    proto::Filter {
        kinds: vec![IndicatorKind::PhoneNumber as i32],
        ..Default::default()
    }
}

fn marked(n: u64, tlp: Tlp) -> proto::Indicator {
    proto::Indicator {
        tlp: tlp as i32,
        ..phone_indicator(n)
    }
}

async fn publish_marked(client: &mut Client, n: u64, tlp: Tlp) -> Result<(), tonic::Status> {
    client
        .publish(proto::PublishRequest {
            indicators: vec![marked(n, tlp)],
            idempotency_key: String::new(),
        })
        .await
        .map(drop)
}

async fn subscribe_phones(client: &mut Client, after_sequence: u64) -> Stream {
    client
        .subscribe(proto::SubscribeRequest {
            filter: Some(phones_only()),
            after_sequence,
            heartbeat_seconds: 1,
            ..Default::default()
        })
        .await
        .expect("subscribe accepted")
        .into_inner()
}

type Stream = tonic::Streaming<proto::SubscribeResponse>;

/// Events until a heartbeat says everything up to `head` was delivered.
async fn events_through(stream: &mut Stream, head: u64) -> Vec<proto::Event> {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a message within the time limit")
            .expect("stream healthy")
            .expect("stream open");
        events.extend(message.events);
        if message
            .heartbeat
            .is_some_and(|h| h.delivered_through >= head)
        {
            return events;
        }
    }
}

fn event_type(event: &proto::Event) -> EventType {
    EventType::try_from(event.r#type).expect("known event type")
}

fn value(event: &proto::Event) -> String {
    event.indicator.as_ref().expect("indicator").value.clone()
}

/// README's recipe: PUBLISHED or SIGHTING adds; REVOKED, EXPIRED or WITHDRAWN
/// removes; ACTION_TAKEN changes nothing.
fn apply_recipe(list: &mut BTreeSet<String>, events: &[proto::Event]) {
    for event in events {
        match event_type(event) {
            EventType::Published | EventType::Sighting => {
                list.insert(value(event));
            }
            EventType::Revoked | EventType::Expired | EventType::Withdrawn => {
                list.remove(&value(event));
            }
            EventType::ActionTaken | EventType::Unspecified => {}
        }
    }
}

/// The hub's head: a regulator's snapshot is as of it.
async fn head(hub: &TestHub) -> u64 {
    let mut regulator = hub.client("dot-regulator").await;
    dip_hub::client::snapshot(&mut regulator, proto::Filter::default())
        .await
        .expect("snapshot")
        .as_of_sequence
}

/// What `org` holds by the hub now: its snapshot's values and digest, checked
/// against Lookup of every number in `numbers`.
async fn hub_view(hub: &TestHub, org: &str, numbers: impl Iterator<Item = u64>) -> View {
    let mut client = hub.client(org).await;
    let snapshot = dip_hub::client::snapshot(&mut client, phones_only())
        .await
        .expect("a complete snapshot whose digest matches what arrived");
    let values: BTreeSet<String> = snapshot
        .indicators
        .iter()
        .map(|s| s.indicator.as_ref().expect("indicator").value.clone())
        .collect();
    for n in numbers {
        let found = client
            .lookup(proto::LookupRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: phone(n),
            })
            .await
            .map(|r| r.into_inner().state);
        let active = match found {
            Ok(state) => state.is_some_and(|s| s.status == proto::IndicatorStatus::Active as i32),
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => panic!("{org}: Lookup of {n}: {status:?}"),
        };
        assert_eq!(
            active,
            values.contains(&phone(n)),
            "{org}: Lookup and Snapshot disagree on {n}"
        );
    }
    View {
        as_of: snapshot.as_of_sequence,
        values,
        digest: snapshot.digest,
    }
}

struct View {
    as_of: u64,
    values: BTreeSet<String>,
    digest: String,
}

fn digest_of(values: &BTreeSet<String>) -> String {
    let indicators: Vec<proto::Indicator> = values
        .iter()
        .map(|v| indicator(IndicatorKind::PhoneNumber, v, Category::FraudCall))
        .collect();
    dip_hub::client::digest_of(&indicators)
}

/// The reproduction: alpha-bank publishes a number as GREEN, the police
/// report it as RED, alpha-bank revokes it. Before the fix tsp-one received no
/// REVOKED (the police's RED marking had taken the indicator over) and kept
/// blocking a number its source withdrew.
#[tokio::test]
async fn a_red_sighting_by_another_org_does_not_take_the_indicator_away() {
    let hub = TestHub::start().await;
    let mut tsp = hub.client("tsp-one").await;
    let mut stream = subscribe_phones(&mut tsp, 0).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut police = hub.client("mumbai-police").await;

    publish_marked(&mut bank, 700200, Tlp::Green)
        .await
        .expect("publish");
    let mut sighting = marked(700200, Tlp::Red);
    sighting.description = "case 42: seen in a RED investigation".into();
    publish(&mut police, vec![sighting]).await;
    // The RED sighting leaks nothing to tsp-one: not its reporter, not its text.
    let seen = tsp
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(700200),
        })
        .await
        .expect("lookup")
        .into_inner()
        .state
        .expect("still shared with tsp-one");
    let indicator = seen.indicator.expect("indicator");
    assert_eq!(indicator.tlp, Tlp::Green as i32, "the source's marking");
    assert!(indicator.description.is_empty(), "{indicator:?}");
    assert_eq!(seen.reporters, ["alpha-bank"]);

    revoke_indicator(&mut bank, IndicatorKind::PhoneNumber, &phone(700200)).await;
    let head = head(&hub).await;
    let events = events_through(&mut stream, head).await;
    let types: Vec<EventType> = events.iter().map(event_type).collect();
    assert_eq!(
        types,
        [EventType::Published, EventType::Revoked],
        "tsp-one learns of the revoke, not of the RED sighting"
    );
    let mut list = BTreeSet::new();
    apply_recipe(&mut list, &events);
    let view = hub_view(&hub, "tsp-one", [700200].into_iter()).await;
    assert_eq!(list, view.values);
    assert!(list.is_empty());
    assert_eq!(digest_of(&list), view.digest);
}

/// The source republishing its GREEN indicator as RED: tsp-one receives a
/// WITHDRAWN (and not the RED publish); the police, who still may see it,
/// receive the WITHDRAWN and then the PUBLISHED. Lowering it again reaches
/// tsp-one with a PUBLISHED.
#[tokio::test]
async fn the_source_raising_its_marking_withdraws_the_indicator_from_those_it_hides_it_from() {
    let hub = TestHub::start().await;
    let mut tsp = hub.client("tsp-one").await;
    let mut tsp_stream = subscribe_phones(&mut tsp, 0).await;
    let mut police = hub.client("mumbai-police").await;
    let mut police_stream = subscribe_phones(&mut police, 0).await;
    let mut bank = hub.client("alpha-bank").await;

    publish_marked(&mut bank, 700300, Tlp::Green)
        .await
        .expect("publish");
    let answer = bank
        .publish(proto::PublishRequest {
            indicators: vec![marked(700300, Tlp::Red)],
            idempotency_key: "raise-1".into(),
        })
        .await
        .expect("republish")
        .into_inner();
    let answered: Vec<(u64, i32)> = answer
        .events
        .iter()
        .map(|e| (e.sequence, e.r#type))
        .collect();
    assert_eq!(
        answered,
        [(3, EventType::Published as i32)],
        "one event per indicator; the WITHDRAWN (2) told the others"
    );
    let head = head(&hub).await;
    assert_eq!(head, 3);

    let tsp_events = events_through(&mut tsp_stream, head).await;
    let seen: Vec<(u64, EventType)> = tsp_events
        .iter()
        .map(|e| (e.sequence, event_type(e)))
        .collect();
    assert_eq!(seen, [(1, EventType::Published), (2, EventType::Withdrawn)]);
    let withdrawn = tsp_events[1].indicator.as_ref().expect("indicator");
    assert_eq!(
        (withdrawn.value.as_str(), withdrawn.tlp),
        (phone(700300).as_str(), Tlp::Green as i32),
        "the WITHDRAWN carries the indicator as tsp-one was shown it"
    );
    let police_events = events_through(&mut police_stream, head).await;
    let seen: Vec<EventType> = police_events.iter().map(event_type).collect();
    assert_eq!(
        seen,
        [
            EventType::Published,
            EventType::Withdrawn,
            EventType::Published
        ]
    );
    for (org, events) in [("tsp-one", &tsp_events), ("mumbai-police", &police_events)] {
        let mut list = BTreeSet::new();
        apply_recipe(&mut list, events);
        let view = hub_view(&hub, org, [700300].into_iter()).await;
        assert_eq!(list, view.values, "{org}");
        assert_eq!(digest_of(&list), view.digest, "{org}");
    }

    // The same request replays the same answer.
    let replay = bank
        .publish(proto::PublishRequest {
            indicators: vec![marked(700300, Tlp::Red)],
            idempotency_key: "raise-1".into(),
        })
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.events, answer.events);

    // Lowered again: tsp-one may see it and receives it.
    publish_marked(&mut bank, 700300, Tlp::Amber)
        .await
        .expect("lower");
    let events = events_through(&mut tsp_stream, head + 1).await;
    let seen: Vec<(u64, EventType)> = events.iter().map(|e| (e.sequence, event_type(e))).collect();
    assert_eq!(seen, [(4, EventType::Published)]);
    let view = hub_view(&hub, "tsp-one", [700300].into_iter()).await;
    assert_eq!(view.values, BTreeSet::from([phone(700300)]));
}

/// Part 5 of the finding: a lower-marked report by another organisation of a
/// RED indicator was PUBLISHED under its own marking (so everyone received it)
/// while snapshots left the RED indicator out. It now reaches only those that
/// may see the indicator: not tsp-one, not even the reporter.
#[tokio::test]
async fn a_green_report_of_a_red_indicator_reaches_only_who_may_see_the_indicator() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish_marked(&mut police, 700400, Tlp::Red)
        .await
        .expect("publish");
    let mut bank = hub.client("beta-bank").await;
    publish_marked(&mut bank, 700400, Tlp::Green)
        .await
        .expect("report");
    let head = head(&hub).await;
    assert_eq!(head, 2);
    for (org, expected) in [
        ("tsp-one", vec![]),
        ("beta-bank", vec![]),
        ("alpha-bank", vec![]),
        ("mumbai-police", vec![1, 2]),
        ("dot-regulator", vec![1, 2]),
    ] {
        let mut client = hub.client(org).await;
        let mut stream = subscribe_phones(&mut client, 0).await;
        let events = events_through(&mut stream, head).await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, expected, "{org}");
        let mut list = BTreeSet::new();
        apply_recipe(&mut list, &events);
        let view = hub_view(&hub, org, [700400].into_iter()).await;
        assert_eq!(list, view.values, "{org}");
    }
}

/// One step of the random history.
#[derive(Clone, Debug)]
enum Step {
    Publish { org: usize, n: u64, tlp: Tlp },
    Revoke { org: usize, n: u64 },
}

const NUMBERS: u64 = 5;

fn arb_step() -> impl Strategy<Value = Step> {
    let tlp = prop_oneof![
        Just(Tlp::Clear),
        Just(Tlp::Green),
        Just(Tlp::Amber),
        Just(Tlp::Red)
    ];
    prop_oneof![
        3 => (0..ORGS.len(), 0..NUMBERS, tlp).prop_map(|(org, n, tlp)| Step::Publish { org, n, tlp }),
        1 => (0..ORGS.len(), 0..NUMBERS).prop_map(|(org, n)| Step::Revoke { org, n }),
    ]
}

/// Runs `steps`; a step the hub refuses (a role that may not publish or revoke,
/// an indicator already revoked) must be refused with a fitting code.
async fn run(hub: &TestHub, steps: &[Step]) {
    for step in steps {
        let (org, result) = match *step {
            Step::Publish { org, n, tlp } => {
                let mut client = hub.client(ORGS[org]).await;
                (org, publish_marked(&mut client, n, tlp).await)
            }
            Step::Revoke { org, n } => {
                let mut client = hub.client(ORGS[org]).await;
                let result = client
                    .revoke(proto::RevokeRequest {
                        kind: IndicatorKind::PhoneNumber as i32,
                        value: phone(n),
                        reason: "closed".into(),
                        idempotency_key: String::new(),
                    })
                    .await
                    .map(drop);
                (org, result)
            }
        };
        if let Err(status) = result {
            assert!(
                matches!(
                    status.code(),
                    Code::PermissionDenied | Code::NotFound | Code::FailedPrecondition
                ),
                "{} {step:?}: {status:?}",
                ORGS[org]
            );
        }
    }
}

/// The property: for random histories of publishes with random markings and
/// revokes by organisations of every role, every organisation's snapshot taken
/// midway plus the events after it, by README's recipe, equals its final
/// snapshot, digest and Lookup.
#[test]
fn snapshot_and_events_stay_exact_for_every_role_under_random_markings() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let history = (
        prop::collection::vec(arb_step(), 0..15),
        prop::collection::vec(arb_step(), 1..40),
    );
    runner
        .run(&history, |(before, after)| {
            runtime.block_on(async {
                let hub = TestHub::start().await;
                run(&hub, &before).await;
                let mut lists = BTreeMap::new();
                for org in ORGS {
                    let view = hub_view(&hub, org, 0..NUMBERS).await;
                    let mut client = hub.client(org).await;
                    let stream = subscribe_phones(&mut client, view.as_of).await;
                    lists.insert(*org, (view.values, stream, client));
                }
                run(&hub, &after).await;
                let head = head(&hub).await;
                for (org, (mut list, mut stream, _client)) in lists {
                    let events = events_through(&mut stream, head).await;
                    apply_recipe(&mut list, &events);
                    let view = hub_view(&hub, org, 0..NUMBERS).await;
                    assert_eq!(list, view.values, "{org}: snapshot + events = final state");
                    assert_eq!(digest_of(&list), view.digest, "{org}: digest");
                }
            });
            Ok(())
        })
        .expect("exact for every role");
}
