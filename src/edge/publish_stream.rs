//! PublishStream: many Publish requests in flight on one stream, answered in
//! request order as each becomes durable.
//!
//! Owns: the stream's loop. It reads a request only while fewer than the
//! organisation's `publishes_in_flight` of this stream await their answer (so a
//! client that sends too fast, or stops reading answers, is held back by HTTP/2
//! flow control), admits each request exactly as the unary Publish does (caller
//! still admitted, validate, authorize, in-flight permit, publish rate; while
//! the organisation's in-flight permits are all taken the stream waits for
//! one rather than refuse), hands
//! it to the sequencer in request order, and answers each in its own slot: the
//! events once durable, or the refusal the unary call would have given. The
//! stream ends with a status only when it cannot go on (the caller is no longer
//! admitted, a request does not decode, the hub shuts down); answers owed for
//! requests already handed to the writer are sent first. Must never answer a
//! request before its events are durable, reorder answers, or hold a lock
//! across an `.await`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::api::{Hub, event_refs};
use crate::error::{Error, Result};
use crate::indicator::Source;
use crate::limits::{Concurrent, Permit};
use crate::policy;
use crate::proto;
use crate::sequencer::{Change, Submission};
use crate::validate::PublishBatch;

/// Most requests of one stream in flight, whatever the organisation's limit.
pub const MAX_STREAM_IN_FLIGHT: u32 = 1024;
/// Answers encoded ahead of the transport; beyond them the stream waits for
/// the client to read.
const ANSWERS_BUFFERED: usize = 64;
/// How often a stream waiting for an in-flight permit looks again, in case the
/// wake-up of a permit given back went to a waiter that left.
const RECHECK: Duration = Duration::from_millis(100);

type Answer = proto::PublishStreamResponse;
type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The answers of a PublishStream, from a task that ends when the client goes
/// away, the requests end and every answer is sent, or `stop` is cancelled.
pub fn spawn(
    hub: Hub,
    source: Source,
    requests: Streaming<proto::PublishStreamRequest>,
    stop: CancellationToken,
) -> ReceiverStream<Result<Answer, Status>> {
    let (answers, receiver) = mpsc::channel(ANSWERS_BUFFERED);
    let stream = PublishStream {
        hub,
        source,
        answers,
        stop,
    };
    tokio::spawn(stream.run(requests));
    ReceiverStream::new(receiver)
}

struct PublishStream {
    hub: Hub,
    source: Source,
    answers: mpsc::Sender<Result<Answer, Status>>,
    stop: CancellationToken,
}

/// Why the loop stopped reading requests.
enum End {
    /// The client closed its side: answer what is pending, then end OK.
    Finished,
    /// The stream must end with this status once the pending answers are sent.
    Failed(Status),
    /// The client went away: nothing more to send.
    Gone,
}

impl PublishStream {
    async fn run(self, mut requests: Streaming<proto::PublishStreamRequest>) {
        let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
        let end = loop {
            let window = self.window();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break End::Failed(self.stopped()),
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    if !self.send(Ok(answer)).await {
                        break End::Gone;
                    }
                }
                next = requests.message(), if pending.len() < window => match next {
                    Ok(Some(request)) => {
                        let slot = match self.slot(&mut pending).await {
                            Ok(slot) => slot,
                            Err(end) => break end,
                        };
                        match self.admit(request, slot).await {
                            Ok(answer) => pending.push_back(answer),
                            Err(status) => break End::Failed(status),
                        }
                    }
                    Ok(None) => break End::Finished,
                    Err(status) => break End::Failed(status),
                },
            }
        };
        if matches!(end, End::Gone) {
            return;
        }
        // Requests already with the writer are answered before the stream ends.
        while let Some(answer) = pending.next().await {
            if !self.send(Ok(answer)).await {
                return;
            }
        }
        if let End::Failed(status) = end {
            self.send(Err(status)).await;
        }
    }

    /// How many of this stream's requests may await their answer: the
    /// organisation's `publishes_in_flight`, read afresh so a change by the
    /// regulator applies at once.
    fn window(&self) -> usize {
        let limit = self.hub.registry.get(&self.source.org_id).map_or(1, |org| {
            self.hub
                .limits
                .limits(&org)
                .publishes_in_flight
                .clamp(1, MAX_STREAM_IN_FLIGHT)
        });
        limit as usize
    }

    /// One of the organisation's `publishes_in_flight` for the next request.
    /// While the organisation has none left (its other streams and calls hold
    /// them), the stream waits: it answers its own requests in flight (each
    /// frees one) or waits for another to be given back. `Err` when the stream
    /// must end: the client went away, the stream was stopped, or the caller is
    /// no longer admitted.
    async fn slot(&self, pending: &mut FuturesOrdered<Pending>) -> Result<Permit, End> {
        loop {
            let org = self
                .hub
                .registry
                .active(&self.source.org_id)
                .map_err(|error| End::Failed(error.into()))?;
            if let Ok(slot) = self.hub.limits.acquire(&org, Concurrent::PublishesInFlight) {
                return Ok(slot);
            }
            tokio::select! {
                () = self.stop.cancelled() => return Err(End::Failed(self.stopped())),
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    if !self.send(Ok(answer)).await {
                        return Err(End::Gone);
                    }
                }
                () = self.hub.limits.released(&org.id, RECHECK) => {}
            }
        }
    }

    /// Sends one message to the client, unless it went away (false).
    async fn send(&self, message: Result<Answer, Status>) -> bool {
        self.answers.send(message).await.is_ok()
    }

    /// The status a stream ends with when its stop token is cancelled: the
    /// caller's refusal if it was suspended or revoked, else the shutdown.
    fn stopped(&self) -> Status {
        match self
            .hub
            .admitted(&self.source.org_id, &self.source.cert_serial)
        {
            Err(error) => error.into(),
            Ok(_) => Status::unavailable(
                "the hub is shutting down; resend the requests not answered, with the same idempotency keys",
            ),
        }
    }

    /// Admits one request: its answer to come, in its slot, or the status that
    /// ends the stream (the caller is no longer admitted).
    async fn admit(
        &self,
        request: proto::PublishStreamRequest,
        slot: Permit,
    ) -> Result<Pending, Status> {
        let proto::PublishStreamRequest {
            correlation_id,
            publish,
        } = request;
        let (org, source) = self
            .hub
            .admitted(&self.source.org_id, &self.source.cert_serial)?;
        let started = std::time::Instant::now();
        let in_flight = self.hub.metrics.publish_started();
        let enqueued = async {
            let publish = publish.ok_or_else(|| {
                Error::invalid(
                    "publish",
                    "missing",
                    "the PublishRequest to publish, as in the unary Publish",
                )
            })?;
            let batch = PublishBatch::try_from(publish)?;
            let permit = policy::authorize_publish(&org, &batch.indicators)?;
            self.hub.limits.publish_rate(&org, batch.indicators.len())?;
            let submission = Submission {
                source,
                changes: batch.indicators.into_iter().map(Change::Publish).collect(),
                idempotency_key: batch.idempotency_key,
            };
            let committed = self.hub.sequencer.enqueue(permit, submission).await?;
            Ok::<_, Error>(committed)
        }
        .await;
        let metrics = self.hub.metrics.clone();
        Ok(Box::pin(async move {
            let outcome = match enqueued {
                Ok(enqueued) => enqueued.committed().await,
                Err(error) => Err(error),
            };
            drop((in_flight, slot));
            let outcome = match outcome {
                Ok(committed) => {
                    metrics.publish_latency(started.elapsed());
                    let (events, replayed) = event_refs(committed);
                    proto::publish_stream_response::Outcome::Published(proto::PublishResponse {
                        events,
                        replayed,
                    })
                }
                Err(error) => {
                    let status = Status::from(error);
                    proto::publish_stream_response::Outcome::Error(proto::PublishStreamError {
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    })
                }
            };
            Answer {
                correlation_id,
                outcome: Some(outcome),
            }
        }))
    }
}
