//! Compiles `proto/` with protox (no system `protoc`) into two generated modules:
//! the messages and client (`dip.v1.rs`), and the server (`server/dip.v1.rs`),
//! whose `SubscribeResponse` is the hub's pre-encoded frame so that every event is
//! encoded once and the same bytes reach every subscriber, and whose
//! `SnapshotResponse` is a pre-encoded chunk of stored states. The descriptor set is
//! written too, for gRPC reflection. The server's codec answers undecodable
//! requests INVALID_ARGUMENT (`src/codec.rs`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["dip/v1/hub.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("dip_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds.clone())?;

    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".dip.v1", "crate::proto")
        .extern_path(".dip.v1.SubscribeResponse", "crate::frame::Frame")
        .extern_path(".dip.v1.SnapshotResponse", "crate::snapshot::SnapshotChunk")
        .codec_path("crate::codec::HubCodec")
        .compile_fds(fds)?;
    Ok(())
}
