//! `dip-hub subscribe`: follow the hub's events as JSON lines on stdout,
//! acknowledging them for a durable consumer once they are written.
//!
//! Owns: the subscription's arguments and its output. Must never acknowledge
//! an event before it is flushed to stdout.

use anyhow::Result;
use clap::Args;

use dip_hub::client;
use dip_hub::indicator::{Category, Kind, Risk};
use dip_hub::proto;

use super::{ClientArgs, io_error, parse_enum, print_json, remote};

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only these kinds (repeatable).
    #[arg(long = "kind", value_parser = parse_enum::<Kind>)]
    pub kinds: Vec<Kind>,
    /// Only these categories (repeatable).
    #[arg(long = "category", value_parser = parse_enum::<Category>)]
    pub categories: Vec<Category>,
    /// Only this risk and above.
    #[arg(long, value_parser = parse_enum::<Risk>)]
    pub min_risk: Option<Risk>,
    /// Start after this sequence (0: from the beginning).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only events from now on.
    #[arg(long, conflicts_with = "after")]
    pub from_now: bool,
    /// Durable consumer name: resume after its last acknowledged sequence, and
    /// acknowledge each message once its events are written to stdout.
    #[arg(long, default_value = "")]
    pub consumer: String,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Runs the subcommand.
pub async fn run(args: SubscribeArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let request = proto::SubscribeRequest {
        filter: Some(proto::Filter {
            kinds: args.kinds.iter().map(|k| *k as i32).collect(),
            categories: args.categories.iter().map(|c| *c as i32).collect(),
            min_risk: args.min_risk.map_or(0, |r| r as i32),
            types: Vec::new(),
        }),
        after_sequence: args.after,
        from_now: args.from_now,
        consumer: args.consumer.clone(),
        heartbeat_seconds: 0,
    };
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(remote)?
        .into_inner();
    let mut seen = 0;
    while let Some(message) = stream.message().await.map_err(remote)? {
        let mut done = None;
        if let Some(heartbeat) = &message.heartbeat {
            tracing::debug!(
                head = heartbeat.head_sequence,
                delivered_through = heartbeat.delivered_through,
                "heartbeat"
            );
            done = Some(heartbeat.delivered_through);
        }
        for event in &message.events {
            print_json(&client::event_json(event));
            done = Some(event.sequence);
            seen += 1;
            if args.limit.is_some_and(|limit| seen >= limit) {
                break;
            }
        }
        if let (false, Some(sequence)) = (args.consumer.is_empty(), done) {
            use std::io::Write;
            std::io::stdout()
                .flush()
                .map_err(|e| io_error("writing events to stdout", e))?;
            let acked = client
                .ack(proto::AckRequest {
                    consumer: args.consumer.clone(),
                    sequence,
                })
                .await
                .map_err(remote)?
                .into_inner();
            tracing::debug!(acknowledged = acked.acknowledged_sequence, "acknowledged");
        }
        if args.limit.is_some_and(|limit| seen >= limit) {
            return Ok(());
        }
    }
    Ok(())
}
