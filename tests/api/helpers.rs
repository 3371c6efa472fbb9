//! Spawning the real server on port 0 against a fresh database, and the
//! clients and token tools the tests share.
//!
//! Every test runs on SQLite, and also on PostgreSQL and MariaDB when
//! `AUTH_TEST_POSTGRES_URL` / `AUTH_TEST_MYSQL_URL` name a server: each run
//! gets a database of its own, created here and dropped afterwards.

use std::{fmt, path::PathBuf};

use auth_service::{
    config::{Secret, Settings},
    domain::{Email, Username},
    pb::{
        self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
        user_service_client::UserServiceClient,
    },
    persistence::users::{self, NewUser},
    startup::Application,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sha2::Sha256;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, transport::Channel};

pub const SECRET: &str = "integration-test-signing-key-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery";

#[derive(Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
    MySql(String),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
            Backend::MySql(_) => "MariaDB/MySQL",
        })
    }
}

impl Backend {
    /// SQLite, plus every server the environment names.
    pub fn configured() -> Vec<Backend> {
        let mut backends = vec![Backend::Sqlite];
        if let Ok(url) = std::env::var("AUTH_TEST_POSTGRES_URL") {
            backends.push(Backend::Postgres(url));
        }
        if let Ok(url) = std::env::var("AUTH_TEST_MYSQL_URL") {
            backends.push(Backend::MySql(url));
        }
        backends
    }
}

/// Runs `test` once per configured backend, one after the other. A failure
/// names the backend in the captured output.
pub async fn on_every_backend(test: impl AsyncFn(Backend)) {
    for backend in Backend::configured() {
        eprintln!("--- on {backend}");
        test(backend).await;
    }
}

/// A database of one test's own; dropped with it.
pub struct TestDatabase {
    pub url: String,
    sqlite_file: Option<PathBuf>,
    server: Option<(Backend, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: &Backend) -> TestDatabase {
        let name = format!("auth_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let path: PathBuf = dir.path().join("auth.db");
                TestDatabase {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    sqlite_file: Some(path),
                    server: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres(admin) | Backend::MySql(admin) => {
                let conn = Database::connect(admin.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach the {backend} test server: {e}"));
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE on {backend}: {e}"));
                conn.close().await.ok();
                let mut url = url::Url::parse(admin).unwrap_or_else(|e| panic!("{admin}: {e}"));
                url.set_path(&name);
                TestDatabase {
                    url: url.to_string(),
                    sqlite_file: None,
                    server: Some((backend.clone(), name)),
                    _dir: None,
                }
            }
        }
    }

    /// The database file, for SQLite.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((backend, name)) = self.server.take() else {
            return;
        };
        // Drop may run inside a runtime (or a panic): use a thread of our own.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async {
                let (admin, sql) = match &backend {
                    Backend::Postgres(admin) => (
                        admin,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ),
                    Backend::MySql(admin) => (admin, format!("DROP DATABASE IF EXISTS {name}")),
                    Backend::Sqlite => return,
                };
                if let Ok(conn) = Database::connect(admin.as_str()).await {
                    let _ = conn.execute_unprepared(&sql).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// The running server and clients for it.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The HTTP listener's address, when the settings turned it on
    /// (`settings.server.http_addr`).
    pub http_addr: Option<std::net::SocketAddr>,
    pub auth: AuthServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    channel: Channel,
    /// The server's own pool, for arranging state the API cannot (deactivating a user).
    pub db: DatabaseConnection,
    /// How long a change made behind the server's back may go unseen.
    pub cache_ttl: std::time::Duration,
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// `None` for a second server on another app's database.
    _database: Option<TestDatabase>,
}

/// The server's settings for the tests: database `url`, a free port, [`SECRET`].
pub fn test_settings(url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.database.url = Secret::from(url);
    settings.tokens.jwt_secret = Some(Secret::from(SECRET));
    settings
}

impl TestApp {
    /// One ListUsers page for the holder of `access`.
    pub async fn list_users_page(
        &self,
        access: &str,
        filter: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListUsersResponse, Status> {
        self.users
            .clone()
            .list_users(bearer(
                pb::ListUsersRequest {
                    page_size,
                    page_token: page_token.into(),
                    filter: filter.into(),
                },
                access,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Inserts `n` users `seed<i>` (`seed<i>@example.com`) straight into
    /// the database, in batches and without hashing: fast, and exercises
    /// `users::insert_many` on every backend. `is_staff(i)` says which are
    /// staff.
    pub async fn seed_users(&self, n: usize, is_staff: impl Fn(usize) -> bool) {
        let now = chrono::Utc::now().naive_utc();
        let new_users: Vec<NewUser> = (0..n)
            .map(|i| NewUser {
                email: Email::parse(&format!("seed{i}@example.com")).unwrap(),
                username: Username::parse(&format!("seed{i}")).unwrap(),
                password_hash: "!unusable".into(),
                avatar: None,
                is_staff: is_staff(i),
                is_superuser: false,
            })
            .collect();
        let mut batches = new_users.into_iter().peekable();
        while batches.peek().is_some() {
            let batch: Vec<NewUser> = batches.by_ref().take(400).collect();
            users::insert_many(&self.db, batch, now).await.unwrap();
        }
    }

    /// Spawns the server on a fresh database of `backend`.
    pub async fn spawn(backend: &Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns the server with `configure` applied to the test settings.
    pub async fn spawn_with(backend: &Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
        // The server's log, for debugging a failure: TEST_LOG=1 cargo test.
        if std::env::var_os("TEST_LOG").is_some() {
            // The writers live as long as the test process.
            std::mem::forget(auth_service::telemetry::init(
                auth_service::telemetry::Format::Text,
                None,
            ));
        }
        let database = TestDatabase::create(backend).await;
        let mut app = Self::start(&database.url, configure).await;
        app._database = Some(database);
        app
    }

    /// Another server on an existing database (a replica, or a restart).
    pub async fn spawn_on(url: &str) -> TestApp {
        Self::start(url, |_| {}).await
    }

    /// As [`Self::spawn_on`], with `configure` applied to the test settings.
    pub async fn spawn_on_with(url: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
        Self::start(url, configure).await
    }

    async fn start(url: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = test_settings(url);
        configure(&mut settings);
        let cache_ttl = settings.cache.ttl;
        let app = Application::build(settings)
            .await
            .expect("server failed to start");
        let addr = app.local_addr();
        let http_addr = app.http_addr();
        let db = app.database().clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stop.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        TestApp {
            addr,
            http_addr,
            auth: AuthServiceClient::new(channel.clone()),
            users: UserServiceClient::new(channel.clone()),
            channel,
            db,
            cache_ttl,
            url: url.to_owned(),
            shutdown: Some(shutdown),
            server: Some(server),
            _database: None,
        }
    }

    /// A client for AdminService on this server.
    pub fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .expect("no row");
        row.try_get::<i64>("", "n").unwrap()
    }

    /// Stops the server gracefully and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let result = server.await.expect("server task");
            result.expect("server error");
        }
    }

    pub async fn register(&self, username: &str) -> pb::User {
        self.try_register(username, &format!("{username}@example.com"), PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("register {username}: {s:?}"))
    }

    pub async fn try_register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<pb::User, Status> {
        self.auth
            .clone()
            .register(pb::RegisterRequest {
                email: email.into(),
                username: username.into(),
                password: password.into(),
                avatar: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn login(&self, username: &str) -> pb::TokenPair {
        self.try_login(username, PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("login {username}: {s:?}"))
    }

    pub async fn try_login(&self, username: &str, password: &str) -> Result<pb::TokenPair, Status> {
        self.auth
            .clone()
            .obtain_token_pair(pb::ObtainTokenPairRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn refresh(&self, refresh: &str) -> Result<pb::TokenPair, Status> {
        self.auth
            .clone()
            .refresh_token(pb::RefreshTokenRequest {
                refresh: refresh.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn verify(&self, token: &str) -> Result<pb::VerifyTokenResponse, Status> {
        self.auth
            .clone()
            .verify_token(pb::VerifyTokenRequest {
                token: token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn logout(&self, refresh: &str) -> Result<pb::LogoutResponse, Status> {
        self.auth
            .clone()
            .logout(pb::LogoutRequest {
                refresh: refresh.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get_me(&self, access: &str) -> Result<pb::User, Status> {
        self.users
            .clone()
            .get_me(bearer(pb::GetMeRequest {}, access))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers `username` and logs in.
    pub async fn signed_up(&self, username: &str) -> (pb::User, pb::TokenPair) {
        let user = self.register(username).await;
        let tokens = self.login(username).await;
        (user, tokens)
    }

    /// Deactivates or reactivates in the database, as an admin would, and
    /// waits out the user cache: the bound the service documents for
    /// changes made outside it.
    pub async fn set_active(&self, user_id: i64, active: bool) {
        self.db
            .execute_unprepared(&format!(
                "UPDATE users SET is_active = {} WHERE id = {user_id}",
                if active { "TRUE" } else { "FALSE" }
            ))
            .await
            .unwrap();
        tokio::time::sleep(self.cache_ttl).await;
    }

    /// Grants or revokes staff status in the database, as an admin would;
    /// waits like [`Self::set_active`].
    pub async fn set_staff(&self, user_id: i64, staff: bool) {
        self.db
            .execute_unprepared(&format!(
                "UPDATE users SET is_staff = {} WHERE id = {user_id}",
                if staff { "TRUE" } else { "FALSE" }
            ))
            .await
            .unwrap();
        tokio::time::sleep(self.cache_ttl).await;
    }

    pub async fn stored_password_hash(&self, user_id: i64) -> String {
        auth_service::persistence::users::find_by_id(&self.db, user_id)
            .await
            .unwrap()
            .map(|u| u.password)
            .unwrap_or_else(|| panic!("no user {user_id}"))
    }

    /// Deletes in the database, as an admin would; waits like [`Self::set_active`].
    pub async fn delete_user(&self, user_id: i64) {
        self.db
            .execute_unprepared(&format!("DELETE FROM users WHERE id = {user_id}"))
            .await
            .unwrap();
        tokio::time::sleep(self.cache_ttl).await;
    }
}

/// Register `username` as `<username>@example.com` with [`PASSWORD`].
pub fn register_request(username: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: format!("{username}@example.com"),
        username: username.into(),
        password: PASSWORD.into(),
        avatar: None,
    }
}

/// `message` with `authorization: Bearer <token>` metadata.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_authorization(message, &format!("Bearer {token}"))
}

/// `message` with `authorization: <value>` metadata, `value` as it is.
pub fn with_authorization<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = value
        .parse()
        .unwrap_or_else(|e| panic!("metadata {value:?}: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

/// Asserts `result` failed with `code`, returning the status.
#[track_caller]
pub fn expect_code<T: fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Asserts UNAUTHENTICATED because the refresh token was logged out or
/// rotated out.
#[track_caller]
pub fn expect_blacklisted<T: fmt::Debug>(result: Result<T, Status>) {
    let status = expect_code(result, Code::Unauthenticated);
    assert_eq!(status.message(), "Token is blacklisted");
}

/// Asserts INVALID_ARGUMENT with DRF's blank-field message as the one
/// `google.rpc.BadRequest` field violation, naming `field`.
#[track_caller]
pub fn expect_blank_field<T: fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = expect_code(result, Code::InvalidArgument);
    assert_eq!(
        field_violations(&status),
        [(field.to_owned(), "This field may not be blank.".to_owned())],
        "{status:?}"
    );
}

/// The `google.rpc.BadRequest` field violations of `status`, as (field, description).
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON payload of a JWT, decoded without any checks.
pub fn claims(token: &str) -> serde_json::Value {
    part(token, 1)
}

/// The JSON header of a JWT, decoded without any checks.
pub fn header(token: &str) -> serde_json::Value {
    part(token, 0)
}

fn part(token: &str, index: usize) -> serde_json::Value {
    let segment = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = URL_SAFE_NO_PAD.decode(segment).expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

/// Signs `header.payload` with HMAC-SHA256 by hand, as PyJWT does: tokens
/// made here do not depend on the service's JWT library.
pub fn forge(header: &str, payload: &serde_json::Value, key: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    format!("{signing_input}.{}", hs256_signature(&signing_input, key))
}

/// The base64url HMAC-SHA256 of `signing_input` (`header.payload`).
pub fn hs256_signature(signing_input: &str, key: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// PyJWT's header for HS256.
pub const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// simplejwt 5.5.1 claims for `user_id`, valid for `ttl` seconds from now.
pub fn simplejwt_claims(token_type: &str, user_id: i64, ttl: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({
        "token_type": token_type,
        "exp": now + ttl,
        "iat": now,
        "jti": uuid::Uuid::new_v4().simple().to_string(),
        "user_id": user_id.to_string(),
    })
}

/// The `google.rpc.ErrorInfo` reason of `status` (simplejwt's error code).
pub fn error_reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Asserts `result` is UNAUTHENTICATED with simplejwt's message and code.
pub fn expect_refused<T: fmt::Debug>(result: Result<T, Status>, message: &str, reason: &str) {
    let status = expect_code(result, Code::Unauthenticated);
    assert_eq!(status.message(), message, "{status:?}");
    assert_eq!(error_reason(&status), reason, "{status:?}");
}
