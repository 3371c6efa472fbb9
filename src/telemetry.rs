//! Logging set-up: tracing to stderr, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Records the caller's user id on the current call's log line (the span
/// the call log opened), wherever the id becomes known.
pub fn record_user(user_id: i64) {
    tracing::Span::current().record("user_id", user_id);
}
