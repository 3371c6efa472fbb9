//! The HTTP server: the [`router`](super::router) served on its own
//! listener, HTTP/1.1 (and h2c), stopped with the gRPC server.

use std::{future::Future, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    accounts::Accounts,
    config::Settings,
    grpc::{
        serve_with_grace,
        tls::{Alpn, Incoming, Tls},
    },
};

/// Serves the HTTP routes on `listener` until `shutdown` resolves, then
/// stops accepting connections and lets the requests in flight finish, for
/// at most the shutdown grace period (as [`crate::grpc::serve`]).
///
/// The connections are tonic's transport (hyper's HTTP/1.1 and HTTP/2
/// server with graceful shutdown and a header read timeout), told to accept
/// HTTP/1.1: it serves any axum router, and needs no HTTP server of our own.
///
/// Over TLS (the gRPC listener's certificate) when `tls` is given.
///
/// # Errors
/// The server failed, or requests were still in flight when the grace
/// period ended.
pub async fn serve(
    listener: TcpListener,
    accounts: Accounts,
    settings: &Settings,
    tls: Option<&Tls>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let routes = Routes::from(super::router(accounts, settings)).prepare();
    let local_addr = listener.local_addr()?;
    tracing::info!(addr = %local_addr, tls = tls.is_some(), "serving HTTP");
    // Dead peers' idle keep-alive connections are noticed and dropped.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let incoming = Incoming::new(incoming, tls, Alpn::Http);
    let grace = settings.server.shutdown_grace;
    serve_with_grace(shutdown, grace, "HTTP requests", |signal| {
        let router = Server::builder().accept_http1(true).add_routes(routes);
        async move {
            match incoming {
                Incoming::Tcp(tcp) => router.serve_with_incoming_shutdown(tcp, signal).await,
                Incoming::Tls(tls) => router.serve_with_incoming_shutdown(tls, signal).await,
            }
        }
    })
    .await
    .with_context(|| format!("HTTP server on {local_addr}"))
}
