//! Crash proof (invariants 1 and 2): the real `dip-hub` binary runs as a child
//! process while several clients publish continuously; at random moments it is
//! killed with SIGKILL and restarted on the same database. In the end every
//! acknowledged event is in the log, with its sequence and event id, exactly
//! once; the log is 1..=head with no gap; idempotent retries of publishes cut
//! off by a kill land exactly once; and the state view equals a replay of the
//! log.
//!
//! The kill moments come from a seeded generator; the seed is printed, and
//! `DIP_CRASH_SEED=<seed>` replays the same choices (timing still varies).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dip_hub::client;
use dip_hub::indicator::IndicatorKey;
use dip_hub::proto::{self, EventType, IndicatorKind, Risk};
use dip_hub::state::{self, IndicatorState};
use dip_hub::wire;
use tokio::sync::mpsc;

use crate::child::ChildHub;
use crate::harness::*;

/// Kills (and restarts) of the hub.
const KILLS: usize = 6;
/// Publishing clients, each as one of these organisations.
const PUBLISHERS: &[&str] = &["mumbai-police", "delhi-police", "alpha-bank", "tsp-one"];
/// Phone numbers the keyless batches draw from, so that organisations report the
/// same indicators (sightings, several reporters, risk escalation).
const POOL: u64 = 300;
/// Each round kills the hub after between these many new acknowledged events.
const MIN_ACKS: u64 = 60;
const MAX_ACKS: u64 = 600;
/// Upper bound for anything one step waits for.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// xorshift64*: small, seedable, good enough to pick kill moments and batches.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn seed() -> u64 {
    match std::env::var("DIP_CRASH_SEED") {
        Ok(text) => text.parse().expect("DIP_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

/// The hub binary running as a child process ([`ChildHub`], killed with
/// SIGKILL when dropped), with the log's head when it came up.
struct HubProcess {
    hub: ChildHub,
    /// The log's head when the hub came up (after its replay).
    head: u64,
}

impl HubProcess {
    /// Starts `dip-hub serve` on an ephemeral loopback port and waits for the
    /// "hub serving" line that gives its head.
    async fn start(pki: &TestPki, data_dir: &Path) -> HubProcess {
        let mut hub = ChildHub::start(
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                data_dir.into(),
                "--certs-dir".into(),
                pki.pki_dir().into(),
                "--registry".into(),
                pki.registry().into(),
            ],
            &[],
        )
        .await;
        let serving = hub.logged("hub serving").await;
        let head = serving["head"]
            .as_u64()
            .expect("the head in \"hub serving\"");
        HubProcess { hub, head }
    }

    fn url(&self) -> String {
        self.hub.url()
    }

    /// A client as `org`, retrying until the hub accepts connections (bounded).
    async fn client(&self, pki: &TestPki, org: &str) -> Client {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match client::connect(&self.url(), &pki.certs(org)).await {
                Ok(client) => return client,
                // Not listening yet: retry shortly, within the deadline.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!(
                    "{org} cannot connect to the hub: {error}; its log:\n{}",
                    self.hub.log_tail()
                ),
            }
        }
    }

    /// kill -9, and wait until the process is gone (its database lock with it).
    fn kill(&mut self) {
        self.hub.kill();
    }
}

/// An acknowledged event, as the publisher was told.
#[derive(Clone, Debug)]
struct Ack {
    sequence: u64,
    event_id: String,
    value: String,
    org: String,
}

/// A publish with an idempotency key whose answer was lost to a kill: retried
/// with the same key after the restart.
#[derive(Clone, Debug)]
struct Pending {
    request: proto::PublishRequest,
}

/// What one publisher hands back at the end of a round.
struct PublisherEnd {
    pending: Option<Pending>,
}

struct Shared {
    acks: Mutex<Vec<Ack>>,
    /// Keys whose publish was acknowledged, with the values it carried.
    keyed: Mutex<HashMap<String, Vec<String>>>,
    killed: AtomicBool,
    /// Keyed publishes retried after a kill, and how many of those the hub
    /// answered as replays (their first attempt had been committed).
    retried: AtomicUsize,
    replayed: AtomicUsize,
}

fn risk(rng: &mut Rng) -> i32 {
    [Risk::Medium, Risk::High, Risk::VeryHigh][rng.range(0, 2) as usize] as i32
}

/// Publishes until the hub goes away; reports acknowledged event counts on `progress`.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    mut client: Client,
    org: &'static str,
    index: u64,
    round: u64,
    mut rng: Rng,
    mut pending: Option<Pending>,
    shared: Arc<Shared>,
    progress: mpsc::UnboundedSender<u64>,
) -> PublisherEnd {
    let mut batch_no = 0u64;
    loop {
        let retry = pending.is_some();
        let request = match pending.take() {
            Some(retry) => retry.request,
            None => {
                batch_no += 1;
                if rng.range(0, 2) == 0 {
                    // Fresh values only this batch carries, under an idempotency key.
                    let size = rng.range(1, 10);
                    let indicators = (0..size)
                        .map(|i| {
                            let n = 100_000_000
                                + index * 10_000_000
                                + round * 100_000
                                + batch_no * 20
                                + i;
                            let mut indicator = phone_indicator(n);
                            indicator.risk = risk(&mut rng);
                            indicator
                        })
                        .collect();
                    proto::PublishRequest {
                        indicators,
                        idempotency_key: format!("crash-{org}-r{round}-b{batch_no}"),
                    }
                } else {
                    // Shared values: sightings and updates of what others reported.
                    let size = rng.range(1, 8);
                    let indicators = (0..size)
                        .map(|_| {
                            let mut indicator = phone_indicator(rng.range(0, POOL - 1));
                            indicator.risk = risk(&mut rng);
                            indicator.description = format!("seen by {org} in round {round}");
                            indicator
                        })
                        .collect();
                    proto::PublishRequest {
                        indicators,
                        idempotency_key: String::new(),
                    }
                }
            }
        };
        let answer = tokio::time::timeout(STEP_TIMEOUT, client.publish(request.clone())).await;
        match answer {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                assert_eq!(response.events.len(), request.indicators.len());
                assert!(
                    retry || !response.replayed,
                    "{org}: a first attempt was answered as a replay"
                );
                if retry {
                    shared.retried.fetch_add(1, Ordering::SeqCst);
                    shared
                        .replayed
                        .fetch_add(usize::from(response.replayed), Ordering::SeqCst);
                }
                let values: Vec<String> =
                    request.indicators.iter().map(|i| i.value.clone()).collect();
                let acks: Vec<Ack> = response
                    .events
                    .iter()
                    .zip(&values)
                    .map(|(event, value)| Ack {
                        sequence: event.sequence,
                        event_id: event.event_id.clone(),
                        value: value.clone(),
                        org: org.to_string(),
                    })
                    .collect();
                if !request.idempotency_key.is_empty() {
                    shared
                        .keyed
                        .lock()
                        .unwrap()
                        .insert(request.idempotency_key.clone(), values.clone());
                }
                shared.acks.lock().unwrap().extend(acks);
                let _ = progress.send(response.events.len() as u64);
                // Now and then a lifecycle event: the publisher withdraws one of
                // its own fresh values, or reports an action on a shared one.
                let follow_up = match (request.idempotency_key.is_empty(), rng.range(0, 3)) {
                    (false, 0) => Some(FollowUp::Revoke(values[0].clone())),
                    (true, 0) => Some(FollowUp::Action(values[0].clone())),
                    _ => None,
                };
                if let Some(follow_up) = follow_up
                    && !lifecycle(&mut client, org, follow_up, &shared, &progress).await
                {
                    return PublisherEnd { pending: None };
                }
            }
            Ok(Err(status)) => {
                assert!(
                    shared.killed.load(Ordering::SeqCst),
                    "{org}: a publish failed while the hub was up: {status:?}"
                );
                let pending = (!request.idempotency_key.is_empty()).then_some(Pending { request });
                return PublisherEnd { pending };
            }
            Err(_) => panic!("{org}: a publish got no answer within {STEP_TIMEOUT:?}"),
        }
    }
}

enum FollowUp {
    Revoke(String),
    Action(String),
}

/// Revokes or reports an action; false once the hub is gone.
async fn lifecycle(
    client: &mut Client,
    org: &str,
    follow_up: FollowUp,
    shared: &Shared,
    progress: &mpsc::UnboundedSender<u64>,
) -> bool {
    let (value, answer) = match follow_up {
        FollowUp::Revoke(value) => {
            let request = proto::RevokeRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: value.clone(),
                reason: format!("withdrawn by {org}"),
                idempotency_key: String::new(),
            };
            (
                value,
                client.revoke(request).await.map(|r| r.into_inner().events),
            )
        }
        FollowUp::Action(value) => {
            let request = proto::ReportActionRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: value.clone(),
                action: proto::ActionType::OtherAction as i32,
                note: format!("handled by {org}"),
                idempotency_key: String::new(),
            };
            (
                value,
                client
                    .report_action(request)
                    .await
                    .map(|r| r.into_inner().events),
            )
        }
    };
    match answer {
        Ok(events) => {
            assert_eq!(events.len(), 1, "{org}: one lifecycle event");
            shared
                .acks
                .lock()
                .unwrap()
                .extend(events.iter().map(|event| Ack {
                    sequence: event.sequence,
                    event_id: event.event_id.clone(),
                    value: value.clone(),
                    org: org.to_string(),
                }));
            let _ = progress.send(1);
            true
        }
        Err(status) => {
            assert!(
                shared.killed.load(Ordering::SeqCst),
                "{org}: a lifecycle call failed while the hub was up: {status:?}"
            );
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_in_order_once_and_the_state_replays() {
    let started = Instant::now();
    let seed = seed();
    eprintln!("crash test seed: {seed} (replay the choices with DIP_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let pki = TestPki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let db = data.path().join("db");
    let shared = Arc::new(Shared {
        acks: Mutex::new(Vec::new()),
        keyed: Mutex::new(HashMap::new()),
        killed: AtomicBool::new(false),
        retried: AtomicUsize::new(0),
        replayed: AtomicUsize::new(0),
    });
    let mut pending: Vec<Option<Pending>> = vec![None; PUBLISHERS.len()];

    for round in 0..KILLS as u64 {
        let mut hub = HubProcess::start(&pki, &db).await;
        let max_acked = shared
            .acks
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.sequence)
            .max()
            .unwrap_or(0);
        assert!(
            hub.head >= max_acked,
            "round {round}: the hub came back with head {} but sequence {max_acked} was acknowledged",
            hub.head
        );
        shared.killed.store(false, Ordering::SeqCst);
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (index, org) in PUBLISHERS.iter().enumerate() {
            let client = hub.client(&pki, org).await;
            tasks.push(tokio::spawn(publisher(
                client,
                org,
                index as u64,
                round,
                Rng::new(rng.next()),
                pending[index].take(),
                shared.clone(),
                progress_tx.clone(),
            )));
        }
        drop(progress_tx);

        let kill_after = rng.range(MIN_ACKS, MAX_ACKS);
        let mut acked = 0;
        while acked < kill_after {
            let more = tokio::time::timeout(STEP_TIMEOUT, progress.recv())
                .await
                .expect("publishers make progress");
            acked += more.expect("publishers stopped before the kill (see their panic)");
        }
        shared.killed.store(true, Ordering::SeqCst);
        hub.kill();
        for (index, task) in tasks.into_iter().enumerate() {
            let end = tokio::time::timeout(STEP_TIMEOUT, task)
                .await
                .expect("publishers notice the kill")
                .expect("publisher task");
            pending[index] = end.pending;
        }
        eprintln!(
            "round {round}: killed after {acked} new acknowledged events (target {kill_after}), head at start {}",
            hub.head
        );
    }

    // The last restart: retry what the last kill cut off, then read everything back.
    let hub = HubProcess::start(&pki, &db).await;
    let max_acked = shared.acks.lock().unwrap().iter().map(|a| a.sequence).max();
    assert!(
        hub.head >= max_acked.unwrap_or(0),
        "the final head covers every ack"
    );
    let mut regulator = hub.client(&pki, "dot-regulator").await;
    for (index, retry) in pending.into_iter().enumerate() {
        let Some(retry) = retry else { continue };
        let mut client = hub.client(&pki, PUBLISHERS[index]).await;
        let response = client
            .publish(retry.request.clone())
            .await
            .expect("the retry is accepted")
            .into_inner();
        shared.retried.fetch_add(1, Ordering::SeqCst);
        shared
            .replayed
            .fetch_add(usize::from(response.replayed), Ordering::SeqCst);
        let values: Vec<String> = retry
            .request
            .indicators
            .iter()
            .map(|i| i.value.clone())
            .collect();
        shared
            .acks
            .lock()
            .unwrap()
            .extend(
                response
                    .events
                    .iter()
                    .zip(&values)
                    .map(|(event, value)| Ack {
                        sequence: event.sequence,
                        event_id: event.event_id.clone(),
                        value: value.clone(),
                        org: PUBLISHERS[index].to_string(),
                    }),
            );
        shared
            .keyed
            .lock()
            .unwrap()
            .insert(retry.request.idempotency_key.clone(), values);
    }
    // Nobody else publishes now: this marker's sequence is the head.
    let marker = publish(&mut regulator, vec![phone_indicator(999_999_999)]).await;
    let head = marker.events[0].sequence;

    let mut stream = regulator
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, head as usize).await;
    drop(stream);

    // 1..=head, no gap, no duplicate.
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=head).collect::<Vec<_>>(),
        "the log is 1..=head without gaps or duplicates"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    // Every acknowledged event, with the sequence and id it was acknowledged with.
    let acks = shared.acks.lock().unwrap().clone();
    for ack in &acks {
        let event = &events[(ack.sequence - 1) as usize];
        assert_eq!(event.event_id, ack.event_id, "ack {ack:?}");
        assert_eq!(event.source_org, ack.org, "ack {ack:?}");
        assert_eq!(
            event.indicator.as_ref().map(|i| i.value.as_str()),
            Some(ack.value.as_str()),
            "ack {ack:?}"
        );
    }
    let acked: HashSet<u64> = acks.iter().map(|a| a.sequence).collect();
    assert_eq!(
        acked.len(),
        acks.len(),
        "no sequence was acknowledged twice"
    );

    // Keyed batches carry values nobody else publishes: each is in the log once,
    // including those whose first answer was lost to a kill and were retried.
    let reports = |event: &&proto::Event| {
        event.r#type == EventType::Published as i32 || event.r#type == EventType::Sighting as i32
    };
    let mut occurrences: HashMap<&str, usize> = HashMap::new();
    for event in events.iter().filter(reports) {
        *occurrences
            .entry(event.indicator.as_ref().map_or("", |i| i.value.as_str()))
            .or_default() += 1;
    }
    let keyed = shared.keyed.lock().unwrap().clone();
    for (key, values) in &keyed {
        for value in values {
            assert_eq!(
                occurrences.get(value.as_str()),
                Some(&1),
                "{value} of idempotent batch {key} is in the log exactly once"
            );
        }
    }

    // The state view equals a replay of the log.
    let mut replayed: HashMap<IndicatorKey, Option<IndicatorState>> = HashMap::new();
    let mut reporters: HashMap<String, BTreeSet<String>> = HashMap::new();
    for event in &events {
        let event = wire::event_from_proto(event.clone()).expect("a stored event decodes");
        let entry = reporters
            .entry(event.indicator.key.value.clone())
            .or_default();
        if matches!(event.event_type, EventType::Published | EventType::Sighting) {
            entry.insert(event.source.org_id.clone());
        }
        let slot = replayed.entry(event.indicator.key.clone()).or_default();
        *slot = state::apply(slot.take(), &event);
    }
    for (key, expected) in &replayed {
        let expected = expected
            .as_ref()
            .expect("published indicators have a state");
        let found = regulator
            .lookup(proto::LookupRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: key.value.clone(),
            })
            .await
            .expect("lookup")
            .into_inner();
        assert!(found.found, "{key} is in the state view");
        let state = found.state.expect("state");
        assert_eq!(state, wire::state_to_proto(expected), "state of {key}");
        // And independently of `state::apply`: who reported it and how often.
        let history: Vec<&proto::Event> = events
            .iter()
            .filter(|e| e.indicator.as_ref().is_some_and(|i| i.value == key.value))
            .collect();
        assert_eq!(state.history_length as usize, history.len(), "{key}");
        assert_eq!(
            state.last_sequence,
            history.last().unwrap().sequence,
            "{key}"
        );
        assert_eq!(
            state.reporters.iter().cloned().collect::<BTreeSet<_>>(),
            reporters[&key.value],
            "{key}"
        );
        let max_risk = history
            .iter()
            .map(|e| e.indicator.as_ref().unwrap().risk)
            .max()
            .unwrap();
        let last = history.last().unwrap();
        let status = if last.r#type == EventType::Revoked as i32 {
            proto::IndicatorStatus::Revoked
        } else {
            proto::IndicatorStatus::Active
        };
        assert_eq!(state.status, status as i32, "{key}: status");
        let actions = history
            .iter()
            .filter(|e| e.r#type == EventType::ActionTaken as i32)
            .count();
        assert_eq!(state.actions.len(), actions, "{key}: actions");
        assert_eq!(
            state.indicator.map(|i| i.risk),
            Some(max_risk),
            "{key}: the highest risk reported"
        );
    }
    let count = |t: EventType| events.iter().filter(|e| e.r#type == t as i32).count();
    eprintln!(
        "crash test: {KILLS} kills, {} acknowledged events, head {head} ({} revoked, {} actions), {} keyed batches, {} retried after a kill ({} answered as replays), {} indicators compared, {:?}",
        acks.len(),
        count(EventType::Revoked),
        count(EventType::ActionTaken),
        keyed.len(),
        shared.retried.load(Ordering::SeqCst),
        shared.replayed.load(Ordering::SeqCst),
        replayed.len(),
        started.elapsed()
    );
}
