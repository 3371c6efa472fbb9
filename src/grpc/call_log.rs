//! The layer every call goes through: it brings codec errors in line with
//! the API's conventions (`codec_status`) and writes one log line per call:
//! method, gRPC status code, latency and, where the handler knows it, the
//! user id (or, for a service token, its `client_id`). Never request or response bodies, so no password or token can
//! reach the log through it. It also records each call's code and latency
//! in the metrics (a call whose client went away, before or in the middle
//! of its request, is logged and counted as CANCELLED). With
//! traces on, its span is also the call's span in the trace
//! (`telemetry::traces`), joined to the caller's trace when the request
//! carries a W3C `traceparent`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;

use super::request_body::ClientGone;
use crate::telemetry::{
    self, Caller,
    metrics::{CallRecord, RpcMetrics},
    traces,
};

#[derive(Debug, Clone)]
pub struct CallLogLayer {
    metrics: RpcMetrics,
}

impl CallLogLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The line carries its own fields, so at INFO no span is made: the
        // span (DEBUG) is for the traces, and for `RUST_LOG=debug`, where
        // it gives the records inside a call their method.
        let span = tracing::debug_span!(
            "call",
            method = request.uri().path(),
            user_id = tracing::field::Empty,
            client_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let started = Instant::now();
        // Recorded and logged as CANCELLED if the future below is dropped
        // unfinished (hyper drops it when the client resets the stream).
        let mut unfinished = Unfinished {
            record: Some(self.metrics.start(request.uri().path(), started)),
            started,
        };
        // Set when the request body broke off: the client left mid-call.
        let gone = request.extensions().get::<ClientGone>().cloned();
        // One load when traces are off.
        let traced = traces::enabled();
        let trace_id = if traced {
            let headers = request.headers();
            let trace_id = traces::join_caller(&span, |name| {
                headers.get(name).and_then(|value| value.to_str().ok())
            });
            // Named after its method only if it is one served here: the
            // metrics know which, and a client's path is not trusted.
            let known = unfinished.record.as_ref().is_some_and(CallRecord::known);
            traces::record_method(&span, request.uri().path(), known);
            trace_id
        } else {
            None
        };
        let response = span.in_scope(|| self.inner.call(request));
        let call = async move {
            let mut result = response.await;
            let elapsed = started.elapsed();
            // u64: a number in JSON too (a u128 would be a string there).
            let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            let (user_id, client_id) = match telemetry::call_user() {
                Caller::Unknown => (None, None),
                Caller::User(id) => (Some(id), None),
                Caller::Service(name) => (None, Some(name)),
            };
            let client_id = client_id.as_deref();
            let Some(record) = unfinished.record.take() else {
                return result;
            };
            let method = record.method();
            match &mut result {
                // A failed unary call is "trailers-only": grpc-status is a
                // header. A successful one sends it in the trailers, which
                // only ever say OK for our unary handlers.
                Ok(response) => {
                    super::codec_status::normalize(response.headers_mut());
                    let mut code = response
                        .headers()
                        .get("grpc-status")
                        .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()));
                    // tonic calls a body that broke off INTERNAL "Unexpected
                    // EOF": it is the client's leaving, not our bug.
                    if code != Code::Ok && gone.as_ref().is_some_and(ClientGone::is_set) {
                        super::codec_status::cancelled(response.headers_mut());
                        code = Code::Cancelled;
                    }
                    tracing::info!(
                        method,
                        code = ?code,
                        latency_us,
                        user_id,
                        client_id,
                        trace_id = trace_id.as_deref(),
                        "grpc call"
                    );
                    record.finish(code as i32, elapsed);
                    if traced {
                        let span = tracing::Span::current();
                        traces::record_status(&span, code as i32, is_server_error(code));
                    }
                }
                Err(e) => {
                    // The connection's stream is reset: no status reaches the client.
                    tracing::warn!(
                        method,
                        error = %e,
                        latency_us,
                        user_id,
                        client_id,
                        trace_id = trace_id.as_deref(),
                        "grpc call failed"
                    );
                    record.finish(Code::Unknown as i32, elapsed);
                    if traced {
                        let span = tracing::Span::current();
                        traces::record_status(&span, Code::Unknown as i32, true);
                    }
                }
            }
            result
        };
        Box::pin(telemetry::with_call_user(call).instrument(span))
    }
}

/// A call in flight: dropped before it finishes, it is logged and counted
/// as CANCELLED (the client went away, so hyper dropped the call).
struct Unfinished {
    record: Option<CallRecord>,
    started: Instant,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            let elapsed = self.started.elapsed();
            let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            tracing::info!(
                method = record.method(),
                code = ?Code::Cancelled,
                latency_us,
                "grpc call"
            );
            // The record itself counts CANCELLED when dropped.
        }
    }
}

/// The codes OpenTelemetry's gRPC conventions count as the server's failure
/// (a span status of ERROR); the others are the caller's doing.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}
