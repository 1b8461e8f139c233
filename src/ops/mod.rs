//! Operating the hub: configuration, the Admin service, the audit trail,
//! Prometheus metrics and the development PKI. Must never sit on the publish
//! path except through the counters `metrics` exposes.

pub mod admin;
pub mod audit;
pub mod config;
pub mod metrics;
pub mod org_changes;
pub mod pki;
