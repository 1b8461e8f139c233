//! The hub's domain vocabulary: indicators, their keys, and the events about them.
//!
//! Owns: the types every step of the pipeline works on. The enumerations are the
//! contract's own (`proto`), re-exported under domain names; messages are domain
//! structs, converted at the API edge. Must never do I/O.

use crate::proto::ValueName;
use uuid::Uuid;

pub use crate::proto::{
    ActionType, Category, EventType, IndicatorKind as Kind, IndicatorStatus as Status, Risk, Tlp,
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis() as Millis
}

/// What identifies an indicator: its kind and its normalized value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndicatorKey {
    pub kind: Kind,
    pub value: String,
}

impl IndicatorKey {
    /// Storage form: one byte of kind, then the normalized value. Sorts by kind.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.value.len());
        bytes.push(self.kind as i32 as u8);
        bytes.extend_from_slice(self.value.as_bytes());
        bytes
    }
}

impl std::fmt::Display for IndicatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.short_name(), self.value)
    }
}

/// A validated, normalized indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicator {
    pub key: IndicatorKey,
    pub category: Category,
    pub risk: Risk,
    pub description: String,
    pub valid_until: Option<Millis>,
    pub tlp: Tlp,
}

/// ACTION_TAKEN: what an organisation did about an indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub action_type: ActionType,
    pub note: String,
}

/// The organisation (and certificate) an event is attributed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub org_id: String,
    pub cert_serial: String,
}

/// One entry of the hub's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The indicator as it stands after this event (normalized).
    pub indicator: Indicator,
    pub source: Source,
    pub time: Millis,
    /// REVOKED: why.
    pub reason: String,
    /// ACTION_TAKEN: what was done.
    pub action: Option<Action>,
}
