//! A Snapshot stream: every active indicator matching a filter, as of one sequence.
//!
//! Owns: block-list sync's starting point. It streams one version of the state
//! view (see `view`), so what it sends is exactly the active set after event
//! `as_of_sequence` and before the next, whatever the writer does meanwhile; a
//! client that then subscribes with `after_sequence = as_of_sequence` and applies
//! the events stays exact. Indicators go out in chunks of bounded size through a
//! small queue, so a slow client holds at most a few chunks and its version of
//! the view; the last message carries the count and the digest (see `digest`) of
//! exactly what was sent. Must never send an indicator the viewer may not see
//! (TLP), never mix versions, and never block an async worker for long (it
//! yields while it skips indicators that do not match).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::digest::Digest;
use crate::indicator::{Category, IndicatorKey, Kind, Risk};
use crate::policy;
use crate::proto;
use crate::registry::Org;
use crate::state::IndicatorState;
use crate::view::Version;
use crate::wire;

/// Most indicators in one message.
pub const CHUNK_INDICATORS: usize = 1000;
/// About the most bytes of indicators in one message.
const CHUNK_BYTES: usize = 256 * 1024;
/// Messages queued for one client before the task waits.
const QUEUE_MESSAGES: usize = 4;
/// Indicators examined between two yields to the runtime.
const YIELD_EVERY: usize = 4096;

/// Which active indicators a snapshot holds; empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub kinds: Vec<Kind>,
    pub categories: Vec<Category>,
    pub min_risk: Option<Risk>,
}

impl SnapshotFilter {
    /// Is `state` in the snapshot `viewer` asked for?
    pub fn matches(&self, viewer: &Org, state: &IndicatorState) -> bool {
        let indicator = &state.indicator;
        state.is_active()
            && (self.kinds.is_empty() || self.kinds.contains(&indicator.key.kind))
            && (self.categories.is_empty() || self.categories.contains(&indicator.category))
            && self.min_risk.is_none_or(|min| indicator.risk >= min)
            && policy::may_see(viewer, indicator.tlp, &state.source_org)
    }
}

/// Starts streaming `version`; the messages come out of the returned stream.
pub fn spawn(
    version: Arc<Version>,
    filter: SnapshotFilter,
    viewer: Org,
    stop: CancellationToken,
) -> ReceiverStream<Result<proto::SnapshotResponse, Status>> {
    let (messages, stream) = mpsc::channel(QUEUE_MESSAGES);
    tokio::spawn(run(version, filter, viewer, messages, stop));
    ReceiverStream::new(stream)
}

async fn run(
    version: Arc<Version>,
    filter: SnapshotFilter,
    viewer: Org,
    messages: mpsc::Sender<Result<proto::SnapshotResponse, Status>>,
    stop: CancellationToken,
) {
    let as_of_sequence = version.applied;
    let message = |indicators| proto::SnapshotResponse {
        as_of_sequence,
        indicators,
        digest: String::new(),
        last: false,
        count: 0,
    };
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut digest = Digest::EMPTY;
    let mut count = 0u64;
    for (examined, state) in candidates(&version, &filter).enumerate() {
        if examined % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        if !filter.matches(&viewer, state) {
            continue;
        }
        let encoded = wire::state_to_proto(state);
        bytes += prost::Message::encoded_len(&encoded);
        chunk.push(encoded);
        digest.add(&state.indicator.key);
        count += 1;
        if chunk.len() >= CHUNK_INDICATORS || bytes >= CHUNK_BYTES {
            bytes = 0;
            if !send(&messages, &stop, message(std::mem::take(&mut chunk))).await {
                return;
            }
        }
    }
    let last = proto::SnapshotResponse {
        digest: digest.to_hex(),
        last: true,
        count,
        ..message(chunk)
    };
    send(&messages, &stop, last).await;
}

/// The states a snapshot examines: all, or only those of the kinds asked for.
fn candidates<'a>(
    version: &'a Version,
    filter: &'a SnapshotFilter,
) -> Box<dyn Iterator<Item = &'a IndicatorState> + Send + 'a> {
    if filter.kinds.is_empty() {
        return Box::new(version.states.values().map(|s| s.as_ref()));
    }
    let mut kinds = filter.kinds.clone();
    kinds.sort();
    kinds.dedup();
    Box::new(kinds.into_iter().flat_map(move |kind| {
        let first = IndicatorKey {
            kind,
            value: String::new(),
        };
        version
            .states
            .range(first..)
            .take_while(move |(key, _)| key.kind == kind)
            .map(|(_, state)| state.as_ref())
    }))
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
