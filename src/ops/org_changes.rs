//! Registry changes every node of a cluster agrees on.
//!
//! Owns: the [`SharedRegistry`] interface (the cluster's replicated store of
//! organisation changes, the latest per organisation with a revision that only
//! grows) and the [`OrgApplier`], which applies a change on this node: stores
//! it in the local log's `orgs` tree, puts the organisation in the registry and,
//! when it is suspended, ends its live streams. Changes are applied in revision
//! order per organisation: a change older than one applied already is skipped,
//! so the direct apply by the node that took the change and the same change
//! arriving through the node's watch can come in either order. Must never
//! decide what a change is (Admin does), and never touch sled except through
//! `log` calls run off the async workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::admin::OrgChange;
use crate::cursor::Pending;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::registry::{Org, OrgStatus, Registry};
use crate::streams::Streams;

/// Organisation changes kept where every node of a cluster reads them.
pub trait SharedRegistry: Send + Sync + 'static {
    /// The latest stored change of `org_id` (encoded [`OrgChange`]) and its revision.
    fn latest<'a>(&'a self, org_id: &'a str) -> Pending<'a, Option<(Vec<u8>, u64)>>;
    /// Stores `change` as the latest of `org_id` if the latest is still the
    /// one of revision `after` (`None`: none stored); its revision once a
    /// quorum stored it, or `None` when another change came first.
    fn store<'a>(
        &'a self,
        org_id: &'a str,
        change: Vec<u8>,
        after: Option<u64>,
    ) -> Pending<'a, Option<u64>>;
}

/// Encodes a change as stored (locally and in the shared store).
pub fn encode(change: &OrgChange) -> Result<Vec<u8>> {
    serde_json::to_vec(change).map_err(|e| Error::Corrupt {
        sequence: 0,
        problem: format!("encoding an organisation change: {e}"),
    })
}

/// Decodes a stored change of organisation `id`.
pub fn decode(id: &str, bytes: &[u8]) -> Result<OrgChange> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        sequence: 0,
        problem: format!("stored change of organisation {id}: {e}"),
    })
}

/// Applies shared changes on this node; cheap to clone.
#[derive(Clone)]
pub struct OrgApplier {
    log: Log,
    registry: Registry,
    /// Set once the hub serves: the streams a suspension ends.
    streams: Option<Streams>,
    /// The revision of the change applied last, per organisation.
    applied: Arc<Mutex<HashMap<String, u64>>>,
}

impl OrgApplier {
    pub fn new(log: Log, registry: Registry) -> OrgApplier {
        OrgApplier {
            log,
            registry,
            streams: None,
            applied: Arc::default(),
        }
    }

    /// This applier, ending a suspended organisation's streams in `streams`.
    pub fn with_streams(self, streams: Streams) -> OrgApplier {
        OrgApplier {
            streams: Some(streams),
            ..self
        }
    }

    /// Applies the change of `org_id` at `revision` unless a later one is
    /// applied already; the organisation as it is now on this node. Blocks on disk.
    pub fn apply_blocking(&self, org_id: &str, bytes: &[u8], revision: u64) -> Result<Org> {
        let change = decode(org_id, bytes)?;
        if change.org.id != org_id {
            return Err(Error::Corrupt {
                sequence: 0,
                problem: format!(
                    "the shared change of organisation {org_id} names {}",
                    change.org.id
                ),
            });
        }
        // One change at a time, so the stored change and the registry agree.
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if applied.get(org_id).is_some_and(|done| *done >= revision) {
            return self.registry.get(org_id).ok_or_else(|| {
                Error::NotFound(format!("organisation {org_id} is not registered"))
            });
        }
        self.log.store_org(org_id, bytes)?;
        self.registry.upsert(change.org.clone())?;
        applied.insert(org_id.to_string(), revision);
        drop(applied);
        if change.org.status == OrgStatus::Suspended
            && let Some(streams) = &self.streams
            && streams.end_org(org_id)
        {
            tracing::info!(org = %org_id, revision, "the suspended organisation's streams ended");
        }
        Ok(change.org)
    }

    /// [`Self::apply_blocking`] off the async workers.
    pub async fn apply(&self, org_id: &str, bytes: Vec<u8>, revision: u64) -> Result<Org> {
        let (applier, org_id) = (self.clone(), org_id.to_string());
        tokio::task::spawn_blocking(move || applier.apply_blocking(&org_id, &bytes, revision))
            .await
            .map_err(|e| {
                Error::Unavailable(format!("applying a registry change was interrupted: {e}"))
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Role;

    fn change(status: OrgStatus, name: &str) -> Vec<u8> {
        encode(&OrgChange {
            org: Org {
                id: "gamma-bank".into(),
                name: name.into(),
                role: Role::Bank,
                status,
                limits: Default::default(),
            },
            action: "SET_STATUS".into(),
            reason: String::new(),
            by_org: "dot-regulator".into(),
            by_cert_serial: "01".into(),
            time: 0,
        })
        .expect("encode")
    }

    #[test]
    fn a_change_older_than_the_one_applied_is_skipped_and_a_suspension_ends_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let registry = Registry::default();
        let streams = Streams::new(tokio_util::sync::CancellationToken::new());
        let stream = streams.token("gamma-bank", "01");
        let applier = OrgApplier::new(log.clone(), registry.clone()).with_streams(streams);

        let suspended = change(OrgStatus::Suspended, "second");
        let org = applier
            .apply_blocking("gamma-bank", &suspended, 7)
            .expect("apply");
        assert_eq!(org.status, OrgStatus::Suspended);
        assert!(
            stream.is_cancelled(),
            "the suspended organisation's stream ended"
        );
        // The earlier change arriving late (the watch after the direct apply).
        let org = applier
            .apply_blocking("gamma-bank", &change(OrgStatus::Active, "first"), 5)
            .expect("skip");
        assert_eq!(
            (org.status, org.name.as_str()),
            (OrgStatus::Suspended, "second")
        );
        assert_eq!(
            registry.get("gamma-bank").expect("registered").name,
            "second"
        );
        let stored = log.stored_orgs().expect("stored");
        assert_eq!(stored, vec![("gamma-bank".to_string(), suspended)]);
        // A change filed under another organisation's key is refused.
        let refused = applier.apply_blocking("other-bank", &change(OrgStatus::Active, "x"), 9);
        assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
    }
}
