//! Integration tests: the real server on port 0, called with the generated
//! tonic clients, on every configured database (see `helpers`).

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod batch_get_users;
mod bearer;
mod child;
mod cli;
mod container;
mod crash;
mod django_import;
mod hardening;
mod helpers;
mod hostile_input;
mod interop;
mod jwks;
mod jwks_http;
mod list_filter;
mod login;
mod logout;
mod logs;
mod metrics;
mod outage;
mod password_reset;
mod python;
mod refresh;
mod register;
mod replicas;
mod reuse_detection;
mod revocation;
mod service;
mod service_accounts;
mod service_grant;
mod service_tokens;
mod throttle;
mod tls;
mod traces;
mod transport_limits;
mod users;
mod verifier_e2e;
mod verify;
