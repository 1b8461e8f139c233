//! The domain rules: indicators and their canonical values, request validation,
//! authorization, the state rules and the digest of the active set. Pure: no
//! I/O, no clock beyond what it is given, no storage.

pub mod digest;
pub mod indicator;
pub mod normalize;
pub mod policy;
pub mod registry;
pub mod state;
pub mod validate;
