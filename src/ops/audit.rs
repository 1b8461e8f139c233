//! The audit trail: who (organisation, certificate serial) looked what up, and when.
//!
//! Owns: recording entries off the request's critical path and reading them
//! back. A request hands its entry to a bounded queue (`try_send`, never
//! waiting) and logs it with `tracing`; one task stores queued entries in
//! batches in the log's `audit` tree (an entry waits up to 20 ms for others to
//! share its write, unless an audit read waits for it). Policy when the queue is full (storage
//! slower than lookups for a while): the entry is not stored, the
//! `dip_audit_entries_dropped` metric counts it and a warning is logged; the
//! tracing line of the request is still written. A lookup is never blocked or
//! refused because of its audit entry. Must never touch sled itself (that is
//! `log`) nor record more than the caller sent and the outcome it was told.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::indicator::{Millis, now_millis};
use crate::log::Log;
use crate::metrics::Metrics;

/// Entries waiting to be stored before new ones are dropped.
pub const QUEUE_ENTRIES: usize = 8192;
/// Most entries stored in one write.
const BATCH_ENTRIES: usize = 512;
/// How long entries wait for others to be stored with them (see [`gather`]).
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// One audited action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: Millis,
    pub org: String,
    pub cert_serial: String,
    /// LOOKUP, SNAPSHOT, ADMIN_ONBOARD, ADMIN_SET_STATUS, ADMIN_RELOAD_CRLS, AUDIT_READ.
    pub action: String,
    /// What was asked for, e.g. `PHONE_NUMBER:+919876543210`.
    pub subject: String,
    /// What came of it, e.g. `found`, `not_found`.
    pub outcome: String,
}

impl AuditEntry {
    pub fn now(
        org: &str,
        cert_serial: &str,
        action: &str,
        subject: impl Into<String>,
        outcome: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            time: now_millis(),
            org: org.to_string(),
            cert_serial: cert_serial.to_string(),
            action: action.to_string(),
            subject: subject.into(),
            outcome: outcome.into(),
        }
    }
}

/// The sending side of the trail; cheap to clone. The storing task ends when
/// every clone is dropped, after storing what is queued.
#[derive(Clone)]
pub struct Audit {
    queue: mpsc::Sender<Message>,
    metrics: Metrics,
}

impl Audit {
    /// Starts the task that stores entries in `log`.
    pub fn start(log: Log, metrics: Metrics) -> (Audit, JoinHandle<()>) {
        let (queue, entries) = mpsc::channel(QUEUE_ENTRIES);
        let task = tokio::spawn(store(log, entries, metrics.clone()));
        (Audit { queue, metrics }, task)
    }

    /// Logs the entry and queues it for storage; never waits.
    pub fn record(&self, entry: AuditEntry) {
        tracing::info!(
            target: "dip_hub::audit",
            org = %entry.org,
            cert_serial = %entry.cert_serial,
            action = %entry.action,
            subject = %entry.subject,
            outcome = %entry.outcome,
            "audit"
        );
        match self.queue.try_send(Message::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Entry(entry))) => {
                self.metrics.audit_dropped(1);
                tracing::warn!(
                    org = %entry.org,
                    action = %entry.action,
                    "audit queue full: entry not stored (counted in dip_audit_entries_dropped)"
                );
            }
            Err(_) => self.metrics.audit_dropped(1),
        }
    }

    /// Waits until every entry recorded before this call is stored (so that a
    /// reader sees them). Waits for queue space, unlike [`Audit::record`].
    pub async fn sync(&self) {
        let (done, stored) = oneshot::channel();
        if self.queue.send(Message::Sync(done)).await.is_ok() {
            let _ = stored.await;
        }
    }
}

enum Message {
    Entry(AuditEntry),
    /// Answered once everything queued before it is stored.
    Sync(oneshot::Sender<()>),
}

/// Up to `limit` stored entries recorded at or after `since`, oldest first.
/// Blocks on disk.
pub fn read(log: &Log, since: Millis, limit: usize) -> Result<Vec<AuditEntry>> {
    log.read_audit(u64::try_from(since).unwrap_or(0), limit)?
        .iter()
        .map(|bytes| {
            serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
                sequence: 0,
                problem: format!("audit entry: {e}"),
            })
        })
        .collect()
}

/// Waits up to [`GATHER`] for more entries to store with those in `batch`
/// (at most [`BATCH_ENTRIES`]), unless someone waits for them to be stored.
/// One write for many lookups: each write is a storage handoff and takes
/// sled's process-wide batch lock, which every Lookup's read waits behind.
async fn gather(messages: &mut mpsc::Receiver<Message>, batch: &mut Vec<Message>) {
    let deadline = tokio::time::Instant::now() + GATHER;
    while batch.len() < BATCH_ENTRIES && !batch.iter().any(|m| matches!(m, Message::Sync(_))) {
        let room = BATCH_ENTRIES - batch.len();
        match tokio::time::timeout_at(deadline, messages.recv_many(batch, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn store(log: Log, mut messages: mpsc::Receiver<Message>, metrics: Metrics) {
    let start = log.clone();
    let mut counter = match tokio::task::spawn_blocking(move || start.last_audit_counter()).await {
        Ok(Ok(counter)) => counter,
        Ok(Err(error)) => {
            tracing::error!(%error, "reading the audit trail failed; its keys restart at 0");
            0
        }
        Err(_) => 0,
    };
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    while messages.recv_many(&mut batch, BATCH_ENTRIES).await > 0 {
        gather(&mut messages, &mut batch).await;
        let mut keyed: Vec<((u64, u64), Vec<u8>)> = Vec::with_capacity(batch.len());
        let mut synced = Vec::new();
        for message in batch.drain(..) {
            match message {
                Message::Entry(entry) => {
                    counter += 1;
                    let time = u64::try_from(entry.time).unwrap_or(0);
                    match serde_json::to_vec(&entry) {
                        Ok(bytes) => keyed.push(((time, counter), bytes)),
                        Err(_) => metrics.audit_dropped(1),
                    }
                }
                Message::Sync(done) => synced.push(done),
            }
        }
        let n = keyed.len();
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.append_audit(&keyed)).await {
            Ok(Ok(())) => metrics.audit_recorded(n),
            Ok(Err(error)) => {
                metrics.audit_dropped(n);
                tracing::error!(%error, entries = n, "storing audit entries failed");
            }
            Err(error) => {
                metrics.audit_dropped(n);
                tracing::error!(%error, entries = n, "storing audit entries was interrupted");
            }
        }
        for done in synced {
            let _ = done.send(());
        }
    }
}
