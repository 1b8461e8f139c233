//! The TAXII 2.1 server, pulled by clients no one here wrote: the OASIS
//! `taxii2-client` pages through every collection with a client certificate,
//! every object is parsed by `stix2` and validated by `stix2-validator`
//! (tests/python/taxii_pull.py); raw HTTPS checks status codes, headers and
//! error bodies (tests/python/taxii_http.py). The Python packages are
//! provisioned into target/py-deps (see `provision`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dip_hub::client::ClientCerts;
use dip_hub::indicator::{IndicatorKey, Kind};
use dip_hub::proto::{self, ActionType, Category, IndicatorKind, Tlp};
use dip_hub::taxii::stix;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use crate::harness::{REGISTRY, TestHub, TestPki, indicator, phone, publish};
use crate::provision;

/// What the scripts import, pinned.
const PACKAGES: &[&str] = &[
    "taxii2-client==2.3.0",
    "stix2==3.0.2",
    "stix2-validator==3.3.2",
];
/// The longest a script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// python3 tests/python/`script`, with the packages on PYTHONPATH.
async fn python_command(script: &str) -> tokio::process::Command {
    let deps = tokio::task::spawn_blocking(|| provision::python_packages(PACKAGES))
        .await
        .expect("provisioning ran");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .env("PYTHONPATH", deps)
        // requests prefers these to the CA a client is given: trust only the hub's.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .kill_on_drop(true);
    command
}

/// Runs tests/python/`script` to the end (at most [`SCRIPT_TIMEOUT`]).
async fn python(script: &str, args: &[String]) -> std::process::Output {
    let child = python_command(script).await.args(args).output();
    tokio::time::timeout(SCRIPT_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running python3 {script}: {e}"))
}

/// The test PKI's CA, to issue certificates and CRLs.
fn hub_ca(pki: &TestPki) -> dip_hub::pki::CertAuthority {
    let paths = pki.paths();
    dip_hub::pki::CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).expect("CA certificate"),
        &std::fs::read_to_string(paths.ca_key()).expect("CA key"),
    )
    .expect("hub CA")
}

fn cert_args(hub: &TestHub, certs: &ClientCerts) -> Vec<String> {
    let _ = hub;
    [&certs.ca, &certs.cert, &certs.key]
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

fn taxii_url(hub: &TestHub, path: &str) -> String {
    format!(
        "https://localhost:{}{path}",
        hub.taxii_port.expect("the hub serves TAXII")
    )
}

/// Everything `certs` pulls with taxii2-client, `per_request` objects a page.
async fn pull(hub: &TestHub, certs: &ClientCerts, per_request: usize) -> Value {
    let mut args = vec![taxii_url(hub, "/taxii2/")];
    args.extend(cert_args(hub, certs));
    args.push(per_request.to_string());
    let output = python("taxii_pull.py", &args).await;
    assert!(
        output.status.success(),
        "taxii_pull.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("taxii_pull.py prints JSON")
}

/// One raw GET of `path` as `certs` with `accept`.
async fn get(hub: &TestHub, certs: &ClientCerts, path: &str, accept: &str) -> Value {
    let mut args = vec![taxii_url(hub, path)];
    args.extend(cert_args(hub, certs));
    args.push(accept.to_string());
    let output = python("taxii_http.py", &args).await;
    assert!(
        output.status.success(),
        "taxii_http.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("taxii_http.py prints JSON")
}

const TAXII: &str = "application/taxii+json;version=2.1";

fn with_tlp(mut i: proto::Indicator, tlp: Tlp) -> proto::Indicator {
    i.tlp = tlp as i32;
    i
}

fn id_of(kind: Kind, value: &str) -> String {
    stix::indicator_id(&IndicatorKey {
        kind,
        value: value.into(),
    })
}

/// One indicator of every kind from the police (GREEN, one AMBER), a TLP:RED
/// one each from the police and alpha-bank, a sighting by beta-bank, an action
/// by tsp-one and a revocation.
async fn populate(hub: &TestHub) {
    let mut police = hub.client("mumbai-police").await;
    publish(
        &mut police,
        vec![
            indicator(IndicatorKind::PhoneNumber, &phone(1), Category::FraudCall),
            indicator(
                IndicatorKind::Imei,
                "490154203237518",
                Category::StolenHandset,
            ),
            with_tlp(
                indicator(
                    IndicatorKind::Url,
                    "https://phish.example/login",
                    Category::Phishing,
                ),
                Tlp::Amber,
            ),
            indicator(IndicatorKind::Domain, "phish.example", Category::Phishing),
            indicator(IndicatorKind::IpAddress, "203.0.113.7", Category::Phishing),
            indicator(IndicatorKind::IpAddress, "2001:db8::1", Category::Phishing),
            indicator(IndicatorKind::UpiId, "mule@okaxis", Category::MuleAccount),
            indicator(
                IndicatorKind::BankAccount,
                "SBIN0001234:012345678901",
                Category::MuleAccount,
            ),
            indicator(
                IndicatorKind::Email,
                "fraud@phish.example",
                Category::Phishing,
            ),
            indicator(IndicatorKind::SmsHeader, "HDFCBK", Category::Spam),
            with_tlp(
                indicator(IndicatorKind::PhoneNumber, &phone(3), Category::FraudCall),
                Tlp::Red,
            ),
        ],
    )
    .await;
    let mut alpha = hub.client("alpha-bank").await;
    publish(
        &mut alpha,
        vec![with_tlp(
            indicator(IndicatorKind::PhoneNumber, &phone(2), Category::FraudCall),
            Tlp::Red,
        )],
    )
    .await;
    let mut beta = hub.client("beta-bank").await;
    publish(
        &mut beta,
        vec![indicator(
            IndicatorKind::PhoneNumber,
            &phone(1),
            Category::FraudCall,
        )],
    )
    .await;
    let mut tsp = hub.client("tsp-one").await;
    tsp.report_action(proto::ReportActionRequest {
        kind: IndicatorKind::PhoneNumber as i32,
        value: phone(1),
        action: ActionType::NumberDisconnected as i32,
        note: "disconnected".into(),
        ..Default::default()
    })
    .await
    .expect("action reported");
    police
        .revoke(proto::RevokeRequest {
            kind: IndicatorKind::Domain as i32,
            value: "phish.example".into(),
            reason: "taken down".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("revoked");
}

fn objects(collection: &Value) -> &Vec<Value> {
    collection["objects"].as_array().expect("objects")
}

fn ids(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn taxii2_client_pulls_every_collection_and_every_object_validates() {
    let hub = TestHub::start_taxii().await;
    populate(&hub).await;
    let report = pull(&hub, &hub.pki.certs("beta-bank"), 3).await;

    assert_eq!(
        report["invalid"],
        Value::Array(vec![]),
        "every object is valid STIX 2.1"
    );
    assert_eq!(report["versions"][0], TAXII);
    let collections = report["collections"].as_object().expect("collections");
    assert_eq!(collections.len(), 11, "all, one per kind, reference");

    // Paging with next: several pages, and the same objects as one big page.
    let all = &collections["indicators"];
    assert!(
        all["pages"].as_u64().expect("pages") > 2,
        "{}",
        all["pages"]
    );
    let paged: Vec<Value> = objects(all)
        .iter()
        .map(|o| serde_json::json!([o["id"], o["modified"]]))
        .collect();
    assert_eq!(Value::Array(paged), all["whole"]);
    assert_eq!(
        objects(all).len(),
        all["manifest"].as_array().expect("manifest").len()
    );

    // added_after: exactly what the manifest says was added later.
    let after = &all["added_after"];
    let got: BTreeSet<String> = after["got"]
        .as_array()
        .expect("got")
        .iter()
        .map(|v| v.to_string())
        .collect();
    let expected: BTreeSet<String> = after["expected"]
        .as_array()
        .expect("expected")
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert!(
        !expected.is_empty(),
        "something was added after {}",
        after["after"]
    );
    assert_eq!(got, expected);

    // Every indicator the bank may see, latest versions only; no TLP:RED.
    let visible = ids(objects(all));
    let police_green = id_of(Kind::PhoneNumber, &phone(1));
    assert!(visible.contains(&police_green));
    assert!(visible.contains(&id_of(Kind::Url, "https://phish.example/login")));
    assert!(
        !visible.contains(&id_of(Kind::PhoneNumber, &phone(2))),
        "alpha-bank's RED"
    );
    assert!(
        !visible.contains(&id_of(Kind::PhoneNumber, &phone(3))),
        "the police's RED"
    );
    let red = stix::marking_id(dip_hub::indicator::Tlp::Red).expect("RED marking");
    for collection in collections.values() {
        for object in objects(collection) {
            let refs = object["object_marking_refs"].to_string();
            assert!(
                !refs.contains(red),
                "a RED object reached beta-bank: {object}"
            );
        }
    }
    assert_eq!(
        objects(all).len(),
        visible.len(),
        "one version of each object (match[version]=last)"
    );

    // The sighting and the action are sightings of the police's indicator.
    let sightings: Vec<&Value> = objects(all)
        .iter()
        .filter(|o| o["type"] == "sighting")
        .collect();
    assert_eq!(sightings.len(), 2, "{sightings:?}");
    for sighting in &sightings {
        assert_eq!(sighting["sighting_of_ref"], police_green.as_str());
    }
    assert!(
        sightings
            .iter()
            .any(|s| s["x_dip_action"] == "number-disconnected"
                && s["created_by_ref"] == stix::identity_id("tsp-one").as_str())
    );
    assert!(sightings.iter().any(|s| s["x_dip_event"] == "sighting"
        && s["created_by_ref"] == stix::identity_id("beta-bank").as_str()));

    // The revoked indicator: latest version revoked, two versions.
    let domain = id_of(Kind::Domain, "phish.example");
    let revoked = &all["object_versions"][&domain];
    assert_eq!(revoked["versions"].as_array().expect("versions").len(), 2);
    assert_eq!(revoked["latest"][0]["revoked"], true);
    assert_eq!(revoked["latest"][0]["x_dip_revoke_reason"], "taken down");
    let url = id_of(Kind::Url, "https://phish.example/login");
    let amber = &all["object_versions"][&url]["latest"][0];
    assert_eq!(amber["revoked"], false);
    assert_eq!(
        amber["pattern"],
        "[url:value = 'https://phish.example/login']"
    );
    assert_eq!(amber["confidence"], 75);
    assert_eq!(amber["labels"][0], "phishing");
    assert_eq!(
        amber["object_marking_refs"][0],
        stix::marking_id(dip_hub::indicator::Tlp::Amber).expect("AMBER")
    );
    assert_eq!(
        amber["created_by_ref"],
        stix::identity_id("mumbai-police").as_str()
    );

    // One collection per kind, holding only that kind.
    for kind in [
        "phone-number",
        "imei",
        "url",
        "domain",
        "ip-address",
        "upi-id",
        "bank-account",
        "email",
        "sms-header",
    ] {
        let own = objects(&collections[kind]);
        assert!(!own.is_empty(), "{kind} has objects");
        for object in own.iter().filter(|o| o["type"] == "indicator") {
            assert_eq!(object["x_dip_kind"], kind, "{object}");
        }
    }
    let ips: Vec<&str> = objects(&collections["ip-address"])
        .iter()
        .map(|o| o["pattern"].as_str().expect("pattern"))
        .collect();
    assert!(
        ips.contains(&"[ipv4-addr:value = '203.0.113.7']"),
        "{ips:?}"
    );
    assert!(
        ips.contains(&"[ipv6-addr:value = '2001:db8::1']"),
        "{ips:?}"
    );

    // Every reference resolves in the reference collection.
    let reference = ids(objects(&collections["reference"]));
    let orgs = dip_hub::registry::Registry::parse(REGISTRY)
        .expect("registry")
        .all();
    assert_eq!(
        reference.len(),
        orgs.len() + 4,
        "identities and TLP markings"
    );
    for object in objects(all) {
        assert!(
            reference.contains(object["created_by_ref"].as_str().expect("creator")),
            "{object}"
        );
        for marking in object["object_marking_refs"].as_array().expect("markings") {
            assert!(
                reference.contains(marking.as_str().expect("marking")),
                "{object}"
            );
        }
    }
}

#[tokio::test]
async fn tlp_red_reaches_its_source_and_law_enforcement_only() {
    let hub = TestHub::start_taxii().await;
    populate(&hub).await;
    let alpha_red = id_of(Kind::PhoneNumber, &phone(2));
    let police_red = id_of(Kind::PhoneNumber, &phone(3));
    let seen =
        |report: &Value| -> BTreeSet<String> { ids(objects(&report["collections"]["indicators"])) };

    let alpha = pull(&hub, &hub.pki.certs("alpha-bank"), 100).await;
    assert!(seen(&alpha).contains(&alpha_red), "its own RED indicator");
    assert!(
        !seen(&alpha).contains(&police_red),
        "another organisation's RED indicator"
    );
    let police = pull(&hub, &hub.pki.certs("delhi-police"), 100).await;
    assert!(seen(&police).contains(&alpha_red) && seen(&police).contains(&police_red));
    assert_eq!(police["invalid"], Value::Array(vec![]));
}

#[tokio::test]
async fn an_unknown_certificate_gets_nothing() {
    let hub = TestHub::start_taxii().await;
    populate(&hub).await;
    // A certificate for a registered organisation, from another CA.
    let stranger = TestPki::new();
    let mut certs = stranger.certs("beta-bank");
    certs.ca = hub.pki.paths().ca_cert();
    let mut args = vec![taxii_url(&hub, "/taxii2/")];
    args.extend(cert_args(&hub, &certs));
    args.push("10".into());
    let output = python("taxii_pull.py", &args).await;
    assert!(!output.status.success(), "the pull was refused");
    assert!(output.stdout.is_empty(), "nothing was printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An alert the hub sent (the client trusted the hub's certificate).
    assert!(
        stderr.contains("TLSV1_ALERT"),
        "the hub refused it in the TLS handshake: {stderr}"
    );
}

#[tokio::test]
async fn a_suspended_organisation_is_forbidden() {
    let pki = TestPki::new();
    let registry = REGISTRY.replace(
        "id = \"beta-bank\"",
        "id = \"beta-bank\"\nstatus = \"SUSPENDED\"",
    );
    std::fs::write(pki.registry(), registry).expect("registry");
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_taxii_with(pki, data, |_| {}).await;
    let response = get(&hub, &hub.pki.certs("beta-bank"), "/taxii2/", TAXII).await;
    assert_eq!(response["status"], 403, "{response}");
    assert_eq!(response["headers"]["content-type"], TAXII);
    assert_eq!(response["body"]["http_status"], "403");
    let description = response["body"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.contains("beta-bank is suspended"),
        "{description}"
    );
}

#[tokio::test]
async fn bad_requests_get_taxii_errors_and_pages_carry_date_headers() {
    let hub = TestHub::start_taxii().await;
    populate(&hub).await;
    let certs = hub.pki.certs("beta-bank");
    let all = stix::collection_id("indicators");
    let objects_path = format!("/dip/collections/{all}/objects/");

    let json = get(&hub, &certs, &objects_path, "application/json").await;
    assert_eq!(json["status"], 406, "{json}");
    assert_eq!(json["body"]["http_status"], "406");

    let bad_limit = get(&hub, &certs, &format!("{objects_path}?limit=0"), TAXII).await;
    assert_eq!(bad_limit["status"], 400, "{bad_limit}");
    let description = bad_limit["body"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.starts_with("limit: \"0\" is not a positive integer"),
        "{description}"
    );

    let bad_after = get(
        &hub,
        &certs,
        &format!("{objects_path}?added_after=yesterday"),
        TAXII,
    )
    .await;
    assert_eq!(bad_after["status"], 400, "{bad_after}");

    let missing = get(&hub, &certs, "/dip/collections/nope/objects/", TAXII).await;
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["body"]["title"], "Collection not found");

    let red = id_of(Kind::PhoneNumber, &phone(2));
    let hidden = get(&hub, &certs, &format!("{objects_path}{red}/"), TAXII).await;
    assert_eq!(
        hidden["status"], 404,
        "a RED indicator does not reveal it exists"
    );

    let page = get(
        &hub,
        &certs,
        &format!("{objects_path}?limit=2&match[type]=indicator"),
        TAXII,
    )
    .await;
    assert_eq!(page["status"], 200);
    assert_eq!(page["headers"]["content-type"], TAXII);
    assert_eq!(page["body"]["more"], true);
    let objects = page["body"]["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 2);
    assert!(objects.iter().all(|o| o["type"] == "indicator"));
    let headers: HashMap<String, Value> =
        serde_json::from_value(page["headers"].clone()).expect("headers");
    let first = headers["x-taxii-date-added-first"]
        .as_str()
        .expect("first header");
    let last = headers["x-taxii-date-added-last"]
        .as_str()
        .expect("last header");
    assert!(
        first <= last && first.ends_with('Z') && first.len() == "2026-01-01T00:00:00.000000Z".len(),
        "{first} {last}"
    );

    // The hub with its TAXII listener stops cleanly (the TAXII connections drain).
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_indicator_is_a_revoked_version() {
    let hub = TestHub::start_taxii().await;
    let mut regulator = hub.client("dot-regulator").await;
    let mut expired = regulator
        .subscribe(proto::SubscribeRequest {
            filter: Some(proto::Filter {
                types: vec![proto::EventType::Expired as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    let expiring = proto::Indicator {
        valid_until: Some(dip_hub::wire::timestamp(
            dip_hub::indicator::now_millis() + 300,
        )),
        ..indicator(IndicatorKind::PhoneNumber, &phone(9), Category::FraudCall)
    };
    publish(&mut police, vec![expiring]).await;
    // Wait for the hub's EXPIRED event (a signal), bounded in time.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = expired.message().await.expect("stream").expect("open");
            if !message.events.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("the indicator expires within 20 s");

    let report = pull(&hub, &hub.pki.certs("beta-bank"), 10).await;
    assert_eq!(report["invalid"], Value::Array(vec![]));
    let all = &report["collections"]["indicators"];
    let id = id_of(Kind::PhoneNumber, &phone(9));
    let versions = &all["object_versions"][&id];
    assert_eq!(versions["versions"].as_array().expect("versions").len(), 2);
    let latest = &versions["latest"][0];
    assert_eq!(latest["revoked"], true, "{latest}");
    assert_eq!(latest["x_dip_event"], "expired");
    assert!(latest["valid_from"].as_str() < latest["valid_until"].as_str());
}

#[tokio::test]
async fn a_revoked_certificate_gets_nothing() {
    use dip_hub::pki::Validity;
    let pki = TestPki::new();
    let paths = pki.paths();
    let ca = hub_ca(&pki);
    let revoked = ca
        .issue_client("alpha-bank", Validity::days(1))
        .expect("certificate");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(revoked.cert_pem.as_bytes())
        .expect("PEM certificate");
    let serial = dip_hub::identity::identify(&der)
        .expect("identity")
        .cert_serial;
    let crl = pki.dir.path().join("hub.crl.pem");
    std::fs::write(&crl, ca.crl_pem(&[&serial]).expect("CRL")).expect("write CRL");
    let dir = pki.dir.path().join("revoked-client");
    std::fs::create_dir_all(&dir).expect("client dir");
    std::fs::write(dir.join("cert.pem"), &revoked.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &revoked.key_pem).expect("key");
    let certs = ClientCerts {
        ca: paths.ca_cert(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_taxii_with(pki, data, |config| config.tls.crls = vec![crl]).await;
    populate(&hub).await;

    let mut args = vec![taxii_url(&hub, "/taxii2/")];
    args.extend(cert_args(&hub, &certs));
    args.push("10".into());
    let output = python("taxii_pull.py", &args).await;
    assert!(!output.status.success(), "the pull was refused");
    assert!(output.stdout.is_empty(), "nothing was printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TLSV1_ALERT_CERTIFICATE_REVOKED")
            || stderr.contains("certificate revoked"),
        "the hub refused it in the TLS handshake: {stderr}"
    );
    // The organisation's certificate that is not on the CRL still works.
    let fine = get(&hub, &hub.pki.certs("alpha-bank"), "/taxii2/", TAXII).await;
    assert_eq!(fine["status"], 200, "{fine}");
}

#[tokio::test]
async fn a_certificate_revoked_while_connected_is_unauthorized() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let pki = TestPki::new();
    let ca = hub_ca(&pki);
    let crl = pki.dir.path().join("hub.crl.pem");
    std::fs::write(&crl, ca.crl_pem(&[]).expect("empty CRL")).expect("write CRL");
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let crls = vec![crl.clone()];
    let hub = TestHub::start_taxii_with(pki, data, |config| config.tls.crls = crls).await;
    let alpha = hub.pki.certs("alpha-bank");

    let mut session = python_command("taxii_session.py")
        .await
        .arg(taxii_url(&hub, "/taxii2/"))
        .args(cert_args(&hub, &alpha))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 taxii_session.py starts");
    let mut lines = BufReader::new(session.stdout.take().expect("stdout")).lines();
    let mut next_line = async || -> Value {
        let line = tokio::time::timeout(SCRIPT_TIMEOUT, lines.next_line())
            .await
            .expect("the script answers in time")
            .expect("read stdout")
            .expect("a line");
        serde_json::from_str(&line).expect("JSON line")
    };
    let before = next_line().await;
    assert_eq!(before["status"], 200, "{before}");

    // Revoke alpha-bank's certificate and reload the CRLs, the connection open.
    let pem = std::fs::read(&alpha.cert).expect("certificate");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).expect("PEM");
    let serial = dip_hub::identity::identify(&der)
        .expect("identity")
        .cert_serial;
    std::fs::write(&crl, ca.crl_pem(&[&serial]).expect("CRL")).expect("write CRL");
    let channel = dip_hub::client::channel(&hub.url(), &hub.pki.certs("dot-regulator"))
        .await
        .expect("regulator connects");
    proto::admin_service_client::AdminServiceClient::new(channel)
        .reload_crls(proto::ReloadCrlsRequest {})
        .await
        .expect("CRLs reloaded");

    let mut stdin = session.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").await.expect("signal the script");
    let after = next_line().await;
    assert_eq!(after["status"], 401, "{after}");
    assert_eq!(after["body"]["http_status"], "401");
    let description = after["body"]["description"].as_str().expect("description");
    assert!(description.contains("is revoked"), "{description}");
    let status = tokio::time::timeout(SCRIPT_TIMEOUT, session.wait())
        .await
        .expect("the script ends")
        .expect("wait");
    assert!(status.success());
}

/// Issue 9: the source raising its marking to RED. For tsp-one, which was shown
/// the GREEN indicator and may not see the RED one, the WITHDRAWN is the latest
/// version: revoked, under the old marking. The police still see it active.
#[tokio::test]
async fn a_withdrawn_indicator_is_a_revoked_version_for_those_it_was_withdrawn_from() {
    let hub = TestHub::start_taxii().await;
    let mut bank = hub.client("alpha-bank").await;
    let number = indicator(IndicatorKind::PhoneNumber, &phone(11), Category::FraudCall);
    publish(&mut bank, vec![number.clone()]).await;
    publish(&mut bank, vec![with_tlp(number, Tlp::Red)]).await;
    let id = id_of(Kind::PhoneNumber, &phone(11));

    let report = pull(&hub, &hub.pki.certs("tsp-one"), 10).await;
    assert_eq!(report["invalid"], Value::Array(vec![]));
    let versions = &report["collections"]["indicators"]["object_versions"][&id];
    let count = versions["versions"].as_array().map(Vec::len);
    assert_eq!(count, Some(2), "{}", report["collections"]);
    let latest = &versions["latest"][0];
    assert_eq!(latest["revoked"], true, "{latest}");
    assert_eq!(latest["x_dip_event"], "withdrawn");
    let green = stix::marking_id(dip_hub::indicator::Tlp::Green).expect("GREEN marking");
    assert_eq!(latest["object_marking_refs"][0], green, "{latest}");

    let report = pull(&hub, &hub.pki.certs("mumbai-police"), 10).await;
    let latest = &report["collections"]["indicators"]["object_versions"][&id]["latest"][0];
    assert_eq!(latest["revoked"], false, "{latest}");
    assert_eq!(latest["x_dip_event"], "published");
}
