//! State checkpoints: the state view's in-memory delta written to disk off
//! the writer's path, and the latest checkpoint readers hold.
//!
//! Owns: when a checkpoint is written and which checkpoint a snapshot reads.
//! The checkpointer is a thread of its own. It writes a checkpoint when asked
//! (a snapshot wants one, or the delta holds [`CHECKPOINT_STATES`] states, or
//! [`CHECKPOINT_EVENTS`] events were applied since the last one) or every
//! [`CHECKPOINT_INTERVAL`] while anything changed: it freezes the delta (one
//! `watch` update: the view's readers then find those states in `frozen`),
//! writes them with the checkpoint's digest and sequence (one batch of the
//! state store, `state_store`, which readers never wait for), then drops
//! `frozen`. The log stays the truth: a checkpoint lost in a crash is redone by
//! replaying the tail at start. The log is synced before each checkpoint is
//! written, so a checkpoint is never on disk ahead of the events it derives
//! from (a cluster node's writer does not sync its local copy per group).
//!
//! [`Pins`]: after each checkpoint the checkpointer holds it (a snapshot of
//! the state store: its states stay readable as they were whatever later
//! checkpoints write, for as long as anyone holds it); a reader takes the
//! latest, or asks for a newer one and waits for it. Must never block the
//! writer except when the delta is at [`DELTA_CAP`] (memory bound), and never
//! hold its lock across disk work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::log::Log;
use crate::state_store::Checkpoint;
use crate::view::{Frozen, Version};

/// A delta of this many states asks for a checkpoint.
pub const CHECKPOINT_STATES: usize = 50_000;
/// This many events applied since the latest checkpoint ask for one (bounds
/// the tail replayed at start).
pub const CHECKPOINT_EVENTS: u64 = 250_000;
/// A checkpoint is written at least this often while anything changes.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// The writer waits for the checkpointer while the delta holds this many states.
pub const DELTA_CAP: usize = 4 * CHECKPOINT_STATES;
/// How long a snapshot waits for the checkpoint it asked for.
const PIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The latest checkpoint, which readers take, and the checkpointer's wake-ups.
pub struct Pins {
    state: Mutex<PinState>,
    changed: Condvar,
    /// The latest completed checkpoint's sequence (also in `state`; read
    /// without the lock).
    completed: AtomicU64,
}

struct PinState {
    /// The latest completed checkpoint, held.
    latest: Checkpoint,
    /// Someone asked for a checkpoint now.
    wanted: bool,
    stopping: bool,
    /// The last checkpoint write failed (retried; readers wait meanwhile).
    failed: Option<String>,
}

impl Pins {
    /// `latest`: the stored checkpoint, held (the stored states are always
    /// exactly one whole checkpoint).
    pub fn new(latest: Checkpoint) -> Pins {
        Pins {
            completed: AtomicU64::new(latest.at),
            state: Mutex::new(PinState {
                latest,
                wanted: false,
                stopping: false,
                failed: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest completed checkpoint's sequence.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Holds a checkpoint at or after `at_least`, asking for one and waiting
    /// for it if needed (blocking: async callers use `spawn_blocking`).
    pub fn pin(&self, at_least: u64) -> Result<Checkpoint> {
        let deadline = Instant::now() + PIN_TIMEOUT;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return Err(Error::Unavailable("the hub is stopping".into()));
            }
            if state.latest.at >= at_least {
                return Ok(state.latest.clone());
            }
            if !state.wanted {
                state.wanted = true;
                self.changed.notify_all();
            }
            let now = Instant::now();
            if now >= deadline {
                let problem = state
                    .failed
                    .clone()
                    .unwrap_or_else(|| "still writing".into());
                return Err(Error::Unavailable(format!(
                    "the state checkpoint the snapshot needs did not complete within {}s ({problem})",
                    PIN_TIMEOUT.as_secs()
                )));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Asks for a checkpoint now.
    fn want(&self) {
        let mut state = self.lock();
        if !state.wanted {
            state.wanted = true;
            self.changed.notify_all();
        }
    }
}

/// The writer's handle on the checkpointer thread; dropping it stops the thread.
pub struct Checkpointer {
    pins: Arc<Pins>,
    versions: Arc<watch::Sender<Arc<Version>>>,
    /// Hands its store back when it ends (see `Drop`).
    thread: Option<std::thread::JoinHandle<Log>>,
}

impl Checkpointer {
    pub fn start(
        log: Log,
        versions: Arc<watch::Sender<Arc<Version>>>,
        pins: Arc<Pins>,
    ) -> Result<Checkpointer> {
        let worker = Worker {
            log,
            versions: versions.clone(),
            pins: pins.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("dip-checkpoint".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::io("starting the checkpoint thread", e))?;
        Ok(Checkpointer {
            pins,
            versions,
            thread: Some(thread),
        })
    }

    /// Told by the writer after each group: the delta holds `delta` states and
    /// the view is applied up to `applied`. Asks for a checkpoint when one is
    /// due; at [`DELTA_CAP`] waits until the checkpointer has taken the delta.
    pub fn applied(&self, delta: usize, applied: u64) {
        let behind = applied.saturating_sub(self.pins.completed());
        if delta < CHECKPOINT_STATES && behind < CHECKPOINT_EVENTS {
            return;
        }
        self.pins.want();
        if delta < DELTA_CAP {
            return;
        }
        let mut state = self.pins.lock();
        while !state.stopping && self.versions.borrow().delta.len() >= DELTA_CAP {
            state.wanted = true;
            self.pins.changed.notify_all();
            state = self
                .pins
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the checkpointer (after a last checkpoint of what the view has
    /// applied) and takes its store back, so
    /// that sled's last handle is never dropped on the checkpoint thread: the
    /// owner of the hub closes the database (sled flushes on the last drop).
    fn drop(&mut self) {
        {
            let mut state = self.pins.lock();
            state.stopping = true;
            self.pins.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(log) => drop(log),
                Err(_) => tracing::error!("the checkpoint thread panicked"),
            }
        }
    }
}

struct Worker {
    log: Log,
    versions: Arc<watch::Sender<Arc<Version>>>,
    pins: Arc<Pins>,
}

impl Worker {
    fn run(self) -> Log {
        let mut last = Instant::now();
        loop {
            let stopping = {
                let mut state = self.pins.lock();
                loop {
                    let elapsed = last.elapsed();
                    if state.wanted || state.stopping || elapsed >= CHECKPOINT_INTERVAL {
                        break;
                    }
                    state = self
                        .pins
                        .changed
                        .wait_timeout(state, CHECKPOINT_INTERVAL - elapsed)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                state.wanted = false;
                state.stopping
            };
            if stopping {
                // A last checkpoint, so that the next start has no tail to
                // replay (writing it costs less than replaying it: up to
                // [`DELTA_CAP`] states in one batch against that many events).
                if let Err(error) = self.checkpoint() {
                    tracing::warn!(%error, "the last state checkpoint before stopping failed; the next start replays the tail");
                }
                return self.log;
            }
            last = Instant::now();
            let written = self.checkpoint();
            let mut state = self.pins.lock();
            match written {
                Ok(Some(held)) => {
                    state.failed = None;
                    self.pins.completed.store(held.at, Ordering::Release);
                    state.latest = held;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "writing a state checkpoint failed; retrying");
                    state.failed = Some(error.to_string());
                }
            }
            self.pins.changed.notify_all();
        }
    }

    /// Freezes the delta (or takes the frozen one a failed write left) and
    /// writes it; the checkpoint, held, or `None` when nothing changed.
    fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let completed = self.pins.completed();
        let mut frozen = None;
        self.versions.send_if_modified(|version| {
            if let Some(left) = &version.frozen {
                frozen = Some(left.clone());
                return false;
            }
            if version.applied <= completed {
                return false;
            }
            let version = Arc::make_mut(version);
            let taken = Arc::new(Frozen {
                states: std::mem::take(&mut version.delta),
                applied: version.applied,
                digest: version.digest,
            });
            version.frozen = Some(taken.clone());
            frozen = Some(taken);
            true
        });
        let Some(frozen) = frozen else {
            return Ok(None);
        };
        // Wake a writer waiting at the cap: the delta is empty now.
        self.pins.changed.notify_all();
        let started = Instant::now();
        // The events (and per-group indexes) this checkpoint derives from are
        // made durable before it is written, so that after a crash the stored
        // checkpoint is never ahead of the log's head (in a cluster, the
        // writer does not sync its local copy per group).
        self.log.flush()?;
        let states: Vec<_> = frozen.states.values().map(|s| s.as_ref()).collect();
        let store = self.log.states();
        store.checkpoint(&states, frozen.applied, frozen.digest)?;
        let held = store.hold(frozen.applied);
        self.versions.send_modify(|version| {
            Arc::make_mut(version).frozen = None;
        });
        tracing::debug!(
            sequence = frozen.applied,
            states = frozen.states.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "state checkpoint written"
        );
        Ok(Some(held))
    }
}
