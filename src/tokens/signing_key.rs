//! The HS256 secret: `AUTH_JWT_SECRET`, or on SQLite a key generated once
//! into a private file beside the database; and that file handling, which
//! the generated private keys of [`super::keys`] share.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::config::TokenSettings;

/// The HS256 key: `AUTH_JWT_SECRET` (at least 32 bytes), or on SQLite a
/// random key generated once into a 0600 file beside the database.
/// PostgreSQL and MySQL mean several replicas, which must share one key, so
/// there it is required.
pub fn signing_key(settings: &TokenSettings, database_url: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &settings.jwt_secret {
        anyhow::ensure!(
            !secret.expose().is_empty(),
            "AUTH_JWT_SECRET must not be empty"
        );
        if secret.expose().len() < MIN_KEY_BYTES {
            anyhow::ensure!(
                settings.allow_weak_secret,
                "AUTH_JWT_SECRET is shorter than {MIN_KEY_BYTES} bytes; use a longer random key (openssl rand -hex 32)"
            );
            tracing::warn!(
                "AUTH_JWT_SECRET is shorter than {MIN_KEY_BYTES} bytes, accepted because AUTH_ALLOW_WEAK_SECRET is set (tests only)"
            );
        }
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let Some(path) = sqlite_path(database_url) else {
        anyhow::bail!(
            "AUTH_JWT_SECRET is required with PostgreSQL or MySQL: every replica must sign with the same key"
        );
    };
    match path {
        None => {
            tracing::warn!(
                "AUTH_JWT_SECRET unset: in-memory database, using a random key for this process"
            );
            Ok(random_key().into_bytes())
        }
        Some(db_path) => {
            let key_path = PathBuf::from(format!("{}.jwt-secret", db_path.display()));
            let key = load_or_create_key(&key_path)?;
            tracing::warn!(
                key_file = %key_path.display(),
                "AUTH_JWT_SECRET unset: signing with the generated key kept in the key file"
            );
            Ok(key.into_bytes())
        }
    }
}

/// `None` if `url` is not SQLite; `Some(None)` for an in-memory database;
/// otherwise the database file.
pub(super) fn sqlite_path(url: &str) -> Option<Option<PathBuf>> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
    Some((!in_memory).then(|| PathBuf::from(path)))
}

/// The shortest key accepted: HS256 wants at least its 256-bit output size
/// (RFC 7518 §3.2); a shorter one can be brute-forced offline from any token.
const MIN_KEY_BYTES: usize = 32;

/// Reads the HS256 key file at `path`, or creates it with a random key.
/// A file that exists is used only if it is private to its owner and long
/// enough.
fn load_or_create_key(path: &Path) -> anyhow::Result<String> {
    let key = load_or_create(path, || Ok(random_key()))?;
    anyhow::ensure!(
        key.len() >= MIN_KEY_BYTES,
        "the key file {} holds fewer than {MIN_KEY_BYTES} bytes; put a longer random key in it (openssl rand -hex 32), or delete it to have one generated",
        path.display()
    );
    Ok(key)
}

/// Reads the private file at `path` (trimmed), or creates it with what
/// `generate` makes.
///
/// Creation is atomic, so starters racing on a fresh database either create
/// the file or read a complete one: the content is written and fsynced under
/// a temporary name, then hard-linked to `path`, which fails if another
/// starter got there first (then its file is read). An existing file is
/// refused if group or others may read it.
pub(super) fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let content = generate()?;
    match create_file(path, &content) {
        Ok(()) => Ok(content.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_private_file(path),
        Err(e) => Err(e).with_context(|| format!("cannot create the key file {}", path.display())),
    }
}

/// Writes `content` to a new 0600 file at `path`; `AlreadyExists` if there is one.
fn create_file(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_key()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(content.as_bytes())?;
            file.sync_all()
        })
        // Unlike a rename, a link never replaces a key another starter made.
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    // The new name must survive a crash too, or a restart would make a new key.
    fs::File::open(dir).and_then(|d| d.sync_all())
}

/// An existing key file, refused if others may read it. Errors name the
/// file, never its content.
fn read_private_file(path: &Path) -> anyhow::Result<String> {
    use std::{io::Read, os::unix::fs::PermissionsExt};
    let mut file = fs::File::open(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot read the key file {}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the key file {} is accessible to group or others (mode {:o}); chmod 600 it",
        path.display(),
        mode & 0o777
    );
    let mut key = String::new();
    file.read_to_string(&mut key)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    Ok(key.trim().to_owned())
}

/// 256 random bits as 64 hex digits.
pub(super) fn random_key() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_sqlite_urls() {
        assert_eq!(
            sqlite_path("sqlite://auth.db?mode=rwc"),
            Some(Some(PathBuf::from("auth.db")))
        );
        assert_eq!(
            sqlite_path("sqlite:/var/lib/a.db"),
            Some(Some(PathBuf::from("/var/lib/a.db")))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), Some(None));
        assert_eq!(sqlite_path("sqlite://x?mode=memory"), Some(None));
        assert_eq!(sqlite_path("postgres://localhost/auth"), None);
    }

    #[test]
    fn key_file_is_created_once_with_owner_only_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db.jwt-secret");
        let first = load_or_create_key(&path).unwrap();
        let second = load_or_create_key(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        let mode = fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn concurrent_starters_all_get_the_same_complete_key() {
        const STARTERS: usize = 8;
        const TRIALS: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        for trial in 0..TRIALS {
            let path = dir.path().join(format!("auth{trial}.db.jwt-secret"));
            let start = std::sync::Barrier::new(STARTERS);
            let keys: Vec<_> = std::thread::scope(|scope| {
                let starters: Vec<_> = (0..STARTERS)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            load_or_create_key(&path).map_err(|e| format!("{e:#}"))
                        })
                    })
                    .collect();
                starters
                    .into_iter()
                    .map(|t| t.join().expect("a starter panicked"))
                    .collect()
            });
            let first = keys[0]
                .clone()
                .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            assert_eq!(first.len(), 64, "trial {trial}");
            for key in keys {
                assert_eq!(key, Ok(first.clone()), "trial {trial}");
            }
        }
        // Nothing left behind but the key files.
        let stray: Vec<_> = fs::read_dir(dir.path())
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(stray.len(), TRIALS, "{stray:?}");
    }

    /// Writes `content` to a fresh key file with `mode`.
    fn key_file(dir: &Path, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("auth.db.jwt-secret");
        fs::write(&path, content)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
            .unwrap();
        path
    }

    /// Why the key file at `path` is refused; the message must name the file.
    fn refusal(path: &Path) -> String {
        let err = load_or_create_key(path)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        let err = err.expect_err("the key file was accepted");
        assert!(err.contains(&path.display().to_string()), "{err}");
        err
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = random_key();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let err = refusal(&key_file(dir.path(), &key, mode));
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains(&key), "the key reached the message: {err}");
        }
        let path = key_file(dir.path(), &key, 0o400);
        assert_eq!(load_or_create_key(&path).ok(), Some(key));
    }

    #[test]
    fn a_key_file_shorter_than_32_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for content in [
            "x",
            "",
            "  \n",
            &"k".repeat(31),
            &format!(" {}\n", "k".repeat(31)),
        ] {
            let err = refusal(&key_file(dir.path(), content, 0o600));
            assert!(err.contains("32 bytes"), "{err}");
        }
        let path = key_file(dir.path(), &format!("{}\n", "k".repeat(32)), 0o600);
        assert_eq!(load_or_create_key(&path).ok(), Some("k".repeat(32)));
    }
}
