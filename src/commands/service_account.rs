//! `auth-service service-account …`: the service-account use cases, as
//! the operator, naming accounts by name.

use anyhow::Context;

use super::explain;
use crate::{
    accounts::{Accounts, Actor, NewServiceAccount, ServiceAccountPageRequest},
    config::{ServiceAccountCommand, Settings},
    domain::{CredentialId, PublicKey, Scopes, ServiceAccount, ServiceAccountName},
    error::Error,
    startup::open_accounts,
};

/// Runs one `service-account` command.
///
/// # Errors
/// What stops it, as one line: a refusal, an unknown name, the database's.
pub(super) async fn run(settings: &Settings, command: ServiceAccountCommand) -> anyhow::Result<()> {
    let accounts = open_accounts(settings).await?;
    let operator = Actor::Operator;
    match command {
        ServiceAccountCommand::Create { name, scopes } => {
            let new = NewServiceAccount {
                name: ServiceAccountName::parse(&name)
                    .map_err(|e| explain(Error::invalid("name", e)))?,
                scopes: parse_scopes(&scopes)?,
            };
            let account = accounts
                .create_service_account(operator, new)
                .await
                .map_err(explain)?;
            println!(
                "service account {} (id {}) created with scopes \"{}\"",
                account.name, account.id, account.scopes
            );
        }
        ServiceAccountCommand::Get { name } => {
            let id = id_of(&accounts, &name).await?;
            let account = accounts
                .get_service_account(operator, id)
                .await
                .map_err(explain)?;
            print!("{}", details(&account));
        }
        ServiceAccountCommand::List => {
            let mut token = String::new();
            loop {
                let page = ServiceAccountPageRequest {
                    size: 0,
                    token: &token,
                };
                let page = accounts
                    .list_service_accounts(operator, page)
                    .await
                    .map_err(explain)?;
                for account in &page.service_accounts {
                    println!("{}", summary(account));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        ServiceAccountCommand::SetActive { name, active } => {
            let id = id_of(&accounts, &name).await?;
            accounts
                .set_service_account_active(operator, id, active)
                .await
                .map_err(explain)?;
            let done = if active { "activated" } else { "deactivated" };
            println!("service account {name} (id {id}) {done}");
        }
        ServiceAccountCommand::SetScopes { name, scopes } => {
            let id = id_of(&accounts, &name).await?;
            let scopes = parse_scopes(&scopes)?;
            let account = accounts
                .set_service_account_scopes(operator, id, scopes)
                .await
                .map_err(explain)?;
            println!(
                "service account {name} (id {id}) now has scopes \"{}\"",
                account.scopes
            );
        }
        ServiceAccountCommand::Delete { name } => {
            let id = id_of(&accounts, &name).await?;
            accounts
                .delete_service_account(operator, id)
                .await
                .map_err(explain)?;
            println!("service account {name} (id {id}) deleted with its credentials");
        }
        ServiceAccountCommand::AddSecret { name } => {
            let id = id_of(&accounts, &name).await?;
            let issued = accounts
                .add_service_account_secret(operator, id)
                .await
                .map_err(explain)?;
            // The secret alone on the last line, for scripts.
            println!(
                "secret {} added to service account {name} (id {id}); it is shown this once:",
                issued.secret_id
            );
            println!("{}", issued.secret);
        }
        ServiceAccountCommand::RemoveSecret { name, secret_id } => {
            let id = id_of(&accounts, &name).await?;
            let secret_id = CredentialId::parse(&secret_id)
                .map_err(|e| explain(Error::invalid("secret_id", e)))?;
            accounts
                .remove_service_account_secret(operator, id, &secret_id)
                .await
                .map_err(explain)?;
            println!("secret {secret_id} removed from service account {name} (id {id})");
        }
        ServiceAccountCommand::AddKey { name, pem_file } => {
            let id = id_of(&accounts, &name).await?;
            let pem = std::fs::read_to_string(&pem_file)
                .with_context(|| format!("cannot read {}", pem_file.display()))?;
            let key = PublicKey::parse(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", pem_file.display()))?;
            let algorithm = key.algorithm();
            let kid = accounts
                .add_service_account_key(operator, id, key)
                .await
                .map_err(explain)?;
            println!("key {kid} ({algorithm}) added to service account {name} (id {id})");
        }
        ServiceAccountCommand::RemoveKey { name, kid } => {
            let id = id_of(&accounts, &name).await?;
            let kid = CredentialId::parse(&kid).map_err(|e| explain(Error::invalid("kid", e)))?;
            accounts
                .remove_service_account_key(operator, id, &kid)
                .await
                .map_err(explain)?;
            println!("key {kid} removed from service account {name} (id {id})");
        }
    }
    Ok(())
}

async fn id_of(accounts: &Accounts, name: &str) -> anyhow::Result<i64> {
    accounts
        .service_account_id_by_name(name)
        .await
        .map_err(explain)?
        .ok_or_else(|| anyhow::anyhow!("no service account named {name:?}"))
}

fn parse_scopes(scopes: &[String]) -> anyhow::Result<Scopes> {
    Scopes::parse(scopes.iter().map(String::as_str))
        .map_err(|errors| explain(Error::invalid_fields([("scopes", errors)])))
}

/// One line: id, name, state, scopes and how many credentials.
fn summary(account: &ServiceAccount) -> String {
    format!(
        "{} {} {} scopes=\"{}\" secrets={} keys={}",
        account.id,
        account.name,
        if account.is_active {
            "active"
        } else {
            "inactive"
        },
        account.scopes,
        account.secrets.len(),
        account.keys.len()
    )
}

/// The account, then a line per credential.
fn details(account: &ServiceAccount) -> String {
    let mut text = format!(
        "service account {} (id {}): {}, scopes \"{}\", created {} UTC, last used {}\n",
        account.name,
        account.id,
        if account.is_active {
            "active"
        } else {
            "inactive"
        },
        account.scopes,
        account.created_at.format("%Y-%m-%d %H:%M:%S"),
        account.last_used_at.map_or_else(
            || "never".to_owned(),
            |at| format!("{} UTC", at.format("%Y-%m-%d %H:%M:%S"))
        ),
    );
    for secret in &account.secrets {
        text.push_str(&format!(
            "secret {} created {} UTC\n",
            secret.secret_id,
            secret.created_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    for key in &account.keys {
        text.push_str(&format!(
            "key {} {} created {} UTC\n",
            key.kid,
            key.algorithm,
            key.created_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    text
}
