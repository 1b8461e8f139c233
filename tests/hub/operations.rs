//! Operating the hub: health and reflection, Prometheus metrics, the Admin
//! service (onboard, suspend, persistence), CRL reload without a restart, the
//! audit trail, and graceful shutdown.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dip_hub::client::{self, ClientCerts};
use dip_hub::pki::CertAuthority;
use dip_hub::proto::{self, IndicatorKind, OrgRole, OrgStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Code;

use crate::child::ChildHub;
use crate::harness::*;

/// One request to the reflection service of protocol version `$version` (`v1`
/// or `v1alpha`, the same messages in two packages), and its first answer.
macro_rules! reflect {
    ($version:ident, $channel:expr, $request:ident($argument:expr)) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::$request($argument)),
        };
        ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(concat!("reflection ", stringify!($version)))
            .into_inner()
            .message()
            .await
            .expect("answer")
            .expect("one")
    }};
}

/// The services the reflection service of version `$version` lists.
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let answer = reflect!($version, $channel, ListServices(String::new()));
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<HashSet<String>>()
    }};
}

/// What the operations tests add to the shared [`TestHub`].
pub(crate) trait OpsHub {
    fn issue(&self, org: &str) -> ClientCerts;
    async fn http_get(&self, path: &str) -> (String, String);
}

impl OpsHub for TestHub {
    /// A certificate of `org` signed by the hub CA, written to files.
    fn issue(&self, org: &str) -> ClientCerts {
        self.pki.issue(org, self.data.path())
    }

    /// `GET path` on the metrics listener: (status line, body).
    async fn http_get(&self, path: &str) -> (String, String) {
        let mut tcp = TcpStream::connect((
            "127.0.0.1",
            self.metrics_port.expect("a hub started with start_ops"),
        ))
        .await
        .expect("metrics listener");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(SOON, tcp.read_to_string(&mut response))
            .await
            .expect("metrics answer within 10 s")
            .expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, body.to_string())
    }
}

/// The serial (hex) of the certificate in `certs`.
fn serial_of(certs: &ClientCerts) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(&certs.cert).expect("cert");
    let der = CertificateDer::from_pem_slice(&pem).expect("pem");
    dip_hub::identity::identify(&der)
        .expect("identity")
        .cert_serial
}

fn lookup_request(n: u64) -> proto::LookupRequest {
    proto::LookupRequest {
        kind: IndicatorKind::PhoneNumber as i32,
        value: phone(n),
    }
}

/// The value of one sample line `name value` in a metrics exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Waits for a stream to end; `None` if it ended cleanly, the status otherwise.
async fn stream_end(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
) -> Option<tonic::Status> {
    loop {
        match tokio::time::timeout(SOON, stream.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

#[tokio::test]
async fn health_and_reflection_answer_standard_tools() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;

    // Any certificate of the hub CA that names an organisation may ask, even one
    // the registry does not know (it gets nothing else).
    let stranger = hub.issue("not-registered");
    let channel = client::channel(&hub.url(), &stranger)
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "dip.v1.IndicatorHubService", "dip.v1.AdminService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "dip.v1.Nothing".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
    let denied = proto::indicator_hub_service_client::IndicatorHubServiceClient::new(channel)
        .lookup(lookup_request(1))
        .await
        .expect_err("not registered");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Reflection, both protocol versions, lists every service.
    for names in [
        reflected_services!(v1, hub.channel("alpha-bank").await),
        reflected_services!(v1alpha, hub.channel("alpha-bank").await),
    ] {
        for service in [
            "dip.v1.IndicatorHubService",
            "dip.v1.AdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(service), "{service} in {names:?}");
        }
    }
    // And the contract itself, for grpcurl's `describe`.
    {
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let answer = reflect!(
            v1,
            hub.channel("alpha-bank").await,
            FileContainingSymbol("dip.v1.IndicatorHubService".into())
        );
        assert!(
            matches!(
                answer.message_response,
                Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()
            ),
            "{answer:?}"
        );
    }

    // During shutdown the hub reports NOT_SERVING to those watching.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "dip.v1.IndicatorHubService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("status").expect("one");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    hub.trigger_stop();
    let next = tokio::time::timeout(SOON, watch.message())
        .await
        .expect("a status within 10 s")
        .expect("status")
        .expect("one");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop((watch, health));
    hub.stop().await;
}

#[tokio::test]
async fn metrics_count_published_and_delivered_events_on_their_own_listener() {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1), phone_indicator(2)]).await;
    publish(
        &mut police,
        vec![indicator(
            IndicatorKind::UpiId,
            "mule@okbank",
            proto::Category::MuleAccount,
        )],
    )
    .await;
    collect_events(&mut stream, 3).await;

    let (status, text) = hub.http_get("/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        sample(
            &text,
            r#"dip_events_published_total{kind="PHONE_NUMBER",type="PUBLISHED"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"dip_events_published_total{kind="UPI_ID",type="PUBLISHED"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "dip_events_delivered_total"), 3.0);
    assert_eq!(sample(&text, "dip_publish_latency_seconds_count"), 2.0);
    assert_eq!(sample(&text, "dip_subscribers"), 1.0);
    assert_eq!(sample(&text, "dip_subscriber_lag_max"), 0.0);
    assert_eq!(sample(&text, "dip_durable_head_sequence"), 3.0);
    assert!(sample(&text, "dip_log_size_bytes") > 0.0);

    drop(stream);
    let (status, _) = hub.http_get("/nothing").await;
    assert!(status.contains("404"), "{status}");
    hub.stop().await;
}

#[tokio::test]
async fn only_the_regulator_administers_and_bad_requests_name_the_field() {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;
    let mut police = hub.admin("mumbai-police").await;
    let denied = police
        .list_orgs(proto::ListOrgsRequest {})
        .await
        .expect_err("police may not");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("only the REGULATOR role"),
        "{}",
        denied.message()
    );
    let denied = police
        .set_org_status(proto::SetOrgStatusRequest {
            id: "alpha-bank".into(),
            status: OrgStatus::Suspended as i32,
            reason: "x".into(),
        })
        .await
        .expect_err("police may not");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut regulator = hub.admin("dot-regulator").await;
    let bad_id = regulator
        .onboard_org(proto::OnboardOrgRequest {
            id: "Bad Id".into(),
            name: "x".into(),
            role: OrgRole::Bank as i32,
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().starts_with("id:"), "{}", bad_id.message());
    let no_role = regulator
        .onboard_org(proto::OnboardOrgRequest {
            id: "gamma-bank".into(),
            name: "Gamma Bank".into(),
            role: 0,
        })
        .await
        .expect_err("no role");
    assert_eq!(no_role.code(), Code::InvalidArgument);
    assert!(
        no_role.message().starts_with("role:"),
        "{}",
        no_role.message()
    );
    let no_reason = regulator
        .set_org_status(proto::SetOrgStatusRequest {
            id: "alpha-bank".into(),
            status: OrgStatus::Suspended as i32,
            reason: String::new(),
        })
        .await
        .expect_err("no reason");
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    let unknown = regulator
        .set_org_status(proto::SetOrgStatusRequest {
            id: "nobody".into(),
            status: OrgStatus::Suspended as i32,
            reason: "x".into(),
        })
        .await
        .expect_err("unknown org");
    assert_eq!(unknown.code(), Code::NotFound);
    let itself = regulator
        .set_org_status(proto::SetOrgStatusRequest {
            id: "dot-regulator".into(),
            status: OrgStatus::Suspended as i32,
            reason: "oops".into(),
        })
        .await
        .expect_err("not itself");
    assert_eq!(itself.code(), Code::FailedPrecondition);
    // Nothing changed.
    let orgs = regulator
        .list_orgs(proto::ListOrgsRequest {})
        .await
        .expect("list")
        .into_inner()
        .orgs;
    assert!(orgs.iter().all(|o| o.status == OrgStatus::Active as i32));
    assert!(!orgs.iter().any(|o| o.id == "gamma-bank"));
    hub.stop().await;
}

#[tokio::test]
async fn onboarding_and_suspension_take_effect_at_once_and_survive_a_restart() {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;
    let gamma_certs = hub.issue("gamma-bank");
    let mut gamma = client::connect(&hub.url(), &gamma_certs)
        .await
        .expect("connects");
    let before = gamma
        .lookup(lookup_request(1))
        .await
        .expect_err("not registered");
    assert_eq!(before.code(), Code::PermissionDenied);

    let mut regulator = hub.admin("dot-regulator").await;
    let onboarded = regulator
        .onboard_org(proto::OnboardOrgRequest {
            id: "gamma-bank".into(),
            name: "Gamma Bank".into(),
            role: OrgRole::Bank as i32,
        })
        .await
        .expect("onboard")
        .into_inner()
        .org
        .expect("org");
    assert_eq!(onboarded.status, OrgStatus::Active as i32);
    // The same connection is admitted at once.
    publish(&mut gamma, vec![phone_indicator(7)]).await;

    // alpha-bank follows the feed; its suspension ends the stream at once.
    let mut alpha = hub.client("alpha-bank").await;
    let mut stream = alpha
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    collect_events(&mut stream, 1).await;
    regulator
        .set_org_status(proto::SetOrgStatusRequest {
            id: "alpha-bank".into(),
            status: OrgStatus::Suspended as i32,
            reason: "compliance review".into(),
        })
        .await
        .expect("suspend");
    assert!(
        stream_end(&mut stream).await.is_none(),
        "the stream ends cleanly"
    );
    let refused = alpha
        .lookup(lookup_request(7))
        .await
        .expect_err("suspended");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("suspended"),
        "{}",
        refused.message()
    );
    let resubscribe = alpha
        .subscribe(subscribe_request(0))
        .await
        .expect_err("suspended");
    assert_eq!(resubscribe.code(), Code::PermissionDenied);
    // Others are untouched.
    let mut beta = hub.client("beta-bank").await;
    assert!(
        beta.lookup(lookup_request(7))
            .await
            .expect("beta")
            .into_inner()
            .found
    );

    // Stored: a restart keeps both changes over the registry file.
    drop((gamma, alpha, beta, regulator));
    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_ops(pki, data, |_| {}).await;
    let mut regulator = hub.admin("dot-regulator").await;
    let orgs: BTreeMap<String, proto::Org> = regulator
        .list_orgs(proto::ListOrgsRequest {})
        .await
        .expect("list")
        .into_inner()
        .orgs
        .into_iter()
        .map(|o| (o.id.clone(), o))
        .collect();
    assert_eq!(orgs["gamma-bank"].role, OrgRole::Bank as i32);
    assert_eq!(orgs["gamma-bank"].name, "Gamma Bank");
    assert_eq!(orgs["alpha-bank"].status, OrgStatus::Suspended as i32);
    assert_eq!(orgs["beta-bank"].status, OrgStatus::Active as i32);
    let mut alpha = hub.client("alpha-bank").await;
    assert_eq!(
        alpha
            .lookup(lookup_request(7))
            .await
            .expect_err("still suspended")
            .code(),
        Code::PermissionDenied
    );
    let mut gamma = client::connect(&hub.url(), &gamma_certs)
        .await
        .expect("connects");
    assert!(
        gamma
            .lookup(lookup_request(7))
            .await
            .expect("gamma")
            .into_inner()
            .found
    );

    // Reactivation lets it back in, on the same connection.
    regulator
        .set_org_status(proto::SetOrgStatusRequest {
            id: "alpha-bank".into(),
            status: OrgStatus::Active as i32,
            reason: String::new(),
        })
        .await
        .expect("reactivate");
    assert!(
        alpha
            .lookup(lookup_request(7))
            .await
            .expect("alpha")
            .into_inner()
            .found
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_reloaded_crl_refuses_the_revoked_certificate_and_no_one_else() {
    let pki = TestPki::new();
    let paths = pki.paths();
    let ca = CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).expect("ca cert"),
        &std::fs::read_to_string(paths.ca_key()).expect("ca key"),
    )
    .expect("ca");
    let crl: PathBuf = pki.dir.path().join("clients.crl.pem");
    std::fs::write(&crl, ca.crl_pem(&[]).expect("empty CRL")).expect("write");
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let crl_path = crl.clone();
    let hub = TestHub::start_ops(pki.clone(), data, move |config| {
        config.tls.crls = vec![crl_path];
    })
    .await;

    let alpha_certs = pki.certs("alpha-bank");
    let alpha_serial = serial_of(&alpha_certs);
    let mut alpha = hub.client("alpha-bank").await;
    let mut stream = alpha
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    collect_events(&mut stream, 1).await;

    // Revoke alpha-bank's certificate; SIGHUP's path (the reload trigger).
    std::fs::write(&crl, ca.crl_pem(&[&alpha_serial]).expect("CRL")).expect("write");
    hub.reload.send(()).await.expect("reload trigger");
    // The revoked certificate's live stream ends: the reload is in force.
    assert!(stream_end(&mut stream).await.is_none(), "ends cleanly");
    // Its open connection gets no more answers ...
    let refused = alpha.lookup(lookup_request(1)).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    // ... and a new connection with it fails the handshake.
    let new_connection = match client::connect(&hub.url(), &alpha_certs).await {
        Err(_) => None,
        Ok(mut client) => Some(client.lookup(lookup_request(1)).await),
    };
    assert!(
        !matches!(new_connection, Some(Ok(_))),
        "a revoked certificate is refused: {new_connection:?}"
    );
    // Everyone else still works, on old and new connections.
    assert!(
        police
            .lookup(lookup_request(1))
            .await
            .expect("police")
            .into_inner()
            .found
    );
    let mut beta = hub.client("beta-bank").await;
    assert!(
        beta.lookup(lookup_request(1))
            .await
            .expect("beta")
            .into_inner()
            .found
    );

    // The Admin RPC reloads too, and reports what it loaded.
    let mut regulator = hub.admin("dot-regulator").await;
    let loaded = regulator
        .reload_crls(proto::ReloadCrlsRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert_eq!((loaded.crls, loaded.revoked_serials), (1, 1));
    // A broken CRL is refused and the previous credentials stay in force.
    std::fs::write(&crl, "not a CRL").expect("write");
    let broken = regulator
        .reload_crls(proto::ReloadCrlsRequest {})
        .await
        .expect_err("broken CRL");
    assert_eq!(broken.code(), Code::FailedPrecondition);
    let mut beta = hub.client("beta-bank").await;
    assert!(
        beta.lookup(lookup_request(1))
            .await
            .expect("beta")
            .into_inner()
            .found
    );
    let refused = alpha
        .lookup(lookup_request(1))
        .await
        .expect_err("still revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    hub.stop().await;
}

#[tokio::test]
async fn lookups_are_recorded_in_the_audit_trail_with_org_and_certificate() {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(5)]).await;
    let mut bank = hub.client("alpha-bank").await;
    assert!(
        bank.lookup(lookup_request(5))
            .await
            .expect("lookup")
            .into_inner()
            .found
    );
    assert!(
        !bank
            .lookup(lookup_request(6))
            .await
            .expect("lookup")
            .into_inner()
            .found
    );

    let denied = hub
        .admin("alpha-bank")
        .await
        .read_audit(proto::ReadAuditRequest::default())
        .await
        .expect_err("banks do not read the audit trail");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut regulator = hub.admin("dot-regulator").await;
    let too_many = regulator
        .read_audit(proto::ReadAuditRequest {
            since: None,
            limit: 1_000_000,
        })
        .await
        .expect_err("limit");
    assert_eq!(too_many.code(), Code::InvalidArgument);
    let entries = regulator
        .read_audit(proto::ReadAuditRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let lookups: Vec<_> = entries.iter().filter(|e| e.action == "LOOKUP").collect();
    assert_eq!(lookups.len(), 2, "{entries:?}");
    let serial = serial_of(&hub.pki.certs("alpha-bank"));
    assert!(
        lookups
            .iter()
            .all(|e| e.org == "alpha-bank" && e.cert_serial == serial)
    );
    assert_eq!(lookups[0].subject, format!("PHONE_NUMBER {}", phone(5)));
    assert_eq!(lookups[0].outcome, "found");
    assert_eq!(lookups[1].outcome, "not_found");
    assert!(lookups[0].time.is_some());

    // Stored: still there after a restart.
    drop((police, bank, regulator));
    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_ops(pki, data, |_| {}).await;
    let entries = hub
        .admin("dot-regulator")
        .await
        .read_audit(proto::ReadAuditRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .entries;
    assert_eq!(entries.iter().filter(|e| e.action == "LOOKUP").count(), 2);
    hub.stop().await;
}

/// Shutdown with publishes in flight and a subscription open: every publish is
/// either acknowledged and durable or not acknowledged; the stream ends
/// cleanly; the server finishes within the grace timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_loses_no_acknowledged_publish() {
    const PUBLISHERS: u64 = 8;
    let grace = Duration::from_secs(8);
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut hub = TestHub::start_ops(TestPki::new(), data, |config| {
        config.shutdown_grace = grace;
    })
    .await;
    let mut watcher = hub.client("dot-regulator").await;
    let mut stream = watcher
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();

    let (acked, mut acks) = mpsc::unbounded_channel::<(u64, String)>();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = hub.client("mumbai-police").await;
        let acked = acked.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0.. {
                let n = p * 1_000_000 + i;
                let request = proto::PublishRequest {
                    indicators: vec![phone_indicator(n)],
                    idempotency_key: String::new(),
                };
                match tokio::time::timeout(SOON, client.publish(request)).await {
                    Ok(Ok(response)) => {
                        let _ = acked.send((response.into_inner().events[0].sequence, phone(n)));
                    }
                    // Refused or cut off by the shutdown: not acknowledged.
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        }));
    }
    drop(acked);
    // Publishing is under way once the subscriber sees events flowing.
    collect_events(&mut stream, 50).await;
    let started = Instant::now();
    hub.trigger_stop();
    assert!(
        stream_end(&mut stream).await.is_none(),
        "the stream ends cleanly"
    );
    tokio::time::timeout(SOON, &mut hub.task)
        .await
        .expect("the hub stops")
        .expect("server task")
        .expect("stops cleanly");
    let drained = started.elapsed();
    assert!(
        drained < grace,
        "drained in {drained:?}, within the {grace:?} grace"
    );
    for publisher in publishers {
        tokio::time::timeout(SOON, publisher)
            .await
            .expect("publishers end")
            .expect("publisher task");
    }
    let mut acknowledged = BTreeMap::new();
    while let Some((sequence, value)) = acks.recv().await {
        acknowledged.insert(sequence, value);
    }
    assert!(acknowledged.len() >= 50);
    println!(
        "shutdown drained in {drained:?} with {} publishes acknowledged",
        acknowledged.len()
    );

    // Restart: every acknowledged event is there, with its value.
    let (pki, data) = (hub.pki.clone(), hub.data.clone());
    drop((hub, stream, watcher));
    let hub = TestHub::start_ops(pki, data, |_| {}).await;
    let last = *acknowledged.keys().last().expect("some");
    let mut reader = hub.client("dot-regulator").await;
    let mut stream = reader
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let stored: BTreeMap<u64, String> = collect_events(&mut stream, last as usize)
        .await
        .into_iter()
        .map(|e| (e.sequence, e.indicator.expect("indicator").value))
        .collect();
    for (sequence, value) in &acknowledged {
        assert_eq!(stored.get(sequence), Some(value), "sequence {sequence}");
    }
    drop(stream);
    hub.stop().await;
}

/// The real binary: settings from a config file beneath environment variables
/// and flags, metrics on their own listener, a CRL reload on SIGHUP, and a clean
/// exit on SIGTERM.
#[tokio::test]
async fn the_binary_takes_a_config_file_reloads_on_sighup_and_stops_on_sigterm() {
    use std::process::Command;

    let pki = TestPki::new();
    let paths = pki.paths();
    let ca = CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).expect("ca cert"),
        &std::fs::read_to_string(paths.ca_key()).expect("ca key"),
    )
    .expect("ca");
    let dir = tempfile::tempdir().expect("temp dir");
    let crl = dir.path().join("clients.crl.pem");
    std::fs::write(&crl, ca.crl_pem(&[]).expect("CRL")).expect("write");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\ncerts_dir = \"{}\"\ncrls = [\"{}\"]\n\
             registry = \"/nonexistent/overridden-by-env.toml\"\n",
            dir.path().join("not-this-db").display(),
            pki.pki_dir().display(),
            crl.display(),
        ),
    )
    .expect("config");
    let data_dir = dir.path().join("db");
    let mut child = ChildHub::start(
        &[
            "--config".into(),
            config.into(),
            "--data-dir".into(),
            data_dir.clone().into(),
        ],
        &[("DIP_REGISTRY", pki.registry().into())],
    )
    .await;
    let metrics = child.logged("metrics serving at /metrics").await;
    let serving = child.logged("hub serving").await;
    assert_eq!(
        serving["data_dir"].as_str(),
        Some(data_dir.to_str().expect("utf-8")),
        "the flag overrides the file"
    );
    let grpc = child.addr;
    let metrics: std::net::SocketAddr = metrics["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let url = format!("https://localhost:{}", grpc.port());

    let mut tcp = TcpStream::connect(metrics).await.expect("metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tokio::time::timeout(SOON, tcp.read_to_string(&mut response))
        .await
        .expect("answer")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("dip_durable_head_sequence 0"));

    let alpha_certs = pki.certs("alpha-bank");
    let mut alpha = client::connect(&url, &alpha_certs).await.expect("connects");
    assert!(
        !alpha
            .lookup(lookup_request(1))
            .await
            .expect("lookup")
            .into_inner()
            .found
    );

    std::fs::write(&crl, ca.crl_pem(&[&serial_of(&alpha_certs)]).expect("CRL")).expect("write");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let reloaded = child
        .logged("reload: TLS credentials and CRLs in force")
        .await;
    assert_eq!(reloaded["revoked_serials"], 1);
    let refused = alpha.lookup(lookup_request(1)).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut beta = client::connect(&url, &pki.certs("beta-bank"))
        .await
        .expect("connects");
    beta.lookup(lookup_request(1))
        .await
        .expect("beta is not revoked");

    // The admin command line, as the regulator and as someone else.
    let admin = |org: &str, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dip-hub"));
        command
            .args(["admin", "--hub", &url, "--as", org, "--certs-dir"])
            .arg(pki.pki_dir())
            .args(args);
        async move {
            tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("join")
                .expect("dip-hub admin runs")
        }
    };
    let suspended = admin(
        "dot-regulator",
        &["suspend", "--id", "tsp-two", "--reason", "audit"],
    )
    .await;
    assert!(suspended.status.success(), "{suspended:?}");
    let line: serde_json::Value = serde_json::from_slice(&suspended.stdout).expect("one JSON line");
    assert_eq!(line["status"], "SUSPENDED");
    let orgs = admin("dot-regulator", &["orgs"]).await;
    assert!(orgs.status.success(), "{orgs:?}");
    assert_eq!(String::from_utf8_lossy(&orgs.stdout).lines().count(), 9);
    let denied = admin("mumbai-police", &["orgs"]).await;
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("only the REGULATOR role"),
        "{denied:?}"
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    child.logged("hub stopped").await;
    let status = child.exited().await;
    assert!(status.success(), "{status}");
}

/// Regression: a stream that shutdown does not end (a health `Watch`) once kept
/// the hub from stopping after the grace timeout, because tonic's connection
/// tasks (holding the services, hence the writer) outlived the server future.
#[tokio::test]
async fn after_the_grace_timeout_remaining_connections_are_closed_and_the_hub_stops() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let grace = Duration::from_millis(500);
    let mut hub = TestHub::start_ops(TestPki::new(), data, |config| {
        config.shutdown_grace = grace;
    })
    .await;
    let mut health = HealthClient::new(hub.channel("alpha-bank").await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("status").expect("one");
    let started = Instant::now();
    hub.trigger_stop();
    tokio::time::timeout(SOON, &mut hub.task)
        .await
        .expect("the hub stops after its grace timeout")
        .expect("server task")
        .expect("stops cleanly");
    assert!(started.elapsed() >= grace, "the open stream had its grace");
    // The watcher's connection was closed: its stream ends.
    tokio::time::timeout(SOON, async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await
    .expect("the watch stream ends");
    drop(health);
}

/// Regression (power-loss durability): acknowledgements waited for sled's
/// `flush`, which on Linux is `sync_file_range` (no disk cache flush, no file
/// size), so an OS crash or power cut could lose acknowledged events, acks and
/// organisation changes. Each acknowledged publish, ack and admin change now
/// waits for a real sync (`fdatasync`), counted by `dip_log_fsyncs_total`; and
/// a group commit still shares one sync between concurrent publishes.
#[tokio::test]
async fn every_acknowledged_write_waits_for_a_real_sync_and_concurrent_publishes_share_them() {
    let data = Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(TestPki::new(), data, |_| {}).await;
    let syncs = || async { sample(&hub.http_get("/metrics").await.1, "dip_log_fsyncs_total") };
    let mut police = hub.client("mumbai-police").await;
    let mut regulator = hub.admin("dot-regulator").await;

    // Nothing else writes on this hub: a sync counted between a scrape before a
    // request and one after its answer was performed for it.
    let before = syncs().await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    let after_publish = syncs().await;
    assert!(
        after_publish > before,
        "a publish waited for no sync: {before} -> {after_publish}"
    );

    police
        .ack(proto::AckRequest {
            consumer: "durable".into(),
            sequence: 1,
        })
        .await
        .expect("ack");
    let after_ack = syncs().await;
    assert!(after_ack > after_publish, "an ack waited for no sync");

    regulator
        .onboard_org(proto::OnboardOrgRequest {
            id: "gamma-bank".into(),
            name: "Gamma Bank".into(),
            role: OrgRole::Bank as i32,
        })
        .await
        .expect("onboard");
    let after_admin = syncs().await;
    assert!(
        after_admin > after_ack,
        "an admin change waited for no sync"
    );

    // Concurrent publishes: each answered durable, fewer syncs than publishes
    // (60: within law enforcement's default publishes_in_flight limit of 64).
    const PUBLISHES: u64 = 60;
    let tasks: Vec<_> = (0..PUBLISHES)
        .map(|n| {
            let mut client = police.clone();
            tokio::spawn(async move { publish(&mut client, vec![phone_indicator(100 + n)]).await })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(SOON, task)
            .await
            .expect("publishes answer within 10 s")
            .expect("publish task");
    }
    let shared = syncs().await - after_admin;
    assert!(
        shared >= 1.0 && shared < PUBLISHES as f64,
        "{PUBLISHES} concurrent publishes took {shared} syncs"
    );
    eprintln!("{PUBLISHES} concurrent publishes shared {shared} syncs");
    hub.stop().await;
}
