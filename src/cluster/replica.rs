//! The replica consumer: every node applies what the cluster's stream holds.
//!
//! Owns: reading the stream in order from the node's head + 1 (an ordered
//! consumer: no acks, it recreates itself on a gap or a lost server, and is
//! recreated when it stays quiet while the stream moves on) and
//! handing what it reads to the writer in batches ([`Applier`]), which checks
//! that each follows its head, stores it in the local sled log (no sync: the
//! stream is the durable copy), applies the state and feeds subscribers. After
//! an error it resumes from the writer's head + 1. Also reads a given range of
//! the stream ([`read_range`]: repairing a local copy at start). Must never
//! write the stream, and never skip a sequence: a record that does not follow
//! is refused by the writer, not applied.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::log::{Record, decode_record};
use crate::sequencer::Applier;

use super::{Cluster, STREAM};

/// Most records handed to the writer at once (one local flush).
const APPLY_BATCH: usize = 1000;
/// How long [`read_range`] may take.
const RANGE_WITHIN: Duration = Duration::from_secs(60);
/// Silence after which the consumer is checked against the stream's head.
const QUIET: Duration = Duration::from_secs(2);
/// Pause before reading again after an error.
const BACKOFF: Duration = Duration::from_millis(500);

/// Starts applying the stream from `head + 1`; ends on `stop`.
pub fn spawn(
    cluster: Cluster,
    applier: Applier,
    head: u64,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut head = head;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                outcome = follow(&cluster, &applier, &mut head) => {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, head, "reading the cluster's log failed; resuming");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(BACKOFF) => {}
            }
        }
    })
}

/// Reads the stream after `head` and applies it, moving `head`, until an error.
async fn follow(cluster: &Cluster, applier: &Applier, head: &mut u64) -> Result<()> {
    let mut messages = messages_from(cluster, *head + 1).await?;
    loop {
        let first = match tokio::time::timeout(QUIET, messages.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => return Err(Error::Unavailable("the stream's consumer ended".into())),
            // Nothing for a while: either nothing was written, or the
            // consumer lost its server without noticing (seen after a NATS
            // stream leader's kill -9: a new leader hub waited over 40 s at
            // one event short of the stream's head). Recreated if behind.
            Err(_) => {
                let stream_head = cluster.stream_head().await?;
                if stream_head > *head {
                    return Err(Error::Unavailable(format!(
                        "the stream's consumer delivered nothing for {QUIET:?} while the stream is at {stream_head}"
                    )));
                }
                continue;
            }
        };
        let mut batch = vec![record(first)?];
        while batch.len() < APPLY_BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(record(message)?),
                _ => break,
            }
        }
        *head = applier.apply(batch).await?;
    }
}

/// The records `from..=to` of the stream (to repair a local copy that lost
/// them); an error if the stream does not hold them all within [`RANGE_WITHIN`].
pub async fn read_range(cluster: &Cluster, from: u64, to: u64) -> Result<Vec<Record>> {
    let read = async {
        let mut messages = messages_from(cluster, from).await?;
        let mut records = Vec::new();
        while records.len() < (to + 1 - from) as usize {
            let Some(message) = messages.next().await else {
                return Err(Error::Unavailable("the stream's consumer ended".into()));
            };
            records.push(record(message)?);
        }
        Ok(records)
    };
    tokio::time::timeout(RANGE_WITHIN, read).await.map_err(|_| {
        Error::Unavailable(format!(
            "the stream did not deliver {from}..={to} within {RANGE_WITHIN:?} (is it the cluster this node's data directory belongs to?)"
        ))
    })?
}

/// The stream's messages from sequence `start` on, through an ordered consumer.
async fn messages_from(cluster: &Cluster, start: u64) -> Result<pull::Ordered> {
    let unavailable =
        |what: &str, e: &dyn std::fmt::Display| Error::Unavailable(format!("{what}: {e}"));
    let stream = cluster
        .jetstream
        .get_stream(STREAM)
        .await
        .map_err(|e| unavailable("finding the stream", &e))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("creating the ordered consumer", &e))?;
    consumer
        .messages()
        .await
        .map_err(|e| unavailable("reading the stream", &e))
}

/// The record a stream message holds, at the message's stream sequence.
fn record(
    message: std::result::Result<
        async_nats::jetstream::Message,
        async_nats::jetstream::consumer::pull::OrderedError,
    >,
) -> Result<Record> {
    let message = message.map_err(|e| Error::Unavailable(format!("reading the stream: {e}")))?;
    let sequence = message
        .info()
        .map_err(|e| Error::Unavailable(format!("a stream message without its sequence: {e}")))?
        .stream_sequence;
    decode_record(sequence, &message.payload)
}
