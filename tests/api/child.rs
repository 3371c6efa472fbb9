//! The `auth-service` binary as a child process of the test, for what only
//! a real process shows: start-up refusals, logs, signals, crashes.
//!
//! [`ChildServer`] runs `serve` on a free port and waits until it answers
//! SERVING; [`auth_service`] and [`run`] are for the one-shot subcommands. Every
//! child gets a clean `AUTH_*` environment, and a running one is killed when
//! its handle is dropped, so a failing test leaves no process behind.

use std::{
    net::SocketAddr,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use auth_service::pb::auth_service_client::AuthServiceClient;
use tokio::{io::AsyncReadExt, process::Child, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::SECRET;

const BIN: &str = env!("CARGO_BIN_EXE_auth-service");

/// How long `serve` may take to answer SERVING (migrations on a fresh
/// database, on a loaded machine).
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Cheap argon2: a load is then bound by database writes rather than by
/// hashing (so a SIGKILL under load lands in them).
pub const CHEAP_HASHING: [(&str, &str); 2] = [
    ("AUTH_ARGON2_MEMORY_KIB", "1024"),
    ("AUTH_ARGON2_ITERATIONS", "1"),
];

/// `auth-service <args>` with a clean `AUTH_*` environment and no stdin.
pub fn auth_service(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTH_") {
            command.env_remove(key);
        }
    }
    command.args(args).stdin(Stdio::null());
    command
}

/// `auth-service create-superuser` on `database_url`, run to the end, with
/// the password from the environment and no log.
pub fn create_superuser(database_url: &str, username: &str, email: &str, password: &str) -> Output {
    run(
        auth_service(&["create-superuser", "--username", username, "--email", email])
            .env("AUTH_DATABASE_URL", database_url)
            .env("AUTH_SUPERUSER_PASSWORD", password)
            .env("RUST_LOG", "off"),
    )
}

/// Runs a one-shot `command` to the end: its exit status and output.
pub fn run(command: &mut std::process::Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// Runs `command`, which must exit by itself within `within`: if it is still
/// running then, it is killed and the test fails.
pub async fn run_within(command: std::process::Command, within: Duration) -> Output {
    let child = tokio::process::Command::from(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{BIN} was still running after {within:?}"))
        .expect("waiting for the child")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How to start `auth-service serve`: from [`ChildServer::on`].
pub struct ServeOptions {
    database_url: String,
    env: Vec<(String, String)>,
    log: Option<String>,
    signing_key: bool,
    http: bool,
    tls: Option<ClientTlsConfig>,
}

impl ServeOptions {
    /// Adds `env` to the child's environment (after the defaults, so it
    /// overrides them).
    pub fn envs(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    /// Logs at `RUST_LOG=filter` to a captured stderr, for the test to read
    /// in the output. Without it, the child logs nothing (or, with
    /// `TEST_LOG=1`, at `info` to the test's own stderr).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = Some(filter.to_owned());
        self
    }

    /// No `AUTH_JWT_SECRET` (by default [`SECRET`]): the server reads or
    /// generates the key file beside its SQLite database.
    pub fn without_signing_key(mut self) -> Self {
        self.signing_key = false;
        self
    }

    /// Also serves HTTP (`AUTH_HTTP_ADDR`) on a free port of its own:
    /// [`ChildServer::http_addr`].
    pub fn with_http(mut self) -> Self {
        self.http = true;
        self
    }

    /// The server is configured for TLS (by [`Self::envs`]): the health
    /// check and [`ChildServer::channel`] connect to `localhost` with `tls`.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts the server and waits until it answers SERVING; an exit before
    /// that fails the test, with the child's stderr.
    pub async fn start(self) -> ChildServer {
        // Displayed rather than unwrapped: the stderr shows line by line.
        self.try_start().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Self::start`], but an exit before serving is an `Err` with the
    /// exit status and stderr.
    pub async fn try_start(self) -> Result<ChildServer, String> {
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let addr = free_addr();
            let http_addr = self.http.then(free_addr);
            let mut server = self.spawn(addr, http_addr);
            if server.wait_until_serving().await {
                return Ok(server);
            }
            // It exited. A free port may have been taken between our probe
            // and its bind (other tests run in parallel): try other ones.
            let output = server.wait(Duration::from_secs(10)).await;
            let err = stderr(&output);
            if attempt < ATTEMPTS && err.contains("cannot listen") {
                eprintln!("port {} was taken, retrying: {err}", addr.port());
                continue;
            }
            return Err(format!(
                "the server exited before serving ({}): {err}",
                output.status
            ));
        }
        Err("the server never started".to_owned())
    }

    fn spawn(&self, addr: SocketAddr, http_addr: Option<SocketAddr>) -> ChildServer {
        let mut command = tokio::process::Command::from(auth_service(&["serve"]));
        command
            .env("AUTH_DATABASE_URL", &self.database_url)
            .env("AUTH_LISTEN_ADDR", addr.to_string());
        if let Some(http_addr) = http_addr {
            command.env("AUTH_HTTP_ADDR", http_addr.to_string());
        }
        if self.signing_key {
            command.env("AUTH_JWT_SECRET", SECRET);
        }
        // The server's log, for debugging a failure: TEST_LOG=1 cargo test.
        let debugging = self.log.is_none() && std::env::var_os("TEST_LOG").is_some();
        let filter = match (&self.log, debugging) {
            (Some(filter), _) => filter.as_str(),
            (None, true) => "info",
            (None, false) => "off",
        };
        command
            .env("RUST_LOG", filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(if debugging {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        // Read as it comes: a child blocked on a full pipe would hang.
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let _ = pipe.read_to_end(&mut buffer).await;
                buffer
            })
        });
        ChildServer {
            child,
            addr,
            http_addr,
            tls: self.tls.clone(),
            stderr,
        }
    }
}

/// `auth-service serve`, running as a child process of the test; killed
/// (SIGKILL) if dropped while running.
pub struct ChildServer {
    child: Child,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    /// How to connect when it serves TLS.
    tls: Option<ClientTlsConfig>,
    /// Everything the child wrote to stderr, once it closes it.
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl ChildServer {
    /// The binary on `database_url`, to configure and then start.
    pub fn on(database_url: &str) -> ServeOptions {
        ServeOptions {
            database_url: database_url.to_owned(),
            env: Vec::new(),
            log: None,
            signing_key: true,
            http: false,
            tls: None,
        }
    }

    /// Starts the binary on `database_url` with `env` added, and waits until
    /// its health service answers SERVING.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> ChildServer {
        Self::on(database_url).envs(env).start().await
    }

    /// As [`Self::start`], but an exit before serving is an `Err` with the
    /// exit status and stderr.
    pub async fn try_start(
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Result<ChildServer, String> {
        Self::on(database_url).envs(env).try_start().await
    }

    /// The port it serves gRPC on.
    pub fn channel_port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it serves HTTP, when started [`ServeOptions::with_http`].
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn uri(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// A channel of its own to the server, connected on first use (over
    /// TLS when started [`ServeOptions::with_tls`]).
    pub fn channel(&self) -> Channel {
        let endpoint = Channel::from_shared(self.uri())
            .unwrap_or_else(|e| panic!("{}: {e}", self.uri()))
            .connect_timeout(Duration::from_secs(10));
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).expect("TLS client config"),
            None => endpoint,
        }
        .connect_lazy()
    }

    /// A client on a connection of its own, opened on first use.
    pub fn auth_client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel())
    }

    /// Whether the process is still running (it is not reaped if so).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (`TERM`, `INT`, …) with kill(1), as an operator would.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .id()
            .expect("the server has already been reaped")
            .to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
        assert!(sent.success(), "kill -{signal} {pid} failed: {sent}");
    }

    /// SIGTERM, then the exit status and output, failing after `within`.
    pub async fn terminate(self, within: Duration) -> Output {
        self.signal("TERM");
        self.wait(within).await
    }

    /// SIGKILL, a crash: no destructor, no pool close, no flush. Then the
    /// exit status and output.
    pub async fn kill(mut self) -> Output {
        self.child.start_kill().expect("SIGKILL");
        self.wait(Duration::from_secs(60)).await
    }

    /// Waits for the process to exit, failing after `within`: its exit
    /// status and stderr.
    pub async fn wait(mut self, within: Duration) -> Output {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not exit within {within:?}"))
            .expect("waiting for the server");
        let stderr = match self.stderr.take() {
            Some(reader) => reader.await.expect("reading the server's stderr"),
            None => Vec::new(),
        };
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Polls the health service until `auth.v1.AuthService` is SERVING (true)
    /// or the process exits (false).
    async fn wait_until_serving(&mut self) -> bool {
        let mut health = HealthClient::new(self.channel());
        let started = Instant::now();
        loop {
            if !self.is_running() {
                return false;
            }
            let check = health.check(HealthCheckRequest {
                service: "auth.v1.AuthService".into(),
            });
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), check).await
                && response.into_inner().status() == ServingStatus::Serving
            {
                return true;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "the server did not serve on {} within {START_DEADLINE:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A port nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free port")
}
