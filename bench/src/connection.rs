//! One HTTP/2 connection for the generated tonic clients, without tonic's
//! `Channel`.
//!
//! Why: `Channel` puts a buffer task, reconnection and load-balancing
//! layers in front of the connection, and on this 2-core machine the load
//! tool shares the CPU with the server it measures: every microsecond the
//! client spends per call is taken from the server. Cross-checked against
//! h2load, `Channel` made the tool the bottleneck of the `health` ceiling;
//! hyper's HTTP/2 handle is cheap to clone and multiplexes calls directly.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::Context as _;
use auth_service::pb::{
    auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use tonic_health::pb::health_client::HealthClient;

#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Body>,
    /// What the generated clients put in front of their paths.
    origin: http::Uri,
}

impl Connection {
    /// Connects from `source` (port chosen by the kernel) when given: each
    /// source address has its own ~28k ephemeral ports, so thousands of
    /// connections can be spread over 127.0.0.N.
    pub async fn open(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("cannot bind to {source}"))?;
        }
        let stream = socket.connect(addr).await.with_context(|| match source {
            Some(source) => format!("cannot connect to {addr} from {source}"),
            None => format!("cannot connect to {addr}"),
        })?;
        stream.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Like tonic's client: large windows, so flow control never throttles a benchmark.
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr} failed"))?;
        // Drives the connection; ends when every handle is dropped.
        tokio::spawn(connection);
        Ok(Self {
            send,
            origin: format!("http://{addr}").parse()?,
        })
    }

    pub fn health(&self) -> HealthClient<Self> {
        HealthClient::with_origin(self.clone(), self.origin.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Self> {
        AuthServiceClient::with_origin(self.clone(), self.origin.clone())
    }

    pub fn users(&self) -> UserServiceClient<Self> {
        UserServiceClient::with_origin(self.clone(), self.origin.clone())
    }
}

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
