//! Conversions between the domain types and their protobuf encodings.
//!
//! Owns: how events and indicator states are written on the wire and in storage
//! (the log stores exactly the bytes subscribers receive). Requests are converted
//! in `api`; this module converts what the hub itself produces. Must never accept
//! client input: decoding here is of the hub's own records.

use prost::Message;
use prost_types::Timestamp;

use crate::error::{Error, Result};
use crate::indicator::{
    Action, ActionType, Category, Event, EventType, Indicator, IndicatorKey, Kind, Millis, Risk,
    Source, Status, Tlp,
};
use crate::proto;
use crate::state::{ActionRecord, IndicatorState};

pub fn timestamp(millis: Millis) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn millis(timestamp: &Timestamp) -> Millis {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos) / 1_000_000)
}

pub fn indicator_to_proto(indicator: &Indicator) -> proto::Indicator {
    proto::Indicator {
        kind: indicator.key.kind as i32,
        value: indicator.key.value.clone(),
        category: indicator.category as i32,
        risk: indicator.risk as i32,
        description: indicator.description.clone(),
        valid_until: indicator.valid_until.map(timestamp),
        tlp: indicator.tlp as i32,
    }
}

pub fn event_to_proto(event: &Event) -> proto::Event {
    proto::Event {
        sequence: event.sequence,
        event_id: event.event_id.to_string(),
        r#type: event.event_type as i32,
        indicator: Some(indicator_to_proto(&event.indicator)),
        source_org: event.source.org_id.clone(),
        time: Some(timestamp(event.time)),
        reason: event.reason.clone(),
        action: event.action.as_ref().map(|a| proto::Action {
            r#type: a.action_type as i32,
            note: a.note.clone(),
        }),
        source_cert_serial: event.source.cert_serial.clone(),
    }
}

/// Decodes one of the hub's own stored events.
pub fn event_from_proto(event: proto::Event) -> Result<Event> {
    let sequence = event.sequence;
    let corrupt = |problem: &str| Error::Corrupt {
        sequence,
        problem: problem.to_string(),
    };
    let indicator = event
        .indicator
        .ok_or_else(|| corrupt("event has no indicator"))
        .and_then(|i| indicator_from_proto(i).ok_or_else(|| corrupt("bad indicator")))?;
    Ok(Event {
        sequence,
        event_id: event
            .event_id
            .parse()
            .map_err(|_| corrupt("event id is not a UUID"))?,
        event_type: EventType::try_from(event.r#type).map_err(|_| corrupt("bad event type"))?,
        indicator,
        source: Source {
            org_id: event.source_org,
            cert_serial: event.source_cert_serial,
        },
        time: event.time.as_ref().map(millis).unwrap_or_default(),
        reason: event.reason,
        action: event.action.map(|a| Action {
            action_type: ActionType::try_from(a.r#type).unwrap_or(ActionType::OtherAction),
            note: a.note,
        }),
    })
}

/// The hub's own stored indicator (already validated when it was published).
fn indicator_from_proto(indicator: proto::Indicator) -> Option<Indicator> {
    Some(Indicator {
        key: IndicatorKey {
            kind: Kind::try_from(indicator.kind).ok()?,
            value: indicator.value,
        },
        category: Category::try_from(indicator.category).ok()?,
        risk: Risk::try_from(indicator.risk).ok()?,
        description: indicator.description,
        valid_until: indicator.valid_until.as_ref().map(millis),
        tlp: Tlp::try_from(indicator.tlp).ok()?,
    })
}

pub fn state_to_proto(state: &IndicatorState) -> proto::IndicatorState {
    proto::IndicatorState {
        indicator: Some(indicator_to_proto(&state.indicator)),
        status: state.status as i32,
        source_org: state.source_org.clone(),
        reporters: state.reporters.iter().cloned().collect(),
        first_seen: Some(timestamp(state.first_seen)),
        last_seen: Some(timestamp(state.last_seen)),
        actions: state
            .actions
            .iter()
            .map(|a| proto::ActionRecord {
                org: a.org_id.clone(),
                action: Some(proto::Action {
                    r#type: a.action.action_type as i32,
                    note: a.action.note.clone(),
                }),
                time: Some(timestamp(a.time)),
                sequence: a.sequence,
            })
            .collect(),
        history_length: state.history_length,
        last_sequence: state.last_sequence,
        revoke_reason: state.revoke_reason.clone(),
    }
}

pub fn encode_state(state: &IndicatorState) -> Vec<u8> {
    state_to_proto(state).encode_to_vec()
}

/// What a snapshot needs of a stored state without decoding the rest of it:
/// its key (for the digest), what a filter and the viewer's marking test, and
/// the sequence it is as of. Read in place from the stored bytes, which are the
/// wire encoding of `IndicatorState` (the tags below are its fields'),
/// skipping every other field and copying nothing; the bytes themselves go to
/// the client as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateHead<'a> {
    pub indicator: Option<IndicatorHead<'a>>,
    pub status: i32,
    pub source_org: &'a str,
    pub last_sequence: u64,
}

impl StateHead<'_> {
    pub fn is_active(&self) -> bool {
        self.status == Status::Active as i32
    }
}

/// The fields of `Indicator` a [`StateHead`] holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndicatorHead<'a> {
    pub kind: i32,
    pub value: &'a str,
    pub category: i32,
    pub risk: i32,
    pub tlp: i32,
}

/// Reads the [`StateHead`] of one of the hub's own stored indicator states.
pub fn decode_state_head(bytes: &[u8]) -> Result<StateHead<'_>> {
    let corrupt = |problem: String| Error::Corrupt {
        sequence: 0,
        problem: format!("indicator state: {problem}"),
    };
    let mut head = StateHead::default();
    for field in Fields(bytes) {
        match field.map_err(corrupt)? {
            (1, Value::Bytes(indicator)) => {
                let mut parsed = IndicatorHead::default();
                for field in Fields(indicator) {
                    match field.map_err(corrupt)? {
                        (1, Value::Varint(kind)) => parsed.kind = kind as i32,
                        (2, Value::Bytes(value)) => parsed.value = utf8(value).map_err(corrupt)?,
                        (3, Value::Varint(category)) => parsed.category = category as i32,
                        (4, Value::Varint(risk)) => parsed.risk = risk as i32,
                        (7, Value::Varint(tlp)) => parsed.tlp = tlp as i32,
                        _ => {}
                    }
                }
                head.indicator = Some(parsed);
            }
            (2, Value::Varint(status)) => head.status = status as i32,
            (3, Value::Bytes(org)) => head.source_org = utf8(org).map_err(corrupt)?,
            (9, Value::Varint(sequence)) => head.last_sequence = sequence,
            _ => {}
        }
    }
    Ok(head)
}

fn utf8(bytes: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("a string field is not UTF-8: {e}"))
}

/// One protobuf field's value as read in place.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width field (skipped).
    Fixed,
}

/// The fields of one encoded protobuf message, in order: (tag, value).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = std::result::Result<(u32, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            // Nothing after a malformed field is read.
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> std::result::Result<(u32, Value<'a>), String> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| format!("field key {key} is too large"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| format!("length {len} is too large"))?;
                match self.0.split_at_checked(len) {
                    Some((value, rest)) => {
                        self.0 = rest;
                        Value::Bytes(value)
                    }
                    None => return Err(format!("field {tag} is cut short")),
                }
            }
            5 => self.skip(4)?,
            wire_type => return Err(format!("field {tag} has wire type {wire_type}")),
        };
        Ok((tag, value))
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        prost::encoding::decode_varint(&mut self.0).map_err(|e| e.to_string())
    }

    fn skip(&mut self, len: usize) -> std::result::Result<Value<'a>, String> {
        self.0 = self
            .0
            .get(len..)
            .ok_or("a fixed-width field is cut short")?;
        Ok(Value::Fixed)
    }
}

/// Decodes one of the hub's own stored indicator states.
pub fn decode_state(bytes: &[u8]) -> Result<IndicatorState> {
    let corrupt = |problem: &str| Error::Corrupt {
        sequence: 0,
        problem: format!("indicator state: {problem}"),
    };
    let state = proto::IndicatorState::decode(bytes).map_err(|e| corrupt(&e.to_string()))?;
    let indicator = state
        .indicator
        .and_then(indicator_from_proto)
        .ok_or_else(|| corrupt("bad indicator"))?;
    Ok(IndicatorState {
        indicator,
        status: Status::try_from(state.status).map_err(|_| corrupt("bad status"))?,
        source_org: state.source_org,
        reporters: state.reporters.into_iter().collect(),
        first_seen: state.first_seen.as_ref().map(millis).unwrap_or_default(),
        last_seen: state.last_seen.as_ref().map(millis).unwrap_or_default(),
        actions: state
            .actions
            .into_iter()
            .map(|a| {
                let action = a.action.unwrap_or_default();
                ActionRecord {
                    org_id: a.org,
                    action: Action {
                        action_type: ActionType::try_from(action.r#type)
                            .unwrap_or(ActionType::OtherAction),
                        note: action.note,
                    },
                    time: a.time.as_ref().map(millis).unwrap_or_default(),
                    sequence: a.sequence,
                }
            })
            .collect(),
        history_length: state.history_length,
        last_sequence: state.last_sequence,
        revoke_reason: state.revoke_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's tags are `IndicatorState`'s: a full stored state reads back
    /// with the same key, filter fields, marking, source and sequence.
    #[test]
    fn a_state_head_reads_the_fields_of_a_stored_state() {
        let state = IndicatorState {
            indicator: Indicator {
                key: IndicatorKey {
                    kind: Kind::UpiId,
                    value: "mule@okbank".into(),
                },
                category: Category::MuleAccount,
                risk: Risk::High,
                description: "seen in 12 complaints".into(),
                valid_until: Some(5_000),
                tlp: Tlp::Amber,
            },
            status: Status::Revoked,
            source_org: "police-a".into(),
            reporters: ["bank-b".to_string(), "police-a".to_string()].into(),
            first_seen: 1_000,
            last_seen: 2_000,
            actions: vec![ActionRecord {
                org_id: "bank-b".into(),
                action: Action {
                    action_type: ActionType::AccountFrozen,
                    note: "frozen".into(),
                },
                time: 1_500,
                sequence: 7,
            }],
            history_length: 3,
            last_sequence: 9,
            revoke_reason: "false positive".into(),
        };
        let encoded = encode_state(&state);
        let head = decode_state_head(&encoded).expect("decodes");
        assert_eq!(
            head,
            StateHead {
                indicator: Some(IndicatorHead {
                    kind: Kind::UpiId as i32,
                    value: "mule@okbank",
                    category: Category::MuleAccount as i32,
                    risk: Risk::High as i32,
                    tlp: Tlp::Amber as i32,
                }),
                status: Status::Revoked as i32,
                source_org: "police-a",
                last_sequence: 9,
            }
        );
        // Cut anywhere inside a field, the bytes are reported corrupt, not a panic.
        for len in 1..encoded.len() {
            let _ = decode_state_head(&encoded[..len]);
        }
        assert!(decode_state_head(&encoded[..encoded.len() - 1]).is_err());
    }
}
