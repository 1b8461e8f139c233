//! Security proofs (invariant 5 and the policy): who gets nothing, and with which
//! answer. Each refusal is followed by a check that the hub still serves a proper
//! client and that nothing was stored. README.md "## Security" tabulates these.

use std::path::Path;

use dip_hub::client::ClientCerts;
use dip_hub::identity;
use dip_hub::pki::{CertAuthority, IssuedCert, Validity};
use dip_hub::proto::{self, Category, EventType, IndicatorKind};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::Code;

use crate::harness::*;

/// The hub CA of `pki`, able to issue more certificates and CRLs.
fn hub_ca(pki: &TestPki) -> CertAuthority {
    let paths = pki.paths();
    CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).expect("CA certificate"),
        &std::fs::read_to_string(paths.ca_key()).expect("CA key"),
    )
    .expect("hub CA")
}

/// Writes a client certificate and key to files a client can present.
fn write_certs(dir: &Path, name: &str, cert: &IssuedCert, ca: &Path) -> ClientCerts {
    let dir = dir.join(format!("client-{name}"));
    std::fs::create_dir_all(&dir).expect("client dir");
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &cert.key_pem).expect("key");
    ClientCerts {
        ca: ca.to_path_buf(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// The certificate's serial, as the hub reads it (and as CRLs name it).
fn serial_of(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("PEM certificate");
    identity::identify(&der).expect("names an org").cert_serial
}

fn one_phone(n: u64) -> proto::PublishRequest {
    proto::PublishRequest {
        indicators: vec![phone_indicator(n)],
        idempotency_key: String::new(),
    }
}

/// What a client presenting `certs` gets: the TLS connection or its first call
/// fails (TLS 1.3 clients finish their side of the handshake before the hub
/// has checked their certificate, so the refusal may surface on the first call).
async fn tls_refusal(hub: &TestHub, certs: &ClientCerts) -> String {
    match hub.client_with(certs).await {
        Err(error) => format!("connect: {error}"),
        Ok(mut client) => {
            let status = client
                .publish(one_phone(1))
                .await
                .expect_err("a refused certificate gets no service");
            format!("call: {:?}: {}", status.code(), status_chain(&status))
        }
    }
}

fn status_chain(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(" <- ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// The hub still serves a proper client, and its log holds exactly `head`
/// events: the next publish gets sequence `head + 1`.
async fn still_serving_with_head(hub: &TestHub, head: u64) {
    let mut police = hub.client("mumbai-police").await;
    let response = publish(&mut police, vec![phone_indicator(900_000_000 + head)]).await;
    assert_eq!(
        response.events[0].sequence,
        head + 1,
        "nothing was stored for the refused client, and the hub still serves"
    );
}

/// A TLS refusal: the call fails with the transport's UNKNOWN, caused by the
/// alert the hub sent (`alert` as rustls names it).
fn assert_tls_alert(outcome: &str, alert: &str) {
    assert!(
        outcome.contains(&format!("received fatal alert: {alert}")),
        "expected the hub to refuse the handshake with {alert}; got {outcome}"
    );
}

/// `cert` (written under `name`, with the hub's CA) is refused in the TLS
/// handshake with `alert`, and the hub serves on with nothing stored.
async fn refused_in_the_handshake(hub: &TestHub, name: &str, cert: &IssuedCert, alert: &str) {
    let certs = write_certs(hub.data_dir(), name, cert, &hub.pki.paths().ca_cert());
    assert_tls_alert(&tls_refusal(hub, &certs).await, alert);
    still_serving_with_head(hub, 0).await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_tls_handshake() {
    let hub = TestHub::start().await;
    let ca_pem = std::fs::read_to_string(hub.pki.paths().ca_cert()).expect("CA");
    // A TLS client that trusts the hub but presents no certificate.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(hub.url())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await;
    let outcome = match channel {
        Err(error) => format!("connect: {error:?}"),
        Ok(channel) => {
            let status =
                proto::indicator_hub_service_client::IndicatorHubServiceClient::new(channel)
                    .publish(one_phone(1))
                    .await
                    .expect_err("no certificate, no service");
            assert_eq!(status.code(), Code::Unknown, "{status:?}");
            status_chain(&status)
        }
    };
    assert_tls_alert(&outcome, "CertificateRequired");
    still_serving_with_head(&hub, 0).await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_tls_handshake() {
    let hub = TestHub::start().await;
    let foreign = CertAuthority::generate("Some Other CA").expect("foreign CA");
    // It even claims a registered organisation.
    let impostor = foreign
        .issue_client("alpha-bank", Validity::days(1))
        .expect("cert");
    refused_in_the_handshake(&hub, "impostor", &impostor, "UnknownCA").await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_in_the_tls_handshake() {
    let hub = TestHub::start().await;
    let expired = hub_ca(&hub.pki)
        .issue_client("alpha-bank", Validity::expired())
        .expect("cert");
    refused_in_the_handshake(&hub, "expired", &expired, "CertificateExpired").await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_in_the_tls_handshake() {
    let pki = TestPki::new();
    let ca = hub_ca(&pki);
    let revoked = ca
        .issue_client("alpha-bank", Validity::days(1))
        .expect("cert");
    let crl = pki.dir.path().join("hub.crl.pem");
    std::fs::write(
        &crl,
        ca.crl_pem(&[&serial_of(&revoked.cert_pem)]).expect("CRL"),
    )
    .expect("write CRL");
    let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_with(pki, data, |config| config.tls.crls = vec![crl]).await;
    let certs = write_certs(
        hub.data_dir(),
        "revoked",
        &revoked,
        &hub.pki.paths().ca_cert(),
    );
    assert_tls_alert(&tls_refusal(&hub, &certs).await, "CertificateRevoked");
    // The organisation's other certificate (not on the CRL) still works.
    let mut bank = hub.client("alpha-bank").await;
    let response = publish(
        &mut bank,
        vec![indicator(
            IndicatorKind::UpiId,
            "mule@okaxis",
            Category::MuleAccount,
        )],
    )
    .await;
    assert_eq!(
        response.events[0].sequence, 1,
        "nothing stored for the revoked one"
    );
}

#[tokio::test]
async fn an_organisation_missing_from_the_registry_is_permission_denied() {
    let hub = TestHub::start().await;
    let ghost = hub_ca(&hub.pki)
        .issue_client("ghost-org", Validity::days(1))
        .expect("cert");
    let certs = write_certs(hub.data_dir(), "ghost", &ghost, &hub.pki.paths().ca_cert());
    let mut client = hub
        .client_with(&certs)
        .await
        .expect("TLS is fine: the CA signed it");
    let status = client.publish(one_phone(1)).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("ghost-org is not registered"),
        "{}",
        status.message()
    );
    still_serving_with_head(&hub, 0).await;
}

#[tokio::test]
async fn a_suspended_organisation_is_permission_denied_for_every_call() {
    let pki = TestPki::new();
    let registry = REGISTRY.replace(
        "id = \"beta-bank\"",
        "id = \"beta-bank\"\nstatus = \"SUSPENDED\"",
    );
    assert_ne!(registry, REGISTRY, "the registry lists beta-bank");
    std::fs::write(pki.registry(), registry).expect("registry");
    let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(7)]).await;

    // The certificate is valid (TLS succeeds); the registry says no to everything.
    let mut bank = hub.client("beta-bank").await;
    let suspended = |status: tonic::Status| {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status
                .message()
                .contains("organisation beta-bank is suspended"),
            "{}",
            status.message()
        );
    };
    suspended(bank.publish(one_phone(8)).await.expect_err("publish"));
    suspended(
        bank.subscribe(subscribe_request(0))
            .await
            .expect_err("subscribe"),
    );
    suspended(
        bank.lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(7),
        })
        .await
        .expect_err("lookup"),
    );
    suspended(
        bank.revoke(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(7),
            reason: "mine".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("revoke"),
    );
    suspended(
        bank.report_action(proto::ReportActionRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(7),
            action: proto::ActionType::AccountFrozen as i32,
            note: String::new(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("report action"),
    );
    still_serving_with_head(&hub, 1).await;
}

#[tokio::test]
async fn role_violations_are_permission_denied_naming_the_rule() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;

    let denied = |status: tonic::Status, rule: &str| {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(rule),
            "expected {rule:?} in {:?}",
            status.message()
        );
    };
    let mut platform = hub.client("chat-platform").await;
    denied(
        platform.publish(one_phone(2)).await.expect_err("platform"),
        "role PLATFORM reports actions only",
    );
    let mut bank = hub.client("alpha-bank").await;
    denied(
        bank.publish(proto::PublishRequest {
            indicators: vec![indicator(
                IndicatorKind::Imei,
                "490154203237518",
                Category::StolenHandset,
            )],
            idempotency_key: String::new(),
        })
        .await
        .expect_err("IMEI"),
        "role BANK publishes only",
    );
    let mut disconnected = phone_indicator(3);
    disconnected.category = Category::Disconnected as i32;
    // One forbidden indicator refuses the whole batch, naming its index.
    denied(
        bank.publish(proto::PublishRequest {
            indicators: vec![phone_indicator(4), disconnected],
            idempotency_key: String::new(),
        })
        .await
        .expect_err("DISCONNECTED"),
        "indicators[1]: alpha-bank (BANK) may not publish PHONE_NUMBER with category DISCONNECTED: only TSP, REGULATOR publish DISCONNECTED",
    );
    denied(
        bank.revoke(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
            reason: "not ours to revoke".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("revoke"),
        "only its source organisation (mumbai-police) or the regulator revokes",
    );
    still_serving_with_head(&hub, 1).await;
}

/// `message` with metadata claiming other identities, which the hub ignores.
fn spoofed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (name, claim) in [
        ("x-dip-org", "mumbai-police"),
        ("x-source-org", "dot-regulator"),
        ("x-forwarded-client-cert", "URI=urn:dip:org:dot-regulator"),
    ] {
        request
            .metadata_mut()
            .insert(name, claim.parse().expect("ascii"));
    }
    request
}

#[tokio::test]
async fn the_source_organisation_comes_from_the_certificate_not_the_request() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    let mut bank = hub.client("alpha-bank").await;
    bank.publish(spoofed(proto::PublishRequest {
        indicators: vec![indicator(
            IndicatorKind::UpiId,
            "mule@okaxis",
            Category::MuleAccount,
        )],
        idempotency_key: String::new(),
    }))
    .await
    .expect("publish");
    // Claiming the regulator gives no regulator powers either.
    let status = bank
        .revoke(spoofed(proto::RevokeRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
            reason: "as the regulator".into(),
            idempotency_key: String::new(),
        }))
        .await
        .expect_err("not the regulator");
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut stream = bank
        .subscribe(subscribe_request(1))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events[0].source_org, "alpha-bank");
    let certificate = std::fs::read_to_string(hub.pki.certs("alpha-bank").cert).expect("cert");
    assert_eq!(
        events[0].source_cert_serial,
        serial_of(&certificate),
        "attributed to the certificate presented"
    );
    still_serving_with_head(&hub, 2).await;
}

#[tokio::test]
async fn tlp_red_never_reaches_a_bank() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut red = phone_indicator(1);
    red.tlp = proto::Tlp::Red as i32;
    red.description = "under investigation: FIR 123/2026".into();
    publish(&mut police, vec![red]).await; // sequence 1
    publish(&mut police, vec![phone_indicator(2)]).await; // sequence 2, GREEN

    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2],
        "the bank's stream skips the RED event"
    );
    let lookup = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(
        !lookup.found && lookup.state.is_none(),
        "not even its existence"
    );
    let status = bank
        .report_action(proto::ReportActionRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
            action: proto::ActionType::AccountFrozen as i32,
            note: String::new(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("cannot act on what it cannot see");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Law enforcement and the regulator see it.
    for org in ["delhi-police", "dot-regulator"] {
        let mut reader = hub.client(org).await;
        let mut stream = reader
            .subscribe(subscribe_request(0))
            .await
            .expect("subscribe")
            .into_inner();
        let events = collect_events(&mut stream, 2).await;
        assert_eq!(events[0].sequence, 1, "{org} sees the RED event");
        assert_eq!(
            events[0].indicator.as_ref().map(|i| i.tlp),
            Some(proto::Tlp::Red as i32)
        );
    }
    still_serving_with_head(&hub, 2).await;
}

/// Regression: a SIGHTING with a lower TLP replaced the indicator's TLP in the
/// state view, so another organisation's report of a RED indicator (e.g. a bank
/// publishing the same number as GREEN) made it visible to every bank, with the
/// police's description and the fact that the police reported it.
#[tokio::test]
async fn a_sighting_with_a_lower_tlp_does_not_declassify_a_red_indicator() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut red = phone_indicator(1);
    red.tlp = proto::Tlp::Red as i32;
    red.description = "under investigation: FIR 123/2026".into();
    publish(&mut police, vec![red]).await;
    let mut alpha = hub.client("alpha-bank").await;
    let sighting = publish(&mut alpha, vec![phone_indicator(1)]).await; // GREEN
    // PUBLISHED, not SIGHTING: that type would tell the bank a RED indicator exists.
    assert_eq!(sighting.events[0].r#type, EventType::Published as i32);

    let mut beta = hub.client("beta-bank").await;
    let lookup = beta
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(
        !lookup.found,
        "a bank sees another organisation's RED indicator after a GREEN sighting: {:?}",
        lookup.state
    );
    let mut police_view = police
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(1),
        })
        .await
        .expect("lookup")
        .into_inner();
    let state = police_view.state.take().expect("the source sees it");
    assert_eq!(
        state.indicator.map(|i| i.tlp),
        Some(proto::Tlp::Red as i32),
        "still RED"
    );
    assert_eq!(state.reporters, vec!["alpha-bank", "mumbai-police"]);
}

/// A CA of the test's own (rcgen), so that it can sign what the hub's
/// `CertAuthority` refuses to issue: client certificates naming zero or two
/// organisations. The hub is started trusting this CA.
struct RawCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl RawCa {
    fn new() -> RawCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA");
        RawCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate with these SANs (DNS names or URIs) and EKU.
    fn issue(&self, sans: &[&str], server: bool) -> IssuedCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alpha-bank");
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.strip_prefix("dns:") {
                Some(name) => rcgen::SanType::DnsName(name.try_into().expect("DNS name")),
                None => rcgen::SanType::URI((*san).try_into().expect("URI")),
            })
            .collect();
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

#[tokio::test]
async fn a_certificate_naming_no_organisation_or_two_gets_nothing() {
    let ca = RawCa::new();
    let pki = TestPki::new();
    let dir = pki.dir.path().join("raw-ca");
    std::fs::create_dir_all(&dir).expect("dir");
    let server = ca.issue(&["dns:localhost"], true);
    let files = dip_hub::config::TlsFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        crls: Vec::new(),
    };
    std::fs::write(&files.ca_cert, &ca.cert_pem).expect("CA");
    std::fs::write(&files.server_cert, &server.cert_pem).expect("server cert");
    std::fs::write(&files.server_key, &server.key_pem).expect("server key");
    let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let tls = files.clone();
    let hub = TestHub::start_with(pki, data, move |config| config.tls = tls).await;

    for (name, sans) in [
        // The subject CN says alpha-bank: the hub must not fall back to it.
        ("no-org", vec!["dns:alpha-bank.example"]),
        (
            "two-orgs",
            vec!["urn:dip:org:alpha-bank", "urn:dip:org:mumbai-police"],
        ),
    ] {
        let cert = ca.issue(&sans, false);
        let certs = write_certs(&dir, name, &cert, &files.ca_cert);
        // TLS verifies the chain, then the hub finds no single organisation and
        // closes the connection before any call is served.
        let refused = match hub.client_with(&certs).await {
            Err(error) => error.to_string(),
            Ok(mut client) => {
                let status = client
                    .publish(one_phone(1))
                    .await
                    .expect_err("no organisation, no service");
                assert!(
                    matches!(status.code(), Code::Unknown | Code::Unavailable),
                    "{name}: {status:?}"
                );
                status_chain(&status)
            }
        };
        assert!(
            refused.contains("peer closed connection"),
            "{name}: expected the hub to close the connection; got {refused}"
        );
    }
    // A certificate of this CA that names one organisation is served.
    let good = ca.issue(&["urn:dip:org:mumbai-police"], false);
    let certs = write_certs(&dir, "good", &good, &files.ca_cert);
    // The harness could not wait for this hub (its certificates are the
    // test's): the refusals above need no database; the publish does.
    wait_until_serving(&hub.url(), &certs).await;
    let mut police = hub.client_with(&certs).await.expect("connects");
    let response = publish(&mut police, vec![phone_indicator(1)]).await;
    assert_eq!(
        response.events[0].sequence, 1,
        "nothing stored for the refused"
    );
}
