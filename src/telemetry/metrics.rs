//! Metrics for `GET /metrics` (Prometheus text format, or OpenMetrics when
//! asked for), with the `prometheus-client` crate.
//!
//! One [`Metrics`] per application (the integration tests run several in
//! one process), made at wiring and handed to what records: the call log,
//! [`crate::accounts`], the hasher and the caches. They record through small
//! typed methods and handles taken once ([`RpcMetrics`], [`CacheMetrics`],
//! [`HashingMetrics`]), never with transport types. What is read rather
//! than counted (the hashing queue, the database pool) is sampled at scrape
//! time from sources set at wiring. Process-wide: the `process_*` metrics,
//! database acquire errors, and the log records and trace spans dropped
//! (read from [`super::log_records_dropped`] and
//! [`super::traces::spans_dropped`]).
//!
//! A call's cost: a hash lookup of its path, an `Arc` clone, one counter
//! increment and one histogram observation (a short mutex per method).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    },
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

/// Latency buckets in seconds: from 0.1 ms (a cached GetMe) to 5 s (a
/// hash queued behind a flood).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The canonical names of the gRPC status codes, by number: the `code`
/// label. Anything else is `UNKNOWN`.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CODE_CANCELLED: usize = 1;

/// The canonical name of gRPC status `code` (`UNAUTHENTICATED`), as
/// grpcurl and the gRPC docs print it; `UNKNOWN` for a number no code has.
pub fn grpc_code_name(code: usize) -> &'static str {
    GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN")
}
const CODE_UNKNOWN: usize = 2;

/// The `method` label of a path no service answers (one label, however
/// many paths are probed).
pub const UNKNOWN_METHOD: &str = "unknown";

/// Label values that are a fixed set: written from a `&'static str`.
macro_rules! label_values {
    ($type:ident { $($variant:ident => $value:literal),+ $(,)? }) => {
        impl $type {
            const ALL: &[Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }
        }

        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

/// How a login ended: the `outcome` label of `auth_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    Ok,
    /// Unknown user or wrong password.
    BadCredentials,
    /// The right password of an inactive user.
    Inactive,
    /// Refused by the login throttle (too many failures).
    Throttled,
    /// Shed by the hashing queue (full, or the wait timed out).
    Shed,
    /// A database or internal failure.
    Error,
}

label_values!(LoginOutcome {
    Ok => "ok",
    BadCredentials => "bad_credentials",
    Inactive => "inactive",
    Throttled => "throttled",
    Shed => "shed",
    Error => "error",
});

/// What a service token grant was authenticated with: the `credential`
/// label of `auth_service_token_grants_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantCredential {
    Secret,
    Assertion,
}

label_values!(GrantCredential {
    Secret => "secret",
    Assertion => "assertion",
});

/// How a service token grant ended: the `outcome` label of
/// `auth_service_token_grants_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantOutcome {
    Ok,
    /// Unknown client, wrong or removed secret or key, bad assertion.
    BadCredentials,
    /// The right credential of an inactive account.
    Inactive,
    /// An assertion whose `jti` was used before.
    Replayed,
    /// A scope the account may not have.
    BadScope,
    /// Refused by the throttle (too many failures for the client).
    Throttled,
    /// A database or internal failure.
    Error,
}

label_values!(GrantOutcome {
    Ok => "ok",
    BadCredentials => "bad_credentials",
    Inactive => "inactive",
    Replayed => "replayed",
    BadScope => "bad_scope",
    Throttled => "throttled",
    Error => "error",
});

/// Why every token of a user was revoked: the `reason` label of
/// `auth_revocations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// ChangePassword or a password reset.
    PasswordChanged,
    /// LogoutAll, or an administrator deactivating the user.
    TokensRevoked,
    /// A rotated-out refresh token presented again: the user's refresh
    /// tokens are revoked.
    RefreshTokenReuse,
}

label_values!(Revocation {
    PasswordChanged => "password_changed",
    TokensRevoked => "tokens_revoked",
    RefreshTokenReuse => "refresh_token_reuse",
});

/// The caches in front of the database: the `cache` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheName {
    /// User profiles by id (storage's `UserProfiles`).
    Users,
    /// Refresh tokens known not to be blacklisted (`RefreshTokens`).
    RefreshTokens,
    /// Service accounts' credentials by name and by credential id
    /// (`ServiceAccounts`).
    ServiceAccounts,
}

label_values!(CacheName {
    Users => "users",
    RefreshTokens => "refresh_tokens",
    ServiceAccounts => "service_accounts",
});

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: LoginOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrantLabels {
    credential: GrantCredential,
    outcome: GrantOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Revocation,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    cache: CacheName,
}

/// A method's name, shared: cloning a label set costs a reference count,
/// not a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MethodName(Arc<str>);

impl EncodeLabelValue for MethodName {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: MethodName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    method: MethodName,
    code: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics of one application; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_durations: HistogramFamily<MethodLabels>,
    logins: Family<OutcomeLabels, Counter>,
    service_grants: Family<GrantLabels, Counter>,
    registrations: Counter,
    refreshes: Counter,
    reuse_detections: Counter,
    revocations: Family<ReasonLabels, Counter>,
    hashing: HashingMetrics,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    sampled: Arc<Sampled>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, the counters with fixed labels at zero (so
    /// a dashboard sees them before the first event).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        ProcessCollector::register(&mut registry);
        let auth = registry.sub_registry_with_prefix("auth");

        let calls = Family::<CallLabels, Counter>::default();
        auth.register(
            "grpc_calls",
            "gRPC calls answered, by method and status code",
            calls.clone(),
        );
        let call_durations: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(latency_histogram);
        auth.register_with_unit(
            "grpc_call_duration",
            "Time from a call's arrival to its response headers, by method",
            Unit::Seconds,
            call_durations.clone(),
        );

        let logins = Family::<OutcomeLabels, Counter>::default();
        for &outcome in LoginOutcome::ALL {
            logins.get_or_create_owned(&OutcomeLabels { outcome });
        }
        auth.register("logins", "Logins, by outcome", logins.clone());
        let service_grants = Family::<GrantLabels, Counter>::default();
        for &credential in GrantCredential::ALL {
            for &outcome in GrantOutcome::ALL {
                service_grants.get_or_create_owned(&GrantLabels {
                    credential,
                    outcome,
                });
            }
        }
        auth.register(
            "service_token_grants",
            "ObtainServiceToken calls, by credential and outcome",
            service_grants.clone(),
        );
        let registrations = Counter::default();
        auth.register(
            "registrations",
            "Accounts created by the public Register call",
            registrations.clone(),
        );
        let refreshes = Counter::default();
        auth.register(
            "token_refreshes",
            "Refresh tokens exchanged for new tokens",
            refreshes.clone(),
        );
        let reuse_detections = Counter::default();
        auth.register(
            "refresh_token_reuse_detections",
            "Rotated-out refresh tokens presented again (every refresh token of the user revoked)",
            reuse_detections.clone(),
        );
        let revocations = Family::<ReasonLabels, Counter>::default();
        for &reason in Revocation::ALL {
            revocations.get_or_create_owned(&ReasonLabels { reason });
        }
        auth.register(
            "revocations",
            "Revocations of every token of a user, by reason",
            revocations.clone(),
        );

        let hashing = HashingMetrics::default();
        auth.register(
            "password_hash_waits",
            "Password hashes that had to wait for a permit",
            hashing.waits.clone(),
        );
        auth.register_with_unit(
            "password_hash_queue_wait",
            "Time a password hash waited for a permit (zero when one was free)",
            Unit::Seconds,
            hashing.queue_wait.clone(),
        );

        let cache_hits = Family::<CacheLabels, Counter>::default();
        let cache_misses = Family::<CacheLabels, Counter>::default();
        for &cache in CacheName::ALL {
            cache_hits.get_or_create_owned(&CacheLabels { cache });
            cache_misses.get_or_create_owned(&CacheLabels { cache });
        }
        auth.register(
            "cache_hits",
            "Reads answered from a cache, by cache",
            cache_hits.clone(),
        );
        auth.register(
            "cache_misses",
            "Reads a cache passed on to the database, by cache",
            cache_misses.clone(),
        );

        let sampled = Arc::new(Sampled::default());
        auth.register_collector(Box::new(Arc::clone(&sampled)));

        Self {
            inner: Arc::new(Inner {
                registry,
                calls,
                call_durations,
                logins,
                service_grants,
                registrations,
                refreshes,
                reuse_detections,
                revocations,
                hashing,
                cache_hits,
                cache_misses,
                sampled,
            }),
        }
    }

    /// The registry in the Prometheus text format (0.0.4).
    ///
    /// # Errors
    /// Only if a metric cannot be written (not expected: it writes to a `String`).
    pub fn encode_prometheus(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }

    /// The registry in the OpenMetrics text format, `# EOF` included.
    ///
    /// # Errors
    /// As [`Metrics::encode_prometheus`].
    pub fn encode_openmetrics(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }

    /// Handles for the gRPC methods at `paths` (`/package.Service/Method`),
    /// made once so a call only looks its path up; any other path counts
    /// as [`UNKNOWN_METHOD`].
    pub fn rpc(&self, paths: impl IntoIterator<Item = String>) -> RpcMetrics {
        let method = |name: &str| {
            Arc::new(MethodMetrics {
                label: MethodName(name.into()),
                calls: self.inner.calls.clone(),
                durations: self.inner.call_durations.clone(),
                by_code: Default::default(),
                duration: OnceLock::new(),
            })
        };
        let by_path = paths
            .into_iter()
            .map(|path| {
                let handles = method(&path);
                (path.into_boxed_str(), handles)
            })
            .collect();
        RpcMetrics {
            inner: Arc::new(RpcInner {
                by_path,
                unknown: method(UNKNOWN_METHOD),
            }),
        }
    }

    /// A login ended with `outcome` (the one answer a caller gets for
    /// several of them is told apart here, as in the audit log).
    pub fn login(&self, outcome: LoginOutcome) {
        self.inner
            .logins
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A service token grant with `credential` ended with `outcome`.
    pub fn service_grant(&self, credential: GrantCredential, outcome: GrantOutcome) {
        self.inner
            .service_grants
            .get_or_create(&GrantLabels {
                credential,
                outcome,
            })
            .inc();
    }

    /// A public sign-up created an account.
    pub fn registration(&self) {
        self.inner.registrations.inc();
    }

    /// A refresh token was exchanged for new tokens.
    pub fn refresh(&self) {
        self.inner.refreshes.inc();
    }

    /// A rotated-out refresh token came back (a stolen token family).
    pub fn reuse_detected(&self) {
        self.inner.reuse_detections.inc();
    }

    /// Every token of a user was revoked, for `reason`.
    pub fn revocation(&self, reason: Revocation) {
        self.inner
            .revocations
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// What the hasher records (waits, time in queue).
    pub fn hashing(&self) -> HashingMetrics {
        self.inner.hashing.clone()
    }

    /// What a cache records (hits, misses), labelled `name`.
    pub fn cache(&self, name: CacheName) -> CacheMetrics {
        let labels = CacheLabels { cache: name };
        CacheMetrics {
            hits: self.inner.cache_hits.get_or_create(&labels).clone(),
            misses: self.inner.cache_misses.get_or_create(&labels).clone(),
        }
    }

    /// Where the hashing queue's gauges are read at each scrape; a source
    /// that returns `None` (its hasher is gone) is left out. The first
    /// source set stays.
    pub fn sample_hashing(
        &self,
        source: impl Fn() -> Option<HashingQueue> + Send + Sync + 'static,
    ) {
        let _ = self.inner.sampled.hashing.set(Box::new(source));
    }

    /// Where the database pool's gauges are read at each scrape.
    pub fn sample_db_pool(&self, source: impl Fn() -> Option<PoolState> + Send + Sync + 'static) {
        let _ = self.inner.sampled.db_pool.set(Box::new(source));
    }
}

/// The handles of every gRPC method, by path; cheap to clone.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    inner: Arc<RpcInner>,
}

#[derive(Debug)]
struct RpcInner {
    by_path: HashMap<Box<str>, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

impl RpcMetrics {
    /// A call to `path` arrived at `started`: recorded when
    /// [`CallRecord::finish`] is called, or as CANCELLED if the record is
    /// dropped first (the client went away and the call's future with it).
    pub fn start(&self, path: &str, started: Instant) -> CallRecord {
        let (method, unknown_path) = match self.inner.by_path.get(path) {
            Some(method) => (method, None),
            None => (&self.inner.unknown, Some(path.into())),
        };
        CallRecord {
            method: Some(Arc::clone(method)),
            unknown_path,
            started,
        }
    }
}

/// One method's series, made on its first call (a method never called
/// shows no series).
#[derive(Debug)]
struct MethodMetrics {
    label: MethodName,
    calls: Family<CallLabels, Counter>,
    durations: HistogramFamily<MethodLabels>,
    by_code: [OnceLock<Counter>; GRPC_CODES.len()],
    duration: OnceLock<Histogram>,
}

impl MethodMetrics {
    fn record(&self, code: usize, elapsed: Duration) {
        let code = if code < GRPC_CODES.len() {
            code
        } else {
            CODE_UNKNOWN
        };
        self.by_code[code]
            .get_or_init(|| {
                self.calls.get_or_create_owned(&CallLabels {
                    method: self.label.clone(),
                    code: GRPC_CODES[code],
                })
            })
            .inc();
        self.duration
            .get_or_init(|| {
                self.durations.get_or_create_owned(&MethodLabels {
                    method: self.label.clone(),
                })
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// A call in progress ([`RpcMetrics::start`]).
#[derive(Debug)]
pub struct CallRecord {
    method: Option<Arc<MethodMetrics>>,
    /// The path a client called when it is no method served here.
    unknown_path: Option<Box<str>>,
    started: Instant,
}

impl CallRecord {
    /// Whether the call's path is a method served here, rather than one
    /// counted as [`UNKNOWN_METHOD`]: what else may be named after the path
    /// (the call's span in a trace) without taking any path a client sends.
    pub fn known(&self) -> bool {
        self.unknown_path.is_none()
    }

    /// The method called: its path, for the log line (where, unlike in a
    /// label, the path of an unknown method is worth reading).
    pub fn method(&self) -> &str {
        match (&self.unknown_path, &self.method) {
            (Some(path), _) => path,
            (None, Some(method)) => &method.label.0,
            (None, None) => UNKNOWN_METHOD,
        }
    }

    /// The call answered with gRPC status `code` (its number), after `elapsed`.
    pub fn finish(mut self, code: i32, elapsed: Duration) {
        if let Some(method) = self.method.take() {
            method.record(usize::try_from(code).unwrap_or(CODE_UNKNOWN), elapsed);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if let Some(method) = self.method.take() {
            method.record(CODE_CANCELLED, self.started.elapsed());
        }
    }
}

/// What the password hasher records; detached (counted nowhere) by default.
#[derive(Debug, Clone)]
pub struct HashingMetrics {
    waits: Counter,
    queue_wait: Histogram,
}

impl Default for HashingMetrics {
    fn default() -> Self {
        Self {
            waits: Counter::default(),
            queue_wait: latency_histogram(),
        }
    }
}

impl HashingMetrics {
    /// A hash got its permit after `waited` (zero: one was free).
    pub fn permit_acquired(&self, waited: Option<Duration>) {
        match waited {
            Some(waited) => {
                self.waits.inc();
                self.queue_wait.observe(waited.as_secs_f64());
            }
            None => self.queue_wait.observe(0.0),
        }
    }
}

/// The hashing queue now, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct HashingQueue {
    /// How many hashes may run at once.
    pub permits: u64,
    /// How many run now.
    pub in_use: u64,
    /// Calls in line for a permit (including logins waiting for their
    /// throttle turn, which hold a place in line).
    pub waiting: u64,
}

/// The database connection pool now, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    /// Connections open, idle or not.
    pub size: u64,
    /// Of those, idle.
    pub idle: u64,
    /// The most the pool opens.
    pub max: u64,
}

/// What a cache records; detached (counted nowhere) by default.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
}

impl CacheMetrics {
    /// A read answered from memory.
    pub fn hit(&self) {
        self.hits.inc();
    }

    /// A read passed on to the database.
    pub fn miss(&self) {
        self.misses.inc();
    }

    /// Reads of many keys at once: `hits` answered from memory, `misses`
    /// passed on (one update each, not one a key).
    pub fn many(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.hits.inc_by(hits);
        }
        if misses > 0 {
            self.misses.inc_by(misses);
        }
    }
}

/// Database connections that could not be had: the pool timed out or was
/// closed, or connecting failed. Counted where storage classifies driver
/// errors, which knows no application, hence process-wide.
static DB_CONNECTION_ERRORS: AtomicU64 = AtomicU64::new(0);

/// A connection could not be acquired (see [`DB_CONNECTION_ERRORS`]).
pub fn db_connection_failed() {
    DB_CONNECTION_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// Read at each scrape: gauges of the hashing queue and the pool, and
/// counters owned by others.
#[derive(Default)]
struct Sampled {
    hashing: OnceLock<Box<dyn Fn() -> Option<HashingQueue> + Send + Sync>>,
    db_pool: OnceLock<Box<dyn Fn() -> Option<PoolState> + Send + Sync>>,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled").finish_non_exhaustive()
    }
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        if let Some(queue) = self.hashing.get().and_then(|source| source()) {
            gauge(
                e,
                "password_hash_permits",
                "Password hashes that may run at once",
                queue.permits,
            )?;
            gauge(
                e,
                "password_hash_permits_in_use",
                "Password hashes running now",
                queue.in_use,
            )?;
            gauge(
                e,
                "password_hash_queue_depth",
                "Calls waiting in line for a password hash permit",
                queue.waiting,
            )?;
        }
        if let Some(pool) = self.db_pool.get().and_then(|source| source()) {
            gauge(
                e,
                "db_pool_connections",
                "Database connections open (idle or in use)",
                pool.size,
            )?;
            gauge(
                e,
                "db_pool_connections_idle",
                "Database connections open and idle",
                pool.idle,
            )?;
            gauge(
                e,
                "db_pool_connections_in_use",
                "Database connections in use",
                pool.size.saturating_sub(pool.idle),
            )?;
            gauge(
                e,
                "db_pool_max_connections",
                "The most connections the pool opens",
                pool.max,
            )?;
        }
        counter(
            e,
            "db_connection_errors",
            "Database calls that found no usable connection (pool timed out or closed, connect or I/O failed); process-wide",
            DB_CONNECTION_ERRORS.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "log_records_dropped",
            "Log records dropped because stderr could not keep up (never audit records); process-wide",
            super::log_records_dropped(),
        )?;
        counter(
            e,
            "trace_spans_dropped",
            "Trace spans whose export failed; process-wide",
            super::traces::spans_dropped(),
        )
    }
}

/// The standard `process_*` metrics, read from `/proc` at each scrape
/// (process-wide: every application in a process shows the same).
#[derive(Debug)]
struct ProcessCollector {
    /// When the process started, in seconds since the epoch.
    start_time: Option<f64>,
}

impl ProcessCollector {
    fn register(registry: &mut Registry) {
        let collector = Self {
            start_time: process_start_time(),
        };
        registry
            .sub_registry_with_prefix("process")
            .register_collector(Box::new(collector));
    }
}

/// Boot time plus the process's start in clock ticks after boot.
fn process_start_time() -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let boot = procfs::boot_time_secs().ok()?;
        Some(boot as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64)
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        if let Some(start) = self.start_time {
            let metric = e.encode_descriptor(
                "start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(start).encode(metric)?;
        }
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let metric = e.encode_descriptor(
                "cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new((stat.utime + stat.stime) as f64 / ticks).encode(metric)?;
            let metric = e.encode_descriptor(
                "resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            ConstGauge::new(stat.rss.saturating_mul(procfs::page_size())).encode(metric)?;
            let metric = e.encode_descriptor(
                "virtual_memory",
                "Virtual memory size",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            ConstGauge::new(stat.vsize).encode(metric)?;
            gauge(
                e,
                "threads",
                "OS threads of the process",
                u64::try_from(stat.num_threads).unwrap_or(0),
            )?;
        }
        if let Ok(fds) = me.fd_count() {
            gauge(e, "open_fds", "Open file descriptors", fds as u64)?;
        }
        if let Ok(limits) = me.limits() {
            use procfs::process::LimitValue;
            if let LimitValue::Value(max) = limits.max_open_files.soft_limit {
                gauge(
                    e,
                    "max_fds",
                    "The most file descriptors the process may open",
                    max,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn a_call_is_counted_under_its_method_and_code() {
        let metrics = Metrics::new();
        let rpc = metrics.rpc(["/auth.v1.UserService/GetMe".to_owned()]);
        let call = rpc.start("/auth.v1.UserService/GetMe", Instant::now());
        assert!(call.known());
        call.finish(16, Duration::from_millis(3));
        let unknown = rpc.start("/nope/Nothing", Instant::now());
        assert!(!unknown.known());
        unknown.finish(12, Duration::ZERO);
        rpc.start("/auth.v1.UserService/GetMe", Instant::now())
            .finish(99, Duration::ZERO);
        drop(rpc.start("/auth.v1.UserService/GetMe", Instant::now()));
        let text = metrics.encode_prometheus().unwrap();
        let get_me = "method=\"/auth.v1.UserService/GetMe\"";
        for (code, count) in [
            ("UNAUTHENTICATED", 1.0),
            ("UNKNOWN", 1.0),
            ("CANCELLED", 1.0),
        ] {
            let series = format!("auth_grpc_calls_total{{{get_me},code=\"{code}\"}}");
            assert_eq!(sample(&text, &series), Some(count), "{series} in\n{text}");
        }
        assert_eq!(
            sample(
                &text,
                "auth_grpc_calls_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
            ),
            Some(1.0),
            "{text}"
        );
        let count = format!("auth_grpc_call_duration_seconds_count{{{get_me}}}");
        assert_eq!(sample(&text, &count), Some(3.0), "{text}");
        let bucket = format!("auth_grpc_call_duration_seconds_bucket{{{get_me},le=\"0.0025\"}}");
        assert_eq!(sample(&text, &bucket), Some(2.0), "{text}");
    }

    #[test]
    fn fixed_labels_start_at_zero_and_process_metrics_are_read_at_scrape() {
        let metrics = Metrics::new();
        metrics.login(LoginOutcome::Throttled);
        let text = metrics.encode_prometheus().unwrap();
        assert_eq!(
            sample(&text, "auth_logins_total{outcome=\"ok\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "auth_logins_total{outcome=\"throttled\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "auth_log_records_dropped_total"), Some(0.0));
        assert!(
            sample(&text, "auth_trace_spans_dropped_total").is_some(),
            "{text}"
        );
        assert!(
            sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
            "{text}"
        );
        let open = metrics.encode_openmetrics().unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
