//! Wiring: settings → database → services → tonic server.
//!
//! [`Application::build`] does everything that can fail at start-up (connect,
//! migrate, bind) so `serve` fails fast with one clear message;
//! [`Application::run_until`] then serves until the shutdown future
//! resolves, finishing the calls in flight.

use std::{
    fs,
    future::Future,
    io::Write,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::{
    config::Settings,
    grpc::{
        ActiveUsers, AppState, AuthApi, BearerAuth, CallLogLayer, PageTokenCodec, RefreshBlacklist,
        TokenPolicy, UserApi,
    },
    login_throttle::LoginThrottle,
    passwords::Hasher,
    pb::{self, auth_service_server::AuthServiceServer, user_service_server::UserServiceServer},
    persistence,
    tokens::TokenCodec,
};

/// The largest request message accepted (64 KiB): far above any valid one.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Metadata (headers) per call: room for a bearer token, not for abuse.
const MAX_METADATA_BYTES: u32 = 16 * 1024;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    shutdown_grace: Duration,
    database_timeout: Duration,
}

impl Application {
    /// Loads the signing key, connects to the database, applies pending
    /// migrations and binds the listen address (port 0 picks a free port).
    ///
    /// # Errors
    /// Unreachable database, failed migration, missing signing key, address in use.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The key first: a missing one is a configuration error, whatever the database.
        let secret = signing_key(&settings)?;
        let db = persistence::open(&settings).await?;
        let tokens = TokenCodec::new(
            &secret,
            settings.access_token_lifetime,
            settings.refresh_token_lifetime,
        )?
        .with_leeway(settings.token_leeway);
        let hasher = dummy_hash_calibrated(Hasher::new(settings.argon2).await?, &db).await?;
        let state = AppState {
            active_users: ActiveUsers::new(db.clone(), settings.cache),
            refresh_blacklist: RefreshBlacklist::new(
                db.clone(),
                settings.cache,
                settings.rotate_refresh_tokens,
            ),
            db,
            tokens: Arc::new(tokens),
            hasher,
            page_tokens: PageTokenCodec::new(&secret)?,
            throttle: LoginThrottle::new(settings.throttle.clone(), settings.argon2.queue_timeout),
            list_users: settings.list_users,
            policy: TokenPolicy {
                rotate_refresh_tokens: settings.rotate_refresh_tokens,
                blacklist_after_rotation: settings.blacklist_after_rotation,
                update_last_login: settings.update_last_login,
            },
        };
        if state.policy.rotate_refresh_tokens && !state.policy.detects_reuse() {
            tracing::warn!(
                "AUTH_ROTATE_REFRESH_TOKENS=true with AUTH_BLACKLIST_AFTER_ROTATION=false: \
                 rotated-out refresh tokens stay valid, so refresh-token reuse detection is off"
            );
        }
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            state,
            shutdown_grace: settings.shutdown_grace,
            database_timeout: settings.database_timeout,
        })
    }

    /// Where the server listens (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Serves until `shutdown` resolves, then stops accepting calls, lets
    /// the ones in flight finish and closes the database pool.
    ///
    /// # Errors
    /// The server failed (not a single call: those become statuses).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let watcher = tokio::spawn(watch_database(
            health.clone(),
            self.state.db.clone(),
            self.database_timeout,
        ));
        // grpcurl speaks v1alpha, newer clients v1: serve both.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // Every request of ours is small; a bigger one is refused before it
        // is buffered, let alone parsed.
        let auth = AuthServiceServer::new(AuthApi::new(self.state.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let users = InterceptedService::new(
            UserServiceServer::new(UserApi::new(self.state.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            BearerAuth::new(Arc::clone(&self.state.tokens)),
        );

        tracing::info!(addr = %self.local_addr, "serving gRPC");
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let (signalled, on_signal) = oneshot::channel::<()>();
        let server = Server::builder()
            // One client cannot hog the server: bounded streams per
            // connection, and dead peers are noticed and dropped.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .http2_max_header_list_size(Some(MAX_METADATA_BYTES))
            .layer(CallLogLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(users)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                let _ = signalled.send(());
            });
        // Graceful shutdown waits for every connection to close; a client
        // that ignores GOAWAY must not keep the process up for ever.
        let grace = self.shutdown_grace;
        let grace_over = async move {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = server => result?,
            () = grace_over => {
                // Calls were cut off: say so in the exit status, not only in a log line.
                watcher.abort();
                anyhow::bail!("shutdown grace period ({grace:?}) over with calls still in flight; they were cut off");
            }
        }
        watcher.abort();
        tracing::info!("server stopped");
        self.state.db.close().await?;
        Ok(())
    }
}

/// `hasher`, its dummy hash (verified for unknown usernames) made at the
/// cost most stored hashes have.
async fn dummy_hash_calibrated(hasher: Hasher, db: &DatabaseConnection) -> anyhow::Result<Hasher> {
    const SAMPLE: u32 = 256;
    let (sample, weight) = persistence::users::sample_password_hashes(db, SAMPLE)
        .await
        .map_err(|e| anyhow::anyhow!("cannot sample stored password hashes: {e}"))?;
    hasher.calibrate_dummy(&sample, weight).await?;
    Ok(hasher)
}

/// Every service this server reports on: the whole server ("") and each API.
const HEALTH_SERVICES: [&str; 3] = ["", "auth.v1.AuthService", "auth.v1.UserService"];
/// How often readiness re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Keeps health in step with the database: NOT_SERVING while it cannot be
/// reached (so load balancers route around this replica), SERVING again as
/// soon as it answers. The pool reconnects by itself; nothing restarts.
async fn watch_database(
    health: tonic_health::server::HealthReporter,
    db: DatabaseConnection,
    timeout: Duration,
) {
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let reachable = matches!(
            tokio::time::timeout(timeout, persistence::ping(&db)).await,
            Ok(Ok(()))
        );
        if reachable != serving {
            serving = reachable;
            if serving {
                tracing::info!("database reachable again: SERVING");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
            }
        }
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing calls in flight");
}

/// The HS256 key: `AUTH_JWT_SECRET` (at least 32 bytes), or on SQLite a
/// random key generated once into a 0600 file beside the database.
/// PostgreSQL and MySQL mean several replicas, which must share one key, so
/// there it is required.
fn signing_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
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
    let url = settings.database_url.expose();
    let Some(path) = sqlite_path(url) else {
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
fn sqlite_path(url: &str) -> Option<Option<PathBuf>> {
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

/// Reads the key file at `path`, or creates it with a random key.
///
/// Creation is atomic, so starters racing on a fresh database either create
/// the file or read a complete one: the key is written and fsynced under a
/// temporary name, then hard-linked to `path`, which fails if another
/// starter got there first (then its key is read). A file that exists is
/// used only if it is private to its owner and long enough.
fn load_or_create_key(path: &Path) -> anyhow::Result<String> {
    match create_key_file(path) {
        Ok(key) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(e).with_context(|| format!("cannot create the key file {}", path.display())),
    }
}

/// Writes a new random key to `path`; `AlreadyExists` if there is one.
fn create_key_file(path: &Path) -> std::io::Result<String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_key()));
    let key = random_key();
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(key.as_bytes())?;
            file.sync_all()
        })
        // Unlike a rename, a link never replaces a key another starter made.
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    // The new name must survive a crash too, or a restart would make a new key.
    fs::File::open(dir).and_then(|d| d.sync_all())?;
    Ok(key)
}

/// An existing key file, refused if others may read it or it is too short.
/// Errors name the file, never its content.
fn read_key_file(path: &Path) -> anyhow::Result<String> {
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
    let key = key.trim();
    anyhow::ensure!(
        key.len() >= MIN_KEY_BYTES,
        "the key file {} holds fewer than {MIN_KEY_BYTES} bytes; put a longer random key in it (openssl rand -hex 32), or delete it to have one generated",
        path.display()
    );
    Ok(key.to_owned())
}

/// 256 random bits as 64 hex digits.
fn random_key() -> String {
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
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("auth.db.jwt-secret");
        let first = load_or_create_key(&path).unwrap_or_else(|e| panic!("{e}"));
        let second = load_or_create_key(&path).unwrap_or_else(|e| panic!("{e}"));
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
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
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
                    .map(|t| t.join().unwrap_or_else(|_| panic!("a starter panicked")))
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
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = random_key();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let path = key_file(dir.path(), &key, mode);
            let err = load_or_create_key(&path)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"));
            let err = err
                .err()
                .unwrap_or_else(|| panic!("mode {mode:o} accepted"));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains(&key), "the key reached the message: {err}");
        }
        let path = key_file(dir.path(), &key, 0o400);
        assert_eq!(load_or_create_key(&path).ok(), Some(key));
    }

    #[test]
    fn a_key_file_shorter_than_32_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for content in [
            "x",
            "",
            "  \n",
            &"k".repeat(31),
            &format!(" {}\n", "k".repeat(31)),
        ] {
            let path = key_file(dir.path(), content, 0o600);
            let err = load_or_create_key(&path)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"));
            let err = err.err().unwrap_or_else(|| panic!("{content:?} accepted"));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("32 bytes"), "{err}");
        }
        let path = key_file(dir.path(), &format!("{}\n", "k".repeat(32)), 0o600);
        assert_eq!(load_or_create_key(&path).ok(), Some("k".repeat(32)));
    }
}
