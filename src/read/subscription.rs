//! One subscriber's stream: catch-up from the log, then the live feed.
//!
//! Owns: invariant 3 (every matching event exactly once, in order) and the
//! subscriber's side of invariant 4. The task joins the live feed *before* it reads
//! the durable head, reads the log up to that head, then takes live records,
//! skipping those it already sent. Whenever the live feed skips ahead of it (it
//! lagged behind the ring), it goes back to the log from the next sequence it owes.
//! Frames go to the client through a small bounded [`Outbox`]: a slow client
//! only ever stalls its own task. Must never hold more than one frame per queue
//! slot, never send an event that is not durable, and never skip one.
//!
//! Memory per subscriber, whatever its lag: one queued frame of at most
//! [`FRAME_BYTES`] (plus one event) for free; every further queued frame (up to
//! [`QUEUE_FRAMES`] during catch-up, [`LIVE_FRAMES`] on the live feed) only if
//! the hub-wide [`Budget`] covers its bytes. When it does not, the streams most
//! behind release their queued frames (all but the front one) and continue from
//! the log once their client reads; if that does not cover it either, a frame
//! read from the log is dropped (the stream continues from the log once its
//! client has read what is queued) and a live frame waits until the transport
//! has taken what is queued. No gap, no duplicate. Besides: the frame being
//! built and, during catch-up, one read from the log of at most
//! `CATCH_UP_RECORDS` records or about `READ_BYTES`. A subscriber that stops
//! reading therefore holds about two frames outside the budget (one queued, one
//! built or in the transport), and the ring it fell behind is shared and fixed
//! in size (see `feed`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::budget::{Budget, Held};
use crate::feed::Feed;
use crate::frame::Frame;
use crate::indicator::{Category, EventType, Kind, Risk, now_millis};
use crate::limits::Permit;
use crate::log::{Log, Record, RecordMeta};
use crate::metrics::{Metrics, SubscriberProgress};
use crate::outbox::{Entry, Outbox, Pushed, Woken};
use crate::policy;
use crate::proto;
use crate::registry::Org;
use crate::wire;

/// Frames queued for one client before its task waits (the lag bound per subscriber).
const QUEUE_FRAMES: usize = 8;
/// Frames a stream on the live feed may have queued: it builds the next while
/// the transport takes the last (one at a time cost fast subscribers 1.7-1.9x
/// in fan-out p99; see README, Benchmark).
const LIVE_FRAMES: usize = 2;
/// Most events in one frame.
const FRAME_EVENTS: usize = 512;
/// About the most bytes in one frame (with the codec's small chunks, what a
/// stalled stream holds in the transport stays near two frames).
pub const FRAME_BYTES: usize = 16 * 1024;
/// Most bytes read from the log at once during catch-up.
const READ_BYTES: usize = 128 * 1024;
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

/// What the subscriber's task shares with the rest of the hub.
#[derive(Clone)]
pub struct Shared {
    pub log: Log,
    pub feed: Feed,
    pub metrics: Metrics,
    /// What all subscribers together may hold queued.
    pub budget: Budget,
}

/// Starts the subscriber's task; its frames come out of the returned stream. The
/// task ends when the client goes away, `stop` is cancelled, or on a storage error
/// (sent to the client as a status). `permit` (the organisation's stream limit)
/// is given back when the task ends.
pub fn spawn(
    subscription: Subscription,
    shared: Shared,
    stop: CancellationToken,
    permit: Option<Permit>,
) -> impl futures_util::Stream<Item = Result<Frame, Status>> + Send + Unpin + 'static {
    let frames = Outbox::new(QUEUE_FRAMES);
    let Shared {
        log,
        feed,
        metrics,
        budget,
    } = shared;
    budget.register(&frames);
    let stream = Arc::clone(&frames).stream();
    let task = Task {
        progress: metrics.subscriber(subscription.after),
        metrics,
        live: feed.subscribe(),
        subscription,
        log,
        feed,
        budget,
        frames,
        stop,
        _permit: permit,
    };
    tokio::spawn(task.run());
    // The budget bytes are given back as the transport takes the frame.
    stream
}

struct Task {
    subscription: Subscription,
    log: Log,
    feed: Feed,
    live: broadcast::Receiver<Arc<Record>>,
    budget: Budget,
    frames: Arc<Outbox>,
    stop: CancellationToken,
    metrics: Metrics,
    /// Served up to (for the lag metrics).
    progress: SubscriberProgress,
    /// The organisation's stream limit, held while the task runs.
    _permit: Option<Permit>,
}

/// However the task ends (its last phase, a panic, the runtime's shutdown),
/// the stream ends once the client has taken what is queued.
impl Drop for Task {
    fn drop(&mut self) {
        self.frames.finish();
    }
}

/// Why a phase ended.
enum Next {
    CatchUp,
    Live,
    /// Over the budget: wait for the client to read, then back to the log.
    Stalled,
    End,
}

/// What became of a frame handed to [`Task::send`].
enum Sent {
    Queued,
    /// Not queued: the budget is spent and the client has not read what it has,
    /// or the budget released what the stream had queued. Its events are owed
    /// again, from the log, once the client has read what is left.
    Dropped,
    Closed,
}

impl Task {
    async fn run(mut self) {
        let mut next = self.subscription.after + 1;
        let mut phase = Next::CatchUp;
        loop {
            phase = match phase {
                Next::CatchUp => self.catch_up(&mut next).await,
                Next::Live => self.follow(&mut next).await,
                Next::Stalled => self.drained(&mut next).await,
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
                log.read(from, head, CATCH_UP_RECORDS, READ_BYTES)
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
            // The sequence of the first event in `frame`: where to resume if it
            // is dropped for the budget.
            let mut first = *next;
            for record in records {
                if self.subscription.wants(&record.meta) {
                    if frame.is_empty() {
                        first = record.sequence;
                    }
                    frame.push_entry(record.entry);
                    if frame.entries() >= FRAME_EVENTS || frame.byte_len() >= FRAME_BYTES {
                        // Detached: the entries are slices of the log's blocks.
                        let frame = std::mem::take(&mut frame).detached();
                        match self.send(frame, Some(first), Spent::Drop).await {
                            Sent::Queued => {}
                            Sent::Dropped => return self.resume_at(next, first),
                            Sent::Closed => return Next::End,
                        }
                    }
                }
            }
            if !frame.is_empty() {
                match self.send(frame.detached(), Some(first), Spent::Drop).await {
                    Sent::Queued => {}
                    Sent::Dropped => return self.resume_at(next, first),
                    Sent::Closed => return Next::End,
                }
            }
            *next = last + 1;
        }
    }

    /// Follows the live feed until it skips ahead (back to the log) or the end.
    async fn follow(&mut self, next: &mut u64) -> Next {
        let mut idle_until = Instant::now() + self.subscription.heartbeat;
        loop {
            // A new live frame only while fewer than LIVE_FRAMES are queued: a
            // client that reads slowly, or a busy hub, gets fewer and fuller
            // frames (the events wait in the ring meanwhile), and a client that
            // does not read holds at most LIVE_FRAMES frames and costs no work
            // per event.
            match self.wait(|frames| frames.below(LIVE_FRAMES)).await {
                Woken::Ready => {}
                Woken::Released => return Next::Stalled,
                Woken::Gone => return Next::End,
            }
            let received = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Next::End,
                woken = self.frames.interrupted() => {
                    return if woken == Woken::Released { Next::Stalled } else { Next::End };
                }
                received = self.live.recv() => received,
                () = tokio::time::sleep_until(idle_until) => {
                    match self.send(self.heartbeat(*next - 1), None, Spent::Wait).await {
                        Sent::Queued => {}
                        Sent::Dropped => return Next::Stalled,
                        Sent::Closed => return Next::End,
                    }
                    idle_until = Instant::now() + self.subscription.heartbeat;
                    continue;
                }
            };
            let mut frame = Frame::default();
            let mut first = *next;
            let mut record = match received {
                Ok(record) => record,
                // Fell behind the ring: the gap check below sends it to the log.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Next::End,
            };
            loop {
                if record.sequence > *next {
                    // A gap: flush what we have, then serve the rest from the log.
                    return self.flush_then(frame, next, first, Next::CatchUp).await;
                }
                if record.sequence == *next {
                    if self.subscription.wants(&record.meta) {
                        if frame.is_empty() {
                            first = record.sequence;
                        }
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
                        return self.flush_then(frame, next, first, Next::CatchUp).await;
                    }
                    Err(_) => break,
                };
            }
            self.progress.served_up_to(*next - 1);
            if !frame.is_empty() {
                match self.send(frame, Some(first), Spent::Wait).await {
                    Sent::Queued => {}
                    Sent::Dropped => return self.resume_at(next, first),
                    Sent::Closed => return Next::End,
                }
                idle_until = Instant::now() + self.subscription.heartbeat;
            }
        }
    }

    /// Sends `frame` (if any), then goes on with `then`.
    async fn flush_then(&mut self, frame: Frame, next: &mut u64, first: u64, then: Next) -> Next {
        if frame.is_empty() {
            return then;
        }
        match self.send(frame, Some(first), Spent::Wait).await {
            Sent::Queued => then,
            Sent::Dropped => self.resume_at(next, first),
            Sent::Closed => Next::End,
        }
    }

    /// A frame starting at `first` was not queued: it is owed again, from the
    /// log, once the client has read what is queued.
    fn resume_at(&mut self, next: &mut u64, first: u64) -> Next {
        *next = first;
        self.progress.served_up_to(first - 1);
        Next::Stalled
    }

    /// Waits on the outbox (`until`), or until the stream is stopped (as if
    /// the client had gone).
    async fn wait<'a, F>(&'a self, until: impl FnOnce(&'a Outbox) -> F) -> Woken
    where
        F: std::future::Future<Output = Woken> + 'a,
    {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Woken::Gone,
            woken = until(&self.frames) => woken,
        }
    }

    /// Waits until the client has taken every queued frame (or the end), then
    /// sends the stream back to the log, from the earliest event it still owes
    /// (frames the budget released meanwhile included). Holds nothing
    /// meanwhile: the live receiver is left behind (the log has every event it
    /// would have held).
    async fn drained(&mut self, next: &mut u64) -> Next {
        self.metrics.subscriber_stalled();
        if self.wait(|frames| frames.emptied()).await != Woken::Ready {
            return Next::End;
        }
        if let Some(from) = self.frames.take_released() {
            *next = (*next).min(from);
            self.progress.served_up_to(*next - 1);
        }
        // Skip what the ring announced meanwhile; the log serves it.
        self.live = self.live.resubscribe();
        Next::CatchUp
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

    /// Budget bytes for a frame of `bytes`; when the budget is spent, the
    /// streams most behind release what they hold first.
    fn take_budget(&self, bytes: usize) -> Option<Held> {
        self.budget.try_take(bytes).or_else(|| {
            let released = self.budget.release_most_behind(bytes);
            if released > 0 {
                self.metrics.subscribers_released(released);
            }
            self.budget.try_take(bytes)
        })
    }

    /// Queues a frame (whose first event is `first`) for the client. The first
    /// queued frame is free; more take their bytes from the budget. When the
    /// budget cannot cover it, the frame waits until the client has taken
    /// what is queued (`Spent::Wait`: a live frame, whose bytes the ring
    /// shares) or is not queued at all (`Spent::Drop`: a frame read from the log).
    async fn send(&self, frame: Frame, first: Option<u64>, spent: Spent) -> Sent {
        match self.wait(|frames| frames.below(QUEUE_FRAMES)).await {
            Woken::Ready => {}
            Woken::Released => return Sent::Dropped,
            Woken::Gone => return Sent::Closed,
        }
        let held = if self.frames.is_empty() {
            None
        } else {
            match (self.take_budget(frame.byte_len()), spent) {
                (Some(held), _) => Some(held),
                (None, Spent::Drop) => return Sent::Dropped,
                (None, Spent::Wait) => match self.wait(|frames| frames.below(1)).await {
                    // The transport took everything: this frame is free.
                    Woken::Ready => None,
                    Woken::Released => return Sent::Dropped,
                    Woken::Gone => return Sent::Closed,
                },
            }
        };
        // Counted before it goes out, so that a client holding it sees it counted.
        self.metrics.delivered(frame.entries());
        let entry = Entry {
            frame: Ok(frame),
            first,
            held,
        };
        match self.frames.push(entry) {
            Pushed::Queued => Sent::Queued,
            Pushed::Released => Sent::Dropped,
            Pushed::Gone => Sent::Closed,
        }
    }

    /// Sends `status` as the stream's end, once the client has read what is queued.
    async fn fail(&self, status: Status) -> Next {
        tracing::error!(%status, "subscription failed");
        if self.wait(|frames| frames.emptied()).await == Woken::Ready {
            self.frames.push_last(Err(status));
        }
        Next::End
    }
}

/// What [`Task::send`] does with a frame the budget cannot cover.
#[derive(Clone, Copy)]
enum Spent {
    /// Wait until the client has taken what is queued, then queue it.
    Wait,
    /// Do not queue it.
    Drop,
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
                limits: Default::default(),
            },
            after: 0,
            heartbeat: Duration::from_millis(10),
        };
        let shared = Shared {
            log: log.clone(),
            feed: feed.clone(),
            metrics: crate::metrics::Metrics::new(),
            budget: Budget::new(1 << 20),
        };
        let mut a = spawn(subscription("a"), shared.clone(), stop.clone(), None);
        let mut b = spawn(subscription("b"), shared, stop.clone(), None);
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

    /// The first budget release's bug: a stream released after its catch-up,
    /// on the live feed, waited for the next event or heartbeat before it went
    /// back to the log, however long its client had been reading again.
    #[tokio::test]
    async fn a_stream_released_on_the_live_feed_resumes_from_the_log_once_its_client_reads() {
        use crate::registry::{OrgStatus, Role};
        use futures_util::StreamExt;
        const EVENTS: u64 = 1200;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path()).expect("open");
        let records: Vec<Record> = (1..=EVENTS)
            .map(|sequence| Record {
                sequence,
                meta: meta(Kind::PhoneNumber, Risk::High),
                idempotency: None,
                entry: crate::frame::encode_event_entry(&proto::Event {
                    sequence,
                    ..Default::default()
                }),
            })
            .collect();
        log.append(&records).expect("append");
        // The frames the catch-up builds: all but the first hold budget bytes.
        let mut held = 0;
        for chunk in records.chunks(FRAME_EVENTS).skip(1) {
            let mut frame = Frame::default();
            chunk.iter().for_each(|r| frame.push_entry(r.entry.clone()));
            held += frame.byte_len();
        }
        let budget = Budget::new(1 << 20);
        let shared = Shared {
            log,
            feed: Feed::new(16, EVENTS),
            metrics: crate::metrics::Metrics::new(),
            budget: budget.clone(),
        };
        let subscription = Subscription {
            filter: Filter::default(),
            viewer: Org {
                id: "a".into(),
                name: "a".into(),
                role: Role::Bank,
                status: OrgStatus::Active,
                limits: Default::default(),
            },
            after: 0,
            heartbeat: Duration::from_secs(3600),
        };
        let stop = CancellationToken::new();
        let mut stream = spawn(subscription, shared, stop.clone(), None);
        // Unread, the stream queues its whole catch-up and goes live.
        let deadline = Instant::now() + Duration::from_secs(10);
        while budget.in_use() != held {
            assert!(Instant::now() < deadline, "the catch-up is queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(budget.release_most_behind(usize::MAX), 1);
        assert_eq!(budget.in_use(), 0);
        let mut sequences = Vec::new();
        while sequences.len() < EVENTS as usize {
            let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("the released events come from the log at once, not at the heartbeat")
                .expect("open")
                .expect("frame");
            sequences.extend(decode(&frame).events.iter().map(|e| e.sequence));
        }
        assert_eq!(sequences, (1..=EVENTS).collect::<Vec<_>>());
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
