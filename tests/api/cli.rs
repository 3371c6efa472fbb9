//! The binary itself: start-up failures, subcommands, signals.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use std::os::unix::fs::PermissionsExt;

use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, PASSWORD, TestApp, TestDatabase, register_request};

const BIN: &str = env!("CARGO_BIN_EXE_auth-service");

/// The binary with a clean `AUTH_*` environment.
fn auth_service(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTH_") {
            command.env_remove(key);
        }
    }
    command.args(args).stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_flag_is_one_line_and_a_failure() {
    let output = run(&mut auth_service(&["--no-such-flag", "serve"]));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");

    let output = run(&mut auth_service(&[
        "--access-token-lifetime",
        "soon",
        "migrate",
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
}

#[test]
fn an_unreachable_database_is_one_line_and_a_failure() {
    let output = run(auth_service(&["serve"])
        .env(
            "AUTH_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nothing",
        )
        .env("AUTH_JWT_SECRET", "x".repeat(40))
        .env("AUTH_DATABASE_TIMEOUT", "2s")
        .env("RUST_LOG", "off"));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("auth-service: cannot connect to the database"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn postgres_without_a_signing_key_refuses_to_start() {
    // Checked before connecting: replicas must share a key, and a generated
    // one cannot be shared.
    let output = run(auth_service(&["serve"])
        .env(
            "AUTH_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nothing",
        )
        .env("RUST_LOG", "off"));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("AUTH_JWT_SECRET is required"), "{err}");
}

#[tokio::test]
async fn create_superuser_then_log_in() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let output = run(auth_service(&[
        "create-superuser",
        "--username",
        "root",
        "--email",
        "root@example.com",
    ])
    .env("AUTH_DATABASE_URL", &database.url)
    .env("AUTH_SUPERUSER_PASSWORD", PASSWORD)
    .env("RUST_LOG", "off"));
    assert!(output.status.success(), "{}", stderr(&output));

    let app = TestApp::spawn_on(&database.url).await;
    let pair = app.login("root").await;
    let me = app.get_me(&pair.access).await.unwrap();
    assert!(me.is_staff && me.is_superuser && me.is_active);
    app.stop().await;

    let output = run(auth_service(&[
        "create-superuser",
        "--username",
        "root",
        "--email",
        "r2@example.com",
    ])
    .env("AUTH_DATABASE_URL", &database.url)
    .env("AUTH_SUPERUSER_PASSWORD", PASSWORD)
    .env("RUST_LOG", "off"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("username already exists"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn migrate_creates_the_schema() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let output = run(auth_service(&["migrate"])
        .env("AUTH_DATABASE_URL", &database.url)
        .env("RUST_LOG", "off"));
    assert!(output.status.success(), "{}", stderr(&output));
    let db = sea_orm::Database::connect(database.url.as_str())
        .await
        .unwrap();
    for table in ["users", "outstanding_tokens", "blacklisted_tokens"] {
        use sea_orm::ConnectionTrait;
        db.execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    // Idempotent: a second run has nothing to do and succeeds.
    let output = run(auth_service(&["migrate"])
        .env("AUTH_DATABASE_URL", &database.url)
        .env("RUST_LOG", "off"));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[tokio::test]
async fn flush_expired_tokens_runs() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let output = run(auth_service(&["flush-expired-tokens"])
        .env("AUTH_DATABASE_URL", &database.url)
        .env("RUST_LOG", "off"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted 0 expired"));
}

#[tokio::test]
async fn serve_generates_a_private_key_file_and_stops_cleanly_on_sigterm() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let (child, _addr) = serve_child_with(&database.url, "debug", &[]).await;

    // The key file sits beside the database, readable by its owner only.
    let key_file = database
        .sqlite_file()
        .map(|p| p.with_file_name("auth.db.jwt-secret"));
    let key_file = key_file.expect("not a SQLite database");
    let mode = std::fs::metadata(&key_file).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    let pid = child.id().map(|id| id.to_string()).unwrap_or_default();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.map(|s| s.success()).unwrap_or(false));
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the server did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let key = std::fs::read_to_string(&key_file).unwrap_or_default();
    assert!(
        !key.trim().is_empty() && !stderr(&output).contains(key.trim()),
        "the key must not be logged"
    );
}

/// Runs `command`, which must fail at start-up; a server that starts instead
/// is killed after `START_REFUSAL_DEADLINE` and the test fails.
async fn run_refused(command: Command) -> Output {
    let child = tokio::process::Command::from(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    tokio::time::timeout(START_REFUSAL_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("still running after {START_REFUSAL_DEADLINE:?}: it started"))
        .unwrap()
}

/// Far longer than a refusal takes, even on a loaded machine.
const START_REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `serve` on a fresh SQLite database whose key file holds `key` with
/// `mode`; the output, which must be a refusal, and the key file's path.
async fn serve_with_key_file(key: &str, mode: u32) -> (Output, String) {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let key_file = database
        .sqlite_file()
        .map(|p| p.with_file_name("auth.db.jwt-secret"))
        .expect("not a SQLite database");
    std::fs::write(&key_file, key)
        .and_then(|()| std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)))
        .unwrap();
    // Default logging: the refusal must still be the only line.
    let mut command = auth_service(&["serve", "--listen-addr", "127.0.0.1:0"]);
    command.env("AUTH_DATABASE_URL", &database.url);
    let output = run_refused(command).await;
    (output, key_file.display().to_string())
}

#[tokio::test]
async fn a_key_file_readable_by_others_is_refused() {
    // A valid key, but anyone on the host could read it and forge tokens.
    let key = "0123456789abcdef".repeat(4);
    let (output, key_file) = serve_with_key_file(&key, 0o644).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&key_file) && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains(&key), "the key must not be printed: {err}");
}

#[tokio::test]
async fn a_short_key_file_is_refused() {
    // The case: a key file holding `x` signed tokens anyone could forge.
    let (output, key_file) = serve_with_key_file("x\n", 0o600).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&key_file) && err.contains("32 bytes"), "{err}");
}

#[tokio::test]
async fn a_short_jwt_secret_is_refused() {
    // Refused before the database is opened: no database needed.
    let mut command = auth_service(&["serve", "--listen-addr", "127.0.0.1:0"]);
    command
        .env("AUTH_DATABASE_URL", "sqlite::memory:")
        .env("AUTH_JWT_SECRET", "short-secret");
    let output = run_refused(command).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("AUTH_JWT_SECRET") && err.contains("32 bytes"),
        "{err}"
    );
    assert!(
        !err.contains("short-secret"),
        "the key must not be printed: {err}"
    );
}

#[tokio::test]
async fn allow_weak_secret_lets_a_short_jwt_secret_start() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let env = [
        ("AUTH_JWT_SECRET", "short-secret"),
        ("AUTH_ALLOW_WEAK_SECRET", "true"),
    ];
    let output = serve_then_stop(&database.url, &env).await;
    // Still said, once, in the log.
    assert!(
        stderr(&output).contains("shorter than 32 bytes"),
        "{}",
        stderr(&output)
    );
}

/// Rotation without blacklisting leaves rotated-out tokens valid: reuse
/// detection cannot work, and the log says so at start-up.
#[tokio::test]
async fn rotation_without_blacklisting_warns_that_reuse_detection_is_off() {
    const WARNING: &str = "refresh-token reuse detection is off";
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let rotation = ("AUTH_ROTATE_REFRESH_TOKENS", "true");
    let key = ("AUTH_JWT_SECRET", LOG_TEST_KEY);
    let off = [rotation, key, ("AUTH_BLACKLIST_AFTER_ROTATION", "false")];
    let output = serve_then_stop(&database.url, &off).await;
    assert_eq!(
        stderr(&output).matches(WARNING).count(),
        1,
        "{}",
        stderr(&output)
    );
    let on = [rotation, key];
    let output = serve_then_stop(&database.url, &on).await;
    assert!(!stderr(&output).contains(WARNING), "{}", stderr(&output));
}

/// Serves with `env` at `RUST_LOG=warn` until it answers, then SIGTERMs it
/// and checks it exited 0; its output.
async fn serve_then_stop(database_url: &str, env: &[(&str, &str)]) -> Output {
    let (child, _addr) = serve_child_with(database_url, "warn", env).await;
    let pid = child.id().map(|id| id.to_string()).unwrap_or_default();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output
}

/// Serves `database_url` from the binary on a free port with `RUST_LOG`;
/// returns the child and the address once it answers health checks.
async fn serve_child(database_url: &str, rust_log: &str) -> (tokio::process::Child, String) {
    serve_child_with(database_url, rust_log, &[("AUTH_JWT_SECRET", LOG_TEST_KEY)]).await
}

async fn serve_child_with(
    database_url: &str,
    rust_log: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut command = auth_service(&["serve", "--listen-addr", &addr]);
    command
        .env("AUTH_DATABASE_URL", database_url)
        .env("RUST_LOG", rust_log)
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let child = tokio::process::Command::from(command).spawn().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    for _ in 0..200 {
        if health.check(HealthCheckRequest::default()).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never answered");
}

const LOG_TEST_KEY: &str = "log-test-signing-key-that-must-never-be-logged";

#[tokio::test]
async fn logs_hold_no_password_hash_token_or_key() {
    use auth_service::pb::{
        self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
    };

    let database = TestDatabase::create(&Backend::Sqlite).await;
    // debug: everything our code and the libraries log short of wire traces.
    let (child, addr) = serve_child(&database.url, "debug").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel);
    let password = "Secret-Passphrase-4-Logs";
    let user = auth
        .register(pb::RegisterRequest {
            email: "logs@example.com".into(),
            username: "logs".into(),
            password: password.into(),
            avatar: None,
        })
        .await
        .map(tonic::Response::into_inner)
        .unwrap();
    let login = |password: &str| pb::ObtainTokenPairRequest {
        username: "logs".into(),
        password: password.into(),
    };
    let _ = auth
        .obtain_token_pair(login("Wrong-Passphrase-4-Logs"))
        .await;
    let pair = auth
        .obtain_token_pair(login(password))
        .await
        .map(tonic::Response::into_inner)
        .unwrap();
    let refreshed = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh: pair.refresh.clone(),
        })
        .await
        .map(tonic::Response::into_inner)
        .unwrap();
    let _ = auth
        .verify_token(pb::VerifyTokenRequest {
            token: pair.access.clone(),
        })
        .await;
    let _ = users
        .get_me(crate::helpers::bearer(pb::GetMeRequest {}, &pair.access))
        .await;
    let _ = users
        .get_me(crate::helpers::bearer(
            pb::GetMeRequest {},
            "garbage.token.value",
        ))
        .await;
    let _ = users
        .update_avatar(crate::helpers::bearer(
            pb::UpdateAvatarRequest {
                avatar: "https://example.com/a.png".into(),
            },
            &pair.access,
        ))
        .await;
    let _ = users
        .list_users(crate::helpers::bearer(
            pb::ListUsersRequest::default(),
            &pair.access,
        ))
        .await;
    let _ = auth
        .logout(pb::LogoutRequest {
            refresh: pair.refresh.clone(),
        })
        .await;
    let _ = auth
        .refresh_token(pb::RefreshTokenRequest {
            refresh: pair.refresh.clone(),
        })
        .await;

    let db = sea_orm::Database::connect(database.url.as_str())
        .await
        .unwrap();
    let hash = auth_service::persistence::users::find_by_id(&db, user.id)
        .await
        .ok()
        .flatten()
        .map(|u| u.password)
        .expect("no user");
    let hash_digest = hash.rsplit('$').next().unwrap_or_default().to_owned();

    let pid = child.id().map(|id| id.to_string()).unwrap_or_default();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    let log = stderr(&output);
    assert!(log.contains("grpc call"), "the call log is missing: {log}");
    let secrets = [
        ("password", password),
        ("wrong password", "Wrong-Passphrase-4-Logs"),
        ("password hash", hash_digest.as_str()),
        ("access token", pair.access.as_str()),
        ("refresh token", pair.refresh.as_str()),
        ("refreshed access token", refreshed.access.as_str()),
        ("signing key", LOG_TEST_KEY),
    ];
    for (what, secret) in secrets {
        assert!(!secret.is_empty());
        assert!(!log.contains(secret), "the {what} reached the log");
        // Nor its signature part alone (tokens) or a prefix long enough to use.
        if let Some((_, signature)) = secret.rsplit_once('.') {
            assert!(
                !log.contains(signature),
                "the {what}'s signature reached the log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_by_the_grace_period_make_a_failed_exit() {
    use auth_service::pb::auth_service_client::AuthServiceClient;

    let database = TestDatabase::create(&Backend::Sqlite).await;
    let slow = [
        ("AUTH_SHUTDOWN_GRACE", "1s"),
        ("AUTH_ARGON2_ITERATIONS", "60"),
        ("AUTH_PASSWORD_HASH_QUEUE_TIMEOUT", "120s"),
    ];
    let (child, addr) = serve_child_with(&database.url, "warn", &slow).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    // Eight slow registrations on two hashing slots: seconds of work.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut auth = AuthServiceClient::new(channel.clone());
            tokio::spawn(async move { auth.register(register_request(&format!("slow{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().map(|id| id.to_string()).unwrap_or_default();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("grace period"),
        "{}",
        stderr(&output)
    );
    let cut_off = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|r| !matches!(r, Ok(Ok(_))))
        .count();
    assert!(
        cut_off > 0,
        "every call finished within the grace period: the test proves nothing"
    );
}

/// Flushing keeps what the leeway still accepts: a logged-out token past
/// its `exp` but inside the leeway must stay blacklisted, not come back.
#[tokio::test]
async fn flushing_keeps_blacklisted_tokens_the_leeway_still_accepts() {
    crate::helpers::on_every_backend(async |backend| {
        let app = TestApp::spawn_with(&backend, |s| {
            s.refresh_token_lifetime = Duration::from_secs(1);
            s.token_leeway = Duration::from_secs(3600);
        })
        .await;
        let (_, pair) = app.signed_up("lazarus").await;
        app.logout(&pair.refresh).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let output = run(auth_service(&["flush-expired-tokens"])
            .env("AUTH_DATABASE_URL", app.database_url())
            .env("AUTH_JWT_SECRET", crate::helpers::SECRET)
            .env("AUTH_TOKEN_LEEWAY", "1h")
            .env("RUST_LOG", "off"));
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("deleted 0 expired"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        crate::helpers::expect_blacklisted(app.refresh(&pair.refresh).await);
        app.stop().await;
    })
    .await;
}
