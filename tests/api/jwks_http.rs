//! The published public keys over plain HTTP (`AUTH_HTTP_ADDR`), fetched
//! with a real HTTP/1.1 client: in-process, and through the binary.

use std::{net::SocketAddr, time::Duration};

use auth_service::{pb, web::JWKS_PATH};
use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    child::{ChildServer, auth_service, run_within, stderr},
    cli::START_REFUSAL_DEADLINE,
    helpers::{Backend, SECRET, TestApp, TestDatabase},
};

/// A plain HTTP/1.1 client (hyper's), keeping idle connections open
/// between requests as clients do.
struct HttpClient(Client<HttpConnector, Body>);

impl HttpClient {
    fn new() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }

    /// `method path` on `addr`: the response, its body read whole.
    async fn request(&self, method: Method, addr: SocketAddr, path: &str) -> Response<Bytes> {
        let uri = format!("http://{addr}{path}");
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.0.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {uri}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(Body::new(body), 1024 * 1024)
            .await
            .unwrap_or_else(|e| panic!("{method} {uri}: reading the body: {e}"));
        Response::from_parts(parts, body)
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> Response<Bytes> {
        self.request(Method::GET, addr, path).await
    }
}

fn header_of(response: &Response<Bytes>, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {response:?}"))
}

/// The test server with its HTTP listener on a free port.
async fn spawn_with_http() -> (TestApp, SocketAddr) {
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = app.http_addr.expect("the HTTP listener is on");
    (app, addr)
}

/// A key of the RFC 7517 JSON as the gRPC message: every member a string
/// (no nulls), those that do not apply to the key type left out.
fn as_grpc_jwk(key: &serde_json::Value) -> pb::Jwk {
    let members = key
        .as_object()
        .unwrap_or_else(|| panic!("not a key: {key}"));
    for (name, value) in members {
        assert!(
            value.as_str().is_some_and(|v| !v.is_empty()),
            "{name} is not a non-empty string: {key}"
        );
    }
    let member = |name: &str| {
        members
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    pb::Jwk {
        kty: member("kty").to_owned(),
        kid: member("kid").to_owned(),
        alg: member("alg").to_owned(),
        r#use: member("use").to_owned(),
        crv: member("crv").to_owned(),
        x: member("x").to_owned(),
        y: member("y").to_owned(),
        n: member("n").to_owned(),
        e: member("e").to_owned(),
    }
}

/// The JWKS is RFC 7517 JSON, cacheable for `AUTH_JWKS_MAX_AGE` (5m), and
/// the same keys GetJwks returns. With HS256: no keys.
#[tokio::test]
async fn the_jwks_is_served_over_http_as_getjwks_returns_it() {
    let (app, addr) = spawn_with_http().await;
    let response = HttpClient::new().get(addr, JWKS_PATH).await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/json"
    );
    assert_eq!(
        header_of(&response, header::CACHE_CONTROL),
        "public, max-age=300"
    );
    assert_eq!(response.body().as_ref(), br#"{"keys":[]}"#);

    let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let over_http: Vec<pb::Jwk> = json["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no key list: {json}"))
        .iter()
        .map(as_grpc_jwk)
        .collect();
    let over_grpc = app
        .auth
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let kids = |keys: &[pb::Jwk]| keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
    assert_eq!(kids(&over_http), kids(&over_grpc));
    assert_eq!(over_http, over_grpc);
    app.stop().await;
}

#[tokio::test]
async fn the_jwks_max_age_follows_its_setting() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
        s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.tokens.jwks_max_age = Duration::from_secs(90);
    })
    .await;
    let addr = app.http_addr.expect("the HTTP listener is on");
    let response = HttpClient::new().get(addr, JWKS_PATH).await;
    assert_eq!(
        header_of(&response, header::CACHE_CONTROL),
        "public, max-age=90"
    );
    app.stop().await;
}

/// GET and HEAD only; any other path is not found.
#[tokio::test]
async fn the_jwks_answers_head_405_for_other_methods_and_404_elsewhere() {
    let (app, addr) = spawn_with_http().await;
    let client = HttpClient::new();

    let head = client.request(Method::HEAD, addr, JWKS_PATH).await;
    assert_eq!(head.status(), StatusCode::OK, "{head:?}");
    assert_eq!(header_of(&head, header::CONTENT_TYPE), "application/json");
    assert!(head.body().is_empty());

    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let response = client.request(method.clone(), addr, JWKS_PATH).await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}: {response:?}"
        );
        assert_eq!(header_of(&response, header::ALLOW), "GET,HEAD");
    }

    for path in ["/nope", "/", "/.well-known/jwks.json/x", "/.well-known/"] {
        let response = client.get(addr, path).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{path}: {response:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_http_listener_is_off_by_default() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    assert_eq!(app.http_addr, None);
    app.stop().await;
}

/// The binary with `AUTH_HTTP_ADDR` serves the JWKS, and SIGTERM stops it
/// cleanly (exit 0) and promptly, although an HTTP client still holds an
/// idle keep-alive connection: far sooner than the grace period allows.
#[tokio::test]
async fn the_binary_serves_the_jwks_on_auth_http_addr_and_exits_0_on_sigterm() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .envs(&[("AUTH_SHUTDOWN_GRACE", "120s")])
        .with_http()
        .start()
        .await;
    let addr = server.http_addr().expect("started with HTTP");
    let client = HttpClient::new();
    let response = client.get(addr, JWKS_PATH).await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert_eq!(response.body().as_ref(), br#"{"keys":[]}"#);

    let output = server.terminate(Duration::from_secs(60)).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    drop(client);
}

/// A taken HTTP address stops start-up with one line naming it.
#[tokio::test]
async fn an_http_address_in_use_is_one_line_and_a_failure() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut command = auth_service(&["serve", "--listen-addr", "127.0.0.1:0"]);
    command
        .env("AUTH_DATABASE_URL", &database.url)
        .env("AUTH_JWT_SECRET", SECRET)
        .env("AUTH_HTTP_ADDR", addr.to_string())
        .env("RUST_LOG", "off");
    let output = run_within(command, START_REFUSAL_DEADLINE).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("auth-service: cannot listen on {addr} for HTTP")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    drop(taken);
}
