//! Test keys and tokens, JWKS servers (HTTP and gRPC), and a small tonic
//! "orders" service guarded by the verifier.
//!
//! Nothing here needs the auth service: the end-to-end test against the
//! real binary can reuse [`serve_orders`], [`call_orders`] and
//! [`assert_refused`] with a [`Verifier`] built on the service's JWKS URL
//! or channel and the tokens it issues.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use auth_verifier::{Algorithm, Authenticated, AuthenticatedService, AuthenticatedUser, Verifier};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{
    EncodingKey, Header,
    jwk::{Jwk, PublicKeyUse, ThumbprintHash},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint, Server},
};
use tonic_types::StatusExt;
use tower::Layer;

pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/testing/auth.v1.rs"));
}

pub mod orders {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/testing/orders.v1.rs"));
}

// ---------------------------------------------------------------- keys

/// A private test key, its public JWK (with `kid` = RFC 7638 thumbprint,
/// as the auth service sets it) and a signer.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub jwk: Value,
    encoding: EncodingKey,
}

impl TestKey {
    pub fn ed25519_a() -> Self {
        Self::new(Algorithm::EdDSA, include_bytes!("../keys/ed25519-a.der"))
    }

    pub fn ed25519_b() -> Self {
        Self::new(Algorithm::EdDSA, include_bytes!("../keys/ed25519-b.der"))
    }

    pub fn p256() -> Self {
        Self::new(Algorithm::ES256, include_bytes!("../keys/p256.der"))
    }

    pub fn rsa2048() -> Self {
        Self::new(Algorithm::RS256, include_bytes!("../keys/rsa2048.der"))
    }

    fn new(alg: Algorithm, der: &[u8]) -> Self {
        let encoding = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(der),
            Algorithm::ES256 => EncodingKey::from_ec_der(der),
            _ => EncodingKey::from_rsa_der(der),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            alg,
            kid,
            jwk: serde_json::to_value(jwk).unwrap(),
            encoding,
        }
    }

    /// Signs `claims` with this key, its `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A valid access token for `user_id`.
    pub fn access(&self, user_id: i64) -> String {
        self.sign(&access_claims(user_id))
    }

    /// A valid service token for `client_id` with `scopes`.
    pub fn service(&self, client_id: &str, scopes: &[&str]) -> String {
        self.sign(&service_claims(client_id, scopes))
    }

    /// The public key as published (its JWK JSON): what an HS256 forger
    /// would use as the "secret" in an algorithm-confusion attack.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.jwk.to_string().into_bytes()
    }
}

pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A service token's claims (as the auth service writes them), valid for
/// five minutes.
pub fn service_claims(client_id: &str, scopes: &[&str]) -> Value {
    let now = now();
    json!({"token_type": "service", "exp": now + 300, "iat": now,
           "jti": "fedcba9876543210fedcba9876543210", "client_id": client_id,
           "scope": scopes.join(" "), "cid": "0123456789abcdef0123456789abcdef"})
}

/// simplejwt's access-token claims, valid for five minutes.
pub fn access_claims(user_id: i64) -> Value {
    let now = now();
    json!({"token_type": "access", "exp": now + 300, "iat": now,
           "jti": "0123456789abcdef0123456789abcdef", "user_id": user_id.to_string()})
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// base64url without padding, for hand-made tokens.
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// An unsigned `alg: none` token with `kid`.
pub fn none_token(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

// ------------------------------------------------------- JWKS servers

/// What a test JWKS server serves, and how often it was asked.
#[derive(Default)]
struct JwksState {
    jwks: Mutex<Value>,
    requests: AtomicUsize,
    down: AtomicBool,
}

/// A JWKS server: `GET /.well-known/jwks.json` over HTTP/1.1, or
/// `AuthService/GetJwks` over gRPC (the other methods unimplemented).
pub struct JwksServer {
    state: Arc<JwksState>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl JwksServer {
    /// Serves `jwks` over HTTP with `Cache-Control: public, max-age=N`.
    pub async fn http(jwks: Value, max_age: Option<u64>) -> Self {
        let state = Arc::new(JwksState::default());
        *state.jwks.lock().unwrap() = jwks;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap().0,
                    _ = accept_stopped.changed() => return,
                };
                let state = Arc::clone(&serving);
                let mut conn_stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(http_answer(&state, &request, max_age)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    // Stopping drops the connection: the socket closes.
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stopped.changed() => {}
                    }
                });
            }
        });
        Self { state, addr, stop }
    }

    /// Serves `jwks` from a tonic `AuthService` (GetJwks only).
    pub async fn grpc(jwks: Value) -> Self {
        let state = Arc::new(JwksState::default());
        *state.jwks.lock().unwrap() = jwks;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        let service = pb::auth_service_server::AuthServiceServer::new(GrpcJwks(Arc::clone(&state)));
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stopped.changed().await;
                }),
        );
        Self { state, addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// While down, the server answers 503 / UNAVAILABLE.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// JWKS requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn http_answer<B>(
    state: &JwksState,
    request: &http::Request<B>,
    max_age: Option<u64>,
) -> http::Response<Full<Bytes>> {
    if request.uri().path() != "/.well-known/jwks.json" {
        return http::Response::builder()
            .status(404)
            .body(Full::default())
            .unwrap();
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return http::Response::builder()
            .status(503)
            .body(Full::default())
            .unwrap();
    }
    let body = state.jwks.lock().unwrap().to_string();
    let mut response =
        http::Response::builder().header(http::header::CONTENT_TYPE, "application/jwk-set+json");
    if let Some(age) = max_age {
        response = response.header(
            http::header::CACHE_CONTROL,
            format!("public, max-age={age}"),
        );
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

struct GrpcJwks(Arc<JwksState>);

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for GrpcJwks {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn obtain_token_pair(
        &self,
        _: Request<pb::ObtainTokenPairRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn refresh_token(
        &self,
        _: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn verify_token(
        &self,
        _: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn logout(
        &self,
        _: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn reset_password(
        &self,
        _: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn obtain_service_token(
        &self,
        _: Request<pb::ObtainServiceTokenRequest>,
    ) -> Result<Response<pb::ObtainServiceTokenResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn get_jwks(&self, _: Request<pb::GetJwksRequest>) -> Result<Response<pb::Jwks>, Status> {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("down for the test"));
        }
        let jwks = self.0.jwks.lock().unwrap().clone();
        let field = |jwk: &Value, name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let keys = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| pb::Jwk {
                kty: field(jwk, "kty"),
                kid: field(jwk, "kid"),
                alg: field(jwk, "alg"),
                r#use: field(jwk, "use"),
                crv: field(jwk, "crv"),
                x: field(jwk, "x"),
                y: field(jwk, "y"),
                n: field(jwk, "n"),
                e: field(jwk, "e"),
            })
            .collect();
        Ok(Response::new(pb::Jwks { keys }))
    }
}

// ------------------------------------------------- the guarded service

/// Answers with the caller the guard put in the request's extensions
/// (checking that the [`Authenticated`] and the [`AuthenticatedUser`] or
/// [`AuthenticatedService`] beside it agree).
struct Orders;

#[tonic::async_trait]
impl orders::orders_server::Orders for Orders {
    async fn list_orders(
        &self,
        request: Request<orders::ListOrdersRequest>,
    ) -> Result<Response<orders::ListOrdersResponse>, Status> {
        let extensions = request.extensions();
        let caller = extensions
            .get::<Authenticated>()
            .ok_or_else(|| Status::internal("no Authenticated"))?;
        let reply = match caller {
            Authenticated::User(user) => {
                if extensions.get::<AuthenticatedUser>() != Some(user)
                    || extensions.get::<AuthenticatedService>().is_some()
                {
                    return Err(Status::internal("AuthenticatedUser disagrees"));
                }
                orders::ListOrdersResponse {
                    user_id: user.user_id,
                    ..Default::default()
                }
            }
            Authenticated::Service(service) => {
                if extensions.get::<AuthenticatedService>() != Some(service)
                    || extensions.get::<AuthenticatedUser>().is_some()
                {
                    return Err(Status::internal("AuthenticatedService disagrees"));
                }
                orders::ListOrdersResponse {
                    user_id: 0,
                    client_id: service.client_id.clone(),
                    scopes: service.scopes.clone(),
                }
            }
        };
        Ok(Response::new(reply))
    }
}

/// Which callers the guard takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// The default: users' access tokens.
    Users,
    /// `require_service(scopes)`.
    Services(&'static [&'static str]),
    /// `allow_service(scopes)`.
    UsersAndServices(&'static [&'static str]),
}

/// How the orders service is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `Server::builder().layer(verifier.layer())`: every service.
    ServerLayer,
    /// `add_service(verifier.layer().layer(OrdersServer::new(..)))`.
    ServiceLayer,
    /// `OrdersServer::with_interceptor(.., verifier.interceptor())`.
    Interceptor,
}

pub const GUARDS: [Guard; 3] = [Guard::ServerLayer, Guard::ServiceLayer, Guard::Interceptor];

/// Serves the orders service behind `guard` on a free port.
pub async fn serve_orders(verifier: &Verifier, guard: Guard) -> Channel {
    serve_orders_to(verifier, guard, Callers::Users).await
}

/// Serves the orders service behind `guard`, taking `callers`.
pub async fn serve_orders_to(verifier: &Verifier, guard: Guard, callers: Callers) -> Channel {
    use orders::orders_server::OrdersServer;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TcpListenerStream::new(listener);
    let layer = match callers {
        Callers::Users => verifier.layer(),
        Callers::Services(scopes) => verifier.layer().require_service(scopes.iter().copied()),
        Callers::UsersAndServices(scopes) => verifier.layer().allow_service(scopes.iter().copied()),
    };
    let interceptor = match callers {
        Callers::Users => verifier.interceptor(),
        Callers::Services(scopes) => verifier
            .interceptor()
            .require_service(scopes.iter().copied()),
        Callers::UsersAndServices(scopes) => {
            verifier.interceptor().allow_service(scopes.iter().copied())
        }
    };
    match guard {
        Guard::ServerLayer => {
            tokio::spawn(
                Server::builder()
                    .layer(layer)
                    .add_service(OrdersServer::new(Orders))
                    .serve_with_incoming(incoming),
            );
        }
        Guard::ServiceLayer => {
            tokio::spawn(
                Server::builder()
                    .add_service(layer.layer(OrdersServer::new(Orders)))
                    .serve_with_incoming(incoming),
            );
        }
        Guard::Interceptor => {
            tokio::spawn(
                Server::builder()
                    .add_service(OrdersServer::with_interceptor(Orders, interceptor))
                    .serve_with_incoming(incoming),
            );
        }
    }
    connect(addr).await
}

/// Calls ListOrders with `Bearer <token>`; who the service saw.
pub async fn call_as(channel: &Channel, token: &str) -> Result<orders::ListOrdersResponse, Status> {
    let mut request = Request::new(orders::ListOrdersRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    orders::orders_client::OrdersClient::new(channel.clone())
        .list_orders(request)
        .await
        .map(tonic::Response::into_inner)
}

/// PERMISSION_DENIED with `reason` and `metadata` in its `ErrorInfo`.
#[track_caller]
pub fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, Status>,
    reason: &str,
    metadata: &[(&str, &str)],
) {
    let status = match result {
        Ok(reply) => panic!("accepted ({reply:?}), expected {reason}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("no ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "auth-service");
    let expected: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(info.metadata, expected);
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Calls ListOrders with `authorization` (if any); the user id it saw.
pub async fn call_orders(channel: &Channel, authorization: Option<&str>) -> Result<i64, Status> {
    let mut request = Request::new(orders::ListOrdersRequest {});
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    orders::orders_client::OrdersClient::new(channel.clone())
        .list_orders(request)
        .await
        .map(|response| response.into_inner().user_id)
}

/// Calls ListOrders with `Bearer <token>`.
pub async fn call_with_token(channel: &Channel, token: &str) -> Result<i64, Status> {
    call_orders(channel, Some(&format!("Bearer {token}"))).await
}

/// UNAUTHENTICATED with the auth service's message and `ErrorInfo`.
#[track_caller]
pub fn assert_refused(result: Result<i64, Status>, message: &str, reason: &str) {
    let status = match result {
        Ok(user_id) => panic!("accepted (user {user_id}), expected {message:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), message);
    let details = status.get_error_details();
    let info = details.error_info().expect("no ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "auth-service");
    assert_eq!(info.metadata, HashMap::new());
}
