//! Validation: requests from the wire become domain values, or a clear refusal.
//!
//! Owns: invariant 7 at the edge. Each request is converted whole (every field
//! destructured, so a new proto field does not compile until it is handled) and
//! refused whole with INVALID_ARGUMENT naming the field, the problem and the
//! expected form. Values get their canonical form from [`crate::normalize`].
//! Must never consult storage or the caller's identity.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::indicator::{
    Action, ActionType, EventType, Indicator, IndicatorKey, Kind, Millis, Risk, Tlp, now_millis,
};
use crate::log::MAX_IDEMPOTENCY_KEY_LEN;
use crate::normalize;
use crate::proto::{self, ValueName};
use crate::snapshot::SnapshotFilter;
use crate::subscription::Filter;
use crate::wire;

/// Most indicators in one Publish.
pub const MAX_BATCH: usize = 1000;
/// Longest description, reason or note, in bytes.
pub const MAX_TEXT_LEN: usize = 2048;
/// Longest durable consumer name.
pub const MAX_CONSUMER_LEN: usize = 64;
/// Heartbeat interval when the subscriber asks for none.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Longest heartbeat interval a subscriber may ask for.
pub const MAX_HEARTBEAT_SECONDS: u32 = 3600;

/// A validated Publish.
#[derive(Clone, Debug)]
pub struct PublishBatch {
    pub indicators: Vec<Indicator>,
    pub idempotency_key: Option<String>,
}

impl TryFrom<proto::PublishRequest> for PublishBatch {
    type Error = Error;

    fn try_from(request: proto::PublishRequest) -> Result<Self> {
        let proto::PublishRequest {
            indicators,
            idempotency_key,
        } = request;
        if indicators.is_empty() {
            return Err(Error::invalid(
                "indicators",
                "the batch is empty",
                format!("1 to {MAX_BATCH} indicators"),
            ));
        }
        if indicators.len() > MAX_BATCH {
            return Err(Error::invalid(
                "indicators",
                format!("the batch has {} indicators", indicators.len()),
                format!("at most {MAX_BATCH} per Publish; split the batch"),
            ));
        }
        let indicators = indicators
            .into_iter()
            .enumerate()
            .map(|(i, indicator)| validate_indicator(&format!("indicators[{i}]"), indicator))
            .collect::<Result<Vec<_>>>()?;
        Ok(PublishBatch {
            indicators,
            idempotency_key: idempotency(&idempotency_key)?,
        })
    }
}

fn validate_indicator(field: &str, indicator: proto::Indicator) -> Result<Indicator> {
    let proto::Indicator {
        kind,
        value,
        category,
        risk,
        description,
        valid_until,
        tlp,
    } = indicator;
    let key = indicator_key(field, kind, &value)?;
    let valid_until = valid_until
        .map(|t| future_time(&format!("{field}.valid_until"), &t, now_millis()))
        .transpose()?;
    Ok(Indicator {
        key,
        category: required_enum(&format!("{field}.category"), category)?,
        risk: required_enum(&format!("{field}.risk"), risk)?,
        description: text(&format!("{field}.description"), description)?,
        valid_until,
        tlp: match tlp {
            0 => Tlp::Clear,
            _ => required_enum(&format!("{field}.tlp"), tlp)?,
        },
    })
}

/// Kind and value, normalized: what identifies an indicator.
pub fn indicator_key(field: &str, kind: i32, value: &str) -> Result<IndicatorKey> {
    let kind: Kind = required_enum(&format!("{field}.kind"), kind)?;
    let value = normalize::normalize(kind, value).map_err(|invalid| {
        Error::invalid(format!("{field}.value"), invalid.problem, invalid.expected)
    })?;
    Ok(IndicatorKey { kind, value })
}

/// A validated Revoke.
#[derive(Clone, Debug)]
pub struct RevokeCommand {
    pub key: IndicatorKey,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

impl TryFrom<proto::RevokeRequest> for RevokeCommand {
    type Error = Error;

    fn try_from(request: proto::RevokeRequest) -> Result<Self> {
        let proto::RevokeRequest {
            kind,
            value,
            reason,
            idempotency_key,
        } = request;
        let reason = text("reason", reason)?;
        if reason.trim().is_empty() {
            return Err(Error::invalid(
                "reason",
                "is empty",
                "why the indicator is withdrawn, e.g. \"false positive: number belongs to a hospital\"",
            ));
        }
        Ok(RevokeCommand {
            key: indicator_key("indicator", kind, &value)?,
            reason,
            idempotency_key: idempotency(&idempotency_key)?,
        })
    }
}

/// A validated ReportAction.
#[derive(Clone, Debug)]
pub struct ActionCommand {
    pub key: IndicatorKey,
    pub action: Action,
    pub idempotency_key: Option<String>,
}

impl TryFrom<proto::ReportActionRequest> for ActionCommand {
    type Error = Error;

    fn try_from(request: proto::ReportActionRequest) -> Result<Self> {
        let proto::ReportActionRequest {
            kind,
            value,
            action,
            note,
            idempotency_key,
        } = request;
        let action_type: ActionType = required_enum("action", action)?;
        Ok(ActionCommand {
            key: indicator_key("indicator", kind, &value)?,
            action: Action {
                action_type,
                note: text("note", note)?,
            },
            idempotency_key: idempotency(&idempotency_key)?,
        })
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The consumer's durable cursor if it has one, else the beginning.
    Default,
    After(u64),
    Now,
}

/// The refusal of a subscription whose start (`after`) is beyond the hub's
/// `head`: OUT_OF_RANGE naming the field, the start and the head (the hub does
/// not hold those events: it is another hub, or restored from an older backup).
pub fn start_beyond_head(
    start: Start,
    consumer: Option<&str>,
    after: u64,
    head: u64,
) -> Option<Error> {
    if after <= head {
        return None;
    }
    let (field, what) = match (start, consumer) {
        (Start::Default, Some(consumer)) => {
            ("consumer", format!("{consumer}'s acknowledged sequence is"))
        }
        _ => ("after_sequence", "is".to_string()),
    };
    Some(Error::OutOfRange(format!(
        "{field}: {what} {after}, beyond the hub's newest durable sequence {head}; \
         this hub does not hold those events (is it the right hub, or restored from an \
         older backup?): resume at or before {head}"
    )))
}

/// A validated Subscribe.
#[derive(Clone, Debug)]
pub struct SubscribeCommand {
    pub filter: Filter,
    pub start: Start,
    pub consumer: Option<String>,
    pub heartbeat: Duration,
}

impl TryFrom<proto::SubscribeRequest> for SubscribeCommand {
    type Error = Error;

    fn try_from(request: proto::SubscribeRequest) -> Result<Self> {
        let proto::SubscribeRequest {
            filter,
            after_sequence,
            from_now,
            consumer,
            heartbeat_seconds,
        } = request;
        let start = match (after_sequence, from_now) {
            (0, false) => Start::Default,
            (0, true) => Start::Now,
            (after, false) => Start::After(after),
            (_, true) => {
                return Err(Error::invalid(
                    "after_sequence",
                    "is set together with from_now",
                    "either after_sequence or from_now, not both",
                ));
            }
        };
        if heartbeat_seconds > MAX_HEARTBEAT_SECONDS {
            return Err(Error::invalid(
                "heartbeat_seconds",
                format!("{heartbeat_seconds} is too long"),
                format!("0 (the hub's default) to {MAX_HEARTBEAT_SECONDS} seconds"),
            ));
        }
        Ok(SubscribeCommand {
            filter: filter_of(filter.unwrap_or_default())?,
            start,
            consumer: optional_consumer(&consumer)?,
            heartbeat: match heartbeat_seconds {
                0 => DEFAULT_HEARTBEAT,
                s => Duration::from_secs(u64::from(s)),
            },
        })
    }
}

pub fn filter_of(filter: proto::Filter) -> Result<Filter> {
    let proto::Filter {
        kinds,
        categories,
        min_risk,
        types,
    } = filter;
    Ok(Filter {
        kinds: enums("filter.kinds", &kinds)?,
        categories: enums("filter.categories", &categories)?,
        min_risk: match min_risk {
            0 => None,
            risk => Some(required_enum::<Risk>("filter.min_risk", risk)?),
        },
        types: enums::<EventType>("filter.types", &types)?,
    })
}

/// A durable consumer name, if one is given.
pub fn optional_consumer(name: &str) -> Result<Option<String>> {
    if name.is_empty() {
        return Ok(None);
    }
    let ok = name.len() <= MAX_CONSUMER_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Error::invalid(
            "consumer",
            format!("{name:?} is not a valid consumer name"),
            format!("1 to {MAX_CONSUMER_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-'"),
        ));
    }
    Ok(Some(name.to_string()))
}

fn idempotency(key: &str) -> Result<Option<String>> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::invalid(
            "idempotency_key",
            format!("{} bytes or non-printable characters", key.len()),
            format!("at most {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters, e.g. a UUID"),
        ));
    }
    Ok(Some(key.to_string()))
}

fn text(field: &str, value: String) -> Result<String> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long", value.len()),
            format!("at most {MAX_TEXT_LEN} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(
            field,
            "contains control characters",
            "printable text (newlines and tabs allowed)",
        ));
    }
    Ok(value)
}

fn future_time(field: &str, time: &prost_types::Timestamp, now: Millis) -> Result<Millis> {
    let millis = wire::millis(time);
    if millis <= now {
        return Err(Error::invalid(
            field,
            "is in the past",
            "a future time, or no valid_until for an indicator that does not expire",
        ));
    }
    Ok(millis)
}

/// A protobuf enumeration value that must be set and known.
fn required_enum<E>(field: &str, value: i32) -> Result<E>
where
    E: TryFrom<i32> + ValueName,
{
    match E::try_from(value) {
        Ok(e) if value != 0 => Ok(e),
        _ => Err(Error::invalid(
            field,
            if value == 0 {
                "is not set".to_string()
            } else {
                format!("{value} is not a known value")
            },
            format!("one of {}", E::short_names().join(", ")),
        )),
    }
}

fn enums<E>(field: &str, values: &[i32]) -> Result<Vec<E>>
where
    E: TryFrom<i32> + ValueName,
{
    values
        .iter()
        .enumerate()
        .map(|(i, v)| required_enum(&format!("{field}[{i}]"), *v))
        .collect()
}

/// A validated Ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckCommand {
    pub consumer: String,
    pub sequence: u64,
}

impl TryFrom<proto::AckRequest> for AckCommand {
    type Error = Error;

    fn try_from(request: proto::AckRequest) -> Result<Self> {
        let proto::AckRequest { consumer, sequence } = request;
        let consumer = optional_consumer(&consumer)?.ok_or_else(|| {
            Error::invalid(
                "consumer",
                "is empty",
                format!(
                    "the name the consumer subscribes with: 1 to {MAX_CONSUMER_LEN} characters \
                     of A-Z, a-z, 0-9, '.', '_', '-'"
                ),
            )
        })?;
        Ok(AckCommand { consumer, sequence })
    }
}

/// A validated Snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotCommand {
    pub filter: SnapshotFilter,
}

impl TryFrom<proto::SnapshotRequest> for SnapshotCommand {
    type Error = Error;

    fn try_from(request: proto::SnapshotRequest) -> Result<Self> {
        let proto::SnapshotRequest { filter } = request;
        let Filter {
            kinds,
            categories,
            min_risk,
            types,
        } = filter_of(filter.unwrap_or_default())?;
        if !types.is_empty() {
            return Err(Error::invalid(
                "filter.types",
                "event types do not apply to a snapshot of active indicators",
                "no types (filter by kinds, categories and min_risk)",
            ));
        }
        Ok(SnapshotCommand {
            filter: SnapshotFilter {
                kinds,
                categories,
                min_risk,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Category;

    fn phone(value: &str) -> proto::Indicator {
        proto::Indicator {
            kind: Kind::PhoneNumber as i32,
            value: value.into(),
            category: Category::FraudCall as i32,
            risk: Risk::High as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_or_oversized_batch_is_refused_with_the_limit() {
        let empty = PublishBatch::try_from(proto::PublishRequest::default()).expect_err("empty");
        assert!(empty.to_string().contains("1 to 1000"));
        let big = proto::PublishRequest {
            indicators: vec![phone("9876543210"); MAX_BATCH + 1],
            idempotency_key: String::new(),
        };
        let error = PublishBatch::try_from(big).expect_err("too big");
        assert!(error.to_string().contains("at most 1000"), "{error}");
    }

    #[test]
    fn one_bad_indicator_refuses_the_batch_naming_its_field() {
        let mut bad = phone("9876543210");
        bad.category = 0;
        let request = proto::PublishRequest {
            indicators: vec![phone("9876543210"), bad],
            idempotency_key: String::new(),
        };
        let error = PublishBatch::try_from(request).expect_err("refused");
        let message = error.to_string();
        assert!(
            message.starts_with("indicators[1].category: is not set"),
            "{message}"
        );
        assert!(message.contains("FRAUD_CALL"), "{message}");
    }

    #[test]
    fn unknown_enum_values_and_past_expiry_are_refused() {
        let mut bad = phone("9876543210");
        bad.risk = 42;
        let request = proto::PublishRequest {
            indicators: vec![bad],
            idempotency_key: String::new(),
        };
        assert!(
            PublishBatch::try_from(request)
                .expect_err("refused")
                .to_string()
                .contains("42 is not a known value")
        );
        let mut past = phone("9876543210");
        past.valid_until = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let request = proto::PublishRequest {
            indicators: vec![past],
            idempotency_key: String::new(),
        };
        assert!(
            PublishBatch::try_from(request)
                .expect_err("refused")
                .to_string()
                .contains("valid_until: is in the past")
        );
    }

    #[test]
    fn subscribe_refuses_two_starts() {
        let request = proto::SubscribeRequest {
            after_sequence: 5,
            from_now: true,
            ..Default::default()
        };
        assert!(SubscribeCommand::try_from(request).is_err());
    }
}
