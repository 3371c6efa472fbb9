//! Logs, metrics ([`metrics`]) and traces ([`traces`]). Here: the logging
//! set-up — tracing to stderr, filtered by `RUST_LOG` (default `info`), as
//! text or one JSON object per line, through background writer threads —
//! and the audit records.

mod format;
mod log_writer;
pub mod metrics;
pub mod traces;

use std::{cell::Cell, io::IsTerminal, sync::OnceLock};

use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::format::JsonFields,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use log_writer::{LogWriter, LogWriterGuard};

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

/// Keeps the log writer's thread alive; dropping it writes out what is
/// buffered. Hold it until the process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: LogWriterGuard,
}

static WRITER: OnceLock<LogWriter> = OnceLock::new();

/// Installs the global subscriber; with `traces`, spans are exported too.
///
/// Records are formatted on the thread that makes them and appended to a
/// buffer that a thread of its own writes to stderr every few
/// milliseconds ([`log_writer`]): a call never waits on stderr. When
/// stderr falls behind, ordinary records are dropped, counted by
/// [`log_records_dropped`]; audit records never are. A second call
/// (tests), or a writer thread that cannot start, installs nothing and
/// returns `None`.
pub fn init(format: Format, traces: Option<&traces::Traces>) -> Option<LogGuard> {
    let (writer, guard) = LogWriter::to_stderr().ok()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A filter of the log's own (not the whole subscriber's), so the traces
    // can see DEBUG spans the log does not; and the trace-only spans never
    // reach the log, whatever RUST_LOG says.
    // The hint keeps RUST_LOG's level as the global maximum, so disabled
    // records still cost only a level comparison.
    let not_traces =
        filter_fn(|meta| meta.target() != traces::TARGET).with_max_level_hint(LevelFilter::TRACE);
    let filter = filter.and(not_traces);
    let log = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    let log = match format {
        Format::Text => log
            .with_ansi(colours_wanted())
            .event_format(format::Text::default())
            .boxed(),
        Format::Json => log
            .fmt_fields(JsonFields::new())
            .event_format(format::Json::default())
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
    let _ = WRITER.set(writer);
    Some(LogGuard { _writer: guard })
}

/// Ordinary log records dropped since start because stderr did not keep
/// up (never audit records).
pub fn log_records_dropped() -> u64 {
    WRITER.get().map_or(0, LogWriter::dropped)
}

/// Colours only for a person at a terminal: never into a file or a pipe,
/// and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

tokio::task_local! {
    /// Who called, for the call's log line: a slot the call log opens
    /// around each call ([`with_call_user`]).
    static CALLER: Cell<Caller>;
}

/// Who made a call, as far as the call's log line tells.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Caller {
    #[default]
    Unknown,
    /// A user's token: the user id.
    User(i64),
    /// A service token: its `client_id` (the account's name). Boxed only
    /// for service calls; a user's call allocates nothing.
    Service(Box<str>),
}

/// Runs one call's future with a slot for its caller, which
/// [`record_user`] or [`record_service`] fills in and [`call_user`] reads,
/// inside `future`.
pub fn with_call_user<F: Future>(future: F) -> impl Future<Output = F::Output> {
    CALLER.scope(Cell::new(Caller::Unknown), future)
}

/// The caller recorded for the call being served (taken: the call log
/// reads it once, at the end).
pub fn call_user() -> Caller {
    CALLER.try_with(Cell::take).unwrap_or_default()
}

/// Records the caller's user id, wherever it becomes known, for the call's
/// log line, and on the call's span (traces, and `RUST_LOG=debug`).
pub fn record_user(user_id: i64) {
    let _ = CALLER.try_with(|slot| slot.set(Caller::User(user_id)));
    tracing::Span::current().record("user_id", user_id);
}

/// Records the calling service account's name (a service token's
/// `client_id`), as [`record_user`] records a user id.
pub fn record_service(client_id: &str) {
    let _ = CALLER.try_with(|slot| slot.set(Caller::Service(client_id.into())));
    tracing::Span::current().record("client_id", client_id);
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
