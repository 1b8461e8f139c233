//! `TestHub`: starts the real hub on an ephemeral loopback port with a fresh PKI
//! and database, and hands out clients that act as registered organisations.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dip_hub::client::{self, ClientCerts};
use dip_hub::config::{Config, TlsFiles};
use dip_hub::pki::{self, DevPkiPaths};
use dip_hub::proto;
use dip_hub::proto::admin_service_client::AdminServiceClient;
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;
use dip_hub::server::{Controls, Listeners};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Client = IndicatorHubServiceClient<Channel>;

/// The registry every test hub starts with (the development one).
pub const REGISTRY: &str = include_str!("../../certs/orgs.toml");

/// A PKI and a registry in a temporary directory, shared by restarts of a hub.
pub struct TestPki {
    pub dir: TempDir,
}

impl TestPki {
    pub fn new() -> Arc<TestPki> {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("orgs.toml"), REGISTRY).expect("registry");
        let orgs = dip_hub::registry::Registry::parse(REGISTRY)
            .expect("registry parses")
            .all()
            .into_iter()
            .map(|o| o.id)
            .collect::<Vec<_>>();
        pki::init_dev_pki(&dir.path().join("pki"), &orgs, &["localhost", "127.0.0.1"])
            .expect("dev PKI");
        Arc::new(TestPki { dir })
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn registry(&self) -> PathBuf {
        self.dir.path().join("orgs.toml")
    }

    pub fn paths(&self) -> DevPkiPaths {
        DevPkiPaths::new(self.pki_dir())
    }

    pub fn certs(&self, org: &str) -> ClientCerts {
        ClientCerts::dev(&self.pki_dir(), org)
    }

    /// A certificate of `org` (registered or not) signed by the CA, written under `dir`.
    pub fn issue(&self, org: &str, dir: &Path) -> ClientCerts {
        let paths = self.paths();
        let ca = pki::CertAuthority::load(
            &std::fs::read_to_string(paths.ca_cert()).expect("ca cert"),
            &std::fs::read_to_string(paths.ca_key()).expect("ca key"),
        )
        .expect("ca");
        let issued = ca.issue_client(org, pki::Validity::days(1)).expect("cert");
        let dir = dir.join(format!("issued-{org}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let certs = ClientCerts {
            ca: paths.ca_cert(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&certs.cert, &issued.cert_pem).expect("write");
        std::fs::write(&certs.key, &issued.key_pem).expect("write");
        certs
    }
}

/// Listeners a test hub serves beside gRPC.
#[derive(Clone, Copy, Default)]
struct Extra {
    /// Prometheus metrics ([`TestHub::start_ops`]).
    metrics: bool,
    /// TAXII 2.1 ([`TestHub::start_taxii`]).
    taxii: bool,
}

/// A loopback listener on any port, if `wanted`.
async fn bind_if(wanted: bool) -> Option<TcpListener> {
    match wanted {
        true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")),
        false => None,
    }
}

fn port_of(listener: &Option<TcpListener>) -> Option<u16> {
    listener
        .as_ref()
        .map(|l| l.local_addr().expect("addr").port())
}

/// Upper bound for anything that should happen at once.
pub const SOON: std::time::Duration = std::time::Duration::from_secs(10);

/// The real hub, in process, on ephemeral loopback ports: the gRPC listener,
/// with [`TestHub::start_ops`] a Prometheus listener too, with
/// [`TestHub::start_taxii`] a TAXII 2.1 listener; it is handed out once health
/// says SERVING (see [`wait_until_serving`]); a reload trigger
/// (what SIGHUP does) and a shutdown trigger.
pub struct TestHub {
    pub pki: Arc<TestPki>,
    pub data: Arc<TempDir>,
    pub port: u16,
    /// The metrics listener's port ([`TestHub::start_ops`] only).
    pub metrics_port: Option<u16>,
    /// The TAXII 2.1 listener's port ([`TestHub::start_taxii`] and
    /// [`TestHub::start_taxii_with`] only).
    pub taxii_port: Option<u16>,
    /// Reloads TLS credentials and CRLs.
    pub reload: mpsc::Sender<()>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<dip_hub::Result<()>>,
}

impl TestHub {
    /// A hub with a fresh PKI and an empty database.
    pub async fn start() -> TestHub {
        let data = Arc::new(tempfile::tempdir().expect("temp dir"));
        TestHub::start_with(TestPki::new(), data, |_| {}).await
    }

    /// A hub on an existing PKI and database (a restart), with config tweaks.
    pub async fn start_with(
        pki: Arc<TestPki>,
        data: Arc<TempDir>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestHub {
        TestHub::launch(pki, data, 0, tweak, Extra::default()).await
    }

    /// A hub on an existing PKI and database, listening on `port` (0: any), e.g.
    /// the port of a hub just stopped, so that clients reconnect to the same address.
    pub async fn start_at(
        pki: Arc<TestPki>,
        data: Arc<TempDir>,
        port: u16,
        tweak: impl FnOnce(&mut Config),
    ) -> TestHub {
        TestHub::launch(pki, data, port, tweak, Extra::default()).await
    }

    /// A hub with a fresh PKI and an empty database that also serves TAXII 2.1.
    pub async fn start_taxii() -> TestHub {
        let data = Arc::new(tempfile::tempdir().expect("temp dir"));
        TestHub::start_taxii_with(TestPki::new(), data, |_| {}).await
    }

    /// [`TestHub::start_with`], serving TAXII 2.1 as well.
    pub async fn start_taxii_with(
        pki: Arc<TestPki>,
        data: Arc<TempDir>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestHub {
        let extra = Extra {
            taxii: true,
            metrics: false,
        };
        TestHub::launch(pki, data, 0, tweak, extra).await
    }

    /// [`TestHub::start_with`], with a metrics listener as well.
    pub async fn start_ops(
        pki: Arc<TestPki>,
        data: Arc<TempDir>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestHub {
        let extra = Extra {
            metrics: true,
            taxii: false,
        };
        TestHub::launch(pki, data, 0, tweak, extra).await
    }

    async fn launch(
        pki: Arc<TestPki>,
        data: Arc<TempDir>,
        port: u16,
        tweak: impl FnOnce(&mut Config),
        extra: Extra,
    ) -> TestHub {
        let mut config = Config::new(
            data.path().join("db"),
            TlsFiles::dev(&pki.pki_dir()),
            pki.registry(),
        );
        tweak(&mut config);
        let dev_ca = TlsFiles::dev(&pki.pki_dir()).ca_cert;
        let own_tls = config.tls.ca_cert != dev_ca;
        let grpc = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = grpc.local_addr().expect("addr").port();
        let metrics = bind_if(extra.metrics).await;
        let taxii = bind_if(extra.taxii).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let (reload, reloads) = mpsc::channel(1);
        let controls = Controls {
            shutdown: Box::pin(async {
                let _ = stopped.await;
            }),
            reload: Some(reloads),
            ready: None,
        };
        let hub = TestHub {
            pki,
            data,
            port,
            metrics_port: port_of(&metrics),
            taxii_port: port_of(&taxii),
            reload,
            stop: Some(stop),
            task: tokio::spawn(dip_hub::server::serve(
                config,
                Listeners {
                    grpc,
                    metrics,
                    taxii,
                },
                controls,
            )),
        };
        // A hub on TLS files of its own (security tests) is not waited for: its
        // tests connect with certificates the harness does not hold.
        if !own_tls {
            wait_until_serving(&hub.url(), &hub.pki.certs("mumbai-police")).await;
        }
        hub
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// A client acting as `org`, with its certificate.
    pub async fn client(&self, org: &str) -> Client {
        client::connect(&self.url(), &self.pki.certs(org))
            .await
            .unwrap_or_else(|e| panic!("{org} connects: {e}"))
    }

    /// A client of `org` whose HTTP/2 receive windows (per call and per
    /// connection, in bytes) are the ones given: for tests of what the hub holds
    /// for a client that does not read.
    pub async fn client_with_windows(
        &self,
        org: &str,
        call_window: u32,
        connection_window: u32,
    ) -> Client {
        let certs = self.pki.certs(org);
        let read = |path: &Path| std::fs::read_to_string(path).expect("certificate file");
        let tls = dip_hub::tls::client_tls(
            &read(&certs.ca),
            &read(&certs.cert),
            &read(&certs.key),
            "localhost",
        );
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .tls_config(tls)
            .expect("tls")
            .initial_stream_window_size(call_window)
            .initial_connection_window_size(connection_window)
            .connect()
            .await
            .expect("connects");
        client::hub_client(channel)
    }

    /// A client with explicit certificate files.
    pub async fn client_with(&self, certs: &ClientCerts) -> dip_hub::Result<Client> {
        client::connect(&self.url(), certs).await
    }

    /// A channel acting as `org`, for the other services (admin, health, reflection).
    pub async fn channel(&self, org: &str) -> Channel {
        client::channel(&self.url(), &self.pki.certs(org))
            .await
            .unwrap_or_else(|e| panic!("{org} connects: {e}"))
    }

    /// An Admin client acting as `org`.
    pub async fn admin(&self, org: &str) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel(org).await)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Graceful shutdown, bounded; returns the PKI and database for a restart.
    pub async fn stop(mut self) -> (Arc<TestPki>, Arc<TempDir>) {
        self.trigger_stop();
        tokio::time::timeout(SOON, &mut self.task)
            .await
            .expect("the hub stops within 10 s")
            .expect("server task")
            .expect("server stops cleanly");
        (self.pki.clone(), self.data.clone())
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.trigger_stop();
    }
}

pub fn indicator(
    kind: proto::IndicatorKind,
    value: &str,
    category: proto::Category,
) -> proto::Indicator {
    proto::Indicator {
        kind: kind as i32,
        value: value.into(),
        category: category as i32,
        risk: proto::Risk::High as i32,
        description: String::new(),
        valid_until: None,
        tlp: proto::Tlp::Green as i32,
    }
}

/// A valid Indian mobile number, distinct for each `n` below 10^9.
pub fn phone(n: u64) -> String {
    format!("+919{n:09}")
}

pub fn phone_indicator(n: u64) -> proto::Indicator {
    indicator(
        proto::IndicatorKind::PhoneNumber,
        &phone(n),
        proto::Category::FraudCall,
    )
}

pub async fn publish(
    client: &mut Client,
    indicators: Vec<proto::Indicator>,
) -> proto::PublishResponse {
    client
        .publish(proto::PublishRequest {
            indicators,
            idempotency_key: String::new(),
        })
        .await
        .expect("publish accepted")
        .into_inner()
}

/// Revokes an indicator (reason "false positive"); panics when refused.
pub async fn revoke_indicator(
    client: &mut Client,
    kind: proto::IndicatorKind,
    value: &str,
) -> proto::RevokeResponse {
    client
        .revoke(proto::RevokeRequest {
            kind: kind as i32,
            value: value.into(),
            reason: "false positive".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("revoke accepted")
        .into_inner()
}

pub fn subscribe_request(after_sequence: u64) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        after_sequence,
        ..Default::default()
    }
}

/// Reads events from a Subscribe stream until `count` events have arrived.
pub async fn collect_events(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
    count: usize,
) -> Vec<proto::Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .expect("events arrive within 30 s")
            .expect("stream healthy")
            .expect("stream open");
        events.extend(message.events);
    }
    events
}

/// Waits (at most 60 s) until the hub's health says SERVING: during start-up it
/// answers NOT_SERVING and its RPCs UNAVAILABLE. Follows health's Watch stream,
/// which tells each change of status.
pub async fn wait_until_serving(url: &str, certs: &ClientCerts) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let watch = async {
        let channel = client::channel(url, certs).await.expect("connects");
        let mut health = HealthClient::new(channel);
        // A watch made during start-up may end when the hub switches to serving
        // (its connection is sent GOAWAY): watch again, a bounded number of times.
        for _attempt in 0..100 {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let Ok(statuses) = health.watch(request).await else {
                continue;
            };
            let mut statuses = statuses.into_inner();
            while let Ok(Some(answer)) = statuses.message().await {
                if answer.status == ServingStatus::Serving as i32 {
                    return;
                }
            }
        }
        panic!("the health watch failed 100 times before SERVING");
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), watch)
        .await
        .expect("the hub serves within 60 s");
}
