//! The live feed: durable events, fanned out to every subscriber as they commit.
//!
//! Owns: the committed (durable) head sequence and the broadcast ring of recent
//! records. Lag policy (invariant 4): the ring has a fixed capacity and sending
//! never waits, so a slow subscriber can neither block the writer nor grow the
//! hub's memory; a subscriber that falls behind the ring loses its place in the
//! live feed and is served from the log again (see `subscription`). The log is
//! the truth, this is only the fast path. Must never carry an event before it is
//! durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::log::Record;

/// How many recent records the live feed keeps for subscribers that are behind.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Arc<Record>>,
    committed: Arc<AtomicU64>,
}

impl Feed {
    /// A feed whose durable head is `head`.
    pub fn new(capacity: usize, head: u64) -> Feed {
        let (sender, _) = broadcast::channel(capacity);
        Feed {
            sender,
            committed: Arc::new(AtomicU64::new(head)),
        }
    }

    /// The newest durable sequence.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Announces records that are now durable. The head moves first, then the
    /// records go out: a subscriber that joined the feed before reading the head
    /// either finds a record in the log or receives it live (no gap).
    pub fn publish(&self, records: impl IntoIterator<Item = Record>, head: u64) {
        self.committed.store(head, Ordering::Release);
        for record in records {
            // An error only means nobody is subscribed right now.
            let _ = self.sender.send(Arc::new(record));
        }
    }

    /// Joins the live feed; call before reading [`Feed::committed`] for catch-up.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.sender.subscribe()
    }

    /// How many subscriptions are on the live feed now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}
