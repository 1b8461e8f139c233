//! The global memory budget for what Subscribe streams hold queued.
//!
//! Owns: one count of the bytes of frames queued for clients, summed over every
//! stream, with a fixed ceiling. A stream may always queue one frame (so a
//! client that reads is never starved by others that do not); every further
//! frame it queues takes its bytes from this budget until the client takes the
//! frame. When the budget is spent, the streams most behind release what they
//! hold (every queued frame but the one at the front, see `outbox`) and continue
//! from the log once their client reads again; if that does not cover the frame,
//! the stream that asked does not queue it: it drops the frame (the events stay
//! in the log), waits until its client has read what it has queued, and
//! continues from the log. Must never block: taking from the budget either
//! succeeds at once or says no, and the list of outboxes is only locked briefly.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::outbox::Outbox;

/// The default budget: 64 MiB over all streams.
pub const DEFAULT_BYTES: usize = 64 * 1024 * 1024;

/// The subscribers' budget; cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Every stream's outbox, to release the most-behind ones from.
    outboxes: Arc<Mutex<Vec<Weak<Outbox>>>>,
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        let total = total.min(Semaphore::MAX_PERMITS);
        Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            outboxes: Arc::default(),
        }
    }

    /// Counts `outbox` among those that may be released.
    pub fn register(&self, outbox: &Arc<Outbox>) {
        let mut outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        if outboxes.len().is_power_of_two() {
            outboxes.retain(|o| o.strong_count() > 0);
        }
        outboxes.push(Arc::downgrade(outbox));
    }

    /// Releases what the streams most behind hold until about `bytes` are given
    /// back (or none holds anything); returns how many streams were released.
    pub fn release_most_behind(&self, bytes: usize) -> usize {
        let mut holders: Vec<(u64, Arc<Outbox>)> = {
            let mut outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
            outboxes.retain(|o| o.strong_count() > 0);
            outboxes
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|o| o.behind().map(|behind| (behind, o)))
                .collect()
        };
        holders.sort_by_key(|(behind, _)| *behind);
        let mut freed = 0;
        let mut released = 0;
        for (_, outbox) in holders {
            if freed >= bytes {
                break;
            }
            let given = outbox.release();
            freed += given;
            released += usize::from(given > 0);
        }
        released
    }

    /// `bytes` from the budget, held until the returned value is dropped; none
    /// when the budget cannot cover them now.
    pub fn try_take(&self, bytes: usize) -> Option<Held> {
        let bytes = u32::try_from(bytes.max(1)).ok()?;
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(bytes)
            .ok()
            .map(|bytes| Held { bytes })
    }

    /// Bytes currently held by queued frames.
    pub fn in_use(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// Bytes taken from the budget, given back on drop.
#[derive(Debug)]
pub struct Held {
    bytes: OwnedSemaphorePermit,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes.num_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_until_spent_and_gives_back_on_drop() {
        let budget = Budget::new(100);
        let a = budget.try_take(60).expect("fits");
        assert!(budget.try_take(60).is_none(), "over the budget");
        assert_eq!(budget.in_use(), 60);
        drop(a);
        assert!(budget.try_take(60).is_some());
        assert_eq!(budget.in_use(), 0);
    }
}
