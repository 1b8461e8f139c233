//! `dip-hub publish`: publish one indicator as an organisation.
//!
//! Owns: the subcommand's arguments and the request it builds. Must never
//! connect or print by another path than the module's shared one.

use anyhow::Result;
use clap::Args;

use dip_hub::indicator::{Category, Risk, Tlp};
use dip_hub::proto;

use super::{ClientArgs, IndicatorArgs, parse_enum, write};

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub indicator: IndicatorArgs,
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

/// Runs the subcommand.
pub async fn run(args: PublishArgs) -> Result<()> {
    let valid_until = args.valid_hours.map(|hours| {
        dip_hub::wire::timestamp(dip_hub::indicator::now_millis() + i64::from(hours) * 3_600_000)
    });
    let request = proto::PublishRequest {
        indicators: vec![proto::Indicator {
            kind: args.indicator.kind as i32,
            value: args.indicator.value,
            category: args.category as i32,
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
