//! Transport: the HTTP surface, for what plain HTTP clients fetch — the
//! public keys as a JWKS (`/.well-known/jwks.json`), and the metrics for
//! Prometheus (`/metrics`).
//! Handlers call [`crate::accounts`] like the gRPC ones and answer plain
//! HTTP: no protobuf, no gRPC status.
//!
//! Routing is an [`axum::Router`] (already built for tonic, whose own routes
//! are one): a new route is one line in [`router`] and a handler in a file
//! of its own. Unknown paths answer 404, other methods on a known path 405.

mod jwks;
mod metrics;
mod server;

use axum::{Router, routing::get};

pub use jwks::JWKS_PATH;
pub use metrics::METRICS_PATH;
pub use server::serve;

use crate::{accounts::Accounts, config::Settings};

/// Every route of the HTTP listener, each with the state it needs.
pub fn router(accounts: Accounts, settings: &Settings) -> Router {
    let metrics = accounts.metrics();
    Router::new()
        .route(
            JWKS_PATH,
            get(jwks::get).with_state(jwks::Jwks::new(accounts, settings.tokens.jwks_max_age)),
        )
        .route(METRICS_PATH, get(metrics::get).with_state(metrics))
}
