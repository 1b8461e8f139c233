//! `dip-hub revoke`: withdraw an indicator the organisation published.
//!
//! Owns: the subcommand's arguments and the request it builds. Must never
//! connect or print by another path than the module's shared one.

use anyhow::Result;
use clap::Args;

use dip_hub::proto;

use super::{ClientArgs, IndicatorArgs, write};

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub indicator: IndicatorArgs,
    /// Why it is withdrawn.
    #[arg(long)]
    pub reason: String,
}

/// Runs the subcommand.
pub async fn run(args: RevokeArgs) -> Result<()> {
    let request = proto::RevokeRequest {
        kind: args.indicator.kind as i32,
        value: args.indicator.value,
        reason: args.reason,
        idempotency_key: String::new(),
    };
    write(&args.client, |mut client| async move {
        let response = client.revoke(request).await?.into_inner();
        Ok((response.events, response.replayed))
    })
    .await
}
