//! `dip-hub subscribe`: follow the hub's events as JSON lines on stdout,
//! acknowledging them for a durable consumer once they are written.
//!
//! Owns: the subscription's arguments and its output. Must never acknowledge
//! an event before it is flushed to stdout.

use std::time::Duration;

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

/// Consecutive failed attempts, per hub given, before `subscribe` gives up.
const ATTEMPTS_PER_HUB: usize = 10;
/// Pause before trying the next hub.
const MOVE_AFTER: Duration = Duration::from_millis(500);

/// Where the subscription stands, carried from one hub to the next.
struct Position {
    /// Continue after this sequence (the last event written, or delivered_through).
    after: u64,
    from_now: bool,
    /// Events written so far (for --limit).
    seen: u64,
}

/// Runs the subcommand. With several hubs (a cluster), a stream that fails or
/// ends moves to the next hub with `after_sequence` = the last event written,
/// so nothing is skipped or repeated.
pub async fn run(args: SubscribeArgs) -> Result<()> {
    let hubs = &args.client.hub;
    let mut position = Position {
        after: args.after,
        from_now: args.from_now,
        seen: 0,
    };
    let mut at = 0;
    let mut failures = 0;
    loop {
        let hub = &hubs[at];
        let before = position.seen;
        let outcome = follow(&args, hub, &mut position).await;
        if position.seen > before {
            failures = 0;
        }
        match outcome {
            Ok(true) => return Ok(()),
            Ok(false) if hubs.len() == 1 => return Ok(()),
            Err(error) if hubs.len() == 1 => return Err(error),
            ended => {
                failures += 1;
                let why = match ended {
                    Err(error) => error.to_string(),
                    Ok(_) => "the stream ended".into(),
                };
                if failures >= ATTEMPTS_PER_HUB * hubs.len() {
                    anyhow::bail!(
                        "no hub serves the subscription ({failures} attempts); last: {why}"
                    );
                }
                at = (at + 1) % hubs.len();
                tracing::warn!(from = %hub, to = %hubs[at], after = position.after, %why, "moving the subscription to the next hub");
                tokio::time::sleep(MOVE_AFTER).await;
            }
        }
    }
}

/// Follows the stream of one hub; `true` once the limit is reached.
async fn follow(args: &SubscribeArgs, hub: &str, position: &mut Position) -> Result<bool> {
    let mut client = args.client.connect_to(hub).await?;
    let request = proto::SubscribeRequest {
        filter: Some(args.filter.filter()),
        after_sequence: position.after,
        from_now: position.from_now,
        consumer: args.consumer.clone(),
        heartbeat_seconds: 0,
    };
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(remote)?
        .into_inner();
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
            position.seen += 1;
            if args.limit.is_some_and(|limit| position.seen >= limit) {
                break;
            }
        }
        if let Some(sequence) = done {
            // Resumed elsewhere, the stream goes on after what was written.
            position.after = position.after.max(sequence);
            position.from_now = false;
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
        if args.limit.is_some_and(|limit| position.seen >= limit) {
            return Ok(true);
        }
    }
    Ok(false)
}
