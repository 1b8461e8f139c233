//! The leader lease: which hub node sequences, one at a time.
//!
//! Owns: the lease in a JetStream KV bucket (replicated like the stream): a
//! node takes it with create-if-absent, keeps it with revision-checked renewals
//! every [`RENEW`], and it lapses [`TTL`] after the last renewal (the bucket's
//! max age), so a dead or paused leader loses it. A node that takes it first
//! reads the stream's head and may write only once its own log has caught up
//! to it. Also what a refused writer is told: the leader's address, or why no
//! node can write. Must never be the only fence: a paused leader may still
//! believe it leads, so every group is also conditional on the expected last
//! sequence (`jetstream`), which a deposed leader cannot meet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

use super::{Cluster, LEASE_BUCKET};

/// How long the lease lasts after its last renewal.
pub const TTL: Duration = Duration::from_secs(3);
/// How often the leader renews it (and a follower tries to take it).
pub const RENEW: Duration = Duration::from_millis(750);
/// The leader stops writing this long before its lease could lapse on the servers.
const MARGIN: Duration = Duration::from_millis(750);
/// The key the lease is stored under.
const KEY: &str = "leader";

/// This node's view of the lease.
pub struct Lease {
    /// This node's gRPC address, stored as the lease's value.
    node: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Leading until then (the lease's renewal time plus TTL minus margin).
    leading_until: Option<Instant>,
    /// The stream's head when this node took the lease: it writes once caught up.
    catch_up_to: u64,
    /// The leader's address, as last read.
    leader: Option<String>,
    /// Why the lease cannot be read or renewed (no NATS quorum), if so.
    problem: Option<String>,
}

impl Lease {
    pub fn new(node: String) -> Arc<Lease> {
        Arc::new(Lease {
            node,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node may sequence with its log at `head`; if not, an
    /// `Unavailable` error saying why and where to write instead.
    pub fn writable(&self, head: u64) -> Result<()> {
        let state = self.state();
        let leading = state
            .leading_until
            .is_some_and(|until| Instant::now() < until);
        if leading && head >= state.catch_up_to {
            return Ok(());
        }
        Err(Error::Unavailable(if leading {
            format!(
                "this hub node has just become the cluster's leader and is catching up with the log (at {head} of {}): retry in a moment",
                state.catch_up_to
            )
        } else if let Some(problem) = &state.problem {
            format!(
                "this hub node cannot reach a quorum of the cluster's NATS servers ({problem}): writes are refused; reads go on from its local copy"
            )
        } else if let Some(leader) = state.leader.as_ref().filter(|l| **l != self.node) {
            format!("this hub node is a follower: send writes to the cluster's leader at {leader}")
        } else if state.leader.as_ref() == Some(&self.node) {
            "this hub node's leader lease has lapsed (it was paused or cut off) and it is finding out who leads now: retry in a few seconds".into()
        } else {
            "no hub node leads the cluster at the moment (an election is under way): retry in a few seconds".into()
        }))
    }

    /// Whether this node holds the lease now.
    pub fn leading(&self) -> bool {
        self.state()
            .leading_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Runs the lease until `stop`; then a leader gives the lease up.
    pub fn spawn(self: Arc<Self>, cluster: Cluster, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { self.run(cluster, stop).await })
    }

    async fn run(&self, cluster: Cluster, stop: CancellationToken) {
        let mut bucket = None;
        let mut revision: Option<u64> = None;
        loop {
            if bucket.is_none() {
                match open_bucket(&cluster).await {
                    Ok(opened) => bucket = Some(opened),
                    Err(error) => self.state().problem = Some(error.to_string()),
                }
            }
            if let Some(bucket) = &bucket {
                revision = self.tick(&cluster, bucket, revision).await;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(RENEW) => {}
            }
        }
        if let (Some(bucket), Some(revision)) = (bucket, revision) {
            self.state().leading_until = None;
            // Leaving: let another node take over at once, not after the TTL.
            if let Err(error) = bucket.delete_expect_revision(KEY, Some(revision)).await {
                tracing::warn!(%error, "could not give the leader lease up; it lapses by itself");
            }
        }
    }

    /// One renewal (leader) or attempt to take the lease (follower); the
    /// lease's revision if this node holds it afterwards.
    async fn tick(
        &self,
        cluster: &Cluster,
        bucket: &kv::Store,
        revision: Option<u64>,
    ) -> Option<u64> {
        let started = Instant::now();
        match revision {
            Some(revision) => match bucket.update(KEY, self.node.clone().into(), revision).await {
                Ok(renewed) => {
                    let mut state = self.state();
                    state.leading_until = Some(started + TTL - MARGIN);
                    state.problem = None;
                    Some(renewed)
                }
                Err(error) if error.kind() != kv::UpdateErrorKind::WrongLastRevision => {
                    // Not refused: the bucket did not answer (its own Raft
                    // election after a NATS server died, or no quorum). No
                    // other node can have taken the lease without changing its
                    // revision, so keep it: the lease lapses here at its time
                    // (`leading_until` is not moved), and the next renewal with
                    // the same revision takes it back at once if nobody else
                    // took it meanwhile, instead of waiting for it to expire
                    // and racing to create it again.
                    tracing::warn!(%error, "renewing the leader lease failed; retrying with the same revision");
                    self.state().problem =
                        Some(format!("renewing the leader lease failed: {error}"));
                    Some(revision)
                }
                Err(error) => {
                    tracing::warn!(%error, "lost the leader lease: this node stops writing");
                    self.state().leading_until = None;
                    // Taken by another node (then it is named), or NATS unreachable.
                    let holder = bucket.entry(KEY).await;
                    let mut state = self.state();
                    let holder = match holder {
                        Ok(entry) => entry
                            .filter(|e| e.operation == kv::Operation::Put)
                            .map(|e| String::from_utf8_lossy(&e.value).into_owned()),
                        Err(_) => None,
                    };
                    match holder {
                        // Taken over: name the new leader.
                        Some(holder) if holder != self.node => {
                            state.leader = Some(holder);
                            state.problem = None;
                        }
                        // Still ours as far as a (maybe stale) replica says, or
                        // unreadable: the servers did not take the renewal.
                        _ => {
                            state.leader = None;
                            state.problem =
                                Some(format!("renewing the leader lease failed: {error}"));
                        }
                    }
                    None
                }
            },
            None => match bucket.create(KEY, self.node.clone().into()).await {
                Ok(taken) => match cluster.stream_head().await {
                    Ok(head) => {
                        tracing::info!(node = %self.node, catch_up_to = head, "took the leader lease: writing once caught up with the log");
                        let mut state = self.state();
                        state.catch_up_to = head;
                        state.leading_until = Some(started + TTL - MARGIN);
                        state.leader = Some(self.node.clone());
                        state.problem = None;
                        Some(taken)
                    }
                    Err(error) => {
                        // Cannot know how far to catch up: give the lease back.
                        let _ = bucket.delete_expect_revision(KEY, Some(taken)).await;
                        self.state().problem = Some(error.to_string());
                        None
                    }
                },
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let leader = match bucket.entry(KEY).await {
                        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                            Some(String::from_utf8_lossy(&entry.value).into_owned())
                        }
                        _ => None,
                    };
                    let mut state = self.state();
                    state.leading_until = None;
                    state.leader = leader;
                    state.problem = None;
                    None
                }
                Err(error) => {
                    let mut state = self.state();
                    state.leading_until = None;
                    state.problem = Some(format!("taking the leader lease failed: {error}"));
                    None
                }
            },
        }
    }
}

/// The lease bucket, created if absent.
async fn open_bucket(cluster: &Cluster) -> Result<kv::Store> {
    let config = kv::Config {
        bucket: LEASE_BUCKET.into(),
        history: 1,
        max_age: TTL,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: cluster.replicas,
        ..Default::default()
    };
    match cluster.jetstream.get_key_value(LEASE_BUCKET).await {
        Ok(bucket) => Ok(bucket),
        Err(_) => cluster
            .jetstream
            .create_key_value(config)
            .await
            .map_err(|e| Error::Unavailable(format!("creating the leader lease bucket: {e}"))),
    }
}
