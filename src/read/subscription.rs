//! One subscriber's stream: catch-up from the log, then the live feed.
//!
//! Owns: invariant 3 (every matching event exactly once, in order) and the
//! subscriber's side of invariant 4. The task joins the live feed *before* it reads
//! the durable head, reads the log up to that head, then takes live records,
//! skipping those it already sent. Whenever the live feed skips ahead of it (it
//! lagged behind the ring), it goes back to the log from the next sequence it owes.
//! Frames go to the client through a small bounded channel: a slow client only
//! ever stalls its own task. Must never hold more than one frame per queue slot,
//! never send an event that is not durable, and never skip one.
//!
//! Memory per subscriber, whatever its lag: at most [`QUEUE_FRAMES`] queued
//! frames of at most [`FRAME_BYTES`] (plus one event) each, the frame being
//! built, and during catch-up one read from the log of at most
//! `CATCH_UP_RECORDS` records or about `4 * FRAME_BYTES`: about 3.3 MiB at
//! worst, typically far less (live frames share their bytes with the feed's
//! ring). HTTP/2 flow control keeps what the transport holds to the client's
//! window. A subscriber that stops reading therefore costs a fixed amount, and
//! the ring it fell behind is shared and fixed in size (see `feed`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::feed::Feed;
use crate::frame::Frame;
use crate::indicator::{Category, EventType, Kind, Risk, now_millis};
use crate::log::{Log, Record, RecordMeta};
use crate::metrics::{Metrics, SubscriberProgress};
use crate::policy;
use crate::proto;
use crate::registry::Org;
use crate::wire;

/// Frames queued for one client before its task waits (the lag bound per subscriber).
const QUEUE_FRAMES: usize = 8;
/// Most events in one frame.
const FRAME_EVENTS: usize = 512;
/// About the most bytes in one frame.
const FRAME_BYTES: usize = 256 * 1024;
/// Most records read from the log at once during catch-up.
const CATCH_UP_RECORDS: usize = 4096;

/// Which events a subscriber wants; empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: Vec<Kind>,
    pub categories: Vec<Category>,
    pub min_risk: Option<Risk>,
    pub types: Vec<EventType>,
}

impl Filter {
    pub fn matches(&self, meta: &RecordMeta) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&meta.kind))
            && (self.categories.is_empty() || self.categories.contains(&meta.category))
            && self.min_risk.is_none_or(|min| meta.risk >= min)
            && (self.types.is_empty() || self.types.contains(&meta.event_type))
    }
}

/// What a subscription delivers, to whom, and from where.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub filter: Filter,
    /// The subscriber's organisation (TLP visibility).
    pub viewer: Org,
    /// Deliver events with a sequence greater than this.
    pub after: u64,
    pub heartbeat: Duration,
}

impl Subscription {
    fn wants(&self, meta: &RecordMeta) -> bool {
        self.filter.matches(meta) && policy::may_see(&self.viewer, meta.tlp, &meta.source_org)
    }
}

/// Starts the subscriber's task; its frames come out of the returned stream. The
/// task ends when the client goes away, `stop` is cancelled, or on a storage error
/// (sent to the client as a status).
pub fn spawn(
    subscription: Subscription,
    log: Log,
    feed: Feed,
    stop: CancellationToken,
    metrics: Metrics,
) -> ReceiverStream<Result<Frame, Status>> {
    let (frames, stream) = mpsc::channel(QUEUE_FRAMES);
    let task = Task {
        progress: metrics.subscriber(subscription.after),
        metrics,
        live: feed.subscribe(),
        subscription,
        log,
        feed,
        frames,
        stop,
    };
    tokio::spawn(task.run());
    ReceiverStream::new(stream)
}

struct Task {
    subscription: Subscription,
    log: Log,
    feed: Feed,
    live: broadcast::Receiver<Arc<Record>>,
    frames: mpsc::Sender<Result<Frame, Status>>,
    stop: CancellationToken,
    metrics: Metrics,
    /// Served up to (for the lag metrics).
    progress: SubscriberProgress,
}

/// Why a phase ended.
enum Next {
    CatchUp,
    Live,
    End,
}

impl Task {
    async fn run(mut self) {
        let mut next = self.subscription.after + 1;
        let mut phase = Next::CatchUp;
        loop {
            phase = match phase {
                Next::CatchUp => self.catch_up(&mut next).await,
                Next::Live => self.follow(&mut next).await,
                Next::End => return,
            };
        }
    }

    /// Sends every matching durable event from `next` up to the durable head.
    async fn catch_up(&mut self, next: &mut u64) -> Next {
        loop {
            let head = self.feed.committed();
            if *next > head {
                return Next::Live;
            }
            let log = self.log.clone();
            let from = *next;
            let read = tokio::task::spawn_blocking(move || {
                log.read(from, head, CATCH_UP_RECORDS, FRAME_BYTES * 4)
            })
            .await;
            let records = match read {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => return self.fail(Status::from(error)).await,
                Err(join) => return self.fail(Status::internal(join.to_string())).await,
            };
            let Some(last) = records.last().map(|r| r.sequence) else {
                return Next::Live;
            };
            // Before the frames go out, so that a client holding them sees its lag.
            self.progress.served_up_to(last);
            let mut frame = Frame::with_capacity(records.len().min(FRAME_EVENTS));
            for record in records {
                if self.subscription.wants(&record.meta) {
                    frame.push_entry(record.entry);
                    if (frame.entries() >= FRAME_EVENTS || frame.byte_len() >= FRAME_BYTES)
                        && !self.send(std::mem::take(&mut frame)).await
                    {
                        return Next::End;
                    }
                }
            }
            if !frame.is_empty() && !self.send(frame).await {
                return Next::End;
            }
            *next = last + 1;
        }
    }

    /// Follows the live feed until it skips ahead (back to the log) or the end.
    async fn follow(&mut self, next: &mut u64) -> Next {
        let mut idle_until = Instant::now() + self.subscription.heartbeat;
        loop {
            let received = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Next::End,
                () = self.frames.closed() => return Next::End,
                received = self.live.recv() => received,
                () = tokio::time::sleep_until(idle_until) => {
                    if !self.send(self.heartbeat(*next - 1)).await {
                        return Next::End;
                    }
                    idle_until = Instant::now() + self.subscription.heartbeat;
                    continue;
                }
            };
            let mut frame = Frame::default();
            let mut record = match received {
                Ok(record) => record,
                // Fell behind the ring: the gap check below sends it to the log.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Next::End,
            };
            loop {
                if record.sequence > *next {
                    // A gap: flush what we have, then serve the rest from the log.
                    if !frame.is_empty() && !self.send(frame).await {
                        return Next::End;
                    }
                    return Next::CatchUp;
                }
                if record.sequence == *next {
                    if self.subscription.wants(&record.meta) {
                        frame.push_entry(record.entry.clone());
                    }
                    *next += 1;
                }
                if frame.entries() >= FRAME_EVENTS || frame.byte_len() >= FRAME_BYTES {
                    break;
                }
                record = match self.live.try_recv() {
                    Ok(record) => record,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        if !frame.is_empty() && !self.send(frame).await {
                            return Next::End;
                        }
                        return Next::CatchUp;
                    }
                    Err(_) => break,
                };
            }
            self.progress.served_up_to(*next - 1);
            if !frame.is_empty() {
                if !self.send(frame).await {
                    return Next::End;
                }
                idle_until = Instant::now() + self.subscription.heartbeat;
            }
        }
    }

    /// A heartbeat: the durable head, and the sequence up to which every matching
    /// event has been sent (so a filtered subscriber can tell it is caught up).
    fn heartbeat(&self, delivered_through: u64) -> Frame {
        Frame::heartbeat(proto::Heartbeat {
            head_sequence: self.feed.committed(),
            time: Some(wire::timestamp(now_millis())),
            delivered_through,
        })
    }

    /// Queues a frame for the client; false when the stream is over.
    async fn send(&self, frame: Frame) -> bool {
        // Counted before it goes out, so that a client holding it sees it counted.
        self.metrics.delivered(frame.entries());
        tokio::select! {
            biased;
            () = self.stop.cancelled() => false,
            sent = self.frames.send(Ok(frame)) => sent.is_ok(),
        }
    }

    async fn fail(&self, status: Status) -> Next {
        tracing::error!(%status, "subscription failed");
        let _ = self.frames.send(Err(status)).await;
        Next::End
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Tlp;

    fn meta(kind: Kind, risk: Risk) -> RecordMeta {
        RecordMeta {
            kind,
            category: Category::FraudCall,
            risk,
            tlp: Tlp::Green,
            event_type: EventType::Published,
            source_org: "police".into(),
        }
    }

    /// Invariant 6: two live subscribers are sent the very same bytes of an event
    /// (one allocation, encoded once by the writer), not copies.
    #[tokio::test]
    async fn live_subscribers_share_the_bytes_of_an_event() {
        use crate::registry::{OrgStatus, Role};
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let feed = Feed::new(16, 0);
        let stop = CancellationToken::new();
        let subscription = |id: &str| Subscription {
            filter: Filter::default(),
            viewer: Org {
                id: id.into(),
                name: id.into(),
                role: Role::Bank,
                status: OrgStatus::Active,
            },
            after: 0,
            heartbeat: Duration::from_millis(10),
        };
        let metrics = crate::metrics::Metrics::new();
        let mut a = spawn(
            subscription("a"),
            log.clone(),
            feed.clone(),
            stop.clone(),
            metrics.clone(),
        );
        let mut b = spawn(
            subscription("b"),
            log.clone(),
            feed.clone(),
            stop.clone(),
            metrics,
        );
        // A heartbeat means the subscriber is past catch-up, on the live feed.
        for stream in [&mut a, &mut b] {
            let frame = stream.next().await.expect("open").expect("frame");
            assert!(decode(&frame).heartbeat.is_some());
        }
        let record = Record {
            sequence: 1,
            meta: meta(Kind::PhoneNumber, Risk::High),
            idempotency: None,
            entry: crate::frame::encode_event_entry(&proto::Event {
                sequence: 1,
                ..Default::default()
            }),
        };
        log.append(std::slice::from_ref(&record)).expect("append");
        let original = record.entry.as_ptr();
        feed.publish([record], 1);
        let mut sent = Vec::new();
        for stream in [&mut a, &mut b] {
            let frame = loop {
                let frame = stream.next().await.expect("open").expect("frame");
                if decode(&frame).heartbeat.is_none() {
                    break frame;
                }
            };
            assert_eq!(decode(&frame).events.len(), 1);
            sent.push(frame.parts()[0].as_ptr());
        }
        assert_eq!(sent, vec![original, original]);
        stop.cancel();
    }

    fn decode(frame: &Frame) -> proto::SubscribeResponse {
        use prost::Message;
        proto::SubscribeResponse::decode(frame.encode_to_vec().as_slice()).expect("decodes")
    }

    #[test]
    fn filters_by_kind_and_minimum_risk() {
        let filter = Filter {
            kinds: vec![Kind::PhoneNumber],
            min_risk: Some(Risk::High),
            ..Filter::default()
        };
        assert!(filter.matches(&meta(Kind::PhoneNumber, Risk::VeryHigh)));
        assert!(!filter.matches(&meta(Kind::PhoneNumber, Risk::Medium)));
        assert!(!filter.matches(&meta(Kind::UpiId, Risk::VeryHigh)));
        assert!(Filter::default().matches(&meta(Kind::UpiId, Risk::Medium)));
    }
}
