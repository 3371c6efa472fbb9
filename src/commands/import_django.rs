//! `import-django`: the users of a Django project, copied into this
//! service's database in batches, with their ids and password hashes.
//! Storage reads the source ([`persistence::django_users`]) and inserts
//! ([`users::import_batch`]); this module parses each row into domain
//! values, sorts the hashes, shows progress and prints the report.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::describe;
use crate::{
    config::Settings,
    domain::{Avatar, Email, Username},
    passwords::django::{self, Kind},
    persistence::{
        self, db_now,
        django_users::{DjangoSource, DjangoUser},
        users::{self, ImportOutcome, ImportedUser},
    },
};

/// At most this many conflicts and invalid rows are listed one by one.
const LISTED: usize = 50;

/// What an import did, printed at the end.
#[derive(Debug, Default)]
struct Report {
    read: u64,
    imported: u64,
    already_present: u64,
    /// Deleted here since an earlier run: not brought back.
    deleted_here: u64,
    /// (id, field taken by another user).
    conflicts: Vec<(i64, &'static str)>,
    /// (id, what did not parse).
    invalid: Vec<(i64, String)>,
    /// The imported users' hashes, by kind.
    hashes: BTreeMap<Kind, u64>,
    /// Django's names of the hashers behind the unknown ones.
    unknown_hashers: BTreeMap<String, u64>,
}

/// Imports the users of `table` in the Django database at `from`.
///
/// # Errors
/// Either database unreachable, the table is not a Django user table, or a
/// batch failed (the batches before it are kept; a re-run skips them).
pub async fn run(
    settings: &Settings,
    from: &str,
    table: &str,
    batch_size: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = persistence::open(&settings.database).await?;
    let source = DjangoSource::open(from, table)
        .await
        .map_err(|e| describe(e).context("cannot read the Django database"))?;
    let total = source.count().await.map_err(describe)?;
    let header = header(&source, total);
    let progress = progress_bar(total);
    // The seed's model has no date_joined: those users joined "now".
    let now = db_now();
    let mut report = Report::default();
    let mut after = i64::MIN;
    loop {
        let rows = source
            .batch_after(after, batch_size)
            .await
            .map_err(describe)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let read = rows.len() as u64;
        let mut batch = Vec::with_capacity(rows.len());
        let mut kinds = BTreeMap::new();
        for row in rows {
            match parse(row, now) {
                Ok((user, kind, hasher)) => {
                    kinds.insert(user.id, (kind, hasher));
                    batch.push(user);
                }
                Err((id, reason)) => report.invalid.push((id, reason)),
            }
        }
        let outcomes = users::import_batch(&target, batch)
            .await
            .map_err(|e| describe(e).context(format!("importing the users after id {after}")))?;
        report.read += read;
        for (id, outcome) in outcomes {
            match outcome {
                ImportOutcome::Imported => {
                    report.imported += 1;
                    if let Some((kind, hasher)) = kinds.remove(&id) {
                        *report.hashes.entry(kind).or_default() += 1;
                        if let Some(hasher) = hasher {
                            *report.unknown_hashers.entry(hasher).or_default() += 1;
                        }
                    }
                }
                ImportOutcome::AlreadyPresent => report.already_present += 1,
                ImportOutcome::DeletedHere => report.deleted_here += 1,
                ImportOutcome::Conflict { field } => report.conflicts.push((id, field)),
            }
        }
        progress.inc(read);
    }
    progress.finish_and_clear();
    source.close().await;
    print!("{header}{}", report.render(started.elapsed()));
    Ok(())
}

/// The report's first line: what was read.
fn header(source: &DjangoSource, total: u64) -> String {
    let model = if source.is_abstract_user() {
        "Django's AbstractUser columns"
    } else if source.has_column("date_joined") {
        "a custom user model"
    } else {
        "a custom user model without date_joined, set to the import time"
    };
    format!(
        "import-django: {total} users in {} ({model})\n",
        source.table()
    )
}

/// A row as a user to insert, with its hash's kind (and, for an unknown
/// one, the Django hasher's name); or its id and why it cannot be imported.
#[allow(clippy::type_complexity, reason = "a private helper's pair of results")]
fn parse(
    row: DjangoUser,
    now: chrono::NaiveDateTime,
) -> Result<(ImportedUser, Kind, Option<String>), (i64, String)> {
    let id = row.id;
    let email = Email::parse(&row.email).map_err(|e| (id, format!("email: {e}")))?;
    let username = Username::parse(&row.username).map_err(|e| (id, format!("username: {e}")))?;
    // Django's URLField is blank=True: an empty string is no avatar.
    let avatar = match row.avatar.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(Avatar::parse(url).map_err(|e| (id, format!("avatar: {e}")))?),
    };
    let kind = django::classify(&row.password);
    let (password_hash, unknown_hasher) = match kind {
        Kind::Unknown => {
            // Only the hasher's name (before the first `$`) is kept for the
            // report; the hash itself is replaced, never guessed at.
            let name = row
                .password
                .split_once('$')
                .map(|(name, _)| name)
                .filter(|name| {
                    !name.is_empty()
                        && name.len() <= 32
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                .unwrap_or("unrecognised")
                .to_owned();
            (django::unusable(), Some(name))
        }
        _ => (row.password, None),
    };
    let user = ImportedUser {
        id,
        email,
        username,
        password_hash,
        avatar,
        is_active: row.is_active,
        is_staff: row.is_staff,
        is_superuser: row.is_superuser,
        last_login: row.last_login,
        date_joined: row.date_joined.unwrap_or(now),
    };
    Ok((user, kind, unknown_hasher))
}

/// A bar on stderr when it is a terminal; nothing otherwise (logs, CI).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} importing users [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl Report {
    fn render(&self, took: Duration) -> String {
        let mut out = String::new();
        let count = |kind| self.hashes.get(&kind).copied().unwrap_or(0);
        let _ = writeln!(out, "read: {}", self.read);
        let _ = writeln!(out, "imported: {}", self.imported);
        let _ = writeln!(out, "already present: {}", self.already_present);
        if self.deleted_here > 0 {
            let _ = writeln!(
                out,
                "deleted here since: {} (not brought back)",
                self.deleted_here
            );
        }
        let _ = writeln!(out, "conflicts: {}", self.conflicts.len());
        for (id, field) in self.conflicts.iter().take(LISTED) {
            let _ = writeln!(
                out,
                "  id {id}: its {field} belongs to another user; not imported"
            );
        }
        list_rest(&mut out, self.conflicts.len());
        let _ = writeln!(out, "invalid: {}", self.invalid.len());
        for (id, reason) in self.invalid.iter().take(LISTED) {
            let _ = writeln!(out, "  id {id}: {reason} Not imported.");
        }
        list_rest(&mut out, self.invalid.len());
        let _ = writeln!(
            out,
            "password hashes imported: pbkdf2_sha256 {}, argon2 {}, bcrypt_sha256 {}",
            count(Kind::Pbkdf2Sha256),
            count(Kind::Argon2),
            count(Kind::BcryptSha256),
        );
        let _ = writeln!(out, "unusable passwords: {}", count(Kind::Unusable));
        let unknown: Vec<String> = self
            .unknown_hashers
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = write!(out, "unknown hash formats: {}", count(Kind::Unknown));
        if !unknown.is_empty() {
            let _ = write!(
                out,
                " ({}; imported as unusable passwords: set a new one)",
                unknown.join(", ")
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "took: {took:.1?}");
        out
    }
}

fn list_rest(out: &mut String, total: usize) {
    if total > LISTED {
        let _ = writeln!(out, "  … and {} more", total - LISTED);
    }
}
