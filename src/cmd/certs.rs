//! `dip-hub certs init`: the development PKI for the organisations of a registry.
//!
//! Owns: the subcommand's arguments. Must never shape certificates (that is `pki`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use dip_hub::pki;

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

/// Runs `certs init`.
pub fn run(command: CertsCommand) -> Result<()> {
    let CertsCommand::Init { dir, registry } = command;
    let report = pki::init_dev_pki_for_registry(&dir, &registry)?;
    tracing::info!(dir = %dir.display(), ?report, "development PKI ready");
    Ok(())
}
