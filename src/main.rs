use std::{process::ExitCode, time::Duration};

use clap::Parser;

use auth_service::{
    commands,
    config::{Cli, LogFormat},
    startup, telemetry,
};

/// How long tasks left running after the server stopped may take.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// jemalloc with background purging: memory freed after a burst (say
/// thousands of stalled streams) goes back to the system within seconds,
/// where glibc's malloc kept it in its arenas (issue 18).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are "errors" to clap; print them as they are.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!(
                "auth-service: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("auth-service: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Built inside the runtime, which its connection lives on; dropped
    // before it, flushing the spans still queued.
    let traces = match traces(&cli, &runtime) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("auth-service: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let log_guard = telemetry::init(
        match cli.settings.log.format {
            LogFormat::Text => telemetry::Format::Text,
            LogFormat::Json => telemetry::Format::Json,
        },
        traces.as_ref(),
    );
    let result = runtime.block_on(commands::run(cli));
    drop(traces);
    // Tasks still running (a login's throttle bookkeeping, say) finish
    // before the log writers stop, so their records are written too.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    // Every queued record (a warning of the flush above included) is
    // written before the last line below.
    drop(log_guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The trace export, when a collector is configured.
fn traces(
    cli: &Cli,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<telemetry::traces::Traces>> {
    let Some(endpoint) = cli.settings.traces.endpoint().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let _runtime = runtime.enter();
    let exporter = startup::otlp_exporter(&endpoint)?;
    Ok(Some(telemetry::traces::Traces::new(exporter)))
}
