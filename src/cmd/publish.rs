//! `dip-hub publish`: publish one indicator as an organisation, or a whole file
//! of them (`--file`, see `bulk`).
//!
//! Owns: the subcommand's arguments and the request it builds. Must never
//! connect or print by another path than the module's shared one.

use anyhow::Result;
use clap::Args;

use dip_hub::indicator::{Category, Risk, Tlp};
use dip_hub::proto;

use std::path::{Path, PathBuf};

use super::bulk::{self, input::Format};
use super::{ClientArgs, IndicatorArgs, Usage, parse_enum, print_json, write};

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub indicator: Option<IndicatorArgs>,
    /// FRAUD_CALL, SPAM, PHISHING, MULE_ACCOUNT, STOLEN_HANDSET, FAKE_KYC, DISCONNECTED or VOIP_ABUSE.
    #[arg(long, value_parser = parse_enum::<Category>, required_unless_present = "file")]
    pub category: Option<Category>,
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

    /// Bulk load: publish every indicator of this file (CSV with a header, or
    /// JSON lines; columns/keys kind, value, category, risk, tlp, description,
    /// valid_until_ms) over one PublishStream. Rerunning the same file (with the
    /// same --batch) publishes nothing twice.
    #[arg(long, conflicts_with_all = ["kind", "value", "category", "valid_hours", "idempotency_key"])]
    pub file: Option<PathBuf>,
    /// With --file: csv or jsonl (default: from the file name).
    #[arg(long, value_enum, requires = "file")]
    pub format: Option<Format>,
    /// With --file: indicators per Publish request (1 to 1000).
    #[arg(long, default_value_t = 500, requires = "file")]
    pub batch: usize,
    /// With --file: Publish requests in flight on the stream.
    #[arg(long, default_value_t = 16, requires = "file")]
    pub in_flight: usize,
    /// With --file: where refused lines go, as JSON lines (default: FILE.rejects.jsonl).
    #[arg(long, requires = "file")]
    pub rejects: Option<PathBuf>,
}

/// Runs the subcommand.
pub async fn run(args: PublishArgs) -> Result<()> {
    if let Some(file) = &args.file {
        return load_file(&args, file).await;
    }
    let (Some(indicator), Some(category)) = (args.indicator, args.category) else {
        return Err(
            Usage("say what to publish: --kind, --value and --category, or --file".into()).into(),
        );
    };
    let valid_until = args.valid_hours.map(|hours| {
        dip_hub::wire::timestamp(dip_hub::indicator::now_millis() + i64::from(hours) * 3_600_000)
    });
    let request = proto::PublishRequest {
        indicators: vec![proto::Indicator {
            kind: indicator.kind as i32,
            value: indicator.value,
            category: category as i32,
            risk: args.risk as i32,
            description: args.description,
            valid_until,
            tlp: args.tlp as i32,
        }],
        idempotency_key: args.idempotency_key,
    };
    write(&args.client, |mut client| async move {
        let response = client.publish(request).await?.into_inner();
        Ok((response.events, response.replayed))
    })
    .await
}

/// `--file`: the bulk load, its summary as one JSON line.
async fn load_file(args: &PublishArgs, file: &Path) -> Result<()> {
    if !(1..=dip_hub::validate::MAX_BATCH).contains(&args.batch) {
        return Err(Usage(format!(
            "--batch: {} is out of range; expected 1 to {}",
            args.batch,
            dip_hub::validate::MAX_BATCH
        ))
        .into());
    }
    if !(1..=bulk::MAX_IN_FLIGHT).contains(&args.in_flight) {
        return Err(Usage(format!(
            "--in-flight: {} is out of range; expected 1 to {}",
            args.in_flight,
            bulk::MAX_IN_FLIGHT
        ))
        .into());
    }
    let mut options = bulk::Options::for_file(file, args.format)?;
    options.batch = args.batch;
    options.in_flight = args.in_flight;
    options.rejects = args
        .rejects
        .clone()
        .unwrap_or_else(|| bulk::rejects_beside(file));
    let client = args.client.connect().await?;
    let summary = bulk::load(client, file, &options).await?;
    print_json(&serde_json::to_value(&summary)?);
    Ok(())
}
