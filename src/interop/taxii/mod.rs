//! A read-only TAXII 2.1 server over the hub's log, for threat-intelligence
//! platforms (OpenCTI, MISP's TAXII client, ...) that do not speak gRPC.
//!
//! Owns nothing of the pipeline: it is a reader, like Subscribe. [`listener`]
//! serves HTTPS with the hub's mutual TLS; [`routes`] are the TAXII endpoints;
//! [`pages`] reads pages of the log with the caller's visibility
//! (`policy::may_see`, as the gRPC API applies it); [`versions`] indexes which
//! sequences hold each STIX object's versions; [`stix`] maps events,
//! organisations and TLP levels to STIX 2.1; [`query`] parses TAXII's URL
//! parameters; [`collections`] lists the collections. Must never write to the
//! log, touch sled, or take identity from a request.

pub mod collections;
pub mod listener;
pub mod pages;
pub mod query;
pub mod routes;
pub mod stix;
pub mod versions;

use crate::api::Hub;
use crate::indicator::Millis;

pub use listener::serve;

/// What the TAXII server reads; cheap to clone.
#[derive(Clone)]
pub struct Taxii {
    /// The hub's read side (log, committed head, state view, registry, credentials).
    pub hub: Hub,
    pub versions: versions::Versions,
    /// When this hub started serving: the `date_added` of the reference objects.
    pub started: Millis,
}

impl Taxii {
    pub fn new(hub: Hub) -> Taxii {
        Taxii {
            hub,
            versions: versions::Versions::default(),
            started: crate::indicator::now_millis(),
        }
    }
}
