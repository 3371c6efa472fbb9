//! `--seed-users`: fills the server's database with users before it starts,
//! straight through the persistence layer (registering a million users over
//! gRPC would take hours of argon2 work), for list-users at scale.

use std::time::{Duration, Instant};

use anyhow::Context;
use auth_service::{
    config::Settings,
    domain::{Email, Password, UserAttributes, Username},
    passwords::Hasher,
    persistence::{self, db_now, users},
};

/// Rows per INSERT: 11 bound parameters each, far under every backend's limit.
const BATCH: u64 = 1000;

/// Migrates the database at `database_url` and inserts `count` users named
/// `seed-<run>-<n>`, all with one argon2id hash of `password`.
pub async fn seed(
    database_url: &str,
    run_id: &str,
    count: u64,
    password: &str,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut settings = Settings::default();
    settings.database.url = database_url.into();
    let db = persistence::open(&settings.database).await?;
    let anyone = UserAttributes {
        username: "seed",
        email: "seed@bench.example.com",
    };
    let password =
        Password::parse(password.to_owned(), anyone).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let hash = Hasher::new(settings.passwords)
        .await?
        .hash(&password)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut next = 0;
    while next < count {
        let end = (next + BATCH).min(count);
        let batch = (next..end)
            .map(|n| {
                let name = format!("seed-{run_id}-{n}");
                Ok(users::NewUser {
                    email: Email::parse(&format!("{name}@bench.example.com"))
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                    username: Username::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?,
                    password_hash: hash.clone(),
                    avatar: None,
                    is_staff: false,
                    is_superuser: false,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        users::insert_many(&db, batch, db_now())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("inserting users {next}..{end}"))?;
        next = end;
    }
    db.close().await?;
    Ok(began.elapsed())
}
