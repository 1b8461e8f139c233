//! The hub's validated configuration.
//!
//! Owns: what the server needs to run, checked once (files readable, values in
//! range) before anything starts. Must never parse command lines (that is `main`)
//! nor hold open resources.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::feed;

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
}

impl Config {
    pub fn new(data_dir: PathBuf, tls: TlsFiles, registry: PathBuf) -> Config {
        Config {
            data_dir,
            tls,
            registry,
            feed_capacity: feed::DEFAULT_CAPACITY,
            shutdown_grace: Duration::from_secs(10),
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
        Ok(())
    }
}

/// Reads a file that must exist, with the path in the error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}
