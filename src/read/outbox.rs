//! One subscriber's outbox: the frames queued for its client, between the
//! subscriber's task and the transport.
//!
//! Owns: the bounded queue of frames (each with the sequence of its first event
//! and the budget bytes it holds), and the release of what a stalled stream
//! holds: all but the frame at the front are dropped, and the task is told the
//! sequence to continue from (the log has every dropped event). Must never
//! block (waiting for room or for the client is the caller's choice), never
//! drop the front frame (the one the transport may be taking) nor an error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tonic::Status;

use crate::budget::Held;
use crate::frame::Frame;

/// A queued frame.
pub struct Entry {
    pub frame: Result<Frame, Status>,
    /// The sequence of its first event (none for a heartbeat or an error).
    pub first: Option<u64>,
    /// Budget bytes, given back when the transport takes the frame.
    pub held: Option<Held>,
}

/// What became of a frame handed to [`Outbox::push`].
pub enum Pushed {
    Queued,
    /// Not queued: frames were released; continue from this sequence.
    Released(u64),
    /// The client has gone.
    Gone,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Entry>,
    /// Bytes of budget the queued frames hold.
    held: usize,
    client_gone: bool,
    task_gone: bool,
    released_from: Option<u64>,
}

pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// The transport took a frame (or the client went).
    taken: Notify,
    /// A frame was queued (or the task ended).
    queued: Notify,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            taken: Notify::new(),
            queued: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another holder panicked; the queue is
        // consistent at every unlock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.state().frames.is_empty()
    }

    pub fn is_gone(&self) -> bool {
        self.state().client_gone
    }

    /// Waits until fewer than `frames` are queued; false once the client has gone.
    pub async fn below(&self, frames: usize) -> bool {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let state = self.state();
                if state.client_gone {
                    return false;
                }
                if state.frames.len() < frames.min(self.capacity + 1) {
                    return true;
                }
            }
            taken.await;
        }
    }

    /// Waits for room for one more frame.
    pub async fn room(&self) -> bool {
        self.below(self.capacity).await
    }

    /// Waits until the transport has taken every queued frame.
    pub async fn emptied(&self) -> bool {
        self.below(1).await
    }

    /// Waits until the client has gone.
    pub async fn closed(&self) {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.is_gone() {
                return;
            }
            taken.await;
        }
    }

    /// Queues `entry` (the caller has waited for room). Refused while a release
    /// has not been taken by [`Outbox::take_released`].
    pub fn push(&self, entry: Entry) -> Pushed {
        let mut state = self.state();
        if state.client_gone {
            return Pushed::Gone;
        }
        if let Some(from) = state.released_from {
            return Pushed::Released(from);
        }
        state.held += entry.held.as_ref().map_or(0, Held::bytes);
        state.frames.push_back(entry);
        drop(state);
        self.queued.notify_one();
        Pushed::Queued
    }

    /// The sequence to continue from after a release, once.
    pub fn take_released(&self) -> Option<u64> {
        self.state().released_from.take()
    }

    /// The sequence of the oldest event queued (how far behind the stream is),
    /// when it holds budget bytes.
    pub fn behind(&self) -> Option<u64> {
        let state = self.state();
        if state.held == 0 {
            return None;
        }
        state.frames.iter().find_map(|e| e.first)
    }

    /// Drops every queued frame but the front one, giving back their budget
    /// bytes; returns how many bytes were given back.
    pub fn release(&self) -> usize {
        let mut state = self.state();
        if state.frames.len() < 2 || state.frames.iter().any(|e| e.frame.is_err()) {
            return 0;
        }
        let dropped: Vec<Entry> = state.frames.drain(1..).collect();
        let freed: usize = dropped
            .iter()
            .map(|e| e.held.as_ref().map_or(0, Held::bytes))
            .sum();
        state.held -= freed;
        if let Some(first) = dropped.iter().find_map(|e| e.first) {
            state.released_from = Some(state.released_from.map_or(first, |r| r.min(first)));
        }
        drop(state);
        drop(dropped);
        self.taken.notify_waiters();
        freed
    }

    /// The task's end: the stream ends once the client has taken what is queued.
    pub fn finish(&self) {
        self.state().task_gone = true;
        self.queued.notify_one();
    }

    /// The transport's side: the queued frames, in order.
    pub fn stream(
        self: Arc<Outbox>,
    ) -> impl futures_util::Stream<Item = Result<Frame, Status>> + Send + Unpin + 'static {
        let receiver = Receiver { outbox: self };
        Box::pin(futures_util::stream::unfold(
            receiver,
            |receiver| async move {
                let frame = receiver.next().await?;
                Some((frame, receiver))
            },
        ))
    }
}

/// The transport's handle; the client is gone when it is dropped.
struct Receiver {
    outbox: Arc<Outbox>,
}

impl Receiver {
    async fn next(&self) -> Option<Result<Frame, Status>> {
        let outbox = &self.outbox;
        loop {
            let queued = outbox.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            {
                let mut state = outbox.state();
                if let Some(entry) = state.frames.pop_front() {
                    state.held -= entry.held.as_ref().map_or(0, Held::bytes);
                    drop(state);
                    outbox.taken.notify_waiters();
                    return Some(entry.frame);
                }
                if state.task_gone {
                    return None;
                }
            }
            queued.await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.outbox.state();
        state.client_gone = true;
        state.frames.clear();
        state.held = 0;
        drop(state);
        self.outbox.taken.notify_waiters();
    }
}
