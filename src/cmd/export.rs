//! `dip-hub export misp`: what the organisation may see, from one Snapshot, as
//! a MISP feed directory (manifest.json, one event per category and TLP,
//! hashes.csv); a summary line on stdout.
//!
//! Owns: the subcommand's arguments and the file work off the async runtime.
//! Must never build the feed itself (`misp` maps the snapshot) nor export a
//! snapshot whose count or digest does not match (`client::snapshot` checks).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use dip_hub::{client, indicator, misp};

use super::{ClientArgs, FilterArgs, print_json, remote};

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
    pub filter: FilterArgs,
}

/// Runs the subcommand.
pub async fn run(command: ExportCommand) -> Result<()> {
    match command {
        ExportCommand::Misp(args) => export_misp(args).await,
    }
}

async fn export_misp(args: MispArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let snapshot = client::snapshot(&mut client, args.filter.filter())
        .await
        .map_err(remote)?;
    let out = args.out;
    let now = indicator::now_millis() / 1000;
    let written = tokio::task::spawn_blocking(move || {
        let previous = misp::read_previous(&out)?;
        let feed = misp::Feed::build(
            &snapshot.indicators,
            snapshot.as_of_sequence,
            &previous,
            now,
        );
        misp::write(&out, &feed, &previous)?;
        Ok::<_, dip_hub::Error>((feed, snapshot.as_of_sequence, out))
    })
    .await
    .context("the export task")?;
    let (feed, as_of_sequence, out) = written?;
    print_json(&serde_json::json!({
        "out": out.display().to_string(),
        "as_of_sequence": as_of_sequence,
        "events": feed.events.len(),
        "attributes": feed.active_attributes(),
    }));
    Ok(())
}
