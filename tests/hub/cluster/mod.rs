//! Cluster mode under test: 3 `nats-server` processes (JetStream, R3,
//! `sync_interval: always`) on loopback and `dip-hub serve --cluster` child
//! processes in front of them.
//!
//! Owns: starting, killing (kill -9), pausing (SIGSTOP) and restarting those
//! processes, and reading each NATS node's own view of the stream (its
//! monitoring endpoint). `nats-server` is provisioned by `provision::nats_server`
//! when it is not on PATH (said on stderr; never skipped). Must never leave a
//! process running: dropping the harness kills every child.

#![allow(dead_code)]

mod cli;
mod expiry;
mod faults;
mod fence;
mod local_copy;
mod quorum;
mod registry;
mod split_brain;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::harness::Client;
use dip_hub::client;
use dip_hub::cluster::local::{self, get as http_get, stream_detail};
use dip_hub::proto;
use tempfile::TempDir;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::child::ChildHub;
use crate::harness::TestPki;
use crate::provision;

/// Upper bound for a NATS server to come up or the cluster to elect a leader.
pub const WITHIN: Duration = Duration::from_secs(30);
/// The health service name a cluster hub answers SERVING on only while it takes writes.
pub const WRITE_HEALTH: &str = dip_hub::cluster::WRITE_HEALTH_SERVICE;

/// Ports a process binds later: the next free one (checked by binding it,
/// then released) in 20000..32000, below Linux's ephemeral range (32768 on),
/// where any outgoing connection of the suite could take a port between its
/// release and the server's bind (a nats-server then failed to start and its
/// peers never found a meta leader). Handed out in turn, so never twice.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new((std::process::id().wrapping_mul(7_919) ^ nanos) % COUNT)
    });
    for _ in 0..COUNT {
        let port = (FIRST + next.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT)
}

/// One `nats-server` of the cluster.
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub http_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three `nats-server`s forming one JetStream cluster.
pub struct NatsCluster {
    binary: PathBuf,
    pub nodes: Vec<NatsNode>,
    dir: TempDir,
    /// This cluster's place among those running at once (see [`CLUSTERS_AT_ONCE`]).
    _turn: OwnedSemaphorePermit,
}

/// Most NATS clusters the suite runs at once. Each test's cluster is 3 servers
/// with fsync on every write; with every cluster test's at once on 2 cores,
/// health waits and JetStream requests ran into their bounds (a flaky
/// `fence`, 2 runs in 12): the tests take turns instead.
const CLUSTERS_AT_ONCE: usize = 2;

/// Waits for a turn to run a NATS cluster (held until the cluster is dropped).
async fn turn() -> OwnedSemaphorePermit {
    static TURNS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    TURNS
        .get_or_init(|| Arc::new(Semaphore::new(CLUSTERS_AT_ONCE)))
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed")
}

impl NatsCluster {
    /// Starts 3 servers and waits (bounded) until each answers its health check.
    pub async fn start() -> NatsCluster {
        let turn = turn().await;
        let binary = provision::nats_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, cluster_port, http_port))| {
                let name = format!("n{i}");
                let store = dir.path().join(&name);
                let config = dir.path().join(format!("{name}.conf"));
                std::fs::write(
                    &config,
                    local::server_config(
                        &name,
                        (client_port, cluster_port, http_port),
                        &ports,
                        &store,
                    ),
                )
                .expect("nats config");
                NatsNode {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port,
                    cluster_port,
                    http_port,
                    config,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            nodes,
            dir,
            _turn: turn,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("nats log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        node.child = Some(child);
    }

    /// Waits until server `i` answers `/healthz` (bounded).
    pub async fn wait_healthy(&self, i: usize) {
        let port = self.nodes[i].http_port;
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(body) = http_get(port, "/healthz").await
                && body.contains("ok")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} not healthy within {WITHIN:?}; its log:\n{}",
                self.nodes[i].name,
                self.log_tail(i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The servers' client URLs, for `--cluster`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// kill -9 server `i`, reaped.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// Which server leads the stream `DIP_EVENTS` now, from any live server's view.
    pub async fn stream_leader(&self) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            if let Some(leader) = stream_detail(node.http_port)
                .await
                .and_then(|d| d["cluster"]["leader"].as_str().map(str::to_owned))
            {
                return self.nodes.iter().position(|n| n.name == leader);
            }
        }
        None
    }

    /// Each live server's own last sequence of the stream.
    pub async fn last_sequences(&self) -> Vec<(String, Option<u64>)> {
        let mut all = Vec::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let last = stream_detail(node.http_port)
                .await
                .and_then(|d| d["state"]["last_seq"].as_u64());
            all.push((node.name.clone(), last));
        }
        all
    }

    /// Waits (bounded) until every live server holds the stream up to `head`.
    pub async fn wait_replicated(&self, head: u64) -> Vec<(String, Option<u64>)> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let lasts = self.last_sequences().await;
            if lasts.iter().all(|(_, last)| *last == Some(head)) {
                return lasts;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS servers do not all hold the stream up to {head} within {WITHIN:?}: {lasts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A `dip-hub serve --cluster` child process with its own data directory.
pub struct ClusterHub {
    pub hub: Option<ChildHub>,
    pub data: TempDir,
    pki: Arc<TestPki>,
    urls: String,
    /// Fixed across restarts, so clients find it again.
    pub port: u16,
}

impl ClusterHub {
    pub async fn start(pki: &Arc<TestPki>, nats: &NatsCluster) -> ClusterHub {
        let mut hub = ClusterHub {
            hub: None,
            data: tempfile::tempdir().expect("temp dir"),
            pki: pki.clone(),
            urls: nats.urls(),
            port: free_port(),
        };
        hub.restart().await;
        hub
    }

    /// Starts (again) on the same port and data directory.
    pub async fn restart(&mut self) {
        let child = ChildHub::start(
            &[
                "--listen".into(),
                format!("127.0.0.1:{}", self.port).into(),
                "--data-dir".into(),
                self.data.path().into(),
                "--certs-dir".into(),
                self.pki.pki_dir().into(),
                "--registry".into(),
                self.pki.registry().into(),
                "--cluster".into(),
                self.urls.clone().into(),
            ],
            &[],
        )
        .await;
        self.hub = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&mut self) -> u32 {
        self.hub.as_mut().expect("running").id()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut hub) = self.hub.take() {
            hub.kill();
        }
    }

    /// SIGSTOP / SIGCONT.
    pub fn signal(&mut self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's pid.
        let done = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(done, 0, "signal {signal} to the hub");
    }

    pub fn certs(&self, org: &str) -> client::ClientCerts {
        self.pki.certs(org)
    }

    pub async fn client(&self, org: &str) -> Client {
        client::connect(&self.url(), &self.certs(org))
            .await
            .unwrap_or_else(|e| panic!("{org} connects to {}: {e}", self.url()))
    }

    /// The write health: SERVING only while this hub leads and has caught up.
    pub async fn takes_writes(&self) -> bool {
        let Ok(channel) = client::channel(&self.url(), &self.pki.certs("dot-regulator")).await
        else {
            return false;
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            HealthClient::new(channel).check(HealthCheckRequest {
                service: WRITE_HEALTH.into(),
            }),
        )
        .await;
        matches!(answer, Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32)
    }

    pub fn log_tail(&self) -> String {
        self.hub.as_ref().map(|h| h.log_tail()).unwrap_or_default()
    }
}

/// A NATS cluster with two hubs in front of it, once one of them leads: the
/// cluster, the PKI the hubs use, the hubs, and which of them leads.
pub async fn two_hubs() -> (NatsCluster, Arc<TestPki>, [ClusterHub; 2], usize) {
    let nats = NatsCluster::start().await;
    let pki = TestPki::new();
    let hubs = [
        ClusterHub::start(&pki, &nats).await,
        ClusterHub::start(&pki, &nats).await,
    ];
    let (leader, _) = wait_for_leader(&hubs.iter().collect::<Vec<_>>(), WITHIN).await;
    (nats, pki, hubs, leader)
}

/// Waits (bounded) until one of `hubs` (the running ones) says it takes
/// writes; its index and how long it took.
pub async fn wait_for_leader(hubs: &[&ClusterHub], within: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        for (i, hub) in hubs.iter().enumerate() {
            if hub.hub.is_some() && hub.takes_writes().await {
                return (i, started.elapsed());
            }
        }
        assert!(
            started.elapsed() < within,
            "no hub took writes within {within:?}; logs:\n{}",
            hubs.iter()
                .map(|h| h.log_tail())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A publish of one phone indicator with an idempotency key.
pub fn publish_request(n: u64, key: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        indicators: vec![crate::harness::phone_indicator(n)],
        idempotency_key: key.into(),
    }
}

/// Every event from sequence 1 up to `head` through a Subscribe on `hub`
/// (for an organisation that sees them all).
pub async fn events_through(hub: &ClusterHub, org: &str, head: u64) -> Vec<proto::Event> {
    let mut client = hub.client(org).await;
    let mut stream = client
        .subscribe(crate::harness::subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    // The organisation sees every event: `head` of them.
    crate::harness::collect_events(&mut stream, head as usize).await
}

/// The last Snapshot message (as_of_sequence, digest, count) of `hub`.
pub async fn snapshot(hub: &ClusterHub, org: &str) -> (u64, String, u64) {
    let mut client = hub.client(org).await;
    let mut stream = client
        .snapshot(proto::SnapshotRequest::default())
        .await
        .expect("snapshot")
        .into_inner();
    loop {
        let message = stream
            .message()
            .await
            .expect("snapshot stream healthy")
            .expect("a last message");
        if message.last {
            return (message.as_of_sequence, message.digest, message.count);
        }
    }
}
