//! Event blocks: how the log packs consecutive records under one sled key.
//!
//! Owns: the block format and its size. A group's records are cut into blocks
//! of about [`BLOCK_BYTES`]; each block is stored under the sequence of its first
//! record (u64 big-endian), so the block holding sequence S is the last key at or
//! before S, and a reader gets dozens of events per sled step. Value:
//! `[BLOCK_VERSION][count u32 BE]` then, per record, `[length u32 BE][record]`
//! (the record as `log::encode_record` writes it: filter metadata, then the
//! pre-encoded wire entry). Record i of a block has sequence `first + i`.
//!
//! A value that does not start with [`BLOCK_VERSION`] is a record in the
//! per-event format of earlier versions (one key per event; a record starts with
//! its own version, 1 or 2): it reads as a block of one, so data directories
//! written before blocks are served as they are, without a migration.
//!
//! Entries are not copied out of a block: each is a slice of the stored value,
//! sent to subscribers as it is.
//!
//! Must never touch sled (the log stores and reads the values) or decode events.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::log::{Record, decode_record_in, encode_record_into};

/// A block is closed before a record would take it past this many bytes (a
/// record larger than that gets a block of its own). Sized for sled 0.34: a leaf
/// holds up to 17 keys before it splits, and a node whose serialized size passes
/// a quarter of a segment (128 KiB) is written as a separate blob file, which
/// costs a file, an fdatasync and a directory fsync (see `log::Durability`).
/// 17 blocks of 6 KiB stay under it, and 6 KiB holds about twenty 300-byte
/// events: one sled step per twenty events in catch-up and replay.
pub const BLOCK_BYTES: usize = 6 * 1024;
/// The first byte of a block (a per-event record starts with 1 or 2).
const BLOCK_VERSION: u8 = 0xB1;
const HEADER_LEN: usize = 5;

/// `records` (consecutive sequences) cut into blocks: (first sequence, value).
pub fn encode(records: &[Record]) -> Vec<(u64, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(u64, u32, Vec<u8>)> = None;
    let mut encoded = Vec::new();
    for record in records {
        encoded.clear();
        encode_record_into(record, &mut encoded);
        let added = 4 + encoded.len();
        if let Some((first, count, value)) = open.take() {
            if value.len() + added > BLOCK_BYTES {
                blocks.push((first, seal(count, value)));
            } else {
                open = Some((first, count, value));
            }
        }
        let (_, count, value) = open.get_or_insert_with(|| {
            let mut value = Vec::with_capacity(BLOCK_BYTES.max(HEADER_LEN + added));
            value.extend_from_slice(&[BLOCK_VERSION, 0, 0, 0, 0]);
            (record.sequence, 0, value)
        });
        // A record is at most a few KiB (validation bounds every field).
        value.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        value.extend_from_slice(&encoded);
        *count += 1;
    }
    if let Some((first, count, value)) = open {
        blocks.push((first, seal(count, value)));
    }
    blocks
}

fn seal(count: u32, mut value: Vec<u8>) -> Vec<u8> {
    value[1..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    value
}

/// How many records the block stored at `first` holds.
pub fn count(first: u64, value: &[u8]) -> Result<u64> {
    match value.first() {
        Some(&BLOCK_VERSION) => {
            let count = value
                .get(1..HEADER_LEN)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .ok_or_else(|| corrupt(first, "a block shorter than its header"))?;
            Ok(u64::from(u32::from_be_bytes(count)))
        }
        _ => Ok(1),
    }
}

/// The records of the block stored at `first`, from sequence `from` on (those
/// before it are skipped without being decoded).
pub fn records(first: u64, value: Bytes, from: u64) -> Records {
    let (count, at) = match value.first() {
        Some(&BLOCK_VERSION) => (count(first, &value), HEADER_LEN),
        _ => (Ok(1), 0),
    };
    Records {
        value,
        sequence: first,
        from,
        left: count,
        at,
    }
}

/// The records of one block, in sequence order (see [`records`]).
pub struct Records {
    value: Bytes,
    sequence: u64,
    from: u64,
    /// Records not yet read (an error if the header is unreadable).
    left: Result<u64>,
    /// Where the next record starts in `value`.
    at: usize,
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            let left = match &self.left {
                Ok(0) => return None,
                Ok(left) => *left,
                Err(_) => {
                    let error = std::mem::replace(&mut self.left, Ok(0));
                    return error.err().map(Err);
                }
            };
            let sequence = self.sequence;
            let range = match self.next_range() {
                Ok(range) => range,
                Err(error) => {
                    self.left = Ok(0);
                    return Some(Err(error));
                }
            };
            self.left = Ok(left - 1);
            self.sequence += 1;
            if sequence >= self.from {
                return Some(decode_record_in(sequence, &self.value, range));
            }
        }
    }
}

impl Records {
    /// The byte range of the next record, moving past it.
    fn next_range(&mut self) -> Result<std::ops::Range<usize>> {
        if self.at == 0 && self.value.first() != Some(&BLOCK_VERSION) {
            // A per-event record: the whole value.
            self.at = self.value.len();
            return Ok(0..self.value.len());
        }
        let length = self
            .value
            .get(self.at..self.at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| corrupt(self.sequence, "a block ends inside a record length"))?;
        let start = self.at + 4;
        let end = start + u32::from_be_bytes(length) as usize;
        if end > self.value.len() {
            return Err(corrupt(self.sequence, "a block ends inside a record"));
        }
        self.at = end;
        Ok(start..end)
    }
}

fn corrupt(sequence: u64, problem: &str) -> Error {
    Error::Corrupt {
        sequence,
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Category, EventType, Kind, Risk, Tlp};
    use crate::log::{IdempotencyMark, RecordMeta, encode_record};

    fn record(sequence: u64, entry_len: usize) -> Record {
        Record {
            sequence,
            meta: RecordMeta {
                kind: Kind::PhoneNumber,
                category: Category::FraudCall,
                risk: Risk::High,
                tlp: Tlp::Green,
                event_type: EventType::Published,
                source_org: "tsp-a".into(),
            },
            idempotency: sequence.is_multiple_of(3).then(|| IdempotencyMark {
                key: format!("k-{sequence}"),
                count: 1,
                fingerprint: Some([sequence as u8; 16]),
            }),
            entry: Bytes::from(vec![sequence as u8; entry_len]),
        }
    }

    fn read(blocks: &[(u64, Vec<u8>)], from: u64) -> Vec<Record> {
        blocks
            .iter()
            .flat_map(|(first, value)| records(*first, Bytes::from(value.clone()), from))
            .collect::<Result<_>>()
            .expect("decode")
    }

    #[test]
    fn a_group_is_cut_into_blocks_that_read_back_in_order() {
        let written: Vec<Record> = (11..=200).map(|s| record(s, 300)).collect();
        let blocks = encode(&written);
        assert!(
            blocks.len() > 1,
            "190 events of 300 bytes fill several blocks"
        );
        assert_eq!(blocks[0].0, 11);
        let mut next = 11;
        for (first, value) in &blocks {
            assert_eq!(*first, next, "each block starts after the previous one");
            assert!(value.len() <= BLOCK_BYTES);
            next += count(*first, value).expect("count");
        }
        assert_eq!(next, 201);
        assert_eq!(read(&blocks, 0), written);
        assert_eq!(read(&blocks, 150), written[139..]);
    }

    #[test]
    fn a_record_larger_than_a_block_gets_a_block_of_its_own() {
        let written = vec![record(1, 10), record(2, BLOCK_BYTES * 2), record(3, 10)];
        let blocks = encode(&written);
        let firsts: Vec<u64> = blocks.iter().map(|(first, _)| *first).collect();
        assert_eq!(firsts, [1, 2, 3]);
        assert_eq!(read(&blocks, 1), written);
    }

    #[test]
    fn a_per_event_record_reads_as_a_block_of_one() {
        let old = record(7, 40);
        let value = encode_record(&old);
        assert_eq!(count(7, &value).expect("count"), 1);
        assert_eq!(read(&[(7, value.clone())], 0), [old]);
        assert!(read(&[(7, value)], 8).is_empty());
    }

    #[test]
    fn a_truncated_block_is_reported_corrupt_not_a_panic() {
        let blocks = encode(&[record(1, 20), record(2, 20)]);
        let value = &blocks[0].1;
        for len in 1..value.len() {
            let result: Result<Vec<Record>> =
                records(1, Bytes::copy_from_slice(&value[..len]), 0).collect();
            assert!(result.is_err(), "length {len}");
        }
    }
}
