//! The verifier against real JWKS servers (HTTP and gRPC) and a real tonic
//! service guarded by its layer and interceptor. One test binary: one link.

// Helpers outside #[test] functions too: a panic here is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checks;
mod guards;
mod services;
mod sources;
mod support;
