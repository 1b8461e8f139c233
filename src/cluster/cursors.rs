//! Durable consumer cursors shared by every node: a JetStream KV bucket.
//!
//! Owns: the cluster's [`SharedCursors`]. A cursor is the key
//! `<org hex>.<consumer hex>` in the bucket `DIP_CURSORS` (replicated like the
//! stream), its value the acknowledged sequence in decimal. An ack reads the
//! entry and moves it forward with a revision-checked update (create when
//! absent), retrying when another node moved it meanwhile; it is answered once
//! JetStream confirmed the write (a quorum stored it). Must never move a
//! cursor backwards, nor answer an ack the bucket did not confirm.

use async_nats::jetstream::kv;

use futures_util::StreamExt;

use crate::cursor::{MAX_CONSUMERS_PER_ORG, Pending, SharedCursors, too_many_consumers};
use crate::error::{Error, Result};

use super::Cluster;

/// The bucket holding the cursors.
pub const CURSOR_BUCKET: &str = "DIP_CURSORS";
/// Attempts of one ack that lose a race with another node before it gives up.
const ATTEMPTS: usize = 16;

pub struct KvCursors {
    bucket: kv::Store,
}

impl KvCursors {
    /// Opens the bucket, creating it when absent.
    pub async fn open(cluster: &Cluster) -> Result<KvCursors> {
        let bucket = match cluster.jetstream.get_key_value(CURSOR_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => cluster
                .jetstream
                .create_key_value(kv::Config {
                    bucket: CURSOR_BUCKET.into(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: cluster.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("opening the cursor bucket", &e))?,
        };
        Ok(KvCursors { bucket })
    }

    /// The stored value and the entry's revision.
    async fn read(&self, key: &str) -> Result<Option<(u64, u64)>> {
        let entry = self
            .bucket
            .entry(key)
            .await
            .map_err(|e| unavailable("reading a consumer cursor", &e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let value = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Unavailable(format!("the consumer cursor {key} holds no sequence"))
            })?;
        Ok(Some((value, entry.revision)))
    }
}

impl KvCursors {
    /// How many durable consumers `org_id` has in the bucket (one subject each).
    async fn consumers(&self, org_id: &str) -> Result<usize> {
        let filter = format!("{}{}.*", self.bucket.prefix, hex(org_id));
        let mut subjects = self
            .bucket
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| unavailable("counting the consumer cursors", &e))?;
        let mut count = 0;
        while let Some(subject) = subjects.next().await {
            subject.map_err(|e| unavailable("counting the consumer cursors", &e))?;
            count += 1;
        }
        Ok(count)
    }
}

/// Bytes as lower-case hex: keeps any name within KV's key alphabet.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The bucket key of a cursor: hex keeps any name within KV's key alphabet.
fn key(org_id: &str, consumer: &str) -> String {
    format!("{}.{}", hex(org_id), hex(consumer))
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "{what} in the cluster failed ({error}): not acknowledged; retry"
    ))
}

impl SharedCursors for KvCursors {
    fn position<'a>(&'a self, org_id: &'a str, consumer: &'a str) -> Pending<'a, Option<u64>> {
        Box::pin(async move { Ok(self.read(&key(org_id, consumer)).await?.map(|(v, _)| v)) })
    }

    fn ack<'a>(&'a self, org_id: &'a str, consumer: &'a str, sequence: u64) -> Pending<'a, u64> {
        Box::pin(async move {
            let key = key(org_id, consumer);
            for _ in 0..ATTEMPTS {
                let value = sequence.to_string().into_bytes().into();
                let written = match self.read(&key).await? {
                    Some((stored, _)) if stored >= sequence => return Ok(stored),
                    Some((_, revision)) => self.bucket.update(&key, value, revision).await.is_ok(),
                    None => {
                        if self.consumers(org_id).await? >= MAX_CONSUMERS_PER_ORG {
                            return Err(too_many_consumers(org_id));
                        }
                        self.bucket.create(&key, value).await.is_ok()
                    }
                };
                if written {
                    return Ok(sequence);
                }
                // Another node moved it (or the write failed): read again.
            }
            Err(Error::Unavailable(
                "the consumer cursor could not be stored in the cluster: not acknowledged; ack again".into(),
            ))
        })
    }
}
