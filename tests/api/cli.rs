//! The binary itself: start-up failures, subcommands, signals.

use std::{os::unix::fs::PermissionsExt, process::Output, time::Duration};

use crate::{
    child::{ChildServer, auth_service, create_superuser, run, run_within, stderr, stdout},
    helpers::{Backend, PASSWORD, TestApp, TestDatabase, register_request},
};

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
    let output = create_superuser(&database.url, "root", "root@example.com", PASSWORD);
    assert!(output.status.success(), "{}", stderr(&output));

    let app = TestApp::spawn_on(&database.url).await;
    let pair = app.login("root").await;
    let me = app.get_me(&pair.access).await.unwrap();
    assert!(me.is_staff && me.is_superuser && me.is_active);
    app.stop().await;

    let output = create_superuser(&database.url, "root", "r2@example.com", PASSWORD);
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
    assert!(stdout(&output).contains("deleted 0 expired"));
}

#[tokio::test]
async fn serve_generates_a_private_key_file_and_stops_cleanly_on_sigterm() {
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let server = ChildServer::on(&database.url)
        .without_signing_key()
        .log("debug")
        .start()
        .await;

    // The key file sits beside the database, readable by its owner only.
    let key_file = database
        .sqlite_file()
        .map(|p| p.with_file_name("auth.db.jwt-secret"));
    let key_file = key_file.expect("not a SQLite database");
    let mode = std::fs::metadata(&key_file).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    let output = server.terminate(Duration::from_secs(30)).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let key = std::fs::read_to_string(&key_file).unwrap_or_default();
    assert!(
        !key.trim().is_empty() && !stderr(&output).contains(key.trim()),
        "the key must not be logged"
    );
}

/// Far longer than a refusal takes, even on a loaded machine: a `serve`
/// still running then has started instead of refusing to.
pub const START_REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

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
    let output = run_within(command, START_REFUSAL_DEADLINE).await;
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
    // A key file holding `x` would sign tokens anyone could forge.
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
    let output = run_within(command, START_REFUSAL_DEADLINE).await;
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
    let server = ChildServer::on(database_url)
        .envs(env)
        .log("warn")
        .start()
        .await;
    let output = server.terminate(Duration::from_secs(30)).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output
}

const LOG_TEST_KEY: &str = "log-test-signing-key-that-must-never-be-logged";

// The log's secrets test, with every audit record: `logs.rs`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_by_the_grace_period_make_a_failed_exit() {
    use auth_service::pb::auth_service_client::AuthServiceClient;

    let database = TestDatabase::create(&Backend::Sqlite).await;
    let slow = [
        ("AUTH_SHUTDOWN_GRACE", "1s"),
        ("AUTH_ARGON2_ITERATIONS", "60"),
        ("AUTH_PASSWORD_HASH_QUEUE_TIMEOUT", "120s"),
    ];
    let server = ChildServer::on(&database.url)
        .envs(&slow)
        .log("warn")
        .start()
        .await;
    let channel = server.channel();
    // Eight slow registrations on two hashing slots: seconds of work.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut auth = AuthServiceClient::new(channel.clone());
            tokio::spawn(async move { auth.register(register_request(&format!("slow{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output = server.terminate(Duration::from_secs(60)).await;
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
            s.tokens.refresh_lifetime = Duration::from_secs(1);
            s.tokens.leeway = Duration::from_secs(3600);
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
            stdout(&output).contains("deleted 0 expired"),
            "{}",
            stdout(&output)
        );
        crate::helpers::expect_blacklisted(app.refresh(&pair.refresh).await);
        app.stop().await;
    })
    .await;
}
