//! The JetStream log backend: the leader's writer makes a group durable as one
//! atomic batch on the cluster's stream.
//!
//! Owns: the conditional group append on JetStream. A group planned against
//! head H is published as atomic batches (at most [`MAX_BATCH`] events each;
//! `Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit` on the last),
//! the first message of each carrying `Nats-Expected-Last-Sequence`, so it
//! lands at H+1.. or not at all: a deposed leader's group is refused (10071)
//! and cannot fork the log. Only the commit (the last message) is a request:
//! the others are staged by the stream leader without an answer, and any
//! problem with them comes back as the commit's error. Once JetStream
//! acknowledges (a quorum stored it, each server with an fsync), the same
//! records are written to the node's local sled log, without a sync of their
//! own (the local copy is a cache of the stream: see [`JetStreamLog::open`]),
//! so the writer announces them at once; the replica consumer skips them when
//! they arrive. Must never acknowledge what JetStream did not confirm: a
//! refusal, a timeout (outcome unknown) or a lost connection is
//! `Unavailable`, and the writer learns what landed from the stream.

use std::sync::Arc;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use tokio::runtime::Handle;

use crate::backend::{LogBackend, check_follows};
use crate::error::{Error, Result};
use crate::log::{Log, Record, encode_record};

use super::lease::Lease;
use super::{Cluster, SUBJECT};

/// Most messages in one atomic batch (the server's limit).
pub const MAX_BATCH: usize = 1000;
/// JetStream's error code for a publish whose expected last sequence is not the stream's.
const WRONG_LAST_SEQUENCE: u64 = 10071;

/// The log backend of a cluster node.
pub struct JetStreamLog {
    cluster: Cluster,
    /// The node's local copy of the log (catch-up reads, state, indexes).
    local: Log,
    lease: Arc<Lease>,
    /// The runtime the writer thread drives JetStream requests on.
    runtime: Handle,
}

impl JetStreamLog {
    /// The backend over the node's local copy `local`, repaired first if a
    /// crash left its state checkpoint ahead of its events.
    ///
    /// The local copy is not synced per group: durability is the quorum's. A
    /// kill -9 or a power cut may lose the copy's tail; the node then resumes
    /// from its local head (the replica consumer reads the rest from the
    /// stream). The state checkpoint must not be ahead of the events it
    /// derives from (the view would skip them when they are applied again):
    /// the checkpointer syncs the log before it writes a checkpoint, so this
    /// should not happen; if the disk lost them anyway, they are fetched from
    /// the stream into the local log here, before the state is replayed.
    /// Called off the runtime (it blocks on `runtime`).
    pub fn open(
        cluster: Cluster,
        local: Log,
        lease: Arc<Lease>,
        runtime: Handle,
    ) -> Result<JetStreamLog> {
        let (head, checkpoint) = (local.head()?, local.state_applied()?);
        if checkpoint > head {
            tracing::warn!(
                head,
                checkpoint,
                "the local log lost events under its state checkpoint; fetching them from the stream"
            );
            let records =
                runtime.block_on(super::replica::read_range(&cluster, head + 1, checkpoint))?;
            check_follows(head, &records)?;
            local.append(&records)?;
            local.flush()?;
        }
        Ok(JetStreamLog {
            cluster,
            local,
            lease,
            runtime,
        })
    }

    /// Publishes `records` (following `expected`) as one atomic batch.
    async fn publish_batch(&self, expected: u64, records: &[Record]) -> Result<()> {
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let last = records.len();
        for (position, record) in (1..).zip(records) {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", position.to_string().as_str());
            if position == 1 {
                headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
            }
            let payload = Bytes::from(encode_record(record));
            if position == last {
                headers.insert("Nats-Batch-Commit", "1");
                let ack = self.request(headers, payload).await?;
                let stored_at = ack["seq"].as_u64().unwrap_or(0);
                let want = expected + records.len() as u64;
                if stored_at != want {
                    return Err(Error::Corrupt {
                        sequence: stored_at,
                        problem: format!(
                            "JetStream stored a batch of {} after {expected} ending at {stored_at}, expected {want}",
                            records.len()
                        ),
                    });
                }
            } else {
                // No reply subject: the server stages the message and answers
                // nothing; a problem with it (a gap, a refused expected
                // sequence, too many batches in flight) makes the commit's
                // answer an error, so the commit is the one round trip.
                self.cluster
                    .client
                    .publish_with_headers(SUBJECT, headers, payload)
                    .await
                    .map_err(|e| {
                        Error::Unavailable(format!(
                            "sending to the NATS cluster failed ({e}); nothing was acknowledged: retry"
                        ))
                    })?;
            }
        }
        Ok(())
    }

    /// A request to the stream; its JSON answer, or why it failed.
    async fn request(&self, headers: HeaderMap, payload: Bytes) -> Result<serde_json::Value> {
        let reply = self
            .cluster
            .client
            .request_with_headers(SUBJECT, headers, payload)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::TimedOut => Error::Unavailable(
                    "the cluster did not confirm the write in time, so its outcome is unknown and nothing was acknowledged: retry with the same idempotency key (a write that landed is answered as first done)".into(),
                ),
                RequestErrorKind::NoResponders => Error::Unavailable(
                    "the cluster's log has no leader now (a NATS election, or no quorum of NATS servers): nothing was stored; retry".into(),
                ),
                _ => Error::Unavailable(format!(
                    "the request to the NATS cluster failed ({e}); nothing was acknowledged: retry with the same idempotency key"
                )),
            })?;
        if reply.payload.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
            Error::Unavailable(format!(
                "the NATS cluster answered something unreadable ({e}); nothing was acknowledged: retry"
            ))
        })?;
        if let Some(error) = answer.get("error") {
            let code = error["err_code"].as_u64().unwrap_or(0);
            let description = error["description"].as_str().unwrap_or("no description");
            return Err(Error::Unavailable(if code == WRONG_LAST_SEQUENCE {
                "another node wrote to the log first (this node is no longer the leader, or was behind): nothing was stored; retry".into()
            } else {
                format!(
                    "the cluster's log refused the write ({description}, error {code}): nothing was stored; retry"
                )
            }));
        }
        Ok(answer)
    }
}

impl LogBackend for JetStreamLog {
    /// The local copy's head; the replica consumer brings it up to the stream's.
    fn head(&self) -> Result<u64> {
        self.local.head()
    }

    fn writable(&self, head: u64) -> Result<()> {
        self.lease.writable(head)
    }

    fn append_group(&mut self, expected_head: u64, records: &[Record]) -> Result<()> {
        check_follows(expected_head, records)?;
        let mut expected = expected_head;
        for batch in records.chunks(MAX_BATCH) {
            self.runtime.block_on(self.publish_batch(expected, batch))?;
            expected += batch.len() as u64;
        }
        // Durable on a quorum: the same records, at the same sequences, in the
        // local copy (synced later, by the checkpointer or sled: see `open`).
        self.local.append(records)
    }
}
