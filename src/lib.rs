//! DIP Hub: a gRPC hub over mutual TLS through which organisations share fraud
//! indicators in real time.
//!
//! # Layout
//!
//! The folders follow the pipeline; the design (data flow, invariants, storage,
//! module ownership, how to add a log backend) is in `docs/DESIGN.md`.
//!
//! 1. [`edge`]: [`tls`] accepts the connection and [`identity`] reads the
//!    organisation from the verified client certificate ([`credentials`] holds
//!    the TLS configuration and revoked serials, reloadable without a restart).
//!    [`api`] is the gRPC service that runs the pipeline, one line per step
//!    ([`publish_stream`]: many Publishes in flight on one stream, answered in
//!    order)
//!    ([`codec`] refuses requests that do not decode; [`limits`] holds each
//!    organisation to its share: connections, streams, publish and lookup
//!    rates); [`server`] wires the hub up and serves it ([`http2`]: each
//!    connection with the hub's HTTP/2 settings; [`starting`]: health
//!    NOT_SERVING until the hub can answer); [`streams`] ends the live streams
//!    of a suspended organisation or a revoked certificate at once.
//! 2. [`domain`], pure rules: [`validate`] turns the request into domain types
//!    ([`indicator`]), with [`normalize`] giving each value its canonical form;
//!    [`registry`] says whether the organisation is active and what role it has;
//!    [`policy`] authorizes it and hands out a permit; [`state`] says how an event
//!    changes an indicator and which changes an indicator's state allows;
//!    [`digest`] sums the active set.
//! 3. [`writer`]: [`sequencer`], the one writer, commits many submissions at a
//!    time: [`group`] plans them (sequences, state rules, idempotency keys bound
//!    to the [`fingerprint`] of the request they were first used for, each event
//!    encoded once by [`wire`] and [`frame`]), the log [`backend`] makes them
//!    durable in the [`log`] (sled) with one flush and one fdatasync, then the writer stores
//!    the indexes beside the states, applies them to the [`view`]'s in-memory delta, and
//!    fans them out; the [`checkpoint`]er writes that delta to disk off the writer's path.
//!    [`expiry`] is the hub's own publisher: it submits EXPIRED events through the
//!    same sequencer, woken by the writer's [`alarm`].
//! 4. [`read`]: the [`feed`] carries durable events to every [`subscription`]
//!    (catch-up from the log, then live) as pre-encoded [`frame`]s; a subscription
//!    resumes after a durable consumer's [`cursor`]; the [`budget`] caps what all
//!    subscribers hold queued together; Lookup reads the [`view`] (its delta,
//!    else disk); a [`snapshot`] streams one pinned [`checkpoint`] of it, as of
//!    one sequence.
//! 5. [`ops`]: [`admin`] is the regulator's gRPC service (onboard and suspend
//!    organisations, reload revocation lists, read the audit trail;
//!    [`org_changes`] applies a change on a node); [`audit`]
//!    records who looked what up; [`metrics`] serves Prometheus metrics on their
//!    own listener; [`config`] merges the config file, environment and flags into
//!    one validated `Config`; [`pki`] makes the development certificates.
//! 6. [`interop`], other ecosystems: [`taxii`] serves the log read-only as TAXII
//!    2.1 / STIX 2.1 on its own mutual-TLS listener, with the same identities
//!    and visibility; [`misp`] maps a snapshot to a MISP feed, for
//!    `dip-hub export misp`.
//!
//! 7. [`cluster`], cluster mode: the log on a NATS JetStream stream (R3) with
//!    several hubs in front of it; the leader's writer appends through the
//!    JetStream log [`backend`] (atomic batches fenced by the expected last
//!    sequence), a KV lease says which hub leads, and every hub's writer
//!    applies what the stream holds to its local sled log; consumer cursors
//!    and organisation changes ([`org_changes`]) live in KV buckets every hub
//!    shares.
//!
//! Beside them: [`client`] connects as an organisation, [`proto`] is the
//! generated contract, [`error`] the one error type. The `dip-hub` command (its
//! subcommands, the demo and the load generator) is the application in
//! `src/cmd/`, on the binary side: the library never imports it.

pub mod client;
pub mod cluster;
pub mod domain;
pub mod edge;
pub mod error;
pub mod interop;
pub mod ops;
pub mod proto;
pub mod read;
pub mod writer;

// Every module keeps its short path (`dip_hub::tls`, `crate::log`), so code and
// library users name a module without its layer.
pub use domain::{digest, indicator, normalize, policy, registry, state, validate};
pub use edge::{
    api, codec, credentials, http2, identity, limits, publish_stream, server, starting, streams,
    tls,
};
pub use interop::{misp, taxii};
pub use ops::{admin, audit, config, metrics, org_changes, pki};
pub use read::{budget, checkpoint, cursor, feed, frame, outbox, snapshot, subscription, view};
pub use writer::{alarm, backend, expiry, fingerprint, group, log, sequencer, state_store, wire};

pub use error::{Error, Result};
