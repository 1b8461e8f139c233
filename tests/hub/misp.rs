//! `dip-hub export misp` against a real hub, checked with PyMISP: every file
//! loads, the manifest and hashes.csv are what PyMISP computes, the attributes
//! are exactly the caller's snapshot (no other organisation's TLP:RED), and a
//! second export turns a revoked indicator into a deleted attribute.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use dip_hub::client;
use dip_hub::indicator::Kind;
use dip_hub::proto::{self, ValueName};

use crate::harness::{TestHub, indicator, publish, revoke_indicator};
use crate::provision;

const ORG: &str = "alpha-bank";

/// Runs the real binary: `dip-hub export misp` as `ORG` into `out`.
fn export(hub: &TestHub, out: &Path) -> serde_json::Value {
    let certs = hub.pki.certs(ORG);
    let output = Command::new(env!("CARGO_BIN_EXE_dip-hub"))
        .args(["export", "misp", "--hub", &hub.url()])
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .arg("--ca")
        .arg(&certs.ca)
        .arg("--out")
        .arg(out)
        .output()
        .expect("dip-hub runs");
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the export reports JSON")
}

/// What PyMISP reads in the feed (tests/python/misp_check.py).
fn load_with_pymisp(out: &Path) -> Vec<serde_json::Value> {
    let deps = provision::python_packages(&["pymisp"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/misp_check.py");
    let output = Command::new(provision::python())
        .arg(script)
        .arg(out)
        .env("PYTHONPATH", deps)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "PyMISP refused the feed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("misp_check reports JSON");
    report["attributes"]
        .as_array()
        .cloned()
        .expect("attributes")
}

fn tag_value<'a>(attribute: &'a serde_json::Value, predicate: &str) -> Option<&'a str> {
    let prefix = format!("dip:{predicate}=\"");
    attribute["tags"]
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str())
        .find_map(|t| t.strip_prefix(prefix.as_str())?.strip_suffix('"'))
}

/// The active attributes must be exactly the caller's snapshot, each mapped as documented.
async fn assert_feed_is_the_snapshot(hub: &TestHub, attributes: &[serde_json::Value]) {
    let mut bank = hub.client(ORG).await;
    let snapshot = client::snapshot(&mut bank, proto::Filter::default())
        .await
        .expect("snapshot");
    let expected: BTreeSet<(String, String, String)> = snapshot
        .indicators
        .iter()
        .filter_map(|s| s.indicator.as_ref())
        .map(|i| {
            let kind = Kind::try_from(i.kind).expect("kind");
            let tlp = proto::Tlp::try_from(i.tlp).expect("tlp");
            let tlp = match tlp {
                proto::Tlp::Unspecified => "clear".to_string(),
                other => other.short_name().to_ascii_lowercase(),
            };
            (kind.short_name().to_string(), i.value.clone(), tlp)
        })
        .collect();
    let mut held = BTreeSet::new();
    for attribute in attributes.iter().filter(|a| a["deleted"] == false) {
        let kind = tag_value(attribute, "kind").expect("a dip:kind tag");
        let value = attribute["value"].as_str().expect("value");
        let (misp_type, category) =
            dip_hub::misp::attribute_type(Kind::from_name(kind).expect("a kind"));
        assert_eq!(attribute["type"], misp_type, "{attribute}");
        assert_eq!(attribute["category"], category, "{attribute}");
        assert_eq!(attribute["to_ids"], true);
        assert_eq!(
            attribute["uuid"],
            dip_hub::misp::attribute_uuid(kind, value),
            "{attribute}"
        );
        let tlp = attribute["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str()?.strip_prefix("tlp:"))
            .next()
            .expect("a tlp tag")
            .to_string();
        let event_tlp = format!("tlp:{tlp}");
        assert!(
            attribute["event_tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == &event_tlp)),
            "the event carries its attributes' TLP: {attribute}"
        );
        held.insert((kind.to_string(), value.to_string(), tlp));
    }
    assert_eq!(
        held, expected,
        "the feed holds exactly the caller's snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misp_feed_export_loads_in_pymisp_and_holds_exactly_the_callers_snapshot() {
    use proto::{Category as C, IndicatorKind as K};
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut bank = hub.client(ORG).await;
    let mut police_batch = vec![
        indicator(K::PhoneNumber, "+919876543210", C::FraudCall),
        indicator(K::Imei, "490154203237518", C::StolenHandset),
        indicator(K::Url, "https://phish.example/login", C::Phishing),
        indicator(K::Domain, "phish.example", C::Phishing),
        indicator(K::IpAddress, "203.0.113.7", C::Phishing),
        indicator(K::UpiId, "fraudster@okaxis", C::MuleAccount),
        indicator(K::BankAccount, "SBIN0001234:012345678901", C::MuleAccount),
        indicator(K::Email, "scam@example.com", C::Phishing),
        indicator(K::SmsHeader, "HDFCBK", C::Spam),
        indicator(K::PhoneNumber, "+919876543299", C::FraudCall),
    ];
    police_batch[0].risk = proto::Risk::VeryHigh as i32;
    police_batch[2].tlp = proto::Tlp::Amber as i32;
    police_batch[3].tlp = proto::Tlp::Clear as i32;
    // The police's RED number: the bank must not see it in its feed.
    let mut red = indicator(K::PhoneNumber, "+919876500000", C::FraudCall);
    red.tlp = proto::Tlp::Red as i32;
    police_batch.push(red);
    publish(&mut police, police_batch).await;
    // The bank's own RED account: it sees its own.
    let mut own_red = indicator(K::BankAccount, "HDFC0001234:987654321", C::MuleAccount);
    own_red.tlp = proto::Tlp::Red as i32;
    own_red.description = "mule, \"cash-out\" ring, first seen in a complaint".into();
    publish(&mut bank, vec![own_red]).await;
    revoke_indicator(&mut police, K::PhoneNumber, "+919876543299").await;

    let out = tempfile::tempdir().expect("temp dir");
    let feed = out.path().join("feed");
    let report = export(&hub, &feed);
    assert_eq!(report["attributes"], 10, "{report}");
    let attributes = load_with_pymisp(&feed);
    assert_feed_is_the_snapshot(&hub, &attributes).await;
    assert!(
        !attributes.iter().any(|a| a["value"] == "+919876500000"),
        "another organisation's TLP:RED never reaches the bank's feed"
    );
    assert!(
        attributes.iter().all(|a| a["deleted"] == false),
        "a first export deletes nothing"
    );

    // A revoke, then the next export into the same directory.
    revoke_indicator(&mut police, K::SmsHeader, "HDFCBK").await;
    let report = export(&hub, &feed);
    assert_eq!(report["attributes"], 9, "{report}");
    let attributes = load_with_pymisp(&feed);
    assert_feed_is_the_snapshot(&hub, &attributes).await;
    let deleted: Vec<_> = attributes.iter().filter(|a| a["deleted"] == true).collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["value"], "HDFCBK");
    // Its event has no active attribute left but stays in the feed to carry the deletion.
    let files = std::fs::read_dir(&feed)
        .expect("feed dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(
        files,
        1 + report["events"].as_u64().expect("events") as usize
    );
}
