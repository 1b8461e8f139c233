//! The sequencer: the hub's one writer.
//!
//! Owns: invariants 1 and 2. A single thread takes authorized submissions and
//! commits many of them at a time (group commit), in three steps: `group` plans
//! the group (events with the next sequences, 1, 2, 3 ... no gaps, encoded once),
//! the log `backend` makes it durable with one append and flush, and only then
//! does the writer announce it: store the indexes kept beside the states, apply
//! the events to the state view (its in-memory delta, published as a new `view`
//! version; `checkpoint` writes it to disk later, off this path), move the
//! durable head, fan them out, and answer. At start it replays the log's tail
//! after the latest checkpoint into the state view, so a crash
//! between flush and apply loses nothing. In cluster mode the same thread also
//! takes events other nodes appended to the replicated log ([`Applier`]): it
//! checks they follow its head, stores them locally (no sync: the replicated
//! log holds them durably) and announces them the same way. Must never answer before the
//! flush, and never run on an async worker (it blocks on disk).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::alarm::Alarm;
use crate::backend::{LogBackend, check_follows};
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::frame;
use crate::group::{self, Group, Outcome, StateOverlay};
use crate::indicator::{EventType, now_millis};
use crate::log::{IdempotencyEntry, IdempotentHit, Log, Record};
use crate::metrics::Metrics;
use crate::policy::Permit;
use crate::view::{View, ViewWriter};
use crate::wire;

pub use crate::group::{Change, Committed, EventRef, Submission};

/// Most submissions committed with one flush.
const MAX_GROUP_SUBMISSIONS: usize = 1024;
/// Most events committed with one flush (a group closes once it reaches this).
const MAX_GROUP_EVENTS: usize = 16 * 1024;
/// Submissions waiting for the writer before publishers are pushed back.
const QUEUE_DEPTH: usize = 4096;
/// Records replayed into the state view per batch at start.
const REPLAY_BATCH: usize = 4096;

struct Job {
    submission: Submission,
    reply: oneshot::Sender<Result<Committed>>,
}

/// What the writer takes from its queue.
enum Work {
    Submit(Job),
    /// Events another node made durable in a replicated log (cluster mode).
    Apply(Replicated),
}

struct Replicated {
    records: Vec<Record>,
    /// The writer's head once they are applied.
    reply: oneshot::Sender<Result<u64>>,
}

/// Hands the writer events that are durable in the replicated log but were not
/// appended by this node (cluster mode): it stores them in the local log and
/// announces them like its own. Holding one keeps the writer running.
#[derive(Clone)]
pub struct Applier {
    jobs: mpsc::Sender<Work>,
}

impl Applier {
    /// Applies `records` (in sequence order; those at or below the writer's head
    /// are already applied and skipped). Returns the writer's head after them;
    /// an error if they do not follow it (the caller resumes from head + 1).
    pub async fn apply(&self, records: Vec<Record>) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Work::Apply(Replicated { records, reply }))
            .await
            .map_err(|_| Error::Unavailable("the hub's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the hub's writer stopped before applying".into()))?
    }
}

/// The handle the API uses to submit; cheap to clone.
#[derive(Clone)]
pub struct Sequencer {
    jobs: mpsc::Sender<Work>,
    view: View,
    alarm: Arc<Alarm>,
}

impl Sequencer {
    /// Replays the log into the state view, then starts the writer thread. The
    /// writer stops when every `Sequencer` handle is dropped.
    pub fn start(
        log: Log,
        feed_capacity: usize,
    ) -> Result<(Sequencer, Feed, std::thread::JoinHandle<()>)> {
        Sequencer::start_with(log, feed_capacity, Metrics::new())
    }

    /// [`Sequencer::start`], counting committed events in `metrics`.
    pub fn start_with(
        log: Log,
        feed_capacity: usize,
        metrics: Metrics,
    ) -> Result<(Sequencer, Feed, std::thread::JoinHandle<()>)> {
        Sequencer::start_on(log.clone(), Box::new(log), feed_capacity, metrics)
    }

    /// [`Sequencer::start_with`], making groups durable in `backend` (the log
    /// backend seam); `log` is the local store of the state view and indexes,
    /// and must hold the events up to the backend's head.
    pub fn start_on(
        log: Log,
        backend: Box<dyn LogBackend>,
        feed_capacity: usize,
        metrics: Metrics,
    ) -> Result<(Sequencer, Feed, std::thread::JoinHandle<()>)> {
        let head = backend.head()?;
        let (mut view_writer, view) = ViewWriter::open(&log)?;
        replay(&log, head, &mut view_writer)?;
        let feed = Feed::new(feed_capacity, head);
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let alarm = Arc::new(Alarm::default());
        let writer = Writer {
            backend,
            log,
            view: view_writer,
            alarm: alarm.clone(),
            feed: feed.clone(),
            metrics,
            head,
            broken: Arc::new(AtomicBool::new(false)),
        };
        let thread = std::thread::Builder::new()
            .name("dip-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::io("starting the writer thread", e))?;
        Ok((Sequencer { jobs, view, alarm }, feed, thread))
    }

    /// The handle through which a replicated log's consumer feeds the writer.
    pub fn applier(&self) -> Applier {
        Applier {
            jobs: self.jobs.clone(),
        }
    }

    /// The state view the writer publishes a version of after each group.
    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// Rung by the writer when it stores a valid_until (see `expiry`).
    pub fn expiry_alarm(&self) -> Arc<Alarm> {
        self.alarm.clone()
    }

    /// Commits a submission; answers once its events are durable.
    pub async fn submit(&self, permit: Permit, submission: Submission) -> Result<Committed> {
        self.enqueue(permit, submission).await?.committed().await
    }

    /// Hands a submission to the writer (waiting while its queue is full) and
    /// returns at once: the writer commits submissions in the order they are
    /// enqueued, and [`Enqueued::committed`] answers once they are durable.
    pub async fn enqueue(&self, _permit: Permit, submission: Submission) -> Result<Enqueued> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Work::Submit(Job { submission, reply }))
            .await
            .map_err(|_| Error::Unavailable("the hub's writer has stopped".into()))?;
        Ok(Enqueued(answer))
    }
}

/// A submission the writer holds.
pub struct Enqueued(oneshot::Receiver<Result<Committed>>);

impl Enqueued {
    /// Its events, once durable; or why it was refused.
    pub async fn committed(self) -> Result<Committed> {
        self.0
            .await
            .map_err(|_| Error::Unavailable("the hub's writer stopped before committing".into()))?
    }
}

/// Brings the state view from its latest checkpoint up to the log's head
/// (after a crash or a restart): only the log's tail is replayed, into the
/// view's delta, with the indexes kept beside the states rewritten.
fn replay(log: &Log, head: u64, view: &mut ViewWriter) -> Result<()> {
    let mut applied = view.applied();
    if applied > head {
        // The checkpointer syncs the log before writing a checkpoint, so only
        // a disk that lost synced writes gets here; replaying would apply the
        // missing events twice (a cluster node refetches them first).
        return Err(Error::Corrupt {
            sequence: head,
            problem: format!(
                "the state checkpoint is at {applied}, ahead of the log's head {head}: the log lost events the state was derived from; restore the data directory from a backup (or, in a cluster, start the node on an empty one)"
            ),
        });
    }
    if applied < head {
        tracing::info!(
            from = applied + 1,
            to = head,
            "replaying the log's tail into the state view"
        );
    }
    while applied < head {
        let records = log.read(applied + 1, head, REPLAY_BATCH, usize::MAX)?;
        let Some(last) = records.last().map(|r| r.sequence) else {
            break;
        };
        let (overlay, idempotency) = derive(view, &records)?;
        let changes = overlay.changed();
        log.apply_indexes(&changes, &idempotency)?;
        view.apply(&changes, last);
        applied = last;
    }
    Ok(())
}

/// The state changes and idempotency entries of durable `records`, over the
/// writer's state view.
fn derive(view: &ViewWriter, records: &[Record]) -> Result<(StateOverlay, Vec<IdempotencyEntry>)> {
    let mut overlay = StateOverlay::default();
    let mut idempotency = Vec::new();
    for record in records {
        let event =
            wire::event_from_proto(frame::decode_event_entry(&record.entry).map_err(|e| {
                Error::Corrupt {
                    sequence: record.sequence,
                    problem: e,
                }
            })?)?;
        if let Some(mark) = &record.idempotency {
            idempotency.push(IdempotencyEntry {
                org_id: event.source.org_id.clone(),
                key: mark.key.clone(),
                hit: IdempotentHit {
                    first_sequence: record.sequence,
                    count: mark.count,
                    fingerprint: mark.fingerprint,
                },
            });
        }
        overlay.apply(&event, |key| view.get(key))?;
    }
    Ok((overlay, idempotency))
}

struct Writer {
    /// The local store: idempotency index, stored state view, reads for replays.
    log: Log,
    /// Where groups are made durable.
    backend: Box<dyn LogBackend>,
    view: ViewWriter,
    /// Told of every valid_until stored, so expiry wakes in time.
    alarm: Arc<Alarm>,
    feed: Feed,
    metrics: Metrics,
    /// The newest sequence durable in the backend.
    head: u64,
    /// Set when storage failed mid-commit: the writer refuses everything after.
    broken: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Work>) {
        let mut next = None;
        while let Some(work) = next.take().or_else(|| queue.blocking_recv()) {
            let first = match work {
                Work::Submit(job) => job,
                Work::Apply(replicated) => {
                    let head = self.apply_replicated(replicated.records);
                    let _ = replicated.reply.send(head);
                    continue;
                }
            };
            let mut jobs = vec![first];
            let mut events = jobs[0].submission.changes.len();
            while jobs.len() < MAX_GROUP_SUBMISSIONS && events < MAX_GROUP_EVENTS {
                match queue.try_recv() {
                    Ok(Work::Submit(job)) => {
                        events += job.submission.changes.len();
                        jobs.push(job);
                    }
                    Ok(apply) => {
                        next = Some(apply);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(jobs);
        }
        tracing::info!(head = self.head, "writer stopped");
    }

    /// Commits one group: plan it (pure), make it durable (the backend), then
    /// announce it (stored state, view, feed, replies). Group commit: one
    /// durable append for every submission of the group.
    fn commit_group(&mut self, jobs: Vec<Job>) {
        if self.broken.load(Ordering::Acquire) {
            for job in jobs {
                let _ = job.reply.send(Err(Error::Unavailable(
                    "the hub's storage failed; it must be restarted".into(),
                )));
            }
            return;
        }
        if let Err(error) = self.backend.writable(self.head) {
            let message = error.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(Error::Unavailable(message.clone())));
            }
            return;
        }
        let (submissions, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.submission, j.reply)).unzip();
        let view = &self.view;
        let log = &self.log;
        let read_failed = std::cell::Cell::new(None);
        let group = group::plan(
            &submissions,
            self.head,
            now_millis(),
            |key| {
                view.get(key).unwrap_or_else(|error| {
                    read_failed.set(Some(error));
                    None
                })
            },
            |org, key| log.idempotent(org, key),
        );
        if let Some(error) = read_failed.take() {
            // Planned against a state that could not be read: nothing of it is stored.
            tracing::error!(%error, "reading the state view failed; the group is refused");
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(
                    "the hub could not read an indicator's state; nothing was stored".into(),
                )));
            }
            return;
        }
        if !group.records.is_empty() {
            if let Err(error) = self.backend.append_group(group.after, &group.records) {
                if let Error::Unavailable(message) = error {
                    // A replicated log refused the group or did not confirm it:
                    // nothing is acknowledged; what landed arrives from the log.
                    tracing::warn!(%message, "the log did not take the group; nothing acknowledged");
                    for reply in replies {
                        let _ = reply.send(Err(Error::Unavailable(message.clone())));
                    }
                    return;
                }
                tracing::error!(%error, "appending to the log failed; the writer stops accepting");
                self.broken.store(true, Ordering::Release);
                for reply in replies {
                    let _ = reply.send(Err(Error::Unavailable(
                        "the hub could not store the events; nothing was acknowledged".into(),
                    )));
                }
                return;
            }
            self.head = group.head();
        }
        self.announce(group, replies);
    }

    /// After the group is durable: stores the derived state, rings the expiry
    /// alarm, counts, publishes the view version, fans out, and answers.
    fn announce(&mut self, group: Group, replies: Vec<oneshot::Sender<Result<Committed>>>) {
        let Group {
            records,
            idempotency,
            overlay,
            outcomes,
            ..
        } = group;
        if !records.is_empty() {
            // Derived indexes: rewritten by replay if this write is lost in a crash.
            // The states go to the view's delta below; checkpoints store them.
            let changes = overlay.changed();
            let indexed = self.log.apply_indexes(&changes, &idempotency);
            if let Err(error) = &indexed {
                // The events are durable, so they are answered; but the indexes
                // stay wrong until a restart replays the tail, so the writer
                // accepts nothing more, and the view is not moved past this group
                // (a checkpoint after it would keep the replay from redoing it).
                tracing::error!(%error, "updating the idempotency or expiry index failed; the writer stops accepting until a restart replays the log");
                self.broken.store(true, Ordering::Release);
            }
            if let Some(earliest) = changes
                .iter()
                .filter(|c| c.after.is_active())
                .filter_map(|c| c.after.indicator.valid_until)
                .min()
            {
                self.alarm.committed(earliest);
            }
            for record in &records {
                self.metrics
                    .published(record.meta.kind, record.meta.event_type);
            }
            if indexed.is_ok() {
                self.view.apply(&changes, self.head);
            }
            self.feed.publish(records, self.head);
        }
        for (outcome, reply) in outcomes.into_iter().zip(replies) {
            let answer = match outcome {
                Outcome::Appended(events) => Ok(Committed {
                    events,
                    replayed: false,
                }),
                Outcome::Replay(hit) => self.replayed(hit),
                Outcome::Refused(error) => Err(error),
            };
            let _ = reply.send(answer);
        }
    }

    /// Stores and announces events another node made durable; returns the head.
    fn apply_replicated(&mut self, records: Vec<Record>) -> Result<u64> {
        let records: Vec<Record> = records
            .into_iter()
            .filter(|record| record.sequence > self.head)
            .collect();
        if records.is_empty() {
            return Ok(self.head);
        }
        check_follows(self.head, &records)?;
        if self.broken.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "the hub's storage failed; it must be restarted".into(),
            ));
        }
        // No sync: they are durable on the replicated log's quorum; the local
        // copy is synced by the checkpointer before a checkpoint derived from
        // them (see `checkpoint`), and a tail lost in a crash is read again.
        let stored = self
            .log
            .append(&records)
            .and_then(|()| derive(&self.view, &records));
        let (overlay, idempotency) = match stored {
            Ok(derived) => derived,
            Err(error) => {
                tracing::error!(%error, "storing replicated events failed; the writer stops until a restart");
                self.broken.store(true, Ordering::Release);
                return Err(error);
            }
        };
        let after = self.head;
        self.head = after + records.len() as u64;
        let group = Group {
            after,
            records,
            idempotency,
            overlay,
            outcomes: Vec::new(),
        };
        self.announce(group, Vec::new());
        Ok(self.head)
    }

    /// The answer first given to a submission with the same idempotency key.
    fn replayed(&self, hit: IdempotentHit) -> Result<Committed> {
        let last = hit.first_sequence + u64::from(hit.count).saturating_sub(1);
        let records = self
            .log
            .read(hit.first_sequence, last, hit.count as usize, usize::MAX)?;
        // As first answered: one event per change, WITHDRAWN left out.
        let events = records
            .iter()
            .filter(|record| record.meta.event_type != EventType::Withdrawn)
            .map(|record| {
                let event =
                    frame::decode_event_entry(&record.entry).map_err(|e| Error::Corrupt {
                        sequence: record.sequence,
                        problem: e,
                    })?;
                Ok(EventRef {
                    sequence: event.sequence,
                    event_id: event.event_id.parse().map_err(|_| Error::Corrupt {
                        sequence: record.sequence,
                        problem: "event id is not a UUID".into(),
                    })?,
                    event_type: record.meta.event_type,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Committed {
            events,
            replayed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_ahead_of_the_log_is_refused_not_replayed_over() {
        let dir = tempfile::tempdir().expect("dir");
        let log = Log::open(dir.path()).expect("log");
        log.states()
            .checkpoint(&[], 3, Default::default())
            .expect("checkpoint");
        let refused = Sequencer::start(log, 16).map(|_| ()).expect_err("refused");
        assert!(
            refused.to_string().contains("ahead of the log's head 0"),
            "{refused}"
        );
    }
}
