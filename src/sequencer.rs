//! The sequencer: the hub's one writer.
//!
//! Owns: invariants 1 and 2. A single thread takes authorized submissions, gives
//! their events the next sequences (1, 2, 3 ... no gaps), appends them to the log,
//! and commits many submissions with one flush (group commit). Only after the
//! flush does it apply the events to the state view (stored, and published in
//! memory as a new `view` version), move the durable head, fan them out, and answer. At start it replays the log into the state view, so a
//! crash between flush and apply loses nothing. Must never answer before the
//! flush, and never run on an async worker (it blocks on disk).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::expiry::Alarm;
use crate::feed::Feed;
use crate::fingerprint::{self, Fingerprint};
use crate::frame;
use crate::indicator::{
    Action, Event, EventType, Indicator, IndicatorKey, Millis, Source, now_millis,
};
use crate::log::{
    IdempotencyEntry, IdempotencyMark, IdempotentHit, Log, Record, RecordMeta, StateChange,
};
use crate::metrics::Metrics;
use crate::policy::Permit;
use crate::state::{self, IndicatorState};
use crate::view::{View, ViewWriter};
use crate::wire;

/// Most submissions committed with one flush.
const MAX_GROUP_SUBMISSIONS: usize = 1024;
/// Most events committed with one flush (a group closes once it reaches this).
const MAX_GROUP_EVENTS: usize = 16 * 1024;
/// Submissions waiting for the writer before publishers are pushed back.
const QUEUE_DEPTH: usize = 4096;
/// Records replayed into the state view per batch at start.
const REPLAY_BATCH: usize = 4096;

/// One change a submission asks for.
#[derive(Clone, Debug)]
pub enum Change {
    Publish(Indicator),
    Revoke { key: IndicatorKey, reason: String },
    Action { key: IndicatorKey, action: Action },
    Expire { key: IndicatorKey },
}

/// Changes from one organisation, committed all-or-nothing.
#[derive(Clone, Debug)]
pub struct Submission {
    pub source: Source,
    pub changes: Vec<Change>,
    pub idempotency_key: Option<String>,
}

/// Where an event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef {
    pub sequence: u64,
    pub event_id: Uuid,
    pub event_type: EventType,
}

/// The answer to a submission: its events, durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub events: Vec<EventRef>,
    /// The answer replays an earlier submission with the same idempotency key.
    pub replayed: bool,
}

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
        let head = log.head()?;
        replay(&log, head)?;
        let (view_writer, view) = ViewWriter::load(&log)?;
        let feed = Feed::new(feed_capacity, head);
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let alarm = Arc::new(Alarm::default());
        let writer = Writer {
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

    /// The state view the writer publishes a version of after each group.
    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// Rung by the writer when it stores a valid_until (see `expiry`).
    pub fn expiry_alarm(&self) -> Arc<Alarm> {
        self.alarm.clone()
    }

    /// Commits a submission; answers once its events are durable.
    pub async fn submit(&self, _permit: Permit, submission: Submission) -> Result<Committed> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { submission, reply })
            .await
            .map_err(|_| Error::Unavailable("the hub's writer has stopped".into()))?;
        answer
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
            view.apply(log, &event)?;
        }
        log.apply_state(&view.changed(), &idempotency, last)?;
        applied = last;
    }
    Ok(())
}

/// Indicator states changed by the events of one group, over the current view:
/// for each indicator touched, its state before the group and its new one. The
/// states before come from the writer's in-memory view (from the stored view
/// during replay, before the in-memory one exists).
#[derive(Default)]
struct StateOverlay {
    states: HashMap<IndicatorKey, (Option<IndicatorState>, Option<IndicatorState>)>,
}

impl StateOverlay {
    fn get(
        &mut self,
        key: &IndicatorKey,
        before: impl FnOnce(&IndicatorKey) -> Result<Option<IndicatorState>>,
    ) -> Result<Option<IndicatorState>> {
        if let Some((_, current)) = self.states.get(key) {
            return Ok(current.clone());
        }
        let stored = before(key)?;
        self.states
            .insert(key.clone(), (stored.clone(), stored.clone()));
        Ok(stored)
    }

    fn set(&mut self, key: &IndicatorKey, state: Option<IndicatorState>) {
        if let Some((_, current)) = self.states.get_mut(key) {
            *current = state;
        }
    }

    fn apply(&mut self, log: &Log, event: &Event) -> Result<()> {
        let current = self.get(&event.indicator.key, |key| log.indicator(key))?;
        self.set(&event.indicator.key, state::apply(current, event));
        Ok(())
    }

    /// What changed, for the log to store (with any index kept beside the states).
    fn changed(&self) -> Vec<StateChange<'_>> {
        self.states
            .values()
            .filter_map(|(before, after)| {
                let after = after.as_ref()?;
                (before.as_ref() != Some(after)).then_some(StateChange {
                    before: before.as_ref(),
                    after,
                })
            })
            .collect()
    }
}

struct Writer {
    log: Log,
    view: ViewWriter,
    /// Told of every valid_until stored, so expiry wakes in time.
    alarm: Arc<Alarm>,
    feed: Feed,
    metrics: Metrics,
    /// The newest sequence appended.
    head: u64,
    /// Set when storage failed mid-commit: the writer refuses everything after.
    broken: Arc<AtomicBool>,
}

/// A submission of this group and what becomes of it.
enum Outcome {
    Appended {
        reply: oneshot::Sender<Result<Committed>>,
        events: Vec<EventRef>,
    },
    Replay {
        reply: oneshot::Sender<Result<Committed>>,
        hit: IdempotentHit,
    },
    Refused {
        reply: oneshot::Sender<Result<Committed>>,
        error: Error,
    },
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
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
            self.commit_group(jobs);
        }
        tracing::info!(head = self.head, "writer stopped");
    }

    fn commit_group(&mut self, jobs: Vec<Job>) {
        if self.broken.load(Ordering::Acquire) {
            for job in jobs {
                let _ = job.reply.send(Err(Error::Unavailable(
                    "the hub's storage failed; it must be restarted".into(),
                )));
            }
            return;
        }
        let mut overlay = StateOverlay::default();
        let mut records = Vec::new();
        let mut idempotency = Vec::new();
        let mut group_keys: HashMap<(String, String), IdempotentHit> = HashMap::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let now = now_millis();

        for Job { submission, reply } in jobs {
            let key = submission
                .idempotency_key
                .clone()
                .map(|k| (submission.source.org_id.clone(), k));
            let fingerprint = key.as_ref().map(|_| fingerprint::of(&submission.changes));
            let earlier = match &key {
                Some(key) => match group_keys.get(key) {
                    Some(hit) => Ok(Some(*hit)),
                    None => self.log.idempotent(&key.0, &key.1),
                },
                None => Ok(None),
            }
            .and_then(|hit| match (hit, &key) {
                (Some(hit), Some((_, key))) => same_request(key, hit, fingerprint).map(Some),
                (hit, _) => Ok(hit),
            });
            match earlier {
                Err(error) => outcomes.push(Outcome::Refused { reply, error }),
                Ok(Some(hit)) => outcomes.push(Outcome::Replay { reply, hit }),
                Ok(None) => match self.sequence(&mut overlay, &submission, now) {
                    Err(error) => outcomes.push(Outcome::Refused { reply, error }),
                    Ok(sequenced) => {
                        let (events, owners): (Vec<Event>, Vec<String>) =
                            sequenced.into_iter().unzip();
                        let first_sequence = events.first().map_or(0, |e| e.sequence);
                        let count = events.len() as u32;
                        if let Some((org_id, key)) = key {
                            let hit = IdempotentHit {
                                first_sequence,
                                count,
                                fingerprint,
                            };
                            group_keys.insert((org_id.clone(), key.clone()), hit);
                            idempotency.push(IdempotencyEntry { org_id, key, hit });
                        }
                        let refs = events
                            .iter()
                            .map(|e| EventRef {
                                sequence: e.sequence,
                                event_id: e.event_id,
                                event_type: e.event_type,
                            })
                            .collect();
                        for (index, (event, owner)) in events.iter().zip(owners).enumerate() {
                            let mark = match (&submission.idempotency_key, index) {
                                (Some(key), 0) => Some(IdempotencyMark {
                                    key: key.clone(),
                                    count,
                                    fingerprint,
                                }),
                                _ => None,
                            };
                            records.push(record_of(event, owner, mark));
                        }
                        outcomes.push(Outcome::Appended {
                            reply,
                            events: refs,
                        });
                    }
                },
            }
        }

        if !records.is_empty() {
            let durable = self.log.append(&records).and_then(|()| self.log.flush());
            if let Err(error) = durable {
                tracing::error!(%error, "appending to the log failed; the writer stops accepting");
                self.broken.store(true, Ordering::Release);
                for outcome in outcomes {
                    let (Outcome::Appended { reply, .. }
                    | Outcome::Replay { reply, .. }
                    | Outcome::Refused { reply, .. }) = outcome;
                    let _ = reply.send(Err(Error::Unavailable(
                        "the hub could not store the events; nothing was acknowledged".into(),
                    )));
                }
                return;
            }
            // Derived state: rebuilt by replay if this write is lost in a crash.
            let changes = overlay.changed();
            if let Err(error) = self.log.apply_state(&changes, &idempotency, self.head) {
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
            for record in &records {
                self.metrics
                    .published(record.meta.kind, record.meta.event_type);
            }
            self.view.apply(&changes, self.head);
            self.feed.publish(records, self.head);
        }

        for outcome in outcomes {
            match outcome {
                Outcome::Appended { reply, events } => {
                    let _ = reply.send(Ok(Committed {
                        events,
                        replayed: false,
                    }));
                }
                Outcome::Replay { reply, hit } => {
                    let _ = reply.send(self.replayed(hit));
                }
                Outcome::Refused { reply, error } => {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// Turns a submission's changes into events with the next sequences, applying
    /// them to the group's overlay; all or nothing. Each event comes with the
    /// organisation whose TLP marking governs who sees it (see [`record_of`]).
    fn sequence(
        &mut self,
        overlay: &mut StateOverlay,
        submission: &Submission,
        now: Millis,
    ) -> Result<Vec<(Event, String)>> {
        // Current states of the indicators touched, to restore if a change is refused.
        let mut undo: HashMap<IndicatorKey, Option<IndicatorState>> = HashMap::new();
        let mut events = Vec::with_capacity(submission.changes.len());
        let mut next = self.head;
        let view = &self.view;
        for change in &submission.changes {
            next += 1;
            let key = change_key(change);
            let outcome = overlay
                .get(key, |key| Ok(view.get(key)))
                .and_then(|current| {
                    undo.entry(key.clone()).or_insert_with(|| current.clone());
                    let event = event_for(change, current.as_ref(), &submission.source, next, now)?;
                    let owner = match (change, &current) {
                        (Change::Publish(_), _) | (_, None) => submission.source.org_id.clone(),
                        (_, Some(state)) => state.source_org.clone(),
                    };
                    overlay.set(key, state::apply(current, &event));
                    Ok((event, owner))
                });
            match outcome {
                Ok(event) => events.push(event),
                Err(error) => {
                    for (key, state) in undo {
                        overlay.set(&key, state);
                    }
                    return Err(error);
                }
            }
        }
        self.head = next;
        Ok(events)
    }

    /// The answer first given to a submission with the same idempotency key.
    fn replayed(&self, hit: IdempotentHit) -> Result<Committed> {
        let last = hit.first_sequence + u64::from(hit.count).saturating_sub(1);
        let records = self
            .log
            .read(hit.first_sequence, last, hit.count as usize, usize::MAX)?;
        let events = records
            .iter()
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

/// An earlier submission with the same key is replayed only for the same
/// request; the key reused for another request is refused, naming where it was
/// first used (a key stored before fingerprints replays whatever comes).
fn same_request(
    key: &str,
    hit: IdempotentHit,
    fingerprint: Option<Fingerprint>,
) -> Result<IdempotentHit> {
    match hit.fingerprint {
        Some(first) if Some(first) != fingerprint => Err(Error::FailedPrecondition(format!(
            "idempotency_key: {key:?} was first used at sequence {} for a different request; \
             a key replays only the request it was first used for (same RPC, indicators \
             and fields): use a new key for a new request",
            hit.first_sequence
        ))),
        _ => Ok(hit),
    }
}

fn change_key(change: &Change) -> &IndicatorKey {
    match change {
        Change::Publish(indicator) => &indicator.key,
        Change::Revoke { key, .. } | Change::Action { key, .. } | Change::Expire { key } => key,
    }
}

/// The event a change makes, given the indicator's current state.
fn event_for(
    change: &Change,
    current: Option<&IndicatorState>,
    source: &Source,
    sequence: u64,
    time: Millis,
) -> Result<Event> {
    let active = || match current {
        Some(state) if state.is_active() => Ok(state),
        Some(_) => Err(Error::FailedPrecondition(format!(
            "{} is no longer active (revoked or expired)",
            change_key(change)
        ))),
        None => Err(Error::NotFound(format!(
            "{} is not known to the hub",
            change_key(change)
        ))),
    };
    let (event_type, indicator, reason, action) = match change {
        Change::Publish(indicator) => (
            state::classify_publish(current, &source.org_id),
            indicator.clone(),
            String::new(),
            None,
        ),
        Change::Revoke { reason, .. } => (
            EventType::Revoked,
            active()?.indicator.clone(),
            reason.clone(),
            None,
        ),
        Change::Action { action, .. } => (
            EventType::ActionTaken,
            active()?.indicator.clone(),
            String::new(),
            Some(action.clone()),
        ),
        Change::Expire { .. } => {
            let state = active()?;
            // The hub expires only what is due: valid_until may have been
            // extended by a report committed since the expiry scan.
            if state.indicator.valid_until.is_none_or(|at| at > time) {
                return Err(Error::FailedPrecondition(format!(
                    "{} is not due to expire",
                    change_key(change)
                )));
            }
            (
                EventType::Expired,
                state.indicator.clone(),
                String::new(),
                None,
            )
        }
    };
    Ok(Event {
        sequence,
        event_id: Uuid::now_v7(),
        event_type,
        indicator,
        source: source.clone(),
        time,
        reason,
        action,
    })
}

/// The stored record of an event. Its metadata's `source_org` is the
/// organisation whose TLP marking governs visibility (`policy::may_see`): the
/// publisher for a report (its own marking), but the indicator's source for a
/// lifecycle event (REVOKED, EXPIRED, ACTION_TAKEN), which carries the indicator
/// as it stands: the source of a TLP:RED indicator sees it revoked by the
/// regulator or expired by the hub. The event itself names who acted.
fn record_of(event: &Event, owner: String, idempotency: Option<IdempotencyMark>) -> Record {
    Record {
        sequence: event.sequence,
        meta: RecordMeta {
            kind: event.indicator.key.kind,
            category: event.indicator.category,
            risk: event.indicator.risk,
            tlp: event.indicator.tlp,
            event_type: event.event_type,
            source_org: owner,
        },
        idempotency,
        entry: frame::encode_event_entry(&wire::event_to_proto(event)),
    }
}
