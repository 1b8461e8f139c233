//! The `dip-hub` command line: one subcommand per job, raw arguments turned into a
//! validated configuration once.
//!
//! Owns: argument parsing (clap, doc comments as help), signal handling for
//! `serve`, and printing results (stdout) apart from diagnostics (stderr, via
//! tracing). Must never hold hub logic: it calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::client::{self, ClientCerts};
use crate::config::{ServeFile, ServeSettings};
use crate::error::{Error, Result};
use crate::indicator::{ActionType, Category, Kind, Risk, Tlp};
use crate::pki;
use crate::proto::{self, ValueName};
use crate::registry::Registry;
use crate::server::{Controls, Listeners};

/// DIP Hub: share fraud indicators between organisations in real time, over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "dip-hub", version)]
pub struct Cli {
    /// Log as JSON lines (on stderr) instead of text.
    #[arg(long, global = true, env = "DIP_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Development PKI: a CA, a server certificate, one client certificate per organisation.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Run the hub.
    Serve(ServeArgs),
    /// Publish one indicator as an organisation.
    Publish(PublishArgs),
    /// Revoke (withdraw) an indicator you published.
    Revoke(RevokeArgs),
    /// Report what your organisation did about an indicator.
    Action(ActionArgs),
    /// Follow the hub's events as JSON lines on stdout.
    Subscribe(SubscribeArgs),
    /// The current state of one indicator, as JSON.
    Lookup(LookupArgs),
    /// Every active indicator you may see (matching the filter), as of one sequence:
    /// CSV or JSON on stdout; the sequence and the digest on stderr.
    Snapshot(SnapshotArgs),
    /// Export what you may see to another tool's format (a MISP feed directory).
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Start a hub on a fresh embedded database and watch simulated stakeholders use it.
    Demo(DemoArgs),
    /// Operate a running hub (regulator only): organisations, CRL reload, audit trail.
    Admin(AdminArgs),
    /// Load-test a hub of its own (child process, temporary PKI and database, loopback).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every organisation, as JSON lines.
    Orgs,
    /// Onboard an organisation (ACTIVE), or change its name and role.
    Onboard {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// REGULATOR, LAW_ENFORCEMENT, BANK, TSP, PAYMENT_OPERATOR or PLATFORM.
        #[arg(long, value_parser = parse_enum::<proto::OrgRole>)]
        role: proto::OrgRole,
    },
    /// Suspend an organisation: its live streams end, its calls are refused.
    Suspend {
        #[arg(long)]
        id: String,
        /// Why (stored with the change).
        #[arg(long)]
        reason: String,
    },
    /// Reactivate a suspended organisation.
    Activate {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Re-read the CA, the server certificate and the CRLs (as SIGHUP does).
    ReloadCrls,
    /// The audit trail (who looked what up), oldest first, as JSON lines.
    Audit {
        /// Only entries from the last this many hours.
        #[arg(long)]
        hours: Option<u32>,
        /// At most this many entries (up to 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create what is missing: CA, server certificate, organisation certificates.
    Init {
        /// Where the PKI lives (private keys are generated here, never committed).
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// The organisation registry: one client certificate per organisation.
        #[arg(long, default_value = "certs/orgs.toml")]
        registry: PathBuf,
    },
}

/// Settings of `serve`: flag > environment variable > `--config` file > default.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML; see certs/hub.example.toml). Flags and DIP_* override it.
    #[arg(long, env = "DIP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7443].
    #[arg(long, env = "DIP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address for Prometheus metrics over plain HTTP (/metrics), e.g. 127.0.0.1:9464 [default: none].
    #[arg(long, env = "DIP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address for TAXII 2.1 over HTTPS with mutual TLS (/taxii2/), e.g. 127.0.0.1:9443 [default: none].
    #[arg(long, env = "DIP_TAXII_LISTEN")]
    pub taxii_listen: Option<SocketAddr>,
    /// The sled database directory [default: dip-data].
    #[arg(long, env = "DIP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Development PKI directory (ca.pem, server.pem, server.key) [default: certs/dev].
    #[arg(long, env = "DIP_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// CA certificate that signs client certificates (overrides --certs-dir).
    #[arg(long, env = "DIP_CA")]
    pub ca: Option<PathBuf>,
    /// Server certificate (overrides --certs-dir).
    #[arg(long, env = "DIP_CERT")]
    pub cert: Option<PathBuf>,
    /// Server private key (overrides --certs-dir).
    #[arg(long, env = "DIP_KEY")]
    pub key: Option<PathBuf>,
    /// Certificate revocation list (PEM); repeatable (DIP_CRLS: comma-separated). Re-read on SIGHUP.
    #[arg(long, env = "DIP_CRLS", value_delimiter = ',')]
    pub crl: Vec<PathBuf>,
    /// The organisation registry [default: certs/orgs.toml].
    #[arg(long, env = "DIP_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// Recent events kept for subscribers that are behind [default: 16384].
    #[arg(long, env = "DIP_FEED_CAPACITY")]
    pub feed_capacity: Option<usize>,
    /// Seconds shutdown waits for in-flight requests and streams [default: 10].
    #[arg(long, env = "DIP_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// MiB all Subscribe streams together may hold queued for slow clients [default: 64].
    #[arg(long, env = "DIP_SUBSCRIBER_BUDGET_MIB")]
    pub subscriber_budget_mib: Option<usize>,
}

impl ServeArgs {
    /// The settings, with the config file (if any) beneath flags and environment.
    pub fn settings(&self) -> Result<ServeSettings> {
        let file = match &self.config {
            Some(path) => ServeFile::load(path)?,
            None => ServeFile::default(),
        };
        let given = ServeFile {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            taxii_listen: self.taxii_listen,
            data_dir: self.data_dir.clone(),
            certs_dir: self.certs_dir.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            crls: self.crl.clone(),
            registry: self.registry.clone(),
            feed_capacity: self.feed_capacity,
            shutdown_grace_seconds: self.shutdown_grace_seconds,
            limits: Default::default(),
            subscriber_budget_mib: self.subscriber_budget_mib,
        };
        given.over(file).settings()
    }
}

/// How a client reaches the hub and who it is.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The hub's address.
    #[arg(long, default_value = "https://localhost:7443", env = "DIP_HUB")]
    pub hub: String,
    /// Act as this organisation, with its certificate from --certs-dir.
    #[arg(long = "as", env = "DIP_ORG")]
    pub org: Option<String>,
    /// Development PKI directory.
    #[arg(long, default_value = "certs/dev", env = "DIP_CERTS_DIR")]
    pub certs_dir: PathBuf,
    /// Client certificate (instead of --as).
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// Client private key (with --cert).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The hub CA certificate (with --cert).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl ClientArgs {
    fn certs(&self) -> Result<ClientCerts> {
        match (&self.cert, &self.key, &self.ca, &self.org) {
            (Some(cert), Some(key), Some(ca), _) => Ok(ClientCerts {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (_, _, _, Some(org)) => Ok(ClientCerts::dev(&self.certs_dir, org)),
            _ => Err(Error::Config(
                "say who you are: --as ORG (development PKI) or --cert, --key and --ca".into(),
            )),
        }
    }

    async fn connect(
        &self,
    ) -> Result<
        proto::indicator_hub_service_client::IndicatorHubServiceClient<tonic::transport::Channel>,
    > {
        client::connect(&self.hub, &self.certs()?).await
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// PHONE_NUMBER, IMEI, URL, DOMAIN, IP_ADDRESS, UPI_ID, BANK_ACCOUNT, EMAIL or SMS_HEADER.
    #[arg(long, value_parser = parse_enum::<Kind>)]
    pub kind: Kind,
    #[arg(long)]
    pub value: String,
    /// FRAUD_CALL, SPAM, PHISHING, MULE_ACCOUNT, STOLEN_HANDSET, FAKE_KYC, DISCONNECTED or VOIP_ABUSE.
    #[arg(long, value_parser = parse_enum::<Category>)]
    pub category: Category,
    /// MEDIUM, HIGH or VERY_HIGH.
    #[arg(long, value_parser = parse_enum::<Risk>, default_value = "HIGH")]
    pub risk: Risk,
    /// CLEAR, GREEN, AMBER or RED.
    #[arg(long, value_parser = parse_enum::<Tlp>, default_value = "GREEN")]
    pub tlp: Tlp,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Expire the indicator after this many hours.
    #[arg(long)]
    pub valid_hours: Option<u32>,
    /// Retrying with the same key never publishes twice.
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_parser = parse_enum::<Kind>)]
    pub kind: Kind,
    #[arg(long)]
    pub value: String,
    /// Why it is withdrawn.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_parser = parse_enum::<Kind>)]
    pub kind: Kind,
    #[arg(long)]
    pub value: String,
    /// NUMBER_DISCONNECTED, ACCOUNT_FROZEN, ACCOUNT_DEREGISTERED, UPI_ID_DELINKED, URL_BLOCKED, HANDSET_BLOCKED or OTHER_ACTION.
    #[arg(long, value_parser = parse_enum::<ActionType>)]
    pub action: ActionType,
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only these kinds (repeatable).
    #[arg(long = "kind", value_parser = parse_enum::<Kind>)]
    pub kinds: Vec<Kind>,
    /// Only these categories (repeatable).
    #[arg(long = "category", value_parser = parse_enum::<Category>)]
    pub categories: Vec<Category>,
    /// Only this risk and above.
    #[arg(long, value_parser = parse_enum::<Risk>)]
    pub min_risk: Option<Risk>,
    /// Start after this sequence (0: from the beginning).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only events from now on.
    #[arg(long, conflicts_with = "after")]
    pub from_now: bool,
    /// Durable consumer name: resume after its last acknowledged sequence, and
    /// acknowledge each message once its events are written to stdout.
    #[arg(long, default_value = "")]
    pub consumer: String,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_parser = parse_enum::<Kind>)]
    pub kind: Kind,
    #[arg(long)]
    pub value: String,
}

/// How a snapshot is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotFormat {
    /// A header, then one line per indicator:
    /// kind,value,category,risk,tlp,source_org,first_seen,last_seen (times in Unix ms).
    Csv,
    /// One JSON object: as_of_sequence, digest, count, indicators.
    Json,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: SnapshotFormat,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// Which active indicators a snapshot (or an export made from one) holds.
#[derive(Debug, Args)]
pub struct SnapshotFilterArgs {
    /// Only these kinds (repeatable).
    #[arg(long = "kind", value_parser = parse_enum::<Kind>)]
    pub kinds: Vec<Kind>,
    /// Only these categories (repeatable).
    #[arg(long = "category", value_parser = parse_enum::<Category>)]
    pub categories: Vec<Category>,
    /// Only this risk and above.
    #[arg(long, value_parser = parse_enum::<Risk>)]
    pub min_risk: Option<Risk>,
}

impl SnapshotFilterArgs {
    fn filter(&self) -> proto::Filter {
        proto::Filter {
            kinds: self.kinds.iter().map(|k| *k as i32).collect(),
            categories: self.categories.iter().map(|c| *c as i32).collect(),
            min_risk: self.min_risk.map_or(0, |r| r as i32),
            types: Vec::new(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A MISP feed (manifest.json, one event per category and TLP, hashes.csv)
    /// from a Snapshot taken with your certificate; run it again into the same
    /// directory to update the feed (indicators no longer active become deleted
    /// attributes). Serve the directory over HTTPS and add it to MISP as a feed.
    Misp(MispArgs),
}

#[derive(Debug, Args)]
pub struct MispArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The feed directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The database directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Development PKI directory (made if missing).
    #[arg(long, default_value = "certs/dev")]
    pub certs_dir: PathBuf,
    /// The organisation registry.
    #[arg(long, default_value = "certs/orgs.toml")]
    pub registry: PathBuf,
}

/// Parses an enumeration by its name, short or full, case-insensitively.
fn parse_enum<E: ValueName + Send + Sync>(text: &str) -> std::result::Result<E, String> {
    let upper = text.trim().to_ascii_uppercase().replace('-', "_");
    E::from_name(&upper)
        .ok_or_else(|| format!("{text:?} is not one of {}", E::short_names().join(", ")))
}

/// Runs one command to completion.
pub async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Certs {
            command: CertsCommand::Init { dir, registry },
        } => certs_init(&dir, &registry),
        Command::Serve(args) => serve(args).await,
        Command::Publish(args) => publish(args).await,
        Command::Revoke(args) => revoke(args).await,
        Command::Action(args) => action(args).await,
        Command::Subscribe(args) => subscribe(args).await,
        Command::Lookup(args) => lookup(args).await,
        Command::Snapshot(args) => snapshot(args).await,
        Command::Export {
            command: ExportCommand::Misp(args),
        } => export_misp(args).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Admin(args) => admin(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

pub fn certs_init(dir: &std::path::Path, registry: &std::path::Path) -> Result<()> {
    let orgs: Vec<String> = Registry::load(registry)?
        .all()
        .into_iter()
        .map(|o| o.id)
        .collect();
    let report = pki::init_dev_pki(dir, &orgs, &["localhost", "127.0.0.1"])?;
    tracing::info!(dir = %dir.display(), ?report, "development PKI ready");
    Ok(())
}

/// What `serve` prints on stdout once the hub answers (database open, state view
/// replayed), followed by the bound address.
pub const LISTENING_PREFIX: &str = "listening on ";

async fn serve(args: ServeArgs) -> Result<()> {
    let ServeSettings {
        listen,
        metrics_listen,
        taxii_listen,
        config,
    } = args.settings()?;
    let grpc = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
    // The bound address (useful with port 0), for whoever started the hub.
    let bound = grpc
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    tracing::info!(addr = %bound, "bound; starting");
    let metrics = bind_optional(metrics_listen, "metrics").await?;
    let taxii = bind_optional(taxii_listen, "TAXII").await?;
    let controls = Controls {
        shutdown: Box::pin(shutdown_signal()),
        reload: Some(reload_signal()),
        // Claimed only once the hub answers (health SERVING).
        ready: Some(Box::new(move || {
            println!("{LISTENING_PREFIX}{bound}");
        })),
    };
    crate::server::serve(
        config,
        Listeners {
            grpc,
            metrics,
            taxii,
        },
        controls,
    )
    .await
}

/// A listener on `addr`, if one is configured.
async fn bind_optional(addr: Option<SocketAddr>, what: &str) -> Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| Error::io(format!("listening for {what} on {addr}"), e))
}

/// A message on every SIGHUP: reload TLS credentials and CRLs.
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (trigger, reload) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading TLS credentials and CRLs");
                    // A reload already pending covers this one.
                    let _ = trigger.try_send(());
                }
            });
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload with Admin.ReloadCrls")
        }
    }
    #[cfg(not(unix))]
    drop(trigger);
    reload
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

async fn publish(args: PublishArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let valid_until = args.valid_hours.map(|hours| {
        crate::wire::timestamp(crate::indicator::now_millis() + i64::from(hours) * 3_600_000)
    });
    let request = proto::PublishRequest {
        indicators: vec![proto::Indicator {
            kind: args.kind as i32,
            value: args.value,
            category: args.category as i32,
            risk: args.risk as i32,
            description: args.description,
            valid_until,
            tlp: args.tlp as i32,
        }],
        idempotency_key: args.idempotency_key,
    };
    let response = client
        .publish(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_json(&events_json(&response.events, response.replayed));
    Ok(())
}

async fn revoke(args: RevokeArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::RevokeRequest {
        kind: args.kind as i32,
        value: args.value,
        reason: args.reason,
        idempotency_key: String::new(),
    };
    let response = client
        .revoke(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_json(&events_json(&response.events, response.replayed));
    Ok(())
}

async fn action(args: ActionArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::ReportActionRequest {
        kind: args.kind as i32,
        value: args.value,
        action: args.action as i32,
        note: args.note,
        idempotency_key: String::new(),
    };
    let response = client
        .report_action(request)
        .await
        .map_err(status_error)?
        .into_inner();
    print_json(&events_json(&response.events, response.replayed));
    Ok(())
}

fn events_json(events: &[proto::EventRef], replayed: bool) -> serde_json::Value {
    serde_json::json!({
        "replayed": replayed,
        "events": events.iter().map(|e| serde_json::json!({
            "sequence": e.sequence,
            "event_id": e.event_id,
            "type": crate::indicator::EventType::try_from(e.r#type).map(|t| t.short_name()).unwrap_or("?"),
        })).collect::<Vec<_>>(),
    })
}

async fn subscribe(args: SubscribeArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::SubscribeRequest {
        filter: Some(proto::Filter {
            kinds: args.kinds.iter().map(|k| *k as i32).collect(),
            categories: args.categories.iter().map(|c| *c as i32).collect(),
            min_risk: args.min_risk.map_or(0, |r| r as i32),
            types: Vec::new(),
        }),
        after_sequence: args.after,
        from_now: args.from_now,
        consumer: args.consumer.clone(),
        heartbeat_seconds: 0,
    };
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut seen = 0;
    while let Some(message) = stream.message().await.map_err(status_error)? {
        let mut done = None;
        if let Some(heartbeat) = &message.heartbeat {
            tracing::debug!(
                head = heartbeat.head_sequence,
                delivered_through = heartbeat.delivered_through,
                "heartbeat"
            );
            done = Some(heartbeat.delivered_through);
        }
        for event in &message.events {
            print_json(&client::event_json(event));
            done = Some(event.sequence);
            seen += 1;
            if args.limit.is_some_and(|limit| seen >= limit) {
                break;
            }
        }
        if let (false, Some(sequence)) = (args.consumer.is_empty(), done) {
            use std::io::Write;
            std::io::stdout()
                .flush()
                .map_err(|e| Error::io("writing events to stdout", e))?;
            let acked = client
                .ack(proto::AckRequest {
                    consumer: args.consumer.clone(),
                    sequence,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            tracing::debug!(acknowledged = acked.acknowledged_sequence, "acknowledged");
        }
        if args.limit.is_some_and(|limit| seen >= limit) {
            return Ok(());
        }
    }
    Ok(())
}

async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let snapshot = client::snapshot(&mut client, args.filter.filter()).await?;
    let mut out = String::new();
    match args.format {
        SnapshotFormat::Csv => {
            out.push_str("kind,value,category,risk,tlp,source_org,first_seen,last_seen\n");
            for state in &snapshot.indicators {
                out.push_str(&client::csv_line(state));
                out.push('\n');
            }
        }
        SnapshotFormat::Json => {
            let json = serde_json::json!({
                "as_of_sequence": snapshot.as_of_sequence,
                "digest": snapshot.digest,
                "count": snapshot.indicators.len(),
                "indicators": snapshot.indicators.iter().map(client::state_json).collect::<Vec<_>>(),
            });
            out.push_str(&json.to_string());
            out.push('\n');
        }
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .and_then(|()| std::io::stdout().flush())
        .map_err(|e| Error::io("writing the snapshot to stdout", e))?;
    eprintln!(
        "as_of_sequence={} digest={} count={} (subscribe with --after {} to stay exact)",
        snapshot.as_of_sequence,
        snapshot.digest,
        snapshot.indicators.len(),
        snapshot.as_of_sequence
    );
    Ok(())
}

async fn export_misp(args: MispArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let snapshot = client::snapshot(&mut client, args.filter.filter()).await?;
    let out = args.out;
    let now = crate::indicator::now_millis() / 1000;
    let written = tokio::task::spawn_blocking(move || {
        let previous = crate::misp::read_previous(&out)?;
        let feed = crate::misp::Feed::build(
            &snapshot.indicators,
            snapshot.as_of_sequence,
            &previous,
            now,
        );
        crate::misp::write(&out, &feed, &previous)?;
        Ok::<_, Error>((feed, snapshot.as_of_sequence, out))
    })
    .await
    .map_err(|e| Error::io("the export task", std::io::Error::other(e)))?;
    let (feed, as_of_sequence, out) = written?;
    print_json(&serde_json::json!({
        "out": out.display().to_string(),
        "as_of_sequence": as_of_sequence,
        "events": feed.events.len(),
        "attributes": feed.active_attributes(),
    }));
    Ok(())
}

async fn lookup(args: LookupArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::LookupRequest {
        kind: args.kind as i32,
        value: args.value,
    };
    let response = client
        .lookup(request)
        .await
        .map_err(status_error)?
        .into_inner();
    match response.state {
        Some(state) if response.found => print_json(&client::state_json(&state)),
        _ => print_json(&serde_json::json!({ "found": false })),
    }
    Ok(())
}

/// A status from the hub, for the command line's error message.
pub fn status_error(status: tonic::Status) -> Error {
    Error::Remote(status)
}

async fn admin(args: AdminArgs) -> Result<()> {
    use proto::admin_service_client::AdminServiceClient;
    let channel = client::channel(&args.client.hub, &args.client.certs()?).await?;
    let mut admin = AdminServiceClient::new(channel);
    let org_json = |org: &proto::Org| {
        serde_json::json!({
            "id": org.id,
            "name": org.name,
            "role": proto::OrgRole::try_from(org.role).map_or("?", |r| r.short_name()),
            "status": proto::OrgStatus::try_from(org.status).map_or("?", |s| s.short_name()),
        })
    };
    let set_status =
        |id: String, status: proto::OrgStatus, reason: String| proto::SetOrgStatusRequest {
            id,
            status: status as i32,
            reason,
        };
    let changed = match args.command {
        AdminCommand::Orgs => {
            let orgs = admin
                .list_orgs(proto::ListOrgsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .orgs;
            for org in &orgs {
                print_json(&org_json(org));
            }
            return Ok(());
        }
        AdminCommand::Onboard { id, name, role } => {
            admin
                .onboard_org(proto::OnboardOrgRequest {
                    id,
                    name,
                    role: role as i32,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .org
        }
        AdminCommand::Suspend { id, reason } => {
            admin
                .set_org_status(set_status(id, proto::OrgStatus::Suspended, reason))
                .await
                .map_err(status_error)?
                .into_inner()
                .org
        }
        AdminCommand::Activate { id, reason } => {
            admin
                .set_org_status(set_status(id, proto::OrgStatus::Active, reason))
                .await
                .map_err(status_error)?
                .into_inner()
                .org
        }
        AdminCommand::ReloadCrls => {
            let loaded = admin
                .reload_crls(proto::ReloadCrlsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_json(&serde_json::json!({
                "crl_files": loaded.crls,
                "revoked_serials": loaded.revoked_serials,
            }));
            return Ok(());
        }
        AdminCommand::Audit { hours, limit } => {
            let since = hours.map(|hours| {
                crate::wire::timestamp(
                    crate::indicator::now_millis() - i64::from(hours) * 3_600_000,
                )
            });
            let entries = admin
                .read_audit(proto::ReadAuditRequest { since, limit })
                .await
                .map_err(status_error)?
                .into_inner()
                .entries;
            for entry in &entries {
                print_json(&serde_json::json!({
                    "time": entry.time.as_ref().map(crate::wire::millis),
                    "org": entry.org,
                    "cert_serial": entry.cert_serial,
                    "action": entry.action,
                    "subject": entry.subject,
                    "outcome": entry.outcome,
                }));
            }
            return Ok(());
        }
    };
    if let Some(org) = &changed {
        print_json(&org_json(org));
    }
    Ok(())
}
