//! The hub's validated configuration.
//!
//! Owns: what the server needs to run, checked once (files readable, values in
//! range) before anything starts, and the config file (TOML) whose values lie
//! beneath environment variables and flags (flag, then `DIP_*` environment
//! variable, then config file, then default). Must never parse command lines
//! (that is the application, `src/cmd/serve.rs`) nor hold open resources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::budget;
use crate::error::{Error, Result};
use crate::feed;
use crate::limits::LimitOverrides;
use crate::registry::Role;

/// Where the server's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The hub CA: client certificates must be signed by it.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Certificate revocation lists (PEM), optional.
    pub crls: Vec<PathBuf>,
}

impl TlsFiles {
    /// The layout `dip-hub certs init` writes.
    pub fn dev(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            crls: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The sled database directory.
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    /// The organisation registry (TOML).
    pub registry: PathBuf,
    /// Records the live feed keeps for subscribers that are behind.
    pub feed_capacity: usize,
    /// How long shutdown waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
    /// Per-role limits over the defaults in `limits` (the registry overrides these per organisation).
    pub role_limits: BTreeMap<Role, LimitOverrides>,
    /// Bytes Subscribe streams may hold queued for their clients, summed over streams.
    pub subscriber_budget_bytes: usize,
    /// Cluster mode: the NATS servers (`nats://host:port`) whose JetStream holds
    /// the log; empty: one node on its own sled log.
    pub cluster: Vec<String>,
}

impl Config {
    pub fn new(data_dir: PathBuf, tls: TlsFiles, registry: PathBuf) -> Config {
        Config {
            data_dir,
            tls,
            registry,
            feed_capacity: feed::DEFAULT_CAPACITY,
            shutdown_grace: Duration::from_secs(10),
            role_limits: BTreeMap::new(),
            subscriber_budget_bytes: budget::DEFAULT_BYTES,
            cluster: Vec::new(),
        }
    }

    /// Checks that every file the server needs is there.
    pub fn validate(&self) -> Result<()> {
        let files = [
            ("CA certificate", &self.tls.ca_cert),
            ("server certificate", &self.tls.server_cert),
            ("server key", &self.tls.server_key),
            ("organisation registry", &self.registry),
        ];
        for (what, path) in files
            .into_iter()
            .chain(self.tls.crls.iter().map(|p| ("CRL", p)))
        {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "{what} {} does not exist (run `dip-hub certs init` for a development PKI)",
                    path.display()
                )));
            }
        }
        if self.feed_capacity == 0 {
            return Err(Error::Config("the feed capacity must be at least 1".into()));
        }
        for server in &self.cluster {
            let parsed = url::Url::parse(server).ok();
            if !parsed.is_some_and(|u| u.scheme() == "nats" && u.host_str().is_some()) {
                return Err(Error::Config(format!(
                    "cluster server {server:?} is not a NATS address; expected nats://host:port"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a file that must exist, with the path in the error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Default gRPC address of `dip-hub serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
/// Default shutdown grace, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;

/// Every setting of `dip-hub serve`, each optional: a config file, or the
/// flags and environment variables, which override it (see [`ServeFile::over`]).
/// Relative paths are relative to the working directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// gRPC (mutual TLS) address, default 127.0.0.1:7443.
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics (plain HTTP) address; unset: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// TAXII 2.1 (HTTPS, mutual TLS) address; unset: no TAXII server.
    pub taxii_listen: Option<SocketAddr>,
    /// The sled database directory, default `dip-data`.
    pub data_dir: Option<PathBuf>,
    /// Development PKI directory (ca.pem, server.pem, server.key), default `certs/dev`.
    pub certs_dir: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Certificate revocation lists (PEM), re-read on reload.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// The organisation registry, default `certs/orgs.toml`.
    pub registry: Option<PathBuf>,
    pub feed_capacity: Option<usize>,
    pub shutdown_grace_seconds: Option<u64>,
    /// Per-role limit overrides, e.g. `[limits.BANK] subscribe_streams = 100`.
    #[serde(default)]
    pub limits: BTreeMap<Role, LimitOverrides>,
    /// Global budget for what Subscribe streams hold queued, in MiB.
    pub subscriber_budget_mib: Option<usize>,
    /// Cluster mode: the NATS servers holding the log, e.g. `["nats://10.0.0.1:4222"]`.
    #[serde(default)]
    pub cluster: Vec<String>,
}

/// What `dip-hub serve` runs: the addresses to bind and the server's configuration.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub taxii_listen: Option<SocketAddr>,
    pub config: Config,
}

impl ServeFile {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<ServeFile> {
        let text = read_text(path)?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
    }

    /// These settings where given, `beneath` where not.
    pub fn over(self, beneath: ServeFile) -> ServeFile {
        ServeFile {
            listen: self.listen.or(beneath.listen),
            metrics_listen: self.metrics_listen.or(beneath.metrics_listen),
            taxii_listen: self.taxii_listen.or(beneath.taxii_listen),
            data_dir: self.data_dir.or(beneath.data_dir),
            certs_dir: self.certs_dir.or(beneath.certs_dir),
            ca: self.ca.or(beneath.ca),
            cert: self.cert.or(beneath.cert),
            key: self.key.or(beneath.key),
            crls: if self.crls.is_empty() {
                beneath.crls
            } else {
                self.crls
            },
            registry: self.registry.or(beneath.registry),
            feed_capacity: self.feed_capacity.or(beneath.feed_capacity),
            shutdown_grace_seconds: self
                .shutdown_grace_seconds
                .or(beneath.shutdown_grace_seconds),
            limits: if self.limits.is_empty() {
                beneath.limits
            } else {
                self.limits
            },
            subscriber_budget_mib: self.subscriber_budget_mib.or(beneath.subscriber_budget_mib),
            cluster: if self.cluster.is_empty() {
                beneath.cluster
            } else {
                self.cluster
            },
        }
    }

    /// Fills in defaults and checks the result once.
    pub fn settings(self) -> Result<ServeSettings> {
        let dev = TlsFiles::dev(&self.certs_dir.unwrap_or_else(|| PathBuf::from("certs/dev")));
        let tls = TlsFiles {
            ca_cert: self.ca.unwrap_or(dev.ca_cert),
            server_cert: self.cert.unwrap_or(dev.server_cert),
            server_key: self.key.unwrap_or(dev.server_key),
            crls: self.crls,
        };
        let mut config = Config::new(
            self.data_dir.unwrap_or_else(|| PathBuf::from("dip-data")),
            tls,
            self.registry
                .unwrap_or_else(|| PathBuf::from("certs/orgs.toml")),
        );
        if let Some(capacity) = self.feed_capacity {
            config.feed_capacity = capacity;
        }
        let grace = self
            .shutdown_grace_seconds
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS);
        if grace > 3600 {
            return Err(Error::Config(format!(
                "shutdown_grace_seconds is {grace}; expected at most 3600"
            )));
        }
        config.shutdown_grace = Duration::from_secs(grace);
        config.role_limits = self.limits;
        config.cluster = self.cluster;
        if let Some(mib) = self.subscriber_budget_mib {
            if !(1..=65_536).contains(&mib) {
                return Err(Error::Config(format!(
                    "subscriber_budget_mib is {mib}; expected 1 to 65536"
                )));
            }
            config.subscriber_budget_bytes = mib * 1024 * 1024;
        }
        let listen = match self.listen {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| Error::Config("the default listen address".into()))?,
        };
        if listen.port() != 0 && self.metrics_listen == Some(listen) {
            return Err(Error::Config(format!(
                "metrics_listen and listen are both {listen}; metrics need their own address"
            )));
        }
        if let Some(taxii) = self.taxii_listen.filter(|t| t.port() != 0)
            && (taxii == listen || self.metrics_listen == Some(taxii))
        {
            return Err(Error::Config(format!(
                "taxii_listen is {taxii}, also the gRPC or metrics address; TAXII needs its own address"
            )));
        }
        config.validate()?;
        Ok(ServeSettings {
            listen,
            metrics_listen: self.metrics_listen,
            taxii_listen: self.taxii_listen,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_environment_override_the_file_which_overrides_defaults() {
        let file: ServeFile = toml::from_str(
            r#"
            listen = "0.0.0.0:7443"
            metrics_listen = "127.0.0.1:9464"
            data_dir = "/var/lib/dip"
            crls = ["a.pem"]
            shutdown_grace_seconds = 30
            "#,
        )
        .expect("parses");
        let flags = ServeFile {
            data_dir: Some("/tmp/override".into()),
            ..ServeFile::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.data_dir, Some(PathBuf::from("/tmp/override")));
        assert_eq!(merged.listen, Some("0.0.0.0:7443".parse().expect("addr")));
        assert_eq!(merged.crls, vec![PathBuf::from("a.pem")]);
        assert_eq!(merged.shutdown_grace_seconds, Some(30));
        assert_eq!(merged.feed_capacity, None);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = toml::from_str::<ServeFile>("listne = \"x\"").expect_err("typo");
        assert!(error.to_string().contains("listne"), "{error}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = include_str!("../../certs/hub.example.toml");
        let file: ServeFile = toml::from_str(example).expect("example parses");
        assert!(file.metrics_listen.is_some());
        assert_eq!(
            file.limits[&Role::Bank].subscribe_streams,
            Some(64),
            "per-role limits are read"
        );
        assert_eq!(file.subscriber_budget_mib, Some(64));
    }
}
