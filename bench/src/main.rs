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
//! With `--rate` it is open loop instead, and with as many connections as
//! workers it is many clients each calling at its own pace: 5,000
//! connections each making one call a second is `--connections 5000
//! --concurrency 5000 --rate 5000`.
//!
//! ```sh
//! cargo build --release    # auth-service and auth-bench, both into target/release/
//! target/release/auth-bench --scenario get-me --duration 10s
//! target/release/auth-bench --scenario login --concurrency 8 --json
//! target/release/auth-bench --scenario get-me --connections 5000 --concurrency 5000 --rate 5000 --duration 60s
//! ```

mod argon2_bound;
mod connection;
mod load;
mod seed;
mod server;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::task::JoinSet;

use crate::{
    argon2_bound::Argon2Bound,
    connection::Connection,
    load::{Outcome, Scenario},
    server::{Memory, ServerProcess},
};

const MAX_RUN: Duration = Duration::from_secs(30 * 60);
/// Connections being opened at once: 5,000 open in a second or two, and
/// the server's accept backlog (1,024) is never the limit.
const OPENING_AT_ONCE: usize = 64;
/// Descriptors besides the connections (the runtime, the database, stdio).
const SPARE_FILES: u64 = 256;

#[derive(Debug, Parser)]
#[command(
    name = "auth-bench",
    version,
    about = "Closed-loop gRPC load generator for auth-service"
)]
struct Cli {
    /// What every call does. Several (comma-separated) run one after the
    /// other on the same server, and a summary compares their medians.
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    scenario: Vec<Scenario>,

    /// Times to run the list of scenarios, interleaved, for medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,

    /// A second load running during each measurement, on its own
    /// connections and not counted, e.g. `login` to see GetMe during a
    /// login flood.
    #[arg(long, value_enum)]
    alongside: Option<Scenario>,

    /// Calls in flight of the `--alongside` load.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    alongside_concurrency: u32,

    /// Makes the `--alongside` load open loop at this many calls a second.
    #[arg(long, requires = "alongside")]
    alongside_rate: Option<f64>,

    /// Calls in flight at once (one per worker).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    concurrency: u32,

    /// Open loop instead: start this many calls a second in all, on a fixed
    /// schedule over the workers (each worker one call every `concurrency ÷
    /// rate` seconds, so `--concurrency` bounds the calls in flight);
    /// latency counts from each call's scheduled start.
    #[arg(long)]
    rate: Option<f64>,

    /// HTTP/2 connections the workers are spread over (worker i on
    /// connection i mod connections): as many as `--concurrency` gives
    /// every worker a connection of its own, like that many clients.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    connections: u32,

    /// Client addresses the connections are spread over, 127.0.0.1 to
    /// 127.0.0.N (IPv4 loopback targets only): each has its own ephemeral
    /// ports, ~28,000 by default on Linux.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    client_addrs: u8,

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
    let result = raise_open_files_limit()
        .and_then(|_| tokio::runtime::Runtime::new().map_err(anyhow::Error::from))
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
    anyhow::ensure!(
        [cli.rate, cli.alongside_rate]
            .into_iter()
            .flatten()
            .all(|rate| rate.is_finite() && rate > 0.0),
        "--rate and --alongside-rate must be numbers of calls per second above zero"
    );
    let connections = u64::from(cli.connections) * if cli.alongside.is_some() { 2 } else { 1 };
    let (open_files, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    anyhow::ensure!(
        connections + SPARE_FILES <= open_files,
        "{connections} connections need more than the {open_files} open files allowed (ulimit -Hn)"
    );
    if cli.connections > cli.concurrency {
        eprintln!(
            "auth-bench: {} of the {} connections will carry no call (--concurrency {})",
            cli.connections - cli.concurrency,
            cli.connections,
            cli.concurrency
        );
    }
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
    let reports = result?;
    stopped?;

    let summary = (reports.len() > 1).then(|| Summary::of(&reports));
    if cli.json {
        let reports: Vec<_> = reports.iter().map(Report::json).collect();
        let json = match &summary {
            None => reports.into_iter().next().unwrap_or_default(),
            Some(summary) => serde_json::json!({ "runs": reports, "summary": summary.json() }),
        };
        println!("{json}");
    }
    if let Some(summary) = summary {
        let text = summary.text();
        if cli.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

async fn bench(
    cli: &Cli,
    addr: SocketAddr,
    server: Option<&ServerProcess>,
) -> anyhow::Result<Vec<Report>> {
    // The server's own memory, before any connection of ours: with it,
    // `idle` shows what the connections cost.
    let unconnected = server.map(ServerProcess::memory).transpose()?;
    // Every clone of a Connection multiplexes onto that same HTTP/2 connection.
    let count = cli.connections as usize;
    let began = std::time::Instant::now();
    let connections = open_connections(addr, count, cli.client_addrs).await?;
    let alongside = match cli.alongside {
        Some(_) => open_connections(addr, count, cli.client_addrs).await?,
        None => Vec::new(),
    };
    if count > OPENING_AT_ONCE {
        eprintln!(
            "auth-bench: opened {} connections in {:.1?}",
            connections.len() + alongside.len(),
            began.elapsed()
        );
    }
    let idle = server.map(ServerProcess::memory).transpose()?;
    let mut reports = Vec::new();
    for round in 1..=cli.rounds {
        for &scenario in &cli.scenario {
            if cli.rounds > 1 {
                eprintln!("auth-bench: round {round} of {}", cli.rounds);
            }
            let memory = (unconnected, idle);
            let report = measure(
                cli,
                scenario,
                addr,
                &connections,
                &alongside,
                server,
                memory,
            )
            .await
            .with_context(|| format!("{} (round {round})", scenario.name()))?;
            // Each run as it ends; stdout stays for the JSON or the summary.
            if cli.json || cli.scenario.len() * cli.rounds as usize > 1 {
                eprintln!("{}", report.text());
            } else {
                println!("{}", report.text());
            }
            reports.push(report);
        }
    }
    Ok(reports)
}

/// One measured run of `scenario`, with the `--alongside` load around it.
async fn measure(
    cli: &Cli,
    scenario: Scenario,
    addr: SocketAddr,
    connections: &[Connection],
    alongside_connections: &[Connection],
    server: Option<&ServerProcess>,
    (unconnected, idle): (Option<Memory>, Option<Memory>),
) -> anyhow::Result<Report> {
    let options = load::Options {
        scenario,
        concurrency: cli.concurrency as usize,
        rate: cli.rate,
        users: cli.users as usize,
        page_size: cli.page_size,
        database_url: server.map(|s| s.database_url.clone()),
        presigned_assertions: presigned_assertions(cli.warmup + cli.duration),
    };
    // Measured while the server is idle, right before the run it bounds:
    // a login verifies once, a register hashes once, the same argon2 work.
    let argon2_bound = match scenario {
        Scenario::Login | Scenario::LoginOneAccount | Scenario::Register => {
            Some(Argon2Bound::measure().await?)
        }
        _ => None,
    };
    let started = std::time::Instant::now();
    let prepared = load::prepare(&connections[0], &options).await?;
    let prepare_time = started.elapsed();
    let accounts = prepared.accounts();
    let alongside = match cli.alongside {
        None => None,
        Some(scenario) => {
            let options = load::Options {
                scenario,
                concurrency: cli.alongside_concurrency as usize,
                rate: cli.alongside_rate,
                database_url: options.database_url.clone(),
                ..options
            };
            let prepared = load::prepare(&alongside_connections[0], &options).await?;
            Some((options, prepared))
        }
    };
    eprintln!(
        "auth-bench: prepared {accounts} users in {prepare_time:.1?}; {} for {:?} after {:?} of warm-up",
        scenario.name(),
        cli.duration,
        cli.warmup
    );
    // Preparing hashes hundreds of passwords (19 MiB each at the defaults):
    // reset the peak so it reflects the scenario, not the preparation.
    let peak_reset = server.is_some_and(ServerProcess::reset_peak_memory);
    // What the run starts from: preparing leaves the hashing threads' argon2
    // memory (19 MiB each at the defaults) in the server's RSS.
    let prepared_memory = server.map(ServerProcess::memory).transpose()?;

    // The server's CPU time over the measured window (after the warm-up).
    let window_start = tokio::time::Instant::now() + cli.warmup;
    let window_end = window_start + cli.duration;
    let pid_cpu = server.map(|s| {
        let sample = move || s.cpu_time().ok();
        async move {
            tokio::time::sleep_until(window_start).await;
            let before = sample();
            tokio::time::sleep_until(window_end).await;
            Some(sample()?.since(&before?))
        }
    });
    let cpu_window = async {
        match pid_cpu {
            Some(window) => window.await,
            None => None,
        }
    };
    let measured = load::run(connections, &options, prepared, cli.warmup, cli.duration);
    let measured = async { tokio::join!(measured, cpu_window) };
    let ((outcome, server_cpu), alongside) = match alongside {
        None => {
            let (outcome, cpu) = measured.await;
            ((outcome?, cpu), None)
        }
        Some((options, prepared)) => {
            let background = load::run(
                alongside_connections,
                &options,
                prepared,
                cli.warmup,
                cli.duration,
            );
            let ((outcome, cpu), background) = tokio::join!(measured, background);
            (
                (outcome?, cpu),
                Some((options.scenario, options.concurrency, background?)),
            )
        }
    };
    let after = server.map(ServerProcess::memory).transpose()?;

    Ok(Report {
        scenario,
        addr,
        concurrency: cli.concurrency,
        rate: cli.rate,
        connections: cli.connections,
        client_addrs: cli.client_addrs,
        users: accounts,
        page_size: cli.page_size,
        warmup: cli.warmup,
        prepare_time,
        outcome,
        alongside,
        argon2_bound,
        server: server.map(|s| ServerFigures {
            startup: s.startup,
            unconnected,
            idle,
            prepared: prepared_memory,
            after,
            peak_reset,
            cpu: server_cpu,
        }),
    })
}

/// Raises this process's soft limit on open files to its hard limit, before
/// the server is spawned: every connection is one descriptor here and one
/// in the server, which inherits the limit (the service itself sets none).
/// Returns the soft limit now in force.
fn raise_open_files_limit() -> anyhow::Result<u64> {
    // The kernel refuses more than fs.nr_open (2^20 by default), even
    // when the hard limit is unlimited.
    const NR_OPEN: u64 = 1 << 20;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    let wanted = hard.min(NR_OPEN);
    if soft >= wanted {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(wanted)
}

/// Opens `count` connections, `OPENING_AT_ONCE` at a time, from the client
/// addresses in turn when there are several.
async fn open_connections(
    addr: SocketAddr,
    count: usize,
    client_addrs: u8,
) -> anyhow::Result<Vec<Connection>> {
    anyhow::ensure!(
        client_addrs == 1 || addr.is_ipv4(),
        "--client-addrs needs an IPv4 target, not {addr}"
    );
    let source = |i: usize| {
        let n = (i % usize::from(client_addrs)) as u8;
        (client_addrs > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n)))
    };
    let mut opened = Vec::with_capacity(count);
    let mut opening = JoinSet::new();
    for i in 0..count {
        if opening.len() >= OPENING_AT_ONCE
            && let Some(connection) = opening.join_next().await
        {
            opened.push(connection??);
        }
        opening.spawn(Connection::open(addr, source(i)));
    }
    while let Some(connection) = opening.join_next().await {
        opened.push(connection??);
    }
    Ok(opened)
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
    /// Before auth-bench connected.
    unconnected: Option<Memory>,
    /// Connected, before the first run.
    idle: Option<Memory>,
    /// Right before this run's warm-up, after preparing.
    prepared: Option<Memory>,
    after: Option<Memory>,
    peak_reset: bool,
    /// Server CPU time over the measured window, all threads.
    cpu: Option<Duration>,
}

impl ServerFigures {
    /// Server CPU microseconds per call completed in the window (alongside
    /// load included, when there is some).
    fn cpu_us_per_call(&self, calls: u64) -> Option<f64> {
        let cpu = self.cpu?;
        (calls > 0).then(|| cpu.as_secs_f64() * 1e6 / calls as f64)
    }

    /// Server RSS a connection adds, idle (KiB): connected minus unconnected.
    fn kib_per_connection(&self, connections: u64) -> Option<f64> {
        let (before, connected) = (self.unconnected?, self.idle?);
        (connections > 0)
            .then(|| (connected.rss_kib as f64 - before.rss_kib as f64) / connections as f64)
    }
}

struct Report {
    scenario: Scenario,
    addr: SocketAddr,
    concurrency: u32,
    rate: Option<f64>,
    connections: u32,
    client_addrs: u8,
    /// Accounts prepared (none for `health` and `register`).
    users: usize,
    page_size: i32,
    warmup: Duration,
    prepare_time: Duration,
    outcome: Outcome,
    /// The `--alongside` load: scenario, concurrency, what it got.
    alongside: Option<(Scenario, usize, Outcome)>,
    /// `login` and `register`: what argon2 alone allows on this machine.
    argon2_bound: Option<Argon2Bound>,
    server: Option<ServerFigures>,
}

/// Microseconds as milliseconds, for reading.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// Every call the server completed in the measured window.
    fn calls_in_window(&self) -> u64 {
        self.outcome.total()
            + self
                .alongside
                .as_ref()
                .map_or(0, |(_, _, outcome)| outcome.total())
    }

    /// Connections auth-bench holds open, `--alongside` ones included.
    fn connections_opened(&self) -> u64 {
        u64::from(self.connections) * if self.alongside.is_some() { 2 } else { 1 }
    }

    fn text(&self) -> String {
        let o = &self.outcome;
        let h = &o.latency_us;
        let mut lines = vec![
            format!(
                "scenario {}  target {}  {}  connections {}{}  users {}{}",
                self.scenario.name(),
                self.addr,
                match self.rate {
                    Some(rate) => format!(
                        "open loop {rate} calls/s, at most {} in flight",
                        self.concurrency
                    ),
                    None => format!("concurrency {}", self.concurrency),
                },
                self.connections,
                if self.client_addrs > 1 {
                    format!(" from {} addresses", self.client_addrs)
                } else {
                    String::new()
                },
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
        if let (Some(rate), Some(lag)) = (self.rate, &o.start_lag_us) {
            lines.push(format!(
                "open loop  {:.1} calls/s completed of {rate} asked ({:.1} %); started late by \
                 p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms (inside the latency)",
                o.completed_per_second(),
                100.0 * o.completed_per_second() / rate,
                ms(lag.value_at_quantile(0.50)),
                ms(lag.value_at_quantile(0.99)),
                ms(lag.max()),
            ));
        }
        if o.rows > 0 {
            lines.push(format!(
                "rows       {:.0} user rows/s  ({} rows in OK calls)",
                o.rows_per_second(),
                o.rows
            ));
        }
        if let Some(bound) = &self.argon2_bound {
            lines.push(format!(
                "argon2     {} cores ÷ {:.1?} a hash = {:.1}/s; all cores hashing at once: {:.1}/s; \
                 this run: {:.1} % of the first, {:.1} % of all cores at once",
                bound.cores,
                bound.verify,
                bound.per_second(),
                bound.all_cores_per_second,
                100.0 * o.throughput() / bound.per_second(),
                100.0 * o.throughput() / bound.all_cores_per_second,
            ));
        }
        if let Some((scenario, concurrency, outcome)) = &self.alongside {
            lines.push(format!(
                "alongside  {} at concurrency {concurrency}: {:.1} OK calls/s, codes {}",
                scenario.name(),
                outcome.throughput(),
                outcome
                    .codes
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            ));
        }
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
            if let Some(per_connection) = s.kib_per_connection(self.connections_opened()) {
                lines.push(format!(
                    "server     RSS before connecting {}; {per_connection:.1} KiB more a connection, idle; \
                     RSS before the run (after preparing) {}",
                    kib(s.unconnected.as_ref(), |m| m.rss_kib),
                    kib(s.prepared.as_ref(), |m| m.rss_kib),
                ));
            }
            if let Some(per_call) = s.cpu_us_per_call(self.calls_in_window()) {
                lines.push(format!(
                    "server CPU {per_call:.1} µs a call (all threads, measured window)"
                ));
            }
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
                "rss_unconnected_kib": s.unconnected.as_ref().map(|m| m.rss_kib),
                "rss_idle_kib": s.idle.as_ref().map(|m| m.rss_kib),
                "rss_prepared_kib": s.prepared.as_ref().map(|m| m.rss_kib),
                "kib_per_connection": s.kib_per_connection(self.connections_opened()),
                "rss_after_kib": s.after.as_ref().map(|m| m.rss_kib),
                "peak_rss_kib": s.after.as_ref().map(|m| m.hwm_kib),
                "peak_covers_preparation": !s.peak_reset,
                "cpu_s": s.cpu.map(|cpu| cpu.as_secs_f64()),
                "cpu_us_per_call": s.cpu_us_per_call(self.calls_in_window()),
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
            "rate": self.rate,
            "connections": self.connections,
            "client_addrs": self.client_addrs,
            "users": self.users,
            "page_size": self.page_size,
            "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": o.elapsed.as_secs_f64(),
            "prepare_s": self.prepare_time.as_secs_f64(),
            "calls": o.total(),
            "ok": o.ok(),
            "throughput_ok_per_s": o.throughput(),
            "completed_per_s": o.completed_per_second(),
            "latency_ms": latency,
            "start_lag_ms": o.start_lag_us.as_ref().map(|lag| serde_json::json!({
                "p50": ms(lag.value_at_quantile(0.50)),
                "p99": ms(lag.value_at_quantile(0.99)),
                "max": ms(lag.max()),
            })),
            "codes": codes,
            "rows": o.rows,
            "rows_per_s": o.rows_per_second(),
            "argon2_bound": self.argon2_bound.as_ref().map(|b| serde_json::json!({
                "cores": b.cores,
                "hash_ms": b.verify.as_secs_f64() * 1000.0,
                "per_s": b.per_second(),
                "all_cores_per_s": b.all_cores_per_second,
                "share": o.throughput() / b.per_second(),
                "share_all_cores": o.throughput() / b.all_cores_per_second,
            })),
            "alongside": self.alongside.as_ref().map(|(scenario, concurrency, outcome)| {
                serde_json::json!({
                    "scenario": scenario.name(),
                    "concurrency": concurrency,
                    "throughput_ok_per_s": outcome.throughput(),
                    "calls": outcome.total(),
                    "ok": outcome.ok(),
                })
            }),
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

/// Medians per scenario over the rounds, and each as a share of `health`.
struct Summary {
    rows: Vec<SummaryRow>,
}

struct SummaryRow {
    scenario: Scenario,
    runs: usize,
    /// Medians of OK calls/s, p50 and p99 (ms).
    throughput: f64,
    p50: f64,
    p99: f64,
    /// Median user rows/s, for the scenarios that return users.
    rows_per_s: Option<f64>,
    /// `login` and `register`: medians of the argon2 bound (calls/s), the
    /// share of it, and the share of all cores hashing at once.
    bound: Option<(f64, f64, f64)>,
}

impl Summary {
    fn of(reports: &[Report]) -> Self {
        let mut scenarios: Vec<Scenario> = Vec::new();
        for report in reports {
            if !scenarios.contains(&report.scenario) {
                scenarios.push(report.scenario);
            }
        }
        let rows = scenarios
            .into_iter()
            .map(|scenario| {
                let runs: Vec<&Report> =
                    reports.iter().filter(|r| r.scenario == scenario).collect();
                let quantile = |q: f64| {
                    median(runs.iter().map(|r| {
                        let h = &r.outcome.latency_us;
                        if h.is_empty() {
                            f64::NAN
                        } else {
                            ms(h.value_at_quantile(q))
                        }
                    }))
                };
                let bounded: Vec<(&Report, &Argon2Bound)> = runs
                    .iter()
                    .filter_map(|r| Some((*r, r.argon2_bound.as_ref()?)))
                    .collect();
                let bound = (!bounded.is_empty()).then(|| {
                    let tput = |r: &Report| r.outcome.throughput();
                    (
                        median(bounded.iter().map(|(_, b)| b.per_second())),
                        median(bounded.iter().map(|(r, b)| tput(r) / b.per_second())),
                        median(
                            bounded
                                .iter()
                                .map(|(r, b)| tput(r) / b.all_cores_per_second),
                        ),
                    )
                });
                SummaryRow {
                    scenario,
                    runs: runs.len(),
                    throughput: median(runs.iter().map(|r| r.outcome.throughput())),
                    p50: quantile(0.50),
                    p99: quantile(0.99),
                    rows_per_s: runs
                        .iter()
                        .any(|r| r.outcome.rows > 0)
                        .then(|| median(runs.iter().map(|r| r.outcome.rows_per_second()))),
                    bound,
                }
            })
            .collect();
        Self { rows }
    }

    fn health(&self) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.scenario == Scenario::Health)
            .map(|row| row.throughput)
    }

    fn text(&self) -> String {
        let mut lines = vec![format!(
            "{:<12} {:>5} {:>14} {:>9} {:>9} {:>10} {:>12}",
            "median of", "runs", "OK calls/s", "p50 ms", "p99 ms", "÷ health", "user rows/s"
        )];
        for row in &self.rows {
            let ratio = self.health().map_or_else(
                || "-".to_owned(),
                |h| format!("{:.1} %", 100.0 * row.throughput / h),
            );
            let rows = row
                .rows_per_s
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
            lines.push(format!(
                "{:<12} {:>5} {:>14.1} {:>9.3} {:>9.3} {ratio:>10} {rows:>12}",
                row.scenario.name(),
                row.runs,
                row.throughput,
                row.p50,
                row.p99
            ));
        }
        for row in &self.rows {
            if let Some((bound, share, share_all)) = row.bound {
                lines.push(format!(
                    "{}: {:.1} % of the argon2 bound (median bound {bound:.1}/s), \
                     {:.1} % of all cores hashing at once",
                    row.scenario.name(),
                    100.0 * share,
                    100.0 * share_all
                ));
            }
        }
        lines.join("\n")
    }

    fn json(&self) -> serde_json::Value {
        let health = self.health();
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "scenario": row.scenario.name(),
                    "runs": row.runs,
                    "throughput_ok_per_s": row.throughput,
                    "p50_ms": row.p50,
                    "p99_ms": row.p99,
                    "ratio_to_health": health.map(|h| row.throughput / h),
                    "rows_per_s": row.rows_per_s,
                    "argon2_bound": row.bound.map(|(bound, share, share_all)| serde_json::json!({
                        "per_s": bound,
                        "share": share,
                        "share_all_cores": share_all,
                    })),
                })
            })
            .collect();
        serde_json::json!({ "scenarios": rows })
    }
}

/// The middle value (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// How many assertions `service-token-assertion` signs before a run of
/// `run` (warm-up included): enough for 20,000 grants a second, at most
/// 300,000 (a few seconds of preparing on two cores).
fn presigned_assertions(run: Duration) -> usize {
    const PER_SECOND: f64 = 20_000.0;
    const AT_MOST: f64 = 300_000.0;
    (run.as_secs_f64() * PER_SECOND).min(AT_MOST) as usize
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
