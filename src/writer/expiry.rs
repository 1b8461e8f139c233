//! Expiry: the hub itself emits EXPIRED when an indicator's valid_until passes.
//!
//! Owns: the expiry task and its [`Alarm`]. The task asks the log's expiry index
//! (kept by `log` beside the states, atomically with them, rebuilt by replay) which
//! active indicators are due, submits an EXPIRED change for each through the
//! sequencer with the hub's own permit, then sleeps until the next one falls due.
//! The writer rings the alarm when it commits a valid_until earlier than the time
//! the task sleeps until. After a restart the first scan expires everything whose
//! time passed while the hub was down. Must never write storage itself (only the
//! sequencer appends), never read it on an async worker, and never hold the
//! sequencer after the hub's stop token is cancelled (the writer stops only when
//! every sequencer handle is gone).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alarm::Alarm;
use crate::error::{Error, Result};
use crate::indicator::{IndicatorKey, Millis, Source, now_millis};
use crate::log::{Expiring, Log};
use crate::policy;
use crate::sequencer::{Change, Sequencer, Submission};

/// The organisation EXPIRED events are attributed to.
pub const HUB_ORG: &str = "dip-hub";
/// Most indicators expired per scan (submitted together, so they share flushes).
const SCAN_BATCH: usize = 512;
/// Longest sleep between scans, so a wall-clock change is noticed in bounded time.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Pause after a scan in which nothing due could be expired (a storage problem).
const BACKOFF: Duration = Duration::from_secs(1);

/// Starts the expiry task; it ends when `stop` is cancelled.
pub fn spawn(
    log: Log,
    sequencer: Sequencer,
    alarm: Arc<Alarm>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(log, sequencer, alarm, stop))
}

async fn run(log: Log, sequencer: Sequencer, alarm: Arc<Alarm>, stop: CancellationToken) {
    loop {
        alarm.scanning();
        let wait = match scan(&log, &sequencer).await {
            Ok(Scan::More) => continue,
            Ok(Scan::Next(next)) => {
                let at = next.unwrap_or(Millis::MAX);
                alarm.arm(at);
                until(at)
            }
            Ok(Scan::Stuck) => {
                tracing::warn!("due indicators could not be expired; retrying");
                alarm.arm(now_millis().saturating_add(BACKOFF.as_millis() as Millis));
                BACKOFF
            }
            // Cluster mode: only the leader's writer takes EXPIRED events; a
            // follower's scan is refused until it leads (no error to report).
            Err(Error::Unavailable(reason)) => {
                tracing::debug!(%reason, "expiry waits: this hub does not take writes now");
                alarm.arm(now_millis().saturating_add(BACKOFF.as_millis() as Millis));
                BACKOFF
            }
            Err(error) => {
                tracing::error!(%error, "expiring indicators failed; retrying");
                alarm.arm(now_millis().saturating_add(BACKOFF.as_millis() as Millis));
                BACKOFF
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = alarm.rung() => {}
            () = tokio::time::sleep_until(Instant::now() + wait) => {}
        }
    }
}

/// What a scan leaves to do.
enum Scan {
    /// Indicators were expired: scan again at once.
    More,
    /// Nothing is due; the next falls due then (`None`: nothing will).
    Next(Option<Millis>),
    /// Indicators are due but none could be expired.
    Stuck,
}

/// Expires every indicator due now (up to a batch).
async fn scan(log: &Log, sequencer: &Sequencer) -> Result<Scan> {
    let now = now_millis();
    let reader = log.clone();
    let Expiring { due, next } =
        tokio::task::spawn_blocking(move || reader.expiring(now, SCAN_BATCH))
            .await
            .map_err(|e| Error::Unavailable(format!("the expiry scan was interrupted: {e}")))??;
    if due.is_empty() {
        return Ok(Scan::Next(next));
    }
    let outcomes =
        futures_util::future::join_all(due.iter().map(|(_, key)| expire(sequencer, key))).await;
    let mut expired = 0;
    for ((at, key), outcome) in due.iter().zip(outcomes) {
        match outcome {
            Ok(()) => expired += 1,
            // Revoked, expired or extended since the scan: nothing to do.
            Err(Error::FailedPrecondition(_) | Error::NotFound(_)) => {
                tracing::debug!(%key, valid_until = at, "no longer due");
            }
            Err(error) => return Err(error),
        }
    }
    tracing::info!(expired, due = due.len(), "expired indicators");
    if expired > 0 {
        // Progress: look again at once (more may be due, or the next one's time).
        Ok(Scan::More)
    } else {
        // Everything due was refused: revoked or extended since the scan (then the
        // index has moved already), or the index disagrees with the states. Pause
        // rather than spin.
        Ok(Scan::Stuck)
    }
}

async fn expire(sequencer: &Sequencer, key: &IndicatorKey) -> Result<()> {
    let submission = Submission {
        source: Source {
            org_id: HUB_ORG.into(),
            cert_serial: String::new(),
        },
        changes: vec![Change::Expire { key: key.clone() }],
        idempotency_key: None,
    };
    sequencer
        .submit(policy::hub_permit(), submission)
        .await
        .map(|_| ())
}

/// How long from now until `at`, at most [`MAX_SLEEP`].
fn until(at: Millis) -> Duration {
    let millis = at.saturating_sub(now_millis()).max(0);
    Duration::from_millis(millis as u64).min(MAX_SLEEP)
}
