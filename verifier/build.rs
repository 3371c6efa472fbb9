//! Generates the `AuthService` client (for `GetJwks`) from the service's
//! own `proto/auth.proto` with protox, a pure-Rust protobuf compiler, so
//! neither a system `protoc` nor the `auth-service` crate is needed.
//!
//! For this crate's tests and benches only, `$OUT_DIR/testing/` also gets
//! the `AuthService` server and the `orders` test service (client and
//! server) from `tests/proto/`; the library never includes them.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 does not emit this itself.
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=tests/proto");

    let descriptors = protox::compile(["auth.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;

    if fs::exists("tests/proto/orders.proto")? {
        let testing = PathBuf::from(env::var("OUT_DIR")?).join("testing");
        fs::create_dir_all(&testing)?;
        let descriptors =
            protox::compile(["auth.proto", "orders.proto"], ["../proto", "tests/proto"])?;
        tonic_prost_build::configure()
            .out_dir(testing)
            .build_server(true)
            .build_client(true)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
