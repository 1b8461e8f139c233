//! The state view: every indicator's current state, on disk as of the latest
//! checkpoint plus, in memory, what changed since.
//!
//! Owns: what Lookup and the writer read. The stored states (the state store,
//! see `state_store`) are the view as of the latest checkpoint; the writer, after
//! each group is durable, applies the group's state changes to the in-memory
//! delta (a persistent ordered map, `imbl::OrdMap`: cloning a version is O(1))
//! and publishes the new [`Version`] (delta, the sequence it is applied up to,
//! the digest of the whole active set) through a `watch` channel. The
//! checkpointer (`read::checkpoint`) moves the delta into `frozen`, writes it
//! to disk in one batch, then drops `frozen`: a reader looks a key up in the
//! delta, then in `frozen`, then on disk, and always finds the newest state the
//! writer has published (disk is written before `frozen` is dropped).
//!
//! Memory is the delta (bounded by the checkpoint's triggers) plus the state
//! store's cache and filters, not the states themselves; Lookup of an indicator not changed since the
//! last checkpoint reads disk (blocking: async callers use `spawn_blocking`).
//! Snapshots do not read this delta: they stream a held checkpoint from disk
//! (`snapshot`, `checkpoint::Pins`). Must never be written by anyone but the
//! writer and the checkpointer, and never publish a version the log has not made
//! durable.

use std::sync::Arc;

use imbl::OrdMap;
use tokio::sync::watch;

use crate::checkpoint::{Checkpointer, Pins};
use crate::digest::Digest;
use crate::error::Result;
use crate::indicator::IndicatorKey;
use crate::log::Log;
use crate::state::IndicatorState;
use crate::state::StateChange;

/// Indicator states by key (kind, then value).
pub type States = OrdMap<IndicatorKey, Arc<IndicatorState>>;

/// States being written as a checkpoint.
#[derive(Debug)]
pub struct Frozen {
    pub states: States,
    /// The checkpoint's sequence: the delta was frozen when the view had
    /// applied every event up to it.
    pub applied: u64,
    /// The digest of the active set as of `applied`.
    pub digest: Digest,
}

/// The state view as of one sequence, over the latest checkpoint on disk.
#[derive(Clone, Debug, Default)]
pub struct Version {
    /// States changed since the delta was last frozen.
    pub delta: States,
    /// The checkpoint being written, if any.
    pub frozen: Option<Arc<Frozen>>,
    /// Every event up to this sequence is applied, none after it.
    pub applied: u64,
    /// The digest of the active indicators (see [`crate::digest`]).
    pub digest: Digest,
}

impl Version {
    /// The state of `key` held in memory (changed since the latest checkpoint).
    fn in_memory(&self, key: &IndicatorKey) -> Option<&Arc<IndicatorState>> {
        self.delta
            .get(key)
            .or_else(|| self.frozen.as_ref().and_then(|f| f.states.get(key)))
    }
}

/// The readers' handle; cheap to clone.
#[derive(Clone)]
pub struct View {
    versions: watch::Receiver<Arc<Version>>,
    log: Log,
    pins: Arc<Pins>,
}

impl View {
    /// The newest version (its delta; the rest is on disk).
    pub fn current(&self) -> Arc<Version> {
        self.versions.borrow().clone()
    }

    /// The current state of one indicator: from memory if it changed since the
    /// latest checkpoint, otherwise from disk (blocking).
    pub fn get(&self, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
        read(&self.current(), &self.log, key)
    }

    /// The checkpoints snapshots pin.
    pub fn pins(&self) -> &Arc<Pins> {
        &self.pins
    }

    /// The store the checkpoints are read from.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

fn read(version: &Version, log: &Log, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
    match version.in_memory(key) {
        Some(state) => Ok(Some(IndicatorState::clone(state))),
        None => log.indicator(key),
    }
}

/// The writer's handle: applies groups and publishes versions. Dropping it
/// stops the checkpointer.
pub struct ViewWriter {
    versions: Arc<watch::Sender<Arc<Version>>>,
    log: Log,
    checkpointer: Checkpointer,
}

impl ViewWriter {
    /// Opens the view on the latest checkpoint stored in `log` (its sequence
    /// and digest) and starts the checkpointer; the caller then replays the
    /// log's tail after [`ViewWriter::applied`].
    pub fn open(log: &Log) -> Result<(ViewWriter, View)> {
        let store = log.states();
        let version = Version {
            applied: store.applied()?,
            digest: store.digest()?,
            ..Version::default()
        };
        tracing::info!(
            checkpoint = version.applied,
            digest = %version.digest,
            "state view opened on its latest checkpoint"
        );
        let (sender, versions) = watch::channel(Arc::new(version.clone()));
        let sender = Arc::new(sender);
        let pins = Arc::new(Pins::new(store.hold(version.applied)));
        let checkpointer = Checkpointer::start(log.clone(), sender.clone(), pins.clone())?;
        Ok((
            ViewWriter {
                versions: sender,
                log: log.clone(),
                checkpointer,
            },
            View {
                versions,
                log: log.clone(),
                pins,
            },
        ))
    }

    /// The sequence the view has applied up to.
    pub fn applied(&self) -> u64 {
        self.versions.borrow().applied
    }

    /// The writer's own current state of one indicator (what it last applied;
    /// blocking: may read disk).
    pub fn get(&self, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
        let version = self.versions.borrow().clone();
        read(&version, &self.log, key)
    }

    /// Applies one group's durable state changes (each `before` is what
    /// [`ViewWriter::get`] gave) and publishes the new version; asks for a
    /// checkpoint when the delta has grown enough, and waits for one when it is
    /// at its cap (the writer's only back-pressure from checkpoints).
    pub fn apply(&mut self, changes: &[StateChange<'_>], applied: u64) {
        let mut delta = 0;
        self.versions.send_modify(|version| {
            let version = Arc::make_mut(version);
            for change in changes {
                version.digest.apply(change);
                version.delta.insert(
                    change.after.indicator.key.clone(),
                    Arc::new(change.after.clone()),
                );
            }
            version.applied = applied;
            delta = version.delta.len();
        });
        self.checkpointer.applied(delta, applied);
    }
}
