//! One subscriber's outbox: the frames queued for its client, between the
//! subscriber's task and the transport.
//!
//! Owns: the bounded queue of frames (each with the sequence of its first event
//! and the budget bytes it holds), and the release of what a stalled stream
//! holds: every frame but the front one is dropped and the stream is marked
//! released, with the sequence to continue from (the log has every dropped
//! event). Must never block (waiting for room or for the client is the caller's
//! choice), never drop the front frame (the one the transport may be taking)
//! nor an error, and never change its state without waking the side that waits
//! for it: each side has one waiter, which registers before it looks at the
//! state, so no wake-up is lost.

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
    /// Not queued: the stream was released; [`Outbox::take_released`] says
    /// where to continue from.
    Released,
    /// The client has gone.
    Gone,
}

/// What a wait of the task's ended on.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// What it waited for.
    Ready,
    /// The stream was released: continue from the log.
    Released,
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
    /// For the task: the transport took a frame, the stream was released, or
    /// the client went.
    taken: Notify,
    /// For the transport: a frame was queued, or the task ended.
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

    /// How many frames are queued.
    pub fn len(&self) -> usize {
        self.state().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until fewer than `frames` are queued (at most the capacity), the
    /// stream is released, or the client has gone.
    pub async fn below(&self, frames: usize) -> Woken {
        let frames = frames.clamp(1, self.capacity);
        self.wait(true, |state| state.frames.len() < frames).await
    }

    /// Waits until the transport has taken every queued frame, released or
    /// not (`Ready`), or the client has gone (`Gone`).
    pub async fn emptied(&self) -> Woken {
        self.wait(false, |state| state.frames.is_empty()).await
    }

    /// Waits until the stream is released or the client has gone.
    pub async fn interrupted(&self) -> Woken {
        self.wait(true, |_| false).await
    }

    /// The task's one way to wait: registers for a wake-up before it looks at
    /// the state (so none is lost), then sleeps until `ready`, a release (when
    /// `on_release`) or the client's end.
    async fn wait(&self, on_release: bool, ready: impl Fn(&State) -> bool) -> Woken {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let state = self.state();
                if state.client_gone {
                    return Woken::Gone;
                }
                if on_release && state.released_from.is_some() {
                    return Woken::Released;
                }
                if ready(&state) {
                    return Woken::Ready;
                }
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
        if state.released_from.is_some() {
            return Pushed::Released;
        }
        state.held += entry.held.as_ref().map_or(0, Held::bytes);
        state.frames.push_back(entry);
        drop(state);
        self.queued.notify_one();
        Pushed::Queued
    }

    /// Queues the stream's last frame (an error), released or not.
    pub fn push_last(&self, frame: Result<Frame, Status>) {
        let mut state = self.state();
        if state.client_gone {
            return;
        }
        state.frames.push_back(Entry {
            frame,
            first: None,
            held: None,
        });
        drop(state);
        self.queued.notify_one();
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
    /// bytes, and marks the stream released (from the first event dropped);
    /// returns how many bytes were given back.
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
        self.taken.notify_one();
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
                    outbox.taken.notify_one();
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
        let frames = {
            let mut state = self.outbox.state();
            state.client_gone = true;
            state.held = 0;
            std::mem::take(&mut state.frames)
        };
        drop(frames);
        self.outbox.taken.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use futures_util::StreamExt;
    use std::time::Duration;

    fn entry(budget: &Budget, first: u64) -> Entry {
        Entry {
            frame: Ok(Frame::default()),
            first: Some(first),
            held: budget.try_take(100),
        }
    }

    /// The bug the first release had: a task that waits for room must be woken
    /// by a release, and learn that it was released (not find room and go on
    /// as if nothing was dropped).
    #[tokio::test]
    async fn a_release_wakes_the_waiting_task_and_says_so() {
        let budget = Budget::new(1000);
        let outbox = Outbox::new(2);
        let _stream = Arc::clone(&outbox).stream();
        assert!(matches!(outbox.push(entry(&budget, 1)), Pushed::Queued));
        assert!(matches!(outbox.push(entry(&budget, 5)), Pushed::Queued));
        let waiting = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.below(2).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(outbox.behind(), Some(1));
        assert_eq!(outbox.release(), 100);
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the release wakes the task")
            .expect("task");
        assert_eq!(woken, Woken::Released);
        assert!(matches!(outbox.push(entry(&budget, 9)), Pushed::Released));
        assert_eq!(outbox.take_released(), Some(5));
        assert_eq!(budget.in_use(), 100, "only the front frame holds budget");
    }

    #[tokio::test]
    async fn the_transport_takes_frames_in_order_and_ends_after_the_task() {
        let budget = Budget::new(1000);
        let outbox = Outbox::new(4);
        let mut stream = Arc::clone(&outbox).stream();
        for first in [1, 2, 3] {
            assert!(matches!(outbox.push(entry(&budget, first)), Pushed::Queued));
        }
        outbox.finish();
        let mut taken = 0;
        while let Some(frame) = stream.next().await {
            assert!(frame.is_ok());
            taken += 1;
        }
        assert_eq!(taken, 3);
        assert_eq!(budget.in_use(), 0);
        // The transport's end is the client's, for the task.
        assert_eq!(outbox.emptied().await, Woken::Gone);
        assert!(matches!(outbox.push(entry(&budget, 4)), Pushed::Gone));
    }
}
