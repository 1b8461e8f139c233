//! `dip-hub subscribe`: follow the hub's events as JSON lines on stdout,
//! acknowledging them for a durable consumer once they are written.
//!
//! Owns: the subscription's arguments and its output. Must never acknowledge
//! an event before it is flushed to stdout.

use anyhow::Result;
use clap::Args;

use dip_hub::client;
use dip_hub::proto;

use super::{ClientArgs, FilterArgs, io_error, print_json, remote};

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
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
        filter: Some(args.filter.filter()),
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
