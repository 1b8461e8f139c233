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

/// Decodes one of the hub's own stored indicator states into the wire type,
/// as a snapshot sends it (no domain conversion).
pub fn decode_stored_state(bytes: &[u8]) -> Result<proto::IndicatorState> {
    proto::IndicatorState::decode(bytes).map_err(|e| Error::Corrupt {
        sequence: 0,
        problem: format!("indicator state: {e}"),
    })
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
