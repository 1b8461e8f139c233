//! `dip-hub snapshot`: every active indicator the organisation may see, as of
//! one sequence, as CSV or JSON on stdout; the sequence and digest on stderr.
//!
//! Owns: the subcommand's arguments and output formats. Must never print a
//! snapshot whose count or digest does not match (`client::snapshot` checks).

use anyhow::Result;
use clap::Args;

use dip_hub::client;

use super::{ClientArgs, FilterArgs, io_error, remote};

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
    pub filter: FilterArgs,
}

/// Runs the subcommand.
pub async fn run(args: SnapshotArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let filter = args.filter.filter();
    let snapshot = client::snapshot(&mut client, filter)
        .await
        .map_err(remote)?;
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
        .map_err(|e| io_error("writing the snapshot to stdout", e))?;
    eprintln!(
        "as_of_sequence={} digest={} count={} (subscribe with --after {} to stay exact)",
        snapshot.as_of_sequence,
        snapshot.digest,
        snapshot.indicators.len(),
        snapshot.as_of_sequence
    );
    Ok(())
}
