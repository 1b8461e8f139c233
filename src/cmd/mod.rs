//! The `dip-hub` command line: one subcommand per job, one file per subcommand,
//! raw arguments turned into a validated configuration once.
//!
//! Owns: argument parsing (clap, doc comments as help), the one path a client
//! command takes (connect, call, print), printing results (stdout) apart from
//! diagnostics (stderr, via tracing), and the application's errors (`anyhow`).
//! Must never hold hub logic: it calls the library's public API like any client.

pub mod action;
pub mod admin;
pub mod bench;
pub mod bulk;
pub mod certs;
pub mod demo;
pub mod export;
pub mod lookup;
pub mod publish;
pub mod revoke;
pub mod serve;
pub mod snapshot;
pub mod subscribe;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tonic::transport::Channel;

use dip_hub::client::{self, ClientCerts};
use dip_hub::indicator::{Category, Kind, Risk};
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;
use dip_hub::proto::{self, ValueName};

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
        command: certs::CertsCommand,
    },
    /// Run the hub.
    Serve(serve::ServeArgs),
    /// Publish one indicator as an organisation.
    Publish(publish::PublishArgs),
    /// Revoke (withdraw) an indicator you published.
    Revoke(revoke::RevokeArgs),
    /// Report what your organisation did about an indicator.
    Action(action::ActionArgs),
    /// Follow the hub's events as JSON lines on stdout.
    Subscribe(subscribe::SubscribeArgs),
    /// The current state of one indicator, as JSON.
    Lookup(lookup::LookupArgs),
    /// Every active indicator you may see (matching the filter), as of one sequence:
    /// CSV or JSON on stdout; the sequence and the digest on stderr.
    Snapshot(snapshot::SnapshotArgs),
    /// Export what you may see to another tool's format (a MISP feed directory).
    Export {
        #[command(subcommand)]
        command: export::ExportCommand,
    },
    /// Start a hub on a fresh embedded database and watch simulated stakeholders use it.
    Demo(demo::DemoArgs),
    /// Operate a running hub (regulator only): organisations, CRL reload, audit trail.
    Admin(admin::AdminArgs),
    /// Load-test a hub of its own (child process, temporary PKI and database, loopback).
    Bench(bench::BenchArgs),
}

/// How a client reaches the hub and who it is.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The hub's address; several (repeated or comma-separated) for a cluster:
    /// each is tried in turn, and `subscribe` moves to the next when one fails.
    #[arg(
        long,
        default_value = "https://localhost:7443",
        env = "DIP_HUB",
        value_delimiter = ','
    )]
    pub hub: Vec<String>,
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
    fn certs(&self) -> dip_hub::Result<ClientCerts> {
        match (&self.cert, &self.key, &self.ca, &self.org) {
            (Some(cert), Some(key), Some(ca), _) => Ok(ClientCerts {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (_, _, _, Some(org)) => Ok(ClientCerts::dev(&self.certs_dir, org)),
            _ => Err(dip_hub::Error::Config(
                "say who you are: --as ORG (development PKI) or --cert, --key and --ca".into(),
            )),
        }
    }

    /// The first of the hubs that accepts the connection.
    async fn connect(&self) -> Result<IndicatorHubServiceClient<Channel>> {
        let channel = self.channel().await?;
        Ok(client::hub_client(channel))
    }

    /// A channel to the first of the hubs that accepts the connection.
    async fn channel(&self) -> Result<Channel> {
        let certs = self.certs()?;
        if let [hub] = self.hub.as_slice() {
            return Ok(client::channel(hub, &certs).await?);
        }
        let mut failed = Vec::new();
        for hub in &self.hub {
            match client::channel(hub, &certs).await {
                Ok(channel) => return Ok(channel),
                Err(error) => failed.push(format!("{hub}: {error}")),
            }
        }
        Err(anyhow::anyhow!(
            "no hub accepted the connection ({})",
            failed.join("; ")
        ))
    }

    /// A client of hub `hub`.
    async fn connect_to(&self, hub: &str) -> Result<IndicatorHubServiceClient<Channel>> {
        Ok(client::connect(hub, &self.certs()?).await?)
    }
}

/// Which indicator: its kind and value (the hub normalizes the value).
#[derive(Debug, Args)]
pub struct IndicatorArgs {
    /// PHONE_NUMBER, IMEI, URL, DOMAIN, IP_ADDRESS, UPI_ID, BANK_ACCOUNT, EMAIL or SMS_HEADER.
    #[arg(long, value_parser = parse_enum::<Kind>)]
    pub kind: Kind,
    #[arg(long)]
    pub value: String,
}

/// Which events or indicators (for subscribe, snapshot and an export made from a
/// snapshot): a filter on kind, category and risk.
#[derive(Debug, Args)]
pub struct FilterArgs {
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

impl FilterArgs {
    /// The filter as the wire contract says it.
    pub fn filter(&self) -> proto::Filter {
        proto::Filter {
            kinds: self.kinds.iter().map(|k| *k as i32).collect(),
            categories: self.categories.iter().map(|c| *c as i32).collect(),
            min_risk: self.min_risk.map_or(0, |r| r as i32),
            types: Vec::new(),
        }
    }
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
        Command::Certs { command } => certs::run(command),
        Command::Serve(args) => serve::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Revoke(args) => revoke::run(args).await,
        Command::Action(args) => action::run(args).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Lookup(args) => lookup::run(args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Export { command } => export::run(command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// What a hub answered a client command: the status, its code shown by name.
#[derive(Debug)]
pub struct Remote(pub tonic::Status);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hub answered {:?}: {}",
            self.0.code(),
            self.0.message()
        )
    }
}

impl std::error::Error for Remote {}

/// A status from the hub, as the application's error.
pub fn remote(status: tonic::Status) -> anyhow::Error {
    Remote(status).into()
}

/// A command line that asks for something impossible (exit code 2, like a
/// configuration error).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `context` plus an I/O error, as the application's error.
pub fn io_error(context: impl Into<String>, error: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(context.into())
}

/// The one path of the commands that change an indicator (publish, revoke,
/// action): connect as the organisation, make the call, print the events it
/// committed as one JSON line.
async fn write<F, Fut>(args: &ClientArgs, call: F) -> Result<()>
where
    F: FnOnce(IndicatorHubServiceClient<Channel>) -> Fut,
    Fut: Future<Output = std::result::Result<(Vec<proto::EventRef>, bool), tonic::Status>>,
{
    let client = args.connect().await?;
    let (events, replayed) = call(client).await.map_err(remote)?;
    print_json(&events_json(&events, replayed));
    Ok(())
}

fn events_json(events: &[proto::EventRef], replayed: bool) -> serde_json::Value {
    serde_json::json!({
        "replayed": replayed,
        "events": events.iter().map(|e| serde_json::json!({
            "sequence": e.sequence,
            "event_id": e.event_id,
            "type": dip_hub::indicator::EventType::try_from(e.r#type).map(|t| t.short_name()).unwrap_or("?"),
        })).collect::<Vec<_>>(),
    })
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}
