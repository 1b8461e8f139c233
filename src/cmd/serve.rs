//! `dip-hub serve`: run the hub until Ctrl-C or SIGTERM; SIGHUP reloads TLS
//! credentials and CRLs.
//!
//! Owns: binding the listeners, printing the bound address
//! (`server::LISTENING_PREFIX`), and the process signals. Must never run hub
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
            data_dir: self.data_dir.clone(),
            certs_dir: self.certs_dir.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            crls: self.crl.clone(),
            registry: self.registry.clone(),
            feed_capacity: self.feed_capacity,
            shutdown_grace_seconds: self.shutdown_grace_seconds,
        };
        Ok(given.over(file).settings()?)
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let ServeSettings {
        listen,
        metrics_listen,
        config,
    } = args.settings()?;
    let grpc = TcpListener::bind(listen)
        .await
        .map_err(|e| io_error(format!("listening on {listen}"), e))?;
    // The bound address (useful with port 0), for whoever started the hub.
    let bound = grpc
        .local_addr()
        .map_err(|e| io_error("listener address", e))?;
    println!("{LISTENING_PREFIX}{bound}");
    let metrics = match metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| io_error(format!("listening for metrics on {addr}"), e))?,
        ),
        None => None,
    };
    let controls = Controls {
        shutdown: Box::pin(shutdown_signal()),
        reload: Some(reload_signal()),
    };
    Ok(dip_hub::server::serve(config, Listeners { grpc, metrics }, controls).await?)
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
