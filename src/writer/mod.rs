//! The write side: the one writer (sequencer) and its storage (log, and the
//! state store of its derived indicator states), the hub's
//! own expiry publisher, and the encoding of what the writer produces (wire).
//! Owns invariants 1 and 2 (sequences without gaps, ack only after flush).

pub mod alarm;
pub mod backend;
pub(crate) mod block;
pub mod expiry;
pub mod fingerprint;
pub mod group;
pub mod log;
pub mod sequencer;
pub mod state_store;
pub mod wire;
