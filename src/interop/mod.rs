//! Other ecosystems: the hub's data in the formats other threat-sharing tools
//! speak (TAXII 2.1 / STIX 2.1 served read-only, a MISP feed exported from a
//! snapshot). Must never write to the log nor decide visibility itself: it
//! reads what the read side and `domain::policy` already allow.

pub mod misp;
pub mod taxii;
