//! The STIX 2.1 form of the hub's events, organisations and TLP markings.
//!
//! Owns: the mapping table README's "TAXII 2.1" section documents: each event
//! about an indicator (PUBLISHED, REVOKED, EXPIRED) is a version of one STIX
//! `indicator` whose id is derived from the indicator's key (UUIDv5); SIGHTING
//! and ACTION_TAKEN are STIX `sighting`s of it; organisations are `identity`
//! objects; TLP levels are the TLP 2.0 `marking-definition`s. Pure: no I/O, no
//! clock. Must never decide who may see what (that is `policy`, applied by the
//! caller) nor put anything in an object that the hub's event does not hold.

use serde_json::{Map, Value, json};
use uuid::{Builder, Uuid};

use crate::indicator::{
    ActionType, Category, Event, EventType, IndicatorKey, Kind, Millis, Risk, Tlp,
};
use crate::registry::{Org, Role};

/// The STIX media type of every object served.
pub const STIX_MEDIA_TYPE: &str = "application/stix+json;version=2.1";

/// The namespace of the hub's UUIDv5 ids (a fixed, random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_1b2e_8f5a_4c3e_9a7d_2b4f_1e0c_5a93);

/// `created` and `modified` of the identity objects, which have no history.
const IDENTITY_CREATED: &str = "2024-01-01T00:00:00.000Z";

/// The TLP 2.0 marking definitions' extension (OASIS, "TLP 2.0 marking definitions").
const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";
/// `created` of the TLP 2.0 marking definitions, as published.
const TLP2_CREATED: &str = "2022-10-01T00:00:00.000Z";

/// Every TLP level the hub stores: (level, STIX id, name, `tlp_2_0` value).
const TLP_MARKINGS: [(Tlp, &str, &str, &str); 4] = [
    (
        Tlp::Clear,
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        "TLP:CLEAR",
        "clear",
    ),
    (
        Tlp::Green,
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        "TLP:GREEN",
        "green",
    ),
    (
        Tlp::Amber,
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        "TLP:AMBER",
        "amber",
    ),
    (
        Tlp::Red,
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        "TLP:RED",
        "red",
    ),
];

/// A UUIDv5 in the hub's namespace (SHA-1 as RFC 9562 specifies).
fn uuid_v5(name: &[u8]) -> Uuid {
    let mut input = Vec::with_capacity(16 + name.len());
    input.extend_from_slice(NAMESPACE.as_bytes());
    input.extend_from_slice(name);
    let hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The STIX id of the indicator `key` (the same for all of its versions).
pub fn indicator_id(key: &IndicatorKey) -> String {
    let mut name = b"indicator/".to_vec();
    name.extend_from_slice(&key.to_bytes());
    format!("indicator--{}", uuid_v5(&name))
}

/// The STIX id of the sighting an event (SIGHTING or ACTION_TAKEN) is.
pub fn sighting_id(event: &Event) -> String {
    let mut name = b"sighting/".to_vec();
    name.extend_from_slice(event.event_id.as_bytes());
    format!("sighting--{}", uuid_v5(&name))
}

/// The STIX id of the identity of organisation `org_id`.
pub fn identity_id(org_id: &str) -> String {
    format!(
        "identity--{}",
        uuid_v5(format!("identity/{org_id}").as_bytes())
    )
}

/// The id of a TAXII collection named `name` (a UUIDv5, stable across restarts).
pub fn collection_id(name: &str) -> String {
    uuid_v5(format!("taxii-collection/{name}").as_bytes()).to_string()
}

/// The STIX id of the TLP 2.0 marking definition of `tlp` (none for unspecified).
pub fn marking_id(tlp: Tlp) -> Option<&'static str> {
    TLP_MARKINGS
        .iter()
        .find(|(level, ..)| *level == tlp)
        .map(|(_, id, ..)| *id)
}

/// A STIX timestamp (RFC 3339, UTC, millisecond precision) of `millis`.
pub fn timestamp(millis: Millis) -> String {
    timestamp_digits(millis, 3)
}

/// A TAXII `date_added` (microsecond precision, as TAXII 2.1 asks) of `millis`.
pub fn date_added(millis: Millis) -> String {
    timestamp_digits(millis, 6)
}

fn timestamp_digits(millis: Millis, digits: usize) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fraction = format!("{:03}000", millis.rem_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        &fraction[..digits]
    )
}

/// What kind of STIX object an event becomes.
pub fn object_type(event_type: EventType) -> Option<&'static str> {
    match event_type {
        EventType::Published | EventType::Revoked | EventType::Expired | EventType::Withdrawn => {
            Some("indicator")
        }
        EventType::Sighting | EventType::ActionTaken => Some("sighting"),
        EventType::Unspecified => None,
    }
}

/// The STIX id of the object `event` becomes.
pub fn object_id(event: &Event) -> Option<String> {
    match object_type(event.event_type)? {
        "indicator" => Some(indicator_id(&event.indicator.key)),
        _ => Some(sighting_id(event)),
    }
}

/// When the object an event becomes was first created: for an indicator, the
/// start of its current life (`first_seen`), if the event belongs to it.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub first_seen: Option<Millis>,
}

/// The STIX object `event` becomes; `owner` is the organisation whose marking
/// governs it (the record's `source_org`), its `created_by_ref`.
pub fn object(event: &Event, owner: &str, context: Context) -> Option<Value> {
    match object_type(event.event_type)? {
        "indicator" => Some(indicator(event, owner, context)),
        _ => Some(sighting(event)),
    }
}

fn indicator(event: &Event, owner: &str, context: Context) -> Value {
    let ind = &event.indicator;
    let modified = event.time;
    let created = context
        .first_seen
        .filter(|first| *first <= modified)
        .unwrap_or(modified);
    // valid_until must be later than valid_from (an indicator expired in an
    // earlier life keeps its own window).
    let valid_from = match ind.valid_until {
        Some(until) if until <= created => until - 1,
        _ => created,
    };
    let mut object = Map::new();
    object.insert("type".into(), json!("indicator"));
    object.insert("spec_version".into(), json!("2.1"));
    object.insert("id".into(), json!(indicator_id(&ind.key)));
    object.insert("created_by_ref".into(), json!(identity_id(owner)));
    object.insert("created".into(), json!(timestamp(created.min(valid_from))));
    object.insert("modified".into(), json!(timestamp(modified)));
    object.insert(
        "name".into(),
        json!(format!("{} {}", kind_label(ind.key.kind), ind.key.value)),
    );
    if !ind.description.is_empty() {
        object.insert("description".into(), json!(ind.description));
    }
    object.insert("indicator_types".into(), json!(["malicious-activity"]));
    object.insert("pattern".into(), json!(pattern(&ind.key)));
    object.insert("pattern_type".into(), json!("stix"));
    object.insert("pattern_version".into(), json!("2.1"));
    object.insert("valid_from".into(), json!(timestamp(valid_from)));
    if let Some(until) = ind.valid_until {
        object.insert("valid_until".into(), json!(timestamp(until)));
    }
    object.insert("confidence".into(), json!(confidence(ind.risk)));
    object.insert("labels".into(), json!([category_label(ind.category)]));
    // A WITHDRAWN is, for the viewers it reaches, the end of the indicator as
    // they were shown it: a version with revoked: true.
    let revoked = matches!(
        event.event_type,
        EventType::Revoked | EventType::Expired | EventType::Withdrawn
    );
    object.insert("revoked".into(), json!(revoked));
    if let Some(marking) = marking_id(ind.tlp) {
        object.insert("object_marking_refs".into(), json!([marking]));
    }
    object.insert("x_dip_kind".into(), json!(kind_label(ind.key.kind)));
    object.insert("x_dip_value".into(), json!(ind.key.value));
    object.insert("x_dip_risk".into(), json!(risk_label(ind.risk)));
    object.insert("x_dip_event".into(), json!(event_label(event.event_type)));
    object.insert("x_dip_event_org".into(), json!(event.source.org_id));
    object.insert("x_dip_sequence".into(), json!(event.sequence));
    if event.event_type == EventType::Revoked && !event.reason.is_empty() {
        object.insert("x_dip_revoke_reason".into(), json!(event.reason));
    }
    Value::Object(object)
}

fn sighting(event: &Event) -> Value {
    let ind = &event.indicator;
    let at = timestamp(event.time);
    let mut object = Map::new();
    object.insert("type".into(), json!("sighting"));
    object.insert("spec_version".into(), json!("2.1"));
    object.insert("id".into(), json!(sighting_id(event)));
    object.insert(
        "created_by_ref".into(),
        json!(identity_id(&event.source.org_id)),
    );
    object.insert("created".into(), json!(at));
    object.insert("modified".into(), json!(at));
    object.insert("first_seen".into(), json!(at));
    object.insert("last_seen".into(), json!(at));
    object.insert("count".into(), json!(1));
    object.insert("sighting_of_ref".into(), json!(indicator_id(&ind.key)));
    object.insert(
        "where_sighted_refs".into(),
        json!([identity_id(&event.source.org_id)]),
    );
    if let Some(marking) = marking_id(ind.tlp) {
        object.insert("object_marking_refs".into(), json!([marking]));
    }
    object.insert("x_dip_event".into(), json!(event_label(event.event_type)));
    object.insert("x_dip_sequence".into(), json!(event.sequence));
    if let Some(action) = &event.action {
        object.insert(
            "x_dip_action".into(),
            json!(action_label(action.action_type)),
        );
        if !action.note.is_empty() {
            object.insert("x_dip_action_note".into(), json!(action.note));
        }
    }
    Value::Object(object)
}

/// The `identity` of a registered organisation.
pub fn identity(org: &Org) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(&org.id),
        "created": IDENTITY_CREATED,
        "modified": IDENTITY_CREATED,
        "name": org.name,
        "identity_class": "organization",
        "sectors": [sector(org.role)],
        "x_dip_org_id": org.id,
        "x_dip_role": org.role.as_str(),
    })
}

/// The TLP 2.0 marking definitions, as OASIS publishes them.
pub fn tlp_markings() -> Vec<Value> {
    TLP_MARKINGS
        .iter()
        .map(|(_, id, name, level)| {
            json!({
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": id,
                "created": TLP2_CREATED,
                "name": name,
                "extensions": {
                    TLP2_EXTENSION: {
                        "extension_type": "property-extension",
                        "tlp_2_0": level,
                    }
                },
            })
        })
        .collect()
}

/// The STIX pattern matching an indicator's (normalized) value.
pub fn pattern(key: &IndicatorKey) -> String {
    let object = match key.kind {
        Kind::Url => "url",
        Kind::Domain => "domain-name",
        Kind::IpAddress if key.value.contains(':') => "ipv6-addr",
        Kind::IpAddress => "ipv4-addr",
        Kind::Email => "email-addr",
        Kind::PhoneNumber => "x-dip-phone-number",
        Kind::Imei => "x-dip-imei",
        Kind::UpiId => "x-dip-upi-id",
        Kind::BankAccount => "x-dip-bank-account",
        Kind::SmsHeader => "x-dip-sms-header",
        Kind::Unspecified => "x-dip-unspecified",
    };
    format!("[{object}:value = '{}']", escape(&key.value))
}

/// A STIX pattern string literal: backslash and quote escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// STIX confidence (0-100) of a risk level.
pub fn confidence(risk: Risk) -> u8 {
    match risk {
        Risk::Unspecified => 0,
        Risk::Medium => 50,
        Risk::High => 75,
        Risk::VeryHigh => 95,
    }
}

/// The kind's name in the wire contract (also the collection names' source).
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Unspecified => "unspecified",
        Kind::PhoneNumber => "phone-number",
        Kind::Imei => "imei",
        Kind::Url => "url",
        Kind::Domain => "domain",
        Kind::IpAddress => "ip-address",
        Kind::UpiId => "upi-id",
        Kind::BankAccount => "bank-account",
        Kind::Email => "email",
        Kind::SmsHeader => "sms-header",
    }
}

fn category_label(category: Category) -> &'static str {
    match category {
        Category::Unspecified => "unspecified",
        Category::FraudCall => "fraud-call",
        Category::Spam => "spam",
        Category::Phishing => "phishing",
        Category::MuleAccount => "mule-account",
        Category::StolenHandset => "stolen-handset",
        Category::FakeKyc => "fake-kyc",
        Category::Disconnected => "disconnected",
        Category::VoipAbuse => "voip-abuse",
    }
}

fn risk_label(risk: Risk) -> &'static str {
    match risk {
        Risk::Unspecified => "unspecified",
        Risk::Medium => "medium",
        Risk::High => "high",
        Risk::VeryHigh => "very-high",
    }
}

fn event_label(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Unspecified => "unspecified",
        EventType::Published => "published",
        EventType::Revoked => "revoked",
        EventType::Expired => "expired",
        EventType::Sighting => "sighting",
        EventType::ActionTaken => "action-taken",
        EventType::Withdrawn => "withdrawn",
    }
}

fn action_label(action: ActionType) -> &'static str {
    match action {
        ActionType::Unspecified => "unspecified",
        ActionType::NumberDisconnected => "number-disconnected",
        ActionType::AccountFrozen => "account-frozen",
        ActionType::AccountDeregistered => "account-deregistered",
        ActionType::UpiIdDelinked => "upi-id-delinked",
        ActionType::UrlBlocked => "url-blocked",
        ActionType::HandsetBlocked => "handset-blocked",
        ActionType::OtherAction => "other-action",
    }
}

/// The STIX industry sector of a role.
fn sector(role: Role) -> &'static str {
    match role {
        Role::Regulator | Role::LawEnforcement => "government-national",
        Role::Bank | Role::PaymentOperator => "financial-services",
        Role::Tsp => "telecommunications",
        Role::Platform => "technology",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, value: &str) -> IndicatorKey {
        IndicatorKey {
            kind,
            value: value.into(),
        }
    }

    #[test]
    fn ids_are_deterministic_uuid_v5_and_differ_by_kind() {
        let a = indicator_id(&key(Kind::Domain, "example.com"));
        assert_eq!(a, indicator_id(&key(Kind::Domain, "example.com")));
        assert_ne!(a, indicator_id(&key(Kind::Url, "example.com")));
        let uuid: Uuid = a.trim_start_matches("indicator--").parse().expect("uuid");
        assert_eq!(uuid.get_version_num(), 5);
    }

    #[test]
    fn patterns_escape_quotes_and_pick_the_ip_version() {
        assert_eq!(
            pattern(&key(Kind::Url, "http://x.example/a'b\\c")),
            "[url:value = 'http://x.example/a\\'b\\\\c']"
        );
        assert_eq!(
            pattern(&key(Kind::IpAddress, "2001:db8::1")),
            "[ipv6-addr:value = '2001:db8::1']"
        );
        assert_eq!(
            pattern(&key(Kind::IpAddress, "203.0.113.7")),
            "[ipv4-addr:value = '203.0.113.7']"
        );
    }

    fn event(event_type: EventType, time: Millis, valid_until: Option<Millis>) -> Event {
        Event {
            sequence: 7,
            event_id: Uuid::from_u128(42),
            event_type,
            indicator: crate::indicator::Indicator {
                key: key(Kind::PhoneNumber, "+919876543210"),
                category: Category::FraudCall,
                risk: Risk::VeryHigh,
                description: String::new(),
                valid_until,
                tlp: Tlp::Green,
            },
            source: crate::indicator::Source {
                org_id: "hub".into(),
                cert_serial: String::new(),
            },
            time,
            reason: String::new(),
            action: None,
        }
    }

    #[test]
    fn an_expiry_is_a_revoked_version_valid_before_it_ends() {
        let first_seen = Context {
            first_seen: Some(1_000),
        };
        let expired = object(
            &event(EventType::Expired, 9_000, Some(5_000)),
            "police",
            first_seen,
        )
        .expect("an indicator");
        assert_eq!(expired["revoked"], true);
        assert_eq!(expired["created"], timestamp(1_000));
        assert_eq!(expired["valid_from"], timestamp(1_000));
        assert_eq!(expired["modified"], timestamp(9_000));
        assert_eq!(expired["confidence"], 95);
        assert_eq!(
            expired["pattern"],
            "[x-dip-phone-number:value = '+919876543210']"
        );
        assert_eq!(expired["created_by_ref"], identity_id("police").as_str());
        // An event of an earlier life (first seen later) still has valid_from < valid_until.
        let earlier = object(
            &event(EventType::Expired, 9_000, Some(5_000)),
            "police",
            Context {
                first_seen: Some(20_000),
            },
        )
        .expect("an indicator");
        assert_eq!(earlier["valid_from"], timestamp(4_999));
    }

    #[test]
    fn sightings_and_actions_are_sightings_of_the_indicator() {
        let mut action = event(EventType::ActionTaken, 2_000, None);
        action.action = Some(crate::indicator::Action {
            action_type: ActionType::NumberDisconnected,
            note: "done".into(),
        });
        let sighting = object(&action, "police", Context { first_seen: None }).expect("sighting");
        assert_eq!(sighting["type"], "sighting");
        assert_eq!(
            sighting["sighting_of_ref"],
            indicator_id(&action.indicator.key).as_str()
        );
        assert_eq!(sighting["created_by_ref"], identity_id("hub").as_str());
        assert_eq!(sighting["x_dip_action"], "number-disconnected");
        assert_eq!(sighting["id"], sighting_id(&action).as_str());
    }

    #[test]
    fn timestamps_are_utc_with_fixed_precision() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(date_added(1_700_000_000_123), "2023-11-14T22:13:20.123000Z");
    }
}
