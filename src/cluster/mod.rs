//! Cluster mode: several hub nodes in front of one replicated NATS JetStream log.
//!
//! Owns: joining the cluster (connect to the NATS servers, make sure the
//! stream and the lease bucket exist with the settings the invariants need)
//! and the three parts a node runs: the [`jetstream`] log backend the leader's
//! writer appends through (one atomic batch per group, fenced by the expected
//! last sequence), the [`lease`] that says which node leads, and the
//! [`replica`] consumer that feeds every node's writer the events other nodes
//! wrote; beside them the KV buckets every node shares: the durable consumer
//! [`cursors`] and the organisation changes ([`registry`]). Must never decide what an event is (the writer plans groups as on
//! one node), and never touch sled (the writer's local log does).
//!
//! The stream sequence is the hub sequence: the stream forbids deletes and
//! purges and has no limits, and only hubs publish to its subject, so it
//! numbers events 1, 2, 3 ... without a gap, and a group planned against head
//! H lands at H+1.. or not at all.

pub mod cursors;
pub mod jetstream;
pub mod lease;
pub mod local;
pub mod registry;
pub mod replica;

use std::time::Duration;

use async_nats::jetstream::{self as js, stream};

use crate::error::{Error, Result};

/// The stream holding the log.
pub const STREAM: &str = "DIP_EVENTS";
/// The one subject events are published on.
pub const SUBJECT: &str = "dip.events";
/// The KV bucket holding the leader lease.
pub const LEASE_BUCKET: &str = "DIP_LEADER";
/// How long JetStream may take to confirm a request before its outcome counts as unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's connection to the cluster's JetStream.
#[derive(Clone)]
pub struct Cluster {
    pub client: async_nats::Client,
    pub jetstream: js::Context,
    /// Replicas of the stream and the bucket (3, or fewer with fewer servers).
    pub replicas: usize,
}

impl Cluster {
    /// Connects to `servers` (`nats://host:port`, any of the cluster's) and makes
    /// sure the stream exists with the settings the hub relies on.
    pub async fn join(servers: &[String]) -> Result<Cluster> {
        let unavailable =
            |what: &str, e: &dyn std::fmt::Display| Error::Unavailable(format!("{what}: {e}"));
        let addresses = servers
            .iter()
            .map(|server| {
                server.parse::<async_nats::ServerAddr>().map_err(|e| {
                    Error::Config(format!(
                        "cluster server {server:?}: {e}; expected nats://host:port"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(addresses)
            .await
            .map_err(|e| unavailable("connecting to the NATS cluster", &e))?;
        let mut jetstream = js::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        let replicas = servers.len().clamp(1, 3);
        let config = stream_config(replicas);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // Right after the servers start, JetStream may still be electing its
        // meta leader: retry (bounded) until the stream can be created.
        let mut stream = loop {
            match jetstream.get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(%error, "waiting for JetStream to create or find the stream");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(unavailable("creating the JetStream stream", &error)),
            }
        };
        // A stream just created elects its leader: wait (bounded) until it has
        // one, so that the first write does not find nobody to take it.
        let config = loop {
            let info = stream
                .info()
                .await
                .map_err(|e| unavailable("reading the JetStream stream", &e))?;
            let led = info.cluster.as_ref().is_none_or(|c| c.leader.is_some());
            if led || tokio::time::Instant::now() >= deadline {
                break info.config.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        check_stream(&config)?;
        Ok(Cluster {
            client,
            jetstream,
            replicas,
        })
    }

    /// The stream's last sequence: the cluster's head.
    pub async fn stream_head(&self) -> Result<u64> {
        let mut stream = self
            .jetstream
            .get_stream(STREAM)
            .await
            .map_err(|e| Error::Unavailable(format!("reading the JetStream stream: {e}")))?;
        let info = stream
            .info()
            .await
            .map_err(|e| Error::Unavailable(format!("reading the JetStream stream: {e}")))?;
        Ok(info.state.last_sequence)
    }
}

/// The stream: R3 on file storage, no limits, no deletes or purges, atomic batches.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        deny_delete: true,
        deny_purge: true,
        allow_atomic_publish: true,
        // Were a limit ever set, refuse new events rather than drop old ones.
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Refuses a stream whose settings would let its sequence skip (limits,
/// deletes, purges): then stream sequence would no longer be hub sequence.
fn check_stream(config: &stream::Config) -> Result<()> {
    let wrong = [
        (!config.deny_delete, "deletes are allowed"),
        (!config.deny_purge, "purges are allowed"),
        (
            !config.allow_atomic_publish,
            "atomic batches are not allowed",
        ),
        (config.max_messages > 0, "max_msgs is set"),
        (config.max_bytes > 0, "max_bytes is set"),
        (config.max_age > Duration::ZERO, "max_age is set"),
        (
            config.subjects != [SUBJECT],
            "its subjects are not [dip.events]",
        ),
    ];
    let problems: Vec<&str> = wrong
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| *what)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the JetStream stream {STREAM} exists with settings the hub cannot use ({}); expected no limits, deny_delete, deny_purge, allow_atomic_publish",
            problems.join(", ")
        )))
    }
}

/// The gRPC health service name that says whether this node takes writes
/// (SERVING only on the leader once caught up, with a NATS quorum), beside the
/// read services, which stay SERVING while the node serves from its local copy.
pub const WRITE_HEALTH_SERVICE: &str = "dip.v1.IndicatorHubService/write";
/// How often the write health is brought up to date.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// A node's part in the cluster, once its writer runs.
pub struct Node {
    pub cluster: Cluster,
    pub lease: std::sync::Arc<lease::Lease>,
    /// The durable consumer cursors every node shares.
    pub cursors: std::sync::Arc<cursors::KvCursors>,
    /// The registry changes every node applies.
    pub registry: std::sync::Arc<registry::KvRegistry>,
}

impl Node {
    /// Joins the cluster as the node whose gRPC address is `address`.
    pub async fn join(servers: &[String], address: String) -> Result<Node> {
        let cluster = Cluster::join(servers).await?;
        Ok(Node {
            cursors: std::sync::Arc::new(cursors::KvCursors::open(&cluster).await?),
            registry: std::sync::Arc::new(registry::KvRegistry::open(&cluster).await?),
            cluster,
            lease: lease::Lease::new(address),
        })
    }

    /// Makes the log backend the node's writer appends through, over the
    /// node's local log (called where the local log is opened, off the runtime).
    pub fn backend_factory(
        &self,
    ) -> impl FnOnce(crate::log::Log) -> Result<jetstream::JetStreamLog> + Send + use<> {
        let (cluster, lease) = (self.cluster.clone(), self.lease.clone());
        let runtime = tokio::runtime::Handle::current();
        move |local| jetstream::JetStreamLog::open(cluster, local, lease, runtime)
    }

    /// Starts the lease, the replica consumer (from the writer's head) and the
    /// write health; they end on `stop`.
    pub fn run(
        &self,
        applier: crate::sequencer::Applier,
        feed: crate::feed::Feed,
        health: tonic_health::server::HealthReporter,
        stop: tokio_util::sync::CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let lease = self.lease.clone().spawn(self.cluster.clone(), stop.clone());
        let replica = replica::spawn(
            self.cluster.clone(),
            applier,
            feed.committed(),
            stop.clone(),
        );
        let node_lease = self.lease.clone();
        let health = tokio::spawn(async move {
            let mut serving = None;
            loop {
                let now = node_lease.writable(feed.committed()).is_ok();
                if serving != Some(now) && !stop.is_cancelled() {
                    let status = if now {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health
                        .set_service_status(WRITE_HEALTH_SERVICE, status)
                        .await;
                    serving = Some(now);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(HEALTH_EVERY) => {}
                }
            }
        });
        vec![lease, replica, health]
    }
}
