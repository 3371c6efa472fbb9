//! `import-django` against a real Django 5.2 database on every backend: the
//! seed blog's `UserProfile` and Django's stock `auth_user`, with users
//! registered through Django's own `create_user` and hashers
//! (tests/django/make_users.py), imported by the real binary, then logging
//! in to this service with their Django passwords and tokens.

use std::{path::PathBuf, time::Duration};

use chrono::NaiveDateTime;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tonic::Code;

use crate::{
    child::{auth_service, run_within, stderr, stdout},
    helpers::{Backend, SECRET, TestApp, TestDatabase, expect_code, on_every_backend},
    python::python,
};

/// Import and Django runs, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(300);

/// A Django project's database with users in it, and what Django said
/// about them (make_users.py's JSON).
struct DjangoDatabase {
    database: TestDatabase,
    /// The URL the import reads from (SQLite: without `mode=rwc`).
    url: String,
    made: Value,
}

impl DjangoDatabase {
    /// Migrates a fresh database of `backend` with Django and registers the
    /// users; `model` is "seed" (users_userprofile) or "stock" (auth_user).
    async fn create(backend: &Backend, model: &str) -> DjangoDatabase {
        let database = TestDatabase::create(backend).await;
        let url = match database.sqlite_file() {
            Some(path) => format!("sqlite://{}", path.display()),
            None => database.url.clone(),
        };
        let python = tokio::task::spawn_blocking(python).await.unwrap();
        let project = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/django");
        let output = tokio::process::Command::new(python)
            .arg(project.join("make_users.py"))
            .current_dir(&project)
            .env("PYTHONPATH", &project)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("DJANGO_SETTINGS_MODULE", "seedblog.settings")
            .env("DJANGO_DATABASE_URL", &url)
            .env("DJANGO_USER_MODEL", model)
            .env("DJANGO_SIGNING_KEY", SECRET)
            .output()
            .await
            .expect("python");
        assert!(
            output.status.success(),
            "make_users.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let made = serde_json::from_slice(&output.stdout).expect("make_users.py's JSON");
        DjangoDatabase {
            database,
            url,
            made,
        }
    }

    fn user(&self, name: &str) -> (i64, String) {
        let user = &self.made["users"][name];
        let id = user["id"].as_i64().unwrap_or_else(|| panic!("no {name}"));
        (id, user["password"].as_str().unwrap().to_owned())
    }

    /// Runs SQL on the Django database, behind Django's back.
    async fn execute(&self, sql: &str) {
        let db = Database::connect(self.database.url.as_str()).await.unwrap();
        db.execute_unprepared(sql).await.unwrap();
        db.close().await.ok();
    }
}

/// `auth-service import-django --from <source> [args]` into `target`.
async fn import(target: &str, source: &str, args: &[&str]) -> std::process::Output {
    let mut command = auth_service(&["import-django", "--from", source]);
    command
        .args(args)
        .env("AUTH_DATABASE_URL", target)
        .env("RUST_LOG", "off");
    run_within(command, DEADLINE).await
}

/// Imports successfully and returns the report.
async fn imported(target: &str, source: &str, args: &[&str]) -> String {
    let output = import(target, source, args).await;
    assert!(
        output.status.success(),
        "import-django failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

#[track_caller]
fn assert_reports(report: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            report.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in the report:\n{report}"
        );
    }
}

async fn stored_hash(app: &TestApp, id: i64) -> String {
    app.stored_password_hash(id).await
}

#[tokio::test]
async fn the_seed_blogs_users_move_in_with_their_passwords_and_tokens() {
    on_every_backend(async |backend| {
        let django = DjangoDatabase::create(&backend, "seed").await;
        let target = TestDatabase::create(&backend).await;

        let before = chrono::Utc::now().naive_utc();
        let report = imported(&target.url, &django.url, &[]).await;
        let after = chrono::Utc::now().naive_utc();
        assert_reports(
            &report,
            &[
                "import-django: 7 users in users_userprofile (a custom user model without date_joined",
                "read: 7",
                "imported: 7",
                "already present: 0",
                "conflicts: 0",
                "invalid: 0",
                "password hashes imported: pbkdf2_sha256 2, argon2 2, bcrypt_sha256 1",
                "unusable passwords: 1",
                "unknown hash formats: 1 (scrypt 1; imported as unusable",
            ],
        );

        // Idempotent: a second run finds everyone here.
        let report = imported(&target.url, &django.url, &[]).await;
        assert_reports(
            &report,
            &["read: 7", "imported: 0", "already present: 7", "conflicts: 0"],
        );

        // Someone registers here, then a Django user with the same email
        // appears: reported, and neither user is overwritten. Small batches:
        // clashes are found across batches too.
        let app = TestApp::spawn_on(&target.url).await;
        let zed = app.register("zed").await;
        assert!(zed.id > 7, "the id sequence moved past the imported ids: {zed:?}");
        django
            .execute(
                "INSERT INTO users_userprofile \
                 (id, password, last_login, is_superuser, email, username, avatar, is_active, is_staff) \
                 VALUES (100, '!x', NULL, FALSE, 'ZED@example.com', 'zed_django', NULL, TRUE, FALSE)",
            )
            .await;
        let report = imported(&target.url, &django.url, &["--batch-size", "2"]).await;
        assert_reports(
            &report,
            &[
                "read: 8",
                "imported: 0",
                "already present: 7",
                "conflicts: 1",
                "  id 100: its email belongs to another user",
            ],
        );
        let users_here = app.count("users").await;
        assert_eq!(users_here, 8);
        assert!(
            auth_service::persistence::users::find_by_id(&app.db, 100)
                .await
                .unwrap()
                .is_none()
        );
        app.login("zed").await;

        // Kept as Django had them: ids, flags, avatar, last_login; joined
        // at the import, the seed's model having no date_joined.
        let (paul, _) = django.user("paul");
        let row = auth_service::persistence::users::find_by_id(&app.db, paul)
            .await
            .unwrap()
            .expect("paul");
        assert_eq!(
            (row.username.as_str(), row.email.as_str()),
            ("paul", "paul@example.com")
        );
        assert_eq!(row.avatar.as_deref(), Some("https://example.com/paul.png"));
        let django_login = NaiveDateTime::parse_from_str(
            "2025-01-02 03:04:05.678901",
            "%Y-%m-%d %H:%M:%S%.f",
        )
        .unwrap();
        // MariaDB's DATETIME keeps whole seconds.
        let drift = (row.last_login.expect("last_login") - django_login).num_milliseconds();
        assert!(drift.abs() < 1000, "last_login {:?}", row.last_login);
        let second = chrono::TimeDelta::seconds(1);
        assert!(
            row.date_joined >= before - second && row.date_joined <= after + second,
            "date_joined {}",
            row.date_joined
        );
        assert!(row.password.starts_with("pbkdf2_sha256$1000000$"));

        // Django's tokens, signed with the same key, keep working.
        let tokens = &django.made["tokens"];
        assert_eq!(tokens["user_id"].as_i64(), Some(paul));
        let me = app
            .get_me(tokens["access"].as_str().unwrap())
            .await
            .expect("GetMe with Django's access token");
        assert_eq!((me.id, me.username.as_str()), (paul, "paul"));
        assert!(me.is_active && !me.is_staff && !me.is_superuser);
        let django_refresh = tokens["refresh"].as_str().unwrap();
        app.verify(django_refresh)
            .await
            .expect("VerifyToken with Django's refresh token");
        let pair = app
            .refresh(django_refresh)
            .await
            .expect("RefreshToken with Django's refresh token");
        app.get_me(&pair.access).await.unwrap();

        // Each Django hasher's password logs in, once, then as argon2id.
        expect_code(app.try_login("paul", "paul-django-pw-x").await, Code::Unauthenticated);
        for name in ["paul", "ada", "bea", "root"] {
            let (id, password) = django.user(name);
            let before = stored_hash(&app, id).await;
            assert!(!before.starts_with("$argon2id$"), "{name}: {before}");
            let pair = app
                .try_login(name, &password)
                .await
                .unwrap_or_else(|s| panic!("{name} with the Django password: {s:?}"));
            let me = app.get_me(&pair.access).await.unwrap();
            assert_eq!(me.id, id);
            let upgraded = stored_hash(&app, id).await;
            assert!(upgraded.starts_with("$argon2id$v=19$"), "{name}: {upgraded}");
            app.try_login(name, &password)
                .await
                .unwrap_or_else(|s| panic!("{name} after the upgrade: {s:?}"));
            expect_code(app.try_login(name, "wrong password").await, Code::Unauthenticated);
        }
        let pair = app.try_login("root", &django.user("root").1).await.unwrap();
        let me = app.get_me(&pair.access).await.unwrap();
        assert!(me.is_staff && me.is_superuser);

        // Inactive, unusable and unknown-format passwords never log in.
        for name in ["ivy", "uma", "sam"] {
            let (id, password) = django.user(name);
            expect_code(app.try_login(name, &password).await, Code::Unauthenticated);
            let kept = stored_hash(&app, id).await;
            assert!(!kept.starts_with("$argon2id$"), "{name}: {kept}");
        }
        let (sam, _) = django.user("sam");
        assert!(stored_hash(&app, sam).await.starts_with('!'), "the scrypt hash is not kept");

        // Deleted here, then the import run again: the user is not brought
        // back, and with it the deleted account's unexpired tokens.
        let deleted = crate::admin::user_command(&target.url, &["delete", "paul"], &[]);
        assert!(deleted.status.success(), "{}", stderr(&deleted));
        let report = imported(&target.url, &django.url, &[]).await;
        assert_reports(
            &report,
            &["imported: 0", "deleted here since: 1 (not brought back)"],
        );
        let refused = app.get_me(tokens["access"].as_str().unwrap()).await;
        expect_code(refused, Code::Unauthenticated);

        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn djangos_stock_auth_user_moves_in_and_blank_emails_are_skipped() {
    on_every_backend(async |backend| {
        let django = DjangoDatabase::create(&backend, "stock").await;
        let target = TestDatabase::create(&backend).await;
        // auth_user.email is not unique: a second bea, whose email clashes
        // with the first one's inside the same batch.
        django
            .execute(
                "INSERT INTO auth_user (id, password, last_login, is_superuser, username, \
                 first_name, last_name, email, is_staff, is_active, date_joined) \
                 VALUES (50, '!x', NULL, FALSE, 'bea_twin', '', '', 'BEA@example.com', \
                 FALSE, TRUE, '2025-01-01 00:00:00')",
            )
            .await;
        let started = chrono::Utc::now().naive_utc();
        let report = imported(&target.url, &django.url, &["--table", "auth_user"]).await;
        let (blank, _) = django.user("blank");
        assert_reports(
            &report,
            &[
                "import-django: 9 users in auth_user (Django's AbstractUser columns)",
                "read: 9",
                "imported: 7",
                "conflicts: 1",
                "  id 50: its email belongs to another user",
                "invalid: 1",
                &format!("  id {blank}: email: This field may not be blank."),
                "password hashes imported: pbkdf2_sha256 2, argon2 2, bcrypt_sha256 1",
                "unusable passwords: 1",
                "unknown hash formats: 1",
            ],
        );
        let report = imported(&target.url, &django.url, &["--table", "auth_user"]).await;
        assert_reports(
            &report,
            &[
                "imported: 0",
                "already present: 7",
                "conflicts: 1",
                "invalid: 1",
            ],
        );

        let app = TestApp::spawn_on(&target.url).await;
        let (bea, password) = django.user("bea");
        let row = auth_service::persistence::users::find_by_id(&app.db, bea)
            .await
            .unwrap()
            .expect("bea");
        assert!(row.date_joined < started, "Django's date_joined is kept");
        assert!(row.avatar.is_none());
        app.try_login("bea", &password).await.expect("bea logs in");
        assert!(stored_hash(&app, bea).await.starts_with("$argon2id$"));
        let newcomer = app.register("newcomer").await;
        assert!(newcomer.id > 7, "{newcomer:?}");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_table_that_is_not_a_django_user_table_is_refused() {
    let source = TestDatabase::create(&Backend::Sqlite).await;
    let target = TestDatabase::create(&Backend::Sqlite).await;
    let db = Database::connect(source.url.as_str()).await.unwrap();
    db.execute_unprepared("CREATE TABLE blog_post (id INTEGER PRIMARY KEY, title TEXT)")
        .await
        .unwrap();
    let output = import(
        &target.url,
        &format!("sqlite://{}", source.sqlite_file().unwrap().display()),
        &[],
    )
    .await;
    let err = stderr(&output);
    assert!(
        err.ends_with("no table users_userprofile in the source database\n"),
        "{err}"
    );
    db.execute_unprepared("CREATE TABLE auth_user (id INTEGER PRIMARY KEY, title TEXT)")
        .await
        .unwrap();
    db.close().await.ok();
    let source_url = format!("sqlite://{}", source.sqlite_file().unwrap().display());
    for (table, expected) in [
        (
            "users_userprofile",
            "no table users_userprofile in the source database (it has Django's auth_user: --table auth_user)",
        ),
        (
            "auth_user",
            "auth_user is not a Django user table: no column password, username, email",
        ),
        (
            "blog_post",
            "blog_post is not a Django user table: no column password, username, email",
        ),
        ("x; DROP TABLE blog_post", "is not a table name"),
    ] {
        let output = import(&target.url, &source_url, &["--table", table]).await;
        assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{table}: {err}");
    }
}
