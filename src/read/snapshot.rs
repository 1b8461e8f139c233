//! A Snapshot stream: every active indicator matching a filter, as of one sequence.
//!
//! Owns: block-list sync's starting point. It streams the stored states of one
//! state checkpoint (see `checkpoint`): it asks for a checkpoint covering every
//! event applied when the request came, holds it, and reads it from disk page
//! by page, so what it sends is exactly the active set after event
//! `as_of_sequence` and before the next, whatever the writer and later
//! checkpoints do meanwhile (a held checkpoint reads as it was written); a client that then subscribes with `after_sequence =
//! as_of_sequence` and applies the events stays exact. Indicators go out in
//! chunks of bounded size through a small queue, so a slow client holds at most
//! a few chunks and its checkpoint; the last message carries the count and the digest
//! (see `digest`) of exactly what was sent. Must never send an indicator the
//! viewer may not see (TLP), never mix checkpoints, and never block an async
//! worker (storage reads run in `spawn_blocking`).

use std::ops::Bound;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use prost::DecodeError;
use prost::Message;
use prost::encoding::{DecodeContext, WireType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::indicator::{Category, Kind, Risk, Tlp};
use crate::policy;
use crate::proto;
use crate::registry::Org;
use crate::state_store::Checkpoint;
use crate::view::View;
use crate::wire::StateHead;

/// Field number of `SnapshotResponse.indicators`.
const INDICATORS_FIELD: u32 = 2;
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
    /// Is `state` (read from its stored bytes) in the snapshot `viewer` asked for?
    pub fn matches(&self, viewer: &Org, state: &StateHead<'_>) -> bool {
        let Some(indicator) = &state.indicator else {
            return false;
        };
        // An unknown marking is treated as the most restrictive one.
        let tlp = Tlp::try_from(indicator.tlp).unwrap_or(Tlp::Red);
        state.is_active()
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| *k as i32 == indicator.kind))
            && (self.categories.is_empty()
                || self
                    .categories
                    .iter()
                    .any(|c| *c as i32 == indicator.category))
            && self.min_risk.is_none_or(|min| indicator.risk >= min as i32)
            && policy::may_see(viewer, tlp, state.source_org)
    }
}

/// One message of a Snapshot stream, pre-encoded: the stored states, each as
/// an `indicators` entry holding its stored bytes (never decoded and encoded
/// again), then the message's other fields. Concatenated, they are exactly the
/// protobuf encoding of a `SnapshotResponse` (fields may come in any order), so
/// clients decode it with the ordinary generated type.
#[derive(Clone, Debug, Default)]
pub struct SnapshotChunk {
    bytes: Vec<u8>,
    indicators: usize,
}

impl SnapshotChunk {
    /// Adds one stored `IndicatorState` encoding as an `indicators` entry.
    fn push(&mut self, encoded: &[u8]) {
        prost::encoding::encode_key(INDICATORS_FIELD, WireType::LengthDelimited, &mut self.bytes);
        prost::encoding::encode_varint(encoded.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(encoded);
        self.indicators += 1;
    }

    /// Ends the message with its other fields (`indicators` left empty).
    fn finish(mut self, fields: proto::SnapshotResponse) -> SnapshotChunk {
        fields.encode_raw(&mut self.bytes);
        self
    }
}

impl Message for SnapshotChunk {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// The hub only sends chunks; a received one is skipped field by field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> std::result::Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.indicators = 0;
    }
}

/// What the snapshot has read so far: the messages filled and not yet sent,
/// the one being filled, and the count and digest of every state taken.
#[derive(Default)]
struct Page {
    full: Vec<SnapshotChunk>,
    open: SnapshotChunk,
    digest: Digest,
    count: u64,
}

impl Page {
    /// Takes one stored state into the snapshot.
    fn add(&mut self, head: StateHead<'_>, encoded: &[u8], as_of_sequence: u64) {
        if let Some(indicator) = head.indicator {
            let kind = Kind::try_from(indicator.kind).unwrap_or(Kind::Unspecified);
            self.digest.add_parts(kind, indicator.value);
        }
        self.open.push(encoded);
        self.count += 1;
        if self.open.indicators >= CHUNK_INDICATORS || self.open.bytes.len() >= CHUNK_BYTES {
            let full = std::mem::take(&mut self.open).finish(proto::SnapshotResponse {
                as_of_sequence,
                ..Default::default()
            });
            self.full.push(full);
        }
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
) -> ReceiverStream<Result<SnapshotChunk, Status>> {
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
    messages: &mpsc::Sender<Result<SnapshotChunk, Status>>,
    stop: &CancellationToken,
) -> Result<()> {
    let pins = view.pins().clone();
    let checkpoint = Arc::new(blocking(move || pins.pin(at_least)).await?);
    let as_of_sequence = checkpoint.at;
    let ranges = key_ranges(&filter);
    let select = Arc::new((filter, viewer));
    // Each kind's key range is cut in two at about its middle, and the
    // halves are read by two lanes at once (a snapshot is a set: its
    // messages may come in any order), so that reading is not one thread's.
    let halves = {
        let (log, checkpoint) = (view.log().clone(), checkpoint.clone());
        blocking(move || {
            let mut lanes = vec![Vec::new(), Vec::new()];
            for (from, to) in ranges {
                match log.states().middle(&checkpoint, &from, &to)? {
                    Some(middle) => {
                        lanes[0].push((from, middle.clone()));
                        lanes[1].push((middle, to));
                    }
                    None => lanes[0].push((from, to)),
                }
            }
            Ok(lanes)
        })
        .await?
    };
    let lanes: Vec<_> = halves
        .into_iter()
        .filter(|ranges| !ranges.is_empty())
        .map(|ranges| {
            let lane = Lane {
                view: view.clone(),
                checkpoint: checkpoint.clone(),
                select: select.clone(),
                messages: messages.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(lane.run(ranges))
        })
        .collect();
    let mut digest = Digest::EMPTY;
    let mut count = 0;
    for lane in lanes {
        let read = lane.await.map_err(|e| {
            Error::Unavailable(format!("the snapshot's storage read was interrupted: {e}"))
        })??;
        let Some(page) = read else {
            return Ok(());
        };
        digest = digest.combine(page.digest);
        count += page.count;
    }
    let last = SnapshotChunk::default().finish(proto::SnapshotResponse {
        as_of_sequence,
        digest: digest.to_hex(),
        last: true,
        count,
        ..Default::default()
    });
    send(messages, stop, last).await;
    drop(checkpoint);
    Ok(())
}

/// One reader of a snapshot: its key ranges, in turn.
struct Lane {
    view: View,
    checkpoint: Arc<Checkpoint>,
    select: Arc<(SnapshotFilter, Org)>,
    messages: mpsc::Sender<Result<SnapshotChunk, Status>>,
    stop: CancellationToken,
}

impl Lane {
    /// Reads and sends every matching state in `ranges`; returns the count and
    /// digest of what it sent (in a [`Page`]), or `None` when the client went.
    async fn run(self, ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Option<Page>> {
        let as_of_sequence = self.checkpoint.at;
        // Each page is read, filtered, summed and cut into messages in one
        // blocking task (the stored bytes copied once, into the message); the
        // next page is read while the one before it is sent.
        let read = |range: usize, from: Bound<Vec<u8>>, mut page: Page| {
            let (log, select) = (self.view.log().clone(), self.select.clone());
            let (checkpoint, end) = (self.checkpoint.clone(), ranges[range].1.clone());
            tokio::task::spawn_blocking(move || {
                let (filter, viewer) = &*select;
                let next =
                    log.states()
                        .states_in(&checkpoint, from, &end, PAGE, |head, bytes| {
                            if filter.matches(viewer, &head) {
                                page.add(head, bytes, as_of_sequence);
                            }
                        })?;
                Ok::<_, Error>((page, next))
            })
        };
        let first = Bound::Included(ranges[0].0.clone());
        let mut reading = Some((0, read(0, first, Page::default())));
        let mut page = Page::default();
        while let Some((range, read_page)) = reading.take() {
            let next;
            (page, next) = read_page.await.map_err(|e| {
                Error::Unavailable(format!("the snapshot's storage read was interrupted: {e}"))
            })??;
            let full = std::mem::take(&mut page.full);
            let carried = Page {
                full: Vec::new(),
                ..std::mem::take(&mut page)
            };
            reading = match next {
                Some(key) => Some((range, read(range, Bound::Excluded(key), carried))),
                None if range + 1 < ranges.len() => {
                    let from = Bound::Included(ranges[range + 1].0.clone());
                    Some((range + 1, read(range + 1, from, carried)))
                }
                None => {
                    page = carried;
                    None
                }
            };
            for message in full {
                if !send(&self.messages, &self.stop, message).await {
                    return Ok(None);
                }
            }
        }
        let open = std::mem::take(&mut page.open);
        if open.indicators > 0 {
            let message = open.finish(proto::SnapshotResponse {
                as_of_sequence,
                ..Default::default()
            });
            if !send(&self.messages, &self.stop, message).await {
                return Ok(None);
            }
        }
        Ok(Some(page))
    }
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
        return vec![(vec![1], vec![crate::state_store::INDICATOR_KEYS_END])];
    }
    let mut kinds: Vec<u8> = filter.kinds.iter().map(|k| *k as i32 as u8).collect();
    kinds.sort();
    kinds.dedup();
    kinds.into_iter().map(|k| (vec![k], vec![k + 1])).collect()
}

/// Queues a message for the client; false when the stream is over.
async fn send(
    messages: &mpsc::Sender<Result<SnapshotChunk, Status>>,
    stop: &CancellationToken,
    message: SnapshotChunk,
) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        sent = messages.send(Ok(message)) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Status as IndicatorStatus;

    fn state(value: &str, last_sequence: u64) -> proto::IndicatorState {
        proto::IndicatorState {
            indicator: Some(proto::Indicator {
                kind: Kind::PhoneNumber as i32,
                value: value.into(),
                ..Default::default()
            }),
            status: IndicatorStatus::Active as i32,
            source_org: "tsp-a".into(),
            reporters: vec!["tsp-a".into()],
            last_sequence,
            ..Default::default()
        }
    }

    /// A chunk of stored encodings decodes, with the ordinary generated type,
    /// as the `SnapshotResponse` the hub used to build from decoded states.
    #[test]
    fn a_chunk_of_stored_states_decodes_as_a_snapshot_response() {
        let states = [state("+919800000001", 3), state("+919800000002", 5)];
        let mut chunk = SnapshotChunk::default();
        for s in &states {
            chunk.push(&s.encode_to_vec());
        }
        let fields = proto::SnapshotResponse {
            as_of_sequence: 5,
            digest: "ab".repeat(32),
            last: true,
            count: 2,
            ..Default::default()
        };
        let chunk = chunk.finish(fields.clone());
        let bytes = chunk.encode_to_vec();
        assert_eq!(bytes.len(), chunk.encoded_len());
        let decoded = proto::SnapshotResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(
            decoded,
            proto::SnapshotResponse {
                indicators: states.to_vec(),
                ..fields
            }
        );
        // A chunk with no states is the other fields alone.
        let empty = SnapshotChunk::default().finish(proto::SnapshotResponse {
            as_of_sequence: 5,
            ..Default::default()
        });
        let decoded =
            proto::SnapshotResponse::decode(empty.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.as_of_sequence, 5);
        assert!(decoded.indicators.is_empty());
    }
}
