//! The sequencer: the hub's one writer.
//!
//! Owns: invariants 1 and 2. The writer takes authorized submissions and
//! commits many of them at a time (group commit), in three steps: `group` plans
//! the group (events with the next sequences, 1, 2, 3 ... no gaps, encoded once),
//! the log `backend` makes it durable with one append and flush, and only then
//! does the writer announce it: apply the events to the state view (stored, and
//! published in memory as a new `view` version), move the durable head, fan them
//! out, and answer. Two threads, a pipeline: the planner (`dip-writer`) plans
//! the next group while the committer (`dip-commit`) makes the current one
//! durable and announces it; the planner plans on top of the groups the view
//! does not show yet (their state changes and idempotency keys); what it plans
//! while the committer is busy is merged into one commit, so the next append
//! and sync take all of it (group commit as before). A group is answered only after its
//! own append, and announced only after every group before it. At start it
//! replays the log into the state view, so a crash between flush and apply
//! loses nothing. Must never answer before the flush, apply the view out of
//! order or before durability, and never run on an async worker (it blocks on
//! disk).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::alarm::Alarm;
use crate::backend::LogBackend;
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::frame;
use crate::group::{self, Group, Outcome, StateOverlay};
use crate::indicator::{EventType, now_millis};
use crate::log::{IdempotencyEntry, IdempotentHit, Log, Record};
use crate::metrics::Metrics;
use crate::policy::Permit;
use crate::state::IndicatorState;
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

/// The handle the API uses to submit; cheap to clone.
#[derive(Clone)]
pub struct Sequencer {
    jobs: mpsc::Sender<Job>,
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
        replay(&log, head)?;
        let (view_writer, view) = ViewWriter::load(&log)?;
        let feed = Feed::new(feed_capacity, head);
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let alarm = Arc::new(Alarm::default());
        let broken = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            backend,
            log: log.clone(),
            view: view_writer,
            alarm: alarm.clone(),
            feed: feed.clone(),
            metrics,
            head,
            broken: Arc::clone(&broken),
        };
        let planner = Planner {
            log,
            view: view.clone(),
            pending: VecDeque::new(),
            head,
            broken,
        };
        let thread = std::thread::Builder::new()
            .name("dip-writer".into())
            .spawn(move || planner.run(queue, committer))
            .map_err(|e| Error::io("starting the writer thread", e))?;
        Ok((Sequencer { jobs, view, alarm }, feed, thread))
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
            .send(Job { submission, reply })
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

/// Brings the state view up to the log's head (after a crash or a restart).
fn replay(log: &Log, head: u64) -> Result<()> {
    let mut applied = log.state_applied()?;
    if applied < head {
        tracing::info!(
            from = applied + 1,
            to = head,
            "replaying the log into the state view"
        );
    }
    while applied < head {
        let records = log.read(applied + 1, head, REPLAY_BATCH, usize::MAX)?;
        let Some(last) = records.last().map(|r| r.sequence) else {
            break;
        };
        let mut view = StateOverlay::default();
        let mut idempotency = Vec::new();
        for record in &records {
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
            view.apply(&event, |key| log.indicator(key))?;
        }
        log.apply_state(&view.changed(), &idempotency, last)?;
        applied = last;
    }
    Ok(())
}

/// What a planned group changes, kept by the planner until the view shows it,
/// so that the next group is planned on top of it before it is durable.
struct Effects {
    /// The head once the group is appended.
    head: u64,
    overlay: StateOverlay,
    idempotency: Vec<IdempotencyEntry>,
    /// `idempotency` by (organisation, key), for the planner's look-ups.
    keys: HashMap<(String, String), IdempotentHit>,
}

/// Planned groups on their way to the committer: while it is busy, each group
/// planned is merged into the one waiting, so that the next append (one sync)
/// takes everything planned meanwhile.
struct Commit {
    after: u64,
    records: Vec<Record>,
    outcomes: Vec<Outcome>,
    /// One per group merged, in order.
    effects: Vec<Arc<Effects>>,
    replies: Vec<oneshot::Sender<Result<Committed>>>,
}

impl Commit {
    fn merge(&mut self, next: Commit) {
        self.records.extend(next.records);
        self.outcomes.extend(next.outcomes);
        self.effects.extend(next.effects);
        self.replies.extend(next.replies);
    }
}

/// Where the planner leaves the next commit and the committer takes it.
#[derive(Default)]
struct Handoff {
    waiting: Mutex<(Option<Commit>, bool)>,
    changed: Condvar,
}

impl Handoff {
    /// Leaves a planned group for the committer, merged into the one already
    /// waiting; waits while that one is full.
    fn put(&self, commit: Commit) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while waiting
            .0
            .as_ref()
            .is_some_and(|c| c.records.len() >= MAX_GROUP_EVENTS)
        {
            waiting = self
                .changed
                .wait(waiting)
                .unwrap_or_else(|p| p.into_inner());
        }
        match &mut waiting.0 {
            Some(earlier) => earlier.merge(commit),
            None => waiting.0 = Some(commit),
        }
        self.changed.notify_all();
    }

    /// The next commit, once there is one; `None` once closed and empty.
    fn take(&self) -> Option<Commit> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(commit) = waiting.0.take() {
                self.changed.notify_all();
                return Some(commit);
            }
            if waiting.1 {
                return None;
            }
            waiting = self
                .changed
                .wait(waiting)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }
}

/// The writer's first stage: takes submissions and plans groups (sequences,
/// state rules, encoding) on top of the groups still being made durable.
struct Planner {
    /// The idempotency index as stored.
    log: Log,
    /// The state view as last applied by the committer.
    view: View,
    /// Groups planned and not yet in the view, oldest first.
    pending: VecDeque<Arc<Effects>>,
    /// The head once every planned group is appended.
    head: u64,
    broken: Arc<AtomicBool>,
}

impl Planner {
    /// Plans groups until every `Sequencer` handle is dropped, handing each to
    /// the committer thread; while the committer makes one group durable the
    /// next is planned (at most one planned group waits for it).
    fn run(mut self, mut queue: mpsc::Receiver<Job>, committer: Committer) {
        let handoff = Arc::new(Handoff::default());
        let taken = Arc::clone(&handoff);
        let committing = std::thread::Builder::new()
            .name("dip-commit".into())
            .spawn(move || committer.run(&taken));
        let committing = match committing {
            Ok(thread) => thread,
            Err(error) => {
                tracing::error!(%error, "starting the commit thread failed; the writer refuses everything");
                self.broken.store(true, Ordering::Release);
                while let Some(job) = queue.blocking_recv() {
                    let _ = job.reply.send(Err(Error::Unavailable(
                        "the hub's writer could not start".into(),
                    )));
                }
                return;
            }
        };
        while let Some(first) = queue.blocking_recv() {
            let mut jobs = vec![first];
            let mut events = jobs[0].submission.changes.len();
            while jobs.len() < MAX_GROUP_SUBMISSIONS && events < MAX_GROUP_EVENTS {
                match queue.try_recv() {
                    Ok(job) => {
                        events += job.submission.changes.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let commit = self.plan(jobs);
            handoff.put(commit);
        }
        handoff.close();
        let _ = committing.join();
        tracing::info!(head = self.head, "writer stopped");
    }

    /// Plans one group against the view and the groups planned before it.
    fn plan(&mut self, jobs: Vec<Job>) -> Commit {
        let (submissions, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.submission, j.reply)).unzip();
        let version = self.view.current();
        // Groups the view already shows are looked up there (and in the stored
        // idempotency index) from now on.
        while self
            .pending
            .front()
            .is_some_and(|effects| effects.head <= version.applied)
        {
            self.pending.pop_front();
        }
        if self.broken.load(Ordering::Acquire) {
            // The committer refuses it; nothing is planned on a broken log.
            return Commit {
                after: self.head,
                records: Vec::new(),
                outcomes: Vec::new(),
                effects: Vec::new(),
                replies,
            };
        }
        let pending = &self.pending;
        let log = &self.log;
        let group = group::plan(
            &submissions,
            self.head,
            now_millis(),
            |key| {
                for effects in pending.iter().rev() {
                    if let Some(state) = effects.overlay.after(key) {
                        return state.cloned();
                    }
                }
                version
                    .states
                    .get(key)
                    .map(|state| IndicatorState::clone(state))
            },
            |org, key| {
                let wanted = (org.to_string(), key.to_string());
                for effects in pending.iter().rev() {
                    if let Some(hit) = effects.keys.get(&wanted) {
                        return Ok(Some(*hit));
                    }
                }
                log.idempotent(org, key)
            },
        );
        let Group {
            after,
            records,
            idempotency,
            overlay,
            outcomes,
        } = group;
        let head = after + records.len() as u64;
        let keys = idempotency
            .iter()
            .map(|entry| ((entry.org_id.clone(), entry.key.clone()), entry.hit))
            .collect();
        let effects = Arc::new(Effects {
            head,
            overlay,
            idempotency,
            keys,
        });
        if !records.is_empty() {
            self.pending.push_back(Arc::clone(&effects));
        }
        self.head = head;
        Commit {
            after,
            records,
            outcomes,
            effects: vec![effects],
            replies,
        }
    }
}

/// The writer's second stage: makes each planned group durable, then
/// announces it, in the order planned.
struct Committer {
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

impl Committer {
    fn run(mut self, handoff: &Handoff) {
        while let Some(commit) = handoff.take() {
            self.commit(commit);
        }
    }

    /// Commits one group: make it durable (the backend), then announce it
    /// (stored state, view, feed, replies). Group commit: one durable append
    /// for every submission of the group.
    fn commit(&mut self, commit: Commit) {
        let Commit {
            after,
            records,
            outcomes,
            effects,
            replies,
        } = commit;
        if self.broken.load(Ordering::Acquire) || after != self.head {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(
                    "the hub's storage failed; it must be restarted".into(),
                )));
            }
            return;
        }
        if !records.is_empty() {
            if let Err(error) = self.backend.append_group(after, &records) {
                tracing::error!(%error, "appending to the log failed; the writer stops accepting");
                self.broken.store(true, Ordering::Release);
                for reply in replies {
                    let _ = reply.send(Err(Error::Unavailable(
                        "the hub could not store the events; nothing was acknowledged".into(),
                    )));
                }
                return;
            }
            self.head = after + records.len() as u64;
        }
        self.announce(records, &effects, outcomes, replies);
    }

    /// After the group is durable: stores the derived state, rings the expiry
    /// alarm, counts, publishes the view version, fans out, and answers.
    fn announce(
        &mut self,
        records: Vec<Record>,
        effects: &[Arc<Effects>],
        outcomes: Vec<Outcome>,
        replies: Vec<oneshot::Sender<Result<Committed>>>,
    ) {
        if !records.is_empty() {
            // Each merged group in order: its state changes, then its view version.
            for effects in effects {
                let changes = effects.overlay.changed();
                if changes.is_empty() && effects.idempotency.is_empty() {
                    continue;
                }
                // Derived state: rebuilt by replay if this write is lost in a crash.
                if let Err(error) =
                    self.log
                        .apply_state(&changes, &effects.idempotency, effects.head)
                {
                    // The events are durable, so they are answered; but a later group's
                    // write would move the stored `applied` past this one, and replay at
                    // restart would then skip it: the stored states would stay wrong. So
                    // the writer accepts nothing more until a restart replays the log
                    // (the view in memory is applied below and stays right for reads).
                    tracing::error!(%error, "updating the stored state view failed; the writer stops accepting until a restart replays the log");
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
                self.view.apply(&changes, effects.head);
            }
            for record in &records {
                self.metrics
                    .published(record.meta.kind, record.meta.event_type);
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
