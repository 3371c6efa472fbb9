//! The server under test, when auth-bench starts it: a child process on a
//! free loopback port and a throw-away SQLite database, watched through
//! /proc for memory, stopped with SIGTERM like a real deployment would.

use std::{
    collections::HashMap,
    ffi::OsString,
    net::SocketAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use nix::{sys::signal, unistd::Pid};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long the server may take to answer SERVING (it migrates first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGTERM: our connections are already closed, so it should exit at once.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ServerProcess {
    pub addr: SocketAddr,
    /// From spawn to the first SERVING answer: process start, migrations, bind.
    pub startup: Duration,
    /// The server's database, for preparing what the API cannot (a
    /// service account for the service-token scenarios).
    pub database_url: String,
    /// `None` once waited for.
    child: Option<Child>,
    /// Our temporary database directory, removed at the end.
    scratch: Option<PathBuf>,
}

/// CPU time per live thread (by thread id), in nanoseconds.
pub struct CpuTime {
    threads: HashMap<OsString, u64>,
}

impl CpuTime {
    /// CPU time run since `before`, thread by thread. A plain sum would
    /// drop by all a thread ever ran when it exits (the blocking pool's
    /// threads end after 10 s idle, e.g. the hashing threads of the
    /// preparation); a thread gone since counts nothing.
    pub fn since(&self, before: &Self) -> Duration {
        let ns = self
            .threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

/// From /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl ServerProcess {
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        extra_env: &[(String, String)],
        seed_users: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.is_file(),
            "no server binary at {} (build it with `cargo build --release`, or pass --server-bin / --addr)",
            bin.display()
        );
        let mut server = Self {
            addr: free_loopback_addr()?,
            startup: Duration::ZERO,
            database_url: String::new(),
            child: None,
            scratch: None,
        };
        let database_url = match database_url {
            Some(url) => url.to_owned(),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("auth-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                server.scratch = Some(dir.clone());
                format!("sqlite://{}?mode=rwc", dir.join("auth.db").display())
            }
        };
        if seed_users > 0 {
            let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
            let took = crate::seed::seed(&database_url, run_id, seed_users, crate::load::PASSWORD)
                .await
                .context("seeding users")?;
            eprintln!("auth-bench: seeded {seed_users} users in {took:.1?}");
        }
        // Server log lines go to our stderr so that stdout stays pure JSON with --json.
        let log = std::io::stderr().as_fd().try_clone_to_owned()?;
        let began = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .env("AUTH_LISTEN_ADDR", server.addr.to_string())
            .env("AUTH_DATABASE_URL", &database_url)
            // A fixed-per-run key: on SQLite the server would otherwise write a key file.
            .env(
                "AUTH_JWT_SECRET",
                format!("auth-bench-{}", uuid::Uuid::new_v4().simple()),
            )
            // The per-call INFO line would cost more than many of the calls measured.
            .env("RUST_LOG", "warn")
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        server.child = Some(child);
        server.database_url = database_url;
        // On failure `server` is dropped here, which kills the child.
        server.wait_serving(began).await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    async fn wait_serving(&mut self, began: Instant) -> anyhow::Result<()> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("the server exited during start-up: {status}");
            }
            if let Ok(channel) = endpoint.connect().await {
                let answer = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    self.startup = began.elapsed();
                    return Ok(());
                }
            }
            anyhow::ensure!(
                began.elapsed() < START_TIMEOUT,
                "the server did not report SERVING within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// CPU time each of the server's live threads has run so far (the
    /// scheduler's own nanosecond count from /proc/<pid>/task/*/schedstat).
    /// Per call, it shows what a build costs even when other load on the
    /// machine moves the throughput.
    pub fn cpu_time(&self) -> anyhow::Result<CpuTime> {
        let tasks = format!("/proc/{}/task", self.pid());
        let mut threads = HashMap::new();
        for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
            let task = task?;
            // A thread that ended since the listing took its time with it.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let run_ns: u64 = schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .with_context(|| format!("unexpected schedstat under {tasks}"))?;
            threads.insert(task.file_name(), run_ns);
        }
        Ok(CpuTime { threads })
    }

    /// Resets VmHWM to the current RSS (Linux ≥ 4.0, `clear_refs` value 5);
    /// false if the kernel or permissions refuse.
    pub fn reset_peak_memory(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// SIGTERM, then wait for a clean exit (the graceful-shutdown path).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        signal::kill(pid, signal::Signal::SIGTERM).context("cannot signal the server")?;
        let began = Instant::now();
        while began.elapsed() < STOP_TIMEOUT {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "the server exited with {status}");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("the server ignored SIGTERM for {STOP_TIMEOUT:?} and was killed")
    }
}

impl Drop for ServerProcess {
    /// On any early exit the server must not outlive us.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A port the kernel says is free now. Another process could take it before
/// the server binds it; the start-up check would then fail loudly.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}
