//! The expiry alarm: how the writer wakes the expiry task early.
//!
//! Owns: the one value the writer and the expiry task share, when the task next
//! scans. The writer rings it when it commits a valid_until earlier than that;
//! the task arms it before sleeping. Lives apart from both so that neither
//! imports the other for it. Must never block the writer (one atomic load, at
//! most one notify).

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::indicator::Millis;

/// Wakes the expiry task when an indicator falls due earlier than it planned.
#[derive(Debug)]
pub struct Alarm {
    notify: Notify,
    /// When the task next scans ([`Millis`]); `i64::MIN` while it is scanning, so
    /// that every commit meanwhile rings (nothing committed mid-scan is missed).
    armed_for: AtomicI64,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            notify: Notify::new(),
            armed_for: AtomicI64::new(i64::MIN),
        }
    }
}

impl Alarm {
    /// Called by the writer once states with valid_until `earliest` are stored.
    pub fn committed(&self, earliest: Millis) {
        let armed_for = self.armed_for.load(Ordering::Acquire);
        if armed_for == i64::MIN || earliest < armed_for {
            // Stores a permit if the task is not waiting: it rescans at once.
            self.notify.notify_one();
        }
    }

    /// The expiry task is scanning: every commit meanwhile rings.
    pub fn scanning(&self) {
        self.armed_for.store(i64::MIN, Ordering::Release);
    }

    /// Completes when rung (at once if it was rung since the last wait).
    pub async fn rung(&self) {
        self.notify.notified().await
    }

    /// The expiry task sleeps until `at`: only an earlier valid_until rings.
    pub fn arm(&self, at: Millis) {
        self.armed_for.store(at, Ordering::Release);
    }
}
