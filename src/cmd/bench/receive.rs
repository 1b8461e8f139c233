//! The benchmark's subscriber side: a Subscribe call that decodes only what is
//! measured, and the check that every event arrives exactly once, in order.
//!
//! Owns: [`LightResponse`] (a view of `SubscribeResponse` with the sequence and
//! the indicator description only: the load generator shares two cores with the
//! hub, so it must not spend them decoding fields it ignores), the send-time
//! stamp carried in descriptions, and [`SequenceCheck`]. Must never accept a
//! stream as complete without checking every sequence.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::proto;

/// `SubscribeResponse`, decoding only the fields the benchmark measures
/// (prost skips the others).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightResponse {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<LightEvent>,
    #[prost(message, optional, tag = "2")]
    pub heartbeat: Option<LightHeartbeat>,
}

/// `Event`: the sequence and the indicator.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightEvent {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(message, optional, tag = "4")]
    pub indicator: Option<LightIndicator>,
}

/// `Indicator`: the description only, as bytes (no UTF-8 check).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightIndicator {
    #[prost(bytes = "bytes", tag = "5")]
    pub description: bytes::Bytes,
}

/// `Heartbeat`: the hub's durable head.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LightHeartbeat {
    #[prost(uint64, tag = "1")]
    pub head_sequence: u64,
}

/// Subscribes on `channel`, decoding frames as [`LightResponse`]s.
pub async fn subscribe(
    channel: Channel,
    request: proto::SubscribeRequest,
) -> Result<tonic::Streaming<LightResponse>> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(dip_hub::client::MAX_RESPONSE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| anyhow!("the hub connection is not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<proto::SubscribeRequest, LightResponse>::default();
    let path = PathAndQuery::from_static("/dip.v1.IndicatorHubService/Subscribe");
    let response = grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await
        .map_err(remote)?;
    Ok(response.into_inner())
}

/// Microseconds since the Unix epoch, on this machine's clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Prefix of a description stamped with its send time.
const STAMP: &[u8] = b"sent=";
/// Length of a stamp: the prefix, 16 digits and `;`.
pub const STAMP_LEN: usize = 22;

/// A description beginning with the send time `micros`, padded with `x` to `len` bytes.
pub fn stamped_description(micros: u64, len: usize) -> String {
    let mut text = format!("sent={micros:016};");
    while text.len() < len {
        text.push('x');
    }
    text
}

/// The send time stamped by [`stamped_description`], if any.
pub fn stamp_of(description: &[u8]) -> Option<u64> {
    let digits = description.strip_prefix(STAMP)?.get(..16)?;
    let mut micros = 0u64;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        micros = micros
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some(micros)
}

/// Checks that a subscriber receives the sequences `first..=last` exactly once, in order.
#[derive(Clone, Debug)]
pub struct SequenceCheck {
    /// The next sequence owed.
    next: u64,
    pub received: u64,
    /// Sequences skipped over (seen a later one first).
    pub missed: u64,
    /// Sequences received again (or out of order, after a later one).
    pub duplicated: u64,
}

impl SequenceCheck {
    /// Expects `first`, `first + 1`, ...
    pub fn new(first: u64) -> Self {
        SequenceCheck {
            next: first,
            received: 0,
            missed: 0,
            duplicated: 0,
        }
    }

    pub fn observe(&mut self, sequence: u64) {
        self.received += 1;
        if sequence == self.next {
            self.next += 1;
        } else if sequence > self.next {
            self.missed += sequence - self.next;
            self.next = sequence + 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Whether every sequence up to `last` has arrived.
    pub fn reached(&self, last: u64) -> bool {
        self.next > last
    }

    /// Sequences up to `last` never received (including the tail not yet reached).
    pub fn missed_until(&self, last: u64) -> u64 {
        self.missed + (last + 1).saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn stamps_round_trip_and_pad() {
        let text = stamped_description(1_700_000_000_123_456, 300);
        assert_eq!(text.len(), 300);
        assert_eq!(stamp_of(text.as_bytes()), Some(1_700_000_000_123_456));
        assert_eq!(stamp_of(b"no stamp"), None);
        assert_eq!(stamp_of(b"sent=12x4567890123456;"), None);
        assert_eq!(stamp_of(b"sent=123"), None);
    }

    #[test]
    fn the_light_view_reads_real_frames() {
        let event = proto::Event {
            sequence: 42,
            event_id: "id".into(),
            source_org: "bench-pub-1".into(),
            indicator: Some(proto::Indicator {
                value: "+919000000001".into(),
                description: stamped_description(7, 40),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut frame = dip_hub::frame::Frame::default();
        frame.push_entry(dip_hub::frame::encode_event_entry(&event));
        let light = LightResponse::decode(frame.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(light.events.len(), 1);
        assert_eq!(light.events[0].sequence, 42);
        let description = &light.events[0]
            .indicator
            .as_ref()
            .expect("indicator")
            .description;
        assert_eq!(stamp_of(description), Some(7));
    }

    #[test]
    fn counts_missed_and_duplicated_sequences() {
        let mut check = SequenceCheck::new(1);
        for sequence in [1, 2, 3] {
            check.observe(sequence);
        }
        assert!(check.reached(3));
        assert_eq!((check.missed_until(3), check.duplicated), (0, 0));

        let mut check = SequenceCheck::new(1);
        for sequence in [1, 2, 2, 5, 4, 6] {
            check.observe(sequence);
        }
        assert_eq!(check.received, 6);
        assert_eq!(check.missed, 2, "3 and 4 were skipped when 5 came");
        assert_eq!(check.duplicated, 2, "2 again, and 4 after 5");
        assert_eq!(check.missed_until(8), 4, "7 and 8 never came");
        assert!(!check.reached(8));
    }
}
