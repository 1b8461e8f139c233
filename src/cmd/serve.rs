//! `dip-hub serve`: run the hub until Ctrl-C or SIGTERM; SIGHUP reloads TLS
//! credentials and CRLs.
//!
//! Owns: binding the listeners, printing the bound address
//! (`server::LISTENING_PREFIX`) once the hub answers (database open, state view
//! replayed), and the process signals. Must never run hub
//! logic: `server::serve` does.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tokio::net::TcpListener;

use dip_hub::config::{ServeFile, ServeSettings};
use dip_hub::server::{Controls, LISTENING_PREFIX, Listeners};

use super::io_error;

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
    /// Cluster mode: the NATS JetStream servers holding the log, comma-separated
    /// (nats://127.0.0.1:4222,...); unset: one node on its own sled log.
    #[arg(long, env = "DIP_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
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
            cluster: self.cluster.clone(),
        };
        Ok(given.over(file).settings()?)
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let ServeSettings {
        listen,
        metrics_listen,
        taxii_listen,
        config,
    } = args.settings()?;
    let grpc = TcpListener::bind(listen)
        .await
        .map_err(|e| io_error(format!("listening on {listen}"), e))?;
    // The bound address (useful with port 0), for whoever started the hub.
    let bound = grpc
        .local_addr()
        .map_err(|e| io_error("listener address", e))?;
    tracing::info!(addr = %bound, "bound; starting");
    let metrics = bind_optional(metrics_listen, "metrics").await?;
    let taxii = bind_optional(taxii_listen, "TAXII").await?;
    let controls = Controls {
        shutdown: Box::pin(shutdown_signal()),
        reload: Some(reload_signal()),
        // Called only once the hub answers (health SERVING).
        ready: Some(Box::new(move || {
            println!("{LISTENING_PREFIX}{bound}");
        })),
    };
    let listeners = Listeners {
        grpc,
        metrics,
        taxii,
    };
    Ok(dip_hub::server::serve(config, listeners, controls).await?)
}

/// A listener on `addr`, if one is configured.
async fn bind_optional(addr: Option<SocketAddr>, what: &str) -> Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io_error(format!("listening for {what} on {addr}"), e))?;
    Ok(Some(listener))
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

/// Completes when `signal` arrives; never when there is no handler.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled: the hub announces that it is
/// listening before it polls its shutdown future, and a SIGTERM in between must
/// stop it gracefully rather than kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for {name}");
                None
            }
        };
        let mut interrupt = install(SignalKind::interrupt(), "Ctrl-C");
        let mut terminate = install(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = received(interrupt.as_mut()) => {},
                () = received(terminate.as_mut()) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use crate::cmd::{Cli, Command};

    #[test]
    fn the_systemd_units_exec_start_is_a_serve_command_line_the_binary_accepts() {
        let unit = include_str!("../../deploy/systemd/dip-hub.service");
        let exec = unit
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let cli = Cli::try_parse_from(exec.split_whitespace())
            .unwrap_or_else(|e| panic!("ExecStart={exec} is refused: {e}"));
        match cli.command {
            Command::Serve(args) => {
                assert_eq!(args.config.as_deref(), Some(Path::new("/etc/dip/hub.toml")))
            }
            other => panic!("ExecStart runs {other:?}, not serve"),
        }
    }
}
