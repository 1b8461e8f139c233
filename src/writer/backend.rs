//! The log backend: where the writer makes a group of events durable.
//!
//! Owns: the one interface between the writer and the durable event log, and
//! its embedded implementation on [`Log`] (sled). The interface is a
//! conditional group append: a group planned against head H lands at
//! H+1..H+n, all of it, or not at all, and the call returns only once it is
//! durable, so the writer answers after it (invariant 2, ack after flush). A
//! replicated log (NATS JetStream: one atomic batch with the expected last
//! sequence H) is a second implementation of the same trait. Must never apply
//! state, fan out or answer clients: the writer announces what the backend
//! made durable.
//!
//! sled: the writer is the only appender (sled locks the database against a
//! second process), so the head cannot move under it; the records are checked
//! to follow the expected head, then written in one batch and made durable by
//! [`Log::flush`]: sled's flush, then a real `fdatasync` of the files it wrote,
//! one per group.

use crate::error::{Error, Result};
use crate::log::{Log, Record};

/// A durable, append-only log of encoded events, numbered 1, 2, 3 ... with no gap.
pub trait LogBackend: Send + 'static {
    /// The sequence of the newest durable event (0 when the log is empty).
    fn head(&self) -> Result<u64>;

    /// Whether this node may sequence now, its log at `head` (cluster mode: it
    /// holds the leader lease and has caught up); an `Unavailable` error says
    /// why not and where to write instead. One node alone always may.
    fn writable(&self, _head: u64) -> Result<()> {
        Ok(())
    }

    /// Appends `records` (sequences `expected_head + 1` onwards, in order) if the
    /// log's head is still `expected_head`; all or nothing. Returns once they are
    /// durable. An error means nothing may be acknowledged: either nothing was
    /// stored, or (for a backend that can time out) it is not known yet.
    /// `Unavailable` is such an error that leaves the writer able to go on (a
    /// replicated log refused the group or did not confirm it: the node learns
    /// what landed from the log itself); any other error stops the writer.
    fn append_group(&mut self, expected_head: u64, records: &[Record]) -> Result<()>;
}

/// Checks that `records` are numbered `expected_head + 1`, `+ 2`, ... in order.
pub fn check_follows(expected_head: u64, records: &[Record]) -> Result<()> {
    for (offset, record) in (1..).zip(records) {
        if record.sequence != expected_head + offset {
            return Err(Error::Corrupt {
                sequence: record.sequence,
                problem: format!(
                    "appended at position {offset} after head {expected_head}: not the next sequence"
                ),
            });
        }
    }
    Ok(())
}

impl LogBackend for Log {
    fn head(&self) -> Result<u64> {
        Log::head(self)
    }

    fn append_group(&mut self, expected_head: u64, records: &[Record]) -> Result<()> {
        check_follows(expected_head, records)?;
        self.append(records)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Category, EventType, Kind, Risk, Tlp};
    use crate::log::RecordMeta;

    fn record(sequence: u64) -> Record {
        Record {
            sequence,
            meta: RecordMeta {
                kind: Kind::PhoneNumber,
                category: Category::FraudCall,
                risk: Risk::High,
                tlp: Tlp::Green,
                event_type: EventType::Published,
                source_org: "bank-a".into(),
            },
            idempotency: None,
            entry: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_group_must_follow_the_expected_head_without_a_gap() {
        assert!(check_follows(4, &[record(5), record(6)]).is_ok());
        assert!(check_follows(4, &[]).is_ok());
        assert!(check_follows(4, &[record(6)]).is_err(), "a gap");
        assert!(
            check_follows(4, &[record(5), record(5)]).is_err(),
            "a repeat"
        );
        assert!(check_follows(5, &[record(5)]).is_err(), "behind the head");
    }
}
