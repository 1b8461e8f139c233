//! A pre-encoded `SubscribeResponse`: what the server streams to a subscriber.
//!
//! Owns: invariant 6, encode once. Every event is encoded once, by the writer, as a
//! `SubscribeResponse.events` entry (field 1, length-delimited); a frame is a list
//! of such entries (shared `Bytes`, never copied per subscriber), optionally with a
//! heartbeat entry (field 2). Concatenated entries are exactly the protobuf
//! encoding of a `SubscribeResponse`, so clients decode frames with the ordinary
//! generated type. Must never re-encode an event.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::proto;

/// Field number of `SubscribeResponse.events`.
const EVENTS_FIELD: u32 = 1;

/// Encodes an event as one `SubscribeResponse.events` entry: tag, length, message.
pub fn encode_event_entry(event: &proto::Event) -> Bytes {
    let len = event.encoded_len();
    let mut buf = Vec::with_capacity(len + 8);
    prost::encoding::encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(len as u64, &mut buf);
    event.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// Decodes an entry made by [`encode_event_entry`] back into an event.
pub fn decode_event_entry(entry: &[u8]) -> Result<proto::Event, String> {
    // An entry is itself a `SubscribeResponse` holding one event.
    let mut response = proto::SubscribeResponse::decode(entry).map_err(|e| e.to_string())?;
    match (response.events.pop(), response.events.is_empty()) {
        (Some(event), true) => Ok(event),
        _ => Err("not a single SubscribeResponse.events entry".into()),
    }
}

/// One message of a Subscribe stream, made of pre-encoded entries.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    entries: Vec<Bytes>,
    len: usize,
}

impl Frame {
    pub fn with_capacity(entries: usize) -> Self {
        Frame {
            entries: Vec::with_capacity(entries),
            len: 0,
        }
    }

    /// Adds one pre-encoded event entry (shared, not copied).
    pub fn push_entry(&mut self, entry: Bytes) {
        self.len += entry.len();
        self.entries.push(entry);
    }

    /// A frame holding only a heartbeat.
    pub fn heartbeat(heartbeat: proto::Heartbeat) -> Self {
        let encoded = proto::SubscribeResponse {
            events: Vec::new(),
            heartbeat: Some(heartbeat),
        }
        .encode_to_vec();
        let mut frame = Frame::with_capacity(1);
        frame.push_entry(Bytes::from(encoded));
        frame
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries (events, or one heartbeat).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// The entries, shared with the feed and every other frame holding them.
    pub fn parts(&self) -> &[Bytes] {
        &self.entries
    }

    /// Encoded size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// The same frame with its entries copied into one buffer of its own, so
    /// that it keeps nothing else alive while it waits in a queue: an entry read
    /// from the log is a slice of its whole stored block (up to 6 KiB), and a
    /// filtering subscriber may want one entry of each block (the budget counts
    /// the entries, not the blocks). Copies bytes; never re-encodes.
    pub fn detached(self) -> Frame {
        let mut buffer = BytesMut::with_capacity(self.len);
        for entry in &self.entries {
            buffer.extend_from_slice(entry);
        }
        let buffer = buffer.freeze();
        let mut at = 0;
        let entries = self
            .entries
            .iter()
            .map(|entry| {
                let part = buffer.slice(at..at + entry.len());
                at += entry.len();
                part
            })
            .collect();
        Frame {
            entries,
            len: self.len,
        }
    }
}

impl Message for Frame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for entry in &self.entries {
            buf.put_slice(entry);
        }
    }

    /// The hub only sends frames; a received one is skipped field by field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64) -> proto::Event {
        proto::Event {
            sequence,
            event_id: format!("id-{sequence}"),
            source_org: "bank-a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_frame_of_entries_decodes_as_a_subscribe_response() {
        let mut frame = Frame::default();
        frame.push_entry(encode_event_entry(&event(1)));
        frame.push_entry(encode_event_entry(&event(2)));
        let bytes = frame.encode_to_vec();
        assert_eq!(bytes.len(), frame.encoded_len());
        let decoded = proto::SubscribeResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.events, vec![event(1), event(2)]);
        assert!(decoded.heartbeat.is_none());
    }

    #[test]
    fn a_detached_frame_holds_the_same_entries_in_memory_of_its_own() {
        let block =
            Bytes::from([encode_event_entry(&event(1)), encode_event_entry(&event(2))].concat());
        let first_len = encode_event_entry(&event(1)).len();
        let mut frame = Frame::default();
        frame.push_entry(block.slice(first_len..));
        let detached = frame.clone().detached();
        assert_eq!(detached.encode_to_vec(), frame.encode_to_vec());
        assert_eq!(detached.byte_len(), frame.byte_len());
        let block_range = block.as_ptr_range();
        assert!(
            !block_range.contains(&detached.parts()[0].as_ptr()),
            "the entry no longer points into the block"
        );
    }

    #[test]
    fn an_entry_round_trips() {
        let entry = encode_event_entry(&event(7));
        assert_eq!(decode_event_entry(&entry).expect("decodes"), event(7));
    }

    #[test]
    fn a_heartbeat_frame_decodes() {
        let frame = Frame::heartbeat(proto::Heartbeat {
            head_sequence: 42,
            time: None,
            delivered_through: 40,
        });
        let decoded =
            proto::SubscribeResponse::decode(frame.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.heartbeat.map(|h| h.head_sequence), Some(42));
        assert!(decoded.events.is_empty());
    }
}
