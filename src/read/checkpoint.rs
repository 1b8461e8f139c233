//! State checkpoints: the state view's in-memory delta written to disk in
//! batches, off the writer's path, and the pins that keep a checkpoint readable.
//!
//! Owns: when a checkpoint is written and which checkpoint a snapshot reads.
//! The checkpointer is a thread of its own. It writes a checkpoint when asked
//! (a snapshot wants one, or the delta holds [`CHECKPOINT_STATES`] states, or
//! [`CHECKPOINT_EVENTS`] events were applied since the last one) or every
//! [`CHECKPOINT_INTERVAL`] while anything changed: it freezes the delta (one
//! `watch` update: the view's readers then find those states in `frozen`),
//! writes them with the checkpoint's digest and sequence (`Log::checkpoint`,
//! in small batches so that sled's process-wide batch lock never stalls the
//! writer and the readers for long), then drops `frozen`. The log stays the truth: a
//! checkpoint lost in a crash is redone by replaying the tail at start. The
//! log is synced before each checkpoint is written, so a checkpoint is never
//! on disk ahead of the events it derives from (a cluster node's writer does
//! not sync its local copy per group).
//!
//! [`Pins`]: a snapshot streams the stored states as of one checkpoint while
//! later checkpoints overwrite them. While any checkpoint is pinned, a
//! checkpoint first keeps what it overwrites as undo entries, which readers of
//! the pinned checkpoint read instead, and which go once no pin needs them.
//! With no pin, no undo is written, and a new pin waits the few moments until
//! that write is done. Must never block the writer except when the delta is at
//! [`DELTA_CAP`] (memory bound), and never hold its lock across disk work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::log::Log;
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

/// The checkpoints readers hold, and the checkpointer's wake-ups.
pub struct Pins {
    state: Mutex<PinState>,
    changed: Condvar,
    /// The latest completed checkpoint (also in `state`; read without the lock).
    completed: AtomicU64,
}

#[derive(Default)]
struct PinState {
    /// Pinned checkpoint → how many readers hold it.
    pins: BTreeMap<u64, usize>,
    completed: u64,
    /// A checkpoint without undo entries is being written: no new pin until done.
    writing_unpinned: bool,
    /// Someone asked for a checkpoint now.
    wanted: bool,
    stopping: bool,
    /// The last checkpoint write failed (retried; pins wait meanwhile).
    failed: Option<String>,
}

/// A reader's hold on checkpoint [`Pin::at`]: its states stay readable as of it.
pub struct Pin {
    pins: Arc<Pins>,
    at: u64,
}

impl Pin {
    /// The pinned checkpoint's sequence.
    pub fn at(&self) -> u64 {
        self.at
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.pins.lock();
        if let Some(count) = state.pins.get_mut(&self.at) {
            *count -= 1;
            if *count == 0 {
                state.pins.remove(&self.at);
            }
        }
    }
}

impl Pins {
    pub fn new(completed: u64) -> Pins {
        Pins {
            state: Mutex::new(PinState {
                completed,
                ..PinState::default()
            }),
            changed: Condvar::new(),
            completed: AtomicU64::new(completed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest completed checkpoint's sequence.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Pins a checkpoint at or after `at_least`, asking for one and waiting
    /// for it if needed (blocking: async callers use `spawn_blocking`).
    pub fn pin(self: &Arc<Pins>, at_least: u64) -> Result<Pin> {
        let deadline = Instant::now() + PIN_TIMEOUT;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return Err(Error::Unavailable("the hub is stopping".into()));
            }
            if state.completed >= at_least && !state.writing_unpinned {
                break;
            }
            if state.completed < at_least && !state.wanted {
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
        let at = state.completed;
        *state.pins.entry(at).or_default() += 1;
        Ok(Pin {
            pins: self.clone(),
            at,
        })
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
    /// Stops the checkpointer (a checkpoint being written is finished; none is
    /// started: the next start replays the tail) and takes its store back, so
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
                return self.log;
            }
            last = Instant::now();
            let written = self.checkpoint();
            let mut state = self.pins.lock();
            state.writing_unpinned = false;
            match written {
                Ok(Some(applied)) => {
                    state.completed = applied;
                    state.failed = None;
                    self.pins.completed.store(applied, Ordering::Release);
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
    /// writes it; the checkpoint's sequence, or `None` when nothing changed.
    fn checkpoint(&self) -> Result<Option<u64>> {
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
        let (keep_undo, oldest_needed) = {
            let mut state = self.pins.lock();
            let keep_undo = !state.pins.is_empty();
            state.writing_unpinned = !keep_undo;
            let oldest = state.pins.keys().next().copied().unwrap_or(state.completed);
            (keep_undo, oldest)
        };
        let started = Instant::now();
        // The events (and per-group indexes) this checkpoint derives from are
        // made durable before it is written, so that after a crash the stored
        // checkpoint is never ahead of the log's head (in a cluster, the
        // writer does not sync its local copy per group).
        self.log.flush()?;
        let dropped = self.log.drop_undo(oldest_needed)?;
        let undo = self.log.checkpoint(
            &frozen
                .states
                .values()
                .map(|s| s.as_ref())
                .collect::<Vec<_>>(),
            frozen.applied,
            frozen.digest,
            keep_undo,
        )?;
        self.versions.send_modify(|version| {
            Arc::make_mut(version).frozen = None;
        });
        tracing::debug!(
            sequence = frozen.applied,
            states = frozen.states.len(),
            undo,
            dropped_undo = dropped,
            took_ms = started.elapsed().as_millis() as u64,
            "state checkpoint written"
        );
        Ok(Some(frozen.applied))
    }
}
