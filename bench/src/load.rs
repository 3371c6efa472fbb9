//! The scenarios: what is prepared before the clock starts, what one call
//! is, and the closed loop that counts calls by status and times the OK ones.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use auth_service::pb::{
    self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use auth_service::telemetry::metrics::grpc_code_name;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::connection::Connection;

/// Valid under the service's password rules (length, common list, similarity).
pub const PASSWORD: &str = "auth-bench loadgen passphrase 7f3k";
/// Registrations and logins in flight while preparing: enough to keep the
/// server's hashing pool busy, far below its hash queue limit (64).
const PREPARE_PARALLELISM: usize = 8;
/// Calls still running this long after the end are abandoned (not counted).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Workers share this many tallies at most: a histogram is ~190 KiB, one
/// per worker would be ~1 GiB at 5,000 workers, and a call or two a second
/// per worker never contends on a lock.
const TALLY_SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// grpc.health.v1.Health/Check: transport, HTTP/2 and tonic only; the ceiling.
    Health,
    /// UserService/GetMe: bearer check plus one user row.
    GetMe,
    /// AuthService/VerifyToken with access tokens.
    Verify,
    /// AuthService/RefreshToken (rotation per the server's settings).
    Refresh,
    /// AuthService/ObtainTokenPair with the right password: one argon2 verify.
    Login,
    /// The same, every worker logging in to one account at once (a worker
    /// pool sharing a service account): must match `login`'s rate.
    LoginOneAccount,
    /// AuthService/Register of a new user: one argon2 hash and an insert.
    Register,
    /// UserService/ListUsers, paging through from the start.
    ListUsers,
    /// UserService/BatchGetUsers of 100 prepared users' ids (cycling
    /// through them when fewer are prepared), each call from another start.
    BatchGetUsers,
    /// AuthService/ObtainServiceToken with a client secret: a SHA-256 and
    /// a signature, no argon2, no write.
    ServiceToken,
    /// AuthService/ObtainServiceToken with an EdDSA assertion signed for
    /// each call (a fresh jti: one insert each).
    ServiceTokenAssertion,
}

/// The test key the service-token-assertion scenario signs with; its
/// public half is registered to the prepared service account.
const SERVICE_KEY: &str = include_str!("../../tests/keys/service-ed25519.pem");
const SERVICE_PUBLIC_KEY: &str = include_str!("../../tests/keys/service-ed25519.pub.pem");

/// The service account the service-token scenarios obtain tokens for.
struct ServiceClient {
    client_id: String,
    secret: String,
    kid: String,
    key: jsonwebtoken::EncodingKey,
    /// Assertions signed while preparing, each used once, so that the
    /// load tool's own signing does not take the cores the server is
    /// measured on; past the last one, each call signs its own.
    presigned: Vec<String>,
    next_presigned: std::sync::atomic::AtomicUsize,
}

impl ServiceClient {
    fn assertion(&self) -> Result<String, Status> {
        let next = self
            .next_presigned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.presigned.get(next) {
            Some(assertion) => Ok(assertion.clone()),
            None => assertion(self),
        }
    }
}

/// Ids per `batch-get-users` call.
const BATCH_IDS: usize = 100;

pub struct Options {
    pub scenario: Scenario,
    pub concurrency: usize,
    /// Open loop: calls started per second in all; `None`: closed loop.
    pub rate: Option<f64>,
    pub users: usize,
    pub page_size: i32,
    /// The database of the server auth-bench started (`None` with `--addr`).
    pub database_url: Option<String>,
    /// Assertions `service-token-assertion` signs before the run.
    pub presigned_assertions: usize,
}

/// One prepared user and the tokens it got at login.
struct Account {
    /// The user's id, for `batch-get-users`.
    id: i64,
    username: String,
    access: String,
    /// `authorization` metadata, parsed once rather than on every call.
    bearer: AsciiMetadataValue,
}

pub struct Prepared {
    /// Makes this run's usernames unique, so runs can share a database.
    run_id: String,
    accounts: Vec<Account>,
    /// One refresh token per worker: with rotation and blacklisting, two
    /// workers sharing a token would make one of them fail.
    refresh: Vec<String>,
    /// The service-token scenarios' account.
    service: Option<ServiceClient>,
}

impl Prepared {
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }
}

/// Registers and logs in `options.users` users (and, for `refresh`, logs in
/// again until every worker has a refresh token of its own).
pub async fn prepare(connection: &Connection, options: &Options) -> anyhow::Result<Prepared> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut prepared = Prepared {
        run_id,
        accounts: Vec::new(),
        refresh: Vec::new(),
        service: None,
    };
    if matches!(
        options.scenario,
        Scenario::ServiceToken | Scenario::ServiceTokenAssertion
    ) {
        let database_url = options.database_url.as_deref().context(
            "the service-token scenarios prepare their account in the server's database: \
             let auth-bench start the server (no --addr)",
        )?;
        let mut client = service_client(database_url, &prepared.run_id).await?;
        if options.scenario == Scenario::ServiceTokenAssertion {
            client.presigned = presign(&client, options.presigned_assertions)?;
        }
        prepared.service = Some(client);
        return Ok(prepared);
    }
    // The ceiling and Register need no accounts; skip the argon2 work.
    if matches!(options.scenario, Scenario::Health | Scenario::Register) {
        return Ok(prepared);
    }
    let usernames: Vec<String> = (0..options.users)
        .map(|i| format!("bench-{}-u{i}", prepared.run_id))
        .collect();
    let extra_logins = match options.scenario {
        Scenario::Refresh => options.concurrency.saturating_sub(options.users),
        _ => 0,
    };
    let registered = in_parallel(
        usernames.clone(),
        connection,
        |mut auth, username| async move {
            let user = auth
                .register(register_request(&username))
                .await?
                .into_inner();
            let pair = login(&mut auth, &username).await?;
            Ok((username, user.id, pair))
        },
    )
    .await
    .context("preparing users")?;
    let extra = (0..extra_logins)
        .map(|i| usernames[i % usernames.len()].clone())
        .collect();
    let extra = in_parallel(extra, connection, |mut auth, username| async move {
        login(&mut auth, &username).await
    })
    .await
    .context("preparing refresh tokens")?;

    for (username, id, pair) in registered {
        let bearer = MetadataValue::try_from(format!("Bearer {}", pair.access))?;
        prepared.refresh.push(pair.refresh);
        prepared.accounts.push(Account {
            id,
            username,
            access: pair.access,
            bearer,
        });
    }
    prepared
        .refresh
        .extend(extra.into_iter().map(|p| p.refresh));
    Ok(prepared)
}

/// Runs `call` for every input, `PREPARE_PARALLELISM` at a time, keeping the
/// inputs' order in the results.
async fn in_parallel<T, F, Fut>(
    inputs: Vec<String>,
    connection: &Connection,
    call: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(AuthServiceClient<Connection>, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, Status>> + Send,
{
    let inputs = Arc::new(inputs);
    let mut tasks = JoinSet::new();
    for lane in 0..PREPARE_PARALLELISM {
        let (inputs, call) = (Arc::clone(&inputs), call.clone());
        let auth = connection.auth();
        tasks.spawn(async move {
            let mut done = Vec::new();
            for i in (lane..inputs.len()).step_by(PREPARE_PARALLELISM) {
                let value = call(auth.clone(), inputs[i].clone()).await.map_err(|s| {
                    anyhow::anyhow!("{}: {:?} {}", inputs[i], s.code(), s.message())
                })?;
                done.push((i, value));
            }
            anyhow::Ok(done)
        });
    }
    let mut results = Vec::with_capacity(inputs.len());
    while let Some(lane) = tasks.join_next().await {
        results.extend(lane??);
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, value)| value).collect())
}

fn register_request(username: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: format!("{username}@bench.example.com"),
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        avatar: None,
    }
}

/// Creates service account `bench-<run>` with one secret and one Ed25519
/// key straight in the server's database, as `auth-service service-account`
/// would (AdminService would need a staff user, which the API cannot make).
async fn service_client(database_url: &str, run_id: &str) -> anyhow::Result<ServiceClient> {
    use auth_service::{
        config::Settings,
        domain::{CredentialId, PublicKey, Scopes, ServiceAccountName, client_secret_digest},
        persistence::{self, ServiceAccounts, db_now, service_accounts::ReservedScopes},
        telemetry::metrics::CacheMetrics,
    };
    let describe = |e: persistence::StoreError| anyhow::anyhow!("{e}");
    let mut settings = Settings::default();
    settings.database.url = database_url.into();
    let db = persistence::open(&settings.database).await?;
    let accounts = ServiceAccounts::new(db.clone(), settings.cache, CacheMetrics::default());
    let client_id = format!("bench-{run_id}");
    let name = ServiceAccountName::parse(&client_id).map_err(anyhow::Error::msg)?;
    let scopes =
        Scopes::parse(["bench:read", "bench:write"]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let account = accounts
        .create(&name, &scopes, db_now())
        .await
        .map_err(describe)?;
    let secret = format!("bench-secret-{}", uuid::Uuid::new_v4().simple());
    accounts
        .add_secret(
            account.id,
            &CredentialId::generate(),
            client_secret_digest(&secret),
            db_now(),
            ReservedScopes::Allowed,
        )
        .await
        .map_err(describe)?;
    let kid = CredentialId::generate();
    let public = PublicKey::parse(SERVICE_PUBLIC_KEY).map_err(anyhow::Error::msg)?;
    accounts
        .add_key(account.id, &kid, &public, db_now(), ReservedScopes::Allowed)
        .await
        .map_err(describe)?;
    db.close().await?;
    Ok(ServiceClient {
        client_id,
        secret,
        kid: kid.as_str().to_owned(),
        key: jsonwebtoken::EncodingKey::from_ed_pem(SERVICE_KEY.as_bytes())?,
        presigned: Vec::new(),
        next_presigned: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// `count` assertions of `client`, signed on every core.
fn presign(client: &ServiceClient, count: usize) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let signers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    (0..per_thread)
                        .map(|_| assertion(client))
                        .collect::<Result<Vec<_>, Status>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(per_thread * threads);
        for signer in signers {
            let signed = signer
                .join()
                .map_err(|_| anyhow::anyhow!("an assertion signer panicked"))?
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            all.extend(signed);
        }
        Ok(all)
    })
}

/// An RFC 7523 client assertion from `client`, valid almost the 5 minutes
/// the server allows (so that presigned ones outlast a run), with a jti of
/// its own.
fn assertion(client: &ServiceClient) -> Result<String, Status> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": client.client_id, "sub": client.client_id, "aud": "auth-service",
        "iat": now, "exp": now + 290, "jti": uuid::Uuid::new_v4().simple().to_string(),
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(client.kid.clone());
    jsonwebtoken::encode(&header, &claims, &client.key)
        .map_err(|e| Status::internal(format!("signing the assertion: {e}")))
}

async fn login(
    auth: &mut AuthServiceClient<Connection>,
    username: &str,
) -> Result<pb::TokenPair, Status> {
    let request = pb::ObtainTokenPairRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
    };
    Ok(auth.obtain_token_pair(request).await?.into_inner())
}

/// One worker: its clients and where it is in the prepared data.
struct Worker {
    id: usize,
    scenario: Scenario,
    prepared: Arc<Prepared>,
    health: HealthClient<Connection>,
    auth: AuthServiceClient<Connection>,
    users: UserServiceClient<Connection>,
    /// Round-robin position; workers start apart and step by the worker
    /// count, so together they cycle through every account evenly.
    next: usize,
    step: usize,
    /// `refresh`: the token to send next (the rotated one, when rotation is on).
    refresh: String,
    /// `list-users`: the next page; empty means the first.
    page_token: String,
    page_size: i32,
    /// `register`: this worker's registrations so far.
    registered: u64,
}

impl Worker {
    fn account(&mut self) -> &Account {
        let accounts = &self.prepared.accounts;
        let account = &accounts[self.next % accounts.len()];
        self.next = self.next.wrapping_add(self.step);
        account
    }

    fn bearer<T>(&mut self, message: T) -> Request<T> {
        let bearer = self.account().bearer.clone();
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    /// One call; `Ok` carries the user rows it returned (list-users and
    /// batch-get-users; 0 otherwise).
    async fn call(&mut self) -> Result<u64, Status> {
        let mut rows = 0;
        match self.scenario {
            Scenario::Health => {
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                self.health.check(request).await?;
            }
            Scenario::GetMe => {
                let request = self.bearer(pb::GetMeRequest {});
                self.users.get_me(request).await?;
            }
            Scenario::Verify => {
                let token = self.account().access.clone();
                let request = pb::VerifyTokenRequest { token };
                self.auth.verify_token(request).await?;
            }
            Scenario::Refresh => {
                let request = pb::RefreshTokenRequest {
                    refresh: self.refresh.clone(),
                };
                let pair = self.auth.refresh_token(request).await?.into_inner();
                // Empty unless the server rotates; then the old one is spent.
                if !pair.refresh.is_empty() {
                    self.refresh = pair.refresh;
                }
            }
            Scenario::Login => {
                let username = self.account().username.clone();
                login(&mut self.auth, &username).await?;
            }
            Scenario::LoginOneAccount => {
                let username = self.prepared.accounts[0].username.clone();
                login(&mut self.auth, &username).await?;
            }
            Scenario::Register => {
                self.registered += 1;
                let username = format!(
                    "bench-{}-w{}-n{}",
                    self.prepared.run_id, self.id, self.registered
                );
                self.auth.register(register_request(&username)).await?;
            }
            Scenario::ListUsers => {
                let page = pb::ListUsersRequest {
                    page_size: self.page_size,
                    page_token: std::mem::take(&mut self.page_token),
                    filter: String::new(),
                };
                let request = self.bearer(page);
                let page = self.users.list_users(request).await?.into_inner();
                rows = page.users.len() as u64;
                // The last page answers an empty token: start again.
                self.page_token = page.next_page_token;
            }
            Scenario::BatchGetUsers => {
                let accounts = &self.prepared.accounts;
                let start = self.next;
                let ids = (0..BATCH_IDS)
                    .map(|i| accounts[start.wrapping_add(i) % accounts.len()].id)
                    .collect();
                let request = self.bearer(pb::BatchGetUsersRequest { ids });
                let batch = self.users.batch_get_users(request).await?.into_inner();
                if batch.users.len() != BATCH_IDS {
                    return Err(Status::internal(format!(
                        "{} of {BATCH_IDS} users found",
                        batch.users.len()
                    )));
                }
                rows = BATCH_IDS as u64;
            }
            Scenario::ServiceToken | Scenario::ServiceTokenAssertion => {
                let client = self
                    .prepared
                    .service
                    .as_ref()
                    .ok_or_else(|| Status::internal("no service account prepared"))?;
                let request = if self.scenario == Scenario::ServiceToken {
                    pb::ObtainServiceTokenRequest {
                        client_id: client.client_id.clone(),
                        client_secret: client.secret.clone(),
                        ..Default::default()
                    }
                } else {
                    pb::ObtainServiceTokenRequest {
                        assertion: client.assertion()?,
                        ..Default::default()
                    }
                };
                self.auth.obtain_service_token(request).await?;
            }
        }
        Ok(rows)
    }
}

/// What some workers saw inside the measured window.
struct Tally {
    latency_us: Histogram<u64>,
    /// Open loop: how late calls started after they were due (their worker
    /// was still in the previous call, or the timer fired late); already
    /// inside `latency_us`, shown apart to tell the tool's delay from the
    /// server's.
    start_lag_us: Histogram<u64>,
    /// Indexed by gRPC code (0..=16).
    codes: [u64; 17],
    /// User rows returned by the OK calls.
    rows: u64,
}

impl Tally {
    fn new(histogram: &Histogram<u64>) -> Self {
        Self {
            latency_us: histogram.clone(),
            start_lag_us: histogram.clone(),
            codes: [0; 17],
            rows: 0,
        }
    }

    fn add(&mut self, other: &Self) {
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.start_lag_us.add(&other.start_lag_us);
        for (sum, n) in self.codes.iter_mut().zip(other.codes) {
            *sum += n;
        }
        self.rows += other.rows;
    }
}

pub struct Outcome {
    pub elapsed: Duration,
    /// Latency of the OK calls only, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Open loop only: start lag of every call, in microseconds.
    pub start_lag_us: Option<Histogram<u64>>,
    /// (canonical code name, calls), in code order, only codes seen.
    pub codes: Vec<(&'static str, u64)>,
    /// User rows returned by the OK calls (list-users, batch-get-users).
    pub rows: u64,
}

impl Outcome {
    pub fn ok(&self) -> u64 {
        self.codes
            .iter()
            .find(|(code, _)| *code == "OK")
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> u64 {
        self.codes.iter().map(|(_, n)| n).sum()
    }

    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }

    /// Calls completed a second, whatever their status: in open loop, the
    /// rate achieved against the one asked for.
    pub fn completed_per_second(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The closed loop: every worker calls back to back until `warmup +
/// duration`; a call counts if it completes inside the measured window.
pub async fn run(
    connections: &[Connection],
    options: &Options,
    prepared: Prepared,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    // 1 µs to 1 h at 3 significant digits; recorded saturating, so a
    // longer call cannot fail the run.
    let empty = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
    let prepared = Arc::new(prepared);
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let started = Instant::now();
    // Open loop: each worker starts a call every `period`, the workers
    // offset so that together they start `rate` a second. A call that
    // starts late (its worker still busy) is timed from when it was due,
    // so the server's queueing cannot hide behind the client's waiting.
    let period = options
        .rate
        .map(|rate| Duration::from_secs_f64(options.concurrency as f64 / rate));
    let shards: Arc<[Mutex<Tally>]> = (0..options.concurrency.min(TALLY_SHARDS))
        .map(|_| Mutex::new(Tally::new(&empty)))
        .collect();
    let mut workers = JoinSet::new();
    for id in 0..options.concurrency {
        let mut due =
            period.map(|period| started + period.mul_f64(id as f64 / options.concurrency as f64));
        let connection = &connections[id % connections.len()];
        let mut worker = Worker {
            id,
            scenario: options.scenario,
            refresh: prepared.refresh.get(id).cloned().unwrap_or_default(),
            prepared: Arc::clone(&prepared),
            health: connection.health(),
            auth: connection.auth(),
            users: connection.users(),
            next: id,
            step: options.concurrency,
            page_token: String::new(),
            page_size: options.page_size,
            registered: 0,
        };
        let shards = Arc::clone(&shards);
        workers.spawn(async move {
            let shard = &shards[id % shards.len()];
            let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
            while Instant::now() < until {
                let began = match (due.as_mut(), period) {
                    (Some(due), Some(period)) => {
                        tokio::time::sleep_until((*due).into()).await;
                        let began = *due;
                        *due += period;
                        began
                    }
                    _ => Instant::now(),
                };
                if began >= until {
                    break;
                }
                let lag = Instant::now().saturating_duration_since(began);
                let result = worker.call().await;
                let ended = Instant::now();
                if ended < measure_from || ended >= until {
                    continue;
                }
                // A worker that panicked while holding it poisons nothing we need.
                let mut tally = shard.lock().unwrap_or_else(|e| e.into_inner());
                let code = match result {
                    Ok(rows) => {
                        tally.rows += rows;
                        tally.latency_us.saturating_record(micros(ended - began));
                        Code::Ok
                    }
                    Err(status) => status.code(),
                };
                tally.codes[code as usize] += 1;
                if period.is_some() {
                    tally.start_lag_us.saturating_record(micros(lag));
                }
            }
        });
    }

    let drained = tokio::time::timeout_at((until + DRAIN_TIMEOUT).into(), async {
        // A worker that panicked counted what it had done already.
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "auth-bench: {} workers still in a call {DRAIN_TIMEOUT:?} after the end; abandoned",
            workers.len()
        );
    }
    // Abandoned workers are aborted when `workers` drops; they lock a
    // shard only between two calls, never across an await.
    let mut total = Tally::new(&empty);
    for shard in shards.iter() {
        total.add(&shard.lock().unwrap_or_else(|e| e.into_inner()));
    }
    let codes = total
        .codes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| (grpc_code_name(code), *n))
        .collect();
    Ok(Outcome {
        elapsed: duration,
        latency_us: total.latency_us,
        start_lag_us: period.is_some().then_some(total.start_lag_us),
        codes,
        rows: total.rows,
    })
}
