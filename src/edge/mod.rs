//! The edge: mutual TLS, the caller's identity, and the gRPC services that run
//! the pipeline. Owns everything between a TCP connection and a domain request.
//! Must never decide what a role may do (that is `domain::policy`) nor touch
//! storage itself.

pub mod api;
pub mod codec;
pub mod credentials;
pub mod http2;
pub mod identity;
pub mod limits;
pub mod publish_stream;
pub mod server;
pub mod starting;
pub mod streams;
pub mod tls;
