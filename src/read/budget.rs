//! The global memory budget for what Subscribe streams hold queued.
//!
//! Owns: one count of the bytes of frames queued for clients, summed over every
//! stream, with a fixed ceiling. A stream may always queue one frame (so a
//! client that reads is never starved by others that do not); every further
//! frame it queues takes its bytes from this budget until the client takes the
//! frame. When the budget is spent, a stream does not queue: it drops the frame
//! (the events stay in the log), waits until its client has read what it has
//! queued, and continues from the log. Must never block: taking from the budget
//! either succeeds at once or says no.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default budget: 64 MiB over all streams.
pub const DEFAULT_BYTES: usize = 64 * 1024 * 1024;

/// The subscribers' budget; cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        let total = total.min(Semaphore::MAX_PERMITS);
        Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// `bytes` from the budget, held until the returned value is dropped; none
    /// when the budget cannot cover them now.
    pub fn try_take(&self, bytes: usize) -> Option<Held> {
        let bytes = u32::try_from(bytes.max(1)).ok()?;
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(bytes)
            .ok()
            .map(|bytes| Held { _bytes: bytes })
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
    _bytes: OwnedSemaphorePermit,
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
