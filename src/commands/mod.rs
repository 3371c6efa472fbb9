//! The subcommands behind `auth-service <command>`; `main` only parses the
//! command line and calls [`run`].

mod import_django;

use anyhow::Context;

use crate::{
    accounts::LoginThrottle,
    config::{Cli, Command, Settings},
    domain::{Email, Password, UserAttributes, Username},
    passwords::Hasher,
    persistence::{self, StoreError, db_now, token_blacklist, users},
    startup::{Application, shutdown_signal},
    tokens,
};

/// Runs the command `cli` names (`serve` when none).
///
/// # Errors
/// Anything that stops the command; `main` prints it as one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            persistence::open(&settings.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::CreateSuperuser { username, email } => {
            create_superuser(&settings, &username, &email).await
        }
        Command::FlushExpiredTokens => {
            let db = persistence::open(&settings.database).await?;
            let expired_before = tokens::expired_before(db_now(), settings.tokens.leeway);
            let deleted = token_blacklist::flush_expired(&db, expired_before)
                .await
                .map_err(describe)?;
            let throttle = LoginThrottle::new(
                db,
                settings.throttle.clone(),
                settings.passwords.queue_timeout,
            );
            let stale = throttle.flush_stale().await.map_err(describe)?;
            println!(
                "deleted {deleted} expired outstanding tokens and {stale} stale login counters"
            );
            Ok(())
        }
        Command::ImportDjango {
            from,
            table,
            batch_size,
        } => import_django::run(&settings, from.expose(), &table, batch_size).await,
    }
}

async fn create_superuser(settings: &Settings, username: &str, email: &str) -> anyhow::Result<()> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("username: {e}"))?;
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email: {e}"))?;
    let password = match std::env::var("AUTH_SUPERUSER_PASSWORD") {
        Ok(password) => password,
        Err(_) => rpassword::prompt_password("Password: ").context("cannot read the password")?,
    };
    let attributes = UserAttributes {
        username: username.as_str(),
        email: email.as_str(),
    };
    let password = Password::parse(password, attributes)
        .map_err(|errors| anyhow::anyhow!("password: {}", errors.join(" ")))?;

    let db = persistence::open(&settings.database).await?;
    let hasher = Hasher::new(settings.passwords).await?;
    let password_hash = hasher
        .hash(&password)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let new = users::NewUser {
        email,
        username,
        password_hash,
        avatar: None,
        is_staff: true,
        is_superuser: true,
    };
    let user = users::insert(&db, new, db_now()).await.map_err(describe)?;
    println!("superuser {} created with id {}", user.username, user.id);
    Ok(())
}

/// A storage error as the one-line message a command prints.
fn describe(err: StoreError) -> anyhow::Error {
    match err {
        StoreError::Other(cause) => cause,
        StoreError::Unavailable(cause) => anyhow::Error::new(cause).context("database unavailable"),
        StoreError::Conflict(cause) => {
            anyhow::Error::new(cause).context("concurrent update, try again")
        }
        other => anyhow::anyhow!("{other}"),
    }
}
