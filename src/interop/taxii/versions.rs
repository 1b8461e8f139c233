//! Which log sequences hold the versions of each STIX object the TAXII server
//! serves, so that "the latest version", `objects/{id}/` and `versions/` are
//! answered exactly without scanning the log.
//!
//! Owns: an in-memory index from STIX id to the sequences of its versions,
//! brought up to the hub's committed sequence on demand by reading the log
//! through its public read API. Built from the log on first use (one pass) and
//! extended incrementally after that. Must never touch sled directly, never run
//! on an async worker (callers use `spawn_blocking`), and never decide what a
//! caller may see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::frame;
use crate::indicator::{Event, Tlp};
use crate::log::{Log, Record};
use crate::taxii::stix;
use crate::wire;

/// Records read from the log at once while indexing.
const INDEX_CHUNK: usize = 4096;

/// The version index; cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub struct Versions {
    inner: Arc<Mutex<Index>>,
}

#[derive(Default)]
struct Index {
    /// Every sequence up to this one is indexed.
    indexed: u64,
    /// STIX id → its versions, ascending by sequence.
    by_id: HashMap<String, Vec<Version>>,
}

/// One version of a STIX object: the sequence of the event it comes from, and
/// who may see it (its record's TLP and governing organisation, for
/// `policy::may_see`: a viewer's latest version is the latest it may see).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub sequence: u64,
    pub tlp: Tlp,
    pub owner: String,
}

impl Versions {
    /// Indexes the log up to `head` (blocking: reads the log).
    pub fn catch_up(&self, log: &Log, head: u64) -> Result<()> {
        let mut index = self
            .inner
            .lock()
            .map_err(|_| Error::Unavailable("the TAXII version index is poisoned".into()))?;
        while index.indexed < head {
            let records = log.read(index.indexed + 1, head, INDEX_CHUNK, usize::MAX)?;
            let Some(last) = records.last().map(|r| r.sequence) else {
                break;
            };
            for record in &records {
                let event = decode(record)?;
                if let Some(id) = stix::object_id(&event) {
                    index.by_id.entry(id).or_default().push(Version {
                        sequence: record.sequence,
                        tlp: record.meta.tlp,
                        owner: record.meta.source_org.clone(),
                    });
                }
            }
            index.indexed = last;
        }
        Ok(())
    }

    /// The versions of `id` indexed so far, ascending.
    pub fn of(&self, id: &str) -> Vec<Version> {
        self.inner
            .lock()
            .map(|index| index.by_id.get(id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The hub's event stored in `record`.
pub fn decode(record: &Record) -> Result<Event> {
    let event = frame::decode_event_entry(&record.entry).map_err(|problem| Error::Corrupt {
        sequence: record.sequence,
        problem,
    })?;
    wire::event_from_proto(event)
}
