//! The durable log and everything else the hub keeps on disk, in sled.
//!
//! Owns: the only handle on sled. Trees:
//! - `events`: first sequence (u64 big-endian) → a block of consecutive records
//!   (each its filter metadata + the event's pre-encoded wire entry; see
//!   `block`: a group's records in blocks of a few KiB; a per-event record of
//!   earlier versions reads as a block of one). The truth: everything else can
//!   be rebuilt from it.
//! - `state`: derived from `events`, written per group: the idempotency index
//!   and the expiry index (when each active indicator's valid_until passes), in
//!   key spaces of their own. (The indicator states themselves are in the state
//!   store beside sled, `states/`: see `state_store`; earlier versions kept
//!   them in this tree, and a database opened with a new state store has them
//!   removed from it, see [`Log::open`].)
//! - `cursors`: durable consumers' acknowledged sequences.
//! - `orgs`: organisation registry changes made at run time by the regulator
//!   (org id → the change, encoded by `admin`); they override the registry file.
//! - `audit`: the audit trail of lookups (time ms ‖ counter, both big-endian →
//!   the entry, encoded by `audit`), in time order.
//!
//! Durability: sled's own `flush` on Linux ends in `sync_file_range`, which
//! neither empties the disk's write cache nor writes the file's size, so every
//! write that is acknowledged ([`Log::flush`], [`Log::store_org`]) then waits for
//! a real `fdatasync` of the files sled wrote (see [`Durability`]).
//!
//! Must never be called from an async task directly: every call may block on disk
//! (callers use the writer thread or `spawn_blocking`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::indicator::{Category, EventType, IndicatorKey, Kind, Millis, Risk, Tlp};
use crate::state::{IndicatorState, StateChange};
use crate::writer::block;
use crate::writer::state_store::StateStore;

/// Record format version, the first byte of every record. Version 2 adds the
/// request's fingerprint after an idempotency mark; version 1 records still decode.
const RECORD_VERSION: u8 = 2;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Key-space prefixes of the `state` tree.
const IDEMPOTENCY_PREFIX: u8 = 0xF0;
/// Expiry index: `[0xF1][valid_until millis u64 BE][indicator key]` → empty, so a
/// range scan yields indicators in the order they expire.
const EXPIRY_PREFIX: u8 = 0xF1;
/// Most keys removed in one sled batch when old states are cleared (sled 0.34
/// holds a process-wide lock for the whole of a batch).
const CLEAR_BATCH: usize = 1000;

/// What subscribers filter on, stored beside each event so that catch-up from the
/// log filters without decoding events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub kind: Kind,
    pub category: Category,
    pub risk: Risk,
    pub tlp: Tlp,
    pub event_type: EventType,
    /// Whose TLP marking governs who sees the event: the publisher of a report,
    /// the indicator's source for a lifecycle event (see `sequencer::record_of`).
    pub source_org: String,
}

/// The idempotency key of the submission whose first event this record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyMark {
    pub key: String,
    /// How many events the submission produced (this one and those following).
    pub count: u32,
    /// The submission's request (`None` in records written before fingerprints).
    pub fingerprint: Option<Fingerprint>,
}

/// One event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub meta: RecordMeta,
    pub idempotency: Option<IdempotencyMark>,
    /// The event encoded once, as a `SubscribeResponse.events` entry.
    pub entry: Bytes,
}

/// Where an earlier submission with the same idempotency key landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotentHit {
    pub first_sequence: u64,
    pub count: u32,
    /// The request first submitted with the key (`None` if stored before
    /// fingerprints: such a key replays whatever is sent with it).
    pub fingerprint: Option<Fingerprint>,
}

/// What the expiry index holds at some time (see [`Log::expiring`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// Indicators due, with their valid_until, soonest first.
    pub due: Vec<(Millis, IndicatorKey)>,
    /// When the next indicator not in `due` falls due (`None`: none will).
    pub next: Option<Millis>,
}

/// An idempotency key to index, with the submission it belongs to.
#[derive(Clone, Debug)]
pub struct IdempotencyEntry {
    pub org_id: String,
    pub key: String,
    pub hit: IdempotentHit,
}

#[derive(Clone)]
pub struct Log {
    db: sled::Db,
    events: sled::Tree,
    state: sled::Tree,
    cursors: sled::Tree,
    orgs: sled::Tree,
    audit: sled::Tree,
    /// Indicator states as of the latest checkpoint.
    states: StateStore,
    /// The database directory (for the free space on its filesystem).
    dir: std::sync::Arc<Path>,
    durability: Arc<Durability>,
}

/// The files sled 0.34 writes and their real sync (`fdatasync`): the log file
/// `db`, and the `blobs` directory, where sled puts any page too large for the
/// log (written without a sync of its own), with the directory entries of new
/// blob files. Snapshots (`snap.*`) are not synced here: sled rebuilds them from
/// the log.
struct Durability {
    db_file: File,
    blobs_dir: PathBuf,
    /// Blob files already synced (sled never rewrites one; it deletes them).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Syncs completed (`dip_log_fsyncs_total`).
    syncs: AtomicU64,
}

impl Durability {
    fn open(dir: &Path) -> Result<Durability> {
        let db_path = dir.join("db");
        let db_file = File::open(&db_path)
            .map_err(|e| Error::io(format!("opening {} to sync it", db_path.display()), e))?;
        Ok(Durability {
            db_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
            syncs: AtomicU64::new(0),
        })
    }

    /// `fdatasync` of the log file and of blob files not yet synced (and, when
    /// there are new ones, `fsync` of the blobs directory). Counts one sync.
    fn sync(&self) -> Result<()> {
        self.db_file
            .sync_data()
            .map_err(|e| Error::io("fdatasync of the database file", e))?;
        self.sync_new_blobs()?;
        self.syncs.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn sync_new_blobs(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("listing sled's blobs directory", e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing sled's blobs directory", e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file
                        .sync_data()
                        .map_err(|e| Error::io("fdatasync of a sled blob", e))?,
                    // Deleted by sled since it was listed: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("opening a sled blob to sync it", e)),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| Error::io("fsync of sled's blobs directory", e))?;
        }
        *synced = present;
        Ok(())
    }
}

impl Log {
    /// Opens the database in `dir`: sled's files, and the state store in
    /// `dir/states` (created when missing: the states are then rebuilt by the
    /// start-up replay of the whole log, and any states an earlier version
    /// kept in sled's `state` tree are removed from it).
    pub fn open(dir: &Path) -> Result<Log> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let (states, _) = StateStore::open(&dir.join("states"))?;
        let log = Log {
            durability: Arc::new(Durability::open(dir)?),
            events: db.open_tree("events")?,
            state: db.open_tree("state")?,
            cursors: db.open_tree("cursors")?,
            orgs: db.open_tree("orgs")?,
            audit: db.open_tree("audit")?,
            states,
            db,
            dir: dir.into(),
        };
        let cleared = log.clear_old_states()?;
        if cleared > 0 {
            tracing::info!(
                cleared,
                "removed the indicator states an earlier version kept in sled (now in states/)"
            );
        }
        Ok(log)
    }

    /// Removes what earlier versions kept in the `state` tree beside the
    /// indexes (indicator states below the idempotency prefix; undo entries,
    /// the checkpoint's sequence and digest above the expiry prefix), in small
    /// batches. Returns how many keys went.
    fn clear_old_states(&self) -> Result<usize> {
        let mut cleared = 0;
        for range in [
            (Bound::Unbounded, Bound::Excluded(vec![IDEMPOTENCY_PREFIX])),
            (Bound::Included(vec![EXPIRY_PREFIX + 1]), Bound::Unbounded),
        ] {
            loop {
                let mut batch = sled::Batch::default();
                let mut keys = 0;
                for item in self
                    .state
                    .range::<Vec<u8>, _>(range.clone())
                    .take(CLEAR_BATCH)
                {
                    batch.remove(item?.0);
                    keys += 1;
                }
                if keys == 0 {
                    break;
                }
                self.state.apply_batch(batch)?;
                cleared += keys;
            }
        }
        Ok(cleared)
    }

    /// The newest sequence in the log (0 when empty).
    pub fn head(&self) -> Result<u64> {
        match self.events.last()? {
            Some((key, value)) => {
                let first = sequence_from_key(&key)?;
                Ok(first + block::count(first, &value)? - 1)
            }
            None => Ok(0),
        }
    }

    /// Writes records (consecutive sequences following the head) in blocks, in
    /// one batch (not yet durable: see [`Log::flush`]).
    pub fn append(&self, records: &[Record]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (first, value) in block::encode(records) {
            batch.insert(&first.to_be_bytes(), value);
        }
        self.events.apply_batch(batch)?;
        Ok(())
    }

    /// Makes everything written so far durable: sled's flush, then a real sync
    /// (`fdatasync`) of the files it wrote. One call serves every write before it,
    /// so a group of writes shares one sync.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.durability.sync()
    }

    /// Real syncs completed since the log was opened (each acknowledged write
    /// waited for one that started after it).
    pub fn syncs(&self) -> u64 {
        self.durability.syncs.load(Ordering::Acquire)
    }

    /// Records with `from <= sequence <= to`, at most `max_records` or about
    /// `max_bytes` of entries, in sequence order.
    pub fn read(
        &self,
        from: u64,
        to: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        if from > to {
            return Ok(records);
        }
        // The block holding `from` is the last one stored at or before it.
        let start = match self.events.range(..=from.to_be_bytes()).next_back() {
            Some(item) => sequence_from_key(&item?.0)?,
            None => from,
        };
        let mut bytes = 0;
        for item in self.events.range(start.to_be_bytes()..=to.to_be_bytes()) {
            let (key, value) = item?;
            let first = sequence_from_key(&key)?;
            for record in block::records(first, Bytes::from_owner(value), from) {
                let record = record?;
                if record.sequence > to {
                    return Ok(records);
                }
                bytes += record.entry.len();
                records.push(record);
                if records.len() >= max_records || bytes >= max_bytes {
                    return Ok(records);
                }
            }
        }
        Ok(records)
    }

    /// The state of one indicator as of the latest checkpoint.
    pub fn indicator(&self, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
        self.states.get(key)
    }

    /// The sequence of the latest checkpoint: the stored states are the state
    /// view as of it (0: none yet).
    pub fn state_applied(&self) -> Result<u64> {
        self.states.applied()
    }

    /// Stores the indexes kept beside the states for one group's state changes:
    /// the expiry index moves with each state, and the group's idempotency keys
    /// are recorded. Written per group, because the writer reads idempotency keys
    /// and the expiry task the index; the states themselves reach disk in
    /// checkpoints (`StateStore::checkpoint`). Rewriting the same changes again (replay)
    /// leaves the same entries.
    pub fn apply_indexes(
        &self,
        changes: &[StateChange<'_>],
        idempotency: &[IdempotencyEntry],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut writes = 0;
        for change in changes {
            let old = change.before.and_then(expiry_entry);
            let new = expiry_entry(change.after);
            if old == new {
                continue;
            }
            // Removed first: when the entry is unchanged the insert below wins.
            if let Some(old) = old {
                batch.remove(old);
                writes += 1;
            }
            if let Some(new) = new {
                batch.insert(new, sled::IVec::default());
                writes += 1;
            }
        }
        for entry in idempotency {
            let mut value = entry.hit.first_sequence.to_be_bytes().to_vec();
            value.extend_from_slice(&entry.hit.count.to_be_bytes());
            if let Some(fingerprint) = &entry.hit.fingerprint {
                value.extend_from_slice(fingerprint);
            }
            batch.insert(idempotency_key(&entry.org_id, &entry.key), value);
            writes += 1;
        }
        if writes > 0 {
            self.state.apply_batch(batch)?;
        }
        Ok(())
    }

    /// The indicator states, as of their latest checkpoint.
    pub fn states(&self) -> &StateStore {
        &self.states
    }

    /// Active indicators whose valid_until is at or before `now`, soonest first, at
    /// most `max`; and when the next one after those falls due.
    pub fn expiring(&self, now: Millis, max: usize) -> Result<Expiring> {
        let mut due = Vec::new();
        for item in self
            .state
            .range(vec![EXPIRY_PREFIX]..vec![EXPIRY_PREFIX + 1])
        {
            let (key, _) = item?;
            let (at, indicator) = decode_expiry_entry(&key)?;
            if at > now || due.len() >= max {
                return Ok(Expiring {
                    due,
                    next: Some(at),
                });
            }
            due.push((at, indicator));
        }
        Ok(Expiring { due, next: None })
    }

    /// Where an earlier submission of `org_id` with idempotency `key` landed.
    pub fn idempotent(&self, org_id: &str, key: &str) -> Result<Option<IdempotentHit>> {
        let Some(value) = self.state.get(idempotency_key(org_id, key))? else {
            return Ok(None);
        };
        // 12 bytes before fingerprints were stored, 28 since.
        let corrupt = || Error::Corrupt {
            sequence: 0,
            problem: format!("idempotency entry of {org_id} has {} bytes", value.len()),
        };
        let (seq, rest) = value.split_at_checked(8).ok_or_else(corrupt)?;
        let (count, fingerprint) = rest.split_at_checked(4).ok_or_else(corrupt)?;
        let fingerprint = match fingerprint.len() {
            0 => None,
            _ => Some(fingerprint.try_into().map_err(|_| corrupt())?),
        };
        Ok(Some(IdempotentHit {
            first_sequence: u64::from_be_bytes(seq.try_into().map_err(|_| corrupt())?),
            count: u32::from_be_bytes(count.try_into().map_err(|_| corrupt())?),
            fingerprint,
        }))
    }

    /// A durable consumer's acknowledged sequence.
    pub fn cursor(&self, org_id: &str, consumer: &str) -> Result<Option<u64>> {
        self.cursors
            .get(cursor_key(org_id, consumer))?
            .map(|bytes| sequence_from_key(&bytes))
            .transpose()
    }

    /// How many durable consumers `org_id` has.
    pub fn cursor_count(&self, org_id: &str) -> Result<usize> {
        let mut prefix = org_id.as_bytes().to_vec();
        prefix.push(0);
        let mut count = 0;
        for item in self.cursors.scan_prefix(prefix) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// Stores acknowledged sequences (durable at the next flush).
    pub fn set_cursors(&self, cursors: &[(String, String, u64)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (org_id, consumer, sequence) in cursors {
            batch.insert(cursor_key(org_id, consumer), &sequence.to_be_bytes());
        }
        self.cursors.apply_batch(batch)?;
        Ok(())
    }

    /// Stores a run-time change of organisation `org_id` and makes it durable.
    pub fn store_org(&self, org_id: &str, change: &[u8]) -> Result<()> {
        self.orgs.insert(org_id.as_bytes(), change)?;
        self.flush()
    }

    /// Every stored organisation change, by org id.
    pub fn stored_orgs(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.orgs
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((String::from_utf8_lossy(&key).into_owned(), value.to_vec()))
            })
            .collect()
    }

    /// Appends audit entries keyed `(time ms, counter)`; durable at sled's next
    /// periodic flush or [`Log::flush`].
    pub fn append_audit(&self, entries: &[((u64, u64), Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for ((millis, counter), entry) in entries {
            batch.insert(&audit_key(*millis, *counter)[..], entry.as_slice());
        }
        self.audit.apply_batch(batch)?;
        Ok(())
    }

    /// The counter of the newest audit entry (0 when there is none).
    pub fn last_audit_counter(&self) -> Result<u64> {
        match self.audit.last()? {
            Some((key, _)) => sequence_from_key(key.get(8..).unwrap_or_default()),
            None => Ok(0),
        }
    }

    /// Up to `limit` audit entries recorded at or after `since_millis`, oldest first.
    pub fn read_audit(&self, since_millis: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        self.audit
            .range(audit_key(since_millis, 0)..)
            .take(limit)
            .map(|item| Ok(item?.1.to_vec()))
            .collect()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()? + self.states.size_on_disk()?)
    }

    /// Bytes available to the hub (not root) on the filesystem that holds the database.
    #[cfg(unix)]
    pub fn disk_available(&self) -> Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let context = || format!("reading the free space of {}", self.dir.display());
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| Error::io(context(), std::io::Error::other(e)))?;
        // SAFETY: `path` is a NUL-terminated string and `stat` a zeroed statvfs
        // that the call fills in; both outlive the call.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(Error::io(context(), std::io::Error::last_os_error()));
        }
        // The field types differ between platforms (u32 on some 32-bit ones).
        #[allow(clippy::useless_conversion)]
        let (blocks, block_size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
        Ok(blocks.saturating_mul(block_size))
    }
}

fn idempotency_key(org_id: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + org_id.len() + key.len());
    bytes.push(IDEMPOTENCY_PREFIX);
    bytes.extend_from_slice(org_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn audit_key(millis: u64, counter: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&millis.to_be_bytes());
    key[8..].copy_from_slice(&counter.to_be_bytes());
    key
}

/// The expiry index entry of an active indicator with a valid_until.
fn expiry_entry(state: &IndicatorState) -> Option<Vec<u8>> {
    let at = state.indicator.valid_until.filter(|_| state.is_active())?;
    let key = state.indicator.key.to_bytes();
    let mut bytes = Vec::with_capacity(9 + key.len());
    bytes.push(EXPIRY_PREFIX);
    // Validation admits only future times, so this is never negative; clamp anyway.
    bytes.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    bytes.extend_from_slice(&key);
    Some(bytes)
}

fn decode_expiry_entry(bytes: &[u8]) -> Result<(Millis, IndicatorKey)> {
    let corrupt = || Error::Corrupt {
        sequence: 0,
        problem: format!(
            "an expiry index entry of {} bytes is malformed",
            bytes.len()
        ),
    };
    let at: [u8; 8] = bytes
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let kind = *bytes.get(9).ok_or_else(corrupt)?;
    let value = bytes.get(10..).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(at) as Millis,
        IndicatorKey {
            kind: Kind::try_from(i32::from(kind)).map_err(|_| corrupt())?,
            value: String::from_utf8(value.to_vec()).map_err(|_| corrupt())?,
        },
    ))
}

fn cursor_key(org_id: &str, consumer: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + org_id.len() + consumer.len());
    bytes.extend_from_slice(org_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(consumer.as_bytes());
    bytes
}

/// A stored big-endian sequence (a key or a value).
pub(crate) fn sequence_from_key(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        sequence: 0,
        problem: format!("a stored sequence has {} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// `[version][kind][category][risk][tlp][event type][org len][org][key len][key][count u32 if key][fingerprint 16 if key][entry]`
pub fn encode_record(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + record.meta.source_org.len() + record.entry.len());
    encode_record_into(record, &mut bytes);
    bytes
}

/// [`encode_record`], appended to `bytes`.
pub fn encode_record_into(record: &Record, bytes: &mut Vec<u8>) {
    let meta = &record.meta;
    let org = meta.source_org.as_bytes();
    bytes.extend_from_slice(&[
        RECORD_VERSION,
        meta.kind as i32 as u8,
        meta.category as i32 as u8,
        meta.risk as i32 as u8,
        meta.tlp as i32 as u8,
        meta.event_type as i32 as u8,
        org.len() as u8,
    ]);
    bytes.extend_from_slice(org);
    match &record.idempotency {
        Some(mark) => {
            bytes.push(mark.key.len() as u8);
            bytes.extend_from_slice(mark.key.as_bytes());
            bytes.extend_from_slice(&mark.count.to_be_bytes());
            bytes.extend_from_slice(&mark.fingerprint.unwrap_or_default());
        }
        None => bytes.push(0),
    }
    bytes.extend_from_slice(&record.entry);
}

pub fn decode_record(sequence: u64, bytes: &[u8]) -> Result<Record> {
    decode_record_with(sequence, bytes, Bytes::copy_from_slice)
}

/// The record at `range` of `block`, its entry a slice of `block` (not copied).
pub(crate) fn decode_record_in(
    sequence: u64,
    block: &Bytes,
    range: std::ops::Range<usize>,
) -> Result<Record> {
    let start = range.start;
    let bytes = block.get(range.clone()).ok_or_else(|| Error::Corrupt {
        sequence,
        problem: "a record past the end of its block".into(),
    })?;
    decode_record_with(sequence, bytes, |entry| {
        let from = start + (bytes.len() - entry.len());
        block.slice(from..range.end)
    })
}

/// Decodes a record; `entry` makes the entry's bytes from their slice.
fn decode_record_with(
    sequence: u64,
    bytes: &[u8],
    entry: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Record> {
    let corrupt = |problem: &str| Error::Corrupt {
        sequence,
        problem: problem.to_string(),
    };
    let mut reader = Reader { bytes, at: 0 };
    let header = reader.take(7).ok_or_else(|| corrupt("truncated header"))?;
    if header[0] != RECORD_VERSION && header[0] != 1 {
        return Err(corrupt(&format!("unknown record version {}", header[0])));
    }
    let enum_byte = |i: usize| i32::from(header[i]);
    let meta_error = || corrupt("unknown enumeration value in header");
    let org = reader
        .take(usize::from(header[6]))
        .ok_or_else(|| corrupt("truncated organisation"))?;
    let key_len = usize::from(reader.take(1).ok_or_else(|| corrupt("truncated key"))?[0]);
    let idempotency = if key_len == 0 {
        None
    } else {
        let key = reader
            .take(key_len)
            .ok_or_else(|| corrupt("truncated key"))?;
        let count = reader.take(4).ok_or_else(|| corrupt("truncated count"))?;
        let fingerprint = match header[0] {
            1 => None,
            _ => reader.take(16).and_then(|f| f.try_into().ok()),
        };
        if header[0] != 1 && fingerprint.is_none() {
            return Err(corrupt("truncated fingerprint"));
        }
        Some(IdempotencyMark {
            key: String::from_utf8_lossy(key).into_owned(),
            count: u32::from_be_bytes([count[0], count[1], count[2], count[3]]),
            fingerprint,
        })
    };
    Ok(Record {
        sequence,
        meta: RecordMeta {
            kind: Kind::try_from(enum_byte(1)).map_err(|_| meta_error())?,
            category: Category::try_from(enum_byte(2)).map_err(|_| meta_error())?,
            risk: Risk::try_from(enum_byte(3)).map_err(|_| meta_error())?,
            tlp: Tlp::try_from(enum_byte(4)).map_err(|_| meta_error())?,
            event_type: EventType::try_from(enum_byte(5)).map_err(|_| meta_error())?,
            source_org: String::from_utf8_lossy(org).into_owned(),
        },
        idempotency,
        entry: entry(reader.rest()),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn record(sequence: u64, idempotency: Option<IdempotencyMark>) -> Record {
        Record {
            sequence,
            meta: RecordMeta {
                kind: Kind::UpiId,
                category: Category::MuleAccount,
                risk: Risk::High,
                tlp: Tlp::Amber,
                event_type: EventType::Published,
                source_org: "bank-a".into(),
            },
            idempotency,
            entry: Bytes::from(vec![10, 2, 8, sequence as u8]),
        }
    }

    #[test]
    fn records_round_trip_in_sequence_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let mark = IdempotencyMark {
            key: "k-1".into(),
            count: 2,
            fingerprint: Some([7; 16]),
        };
        let written = vec![record(1, Some(mark)), record(2, None), record(3, None)];
        log.append(&written).expect("append");
        log.flush().expect("flush");
        assert_eq!(log.head().expect("head"), 3);
        assert_eq!(log.read(1, 3, 100, 1 << 20).expect("read"), written);
        assert_eq!(log.read(2, 3, 1, 1 << 20).expect("read"), written[1..2]);
    }

    /// A log written one key per event (before blocks) reads as it did, and
    /// blocks appended after it continue it: every range, across the boundary.
    #[test]
    fn per_event_records_and_blocks_read_as_one_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let old: Vec<Record> = (1..=5).map(|s| record(s, None)).collect();
        for record in &old {
            log.events
                .insert(record.sequence.to_be_bytes(), encode_record(record))
                .expect("insert");
        }
        assert_eq!(log.head().expect("head"), 5);
        let new: Vec<Record> = (6..=400).map(|s| record(s, None)).collect();
        log.append(&new[..100]).expect("append");
        log.append(&new[100..]).expect("append");
        assert_eq!(log.head().expect("head"), 400);
        assert!(log.events.len() < 5 + 395 / 2, "new records share keys");
        let all: Vec<Record> = old.into_iter().chain(new).collect();
        for from in [1, 2, 5, 6, 7, 105, 106, 399, 400] {
            for to in [from, from + 1, from + 150, 400] {
                let to = to.min(400);
                let want = &all[from as usize - 1..to as usize];
                assert_eq!(log.read(from, to, 1000, usize::MAX).expect("read"), want);
            }
            assert_eq!(
                log.read(from, 400, 3, usize::MAX).expect("read"),
                all[from as usize - 1..(from as usize + 2).min(400)]
            );
        }
        assert!(log.read(401, 500, 10, usize::MAX).expect("read").is_empty());
    }

    /// Finding a sequence's block (`range(..=S).next_back()`) is right across
    /// many sled leaves and groups of every size: every sequence reads alone.
    #[test]
    fn every_sequence_is_found_in_its_block_across_many_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let mut next = 1;
        for size in (1..=120).cycle().step_by(7).take(500) {
            let group: Vec<Record> = (next..next + size).map(|s| record(s, None)).collect();
            log.append(&group).expect("append");
            next += size;
        }
        let head = next - 1;
        assert_eq!(log.head().expect("head"), head);
        assert!(log.events.len() > 17 * 20, "enough blocks for many leaves");
        for sequence in 1..=head {
            let read = log.read(sequence, head, 1, usize::MAX).expect("read");
            assert_eq!(read, [record(sequence, None)], "sequence {sequence}");
        }
    }

    /// The digest kept incrementally from state changes and stored with each
    /// checkpoint equals the one computed from the stored states, through
    /// publishes, revocations and new lives.
    #[test]
    fn the_stored_digest_follows_the_active_set() {
        use crate::indicator::{Event, Indicator, Source};
        use std::collections::HashMap;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let mut states: HashMap<IndicatorKey, IndicatorState> = HashMap::new();
        let mut sequence = 0;
        let mut digest = Digest::EMPTY;
        // A fixed pseudo-random walk over 40 indicators, 30 groups of 20 events.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _group in 0..30 {
            let mut group: HashMap<IndicatorKey, (Option<IndicatorState>, IndicatorState)> =
                HashMap::new();
            for _ in 0..20 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                sequence += 1;
                let key = IndicatorKey {
                    kind: Kind::PhoneNumber,
                    value: format!("+91980000{:04}", x % 40),
                };
                let current = group
                    .get(&key)
                    .map(|(_, after)| after.clone())
                    .or_else(|| states.get(&key).cloned());
                let event_type = match (x >> 8) % 3 {
                    0 => EventType::Revoked,
                    _ => EventType::Published,
                };
                let event = Event {
                    sequence,
                    event_id: uuid::Uuid::now_v7(),
                    event_type,
                    indicator: Indicator {
                        key: key.clone(),
                        category: Category::FraudCall,
                        risk: Risk::High,
                        description: String::new(),
                        valid_until: None,
                        tlp: Tlp::Green,
                    },
                    source: Source {
                        org_id: "police".into(),
                        cert_serial: "01".into(),
                    },
                    time: 0,
                    reason: String::new(),
                    action: None,
                };
                if let Some(after) = crate::state::apply(current, &event) {
                    let before = states.get(&key).cloned();
                    group.insert(key, (before, after));
                }
            }
            let changes: Vec<StateChange<'_>> = group
                .values()
                .map(|(before, after)| StateChange {
                    before: before.as_ref(),
                    after,
                })
                .collect();
            for change in &changes {
                digest.apply(change);
            }
            let stored: Vec<_> = changes.iter().map(|c| c.after).collect();
            log.states()
                .checkpoint(&stored, sequence, digest)
                .expect("checkpoint");
            for (key, (_, after)) in group {
                states.insert(key, after);
            }
            let mut computed = Digest::EMPTY;
            for state in log.states().indicators() {
                let state = state.expect("state");
                if state.is_active() {
                    computed.add(&state.indicator.key);
                }
            }
            assert_eq!(log.states().digest().expect("digest"), computed);
        }
        assert_ne!(log.states().digest().expect("digest"), Digest::EMPTY);
    }

    /// The expiry index follows the states: an entry per active indicator with a
    /// valid_until, moved when it is extended, gone when it is revoked.
    #[test]
    fn the_expiry_index_follows_the_active_states() {
        use crate::indicator::{Indicator, Status};
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let state = |value: &str, valid_until: Option<Millis>, status: Status| IndicatorState {
            indicator: Indicator {
                key: IndicatorKey {
                    kind: Kind::UpiId,
                    value: value.into(),
                },
                category: Category::MuleAccount,
                risk: Risk::High,
                description: String::new(),
                valid_until,
                tlp: Tlp::Green,
            },
            status,
            source_org: "bank-a".into(),
            reporters: Default::default(),
            first_seen: 0,
            last_seen: 0,
            actions: Vec::new(),
            history_length: 1,
            last_sequence: 1,
            revoke_reason: String::new(),
        };
        let key = |value: &str| IndicatorKey {
            kind: Kind::UpiId,
            value: value.into(),
        };
        let a = state("a@ok", Some(2_000), Status::Active);
        let b = state("b@ok", Some(1_000), Status::Active);
        let c = state("c@ok", None, Status::Active);
        let changes = [&a, &b, &c].map(|after| StateChange {
            before: None,
            after,
        });
        log.apply_indexes(&changes, &[]).expect("index");
        log.states()
            .checkpoint(&[&a, &b, &c], 3, Digest::EMPTY)
            .expect("checkpoint");
        let expiring = |due, next| Expiring { due, next };
        assert_eq!(
            log.expiring(500, 10).expect("scan"),
            expiring(vec![], Some(1_000))
        );
        assert_eq!(
            log.expiring(5_000, 10).expect("scan"),
            expiring(vec![(1_000, key("b@ok")), (2_000, key("a@ok"))], None)
        );
        assert_eq!(
            log.expiring(5_000, 1).expect("scan"),
            expiring(vec![(1_000, key("b@ok"))], Some(2_000))
        );

        let b_extended = state("b@ok", Some(3_000), Status::Active);
        let a_revoked = state("a@ok", Some(2_000), Status::Revoked);
        log.apply_indexes(
            &[
                StateChange {
                    before: Some(&b),
                    after: &b_extended,
                },
                StateChange {
                    before: Some(&a),
                    after: &a_revoked,
                },
            ],
            &[],
        )
        .expect("index");
        log.states()
            .checkpoint(&[&b_extended, &a_revoked], 5, Digest::EMPTY)
            .expect("checkpoint");
        assert_eq!(
            log.expiring(2_500, 10).expect("scan"),
            expiring(vec![], Some(3_000))
        );
        assert_eq!(
            log.states().indicators().count(),
            3,
            "index entries are not states"
        );
    }

    #[test]
    fn a_truncated_record_is_reported_corrupt_not_a_panic() {
        let bytes = encode_record(&record(1, None));
        for len in 0..8 {
            assert!(decode_record(1, &bytes[..len]).is_err(), "length {len}");
        }
    }

    /// A database of an earlier version kept its indicator states, undo
    /// entries and checkpoint in sled's `state` tree: opened with a new state
    /// store, those go (the start-up replay rebuilds the states), and the
    /// idempotency and expiry indexes beside them stay.
    #[test]
    fn states_an_earlier_version_kept_in_sled_are_cleared_and_the_indexes_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let old_keys: [&[u8]; 4] = [
            &[Kind::PhoneNumber as i32 as u8, b'+', b'9', b'1'],
            &[0xF2, 1, 2, 0xFF, 0, 0, 0, 0, 0, 0, 0, 4],
            b"\xFFapplied",
            b"\xFFdigest",
        ];
        for key in old_keys {
            log.state.insert(key, &[1u8][..]).expect("insert");
        }
        let indexes: [&[u8]; 2] = [&[IDEMPOTENCY_PREFIX, b'o', 0, b'k'], &[EXPIRY_PREFIX, 9]];
        for key in indexes {
            log.state.insert(key, &[2u8][..]).expect("insert");
        }
        drop(log);
        let log = Log::open(dir.path()).expect("reopen");
        let left: Vec<Vec<u8>> = log
            .state
            .iter()
            .map(|item| item.expect("read").0.to_vec())
            .collect();
        assert_eq!(left, indexes.map(<[u8]>::to_vec));
        assert_eq!(log.state_applied().expect("applied"), 0);
    }
}
