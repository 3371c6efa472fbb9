//! auth-service: user registration, argon2id passwords and
//! djangorestframework-simplejwt compatible JWTs, served over gRPC.
//!
//! # Layout (see "Architecture" in README.md)
//! - [`grpc`] — transport: thin handlers that decode requests into domain
//!   values, call [`accounts`] and encode the reply; the bearer interceptor,
//!   status mapping, the call log, health and the server.
//! - [`web`] — transport too: the HTTP listener (the JWKS), an axum router
//!   whose handlers call [`accounts`].
//! - [`accounts`] — the application: one method per use case, over domain
//!   types; the login throttle. No tonic or protobuf types.
//! - [`persistence`] — storage: entities, queries, error classification,
//!   and the caches that are the only way to write what they cache.
//! - [`tokens`] — simplejwt-compatible tokens and the signing key;
//!   [`passwords`] — argon2id on the blocking pool, bounded.
//! - [`domain`] — validated values: one that exists is valid.
//! - [`error`] — the one error type.
//! - [`config`] — command line and environment (`AUTH_*`), grouped by concern.
//! - [`startup`] (wiring for `serve`) and [`commands`] (the subcommands).

pub mod accounts;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod passwords;
pub mod persistence;
pub mod startup;
pub mod telemetry;
pub mod tokens;
pub mod web;

/// Code generated from `proto/auth.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("auth.v1");

    /// Served by server reflection, so grpcurl needs no proto file.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");
}
