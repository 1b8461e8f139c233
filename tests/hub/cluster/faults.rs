//! The fault test: publishers with idempotency keys and subscribers on every
//! hub while the leader hub and the NATS stream leader are killed (kill -9) at
//! seeded random moments and restarted; then nothing acknowledged is lost, the
//! stream is gap-free and the same on every NATS node, every hub answers the
//! same, and every subscriber (including those that moved hub) saw 1..head.
//! Bounded: ~20 s of load, every wait capped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::Client;
use dip_hub::client;
use dip_hub::proto;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use super::{
    ClusterHub, NatsCluster, WITHIN, events_through, publish_request, snapshot, wait_for_leader,
};
use crate::harness::{TestPki, phone};

/// How long one publish may keep retrying (across failovers) before the test fails.
const PUBLISH_WITHIN: Duration = Duration::from_secs(40);
const ORG: &str = "dot-regulator";

/// A small deterministic generator (the seed is printed, and `DIP_CLUSTER_SEED` replays it).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

/// Publishes through whichever hub takes writes, following "the leader at"
/// answers, retrying with the same idempotency key.
struct Publisher {
    pki: Arc<TestPki>,
    ports: Vec<u16>,
    clients: HashMap<u16, Client>,
    current: u16,
}

impl Publisher {
    async fn client(&mut self, port: u16) -> Option<&mut Client> {
        if !self.clients.contains_key(&port) {
            let url = format!("https://localhost:{port}");
            let connected = tokio::time::timeout(
                Duration::from_secs(2),
                client::connect(&url, &self.pki.certs(ORG)),
            )
            .await;
            let Ok(Ok(client)) = connected else {
                return None;
            };
            self.clients.insert(port, client);
        }
        self.clients.get_mut(&port)
    }

    /// Publishes `n` with key `key` until acknowledged; the answer and the
    /// number of refused attempts.
    async fn publish(&mut self, n: u64, key: &str) -> proto::PublishResponse {
        let deadline = Instant::now() + PUBLISH_WITHIN;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let port = self.current;
            let answer = match self.client(port).await {
                Some(client) => Some(
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        client.publish(publish_request(n, key)),
                    )
                    .await,
                ),
                None => None,
            };
            match answer {
                Some(Ok(Ok(response))) => return response.into_inner(),
                Some(Ok(Err(status))) if status.code() == Code::Unavailable => {
                    last_error = status.message().to_owned();
                    // "... send writes to the cluster's leader at 127.0.0.1:PORT"
                    let leader = status
                        .message()
                        .split("leader at 127.0.0.1:")
                        .nth(1)
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    match leader {
                        Some(leader) if leader != port => self.current = leader,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if !status.message().contains("catching up")
                                && !status.message().contains("retry")
                            {
                                self.rotate();
                            }
                        }
                    }
                }
                // Transport errors: the hub died mid-call; retry elsewhere (same key).
                Some(Ok(Err(status))) if status.code() != Code::Unknown => {
                    panic!("publish {n} ({key}) refused: {status:?}")
                }
                // Timeout or no connection: the hub is gone or paused.
                _ => {
                    last_error = format!("no answer from 127.0.0.1:{port}");
                    self.clients.remove(&port);
                    self.rotate();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        panic!("publish {n} ({key}) not acknowledged within {PUBLISH_WITHIN:?}: {last_error}");
    }

    fn rotate(&mut self) {
        let at = self
            .ports
            .iter()
            .position(|p| *p == self.current)
            .unwrap_or(0);
        self.current = self.ports[(at + 1) % self.ports.len()];
    }
}

/// A subscriber that starts on hub `first` and moves to the next hub (with
/// `after_sequence` = the last it got) whenever its stream breaks, until it
/// has everything up to the head `target` gives. Returns every sequence it got
/// and how many times it moved.
async fn subscriber(
    pki: Arc<TestPki>,
    ports: Vec<u16>,
    first: usize,
    mut target: watch::Receiver<Option<u64>>,
) -> (Vec<u64>, usize) {
    let mut got: Vec<u64> = Vec::new();
    let mut at = first;
    let mut moves = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "subscriber bounded: 120 s");
        if let Some(head) = *target.borrow()
            && got.last().copied().unwrap_or(0) >= head
        {
            return (got, moves);
        }
        let url = format!("https://localhost:{}", ports[at]);
        let after = got.last().copied().unwrap_or(0);
        let stream = async {
            let mut client = client::connect(&url, &pki.certs(ORG)).await.ok()?;
            client
                .subscribe(crate::harness::subscribe_request(after))
                .await
                .ok()
                .map(|s| s.into_inner())
        };
        let Ok(Some(mut stream)) = tokio::time::timeout(Duration::from_secs(3), stream).await
        else {
            at = (at + 1) % ports.len();
            moves += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            tokio::select! {
                message = tokio::time::timeout(Duration::from_secs(5), stream.message()) => {
                    match message {
                        Ok(Ok(Some(message))) => got.extend(message.events.iter().map(|e| e.sequence)),
                        // Broken, ended, or silent (a paused or dead hub): move.
                        _ => break,
                    }
                    if let Some(head) = *target.borrow()
                        && got.last().copied().unwrap_or(0) >= head
                    {
                        return (got, moves);
                    }
                }
                _ = target.changed() => {}
            }
        }
        at = (at + 1) % ports.len();
        moves += 1;
    }
}

/// The longest time without an acknowledgement between `from` and `to`.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &at in times.iter().filter(|t| **t >= from && **t <= to) {
        longest = longest.max(at - last);
        last = at;
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_when_the_leader_hub_and_the_stream_leader_are_killed() {
    let seed = std::env::var("DIP_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!(
        "cluster fault test: seed {seed} (DIP_CLUSTER_SEED={seed} replays the fault moments)"
    );
    let mut random = Seeded(seed);
    let mut nats = NatsCluster::start().await;
    let pki = TestPki::new();
    let mut hubs = vec![
        ClusterHub::start(&pki, &nats).await,
        ClusterHub::start(&pki, &nats).await,
        ClusterHub::start(&pki, &nats).await,
    ];
    let ports: Vec<u16> = hubs.iter().map(|h| h.port).collect();
    let (leader, _) = wait_for_leader(&hubs.iter().collect::<Vec<_>>(), WITHIN).await;

    // A follower refuses writes, naming the leader. Just after start-up a
    // follower may not have read the lease yet (JetStream answers "no
    // responders" while its KV stream elects a leader): it then says it cannot
    // reach a quorum, and the probe is repeated until it has read the lease.
    let follower = (leader + 1) % hubs.len();
    let probe_until = Instant::now() + WITHIN;
    let refused = loop {
        let refused = hubs[follower]
            .client(ORG)
            .await
            .publish(publish_request(999_999, "follower-probe"))
            .await
            .expect_err("a follower does not sequence");
        if !refused.message().contains("cannot reach a quorum") || Instant::now() > probe_until {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains(&hubs[leader].addr().to_string()),
        "the refusal names the leader {}: {}",
        hubs[leader].addr(),
        refused.message()
    );

    // Subscribers on every hub.
    let (target_tx, target) = watch::channel(None);
    let subscribers: Vec<_> = (0..hubs.len())
        .map(|i| tokio::spawn(subscriber(pki.clone(), ports.clone(), i, target.clone())))
        .collect();

    // Two publishers, each with its own keys, for ~20 s.
    let acked: Arc<Mutex<BTreeMap<u64, (String, u64)>>> = Arc::default();
    let acked_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop_load = tokio_util::sync::CancellationToken::new();
    let publishers: Vec<_> = (0..2u64)
        .map(|p| {
            let (pki, ports, acked, acked_at, stop) = (
                pki.clone(),
                ports.clone(),
                acked.clone(),
                acked_at.clone(),
                stop_load.clone(),
            );
            let current = ports[leader];
            tokio::spawn(async move {
                let mut publisher = Publisher {
                    pki,
                    ports,
                    clients: HashMap::new(),
                    current,
                };
                let mut n = p * 1_000_000;
                while !stop.is_cancelled() {
                    n += 1;
                    let key = format!("p{p}-{n}");
                    let first = publisher.publish(n, &key).await;
                    acked_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Instant::now());
                    // The retry of an acknowledged key answers the same.
                    if n % 50 == 0 {
                        let again = publisher.publish(n, &key).await;
                        assert!(again.replayed, "a repeated key is a replay");
                        assert_eq!(
                            again.events, first.events,
                            "the replay answers as first done"
                        );
                    }
                    for event in &first.events {
                        let previous = acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(event.sequence, (event.event_id.clone(), n));
                        assert!(
                            previous.is_none(),
                            "sequence {} acknowledged twice",
                            event.sequence
                        );
                    }
                }
            })
        })
        .collect();

    // Faults at seeded moments: the leader hub, then the NATS stream leader.
    tokio::time::sleep(random.millis(2_000, 5_000)).await;
    let (leader, _) = wait_for_leader(&hubs.iter().collect::<Vec<_>>(), WITHIN).await;
    eprintln!("kill -9 the leader hub {}", hubs[leader].addr());
    let killed_at = Instant::now();
    let acked_before = acked.lock().unwrap_or_else(|p| p.into_inner()).len();
    hubs[leader].kill();
    let (_, _) = wait_for_leader(&hubs.iter().collect::<Vec<_>>(), WITHIN).await;
    // Writes flow again (more than the two that may have been in flight).
    let deadline = Instant::now() + WITHIN;
    while acked.lock().unwrap_or_else(|p| p.into_inner()).len() <= acked_before + 10 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 30 s of the leader hub's death"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hub_killed_at = killed_at;
    tokio::time::sleep(random.millis(1_000, 3_000)).await;
    hubs[leader].restart().await;

    tokio::time::sleep(random.millis(1_000, 4_000)).await;
    let stream_leader = nats.stream_leader().await.expect("the stream has a leader");
    eprintln!(
        "kill -9 the NATS stream leader {}",
        nats.nodes[stream_leader].name
    );
    let killed_at = Instant::now();
    let acked_before = acked.lock().unwrap_or_else(|p| p.into_inner()).len();
    nats.kill(stream_leader);
    // JetStream's election of a new stream (and lease bucket) leader takes 4-14 s
    // here; a debug build sharing 2 cores with the rest of the suite needs more.
    let deadline = Instant::now() + 2 * WITHIN;
    while acked.lock().unwrap_or_else(|p| p.into_inner()).len() <= acked_before + 10 {
        if Instant::now() >= deadline {
            let hub_logs: Vec<String> = hubs.iter().map(|h| h.log_tail()).collect();
            let nats_logs: Vec<String> = (0..nats.nodes.len()).map(|i| nats.log_tail(i)).collect();
            panic!(
                "writes did not resume within 60 s of the stream leader's death; hub logs:\n{}\nNATS logs:\n{}",
                hub_logs.join("\n----\n"),
                nats_logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let times = acked_at.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "write stall (longest time without an ack) after the leader hub's kill -9: {:?}; after the NATS stream leader's: {:?}",
            longest_gap(&times, hub_killed_at, killed_at),
            longest_gap(&times, killed_at, Instant::now())
        );
    }
    tokio::time::sleep(random.millis(1_000, 3_000)).await;
    nats.restart(stream_leader).await;
    tokio::time::sleep(random.millis(2_000, 4_000)).await;
    stop_load.cancel();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }

    // The stream: every NATS node holds the same last sequence.
    let head = *acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .next_back()
        .expect("writes were acknowledged");
    let lasts = nats.wait_replicated(head).await;
    eprintln!(
        "NATS nodes' last sequences: {lasts:?}; acknowledged events: {}",
        acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    );
    target_tx.send(Some(head)).expect("subscribers listen");

    // Every hub: the log 1..head without a gap, each acknowledged event at its
    // sequence with its id; the same Snapshot and the same Lookup answers.
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut snapshots = Vec::new();
    for hub in &hubs {
        let events = events_through(hub, ORG, head).await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=head).collect::<Vec<_>>(),
            "hub {} serves 1..{head} without a gap",
            hub.addr()
        );
        for (sequence, (event_id, n)) in &acked {
            let event = &events[(*sequence - 1) as usize];
            assert_eq!(
                &event.event_id, event_id,
                "acknowledged event at {sequence} (publish {n})"
            );
        }
        snapshots.push(snapshot(hub, ORG).await);
    }
    assert!(
        snapshots.iter().all(|s| s == &snapshots[0]) && snapshots[0].0 == head,
        "every hub: the same Snapshot at {head}: {snapshots:?}"
    );
    for (_, (_, n)) in acked.iter().step_by(97) {
        let mut answers = Vec::new();
        for hub in &hubs {
            let answer = hub
                .client(ORG)
                .await
                .lookup(proto::LookupRequest {
                    kind: proto::IndicatorKind::PhoneNumber as i32,
                    value: phone(*n),
                })
                .await
                .expect("lookup")
                .into_inner();
            assert!(answer.found, "publish {n} is found on {}", hub.addr());
            answers.push(answer);
        }
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "every hub answers Lookup the same"
        );
    }

    // Every subscriber: 1..head, contiguous, including those that moved.
    for subscriber in subscribers {
        let (got, moves) = tokio::time::timeout(Duration::from_secs(60), subscriber)
            .await
            .expect("subscribers finish within 60 s")
            .expect("subscriber");
        assert_eq!(
            got,
            (1..=head).collect::<Vec<_>>(),
            "a subscriber that moved {moves} times saw 1..{head} once each, in order"
        );
    }
}
