//! The generated wire contract (`proto/dip/v1/hub.proto`, package `dip.v1`).
//!
//! Owns: nothing but generated code. Message types and the client live here; the
//! server trait lives in [`server`], where `SubscribeResponse` is the hub's
//! pre-encoded [`crate::frame::Frame`]. Proto types stop at the API edge
//! (`api`, `wire`): the rest of the hub works on its own domain types.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/dip.v1.rs"));

/// The server side of the contract, streaming pre-encoded frames.
pub mod server {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/server/dip.v1.rs"));
}

/// The encoded `FileDescriptorSet`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dip_descriptor.bin"));
