//! The assertion ids already used (RFC 7523 `jti`), so that an assertion
//! obtains one token only, on any replica.
//!
//! Each use is one row, inserted unless it is there already. The grants of
//! one replica write them together: one writer takes every id waiting and
//! inserts them in one statement (`ON CONFLICT DO NOTHING RETURNING`, which
//! names the ids it inserted; on MariaDB and MySQL, which lack it, a read
//! and an insert in one transaction), so many grants at once cost one
//! commit (on SQLite, one fsync and one turn of the single writer's lock)
//! instead of one each, and they queue here rather than on the database's
//! lock.
//! An insert that finds the id present is the replay check; the primary
//! key decides it on every backend, between replicas too.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, QueryTrait,
    sea_query::{InsertStatement, OnConflict},
};
use tokio::sync::{mpsc, oneshot};

use super::{
    StoreError,
    entities::service_assertion_jti::{self, Entity as AssertionJtis},
    error::unique_violation,
};
use crate::domain::{ServiceAccountName, sha256_hex};

/// Expired assertion ids are deleted at most this often per replica.
pub const JTI_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// How long after its expiry a used assertion id is still kept. The expiry
/// is the accepting replica's clock and the deletion runs on any replica's:
/// deleted at once, a replica whose clock is ahead would forget an id that
/// one behind it still accepts, and the assertion could be used again.
pub const JTI_CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Uses written in one transaction at most.
const MAX_BATCH: usize = 256;
/// Uses waiting for the writer at most; more wait to be queued.
const QUEUE: usize = 4 * MAX_BATCH;

/// One use of an assertion id, and where to say whether it was the first.
struct Use {
    key: String,
    expires_at: NaiveDateTime,
    first: oneshot::Sender<Result<bool, StoreError>>,
}

/// The used assertion ids of one replica's grants.
#[derive(Debug)]
pub struct UsedAssertionIds {
    db: DatabaseConnection,
    /// The writer's queue, started by the first use (inside the runtime).
    queue: OnceLock<mpsc::Sender<Use>>,
    /// When this replica last deleted expired ids.
    flushed_at: Mutex<Option<Instant>>,
}

impl UsedAssertionIds {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            queue: OnceLock::new(),
            flushed_at: Mutex::new(None),
        }
    }

    /// Records that `client` used the assertion id `jti`, kept until
    /// `expires_at` (then the assertion is refused as expired anyway):
    /// `false` if it was used before (a replay). At most once per
    /// [`JTI_FLUSH_INTERVAL`], also deletes the expired ids, on a task of
    /// its own: the server has no periodic cleanup, so this is what bounds
    /// the table while it runs (to the ids used in the last assertion
    /// lifetime plus leeway, [`JTI_CLOCK_SKEW_MARGIN`] and that interval),
    /// whether or not `flush-expired-tokens` is scheduled.
    ///
    /// # Errors
    /// The database's (the insert's; a failed deletion is only logged).
    pub async fn use_once(
        &self,
        client: &ServiceAccountName,
        jti: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<bool, StoreError> {
        let (first, answer) = oneshot::channel();
        let used = Use {
            key: assertion_key(client, jti),
            expires_at,
            first,
        };
        let stopped = || StoreError::other("the assertion id writer stopped");
        self.queue().send(used).await.map_err(|_| stopped())?;
        let first = answer.await.map_err(|_| stopped())?;
        if self.flush_due() {
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = flush_expired_assertion_jtis(&db, now).await {
                    tracing::warn!(error = %e, "could not delete expired assertion ids");
                }
            });
        }
        first
    }

    fn queue(&self) -> &mpsc::Sender<Use> {
        self.queue.get_or_init(|| {
            let (queue, uses) = mpsc::channel(QUEUE);
            tokio::spawn(write_uses(self.db.clone(), uses));
            queue
        })
    }

    /// Whether this replica should delete expired ids now; if so, the next
    /// deletion is due an interval later.
    fn flush_due(&self) -> bool {
        let mut last = self
            .flushed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= JTI_FLUSH_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// The writer: every use waiting (up to [`MAX_BATCH`]) in one statement,
/// until the last [`UsedAssertionIds`] is gone.
async fn write_uses(db: DatabaseConnection, mut uses: mpsc::Receiver<Use>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while uses.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match record_uses(&db, &batch).await {
            Ok(firsts) => {
                for (used, first) in batch.drain(..).zip(firsts) {
                    // A grant that went away needs no answer.
                    let _ = used.first.send(Ok(first));
                }
            }
            Err(e) => {
                for used in batch.drain(..) {
                    let _ = used.first.send(Err(e.for_another_caller()));
                }
            }
        }
    }
}

/// Each id of `uses` once, with its first use's expiry, in key order.
fn first_uses(uses: &[Use]) -> Vec<&Use> {
    let mut firsts: Vec<&Use> = uses.iter().collect();
    firsts.sort_by(|a, b| a.key.cmp(&b.key));
    firsts.dedup_by(|later, first| later.key == first.key);
    firsts
}

/// For each of `uses`, whether it was the first: its id is one `inserted`,
/// and no use before it in `uses` had that id.
fn answers(uses: &[Use], inserted: &HashSet<String>) -> Vec<bool> {
    let mut seen = HashSet::with_capacity(inserted.len());
    uses.iter()
        .map(|used| inserted.contains(&used.key) && seen.insert(used.key.as_str()))
        .collect()
}

/// Inserts each use's id unless present: for each, whether it was the
/// first (a repeat within `uses` is not).
async fn record_uses(db: &DatabaseConnection, uses: &[Use]) -> Result<Vec<bool>, StoreError> {
    let firsts = first_uses(uses);
    let inserted = if db.get_database_backend() == DbBackend::MySql {
        // One read of the ids present and one insert of the others, in one
        // transaction; if another replica inserted one of them in between,
        // the batch is done again id by id.
        match insert_absent(db, &firsts).await {
            Ok(inserted) => inserted,
            Err(e) if unique_violation(&e).is_some() => insert_one_by_one(db, &firsts).await?,
            Err(e) => return Err(e.into()),
        }
    } else {
        let inserted = db.query_all(&insert_returning_inserted(&firsts)).await?;
        inserted
            .iter()
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<_, _>>()?
    };
    Ok(answers(uses, &inserted))
}

/// The row that records `used`.
fn row(used: &Use) -> service_assertion_jti::ActiveModel {
    service_assertion_jti::ActiveModel {
        jti: Set(used.key.clone()),
        expires_at: Set(used.expires_at),
    }
}

/// Inserts `firsts` (one use per id, in key order) unless present,
/// returning the ids inserted: one `INSERT … ON CONFLICT DO NOTHING
/// RETURNING`, a transaction of its own. In key order, two replicas'
/// batches that share ids (a replay raced to both) wait on each other in
/// the same order and never deadlock on PostgreSQL.
fn insert_returning_inserted(firsts: &[&Use]) -> InsertStatement {
    let mut insert = AssertionJtis::insert_many(firsts.iter().map(|used| row(used)))
        .on_conflict(
            OnConflict::column(service_assertion_jti::Column::Jti)
                .do_nothing()
                .to_owned(),
        )
        .into_query();
    insert.returning_col(service_assertion_jti::Column::Jti);
    insert
}

/// The ids of `firsts` (one use per id) that were absent, after inserting
/// them: a read and an insert in one transaction.
async fn insert_absent(
    db: &DatabaseConnection,
    firsts: &[&Use],
) -> Result<HashSet<String>, sea_orm::DbErr> {
    let txn = super::begin_write(db).await?;
    let present: HashSet<String> = AssertionJtis::find()
        .select_only()
        .column(service_assertion_jti::Column::Jti)
        .filter(
            service_assertion_jti::Column::Jti.is_in(firsts.iter().map(|used| used.key.as_str())),
        )
        .into_tuple::<String>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let absent: Vec<&&Use> = firsts
        .iter()
        .filter(|used| !present.contains(&used.key))
        .collect();
    if !absent.is_empty() {
        AssertionJtis::insert_many(absent.iter().map(|used| row(used)))
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(absent.iter().map(|used| used.key.clone()).collect())
}

/// [`insert_absent`] with one insert per id, in key order: two replicas'
/// batches that share ids (a replay raced to both) lock them in the same
/// order and never deadlock.
async fn insert_one_by_one(
    db: &DatabaseConnection,
    firsts: &[&Use],
) -> Result<HashSet<String>, StoreError> {
    let txn = super::begin_write(db).await?;
    let mut inserted = HashSet::with_capacity(firsts.len());
    for used in firsts {
        if insert_unless_present(&txn, &used.key, used.expires_at).await? {
            inserted.insert(used.key.clone());
        }
    }
    txn.commit().await?;
    Ok(inserted)
}

/// Records the use of an assertion id outside the writer (tests, tools):
/// `false` if `client` used this `jti` before.
///
/// # Errors
/// The database's.
pub async fn record_assertion_jti(
    db: &impl ConnectionTrait,
    client: &ServiceAccountName,
    jti: &str,
    expires_at: NaiveDateTime,
) -> Result<bool, StoreError> {
    insert_unless_present(db, &assertion_key(client, jti), expires_at).await
}

/// Inserts the row `key` unless it is there: whether it was inserted. On
/// PostgreSQL and SQLite an `ON CONFLICT DO NOTHING`, because PostgreSQL's
/// failed statement would end the transaction; on MariaDB and MySQL a
/// plain insert whose duplicate key fails that statement alone.
#[tracing::instrument(target = "auth_service::traces", name = "db.query", level = "debug",
    skip_all, fields(db.operation = "service_assertion_jtis.insert"))]
async fn insert_unless_present(
    db: &impl ConnectionTrait,
    key: &str,
    expires_at: NaiveDateTime,
) -> Result<bool, StoreError> {
    let row = service_assertion_jti::ActiveModel {
        jti: Set(key.to_owned()),
        expires_at: Set(expires_at),
    };
    let backend = db.get_database_backend();
    let mut insert = AssertionJtis::insert(row);
    if backend != DbBackend::MySql {
        insert = insert.on_conflict(
            OnConflict::column(service_assertion_jti::Column::Jti)
                .do_nothing()
                .to_owned(),
        );
    }
    match db.execute(insert.as_query()).await {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(e) if unique_violation(&e).is_some() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the used assertion ids that expired more than
/// [`JTI_CLOCK_SKEW_MARGIN`] before `now`: how many.
///
/// # Errors
/// The database's.
pub async fn flush_expired_assertion_jtis(
    db: &impl ConnectionTrait,
    now: NaiveDateTime,
) -> Result<u64, StoreError> {
    let margin = chrono::TimeDelta::from_std(JTI_CLOCK_SKEW_MARGIN)
        .map_err(|e| StoreError::other(format_args!("clock skew margin: {e}")))?;
    let deleted = AssertionJtis::delete_many()
        .filter(service_assertion_jti::Column::ExpiresAt.lt(now - margin))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

/// The stored form of a used assertion id: per client, fixed length.
fn assertion_key(client: &ServiceAccountName, jti: &str) -> String {
    sha256_hex(&format!("{client}\n{jti}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::persistence::{db_now, memory_database};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_uses_at_once_each_id_is_first_once() {
        let db = memory_database().await;
        let ids = Arc::new(UsedAssertionIds::new(db.clone()));
        let billing = ServiceAccountName::parse("billing").unwrap();
        let reports = ServiceAccountName::parse("reports").unwrap();
        let expires_at = db_now() + chrono::TimeDelta::minutes(5);
        for trial in 0..20 {
            let mut uses = tokio::task::JoinSet::new();
            for n in 0..64 {
                let ids = Arc::clone(&ids);
                // 16 ids, each used twice by two clients.
                let client = if n % 2 == 0 { &billing } else { &reports }.clone();
                let jti = format!("{trial}-{}", n % 32 / 2);
                uses.spawn(async move {
                    let first = ids.use_once(&client, &jti, expires_at, db_now()).await;
                    ((client, jti), first.unwrap())
                });
            }
            let mut firsts = std::collections::HashMap::new();
            while let Some(used) = uses.join_next().await {
                let (id, first) = used.unwrap();
                *firsts.entry(id).or_insert(0) += u32::from(first);
            }
            assert_eq!(firsts.len(), 32);
            assert!(
                firsts.values().all(|&n| n == 1),
                "trial {trial}: {firsts:?}"
            );
        }
        let rows = AssertionJtis::find().all(&db).await.unwrap();
        assert_eq!(rows.len(), 20 * 32);
    }

    /// Both ways of writing a batch give the same answers: the batch's and
    /// the one-by-one fallback taken when another replica raced it.
    #[tokio::test]
    async fn a_batch_and_its_fallback_agree() {
        let db = memory_database().await;
        let expires_at = db_now() + chrono::TimeDelta::minutes(5);
        let uses = |keys: &[&str]| -> Vec<Use> {
            keys.iter()
                .map(|key| Use {
                    key: (*key).to_owned(),
                    expires_at,
                    first: oneshot::channel().0,
                })
                .collect()
        };
        for (keys, expected) in [
            (&["b", "a", "b"][..], vec![true, true, false]),
            (&["c", "a", "c", "d"][..], vec![true, false, false, true]),
        ] {
            assert_eq!(record_uses(&db, &uses(keys)).await.unwrap(), expected);
        }
        for (keys, expected) in [
            (&["f", "e", "f"][..], vec![true, true, false]),
            (&["g", "e", "g", "a"][..], vec![true, false, false, false]),
        ] {
            let uses = uses(keys);
            let inserted = insert_one_by_one(&db, &first_uses(&uses)).await.unwrap();
            assert_eq!(answers(&uses, &inserted), expected);
        }
        assert_eq!(AssertionJtis::find().all(&db).await.unwrap().len(), 7);
    }
}
