//! DIP Hub: a gRPC hub over mutual TLS through which organisations share fraud
//! indicators in real time.
//!
//! # Layout
//!
//! A publish flows through one module per step:
//!
//! 1. [`tls`] accepts the connection and [`identity`] reads the organisation from
//!    the verified client certificate; [`registry`] says whether it is active and
//!    what role it has.
//! 2. [`validate`] turns the request into domain types ([`indicator`]), with
//!    [`normalize`] giving each value its canonical form.
//! 3. [`policy`] authorizes it and hands out a permit.
//! 4. [`sequencer`], the one writer, gives the events their sequences and appends
//!    them to the [`log`] (sled), many publishes to one flush.
//! 5. The events are applied to the [`state`] view (stored by the [`log`], and
//!    kept in memory by [`view`] as one immutable version per group, with the
//!    [`digest`] of the active set), and
//! 6. fanned out by the [`feed`] to every [`subscription`], as pre-encoded
//!    [`frame`]s ([`wire`] encodes each event once).
//!
//! Readers: a [`subscription`] resumes after a durable consumer's [`cursor`]
//! (acks are made durable in groups); Lookup reads the [`view`]; a
//! [`snapshot`] streams one version of it, as of one sequence.
//!
//! [`api`] is the gRPC service that runs this pipeline ([`codec`] refuses requests
//! that do not decode); [`server`] wires it up and
//! serves it. [`expiry`] is the hub's own publisher: it submits EXPIRED events
//! through the same sequencer when an indicator's valid_until passes. [`pki`]
//! makes the development certificates.
//!
//! Operating the hub: [`admin`] is the regulator's gRPC service (onboard and
//! suspend organisations, reload revocation lists, read the audit trail);
//! [`credentials`] holds the TLS configuration and revoked serials, reloadable
//! without a restart; [`streams`] ends the live streams of a suspended
//! organisation or a revoked certificate at once; [`audit`] records who looked
//! what up; [`metrics`] serves Prometheus metrics on their own listener; [`config`]
//! merges the config file, environment and flags into one validated `Config`.
//!
//! [`bench`] is a load generator: it runs a hub as a child process and measures
//! it over real mutual TLS, through the same public paths as any client.

pub mod client;
pub mod domain;
pub mod edge;
pub mod error;
pub mod ops;
pub mod proto;
pub mod read;
pub mod writer;

// Every module keeps its short path (`dip_hub::tls`, `crate::log`), so code and
// library users name a module without its layer.
pub use domain::{digest, indicator, normalize, policy, registry, state, validate};
pub use edge::{api, codec, credentials, identity, server, streams, tls};
pub use ops::{admin, audit, config, metrics, pki};
pub use read::{cursor, feed, frame, snapshot, subscription, view};
pub use writer::{alarm, backend, expiry, group, log, sequencer, wire};

pub use error::{Error, Result};
