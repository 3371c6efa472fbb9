//! Service accounts and their credentials (issue 15).
//!
//! [`ServiceAccounts`] is the only way to change an account or its
//! credentials, and it answers the two lookups of the token path from a
//! [`FreshCache`]:
//! - by name, for a grant (`client_id` → the account with its secret
//!   digests and public keys);
//! - by credential id, for the check of a service token (`cid` → the
//!   account that still holds that credential, if any).
//!
//! Every write through this replica forgets the whole cache (a write to one
//! account changes what its name and each of its credential ids stand for,
//! and administration is rare): seen at once here, within the cache TTL on
//! other replicas, as for users.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, prelude::Expr, sea_query::ExprTrait,
};

use super::{
    StoreError, at_most_one,
    entities::{
        service_account::{self, Entity as Accounts},
        service_account_key::{self, Entity as Keys},
        service_account_secret::{self, Entity as Secrets},
    },
    error::unique_violation,
    fresh_cache::{FreshCache, write_then_forget_all},
};
use crate::{
    config::CacheSettings,
    domain::{
        CredentialId, KeyAlgorithm, KeyInfo, MAX_KEYS, MAX_SECRETS, PublicKey, Scopes, SecretInfo,
        ServiceAccount, ServiceAccountCredentials, ServiceAccountName, StoredKey, StoredSecret,
    },
    telemetry::metrics::CacheMetrics,
};

/// `last_used_at` is written at most this often per account and replica,
/// so that grants stay write-free on the hot path.
pub const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// What a cached lookup was by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lookup {
    Name(ServiceAccountName),
    Credential(CredentialId),
}

/// What became of adding a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialAdded {
    Added,
    /// The account holds as many of that kind as it may.
    Full,
    NoSuchAccount,
    /// The account holds a reserved scope and the writer may not give it a
    /// credential ([`ReservedScopes::Refused`]).
    Protected,
}

/// Whether a write may touch an account that holds a reserved (`auth.…`)
/// scope. Decided under the account's row lock, in the write's own
/// transaction: checked on an earlier read, a concurrent grant of such a
/// scope could land between the check and the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedScopes {
    Allowed,
    Refused,
}

/// What [`ServiceAccounts::set_scopes`] did.
#[derive(Debug)]
pub enum ScopesSet {
    Set(ServiceAccount),
    NoSuchAccount,
    /// A reserved scope would be added to an account that holds
    /// credentials: they were given without the power it brings.
    CredentialsHeld,
}

#[derive(Debug, Clone)]
pub struct ServiceAccounts {
    db: DatabaseConnection,
    /// Credentials by name and by credential id; `None` when caching is off.
    cache: Option<Arc<FreshCache<Lookup, Option<ServiceAccountCredentials>>>>,
    /// When this replica last wrote each account's `last_used_at`.
    last_used_written: Arc<quick_cache::sync::Cache<i64, Instant>>,
}

impl ServiceAccounts {
    /// `metrics`: where the cache counts its hits and misses.
    pub fn new(db: DatabaseConnection, settings: CacheSettings, metrics: CacheMetrics) -> Self {
        Self {
            db,
            cache: FreshCache::new(settings, metrics).map(Arc::new),
            last_used_written: Arc::new(quick_cache::sync::Cache::new(settings.capacity.max(1))),
        }
    }

    /// The account named `name` (a grant's `client_id`) with its secret
    /// digests and public keys, active or not; `None` if there is none.
    ///
    /// # Errors
    /// The database's.
    pub async fn credentials_by_name(
        &self,
        name: &ServiceAccountName,
    ) -> Result<Option<ServiceAccountCredentials>, StoreError> {
        let fetch = async {
            let row = find_by_name(&self.db, name).await?;
            // A name nobody holds costs the same queries as a name somebody
            // holds: how long a grant takes tells nothing about which
            // accounts exist.
            let account_id = row.as_ref().map_or(NO_ACCOUNT, |row| row.id);
            let (secrets, keys) = credentials_held_by(&self.db, account_id).await?;
            row.map(|row| credentials_of(row, secrets, keys))
                .transpose()
        };
        self.read_through(Lookup::Name(name.clone()), fetch).await
    }

    /// The account that holds the secret or key `cid` (a service token's
    /// claim), with all its credentials; `None` if no account holds it
    /// (removed, or its account deleted).
    ///
    /// # Errors
    /// The database's.
    pub async fn credentials_by_cid(
        &self,
        cid: &CredentialId,
    ) -> Result<Option<ServiceAccountCredentials>, StoreError> {
        let fetch = async {
            let Some(account_id) = owner_of(&self.db, cid).await? else {
                return Ok(None);
            };
            let Some(row) = find_by_id(&self.db, account_id).await? else {
                return Ok(None);
            };
            let (secrets, keys) = credentials_held_by(&self.db, row.id).await?;
            credentials_of(row, secrets, keys).map(Some)
        };
        self.read_through(Lookup::Credential(cid.clone()), fetch)
            .await
    }

    /// The account with this id, read afresh (administration).
    ///
    /// # Errors
    /// The database's.
    pub async fn get(&self, id: i64) -> Result<Option<ServiceAccount>, StoreError> {
        let Some(row) = find_by_id(&self.db, id).await? else {
            return Ok(None);
        };
        Ok(assemble(&self.db, vec![row]).await?.pop())
    }

    /// Up to `limit` accounts with an id above `after_id`, by id.
    ///
    /// # Errors
    /// The database's.
    pub async fn list_after(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<ServiceAccount>, StoreError> {
        let rows = Accounts::find()
            .filter(service_account::Column::Id.gt(after_id))
            .order_by_asc(service_account::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        assemble(&self.db, rows).await
    }

    /// Creates an active account without credentials.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] on `name` if it is taken; the database's.
    pub async fn create(
        &self,
        name: &ServiceAccountName,
        scopes: &Scopes,
        now: NaiveDateTime,
    ) -> Result<ServiceAccount, StoreError> {
        let row = service_account::ActiveModel {
            name: Set(name.as_str().to_owned()),
            scopes: Set(scopes.to_space_separated()),
            is_active: Set(true),
            created_at: Set(now),
            last_used_at: Set(None),
            tokens_valid_after: Set(None),
            ..Default::default()
        };
        let db = self.db.clone();
        let inserted = self
            .write(async move {
                Accounts::insert(row)
                    .exec(&db)
                    .await
                    .map_err(name_taken_or)
                    .map(|r| r.last_insert_id)
            })
            .await?;
        self.get(inserted)
            .await?
            .ok_or_else(|| StoreError::other("a new service account vanished"))
    }

    /// Activates or deactivates: the account after, `None` if there is
    /// none. Deactivation also sets `tokens_valid_after` to `now`, in the
    /// same statement, so that a reactivation does not bring back the
    /// tokens issued before it. Reactivating an inactive account moves it
    /// forward to the second before `now` (never back): tokens granted
    /// while it was inactive, by a replica that had not seen the
    /// deactivation yet, stay revoked, and one granted in the second of the
    /// reactivation works.
    ///
    /// # Errors
    /// The database's.
    pub async fn set_active(
        &self,
        id: i64,
        active: bool,
        now: NaiveDateTime,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        let db = self.db.clone();
        self.write(async move {
            use service_account::Column::{IsActive, TokensValidAfter};
            let cut = if active {
                let before = now - chrono::TimeDelta::seconds(1);
                let moves_forward = IsActive
                    .eq(false)
                    .and(TokensValidAfter.is_null().or(TokensValidAfter.lt(before)));
                Expr::case(moves_forward, Expr::value(Some(before)))
                    .finally(Expr::col(TokensValidAfter))
                    .into()
            } else {
                Expr::value(Some(now))
            };
            // The cut first: MariaDB's SET sees the values assigned before it.
            Accounts::update_many()
                .col_expr(TokensValidAfter, cut)
                .col_expr(IsActive, Expr::value(active))
                .filter(service_account::Column::Id.eq(id))
                .exec(&db)
                .await?;
            Ok(())
        })
        .await?;
        self.get(id).await
    }

    /// Replaces the allowed scopes: the account after, `None` if there is none.
    ///
    /// # Errors
    /// The database's.
    pub async fn set_scopes(&self, id: i64, scopes: &Scopes) -> Result<ScopesSet, StoreError> {
        let text = scopes.to_space_separated();
        let adds_reserved: Vec<String> = scopes
            .iter()
            .filter(|s| s.is_reserved())
            .map(|s| s.as_str().to_owned())
            .collect();
        let db = self.db.clone();
        let set = self
            .write(async move {
                let txn = super::begin_write(&db).await?;
                let Some(held) = lock_account(&txn, id).await? else {
                    return Ok(ScopesSetRow::NoSuchAccount);
                };
                if adds_reserved.iter().any(|s| !held.contains(s))
                    && holds_credentials(&txn, id).await?
                {
                    return Ok(ScopesSetRow::CredentialsHeld);
                }
                Accounts::update_many()
                    .col_expr(service_account::Column::Scopes, Expr::value(text))
                    .filter(service_account::Column::Id.eq(id))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Ok(ScopesSetRow::Set)
            })
            .await?;
        Ok(match set {
            ScopesSetRow::NoSuchAccount => ScopesSet::NoSuchAccount,
            ScopesSetRow::CredentialsHeld => ScopesSet::CredentialsHeld,
            ScopesSetRow::Set => match self.get(id).await? {
                Some(account) => ScopesSet::Set(account),
                None => ScopesSet::NoSuchAccount,
            },
        })
    }

    /// Deletes the account with its credentials: whether there was one.
    ///
    /// # Errors
    /// The database's.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let db = self.db.clone();
        self.write(async move {
            let txn = super::begin_write(&db).await?;
            // Explicitly as well as by the foreign keys' ON DELETE CASCADE:
            // credentials must not outlive their account even where the
            // foreign keys are not enforced.
            Secrets::delete_many()
                .filter(service_account_secret::Column::AccountId.eq(id))
                .exec(&txn)
                .await?;
            Keys::delete_many()
                .filter(service_account_key::Column::AccountId.eq(id))
                .exec(&txn)
                .await?;
            let deleted = Accounts::delete_by_id(id).exec(&txn).await?;
            txn.commit().await?;
            Ok(deleted.rows_affected == 1)
        })
        .await
    }

    /// Adds a client secret stored as `digest`, unless the account holds
    /// [`MAX_SECRETS`] already.
    ///
    /// # Errors
    /// The database's.
    pub async fn add_secret(
        &self,
        id: i64,
        secret_id: &CredentialId,
        digest: String,
        now: NaiveDateTime,
        reserved: ReservedScopes,
    ) -> Result<CredentialAdded, StoreError> {
        let row = service_account_secret::ActiveModel {
            secret_id: Set(secret_id.as_str().to_owned()),
            account_id: Set(id),
            secret_hash: Set(digest),
            created_at: Set(now),
        };
        self.add_credential(id, NewCredential::Secret(row), reserved)
            .await
    }

    /// Removes the account's secret `secret_id`: whether it held it.
    ///
    /// # Errors
    /// The database's.
    pub async fn remove_secret(
        &self,
        id: i64,
        secret_id: &CredentialId,
    ) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let secret_id = secret_id.as_str().to_owned();
        self.write(async move {
            let deleted = Secrets::delete_many()
                .filter(service_account_secret::Column::AccountId.eq(id))
                .filter(service_account_secret::Column::SecretId.eq(secret_id))
                .exec(&db)
                .await?;
            Ok(deleted.rows_affected > 0)
        })
        .await
    }

    /// Registers `key` as `kid`, unless the account holds [`MAX_KEYS`]
    /// already.
    ///
    /// # Errors
    /// The database's.
    pub async fn add_key(
        &self,
        id: i64,
        kid: &CredentialId,
        key: &PublicKey,
        now: NaiveDateTime,
        reserved: ReservedScopes,
    ) -> Result<CredentialAdded, StoreError> {
        let row = service_account_key::ActiveModel {
            kid: Set(kid.as_str().to_owned()),
            account_id: Set(id),
            algorithm: Set(key.algorithm().as_str().to_owned()),
            public_key_pem: Set(key.pem().to_owned()),
            created_at: Set(now),
        };
        self.add_credential(id, NewCredential::Key(row), reserved)
            .await
    }

    /// Adds `credential` under the account's lock: refused if the account
    /// is gone, protected from this writer, or holds as many of that kind
    /// as it may.
    async fn add_credential(
        &self,
        id: i64,
        credential: NewCredential,
        reserved: ReservedScopes,
    ) -> Result<CredentialAdded, StoreError> {
        let db = self.db.clone();
        self.write(async move {
            let txn = super::begin_write(&db).await?;
            match lock_account(&txn, id).await? {
                None => return Ok(CredentialAdded::NoSuchAccount),
                Some(held) if held.any_reserved() && reserved == ReservedScopes::Refused => {
                    return Ok(CredentialAdded::Protected);
                }
                Some(_) => {}
            }
            let (held, limit) = match &credential {
                NewCredential::Secret(_) => (
                    Secrets::find()
                        .filter(service_account_secret::Column::AccountId.eq(id))
                        .count(&txn)
                        .await?,
                    MAX_SECRETS,
                ),
                NewCredential::Key(_) => (
                    Keys::find()
                        .filter(service_account_key::Column::AccountId.eq(id))
                        .count(&txn)
                        .await?,
                    MAX_KEYS,
                ),
            };
            if held >= limit as u64 {
                return Ok(CredentialAdded::Full);
            }
            match credential {
                NewCredential::Secret(row) => {
                    Secrets::insert(row).exec_without_returning(&txn).await?;
                }
                NewCredential::Key(row) => {
                    Keys::insert(row).exec_without_returning(&txn).await?;
                }
            }
            txn.commit().await?;
            Ok(CredentialAdded::Added)
        })
        .await
    }

    /// Removes the account's key `kid`: whether it held it.
    ///
    /// # Errors
    /// The database's.
    pub async fn remove_key(&self, id: i64, kid: &CredentialId) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let kid = kid.as_str().to_owned();
        self.write(async move {
            let deleted = Keys::delete_many()
                .filter(service_account_key::Column::AccountId.eq(id))
                .filter(service_account_key::Column::Kid.eq(kid))
                .exec(&db)
                .await?;
            Ok(deleted.rows_affected > 0)
        })
        .await
    }

    /// Records that the account obtained a token at `now`: written at most
    /// once per [`LAST_USED_RESOLUTION`] per account by this replica (and
    /// by the database's condition, by all), so most grants write nothing.
    /// The cache is not involved: it holds no `last_used_at`.
    ///
    /// # Errors
    /// The database's.
    pub async fn record_use(&self, id: i64, now: NaiveDateTime) -> Result<(), StoreError> {
        let due = self
            .last_used_written
            .get(&id)
            .is_none_or(|at| at.elapsed() >= LAST_USED_RESOLUTION);
        if !due {
            return Ok(());
        }
        self.last_used_written.insert(id, Instant::now());
        let resolution = chrono::TimeDelta::from_std(LAST_USED_RESOLUTION)
            .map_err(|e| StoreError::other(format_args!("last-used resolution: {e}")))?;
        let stale_before = now - resolution;
        Accounts::update_many()
            .col_expr(service_account::Column::LastUsedAt, Expr::value(Some(now)))
            .filter(service_account::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(service_account::Column::LastUsedAt.is_null())
                    .add(service_account::Column::LastUsedAt.lt(stale_before)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn read_through(
        &self,
        key: Lookup,
        fetch: impl Future<Output = Result<Option<ServiceAccountCredentials>, StoreError>>,
    ) -> Result<Option<ServiceAccountCredentials>, StoreError> {
        match &self.cache {
            None => fetch.await,
            // Misses too: for the same answer in the same time whether an
            // account exists or not, and so that a revoked token's checks
            // stop costing queries.
            Some(cache) => cache.read_through(key, fetch, |_| true).await,
        }
    }

    /// Runs `write` to completion even if the caller is cancelled, then
    /// forgets every cached lookup (see [`write_then_forget_all`]).
    async fn write<T: Send + 'static>(
        &self,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        write_then_forget_all(self.cache.as_ref(), write).await
    }
}

/// A taken name as [`StoreError::Duplicate`]; other errors pass through.
fn name_taken_or(err: sea_orm::DbErr) -> StoreError {
    if unique_violation(&err).is_some() {
        StoreError::Duplicate {
            what: "service account",
            field: "name",
        }
    } else {
        StoreError::from(err)
    }
}

#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "service_accounts.find_by_id"))]
async fn find_by_id(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<service_account::Model>, StoreError> {
    at_most_one(Accounts::find_by_id(id).all(db).await?)
}

#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "service_accounts.find_by_name"))]
async fn find_by_name(
    db: &impl ConnectionTrait,
    name: &ServiceAccountName,
) -> Result<Option<service_account::Model>, StoreError> {
    at_most_one(
        Accounts::find()
            .filter(service_account::Column::Name.eq(name.as_str()))
            .all(db)
            .await?,
    )
}

/// The account holding the credential `cid`, if any.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "service_accounts.owner_of"))]
async fn owner_of(
    db: &impl ConnectionTrait,
    cid: &CredentialId,
) -> Result<Option<i64>, StoreError> {
    let by_secret: Vec<i64> = Secrets::find_by_id(cid.as_str())
        .select_only()
        .column(service_account_secret::Column::AccountId)
        .into_tuple()
        .all(db)
        .await?;
    if let Some(id) = at_most_one(by_secret)? {
        return Ok(Some(id));
    }
    let by_key: Vec<i64> = Keys::find_by_id(cid.as_str())
        .select_only()
        .column(service_account_key::Column::AccountId)
        .into_tuple()
        .all(db)
        .await?;
    at_most_one(by_key)
}

/// Locks the account's row until the transaction ends (PostgreSQL and
/// MariaDB; SQLite's write transaction locks the whole database), so that
/// concurrent changes of its credentials and scopes happen one after the
/// other: its scopes, `None` if there is no such account.
async fn lock_account(db: &impl ConnectionTrait, id: i64) -> Result<Option<Scopes>, StoreError> {
    let found: Vec<(i64, String)> = Accounts::find_by_id(id)
        .select_only()
        .column(service_account::Column::Id)
        .column(service_account::Column::Scopes)
        .lock_exclusive()
        .into_tuple()
        .all(db)
        .await?;
    found
        .into_iter()
        .next()
        .map(|(_, held)| scopes(&held))
        .transpose()
}

/// Whether the account holds any secret or key.
async fn holds_credentials(db: &impl ConnectionTrait, id: i64) -> Result<bool, StoreError> {
    let secrets = Secrets::find()
        .filter(service_account_secret::Column::AccountId.eq(id))
        .count(db)
        .await?;
    let keys = Keys::find()
        .filter(service_account_key::Column::AccountId.eq(id))
        .count(db)
        .await?;
    Ok(secrets + keys > 0)
}

/// A credential row to insert ([`ServiceAccounts::add_credential`]).
enum NewCredential {
    Secret(service_account_secret::ActiveModel),
    Key(service_account_key::ActiveModel),
}

/// [`ScopesSet`] before the account is read back.
enum ScopesSetRow {
    Set,
    NoSuchAccount,
    CredentialsHeld,
}

/// An account id no row has (ids start at 1): what a lookup of an unknown
/// name reads the credentials of.
const NO_ACCOUNT: i64 = 0;

/// The secrets and keys of the account `account_id`.
async fn credentials_held_by(
    db: &impl ConnectionTrait,
    account_id: i64,
) -> Result<(Vec<StoredSecret>, Vec<StoredKey>), StoreError> {
    let secrets = Secrets::find()
        .filter(service_account_secret::Column::AccountId.eq(account_id))
        .all(db)
        .await?
        .into_iter()
        .map(|s| {
            Ok(StoredSecret {
                secret_id: credential_id(&s.secret_id)?,
                digest: s.secret_hash,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let keys = Keys::find()
        .filter(service_account_key::Column::AccountId.eq(account_id))
        .all(db)
        .await?
        .into_iter()
        .map(|k| {
            Ok(StoredKey {
                kid: credential_id(&k.kid)?,
                algorithm: algorithm(&k.algorithm)?,
                public_key_pem: k.public_key_pem,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((secrets, keys))
}

/// The account of `row` with every credential, as the token path uses it.
fn credentials_of(
    row: service_account::Model,
    secrets: Vec<StoredSecret>,
    keys: Vec<StoredKey>,
) -> Result<ServiceAccountCredentials, StoreError> {
    Ok(ServiceAccountCredentials {
        id: row.id,
        name: name(&row.name)?,
        scopes: scopes(&row.scopes)?,
        is_active: row.is_active,
        tokens_valid_after: row.tokens_valid_after.map(|at| at.and_utc().timestamp()),
        secrets,
        keys,
    })
}

/// The accounts of `rows`, in their order, with the public parts of their
/// credentials: two queries for all of them.
async fn assemble(
    db: &impl ConnectionTrait,
    rows: Vec<service_account::Model>,
) -> Result<Vec<ServiceAccount>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut secrets: HashMap<i64, Vec<SecretInfo>> = HashMap::new();
    let secret_rows: Vec<(String, i64, NaiveDateTime)> = Secrets::find()
        .select_only()
        .column(service_account_secret::Column::SecretId)
        .column(service_account_secret::Column::AccountId)
        .column(service_account_secret::Column::CreatedAt)
        .filter(service_account_secret::Column::AccountId.is_in(ids.clone()))
        .order_by_asc(service_account_secret::Column::CreatedAt)
        .order_by_asc(service_account_secret::Column::SecretId)
        .into_tuple()
        .all(db)
        .await?;
    for (secret_id, account_id, created_at) in secret_rows {
        secrets.entry(account_id).or_default().push(SecretInfo {
            secret_id: credential_id(&secret_id)?,
            created_at,
        });
    }
    let mut keys: HashMap<i64, Vec<KeyInfo>> = HashMap::new();
    let key_rows: Vec<(String, i64, String, NaiveDateTime)> = Keys::find()
        .select_only()
        .column(service_account_key::Column::Kid)
        .column(service_account_key::Column::AccountId)
        .column(service_account_key::Column::Algorithm)
        .column(service_account_key::Column::CreatedAt)
        .filter(service_account_key::Column::AccountId.is_in(ids))
        .order_by_asc(service_account_key::Column::CreatedAt)
        .order_by_asc(service_account_key::Column::Kid)
        .into_tuple()
        .all(db)
        .await?;
    for (kid, account_id, alg, created_at) in key_rows {
        keys.entry(account_id).or_default().push(KeyInfo {
            kid: credential_id(&kid)?,
            algorithm: algorithm(&alg)?,
            created_at,
        });
    }
    rows.into_iter()
        .map(|row| {
            Ok(ServiceAccount {
                id: row.id,
                name: name(&row.name)?,
                scopes: scopes(&row.scopes)?,
                is_active: row.is_active,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                secrets: secrets.remove(&row.id).unwrap_or_default(),
                keys: keys.remove(&row.id).unwrap_or_default(),
            })
        })
        .collect()
}

// Stored values are parsed again on the way out: a row written by hand that
// breaks the rules is an internal error, not a value the rest trusts.

fn name(stored: &str) -> Result<ServiceAccountName, StoreError> {
    ServiceAccountName::parse(stored)
        .map_err(|e| StoreError::other(format_args!("stored service account name: {e}")))
}

fn scopes(stored: &str) -> Result<Scopes, StoreError> {
    Scopes::parse_space_separated(stored).map_err(|e| {
        StoreError::other(format_args!(
            "stored service account scopes: {}",
            e.join(" ")
        ))
    })
}

fn credential_id(stored: &str) -> Result<CredentialId, StoreError> {
    CredentialId::parse(stored)
        .map_err(|e| StoreError::other(format_args!("stored credential id: {e}")))
}

fn algorithm(stored: &str) -> Result<KeyAlgorithm, StoreError> {
    KeyAlgorithm::parse(stored)
        .ok_or_else(|| StoreError::other(format_args!("stored key algorithm {stored:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::client_secret_digest, persistence::db_now};

    async fn accounts(ttl: Duration) -> (DatabaseConnection, ServiceAccounts) {
        let db = crate::persistence::memory_database().await;
        let settings = CacheSettings { ttl, capacity: 16 };
        let accounts = ServiceAccounts::new(db.clone(), settings, CacheMetrics::default());
        (db, accounts)
    }

    fn name(text: &str) -> ServiceAccountName {
        ServiceAccountName::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::parse(list.iter().copied()).unwrap_or_default()
    }

    #[tokio::test]
    async fn lookups_by_name_and_credential_see_writes_through_them_at_once() {
        let (_db, accounts) = accounts(Duration::from_secs(3600)).await;
        let billing = name("billing");
        let account = accounts
            .create(&billing, &scopes(&["orders"]), db_now())
            .await
            .unwrap();
        let secret_id = CredentialId::generate();
        let added = accounts
            .add_secret(
                account.id,
                &secret_id,
                client_secret_digest("s3cret"),
                db_now(),
                ReservedScopes::Refused,
            )
            .await
            .unwrap();
        assert_eq!(added, CredentialAdded::Added);

        let by_name = accounts.credentials_by_name(&billing).await.unwrap();
        let by_name = by_name.expect("found by name");
        assert_eq!(by_name.secret_matching("s3cret"), Some(&secret_id));
        assert_eq!(by_name.scopes, scopes(&["orders"]));
        let by_cid = accounts.credentials_by_cid(&secret_id).await.unwrap();
        assert_eq!(by_cid.as_ref(), Some(&by_name));

        assert_eq!(by_cid.and_then(|c| c.tokens_valid_after), None);

        // Cached now; each write through this type is seen at once.
        let deactivated_at = db_now();
        accounts
            .set_active(account.id, false, deactivated_at)
            .await
            .unwrap();
        let found = accounts.credentials_by_cid(&secret_id).await.unwrap();
        let found = found.map(|c| (c.is_active, c.tokens_valid_after));
        let cut = Some(deactivated_at.and_utc().timestamp());
        assert_eq!(found, Some((false, cut)));
        // Reactivation moves the cut to the second before it: tokens from
        // before, and from while it was inactive, stay revoked.
        let reactivated_at = deactivated_at + chrono::TimeDelta::seconds(30);
        accounts
            .set_active(account.id, true, reactivated_at)
            .await
            .unwrap();
        let found = accounts.credentials_by_cid(&secret_id).await.unwrap();
        let found = found.map(|c| (c.is_active, c.tokens_valid_after));
        let cut = Some(reactivated_at.and_utc().timestamp() - 1);
        assert_eq!(found, Some((true, cut)));
        // Activating an active account revokes nothing.
        accounts
            .set_active(
                account.id,
                true,
                reactivated_at + chrono::TimeDelta::seconds(30),
            )
            .await
            .unwrap();
        let found = accounts.credentials_by_cid(&secret_id).await.unwrap();
        let found = found.map(|c| (c.is_active, c.tokens_valid_after));
        assert_eq!(found, Some((true, cut)));
        accounts
            .set_scopes(account.id, &scopes(&["reports"]))
            .await
            .unwrap();
        let found = accounts.credentials_by_name(&billing).await.unwrap();
        assert_eq!(found.map(|c| c.scopes), Some(scopes(&["reports"])));
        assert!(
            accounts
                .remove_secret(account.id, &secret_id)
                .await
                .unwrap()
        );
        assert_eq!(accounts.credentials_by_cid(&secret_id).await.unwrap(), None);

        let key = PublicKey::parse(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/keys/service-ed25519.pub.pem"
            ))
            .unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kid = CredentialId::generate();
        accounts
            .add_key(account.id, &kid, &key, db_now(), ReservedScopes::Refused)
            .await
            .unwrap();
        let found = accounts.credentials_by_cid(&kid).await.unwrap();
        let stored = found.as_ref().and_then(|c| c.key(kid.as_str()));
        assert_eq!(stored.map(|k| k.algorithm), Some(KeyAlgorithm::EdDsa));
        assert_eq!(stored.map(|k| k.public_key_pem.as_str()), Some(key.pem()));

        assert!(accounts.delete(account.id).await.unwrap());
        assert_eq!(accounts.credentials_by_cid(&kid).await.unwrap(), None);
        assert_eq!(accounts.credentials_by_name(&billing).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_change_elsewhere_is_seen_within_the_ttl() {
        use sea_orm::ConnectionTrait;
        let ttl = Duration::from_millis(200);
        let (db, accounts) = accounts(ttl).await;
        let billing = name("billing");
        accounts
            .create(&billing, &Scopes::default(), db_now())
            .await
            .unwrap();
        let found = accounts.credentials_by_name(&billing).await.unwrap();
        assert_eq!(found.map(|c| c.is_active), Some(true));
        // Behind the cache's back, as another replica would.
        db.execute_unprepared("UPDATE service_accounts SET is_active = FALSE")
            .await
            .unwrap();
        let found = accounts.credentials_by_name(&billing).await.unwrap();
        assert_eq!(found.map(|c| c.is_active), Some(true));
        tokio::time::sleep(ttl).await;
        let found = accounts.credentials_by_name(&billing).await.unwrap();
        assert_eq!(found.map(|c| c.is_active), Some(false));
    }

    #[tokio::test]
    async fn last_use_is_written_at_most_once_a_minute() {
        let (_db, accounts) = accounts(Duration::ZERO).await;
        let account = accounts
            .create(&name("busy"), &Scopes::default(), db_now())
            .await
            .unwrap();
        let first = db_now();
        accounts.record_use(account.id, first).await.unwrap();
        let later = first + chrono::TimeDelta::seconds(5);
        accounts.record_use(account.id, later).await.unwrap();
        let shown = accounts.get(account.id).await.unwrap();
        assert_eq!(shown.and_then(|a| a.last_used_at), Some(first));
    }
}
