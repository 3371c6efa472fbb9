//! The user-row fetch behind GetMe, VerifyToken, RefreshToken and ListUsers
//! (`persistence::users::find_by_id`), on SQLite in a temporary directory
//! with the service's own connection settings (WAL, synchronous=FULL) and
//! schema.

// A benchmark's setup that fails can only panic: unwrap says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::{
    config::{Secret, Settings},
    domain::{Email, Username},
    persistence::{
        self, db_now,
        users::{self, NewUser},
    },
};
use criterion::{Criterion, criterion_group, criterion_main};

const USERS: i64 = 1_000;

fn find_by_id(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.database.url = Secret::from(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = persistence::connect(&settings.database).await.unwrap();
        persistence::migrate(&db).await.unwrap();
        // The hash is never checked here: a placeholder avoids argon2 cost.
        for i in 0..USERS {
            let new = NewUser {
                email: Email::parse(&format!("user{i}@example.com")).unwrap(),
                username: Username::parse(&format!("user{i}")).unwrap(),
                password_hash: "!unusable".to_owned(),
                avatar: None,
                is_staff: false,
                is_superuser: false,
            };
            users::insert(&db, new, db_now()).await.unwrap();
        }
        db
    });

    // Walk the ids so the benchmark is not one hot row.
    let mut id = 0;
    c.bench_function("users_find_by_id_sqlite", |b| {
        b.to_async(&runtime).iter(|| {
            id = id % USERS + 1;
            let db = &db;
            async move {
                users::find_by_id(db, id)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("no user {id}"))
            }
        });
    });
    runtime.block_on(async { db.close().await.unwrap() });
}

criterion_group!(benches, find_by_id);
criterion_main!(benches);
