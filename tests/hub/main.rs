//! Integration tests: the real server, real mutual TLS on 127.0.0.1, a real sled
//! database in a temporary directory, and the real generated client.

mod bad_input;
mod bench;
mod blocks;
mod bulk;
mod checkpoints;
mod child;
mod cluster;
mod crash;
mod demo;
mod deploy;
mod expiry;
mod fairness;
mod fuzz;
mod harness;
mod lifecycle;
mod limits;
mod markings;
mod misp;
mod operations;
mod policy;
mod provision;
mod publish_stream;
mod python_client;
mod security;
mod spine;
mod subscriptions;
mod taxii;
