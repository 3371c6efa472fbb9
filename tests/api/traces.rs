//! Traces through the real binary (the subscriber is process-wide): an
//! OTLP collector of our own, a tonic server on the generated
//! `TraceService`, receives the spans of a register and a login, joined to
//! the caller's trace by `traceparent`, and no secret among them; a
//! collector that hangs costs the calls nothing, and its spans that find
//! the queue full are counted as dropped, as are those a collector that is
//! down refuses; a malformed endpoint stops start-up.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use auth_service::{
    pb::{self, auth_service_client::AuthServiceClient},
    web::METRICS_PATH,
};
use axum::body::Body;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::{ResourceSpans, Span, span::SpanKind},
};
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::{
    child::{CHEAP_HASHING, ChildServer, auth_service, free_addr, run_within, stderr},
    helpers::{Backend, SECRET, TestDatabase},
};

const PASSWORD: &str = "Trace-Passphrase-4-Spans";
/// The caller's trace and span, as its `traceparent` names them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
/// How long spans may take to arrive (a 100 ms batch delay is configured).
const ARRIVAL: Duration = Duration::from_secs(30);

/// Every span it was sent, with its resource.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ResourceSpans>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request.into_inner().resource_spans;
        self.received.lock().unwrap().extend(spans);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a free port of 127.0.0.1: the collector and its endpoint.
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Self::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (collector, endpoint)
    }

    /// The spans received so far, each with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|resource| {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| string(&r.attributes, "service.name"))
                    .unwrap_or_default();
                resource
                    .scope_spans
                    .iter()
                    .flat_map(|scope| scope.spans.iter())
                    .map(move |span| (service.clone(), span.clone()))
            })
            .collect()
    }

    /// Polls until `wanted` holds of the spans received, failing after
    /// [`ARRIVAL`].
    async fn wait_for(&self, what: &str, wanted: impl Fn(&[(String, Span)]) -> bool) {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if wanted(&spans) {
                return;
            }
            assert!(
                started.elapsed() < ARRIVAL,
                "no {what} within {ARRIVAL:?}; received: {:#?}",
                names(&spans)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(Any::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(Any::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn names(spans: &[(String, Span)]) -> Vec<String> {
    spans
        .iter()
        .map(|(_, s)| format!("{} {}", s.name, hex(&s.span_id)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn call_span<'a>(spans: &'a [(String, Span)], method: &str) -> Option<&'a Span> {
    spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.name == method)
}

fn children<'a>(spans: &'a [(String, Span)], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect()
}

const LOGIN: &str = "auth.v1.AuthService/ObtainTokenPair";
const REGISTER: &str = "auth.v1.AuthService/Register";
/// A path no service answers.
const PROBE: &str = "/probe.Scanner/Enumerate";

/// A login with the caller's `traceparent`: its call span is a child of the
/// caller's span in the caller's trace, named after the method, with the
/// method, code and user id; the user lookup and the password check are
/// its children. The JSON log lines of the call carry the trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_traced_under_the_callers_span() {
    let (collector, endpoint) = Collector::start().await;
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .envs(&[
            ("AUTH_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("AUTH_LOG_FORMAT", "json"),
        ])
        .envs(&CHEAP_HASHING)
        .log("info")
        .start()
        .await;
    let mut auth = AuthServiceClient::new(server.channel());
    let user = auth
        .register(pb::RegisterRequest {
            email: "traces@example.com".into(),
            username: "traces".into(),
            password: PASSWORD.into(),
            avatar: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut login = Request::new(pb::ObtainTokenPairRequest {
        username: "traces".into(),
        password: PASSWORD.into(),
    });
    login.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_ID}-01").parse().unwrap(),
    );
    let tokens = auth.obtain_token_pair(login).await.unwrap().into_inner();
    // The refresh token as a request, too.
    let refreshed = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh: tokens.refresh.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    auth.verify_token(pb::VerifyTokenRequest {
        token: tokens.access.clone(),
    })
    .await
    .unwrap();
    // A path of a scanner's making: its span is not named after it.
    let mut raw = tonic::client::Grpc::new(server.channel());
    raw.ready().await.unwrap();
    let probe = raw
        .unary::<(), (), _>(
            Request::new(()),
            http::uri::PathAndQuery::from_static(PROBE),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(probe.unwrap_err().code(), tonic::Code::Unimplemented);

    collector
        .wait_for("login span with its children", |spans| {
            call_span(spans, LOGIN).is_some_and(|call| children(spans, call).len() >= 2)
                && call_span(spans, REGISTER).is_some()
                && call_span(spans, "unknown").is_some()
        })
        .await;
    let spans = collector.spans();
    assert!(
        spans.iter().all(|(service, _)| service == "auth-service"),
        "{spans:#?}"
    );

    let call = call_span(&spans, LOGIN).unwrap();
    assert_eq!(hex(&call.trace_id), TRACE_ID, "not in the caller's trace");
    assert_eq!(
        hex(&call.parent_span_id),
        PARENT_ID,
        "not the caller's child"
    );
    assert_eq!(call.kind, SpanKind::Server as i32);
    assert_eq!(
        string(&call.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string(&call.attributes, "rpc.service").as_deref(),
        Some("auth.v1.AuthService")
    );
    assert_eq!(
        string(&call.attributes, "rpc.method").as_deref(),
        Some("ObtainTokenPair")
    );
    assert_eq!(int(&call.attributes, "rpc.grpc.status_code"), Some(0));
    assert_eq!(int(&call.attributes, "user_id"), Some(user.id));

    let under_login = children(&spans, call);
    for child in &under_login {
        assert_eq!(hex(&child.trace_id), TRACE_ID, "{child:#?}");
    }
    let verify = under_login.iter().any(|s| s.name == "password.verify");
    assert!(
        verify,
        "no password.verify under the login: {:#?}",
        names(&spans)
    );
    let lookup = under_login.iter().any(|s| {
        s.name == "db.query"
            && string(&s.attributes, "db.operation").as_deref() == Some("users.find_by_username")
    });
    assert!(
        lookup,
        "no user lookup under the login: {:#?}",
        names(&spans)
    );

    // A call without a traceparent starts a trace of its own; registering
    // hashes the password and inserts the user under it.
    let register = call_span(&spans, REGISTER).unwrap();
    assert_ne!(hex(&register.trace_id), TRACE_ID);
    assert!(register.parent_span_id.is_empty(), "{register:#?}");
    let under_register = children(&spans, register);
    for name in ["password.hash", "db.query"] {
        assert!(
            under_register.iter().any(|s| s.name == name),
            "no {name} under the register: {:#?}",
            names(&spans)
        );
    }

    // No secret reaches the collector: not the password, the tokens (or
    // their signatures) or the signing key, in any field of any span.
    let mut secrets = vec![PASSWORD.to_owned(), SECRET.to_owned()];
    for token in [&tokens.access, &tokens.refresh, &refreshed.access] {
        assert!(!token.is_empty());
        secrets.push(token.clone());
        let signature = token.rsplit('.').next().unwrap();
        assert!(signature.len() >= 16, "{token}");
        secrets.push(signature.to_owned());
    }
    let received = collector.received.lock().unwrap().clone();
    for resource in &received {
        let encoded = resource.encode_to_vec();
        let debug = format!("{resource:?}");
        for secret in &secrets {
            let found = encoded
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "{secret} exported: {debug}");
            assert!(
                !debug.contains(secret.as_str()),
                "{secret} exported: {debug}"
            );
        }
    }

    let probe = call_span(&spans, "unknown").unwrap();
    assert_eq!(probe.kind, SpanKind::Server as i32);
    assert_eq!(int(&probe.attributes, "rpc.grpc.status_code"), Some(12));
    assert_eq!(string(&probe.attributes, "rpc.service"), None);
    assert_eq!(string(&probe.attributes, "rpc.method"), None);
    assert!(
        spans.iter().all(|(_, span)| !span.name.contains("Scanner")),
        "{:#?}",
        names(&spans)
    );

    let output = server.terminate(Duration::from_secs(30)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    let login_line = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|r| r["message"] == "grpc call" && r["method"] == format!("/{LOGIN}"));
    let login_line = login_line.unwrap_or_else(|| panic!("no login call line: {log}"));
    assert_eq!(login_line["trace_id"], TRACE_ID, "{login_line}");
    // Nor do the trace-only spans reach the log.
    assert!(!log.contains("db.query"), "{log}");
    assert!(!log.contains("password.verify"), "{log}");
}

/// The value of the counter `name` (no labels) in the scrape of `addr`.
async fn scraped(addr: std::net::SocketAddr, name: &str) -> f64 {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{addr}{METRICS_PATH}"))
        .body(Body::empty())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("an answer within 30 s")
        .expect("a response");
    let body = axum::body::to_bytes(Body::new(response.into_body()), 16 * 1024 * 1024)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// How long an export may take, as configured below: far longer than the
/// calls are given, so a call that waited on an export could not finish
/// in time.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on all the calls together, well below [`EXPORT_TIMEOUT`].
const CALLS_WITHIN: Duration = Duration::from_secs(30);

/// A collector that hangs (it accepts the connection and never answers):
/// every export waits for the export timeout, yet the calls answer without
/// waiting on it, and the spans that find the export queue full are
/// dropped and counted in `auth_trace_spans_dropped_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_do_not_wait_for_a_collector_that_hangs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Holds every connection open and never reads or writes.
    let hung = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let timeout = EXPORT_TIMEOUT.as_millis().to_string();
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .envs(&[
            ("AUTH_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", timeout.as_str()),
        ])
        .envs(&CHEAP_HASHING)
        .with_http()
        .log("warn")
        .start()
        .await;
    let http = server.http_addr().unwrap();
    let mut auth = AuthServiceClient::new(server.channel());
    let calls = async {
        auth.register(pb::RegisterRequest {
            email: "hung@example.com".into(),
            username: "hung".into(),
            password: PASSWORD.into(),
            avatar: None,
        })
        .await
        .unwrap();
        // Far more spans than the queue holds (a login makes several).
        for _ in 0..20 {
            auth.obtain_token_pair(pb::ObtainTokenPairRequest {
                username: "hung".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
        }
    };
    tokio::time::timeout(CALLS_WITHIN, calls)
        .await
        .unwrap_or_else(|_| {
            panic!("the calls waited on the collector: not done in {CALLS_WITHIN:?}")
        });
    // The first batch hangs in export, so at most the queue's 8 spans are
    // held: the rest are counted.
    let dropped = scraped(http, "auth_trace_spans_dropped_total").await;
    assert!(dropped >= 1.0, "{dropped}");

    // At exit the flush gives up after the SDK's shutdown timeout, the
    // export still hanging: no export failed before, so every span counted
    // was dropped for a full queue. (Stopping the runtime then ends the
    // hanging export, which may say so.)
    let output = server.terminate(EXPORT_TIMEOUT).await;
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let (before_exit, _) = log
        .split_once("could not flush the traces at exit")
        .unwrap_or_else(|| panic!("no failed flush at exit: {log}"));
    assert!(!before_exit.contains("trace export failed"), "{log}");
    hung.abort();
}

/// The collector is down (refuses connections): calls answer as usual, and
/// the spans that could not be sent are counted as dropped and said so in
/// the log (the counter itself, `telemetry::traces::spans_dropped`, is the
/// metric `auth_trace_spans_dropped_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_a_down_collector_refuses_are_counted_as_dropped() {
    let endpoint = format!("http://{}", free_addr());
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .envs(&[
            ("AUTH_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ])
        .envs(&CHEAP_HASHING)
        .log("warn")
        .start()
        .await;
    let mut auth = AuthServiceClient::new(server.channel());
    auth.register(pb::RegisterRequest {
        email: "down@example.com".into(),
        username: "down".into(),
        password: PASSWORD.into(),
        avatar: None,
    })
    .await
    .unwrap();
    // Several batches' worth of calls, each answered.
    for _ in 0..5 {
        auth.obtain_token_pair(pb::ObtainTokenPairRequest {
            username: "down".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let output = server.terminate(Duration::from_secs(60)).await;
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let failed = log
        .lines()
        .find(|line| line.contains("trace export failed"))
        .unwrap_or_else(|| panic!("no export failure in the log: {log}"));
    let dropped: u64 = failed
        .split("dropped_total=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped_total: {failed}"));
    assert!(dropped >= 1, "{failed}");
    assert_eq!(
        log.matches("trace export failed").count(),
        1,
        "one line per outage, not per batch: {log}"
    );
}

/// A malformed collector URL is a configuration error: one line, no server.
#[tokio::test]
async fn a_malformed_endpoint_stops_start_up() {
    let database_url = "sqlite::memory:";
    let cases = [
        ("AUTH_OTLP_ENDPOINT", "collector:4317", "otlp-endpoint"),
        ("AUTH_OTLP_ENDPOINT", "not a url", "otlp-endpoint"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "ftp://collector",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
    ];
    for (variable, value, named) in cases {
        let mut command = auth_service(&["serve"]);
        command
            .env("AUTH_DATABASE_URL", database_url)
            .env("AUTH_LISTEN_ADDR", "127.0.0.1:0")
            .env(variable, value);
        // Were it accepted, the server would serve: that fails here too.
        let output = run_within(command, Duration::from_secs(60)).await;
        let err = stderr(&output);
        assert!(
            !output.status.success(),
            "{variable}={value} started: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{variable}={value}: {err}");
        assert!(err.contains(named), "{variable}={value}: {err}");
    }
}
