//! Logs, metrics ([`metrics`]) and traces ([`traces`]). Here: the logging
//! set-up — tracing to stderr, filtered by `RUST_LOG` (default `info`), as
//! text or one JSON object per line, through background writer threads —
//! and the audit records.

pub mod metrics;
pub mod traces;

use std::{
    io::{BufWriter, IsTerminal},
    sync::OnceLock,
};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::writer::MakeWriterExt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// How log records are written (`AUTH_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One human-readable line per record; ANSI colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: the record's fields at the top level, the
    /// enclosing span's (the call's method, user id and trace id) under
    /// `span`.
    Json,
}

/// Records waiting for the writer thread; past it, ordinary records are
/// dropped (and counted) rather than stalling calls on a slow stderr.
const QUEUED_RECORDS: usize = 64 * 1024;

/// Keeps the writer threads alive; dropping it writes out what is queued.
/// Hold it until the process exits.
#[must_use = "dropping the guard stops the log writers"]
pub struct LogGuard {
    _records: WorkerGuard,
    _audit: WorkerGuard,
}

static DROPPED_RECORDS: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber; with `traces`, spans are exported too.
///
/// Records are formatted on the thread that makes them and written by a
/// thread of their own, so a call never waits on stderr: under load the
/// writer gathers many lines into one write. Audit records have a writer
/// of their own that never drops: when its queue is full, the event waits.
/// Ordinary records are dropped instead, counted by
/// [`log_records_dropped`]. A second call (tests) installs nothing and
/// returns `None`.
pub fn init(format: Format, traces: Option<&traces::Traces>) -> Option<LogGuard> {
    let (records, records_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_RECORDS)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let (audit, audit_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("audit-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let dropped = records.error_counter();
    let writer = audit
        .with_filter(|meta| meta.target() == "audit")
        .or_else(records);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A filter of the log's own (not the whole subscriber's), so the traces
    // can see DEBUG spans the log does not; and the trace-only spans never
    // reach the log, whatever RUST_LOG says.
    // The hint keeps RUST_LOG's level as the global maximum, so disabled
    // records still cost only a level comparison.
    let not_traces =
        filter_fn(|meta| meta.target() != traces::TARGET).with_max_level_hint(LevelFilter::TRACE);
    let filter = filter.and(not_traces);
    let log = tracing_subscriber::fmt::layer().with_writer(writer);
    let log = match format {
        Format::Text => log.with_ansi(colours_wanted()).boxed(),
        Format::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(traces.map(traces::Traces::layer))
        .try_init()
        .ok()?;
    if traces.is_some() {
        traces::installed();
    }
    let _ = DROPPED_RECORDS.set(dropped);
    Some(LogGuard {
        _records: records_guard,
        _audit: audit_guard,
    })
}

/// Ordinary log records dropped since start because the writer could not
/// keep up (never audit records, which wait instead).
pub fn log_records_dropped() -> u64 {
    DROPPED_RECORDS
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Colours only for a person at a terminal: never into a file or a pipe,
/// and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Records the caller's user id on the current call's log line (the span
/// the call log opened), wherever the id becomes known.
pub fn record_user(user_id: i64) {
    tracing::Span::current().record("user_id", user_id);
}

/// A security event as a record of its own on target `audit`, always of
/// the same shape: `audit = true`, `event` (its name), `outcome`
/// (`success` or `failure`), `user_id` (the account concerned, an
/// `Option<i64>`: absent when unknown), `actor` (who acted: `self`,
/// `user <id>`, `operator`, `service`), then the event's own fields and
/// message. Never a password, hash, token or key among them.
///
/// ```ignore
/// audit!(INFO, "logout_all", "success", Some(id), "self", "every token of the user revoked");
/// ```
macro_rules! audit {
    ($level:ident, $event:expr, $outcome:expr, $user_id:expr, $actor:expr, $($rest:tt)+) => {
        ::tracing::event!(
            target: "audit",
            ::tracing::Level::$level,
            audit = true,
            event = $event,
            outcome = $outcome,
            user_id = $user_id,
            actor = %$actor,
            $($rest)+
        )
    };
}
pub(crate) use audit;
