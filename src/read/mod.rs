//! The read side: the live feed, subscriptions (catch-up then live), durable
//! consumer cursors, the in-memory state view and snapshots of it, and the
//! pre-encoded frames subscribers receive. Must never write events.

pub mod budget;
pub mod checkpoint;
pub mod cursor;
pub mod feed;
pub mod frame;
pub mod outbox;
pub mod snapshot;
pub mod subscription;
pub mod view;
