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
//!    them to the [`log`] (sled), many publishes to one flush; an idempotency
//!    key is stored with the [`fingerprint`] of the request it was first used for.
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
//! that do not decode, [`limits`] holds each organisation to its share: streams,
//! connections, publish and lookup rates; [`budget`] caps what all subscribers
//! hold queued together); [`server`] wires it up and serves it ([`http2`]:
//! each connection with the hub's HTTP/2 settings; [`starting`]: health
//! NOT_SERVING until the hub can answer). [`expiry`] is the hub's own publisher: it submits EXPIRED events
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
//! Other ecosystems: [`taxii`] serves the log read-only as TAXII 2.1 / STIX 2.1
//! on its own mutual-TLS listener, with the same identities and visibility;
//! [`misp`] maps a snapshot to a MISP feed, for `dip-hub export misp`.
//!
//! [`bench`] is a load generator: it runs a hub as a child process and measures
//! it over real mutual TLS, through the same public paths as any client.

pub mod admin;
pub mod api;
pub mod audit;
pub mod bench;
pub mod budget;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod cursor;
pub mod demo;
pub mod digest;
pub mod error;
pub mod expiry;
pub mod feed;
pub mod fingerprint;
pub mod frame;
pub mod http2;
pub mod identity;
pub mod indicator;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod misp;
pub mod normalize;
pub mod pki;
pub mod policy;
pub mod proto;
pub mod registry;
pub mod sequencer;
pub mod server;
pub mod snapshot;
pub mod starting;
pub mod state;
pub mod streams;
pub mod subscription;
pub mod taxii;
pub mod tls;
pub mod validate;
pub mod view;
pub mod wire;

pub use error::{Error, Result};
