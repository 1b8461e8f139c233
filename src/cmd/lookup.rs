//! `dip-hub lookup`: the current state of one indicator, as JSON.
//!
//! Owns: the subcommand's arguments and its output.

use anyhow::Result;
use clap::Args;

use dip_hub::client;
use dip_hub::proto;

use super::{ClientArgs, IndicatorArgs, print_json, remote};

#[derive(Debug, Args)]
pub struct LookupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub indicator: IndicatorArgs,
}

/// Runs the subcommand.
pub async fn run(args: LookupArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::LookupRequest {
        kind: args.indicator.kind as i32,
        value: args.indicator.value,
    };
    let response = client.lookup(request).await.map_err(remote)?.into_inner();
    match response.state {
        Some(state) if response.found => print_json(&client::state_json(&state)),
        _ => print_json(&serde_json::json!({ "found": false })),
    }
    Ok(())
}
