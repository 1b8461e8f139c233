//! A Snapshot stream: every active indicator matching a filter, as of one sequence.
//!
//! Owns: block-list sync's starting point. It streams the stored states of one
//! state checkpoint (see `checkpoint`): it asks for a checkpoint covering every
//! event applied when the request came, pins it, and reads it from disk page by
//! page, so what it sends is exactly the active set after event
//! `as_of_sequence` and before the next, whatever the writer and later
//! checkpoints do meanwhile (they keep what they overwrite as undo entries while
//! the pin is held); a client that then subscribes with `after_sequence =
//! as_of_sequence` and applies the events stays exact. Indicators go out in
//! chunks of bounded size through a small queue, so a slow client holds at most
//! a few chunks and its pin; the last message carries the count and the digest
//! (see `digest`) of exactly what was sent. Must never send an indicator the
//! viewer may not see (TLP), never mix checkpoints, and never block an async
//! worker (storage reads run in `spawn_blocking`).

use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::indicator::{Category, IndicatorKey, Kind, Risk, Status as IndicatorStatus, Tlp};
use crate::policy;
use crate::proto;
use crate::registry::Org;
use crate::view::View;

/// Most indicators in one message.
pub const CHUNK_INDICATORS: usize = 1000;
/// About the most bytes of indicators in one message.
const CHUNK_BYTES: usize = 256 * 1024;
/// Messages queued for one client before the task waits.
const QUEUE_MESSAGES: usize = 4;
/// Stored states read per storage call (each call a `spawn_blocking`).
const PAGE: usize = 4096;

/// Which active indicators a snapshot holds; empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub kinds: Vec<Kind>,
    pub categories: Vec<Category>,
    pub min_risk: Option<Risk>,
}

impl SnapshotFilter {
    /// Is `state` (as stored: the hub's own encoding, decoded straight into the
    /// wire type a snapshot sends) in the snapshot `viewer` asked for?
    pub fn matches(&self, viewer: &Org, state: &proto::IndicatorState) -> bool {
        let Some(indicator) = &state.indicator else {
            return false;
        };
        // An unknown marking is treated as the most restrictive one.
        let tlp = Tlp::try_from(indicator.tlp).unwrap_or(Tlp::Red);
        state.status == IndicatorStatus::Active as i32
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| *k as i32 == indicator.kind))
            && (self.categories.is_empty()
                || self
                    .categories
                    .iter()
                    .any(|c| *c as i32 == indicator.category))
            && self.min_risk.is_none_or(|min| indicator.risk >= min as i32)
            && policy::may_see(viewer, tlp, &state.source_org)
    }
}

/// Starts a snapshot as of a checkpoint at or after `at_least` (the view's
/// applied sequence when the request came: the snapshot asks for a checkpoint
/// and waits for it if the latest is older); the messages come out of the
/// returned stream.
pub fn spawn(
    view: View,
    at_least: u64,
    filter: SnapshotFilter,
    viewer: Org,
    stop: CancellationToken,
) -> ReceiverStream<Result<proto::SnapshotResponse, Status>> {
    let (messages, stream) = mpsc::channel(QUEUE_MESSAGES);
    tokio::spawn(async move {
        if let Err(error) = run(view, at_least, filter, viewer, &messages, &stop).await {
            let _ = messages.send(Err(error.into())).await;
        }
    });
    ReceiverStream::new(stream)
}

async fn run(
    view: View,
    at_least: u64,
    filter: SnapshotFilter,
    viewer: Org,
    messages: &mpsc::Sender<Result<proto::SnapshotResponse, Status>>,
    stop: &CancellationToken,
) -> Result<()> {
    let pins = view.pins().clone();
    let pin = blocking(move || pins.pin(at_least)).await?;
    let as_of_sequence = pin.at();
    let message = |indicators| proto::SnapshotResponse {
        as_of_sequence,
        indicators,
        digest: String::new(),
        last: false,
        count: 0,
    };
    let select = Arc::new((filter, viewer));
    let ranges = key_ranges(&select.0);
    let read = |range: usize, from: Bound<Vec<u8>>| {
        let (log, select, end) = (view.log().clone(), select.clone(), ranges[range].1.clone());
        tokio::task::spawn_blocking(move || {
            let (filter, viewer) = &*select;
            log.states_as_of(as_of_sequence, from, &end, PAGE, |s| {
                filter.matches(viewer, s)
            })
        })
    };
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut digest = Digest::EMPTY;
    let mut count = 0u64;
    // One page is read ahead while the one before it is sent.
    let mut reading = Some((0, read(0, Bound::Included(ranges[0].0.clone()))));
    while let Some((range, page)) = reading.take() {
        let (page, next) = page.await.map_err(|e| {
            Error::Unavailable(format!("the snapshot's storage read was interrupted: {e}"))
        })??;
        reading = match next {
            Some(key) => Some((range, read(range, Bound::Excluded(key)))),
            None if range + 1 < ranges.len() => Some((
                range + 1,
                read(range + 1, Bound::Included(ranges[range + 1].0.clone())),
            )),
            None => None,
        };
        for state in page {
            if let Some(indicator) = &state.indicator {
                digest.add(&IndicatorKey {
                    kind: Kind::try_from(indicator.kind).unwrap_or(Kind::Unspecified),
                    value: indicator.value.clone(),
                });
            }
            bytes += prost::Message::encoded_len(&state);
            chunk.push(state);
            count += 1;
            if chunk.len() >= CHUNK_INDICATORS || bytes >= CHUNK_BYTES {
                bytes = 0;
                if !send(messages, stop, message(std::mem::take(&mut chunk))).await {
                    return Ok(());
                }
            }
        }
    }
    let last = proto::SnapshotResponse {
        digest: digest.to_hex(),
        last: true,
        count,
        ..message(chunk)
    };
    send(messages, stop, last).await;
    drop(pin);
    Ok(())
}

/// Runs blocking storage work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::Unavailable(format!("the snapshot's storage read was interrupted: {e}"))
    })?
}

/// The stored key ranges a snapshot reads: every indicator, or only those of
/// the kinds asked for (a stored key starts with its kind's byte).
fn key_ranges(filter: &SnapshotFilter) -> Vec<(Vec<u8>, Vec<u8>)> {
    if filter.kinds.is_empty() {
        return vec![(vec![1], vec![crate::log::INDICATOR_KEYS_END])];
    }
    let mut kinds: Vec<u8> = filter.kinds.iter().map(|k| *k as i32 as u8).collect();
    kinds.sort();
    kinds.dedup();
    kinds.into_iter().map(|k| (vec![k], vec![k + 1])).collect()
}

/// Queues a message for the client; false when the stream is over.
async fn send(
    messages: &mpsc::Sender<Result<proto::SnapshotResponse, Status>>,
    stop: &CancellationToken,
    message: proto::SnapshotResponse,
) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        sent = messages.send(Ok(message)) => sent.is_ok(),
    }
}
