//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf
//! compiler, so a fresh clone builds without a system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 does not emit this itself (grpc-rust issues 2415, 2511).
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(["proto/auth.proto"], ["proto"])?;

    // `compile_fds` skips `file_descriptor_set_path`, so the descriptor set that
    // server reflection serves is written here by hand.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("auth_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
