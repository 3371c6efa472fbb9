//! Traces: OpenTelemetry spans, exported in batches over OTLP when an
//! endpoint is configured (`AUTH_OTLP_ENDPOINT`). Without one there is no
//! OpenTelemetry layer at all, and the trace-only spans below are never
//! even constructed.
//!
//! What is exported: the call log's span (`grpc/call_log.rs`), one per call,
//! named after the gRPC method (`unknown` for a path no service answers),
//! with `rpc.*` attributes, the status code and
//! the user id; under it the spans on [`TARGET`] (`db.query`,
//! `password.hash`, `password.verify`), which only this layer sees. A
//! caller's W3C `traceparent` makes the call span a child of the caller's.
//!
//! Export never holds up a call: spans go to the SDK's bounded queue and a
//! thread of its own sends them. Every span lost is counted
//! ([`spans_dropped`]): the batches whose export fails (the collector is
//! down) and the spans that find the queue full (the collector hangs, or
//! cannot keep up). The SDK drops the latter without telling us, so the
//! queue is bounded by a count of our own ([`Bounded`]) that it never
//! reaches.
//!
//! The exporter is built by the caller (`startup::otlp_exporter`): only the
//! transport layer knows gRPC.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanKind, Status, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_MAX_QUEUE_SIZE,
        OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
    },
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    Layer,
    filter::{FilterExt, LevelFilter, Targets, filter_fn},
    registry::LookupSpan,
};

/// The target of spans meant for traces only (database queries, password
/// hashing): DEBUG spans that the log never shows, so without tracing they
/// cost a disabled callsite check.
pub const TARGET: &str = "auth_service::traces";

/// The service's name in the traces, unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "auth-service";

/// Whether an OpenTelemetry layer is installed: the call log's one cheap
/// check before doing any tracing work of its own.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Spans lost because their export failed or the queue was full, since
/// start-up.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether spans are being exported (an endpoint is configured and the
/// layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The subscriber with [`Traces::layer`] is installed: only then does the
/// call log do its tracing work.
pub(super) fn installed() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Spans dropped because the collector could not take them (export failed
/// or timed out) or the queue was full, since start-up: the metric
/// `auth_trace_spans_dropped_total`.
pub fn spans_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The tracer provider. Dropping it flushes the spans still queued (for at
/// most the export timeout) and stops the export thread: hold it until exit,
/// inside the runtime the exporter's connection lives on.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

impl Traces {
    /// Batch export of the service's spans through `exporter`. The queue
    /// and batch settings are the SDK's, from `OTEL_BSP_*` (a 5 s delay and
    /// 2048 spans queued by default).
    pub fn new<E: SpanExporter + 'static>(exporter: E) -> Self {
        let resource = match std::env::var("OTEL_SERVICE_NAME") {
            Ok(name) if !name.is_empty() => Resource::builder().build(),
            _ => Resource::builder().with_service_name(SERVICE_NAME).build(),
        };
        // Read as the SDK reads it, and then given to the SDK, so that both
        // bound the queue alike.
        let capacity = std::env::var(OTEL_BSP_MAX_QUEUE_SIZE)
            .ok()
            .and_then(|size| size.parse().ok())
            .unwrap_or(OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT);
        let processor = Bounded::new(exporter, BatchConfigBuilder::default(), capacity, &DROPPED);
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .build();
        Self { provider }
    }

    /// The layer that turns spans into OpenTelemetry spans: only spans
    /// (events stay in the log) of this crate, DEBUG ones included.
    pub(super) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let spans = Targets::new()
            .with_target("auth_service", tracing::Level::DEBUG)
            .and(filter_fn(|meta| meta.is_span()).with_max_level_hint(LevelFilter::DEBUG));
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SERVICE_NAME))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(spans)
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        // Logged (the subscriber outlives this), so a JSON log stays JSON.
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not flush the traces at exit");
        }
    }
}

/// Makes `span` (a call's) a child of the caller's span when the request
/// carries a W3C `traceparent` (and `tracestate`), read through `header`;
/// then records the trace id on it, and returns it for the call's line.
pub fn join_caller<'a>(span: &Span, header: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let headers = Headers {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    let parent = TraceContextPropagator::new().extract(&headers);
    if parent.span().span_context().is_valid() {
        // Only fails when the span is disabled or already started: then
        // it is not exported as a child anyway.
        let _ = span.set_parent(parent);
    }
    let context: Context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let trace_id = span_context.trace_id().to_string();
    span.record("trace_id", trace_id.as_str());
    Some(trace_id)
}

/// The OpenTelemetry attributes of a call's method, from its path
/// (`/package.Service/Method`): `rpc.service` and `rpc.method` only when
/// `known` (a method served here, see `RpcMetrics`), so that the paths a
/// client makes up name nothing (the span is then named `unknown`). The log
/// has the path in its own field, so these are set on the OpenTelemetry
/// span only; set when the call starts, so a cancelled call has them too.
pub fn record_method(span: &Span, path: &str, known: bool) {
    span.set_attribute("rpc.system", "grpc");
    if known && let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
        span.set_attribute(RPC_SERVICE, service.to_owned());
        span.set_attribute(RPC_METHOD, method.to_owned());
    }
}

/// The OpenTelemetry attributes of a call's gRPC status code.
pub fn record_status(span: &Span, code: i32, server_error: bool) {
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if server_error {
        span.set_status(Status::error(format!("gRPC status {code}")));
    }
}

const RPC_SERVICE: &str = "rpc.service";
const RPC_METHOD: &str = "rpc.method";

/// The name of a call span whose path is no method served here.
const UNKNOWN_CALL: &str = "unknown";

/// The request headers the W3C propagator reads.
struct Headers<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The SDK's batch processor behind a count of the spans it holds: queued
/// or being exported. A span that would make the count exceed the queue's
/// capacity is dropped here, and counted, rather than by the SDK, which
/// would drop it uncounted. The count falls when an export ends
/// ([`Counted`]), so it is never below what the SDK's queue holds.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queue: Arc<Queue>,
}

/// The spans in the processor, its capacity and where drops are counted.
#[derive(Debug)]
struct Queue {
    capacity: usize,
    in_flight: AtomicUsize,
    dropped: &'static AtomicU64,
}

impl Queue {
    /// Takes a place for one span: false when the queue is full.
    fn admit(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// `spans` left the processor (exported, or failed to be).
    fn release(&self, spans: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(spans))
            });
    }

    /// Counts `spans` as dropped: the total since start-up.
    fn drop_spans(&self, spans: usize) -> u64 {
        let spans = u64::try_from(spans).unwrap_or(u64::MAX);
        self.dropped.fetch_add(spans, Ordering::Relaxed) + spans
    }
}

impl Bounded {
    /// Exports through `exporter` in batches configured by `config`, with
    /// room for `capacity` spans; drops counted in `dropped`.
    fn new<E: SpanExporter + 'static>(
        exporter: E,
        config: BatchConfigBuilder,
        capacity: usize,
        dropped: &'static AtomicU64,
    ) -> Self {
        let queue = Arc::new(Queue {
            capacity,
            in_flight: AtomicUsize::new(0),
            dropped,
        });
        let exporter = Counted {
            inner: exporter,
            failing: AtomicBool::new(false),
            queue: Arc::clone(&queue),
        };
        let inner = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config.with_max_queue_size(capacity).build())
            .build();
        Self { inner, queue }
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queue.admit() {
            self.inner.on_end(span);
        } else {
            // No log line: this runs inside the subscriber, where a line
            // would be lost. The counter says it.
            self.queue.drop_spans(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting the spans of every failed export as dropped, and
/// saying so in the log once per outage; it also names the call spans.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    /// Whether the last export failed: one log line per outage, not per batch.
    failing: AtomicBool,
    /// Told how many spans left the processor after each export.
    queue: Arc<Queue>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        batch.iter_mut().for_each(name_call_span);
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.queue.release(spans);
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let total = self.queue.dropped.load(Ordering::Relaxed);
                    tracing::info!(dropped_total = total, "trace export works again");
                }
            }
            Err(e) => {
                let total = self.queue.drop_spans(spans);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        dropped = spans,
                        dropped_total = total,
                        "trace export failed, spans dropped until the collector answers"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The call log's span is named `call` for the log; in a trace it is the
/// server side of the gRPC call, named `package.Service/Method` as
/// OpenTelemetry's conventions have it, from the attributes
/// [`record_method`] set for a known method, else `unknown`: never after
/// the raw path a client sent. Done here, on the export thread, so the
/// log's span keeps its fields and a call pays nothing for it.
fn name_call_span(span: &mut SpanData) {
    if span.name != "call" {
        return;
    }
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str())
    };
    let name = match (attribute(RPC_SERVICE), attribute(RPC_METHOD)) {
        (Some(service), Some(method)) => format!("{service}/{method}").into(),
        _ => UNKNOWN_CALL.into(),
    };
    span.name = name;
    span.span_kind = SpanKind::Server;
}

#[cfg(test)]
mod tests {
    use std::{
        borrow::Cow,
        sync::{Mutex, mpsc},
        time::SystemTime,
    };

    use opentelemetry::{
        InstrumentationScope, KeyValue,
        trace::{SpanContext, SpanId},
    };
    use opentelemetry_sdk::{
        error::OTelSdkError,
        trace::{SpanEvents, SpanLinks},
    };

    use super::*;

    /// Keeps what it is sent, or fails every export.
    #[derive(Debug, Default)]
    struct Collector {
        down: bool,
        received: Arc<Mutex<Vec<SpanData>>>,
    }

    impl SpanExporter for Collector {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.down {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            self.received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(batch);
            Ok(())
        }
    }

    fn span(name: &'static str, attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    /// A drop counter of a test's own.
    fn counter() -> &'static AtomicU64 {
        Box::leak(Box::new(AtomicU64::new(0)))
    }

    fn counted(down: bool) -> (Counted<Collector>, Arc<Mutex<Vec<SpanData>>>) {
        let collector = Collector {
            down,
            ..Collector::default()
        };
        let received = Arc::clone(&collector.received);
        let counted = Counted {
            inner: collector,
            failing: AtomicBool::new(false),
            queue: Arc::new(Queue {
                capacity: 8,
                in_flight: AtomicUsize::new(0),
                dropped: counter(),
            }),
        };
        (counted, received)
    }

    /// A collector that hangs: every export waits until `release` is
    /// dropped; it counts the spans it is sent.
    #[derive(Debug)]
    struct Hanging {
        release: Mutex<mpsc::Receiver<()>>,
        exported: Arc<AtomicUsize>,
    }

    impl SpanExporter for Hanging {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            // Blocks the SDK's export thread, as a hung connection would.
            let _ = self
                .release
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv();
            self.exported.fetch_add(batch.len(), Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn spans_that_find_the_queue_full_are_counted_as_dropped() {
        const CAPACITY: usize = 4;
        const ENDED: usize = 10;
        let (release, hung) = mpsc::channel();
        let exported = Arc::new(AtomicUsize::new(0));
        let exporter = Hanging {
            release: Mutex::new(hung),
            exported: Arc::clone(&exported),
        };
        let dropped = counter();
        let config = BatchConfigBuilder::default()
            .with_max_export_batch_size(CAPACITY)
            .with_scheduled_delay(Duration::from_millis(10));
        let processor = Bounded::new(exporter, config, CAPACITY, dropped);
        for _ in 0..ENDED {
            processor.on_end(span("db.query", Vec::new()));
        }
        // The first batch hangs in export: the queue holds no more than
        // its capacity, and the rest are dropped and counted.
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            u64::try_from(ENDED - CAPACITY).unwrap()
        );

        // The collector answers: what was held is exported, and there is
        // room again.
        drop(release);
        assert!(processor.force_flush().is_ok());
        assert_eq!(exported.load(Ordering::Relaxed), CAPACITY);
        processor.on_end(span("db.query", Vec::new()));
        assert!(processor.force_flush().is_ok());
        assert_eq!(exported.load(Ordering::Relaxed), CAPACITY + 1);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            u64::try_from(ENDED - CAPACITY).unwrap()
        );
        assert!(processor.shutdown().is_ok());
    }

    /// The string literals given as a target in `text`: `target = "…"`
    /// (`#[instrument]`, which takes no constant) and `target: "…"`.
    fn target_literals(text: &str) -> Vec<(char, String)> {
        let mut found = Vec::new();
        for (at, _) in text.match_indices("target") {
            let rest = text[at + "target".len()..].trim_start();
            let Some(separator) = rest.chars().next().filter(|c| matches!(c, '=' | ':')) else {
                continue;
            };
            let Some(literal) = rest[1..].trim_start().strip_prefix('"') else {
                continue;
            };
            if let Some((value, _)) = literal.split_once('"') {
                found.push((separator, value.to_owned()));
            }
        }
        found
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `#[instrument]` takes the target as a literal, not [`TARGET`]: every
    /// such literal in `src/` must say the same, or its spans would reach
    /// the log and never the traces. Elsewhere the constant is used.
    #[test]
    fn every_trace_target_literal_is_the_trace_target() {
        let mut files = Vec::new();
        rust_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut instrumented = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            // Code only: prose may quote anything.
            let code: Vec<&str> = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect();
            for (separator, value) in target_literals(&code.join("\n")) {
                if separator == '=' {
                    assert_eq!(value, TARGET, "in {}", file.display());
                    instrumented += 1;
                } else {
                    assert!(
                        !value.starts_with("auth_service"),
                        "{value} in {}: use traces::TARGET",
                        file.display()
                    );
                }
            }
        }
        assert!(instrumented > 0, "no #[instrument(target = …)] found");
    }

    #[test]
    fn target_literals_are_found_however_spaced() {
        // Escaped, so the scan of this file does not find them.
        let text = "#[instrument(target=\"a\", name = \"b\")] \
                    x!(target : \"c\", \"d\"); let target = f(\"e\");";
        assert_eq!(
            target_literals(text),
            [('=', "a".to_owned()), (':', "c".to_owned())]
        );
    }

    #[tokio::test]
    async fn the_call_span_is_named_after_its_method_and_is_the_server_side() {
        let (exporter, received) = counted(false);
        let call = span(
            "call",
            vec![
                KeyValue::new("method", "/auth.v1.AuthService/Register"),
                KeyValue::new(RPC_SERVICE, "auth.v1.AuthService"),
                KeyValue::new(RPC_METHOD, "Register"),
            ],
        );
        let query = span("db.query", Vec::new());
        // A path no service answers: no rpc.service, rpc.method.
        let probe = span(
            "call",
            vec![KeyValue::new("method", "/wp-admin/setup-config.php")],
        );
        assert!(exporter.export(vec![call, query, probe]).await.is_ok());
        let received = received.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(received[0].name, "auth.v1.AuthService/Register");
        assert_eq!(received[0].span_kind, SpanKind::Server);
        assert_eq!(received[1].name, "db.query");
        assert_eq!(received[1].span_kind, SpanKind::Internal);
        assert_eq!(received[2].name, UNKNOWN_CALL);
        assert_eq!(received[2].span_kind, SpanKind::Server);
    }

    #[tokio::test]
    async fn the_spans_of_a_failed_export_are_counted_as_dropped() {
        let (exporter, _) = counted(true);
        let batch = vec![
            span("db.query", Vec::new()),
            span("password.hash", Vec::new()),
        ];
        assert!(exporter.export(batch).await.is_err());
        assert!(
            exporter
                .export(vec![span("call", Vec::new())])
                .await
                .is_err()
        );
        assert_eq!(exporter.queue.dropped.load(Ordering::Relaxed), 3);
    }
}
