//! Wiring: settings → signing key → database → the application → the gRPC
//! server, and the HTTP one when `AUTH_HTTP_ADDR` is set.
//!
//! [`Application::build`] does everything that can fail at start-up (key,
//! connect, migrate, bind) so `serve` fails fast with one clear message;
//! [`Application::run_until`] then serves until the shutdown future
//! resolves, finishing the calls in flight.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    accounts::{Accounts, LoginThrottle, PageTokenCodec},
    config::Settings,
    grpc::{self, tls::Tls},
    passwords::Hasher,
    persistence::{
        self, RefreshTokens, ServiceAccounts, UserProfiles, assertion_ids::UsedAssertionIds,
    },
    telemetry::{
        audit,
        metrics::{CacheName, Metrics},
    },
    tokens::{TokenCodec, keys},
    web,
};

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The HTTP listener and its address, when one is configured.
    http: Option<(TcpListener, SocketAddr)>,
    /// Both listeners' TLS; `None`: plaintext.
    tls: Option<Tls>,
    accounts: Accounts,
    db: DatabaseConnection,
    settings: Settings,
}

impl Application {
    /// Loads the TLS certificate (if configured) and the signing key, connects to the database, applies pending
    /// migrations and binds the listen address, and the HTTP address if
    /// set (port 0 picks a free port).
    ///
    /// # Errors
    /// Half-configured TLS or unusable TLS files, unreachable database,
    /// failed migration, missing signing key, address in use.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // A configuration error, whatever the database: checked first.
        let tls = Tls::from_settings(&settings.tls)?;
        let accounts = open_accounts(&settings).await?;
        let db = accounts.db.clone();
        let policy = settings.tokens.policy;
        if policy.rotate_refresh_tokens && !policy.detects_reuse() {
            tracing::warn!(
                "AUTH_ROTATE_REFRESH_TOKENS=true with AUTH_BLACKLIST_AFTER_ROTATION=false: \
                 rotated-out refresh tokens stay valid, so refresh-token reuse detection is off"
            );
        }
        let addr = settings.server.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local_addr = listener.local_addr()?;
        let http = match settings.server.http_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for HTTP"))?;
                let local_addr = listener.local_addr()?;
                Some((listener, local_addr))
            }
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            http,
            tls,
            accounts,
            db,
            settings,
        })
    }

    /// Where the server listens (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the HTTP listener listens (the real port when 0 was asked
    /// for); `None` when `AUTH_HTTP_ADDR` is unset.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|&(_, addr)| addr)
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Serves until `shutdown` resolves, then stops accepting calls, lets
    /// the ones in flight finish and closes the database pool. The gRPC and
    /// HTTP servers stop together: on `shutdown`, or when either ends first
    /// (a failure), each within the shutdown grace period.
    ///
    /// # Errors
    /// A server failed (not a single call: those become statuses).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            listener,
            http,
            tls,
            accounts,
            db,
            settings,
            ..
        } = self;
        // Installed now: a SIGHUP's default action would end the process.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = tokio::spawn(reload_on_sighup(
            hangups,
            accounts.token_codec(),
            tls.clone(),
            settings.clone(),
        ));
        // One stop signal for both servers, raised by the first of them to end.
        let (stop, stopping) = watch::channel(false);
        let stopped = |mut stopping: watch::Receiver<bool>| async move {
            // An error means `stop` is gone, which only happens once we are done.
            let _ = stopping.wait_for(|&stop| stop).await;
        };
        let signal = async {
            tokio::select! {
                () = shutdown => {},
                () = stopped(stopping.clone()) => {},
            }
            stop.send_replace(true);
        };
        let grpc_accounts = accounts.clone();
        let grpc = async {
            let served = grpc::serve(
                listener,
                grpc_accounts,
                db.clone(),
                &settings,
                tls.as_ref(),
                stopped(stopping.clone()),
            )
            .await;
            stop.send_replace(true);
            served
        };
        let http = async {
            let Some((listener, _)) = http else {
                return Ok(());
            };
            let served = web::serve(
                listener,
                accounts,
                &settings,
                tls.as_ref(),
                stopped(stopping.clone()),
            )
            .await;
            stop.send_replace(true);
            served
        };
        let ((), grpc, http) = tokio::join!(signal, grpc, http);
        reloader.abort();
        grpc.and(http)?;
        tracing::info!("server stopped");
        db.close().await?;
        Ok(())
    }
}

/// The application as `settings` configure it, on its database (connected
/// and migrated): what `serve` serves, and what the `user` commands run.
///
/// # Errors
/// Missing signing key, unreachable database, failed migration.
pub async fn open_accounts(settings: &Settings) -> anyhow::Result<Accounts> {
    // The keys first: a missing one is a configuration error, whatever the database.
    let keys = keys::load(&settings.tokens, settings.database.url.expose())?;
    let page_tokens = PageTokenCodec::new(keys.secret_material())?;
    let db = persistence::open(&settings.database).await?;
    let tokens = TokenCodec::with_keys(
        keys,
        settings.tokens.access_lifetime,
        settings.tokens.refresh_lifetime,
    )?
    .with_service_lifetime(settings.tokens.service_lifetime)?
    .with_leeway(settings.tokens.leeway)
    .with_issuer_and_audience(
        settings.tokens.issuer.clone(),
        settings.tokens.audience.clone(),
    );
    let policy = settings.tokens.policy;
    // This application's own: several may share a process (the tests).
    let metrics = Metrics::new();
    let pool = db.clone();
    metrics.sample_db_pool(move || persistence::pool_state(&pool));
    let hasher = Hasher::with_metrics(settings.passwords, metrics.hashing()).await?;
    hasher.sample_into(&metrics);
    Ok(Accounts {
        users: UserProfiles::new(db.clone(), settings.cache, metrics.cache(CacheName::Users)),
        service_accounts: ServiceAccounts::new(
            db.clone(),
            settings.cache,
            metrics.cache(CacheName::ServiceAccounts),
        ),
        assertion_ids: Arc::new(UsedAssertionIds::new(db.clone())),
        refresh_tokens: RefreshTokens::new(
            db.clone(),
            settings.cache,
            policy.rotate_refresh_tokens,
            metrics.cache(CacheName::RefreshTokens),
        ),
        throttle: LoginThrottle::new(
            db.clone(),
            settings.throttle.clone(),
            settings.passwords.queue_timeout,
        ),
        hasher: dummy_hash_calibrated(hasher, &db).await?,
        tokens: Arc::new(tokens),
        page_tokens,
        list_users: settings.accounts.list_users,
        registration: settings.accounts.registration,
        password_reset_lifetime: settings.accounts.password_reset_lifetime,
        policy,
        db,
        metrics,
    })
}

/// Reads the key files again on every SIGHUP and signs and verifies with
/// them from then on; a file that fails keeps the current keys. The same
/// for the TLS certificate and key: new handshakes use the new pair, open
/// connections keep theirs.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    tokens: Arc<TokenCodec>,
    tls: Option<Tls>,
    settings: Settings,
) {
    while hangups.recv().await.is_some() {
        let reloaded = keys::load(&settings.tokens, settings.database.url.expose())
            .and_then(|keys| tokens.replace_keys(keys));
        match reloaded {
            Ok(()) => audit!(
                INFO,
                "key_reload",
                "success",
                None::<i64>,
                "operator",
                kids = ?tokens.kids(),
                "SIGHUP: signing keys reloaded"
            ),
            Err(e) => audit!(
                ERROR,
                "key_reload",
                "failure",
                None::<i64>,
                "operator",
                error = format!("{e:#}"),
                "SIGHUP: the key files could not be reloaded; keeping the current keys"
            ),
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: the TLS certificate could not be reloaded; keeping the current one"
                ),
            }
        }
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

/// Resolves when SIGINT or SIGTERM arrives. The handlers are installed
/// now, not when the future is first polled: a SIGTERM that arrives as soon
/// as the server answers must still shut it down gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let received = async |stream: std::io::Result<tokio::signal::unix::Signal>| match stream {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        };
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
        tracing::info!("shutdown signal received, finishing calls in flight");
    }
}

/// The traces' exporter: OTLP over gRPC to `endpoint` (an http(s) URL,
/// checked by the settings). Call it inside the runtime: the connection is
/// made on it, lazily, so a collector that is down fails exports, never
/// start-up.
///
/// # Errors
/// An endpoint the exporter refuses.
pub fn otlp_exporter(endpoint: &str) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    // The exporter's own TLS default trusts no root at all.
    let https = endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    let builder = match https {
        true => {
            builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
        }
        false => builder,
    };
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot export traces to {endpoint}: {e}"))
}
