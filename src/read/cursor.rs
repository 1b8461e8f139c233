//! Durable consumer cursors: each (organisation, consumer name)'s acknowledged
//! sequence, where a Subscribe naming the consumer resumes.
//!
//! Owns: what an Ack means. An Ack is answered only once its cursor is durable
//! (flushed to disk): a consumer told that sequence N is acknowledged never gets
//! events up to N again after a reconnect or a restart of the hub. One thread
//! takes acks from a queue, coalesces every ack waiting (the highest per cursor),
//! writes them in one batch and makes them durable with one flush, then answers
//! them all (group commit, like the sequencer: concurrent acks share a flush). An
//! ack at or below the durable cursor is answered at once without touching disk.
//! Cursors only move forward: a lower ack is ignored and the answer carries the
//! stored value. Cursors are namespaced by the organisation of the certificate,
//! so one organisation can neither read nor move another's. Must never answer
//! before the flush, never move a cursor backwards, and never run on an async
//! worker (it blocks on disk).
//!
//! In cluster mode the cursors live in a store every node shares instead (a
//! [`SharedCursors`], the cluster's KV bucket), with the same rules: forward
//! only, answered once the store confirmed it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::log::Log;

/// Most durable consumers one organisation may have.
pub const MAX_CONSUMERS_PER_ORG: usize = 1000;
/// Acks waiting for the cursor thread before Ack callers are pushed back.
const QUEUE_DEPTH: usize = 4096;
/// Most acks committed with one flush.
const MAX_GROUP: usize = 4096;

/// (organisation, consumer name).
type CursorKey = (String, String);

/// A boxed future, for [`SharedCursors`].
pub type Pending<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// Cursors kept where every node of a cluster reads them.
pub trait SharedCursors: Send + Sync + 'static {
    /// The consumer's acknowledged sequence, if any.
    fn position<'a>(&'a self, org_id: &'a str, consumer: &'a str) -> Pending<'a, Option<u64>>;
    /// Moves the cursor to `sequence` unless it is already there or beyond;
    /// answers the stored value once it is durable.
    fn ack<'a>(&'a self, org_id: &'a str, consumer: &'a str, sequence: u64) -> Pending<'a, u64>;
}

/// The refusal of a new durable consumer of `org`, which has [`MAX_CONSUMERS_PER_ORG`].
pub fn too_many_consumers(org: &str) -> Error {
    Error::ResourceExhausted(format!(
        "consumer: {org} already has {MAX_CONSUMERS_PER_ORG} durable consumers; \
         reuse one of their names (a consumer name is meant to name a long-lived consumer)"
    ))
}

struct AckJob {
    key: CursorKey,
    sequence: u64,
    reply: oneshot::Sender<Result<u64>>,
}

/// The handle the API uses; cheap to clone. The cursor thread stops when every
/// handle is dropped.
#[derive(Clone)]
pub struct Cursors {
    jobs: mpsc::Sender<AckJob>,
    log: Log,
    /// Cursors known to be durable (the thread's own writes, after their flush).
    durable: Arc<Mutex<HashMap<CursorKey, u64>>>,
    /// Cluster mode: the shared store, used instead of the local log.
    shared: Option<Arc<dyn SharedCursors>>,
}

impl Cursors {
    /// Starts the cursor thread.
    pub fn start(log: Log) -> Result<(Cursors, std::thread::JoinHandle<()>)> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let durable = Arc::new(Mutex::new(HashMap::new()));
        let committer = Committer {
            log: log.clone(),
            durable: durable.clone(),
            counts: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("dip-cursors".into())
            .spawn(move || committer.run(queue))
            .map_err(|e| Error::io("starting the cursor thread", e))?;
        Ok((
            Cursors {
                jobs,
                log,
                durable,
                shared: None,
            },
            thread,
        ))
    }

    /// These cursors, kept in `shared` (cluster mode) instead of the local log.
    pub fn shared(self, shared: Arc<dyn SharedCursors>) -> Cursors {
        Cursors {
            shared: Some(shared),
            ..self
        }
    }

    /// Acknowledges `sequence` for the consumer; answers the durable cursor, which
    /// is `sequence` or a higher one acknowledged before.
    pub async fn ack(&self, org_id: &str, consumer: &str, sequence: u64) -> Result<u64> {
        if let Some(shared) = &self.shared {
            return shared.ack(org_id, consumer, sequence).await;
        }
        let key = (org_id.to_string(), consumer.to_string());
        if let Some(stored) = self.cached(&key)
            && sequence <= stored
        {
            return Ok(stored);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(AckJob {
                key,
                sequence,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("the hub is shutting down; ack again".into()))?;
        answer.await.map_err(|_| {
            Error::Unavailable("the hub stopped before storing the ack; ack again".into())
        })?
    }

    /// The consumer's acknowledged sequence, if it has acknowledged anything.
    pub async fn position(&self, org_id: &str, consumer: &str) -> Result<Option<u64>> {
        if let Some(shared) = &self.shared {
            return shared.position(org_id, consumer).await;
        }
        let key = (org_id.to_string(), consumer.to_string());
        if let Some(stored) = self.cached(&key) {
            return Ok(Some(stored));
        }
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.cursor(&key.0, &key.1))
            .await
            .map_err(|e| Error::Unavailable(format!("reading the cursor was interrupted: {e}")))?
    }

    fn cached(&self, key: &CursorKey) -> Option<u64> {
        let durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        durable.get(key).copied()
    }
}

/// The cursor thread.
struct Committer {
    log: Log,
    durable: Arc<Mutex<HashMap<CursorKey, u64>>>,
    /// Durable consumers per organisation, counted on first use.
    counts: HashMap<String, usize>,
}

impl Committer {
    fn run(mut self, mut queue: mpsc::Receiver<AckJob>) {
        while let Some(first) = queue.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
        tracing::debug!("cursor thread stopped");
    }

    /// The durable value of a cursor: remembered, else read from the log.
    fn stored(&self, key: &CursorKey) -> Result<Option<u64>> {
        let remembered = {
            let durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
            durable.get(key).copied()
        };
        match remembered {
            Some(sequence) => Ok(Some(sequence)),
            None => self.log.cursor(&key.0, &key.1),
        }
    }

    fn commit(&mut self, jobs: Vec<AckJob>) {
        // The value each touched cursor will have: stored, raised by this group's acks.
        let mut targets: HashMap<CursorKey, (Option<u64>, u64)> = HashMap::new();
        let mut new_per_org: HashMap<String, usize> = HashMap::new();
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some((_, target)) = targets.get_mut(&job.key) {
                *target = (*target).max(job.sequence);
                waiting.push(job);
                continue;
            }
            let stored = match self.stored(&job.key) {
                Ok(stored) => stored,
                Err(error) => {
                    let _ = job.reply.send(Err(error));
                    continue;
                }
            };
            if stored.is_none()
                && let Err(error) = self.admit_new(&job.key, &mut new_per_org)
            {
                let _ = job.reply.send(Err(error));
                continue;
            }
            let target = stored.unwrap_or(0).max(job.sequence);
            targets.insert(job.key.clone(), (stored, target));
            waiting.push(job);
        }

        let writes: Vec<(String, String, u64)> = targets
            .iter()
            .filter(|(_, (stored, target))| *stored != Some(*target))
            .map(|((org, consumer), (_, target))| (org.clone(), consumer.clone(), *target))
            .collect();
        if !writes.is_empty() {
            let durable = self
                .log
                .set_cursors(&writes)
                .and_then(|()| self.log.flush());
            if let Err(error) = durable {
                tracing::error!(%error, "storing consumer cursors failed");
                for job in waiting {
                    let _ = job.reply.send(Err(Error::Unavailable(
                        "the hub could not store the ack; it is not acknowledged, ack again".into(),
                    )));
                }
                return;
            }
            for (org, count) in new_per_org {
                *self.counts.entry(org).or_default() += count;
            }
        }
        {
            let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, (_, target)) in &targets {
                durable.insert(key.clone(), *target);
            }
        }
        for job in waiting {
            let answer = targets.get(&job.key).map_or(job.sequence, |(_, t)| *t);
            let _ = job.reply.send(Ok(answer));
        }
    }

    /// Admits a consumer new to the hub, within its organisation's limit.
    fn admit_new(
        &mut self,
        key: &CursorKey,
        new_per_org: &mut HashMap<String, usize>,
    ) -> Result<()> {
        let org = &key.0;
        let existing = match self.counts.get(org) {
            Some(count) => *count,
            None => {
                let count = self.log.cursor_count(org)?;
                self.counts.insert(org.clone(), count);
                count
            }
        };
        let added = new_per_org.entry(org.clone()).or_default();
        if existing + *added >= MAX_CONSUMERS_PER_ORG {
            return Err(too_many_consumers(org));
        }
        *added += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_move_forward_only_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = Log::open(dir.path()).expect("open");
            let (cursors, thread) = Cursors::start(log).expect("start");
            assert_eq!(cursors.position("bank", "desk").await.expect("read"), None);
            assert_eq!(cursors.ack("bank", "desk", 7).await.expect("ack"), 7);
            assert_eq!(cursors.ack("bank", "desk", 3).await.expect("ack"), 7);
            assert_eq!(cursors.ack("bank", "desk", 9).await.expect("ack"), 9);
            assert_eq!(
                cursors.position("police", "desk").await.expect("read"),
                None
            );
            drop(cursors);
            tokio::task::spawn_blocking(move || thread.join().expect("thread"))
                .await
                .expect("join");
        }
        let log = Log::open(dir.path()).expect("reopen");
        assert_eq!(log.cursor("bank", "desk").expect("read"), Some(9));
    }

    #[tokio::test]
    async fn concurrent_acks_of_one_cursor_end_at_the_highest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let (cursors, _thread) = Cursors::start(log.clone()).expect("start");
        let acks = (1..=50u64).map(|n| {
            let cursors = cursors.clone();
            (
                n,
                tokio::spawn(async move { cursors.ack("bank", "desk", n).await }),
            )
        });
        for (n, ack) in acks.collect::<Vec<_>>() {
            let answer = ack.await.expect("task").expect("ack");
            assert!(answer >= n, "an ack of {n} was answered {answer}");
        }
        assert_eq!(
            cursors.position("bank", "desk").await.expect("read"),
            Some(50)
        );
        assert_eq!(log.cursor("bank", "desk").expect("read"), Some(50));
    }
}
