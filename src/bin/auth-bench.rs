//! `auth-bench`: a closed-loop gRPC load generator for auth-service.
//!
//! `--concurrency` workers each keep exactly one call in flight (a new call
//! starts when the previous one answers), spread over `--connections`
//! HTTP/2 connections. Closed loop means the server's speed sets the rate:
//! the figure is the throughput the service sustains at that many
//! outstanding calls, and latency includes any queueing inside the server.
//!
//! Without `--addr` it starts the release server itself on a fresh SQLite
//! database, so a run is reproducible and also yields start-up time and
//! memory. Only loopback targets are accepted.
//!
//! ```sh
//! cargo build --release --bins
//! target/release/auth-bench --scenario get-me --duration 10s
//! target/release/auth-bench --scenario login --concurrency 8 --json
//! ```

#[path = "auth_bench/connection.rs"]
mod connection;
#[path = "auth_bench/load.rs"]
mod load;
#[path = "auth_bench/seed.rs"]
mod seed;
#[path = "auth_bench/server.rs"]
mod server;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::{
    connection::Connection,
    load::{Outcome, Scenario},
    server::{Memory, ServerProcess},
};

const MAX_RUN: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Parser)]
#[command(
    name = "auth-bench",
    version,
    about = "Closed-loop gRPC load generator for auth-service"
)]
struct Cli {
    /// What every call does.
    #[arg(long, value_enum)]
    scenario: Scenario,

    /// Calls in flight at once (one per worker).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,

    /// HTTP/2 connections the workers are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    connections: u32,

    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Load before measuring: connections, caches and pools settle; not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// ListUsers page size.
    #[arg(long, default_value_t = 100)]
    page_size: i32,

    /// Users registered (and logged in) before the run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,

    /// A running server to target (loopback only). When absent, the release
    /// server is started for the run and stopped afterwards.
    #[arg(long)]
    addr: Option<String>,

    /// The server binary to start. Default: `auth-service` beside this executable.
    #[arg(long, conflicts_with = "addr")]
    server_bin: Option<PathBuf>,

    /// Database for the started server. Default: a fresh SQLite file in a temporary directory.
    #[arg(long, conflicts_with = "addr")]
    database_url: Option<String>,

    /// Before starting the server, insert this many users straight into its
    /// database (one shared password hash), e.g. 1000000 for list-users at scale.
    #[arg(long, default_value_t = 0, conflicts_with = "addr")]
    seed_users: u64,

    /// Extra environment for the started server, e.g. AUTH_ROTATE_REFRESH_TOKENS=true.
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_key_value,
          conflicts_with = "addr")]
    server_env: Vec<(String, String)>,

    /// Also print the results as one JSON object on stdout (the readable
    /// report then goes to stderr).
    #[arg(long)]
    json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One line with the causes, as auth-service prints its errors.
        Err(e) => {
            eprintln!("auth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A typo must not turn into an hour-long load on a shared machine.
    anyhow::ensure!(
        !cli.duration.is_zero() && cli.duration + cli.warmup <= MAX_RUN,
        "--duration must be above zero and --warmup + --duration at most {MAX_RUN:?}"
    );
    let mut server = None;
    let addr = match &cli.addr {
        Some(addr) => loopback(addr)?,
        None => {
            let bin = match &cli.server_bin {
                Some(bin) => bin.clone(),
                None => std::env::current_exe()?.with_file_name("auth-service"),
            };
            let started = ServerProcess::start(
                &bin,
                cli.database_url.as_deref(),
                &cli.server_env,
                cli.seed_users,
            )
            .await?;
            eprintln!(
                "auth-bench: started {} on {} (pid {}) in {:.0?}",
                bin.display(),
                started.addr,
                started.pid(),
                started.startup
            );
            let addr = started.addr;
            server = Some(started);
            addr
        }
    };

    // The server is stopped whatever happens in between.
    let result = bench(&cli, addr, server.as_ref()).await;
    let stopped = match server {
        Some(server) => server.stop().await,
        None => Ok(()),
    };
    let report = result?;
    stopped?;

    if cli.json {
        eprintln!("{}", report.text());
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    Ok(())
}

async fn bench(
    cli: &Cli,
    addr: SocketAddr,
    server: Option<&ServerProcess>,
) -> anyhow::Result<Report> {
    // Every clone of a Connection multiplexes onto that same HTTP/2 connection.
    let mut connections = Vec::new();
    for _ in 0..cli.connections {
        connections.push(Connection::open(addr).await?);
    }
    let idle = server.map(ServerProcess::memory).transpose()?;

    let options = load::Options {
        scenario: cli.scenario,
        concurrency: cli.concurrency as usize,
        users: cli.users as usize,
        page_size: cli.page_size,
    };
    let started = std::time::Instant::now();
    let prepared = load::prepare(&connections[0], &options).await?;
    let prepare_time = started.elapsed();
    let accounts = prepared.accounts();
    eprintln!(
        "auth-bench: prepared {accounts} users in {prepare_time:.1?}; {} for {:?} after {:?} of warm-up",
        cli.scenario.name(),
        cli.duration,
        cli.warmup
    );
    // Preparing hashes hundreds of passwords (19 MiB each at the defaults):
    // reset the peak so it reflects the scenario, not the preparation.
    let peak_reset = server.is_some_and(ServerProcess::reset_peak_memory);

    let outcome = load::run(&connections, &options, prepared, cli.warmup, cli.duration).await?;
    let after = server.map(ServerProcess::memory).transpose()?;
    drop(connections);

    Ok(Report {
        scenario: cli.scenario,
        addr,
        concurrency: cli.concurrency,
        connections: cli.connections,
        users: accounts,
        page_size: cli.page_size,
        warmup: cli.warmup,
        prepare_time,
        outcome,
        server: server.map(|s| ServerFigures {
            startup: s.startup,
            idle,
            after,
            peak_reset,
        }),
    })
}

/// The target, if it is on this machine: load is never sent elsewhere.
fn loopback(addr: &str) -> anyhow::Result<SocketAddr> {
    let resolved = if let Some(port) = addr.strip_prefix("localhost:") {
        SocketAddr::from(([127, 0, 0, 1], port.parse().context("bad port in --addr")?))
    } else {
        addr.parse().with_context(|| {
            format!("--addr must be HOST:PORT with a loopback IP or localhost, got {addr:?}")
        })?
    };
    anyhow::ensure!(
        resolved.ip().is_loopback(),
        "auth-bench only targets this machine (127.0.0.0/8, ::1, localhost), not {addr}"
    );
    Ok(resolved)
}

struct ServerFigures {
    startup: Duration,
    idle: Option<Memory>,
    after: Option<Memory>,
    peak_reset: bool,
}

struct Report {
    scenario: Scenario,
    addr: SocketAddr,
    concurrency: u32,
    connections: u32,
    /// Accounts prepared (none for `health` and `register`).
    users: usize,
    page_size: i32,
    warmup: Duration,
    prepare_time: Duration,
    outcome: Outcome,
    server: Option<ServerFigures>,
}

/// Microseconds as milliseconds, for reading.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    fn text(&self) -> String {
        let o = &self.outcome;
        let h = &o.latency_us;
        let mut lines = vec![
            format!(
                "scenario {}  target {}  concurrency {}  connections {}  users {}{}",
                self.scenario.name(),
                self.addr,
                self.concurrency,
                self.connections,
                self.users,
                if self.scenario == Scenario::ListUsers {
                    format!("  page_size {}", self.page_size)
                } else {
                    String::new()
                }
            ),
            format!(
                "measured   {:.2?} after {:?} warm-up ({:.1?} preparing)",
                o.elapsed, self.warmup, self.prepare_time
            ),
            format!(
                "throughput {:.1} OK calls/s  ({} OK of {} calls)",
                o.throughput(),
                o.ok(),
                o.total()
            ),
        ];
        if h.is_empty() {
            lines.push("latency    no OK call".to_owned());
        } else {
            lines.push(format!(
                "latency    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (OK calls)",
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            ));
        }
        let codes: Vec<String> = o
            .codes
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        lines.push(format!("codes      {}", codes.join("  ")));
        if let Some(s) = &self.server {
            let kib = |m: Option<&Memory>, f: fn(&Memory) -> u64| {
                m.map_or_else(
                    || "?".to_owned(),
                    |m| format!("{:.1} MiB", f(m) as f64 / 1024.0),
                )
            };
            lines.push(format!(
                "server     startup {:.0?}  RSS idle {}  RSS after {}  peak {} ({})",
                s.startup,
                kib(s.idle.as_ref(), |m| m.rss_kib),
                kib(s.after.as_ref(), |m| m.rss_kib),
                kib(s.after.as_ref(), |m| m.hwm_kib),
                if s.peak_reset {
                    "during warm-up + run"
                } else {
                    "since start, including preparation"
                }
            ));
        }
        lines.join("\n")
    }

    fn json(&self) -> serde_json::Value {
        let o = &self.outcome;
        let h = &o.latency_us;
        let latency = (!h.is_empty()).then(|| {
            serde_json::json!({
                "p50": ms(h.value_at_quantile(0.50)),
                "p90": ms(h.value_at_quantile(0.90)),
                "p99": ms(h.value_at_quantile(0.99)),
                "p999": ms(h.value_at_quantile(0.999)),
                "max": ms(h.max()),
                "mean": h.mean() / 1000.0,
            })
        });
        let server = self.server.as_ref().map(|s| {
            serde_json::json!({
                "startup_ms": s.startup.as_secs_f64() * 1000.0,
                "rss_idle_kib": s.idle.as_ref().map(|m| m.rss_kib),
                "rss_after_kib": s.after.as_ref().map(|m| m.rss_kib),
                "peak_rss_kib": s.after.as_ref().map(|m| m.hwm_kib),
                "peak_covers_preparation": !s.peak_reset,
            })
        });
        let codes: serde_json::Map<String, serde_json::Value> = o
            .codes
            .iter()
            .map(|(code, n)| ((*code).to_owned(), (*n).into()))
            .collect();
        serde_json::json!({
            "scenario": self.scenario.name(),
            "addr": self.addr.to_string(),
            "concurrency": self.concurrency,
            "connections": self.connections,
            "users": self.users,
            "page_size": self.page_size,
            "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": o.elapsed.as_secs_f64(),
            "prepare_s": self.prepare_time.as_secs_f64(),
            "calls": o.total(),
            "ok": o.ok(),
            "throughput_ok_per_s": o.throughput(),
            "latency_ms": latency,
            "codes": codes,
            "server": server,
        })
    }
}

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
}
