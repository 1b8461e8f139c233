//! `dip-hub action`: report what the organisation did about an indicator.
//!
//! Owns: the subcommand's arguments and the request it builds. Must never
//! connect or print by another path than the module's shared one.

use anyhow::Result;
use clap::Args;

use dip_hub::indicator::ActionType;
use dip_hub::proto;

use super::{ClientArgs, IndicatorArgs, parse_enum, write};

#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub indicator: IndicatorArgs,
    /// NUMBER_DISCONNECTED, ACCOUNT_FROZEN, ACCOUNT_DEREGISTERED, UPI_ID_DELINKED, URL_BLOCKED, HANDSET_BLOCKED or OTHER_ACTION.
    #[arg(long, value_parser = parse_enum::<ActionType>)]
    pub action: ActionType,
    #[arg(long, default_value = "")]
    pub note: String,
}

/// Runs the subcommand.
pub async fn run(args: ActionArgs) -> Result<()> {
    let request = proto::ReportActionRequest {
        kind: args.indicator.kind as i32,
        value: args.indicator.value,
        action: args.action as i32,
        note: args.note,
        idempotency_key: String::new(),
    };
    write(&args.client, |mut client| async move {
        let response = client.report_action(request).await?.into_inner();
        Ok((response.events, response.replayed))
    })
    .await
}
