//! auth-service: user registration, argon2id passwords and
//! djangorestframework-simplejwt compatible JWTs, served over gRPC.
//!
//! # Layout
//! - [`config`]: command line and environment (`AUTH_*`), one [`config::Settings`].
//! - [`startup`]: wires settings, database, services and the tonic server.
//! - [`grpc`]: the `AuthService` and `UserService` handlers, the bearer
//!   interceptor and the per-call log line.
//! - [`tokens`]: simplejwt-compatible access/refresh tokens.
//! - [`passwords`]: argon2id hashing on the blocking pool, bounded.
//! - [`login_throttle`]: failed-login limits per username (and address).
//! - [`domain`]: validated types; a value that exists is valid.
//! - [`persistence`]: SeaORM entities and the queries the handlers use.
//! - [`error`]: the one error type and its mapping to `tonic::Status`.
//! - [`commands`]: the non-serving subcommands (migrate, create-superuser, …).

pub mod commands;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod login_throttle;
pub mod passwords;
pub mod persistence;
pub mod startup;
pub mod telemetry;
pub mod tokens;

/// Code generated from `proto/auth.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("auth.v1");

    /// Served by server reflection, so grpcurl needs no proto file.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");
}
