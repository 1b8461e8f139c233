//! Registry changes shared by every node: a JetStream KV bucket.
//!
//! Owns: the cluster's [`SharedRegistry`]. The latest change of an
//! organisation is the key `<org id>` in the bucket `DIP_ORGS` (replicated
//! like the stream), its value the encoded change; the bucket's sequence is
//! the change's revision. A change is stored with a revision-checked update
//! (create when absent) and answered once JetStream confirmed it. Every node
//! reads the bucket through to its last revision before it serves
//! ([`KvRegistry::current`]), then follows it ([`KvRegistry::follow`]),
//! applying each change in revision order. Must never decide what a change
//! is, and never touch sled (the [`OrgApplier`] does).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cursor::Pending;
use crate::error::{Error, Result};
use crate::org_changes::{OrgApplier, SharedRegistry};

use super::{Cluster, REQUEST_TIMEOUT};

/// The bucket holding the registry changes.
pub const REGISTRY_BUCKET: &str = "DIP_ORGS";
/// Pause before following the bucket again after an error.
const BACKOFF: Duration = Duration::from_millis(500);

/// One stored change: (organisation id, encoded change, revision).
pub type Stored = (String, Vec<u8>, u64);

pub struct KvRegistry {
    bucket: kv::Store,
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what} in the cluster failed ({error}); retry"))
}

impl KvRegistry {
    /// Opens the bucket, creating it when absent.
    pub async fn open(cluster: &Cluster) -> Result<KvRegistry> {
        let bucket = match cluster.jetstream.get_key_value(REGISTRY_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => cluster
                .jetstream
                .create_key_value(kv::Config {
                    bucket: REGISTRY_BUCKET.into(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: cluster.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("opening the registry bucket", &e))?,
        };
        Ok(KvRegistry { bucket })
    }

    /// The bucket's last revision, as its stream leader has it now.
    async fn last_revision(&self) -> Result<u64> {
        let mut stream = self.bucket.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("reading the registry bucket", &e))?;
        Ok(info.state.last_sequence)
    }

    /// Every organisation's latest change through the bucket's last revision
    /// (in revision order), and that revision: what a node applies before it serves.
    pub async fn current(&self) -> Result<(Vec<Stored>, u64)> {
        let last = self.last_revision().await?;
        if last == 0 {
            return Ok((Vec::new(), 0));
        }
        let mut watch = self
            .bucket
            .watch_all_from_revision(1)
            .await
            .map_err(|e| unavailable("reading the registry bucket", &e))?;
        let mut changes = Vec::new();
        let read = async {
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| unavailable("reading the registry bucket", &e))?;
                let revision = entry.revision;
                if entry.operation == kv::Operation::Put {
                    changes.push((entry.key, entry.value.to_vec(), revision));
                }
                if revision >= last {
                    return Ok(());
                }
            }
            Err(Error::Unavailable(
                "the registry bucket's watch ended before its last revision".into(),
            ))
        };
        tokio::time::timeout(REQUEST_TIMEOUT * 6, read)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "reading the registry bucket through revision {last} took too long"
                ))
            })??;
        Ok((changes, last))
    }

    /// Applies every change after revision `after` as it is stored, in
    /// revision order, until `stop`; after an error it resumes after the last
    /// one applied.
    pub fn follow(
        self: Arc<Self>,
        applier: OrgApplier,
        after: u64,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut after = after;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    outcome = self.apply_from(&applier, &mut after) => {
                        if let Err(error) = outcome {
                            tracing::warn!(%error, after, "following the cluster's registry changes failed; resuming");
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(BACKOFF) => {}
                }
            }
        })
    }

    /// Watches the bucket after `after` and applies each change, moving `after`.
    async fn apply_from(&self, applier: &OrgApplier, after: &mut u64) -> Result<()> {
        let mut watch = self
            .bucket
            .watch_all_from_revision(*after + 1)
            .await
            .map_err(|e| unavailable("watching the registry bucket", &e))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| unavailable("watching the registry bucket", &e))?;
            if entry.revision <= *after {
                continue;
            }
            if entry.operation == kv::Operation::Put {
                match applier
                    .apply(&entry.key, entry.value.to_vec(), entry.revision)
                    .await
                {
                    Ok(org) => {
                        tracing::info!(org = %org.id, status = ?org.status, revision = entry.revision, "applied a registry change from the cluster");
                    }
                    // Not a change any hub wrote: reported once, not retried.
                    Err(error @ Error::Corrupt { .. }) => {
                        tracing::error!(%error, key = %entry.key, revision = entry.revision, "skipped an unreadable registry change");
                    }
                    Err(error) => return Err(error),
                }
            }
            *after = entry.revision;
        }
        Err(Error::Unavailable(
            "the registry bucket's watch ended".into(),
        ))
    }
}

impl SharedRegistry for KvRegistry {
    fn latest<'a>(&'a self, org_id: &'a str) -> Pending<'a, Option<(Vec<u8>, u64)>> {
        Box::pin(async move {
            let entry = self
                .bucket
                .entry(org_id)
                .await
                .map_err(|e| unavailable("reading the registry", &e))?;
            Ok(entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| (e.value.to_vec(), e.revision)))
        })
    }

    fn store<'a>(
        &'a self,
        org_id: &'a str,
        change: Vec<u8>,
        after: Option<u64>,
    ) -> Pending<'a, Option<u64>> {
        Box::pin(async move {
            let stored = match after {
                Some(revision) => self.bucket.update(org_id, change.into(), revision).await,
                None => self
                    .bucket
                    .create(org_id, change.into())
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => {
                            kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)
                        }
                        _ => kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e),
                    }),
            };
            match stored {
                Ok(revision) => Ok(Some(revision)),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(error) => Err(Error::Unavailable(format!(
                    "storing the registry change in the cluster failed ({error}): not applied; retry"
                ))),
            }
        })
    }
}
