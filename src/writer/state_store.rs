//! The state store: every indicator's state as of the latest checkpoint, in an
//! LSM tree (fjall) beside the sled log.
//!
//! Owns: the only handle on fjall. One keyspace, `states`: indicator key (kind
//! byte, then the normalized value) → the wire encoding of its
//! `IndicatorState`, and two entries above every indicator key: the sequence
//! of the latest checkpoint and the digest of its active set. A checkpoint
//! (every state changed since the one before, its digest and its sequence) is
//! one fjall batch, which fjall makes visible and recovers atomically: after
//! a crash the store is some earlier checkpoint, whole. Not synced: the log is
//! the truth, and a checkpoint lost in a crash is redone by replaying the
//! log's tail at start (the log is synced before each checkpoint is written,
//! so a stored checkpoint is never ahead of the events it derives from).
//!
//! Why not sled, which holds the log: at 30 million indicators sled 0.34 read
//! state pages from disk through a tree descent per leaf (Lookup p99 8.8 ms),
//! its node handling was half of a snapshot's time (216,000 states/s), and it
//! rebuilt its page table of a 19 GiB database at every start (18.9 s); a
//! checkpoint also had to keep undo entries for snapshots still reading an
//! earlier one. fjall's sorted tables, bloom filters (a key never stored is
//! answered without reading a table) and snapshots (a checkpoint read as it
//! was, whatever later checkpoints write) serve what the state view needs.
//!
//! Must never be written by anyone but the checkpointer (and start-up), and
//! never be called from an async task directly (every call may read disk).

use std::ops::Bound;
use std::path::Path;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::indicator::{IndicatorKey, Kind};
use crate::log::sequence_from_key;
use crate::state::IndicatorState;
use crate::wire::{self, StateHead};

/// Stored indicator states have keys below this byte (a key starts with its
/// kind, 1..=9); the store's own entries are above.
pub const INDICATOR_KEYS_END: u8 = 0xF0;
/// The latest checkpoint's sequence (u64 big-endian).
const APPLIED_KEY: &[u8] = &[0xFF, b'a', b'p', b'p', b'l', b'i', b'e', b'd'];
/// The digest of the latest checkpoint's active set (see `digest`).
const DIGEST_KEY: &[u8] = &[0xFF, b'd', b'i', b'g', b'e', b's', b't'];
/// fjall's block cache (sled keeps its own 256 MiB for the log).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Journal kept before memtables are flushed to tables: bounds what a start
/// replays into memory.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// A memtable this large is flushed to a table.
const MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;

/// The stored states as of one checkpoint, readable for as long as it is held
/// whatever later checkpoints write. Cheap to clone.
#[derive(Clone)]
pub struct Checkpoint {
    /// The checkpoint's sequence.
    pub at: u64,
    snapshot: fjall::Snapshot,
}

#[derive(Clone)]
pub struct StateStore {
    db: Database,
    states: Keyspace,
}

impl StateStore {
    /// Opens (or creates) the store in `dir`; also says whether it was new.
    pub fn open(dir: &Path) -> Result<(StateStore, bool)> {
        let created = !dir.exists();
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        // Filters and block indexes stay in memory at every level (fjall's
        // default keeps them only for the first levels): through the cache, a
        // lookup at 30 million indicators evicted and read back a table's whole
        // filter block (1,000 lookups/s with the hub on 1.5 cores). Their size
        // is a few bytes per indicator.
        let states = db.keyspace("states", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .filter_block_pinning_policy(PinningPolicy::all(true))
                .index_block_pinning_policy(PinningPolicy::all(true))
        })?;
        Ok((StateStore { db, states }, created))
    }

    /// The state of one indicator as of the latest checkpoint.
    pub fn get(&self, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
        self.states
            .get(key.to_bytes())?
            .map(|bytes| wire::decode_state(&bytes))
            .transpose()
    }

    /// The sequence of the latest checkpoint (0: none yet).
    pub fn applied(&self) -> Result<u64> {
        match self.states.get(APPLIED_KEY)? {
            Some(bytes) => sequence_from_key(&bytes),
            None => Ok(0),
        }
    }

    /// The digest of the active indicators as of the latest checkpoint.
    pub fn digest(&self) -> Result<Digest> {
        match self.states.get(DIGEST_KEY)? {
            Some(bytes) => Digest::from_stored(&bytes).ok_or_else(|| Error::Corrupt {
                sequence: 0,
                problem: format!("the stored digest has {} bytes, not 32", bytes.len()),
            }),
            None => Ok(Digest::EMPTY),
        }
    }

    /// Writes a checkpoint: `states` (every state changed since the previous
    /// checkpoint) become the stored states as of sequence `applied`, whose
    /// active set has `digest`; all of it in one batch, visible and recovered
    /// at once.
    pub fn checkpoint(
        &self,
        states: &[&IndicatorState],
        applied: u64,
        digest: Digest,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        for state in states {
            batch.insert(
                &self.states,
                state.indicator.key.to_bytes(),
                wire::encode_state(state),
            );
        }
        batch.insert(&self.states, DIGEST_KEY, digest.to_bytes().to_vec());
        batch.insert(&self.states, APPLIED_KEY, applied.to_be_bytes().to_vec());
        batch.commit()?;
        Ok(())
    }

    /// The stored states as they are now, held as checkpoint `at` (the caller
    /// knows no checkpoint is being written).
    pub fn hold(&self, at: u64) -> Checkpoint {
        Checkpoint {
            at,
            snapshot: self.db.snapshot(),
        }
    }

    /// Visits the stored states of `checkpoint` with keys in `from..to`, in
    /// key order, at most `max_examined`: each as the few fields read from it
    /// and its stored bytes (the wire encoding a snapshot sends as it is).
    /// Returns, when keys may remain, the last key visited (continue after it).
    pub fn states_in(
        &self,
        checkpoint: &Checkpoint,
        from: Bound<Vec<u8>>,
        to: &[u8],
        max_examined: usize,
        mut visit: impl FnMut(StateHead, &[u8]),
    ) -> Result<Option<Vec<u8>>> {
        let mut examined = 0;
        let range = (from, Bound::Excluded(to.to_vec()));
        for item in checkpoint.snapshot.range(&self.states, range) {
            let (key, value) = item.into_inner()?;
            visit(wire::decode_state_head(&value)?, &value);
            examined += 1;
            if examined >= max_examined {
                return Ok(Some(key.to_vec()));
            }
        }
        Ok(None)
    }

    /// A key about halfway between the first and the last stored state of
    /// `checkpoint` in `from..to` (by the first 8 bytes after their common
    /// prefix, read as a number), to read the range in two parts; `None` when
    /// the range holds fewer than two states.
    pub fn middle(
        &self,
        checkpoint: &Checkpoint,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let mut range = checkpoint.snapshot.range(&self.states, from..to);
        let (Some(first), Some(last)) = (range.next(), range.next_back()) else {
            return Ok(None);
        };
        let (first, last) = (first.key()?, last.key()?);
        let common = first
            .iter()
            .zip(last.iter())
            .take_while(|(a, b)| a == b)
            .count();
        let number = |key: &[u8]| {
            let mut bytes = [0u8; 8];
            for (byte, from) in bytes.iter_mut().zip(key.iter().skip(common)) {
                *byte = *from;
            }
            u64::from_be_bytes(bytes)
        };
        let (low, high) = (number(&first), number(&last));
        let mut middle = first[..common].to_vec();
        middle.extend_from_slice(&(low + (high - low) / 2).to_be_bytes());
        Ok((middle.as_slice() > &first[..] && middle.as_slice() <= &last[..]).then_some(middle))
    }

    /// Every stored indicator state, in key order (kind, then value).
    pub fn indicators(&self) -> impl Iterator<Item = Result<IndicatorState>> + use<> {
        let first = [Kind::PhoneNumber as i32 as u8];
        self.states
            .range(first..[INDICATOR_KEYS_END])
            .map(|item| wire::decode_state(&item.into_inner()?.1))
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Category, Indicator, Risk, Status, Tlp};
    use crate::proto;

    fn state(value: &str, status: Status, last_sequence: u64) -> IndicatorState {
        IndicatorState {
            indicator: Indicator {
                key: IndicatorKey {
                    kind: Kind::PhoneNumber,
                    value: value.into(),
                },
                category: Category::FraudCall,
                risk: Risk::High,
                description: String::new(),
                valid_until: None,
                tlp: Tlp::Green,
            },
            status,
            source_org: "police".into(),
            reporters: Default::default(),
            first_seen: 0,
            last_seen: 0,
            actions: Vec::new(),
            history_length: 1,
            last_sequence,
            revoke_reason: String::new(),
        }
    }

    /// A held checkpoint reads exactly as it was while later checkpoints
    /// replace and add states; each state comes as its stored bytes (the wire
    /// type) with a head that agrees; pages continue after the last key.
    #[test]
    fn a_held_checkpoint_reads_as_it_was_while_later_ones_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, created) = StateStore::open(&dir.path().join("states")).expect("open");
        assert!(created);
        let a1 = state("+911", Status::Active, 1);
        let b2 = state("+912", Status::Active, 2);
        let mut at_2 = Digest::EMPTY;
        at_2.add(&a1.indicator.key);
        at_2.add(&b2.indicator.key);
        store
            .checkpoint(&[&a1, &b2], 2, at_2)
            .expect("checkpoint 2");
        let held = store.hold(2);
        let a3 = state("+911", Status::Revoked, 3);
        let c4 = state("+913", Status::Active, 4);
        store
            .checkpoint(&[&a3, &c4], 4, Digest::EMPTY)
            .expect("checkpoint 4");
        let now = store.hold(4);

        // Each state as its stored bytes, decoded as the wire type; its head
        // agrees.
        let read = |checkpoint: &Checkpoint, from: Bound<Vec<u8>>, max: usize| {
            let mut states = Vec::new();
            let next = store
                .states_in(
                    checkpoint,
                    from,
                    &[INDICATOR_KEYS_END],
                    max,
                    |head, bytes| {
                        let state = <proto::IndicatorState as prost::Message>::decode(bytes)
                            .expect("decodes");
                        assert_eq!(head.last_sequence, state.last_sequence);
                        states.push(state);
                    },
                )
                .expect("read");
            (states, next)
        };
        let wire = |states: &[&IndicatorState]| -> Vec<proto::IndicatorState> {
            states.iter().map(|s| wire::state_to_proto(s)).collect()
        };
        let first = || Bound::Included(vec![1]);
        assert_eq!(read(&held, first(), 100), (wire(&[&a1, &b2]), None));
        assert_eq!(read(&now, first(), 100), (wire(&[&a3, &b2, &c4]), None));
        // Paging: one key at a time, continuing after the last key examined.
        let (page, next) = read(&held, first(), 1);
        assert_eq!(page, wire(&[&a1]));
        let (page, _) = read(&held, Bound::Excluded(next.expect("more")), 1);
        assert_eq!(page, wire(&[&b2]));
        // The latest checkpoint's sequence and digest, also after a reopen.
        drop((held, now));
        assert_eq!(store.applied().expect("applied"), 4);
        drop(store);
        let (store, created) = StateStore::open(&dir.path().join("states")).expect("reopen");
        assert!(!created);
        assert_eq!(store.applied().expect("applied"), 4);
        assert_eq!(store.digest().expect("digest"), Digest::EMPTY);
        assert_eq!(
            store.get(&a1.indicator.key).expect("get"),
            Some(a3),
            "the newest state"
        );
        assert_eq!(
            store.indicators().count(),
            3,
            "its own entries are not states"
        );
    }

    /// Read in two parts cut at `middle`, a range holds each state once, and
    /// both parts hold some.
    #[test]
    fn a_range_read_in_two_parts_cut_at_its_middle_holds_each_state_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = StateStore::open(&dir.path().join("states")).expect("open");
        let states: Vec<_> = (0..1000)
            .map(|n| {
                state(
                    &format!("+9190{:08}", n * 7919 % 100_000),
                    Status::Active,
                    n,
                )
            })
            .collect();
        store
            .checkpoint(&states.iter().collect::<Vec<_>>(), 1000, Digest::EMPTY)
            .expect("checkpoint");
        let held = store.hold(1000);
        let (from, to) = (vec![1u8], vec![INDICATOR_KEYS_END]);
        let middle = store
            .middle(&held, &from, &to)
            .expect("middle")
            .expect("a range of 1,000 states has a middle");
        let count = |from: Vec<u8>, to: &[u8]| {
            let mut count = 0;
            let next = store
                .states_in(&held, Bound::Included(from), to, usize::MAX, |_, _| {
                    count += 1
                })
                .expect("read");
            assert_eq!(next, None);
            count
        };
        let (low, high) = (count(from.clone(), &middle), count(middle.clone(), &to));
        assert_eq!(low + high, 1000);
        assert!(low > 300 && high > 300, "about halves: {low} and {high}");
        let single = [state("+911", Status::Active, 1)];
        let (other, _) = StateStore::open(&dir.path().join("other")).expect("open");
        other
            .checkpoint(&[&single[0]], 1, Digest::EMPTY)
            .expect("checkpoint");
        assert_eq!(
            other.middle(&other.hold(1), &from, &to).expect("middle"),
            None,
            "one state is not cut"
        );
    }
}
