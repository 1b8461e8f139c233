//! A MISP feed made from a snapshot: what `dip-hub export misp` writes.
//!
//! Owns: the mapping of the hub's indicators to MISP's feed format (one event
//! per category and TLP marking, one attribute per indicator, `manifest.json`,
//! `hashes.csv`), and carrying indicators that left the active set into the
//! next export as deleted attributes, so that a MISP that pulls the feed drops
//! them too. The mapping is pure (the time and the previous export are
//! arguments); [`read_previous`] and [`write`] are the only file I/O. Must never
//! decide visibility: it exports exactly the snapshot it is given, which the hub
//! already filtered by the caller's certificate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::indicator::{Category, Kind, Risk, Tlp};
use crate::proto::{self, ValueName};

/// The organisation MISP shows as the creator of every event (`Orgc`).
pub const CREATOR_NAME: &str = "DIP Hub";
/// A deleted attribute stays in the feed this long after it was deleted, so
/// that a MISP pulling less often still learns of it.
pub const KEEP_DELETED_SECONDS: i64 = 30 * 24 * 3600;

/// A whole feed: event files by uuid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feed {
    /// `{"Event": {...}}` by event uuid, as written to `<uuid>.json`.
    pub events: BTreeMap<String, Value>,
}

/// A name-based UUID (RFC 9562 version 8: SHA-256 of the name, its first 16 bytes).
fn uuid_of(name: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The uuid of the event holding `category` indicators marked `tlp`.
pub fn event_uuid(category: &str, tlp: &str) -> String {
    uuid_of(&format!("dip-hub/misp/event/{category}/{tlp}"))
}

/// The uuid of an indicator's attribute, the same in every export.
pub fn attribute_uuid(kind: &str, value: &str) -> String {
    uuid_of(&format!("dip-hub/misp/attribute/{kind}:{value}"))
}

/// MISP attribute type and category for a kind. MISP has no type for IMEIs, UPI
/// IDs and SMS sender headers: they are `text`, named by the `dip:kind` tag.
pub fn attribute_type(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::PhoneNumber => ("phone-number", "Financial fraud"),
        Kind::Imei => ("text", "Other"),
        Kind::Url => ("url", "Network activity"),
        Kind::Domain => ("domain", "Network activity"),
        Kind::IpAddress => ("ip-dst", "Network activity"),
        Kind::UpiId => ("text", "Financial fraud"),
        Kind::BankAccount => ("bank-account-nr", "Financial fraud"),
        Kind::Email => ("email", "Payload delivery"),
        Kind::SmsHeader => ("text", "Payload delivery"),
        Kind::Unspecified => ("text", "Other"),
    }
}

/// MISP's threat level (1 high, 2 medium, 3 low) for a risk.
pub fn threat_level(risk: Risk) -> u8 {
    match risk {
        Risk::VeryHigh => 1,
        Risk::High => 2,
        Risk::Medium | Risk::Unspecified => 3,
    }
}

/// The MISP `tlp` taxonomy tag (TLP 2.0) for a marking; unset is CLEAR.
fn tlp_tag(tlp: Tlp) -> Value {
    let (name, colour) = match tlp {
        Tlp::Red => ("tlp:red", "#CC0033"),
        Tlp::Amber => ("tlp:amber", "#FFC000"),
        Tlp::Green => ("tlp:green", "#339900"),
        Tlp::Clear | Tlp::Unspecified => ("tlp:clear", "#FFFFFF"),
    };
    tag(name, colour)
}

fn tag(name: &str, colour: &str) -> Value {
    json!({ "name": name, "colour": colour, "local": false, "relationship_type": "" })
}

fn machine_tag(predicate: &str, value: &str) -> Value {
    tag(&format!("dip:{predicate}=\"{value}\""), "#0088CC")
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds)
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn date(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "1970-01-01".into())
}

/// One event of the feed while it is built.
struct Group {
    info: String,
    /// The event's `tlp:` tag.
    tlp: Value,
    /// MISP threat level of its highest risk.
    level: u8,
    attributes: Vec<Value>,
}

/// One indicator as a MISP attribute, with the uuid of its event and what groups it there.
fn attribute(state: &proto::IndicatorState) -> (String, (Category, Tlp), Value) {
    let indicator = state.indicator.clone().unwrap_or_default();
    let kind = Kind::try_from(indicator.kind).unwrap_or(Kind::Unspecified);
    let category = Category::try_from(indicator.category).unwrap_or(Category::Unspecified);
    let risk = Risk::try_from(indicator.risk).unwrap_or(Risk::Unspecified);
    let tlp = Tlp::try_from(indicator.tlp).unwrap_or(Tlp::Unspecified);
    let (misp_type, misp_category) = attribute_type(kind);
    let mut comment = format!(
        "{} {} reported by {}",
        kind.short_name(),
        category.short_name(),
        state.source_org
    );
    if !indicator.description.is_empty() {
        comment.push_str(": ");
        comment.push_str(&indicator.description);
    }
    let mut tags = vec![
        tlp_tag(tlp),
        machine_tag("kind", kind.short_name()),
        machine_tag("category", category.short_name()),
        machine_tag("risk", risk.short_name()),
        machine_tag("source", &state.source_org),
    ];
    if let Some(until) = &indicator.valid_until {
        tags.push(machine_tag("valid-until", &until.seconds.to_string()));
    }
    let attribute = json!({
        "uuid": attribute_uuid(kind.short_name(), &indicator.value),
        "type": misp_type,
        "category": misp_category,
        "value": indicator.value,
        "to_ids": true,
        "disable_correlation": false,
        "deleted": false,
        "comment": comment,
        "timestamp": seconds(&state.last_seen).to_string(),
        "first_seen": time_iso(seconds(&state.first_seen)),
        "last_seen": time_iso(seconds(&state.last_seen)),
        "Tag": tags,
    });
    (
        event_uuid(category.short_name(), tlp_name(tlp)),
        (category, tlp),
        attribute,
    )
}

fn tlp_name(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Unspecified => Tlp::Clear.short_name(),
        other => other.short_name(),
    }
}

fn time_iso(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Feed {
    /// The feed of `indicators` (a snapshot) exported at `now` (Unix seconds),
    /// carrying forward as deleted every attribute of `previous` (the last
    /// export's events) that is no longer active, for [`KEEP_DELETED_SECONDS`].
    pub fn build(
        indicators: &[proto::IndicatorState],
        as_of_sequence: u64,
        previous: &Feed,
        now: i64,
    ) -> Feed {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut active = BTreeSet::new();
        for state in indicators {
            let (event, (category, tlp), attribute) = attribute(state);
            let risk = state
                .indicator
                .as_ref()
                .and_then(|i| Risk::try_from(i.risk).ok())
                .unwrap_or(Risk::Unspecified);
            active.insert(attribute["uuid"].as_str().unwrap_or_default().to_string());
            let group = groups.entry(event).or_insert_with(|| Group {
                info: format!(
                    "DIP Hub: {} indicators, TLP:{}",
                    category.short_name(),
                    tlp_name(tlp)
                ),
                tlp: tlp_tag(tlp),
                level: threat_level(Risk::Medium),
                attributes: Vec::new(),
            });
            group.level = group.level.min(threat_level(risk));
            group.attributes.push(attribute);
        }
        for (uuid, event) in &previous.events {
            let event = &event["Event"];
            let Some(attributes) = event["Attribute"].as_array() else {
                continue;
            };
            for old in attributes {
                let id = old["uuid"].as_str().unwrap_or_default();
                if id.is_empty() || active.contains(id) {
                    continue;
                }
                let mut gone = old.clone();
                if gone["deleted"] != true {
                    gone["deleted"] = json!(true);
                    gone["timestamp"] = json!(now.to_string());
                }
                let deleted_at = gone["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(0);
                if now - deleted_at > KEEP_DELETED_SECONDS {
                    continue;
                }
                groups
                    .entry(uuid.clone())
                    .or_insert_with(|| Group {
                        info: event["info"].as_str().unwrap_or_default().to_string(),
                        tlp: event["Tag"][0].clone(),
                        level: event["threat_level_id"]
                            .as_str()
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(3),
                        attributes: Vec::new(),
                    })
                    .attributes
                    .push(gone);
            }
        }
        let orgc = json!({ "name": CREATOR_NAME, "uuid": uuid_of("dip-hub/misp/orgc") });
        let events = groups
            .into_iter()
            .map(|(uuid, mut group)| {
                group
                    .attributes
                    .sort_by(|a, b| a["uuid"].as_str().cmp(&b["uuid"].as_str()));
                let event = json!({ "Event": {
                    "uuid": uuid,
                    "info": group.info,
                    "date": date(now),
                    "analysis": "2",
                    "threat_level_id": group.level.to_string(),
                    "timestamp": now.to_string(),
                    "publish_timestamp": now.to_string(),
                    "published": true,
                    "extends_uuid": "",
                    "Orgc": orgc,
                    "Tag": [group.tlp, machine_tag("as-of-sequence", &as_of_sequence.to_string())],
                    "Attribute": group.attributes,
                }});
                (uuid, event)
            })
            .collect();
        Feed { events }
    }

    /// `manifest.json`: each event's metadata, by uuid, as MISP reads it.
    pub fn manifest(&self) -> Value {
        let entries = self
            .events
            .iter()
            .map(|(uuid, event)| {
                let e = &event["Event"];
                let entry = json!({
                    "Orgc": e["Orgc"],
                    "Tag": e["Tag"],
                    "info": e["info"],
                    "date": e["date"],
                    "analysis": e["analysis"],
                    "threat_level_id": e["threat_level_id"],
                    "timestamp": e["timestamp"],
                });
                (uuid.clone(), entry)
            })
            .collect::<serde_json::Map<_, _>>();
        Value::Object(entries)
    }

    /// `hashes.csv`: `md5(value),event uuid` per active attribute (MISP's
    /// feed cache uses it to show which of its own values the feed holds).
    pub fn hashes_csv(&self) -> String {
        let mut out = String::new();
        for (uuid, event) in &self.events {
            let attributes = event["Event"]["Attribute"].as_array();
            for attribute in attributes.into_iter().flatten() {
                if attribute["deleted"] == true {
                    continue;
                }
                let value = attribute["value"].as_str().unwrap_or_default();
                out.push_str(&format!("{:x},{uuid}\n", md5::compute(value.as_bytes())));
            }
        }
        out
    }

    /// Active attributes (not deleted) in the feed.
    pub fn active_attributes(&self) -> usize {
        self.events
            .values()
            .filter_map(|e| e["Event"]["Attribute"].as_array())
            .flatten()
            .filter(|a| a["deleted"] != true)
            .count()
    }
}

/// The event files a previous export left in `dir` (those its manifest names).
/// A missing directory or manifest is an empty feed.
pub fn read_previous(dir: &Path) -> Result<Feed> {
    let manifest = match std::fs::read(dir.join("manifest.json")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Feed::default()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let manifest: serde_json::Map<String, Value> = serde_json::from_slice(&manifest)
        .map_err(|e| {
            Error::Config(format!(
                "{}/manifest.json is not a MISP feed manifest ({e}); export into an empty directory",
                dir.display()
            ))
        })?;
    let mut events = BTreeMap::new();
    for uuid in manifest.keys() {
        if uuid::Uuid::parse_str(uuid).is_err() {
            continue;
        }
        let path = dir.join(format!("{uuid}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let event = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Config(format!("{} is not a MISP event ({e})", path.display()))
                })?;
                events.insert(uuid.clone(), event);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(Feed { events })
}

/// Writes the feed into `dir`: the event files, `hashes.csv`, then
/// `manifest.json` (each replaced atomically, the manifest last, so a MISP
/// pulling meanwhile reads the old feed or the new one), and removes event
/// files of the previous export that the new manifest no longer names.
pub fn write(dir: &Path, feed: &Feed, previous: &Feed) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for (uuid, event) in &feed.events {
        replace(dir, &format!("{uuid}.json"), event.to_string().as_bytes())?;
    }
    replace(dir, "hashes.csv", feed.hashes_csv().as_bytes())?;
    replace(dir, "manifest.json", feed.manifest().to_string().as_bytes())?;
    for uuid in previous.events.keys() {
        if !feed.events.contains_key(uuid) {
            let path = dir.join(format!("{uuid}.json"));
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        kind: Kind,
        value: &str,
        category: Category,
        tlp: Tlp,
        risk: Risk,
    ) -> proto::IndicatorState {
        proto::IndicatorState {
            indicator: Some(proto::Indicator {
                kind: kind as i32,
                value: value.into(),
                category: category as i32,
                risk: risk as i32,
                description: String::new(),
                valid_until: None,
                tlp: tlp as i32,
            }),
            source_org: "mumbai-police".into(),
            first_seen: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            last_seen: Some(prost_types::Timestamp {
                seconds: 1_700_000_100,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_event_per_category_and_tlp_with_the_highest_risk_as_threat_level() {
        let states = [
            state(
                Kind::PhoneNumber,
                "+919876543210",
                Category::FraudCall,
                Tlp::Green,
                Risk::Medium,
            ),
            state(
                Kind::PhoneNumber,
                "+919876543211",
                Category::FraudCall,
                Tlp::Green,
                Risk::VeryHigh,
            ),
            state(
                Kind::Url,
                "https://x.example/",
                Category::Phishing,
                Tlp::Amber,
                Risk::High,
            ),
        ];
        let feed = Feed::build(&states, 7, &Feed::default(), 1_800_000_000);
        assert_eq!(feed.events.len(), 2);
        let calls = &feed.events[&event_uuid("FRAUD_CALL", "GREEN")]["Event"];
        assert_eq!(calls["threat_level_id"], "1");
        assert_eq!(calls["Attribute"].as_array().map(Vec::len), Some(2));
        assert_eq!(calls["Attribute"][0]["type"], "phone-number");
        assert_eq!(calls["Tag"][0]["name"], "tlp:green");
        assert_eq!(
            feed.manifest()[event_uuid("PHISHING", "AMBER")]["threat_level_id"],
            "2"
        );
        assert_eq!(feed.hashes_csv().lines().count(), 3);
        assert!(feed.hashes_csv().contains(&format!(
            "{:x},{}",
            md5::compute("https://x.example/"),
            event_uuid("PHISHING", "AMBER")
        )));
    }

    #[test]
    fn an_indicator_gone_from_the_snapshot_is_carried_as_deleted_then_dropped() {
        let kept = state(
            Kind::Imei,
            "490154203237518",
            Category::StolenHandset,
            Tlp::Clear,
            Risk::High,
        );
        let gone = state(
            Kind::Imei,
            "356938035643809",
            Category::StolenHandset,
            Tlp::Clear,
            Risk::High,
        );
        let first = Feed::build(&[kept.clone(), gone], 1, &Feed::default(), 1_800_000_000);
        let second = Feed::build(std::slice::from_ref(&kept), 2, &first, 1_800_000_100);
        let attributes =
            second.events[&event_uuid("STOLEN_HANDSET", "CLEAR")]["Event"]["Attribute"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        let deleted: Vec<_> = attributes.iter().filter(|a| a["deleted"] == true).collect();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0]["value"], "356938035643809");
        assert_eq!(deleted[0]["timestamp"], "1800000100");
        assert_eq!(second.active_attributes(), 1);
        assert_eq!(
            second.hashes_csv().lines().count(),
            1,
            "deleted values are not in hashes.csv"
        );
        let later = Feed::build(
            &[kept],
            3,
            &second,
            1_800_000_100 + KEEP_DELETED_SECONDS + 1,
        );
        assert_eq!(
            later.events[&event_uuid("STOLEN_HANDSET", "CLEAR")]["Event"]["Attribute"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn uuids_are_stable_and_valid() {
        let a = attribute_uuid("PHONE_NUMBER", "+919876543210");
        assert_eq!(a, attribute_uuid("PHONE_NUMBER", "+919876543210"));
        assert_ne!(a, attribute_uuid("PHONE_NUMBER", "+919876543211"));
        let parsed = uuid::Uuid::parse_str(&a).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 8);
    }
}
