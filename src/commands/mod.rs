//! The subcommands behind `auth-service <command>`; `main` only parses the
//! command line and calls [`run`].

mod import_django;
mod service_account;

use anyhow::Context;

use crate::{
    accounts::{Accounts, Actor, LoginThrottle},
    config::{Cli, Command, Settings, UserCommand},
    domain::{Email, Password, UserAttributes, Username},
    error::Error,
    passwords::Hasher,
    persistence::{
        self, StoreError, assertion_ids, db_now, password_reset_tokens, token_blacklist, users,
    },
    startup::{Application, open_accounts, shutdown_signal},
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
                db.clone(),
                settings.throttle.clone(),
                settings.passwords.queue_timeout,
            );
            let stale = throttle.flush_stale().await.map_err(describe)?;
            let resets = password_reset_tokens::flush_expired(&db, db_now())
                .await
                .map_err(describe)?;
            let assertions = assertion_ids::flush_expired_assertion_jtis(&db, db_now())
                .await
                .map_err(describe)?;
            println!(
                "deleted {deleted} expired outstanding tokens, {stale} stale login counters, \
                 {resets} expired password reset tokens and {assertions} expired assertion ids"
            );
            Ok(())
        }
        Command::ImportDjango {
            from,
            table,
            batch_size,
        } => import_django::run(&settings, from.expose(), &table, batch_size).await,
        Command::User(command) => administer(&settings, command).await,
        Command::ServiceAccount(command) => service_account::run(&settings, command).await,
    }
}

/// `auth-service user …`: the administration use cases, as the operator.
async fn administer(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let accounts = open_accounts(settings).await?;
    let username = match &command {
        UserCommand::SetActive { username, .. }
        | UserCommand::SetStaff { username, .. }
        | UserCommand::SetSuperuser { username, .. }
        | UserCommand::Delete { username }
        | UserCommand::SetPassword { username } => username.clone(),
    };
    let id = user_id(&accounts, &username).await?;
    let done = match command {
        UserCommand::SetActive { active, .. } => {
            accounts
                .set_user_active(Actor::Operator, id, active)
                .await
                .map_err(explain)?;
            if active {
                "activated"
            } else {
                "deactivated; every token of theirs revoked"
            }
        }
        UserCommand::SetStaff { staff, .. } => {
            accounts
                .set_user_staff(Actor::Operator, id, staff)
                .await
                .map_err(explain)?;
            if staff {
                "is staff now"
            } else {
                "is no longer staff"
            }
        }
        UserCommand::SetSuperuser { superuser, .. } => {
            accounts
                .set_user_superuser(id, superuser)
                .await
                .map_err(explain)?;
            if superuser {
                "is a superuser (and staff) now"
            } else {
                "is no longer a superuser"
            }
        }
        UserCommand::Delete { .. } => {
            accounts
                .delete_user(Actor::Operator, id)
                .await
                .map_err(explain)?;
            "deleted, with their tokens"
        }
        UserCommand::SetPassword { .. } => {
            let password = match std::env::var("AUTH_USER_PASSWORD") {
                Ok(password) => password,
                Err(_) => rpassword::prompt_password("New password: ")
                    .context("cannot read the password")?,
            };
            accounts
                .set_user_password(Actor::Operator, id, password)
                .await
                .map_err(explain)?;
            "has a new password; every earlier token of theirs revoked"
        }
    };
    println!("user {username} (id {id}) {done}");
    Ok(())
}

async fn user_id(accounts: &Accounts, username: &str) -> anyhow::Result<i64> {
    accounts
        .user_id_by_username(username)
        .await
        .map_err(explain)?
        .ok_or_else(|| anyhow::anyhow!("no user named {username:?}"))
}

/// An application error as the one-line message a command prints: the
/// broken rules of each field, or the caller-facing message.
fn explain(err: Error) -> anyhow::Error {
    match err {
        Error::InvalidArgument(violations) => anyhow::anyhow!(
            "{}",
            violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Error::Internal(cause) => cause,
        other => anyhow::Error::new(other),
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
