//! The real binary crashed and stopped under load: SIGKILL loses no
//! acknowledged write and leaves nothing half-written; SIGTERM lets the
//! calls in flight finish, refuses new connections and exits 0.
//!
//! These tests run `auth-service serve` as a child process, so a SIGKILL is
//! a real crash: no destructor, no pool close, no flush.

use std::{
    os::unix::process::ExitStatusExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use auth_service::pb::{self, auth_service_client::AuthServiceClient};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::task::JoinSet;
use tonic::{Code, Status, transport::Channel};

use crate::{
    child::{CHEAP_HASHING, ChildServer, stderr},
    helpers::{
        Backend, HS256_HEADER, PASSWORD, SECRET, TestDatabase, claims, forge, register_request,
        simplejwt_claims,
    },
};

/// Longest any single call may take on a loaded machine before the test
/// gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

async fn register(
    auth: &mut AuthServiceClient<Channel>,
    username: &str,
) -> Result<pb::User, Status> {
    call(auth.register(register_request(username))).await
}

async fn login(
    auth: &mut AuthServiceClient<Channel>,
    username: &str,
) -> Result<pb::TokenPair, Status> {
    call(auth.obtain_token_pair(pb::ObtainTokenPairRequest {
        username: username.into(),
        password: PASSWORD.into(),
    }))
    .await
}

/// A unary call, its answer unwrapped; a call that hangs fails the test.
async fn call<T>(
    request: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| panic!("a call took longer than {CALL_TIMEOUT:?}"))
        .map(tonic::Response::into_inner)
}

/// The `user_id` claim of `token` (a decimal string, as simplejwt writes it).
fn user_id(token: &str) -> Option<i64> {
    claims(token)["user_id"].as_str()?.parse().ok()
}

/// `(username, password)` of every row of `users`, read straight from the
/// database.
async fn stored_users(url: &str) -> Vec<(String, String)> {
    let db = Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT username, password FROM users ORDER BY id",
        ))
        .await
        .expect("SELECT FROM users");
    let users = rows
        .iter()
        .map(|row| {
            let get = |column| {
                row.try_get::<String>("", column)
                    .unwrap_or_else(|e| panic!("users.{column}: {e}"))
            };
            (get("username"), get("password"))
        })
        .collect();
    db.close().await.ok();
    users
}

/// What the load saw: the calls the server acknowledged, and those that failed.
#[derive(Default)]
struct Tally {
    /// Username and id of every Register answered OK.
    registered: Mutex<Vec<(String, i64)>>,
    /// Every refresh token whose Logout was answered OK.
    logged_out: Mutex<Vec<String>>,
    /// Failures seen before the kill: the server misbehaved under load.
    failed_before_kill: Mutex<Vec<String>>,
    /// Calls started before the kill and cut off by it.
    cut_off: AtomicUsize,
    /// Set just before SIGKILL: failures from then on are the kill's doing.
    killing: AtomicBool,
    /// Set once the process is reaped: the load stops.
    dead: AtomicBool,
}

impl Tally {
    fn registered(&self) -> usize {
        self.registered.lock().map(|v| v.len()).unwrap_or_default()
    }

    fn logged_out(&self) -> usize {
        self.logged_out.lock().map(|v| v.len()).unwrap_or_default()
    }

    fn failed_before_kill(&self) -> Vec<String> {
        self.failed_before_kill
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn killing(&self) -> bool {
        self.killing.load(Ordering::SeqCst)
    }

    fn dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Records a failed call that started before the kill if `started_alive`;
    /// true once the kill has been sent (stop looping).
    fn failed(&self, started_alive: bool, what: String) -> bool {
        if self.killing() {
            if started_alive {
                self.cut_off.fetch_add(1, Ordering::SeqCst);
            }
            true
        } else {
            if let Ok(mut failures) = self.failed_before_kill.lock() {
                failures.push(what);
            }
            false
        }
    }
}

const REGISTER_TASKS: usize = 4;
const LOGOUT_TASKS: usize = 4;
const PREPARED_USERS: usize = 4;
const SESSIONS_PER_USER: usize = 32;
/// More refresh tokens than the logout tasks can get through before the
/// kill, so they are still at it when it lands.
const FORGED_TOKENS: usize = 4000;
/// Acknowledged calls of each kind required before the kill.
const MIN_ACKNOWLEDGED: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_register_or_logout() {
    for backend in Backend::configured() {
        eprintln!("--- on {backend}");
        sigkill_under_load(&backend).await;
    }
}

async fn sigkill_under_load(backend: &Backend) {
    let database = TestDatabase::create(backend).await;
    let server = ChildServer::start(&database.url, &CHEAP_HASHING).await;
    let tokens = refresh_tokens_to_log_out(&mut server.auth_client()).await;
    let load = Load::start(&server, tokens);
    load.wait_until_enough_acknowledged().await;
    let acknowledged = kill_mid_flight(server, load).await;

    // The same database, a new process.
    let server = ChildServer::start(&database.url, &CHEAP_HASHING).await;
    let auth = server.auth_client();
    assert_acknowledged_registers_kept(&auth, &acknowledged.registered).await;
    assert_acknowledged_logouts_kept(&auth, &acknowledged.logged_out).await;
    assert_nothing_half_written(&database.url, &auth, acknowledged.registered.len()).await;

    // The restarted server writes, and stops cleanly.
    register(&mut auth.clone(), "after_restart")
        .await
        .expect("register after the restart");
    let output = server.terminate(Duration::from_secs(60)).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Users with sessions to log out of: refresh tokens the server issued,
/// interleaved with tokens it never saw (as from a Django service sharing
/// the key), whose Logout must also record the outstanding token.
async fn refresh_tokens_to_log_out(auth: &mut AuthServiceClient<Channel>) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut owners = Vec::new();
    for i in 0..PREPARED_USERS {
        let username = format!("prepared{i}");
        let user = register(auth, &username)
            .await
            .unwrap_or_else(|s| panic!("register {username}: {s:?}"));
        owners.push(user.id);
        for _ in 0..SESSIONS_PER_USER {
            let pair = login(auth, &username)
                .await
                .unwrap_or_else(|s| panic!("login {username}: {s:?}"));
            tokens.push(pair.refresh);
        }
    }
    let issued = tokens.len();
    let forged = (0..FORGED_TOKENS).map(|i| {
        let owner = owners[i % owners.len()];
        forge(
            HS256_HEADER,
            &simplejwt_claims("refresh", owner, 3600),
            SECRET,
        )
    });
    let mut interleaved = Vec::with_capacity(issued + FORGED_TOKENS);
    let mut issued_tokens = tokens.into_iter();
    for forged_token in forged {
        interleaved.extend(issued_tokens.next());
        interleaved.push(forged_token);
    }
    interleaved
}

/// Register and Logout calls kept up against the server until it is gone,
/// each task on a connection of its own.
struct Load {
    tally: Arc<Tally>,
    tokens: Arc<Vec<String>>,
    /// Index of the next refresh token a Logout task takes.
    next_token: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
    started: Instant,
}

impl Load {
    /// Starts the Register tasks (new users) and the Logout tasks (working
    /// through `tokens`).
    fn start(server: &ChildServer, tokens: Vec<String>) -> Load {
        let tally = Arc::new(Tally::default());
        let tokens = Arc::new(tokens);
        let next_token = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for task in 0..REGISTER_TASKS {
            tasks.spawn(keep_registering(
                task,
                server.auth_client(),
                Arc::clone(&tally),
            ));
        }
        for _ in 0..LOGOUT_TASKS {
            tasks.spawn(keep_logging_out(
                server.auth_client(),
                Arc::clone(&tally),
                Arc::clone(&tokens),
                Arc::clone(&next_token),
            ));
        }
        Load {
            tally,
            tokens,
            next_token,
            tasks,
            started: Instant::now(),
        }
    }

    /// Waits until enough calls of each kind were acknowledged, at least
    /// 300 ms in; no call may fail meanwhile.
    async fn wait_until_enough_acknowledged(&self) {
        let tally = &self.tally;
        loop {
            let failures = tally.failed_before_kill();
            assert!(
                failures.is_empty(),
                "calls failed under load: {failures:#?}"
            );
            if tally.registered() >= MIN_ACKNOWLEDGED
                && tally.logged_out() >= MIN_ACKNOWLEDGED
                && self.started.elapsed() >= Duration::from_millis(300)
            {
                return;
            }
            assert!(
                self.started.elapsed() < Duration::from_secs(120),
                "too few calls acknowledged in 120 s: {} Register, {} Logout",
                tally.registered(),
                tally.logged_out()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Registers new users, `load{task}n{n}`, until the server is gone.
async fn keep_registering(task: usize, mut auth: AuthServiceClient<Channel>, tally: Arc<Tally>) {
    for n in 0.. {
        if tally.dead() {
            break;
        }
        let username = format!("load{task}n{n}");
        let started_alive = !tally.killing();
        match register(&mut auth, &username).await {
            Ok(user) => {
                if let Ok(mut registered) = tally.registered.lock() {
                    registered.push((username, user.id));
                }
            }
            Err(status) => {
                let what = format!("Register {username}: {status:?}");
                if tally.failed(started_alive, what) {
                    break;
                }
            }
        }
    }
}

/// Logs out of the next of `tokens` until they run out or the server is gone.
async fn keep_logging_out(
    mut auth: AuthServiceClient<Channel>,
    tally: Arc<Tally>,
    tokens: Arc<Vec<String>>,
    next_token: Arc<AtomicUsize>,
) {
    while !tally.dead() {
        let Some(token) = tokens.get(next_token.fetch_add(1, Ordering::SeqCst)) else {
            break;
        };
        let started_alive = !tally.killing();
        let logout = auth.logout(pb::LogoutRequest {
            refresh: token.clone(),
        });
        match call(logout).await {
            Ok(_) => {
                if let Ok(mut logged_out) = tally.logged_out.lock() {
                    logged_out.push(token.clone());
                }
            }
            Err(status) => {
                if tally.failed(started_alive, format!("Logout: {status:?}")) {
                    break;
                }
            }
        }
    }
}

/// The calls the server answered OK before it died.
struct Acknowledged {
    /// Username and id of every user registered.
    registered: Vec<(String, i64)>,
    /// Every refresh token logged out.
    logged_out: Vec<String>,
}

/// SIGKILL while `load` keeps calling, at a random 0–500 ms more so the
/// kill lands at a different point every run; checks that it was a clean
/// kill with calls in flight, and returns what was acknowledged.
async fn kill_mid_flight(server: ChildServer, mut load: Load) -> Acknowledged {
    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 500)).await;
    let tally = Arc::clone(&load.tally);
    let (registered_at_kill, logged_out_at_kill) = (tally.registered(), tally.logged_out());
    let tokens_taken = load.next_token.load(Ordering::SeqCst);
    let killed_after = load.started.elapsed();
    // The load goes on until the process is gone, so calls are in flight
    // when it dies.
    tally.killing.store(true, Ordering::SeqCst);
    let output = server.kill().await;
    tally.dead.store(true, Ordering::SeqCst);
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the server was not killed by SIGKILL but ended with {}: {}",
        output.status,
        stderr(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(task) = load.tasks.join_next().await {
            task.expect("load task");
        }
    })
    .await
    .expect("the load did not stop after the kill");

    let failures = tally.failed_before_kill();
    assert!(
        failures.is_empty(),
        "calls failed under load: {failures:#?}"
    );
    let registered = tally
        .registered
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let logged_out = tally
        .logged_out
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let cut_off = tally.cut_off.load(Ordering::SeqCst);
    eprintln!(
        "killed after {killed_after:?}: {registered_at_kill} Register and \
         {logged_out_at_kill} Logout acknowledged at the kill, {} and {} in all; \
         {cut_off} calls cut off; {tokens_taken} of {} refresh tokens taken",
        registered.len(),
        logged_out.len(),
        load.tokens.len(),
    );
    assert!(registered.len() >= MIN_ACKNOWLEDGED && logged_out.len() >= MIN_ACKNOWLEDGED);
    assert!(
        tokens_taken < load.tokens.len(),
        "the logout tasks ran out of tokens before the kill"
    );
    assert!(
        cut_off > 0,
        "no call was in flight when the server was killed"
    );
    Acknowledged {
        registered,
        logged_out,
    }
}

/// Every acknowledged Register: the user logs in, with the id it was given.
async fn assert_acknowledged_registers_kept(
    auth: &AuthServiceClient<Channel>,
    registered: &[(String, i64)],
) {
    let lost: Vec<String> = futures::stream::iter(registered.iter().cloned())
        .map(|(username, id)| {
            let mut auth = auth.clone();
            async move {
                match login(&mut auth, &username).await {
                    Ok(pair) if user_id(&pair.access) == Some(id) => None,
                    Ok(pair) => Some(format!(
                        "{username} (id {id}) logs in as user {}",
                        claims(&pair.access)["user_id"]
                    )),
                    Err(status) => Some(format!("{username} (id {id}): {status:?}")),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(std::future::ready)
        .collect()
        .await;
    assert!(lost.is_empty(), "acknowledged Register lost: {lost:#?}");
}

/// Every acknowledged Logout: the token is refused as blacklisted.
async fn assert_acknowledged_logouts_kept(
    auth: &AuthServiceClient<Channel>,
    logged_out: &[String],
) {
    let lost: Vec<String> = futures::stream::iter(logged_out.iter().cloned())
        .map(|token| {
            let mut auth = auth.clone();
            async move {
                let refresh = auth.refresh_token(pb::RefreshTokenRequest {
                    refresh: token.clone(),
                });
                match call(refresh).await {
                    Err(status)
                        if status.code() == Code::Unauthenticated
                            && status.message() == "Token is blacklisted" =>
                    {
                        None
                    }
                    other => Some(format!(
                        "jti {}: {:?}",
                        claims(&token)["jti"],
                        other.map(|_| "refreshed: the token still works")
                    )),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(std::future::ready)
        .collect()
        .await;
    assert!(lost.is_empty(), "acknowledged Logout lost: {lost:#?}");
}

/// Nothing half-written: every user in the database, acknowledged or not,
/// has a usable argon2id hash and logs in with the password it registered.
async fn assert_nothing_half_written(
    database_url: &str,
    auth: &AuthServiceClient<Channel>,
    registered: usize,
) {
    let acknowledged = PREPARED_USERS + registered;
    let users = stored_users(database_url).await;
    assert!(
        users.len() >= acknowledged,
        "{} users stored, {acknowledged} acknowledged",
        users.len(),
    );
    let unusable: Vec<&String> = users
        .iter()
        .filter(|(_, hash)| !hash.starts_with("$argon2id$"))
        .map(|(username, _)| username)
        .collect();
    assert!(unusable.is_empty(), "users without a hash: {unusable:?}");
    let broken: Vec<String> = futures::stream::iter(users.iter().map(|(u, _)| u.clone()))
        .map(|username| {
            let mut auth = auth.clone();
            async move {
                login(&mut auth, &username)
                    .await
                    .err()
                    .map(|status| format!("{username}: {status:?}"))
            }
        })
        .buffer_unordered(8)
        .filter_map(std::future::ready)
        .collect()
        .await;
    assert!(broken.is_empty(), "stored users cannot log in: {broken:#?}");
    eprintln!(
        "{} users stored ({acknowledged} acknowledged, {} written but unacknowledged)",
        users.len(),
        users.len() - acknowledged
    );
}

const SLOW_REGISTERS: usize = 16;
/// Draining the slow calls takes seconds on a loaded machine: the grace
/// period leaves room for worse, and still fails the test if the server
/// waits for it to run out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_calls_and_exits_zero() {
    for backend in Backend::configured() {
        eprintln!("--- on {backend}");
        sigterm_under_load(&backend).await;
    }
}

async fn sigterm_under_load(backend: &Backend) {
    let database = TestDatabase::create(backend).await;
    let grace = humantime::format_duration(SHUTDOWN_GRACE).to_string();
    let mut server = ChildServer::start(
        &database.url,
        &[
            // Slow hashing: every Register takes a while.
            ("AUTH_ARGON2_ITERATIONS", "10"),
            // Calls wait for a hashing slot for as long as it takes: what is
            // tested is the shutdown, not the shedding of a full hash queue
            // (past its default 2 s wait, RESOURCE_EXHAUSTED).
            ("AUTH_PASSWORD_HASH_QUEUE_TIMEOUT", "120s"),
            ("AUTH_SHUTDOWN_GRACE", &grace),
        ],
    )
    .await;
    let calls = slow_registers_on_the_wire(&server).await;
    let sigterm_at = Instant::now();
    server.signal("TERM");
    let probe = new_connection_after_sigterm(&mut server).await;
    let output = server.wait(SHUTDOWN_GRACE + Duration::from_secs(30)).await;
    let stopped_after = sigterm_at.elapsed();
    let (in_flight, failed) = outcome_of(calls, sigterm_at).await;
    eprintln!(
        "{in_flight} of {SLOW_REGISTERS} calls in flight at SIGTERM; exited {} after \
         {stopped_after:?}; new connection at +300 ms (server {}): {:?}",
        output.status,
        if probe.server_was_running {
            "still running"
        } else {
            "already gone"
        },
        probe.answer,
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert!(
        stopped_after < SHUTDOWN_GRACE,
        "stopping took {stopped_after:?}, the whole grace period: calls were cut off"
    );
    assert!(
        failed.is_empty(),
        "calls in flight at SIGTERM failed: {failed:#?}"
    );
    assert!(
        in_flight >= SLOW_REGISTERS / 2,
        "only {in_flight} calls were in flight at SIGTERM: the test proves little"
    );
    let status = probe
        .answer
        .expect_err("a call on a new connection after SIGTERM was served");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        probe.server_was_running,
        "the server had already exited: the new connection was not refused by a stopping server"
    );
    assert_only_the_slow_registers_stored(&database.url).await;
}

/// Starts `SLOW_REGISTERS` Register calls, `slow{i}`, on one established
/// connection, and returns once they are all on the wire and being served:
/// each call's username, answer and end.
async fn slow_registers_on_the_wire(
    server: &ChildServer,
) -> JoinSet<(String, Result<pb::User, Status>, Instant)> {
    let channel = Channel::from_shared(server.uri())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("cannot connect");
    let auth = AuthServiceClient::new(channel);

    let started_calls = Arc::new(AtomicUsize::new(0));
    let mut calls = JoinSet::new();
    for i in 0..SLOW_REGISTERS {
        let mut auth = auth.clone();
        let started_calls = Arc::clone(&started_calls);
        calls.spawn(async move {
            let username = format!("slow{i}");
            let request = auth.register(register_request(&username));
            started_calls.fetch_add(1, Ordering::SeqCst);
            let result = call(request).await;
            (username, result, Instant::now())
        });
    }
    while started_calls.load(Ordering::SeqCst) < SLOW_REGISTERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    calls
}

/// A Register on a new connection, and whether the server was running
/// around it.
struct Probe {
    answer: Result<pb::User, Status>,
    /// Running both before and after the call: a refusal came from a
    /// stopping server, not an exited one.
    server_was_running: bool,
}

/// A new connection once the server has had time to see the signal (the
/// slow calls keep it busy for a while yet).
async fn new_connection_after_sigterm(server: &mut ChildServer) -> Probe {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive_at_probe = server.is_running();
    let answer = register(&mut server.auth_client(), "late").await;
    let alive_after_probe = server.is_running();
    Probe {
        answer,
        server_was_running: alive_at_probe && alive_after_probe,
    }
}

/// How many `calls` finished after `sigterm_at` (in flight at SIGTERM), and
/// those that failed.
async fn outcome_of(
    mut calls: JoinSet<(String, Result<pb::User, Status>, Instant)>,
    sigterm_at: Instant,
) -> (usize, Vec<String>) {
    let mut in_flight = 0;
    let mut failed = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (username, result, finished_at) = joined.expect("call");
        if finished_at > sigterm_at {
            in_flight += 1;
        }
        if let Err(status) = result {
            failed.push(format!("{username}: {status:?}"));
        }
    }
    (in_flight, failed)
}

/// Every finished call is in the database, with the slow hash; the late one is not.
async fn assert_only_the_slow_registers_stored(database_url: &str) {
    let users = stored_users(database_url).await;
    let mut usernames: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    usernames.sort_unstable();
    let mut expected: Vec<String> = (0..SLOW_REGISTERS).map(|i| format!("slow{i}")).collect();
    expected.sort_unstable();
    assert_eq!(usernames, expected);
    for (username, hash) in &users {
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=10,p=1$"),
            "{username}: {hash}"
        );
    }
}
