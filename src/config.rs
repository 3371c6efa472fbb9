//! Configuration: every setting is a flag and an `AUTH_*` environment
//! variable, parsed once at start-up into [`Settings`]. Tests build
//! `Settings` directly instead of going through the command line.

use std::{fmt, net::SocketAddr, num::NonZeroUsize, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, FromArgMatches, Parser, Subcommand, builder::BoolishValueParser};

#[derive(Debug, Parser)]
#[command(name = "auth-service", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve gRPC until SIGINT/SIGTERM.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Create a staff superuser. The password comes from
    /// AUTH_SUPERUSER_PASSWORD or, when unset, a hidden prompt.
    CreateSuperuser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
    },
    /// Delete outstanding and blacklisted refresh tokens that have expired
    /// (simplejwt's flushexpiredtokens; run it daily), with stale login
    /// counters, expired password reset tokens and the ids of used service
    /// assertions past their expiry.
    FlushExpiredTokens,
    /// Copy the users of a Django project into this service's database,
    /// keeping ids and password hashes (checked as Django would until each
    /// user's next login). Users already here are skipped: safe to re-run.
    ImportDjango {
        /// The Django database: sqlite://…, postgres://… or mysql://…
        /// (read only).
        #[arg(long = "from", env = "AUTH_IMPORT_FROM", hide_env_values = true)]
        from: Secret,
        /// The user model's table: the seed's `users_userprofile`, or
        /// Django's stock `auth_user`.
        #[arg(long, default_value = "users_userprofile")]
        table: String,
        /// Users read and inserted per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=2000))]
        batch_size: u64,
    },
    /// Administer one user by username: what AdminService does, for
    /// scripts; tokens are revoked where the RPC would revoke them.
    #[command(subcommand)]
    User(UserCommand),
    /// Administer service accounts by name: what AdminService does, for
    /// operators and scripts (the operator may grant `auth.` scopes).
    #[command(subcommand)]
    ServiceAccount(ServiceAccountCommand),
}

/// `auth-service service-account …`: each names the account by its name
/// (client_id) and prints what it did.
#[derive(Debug, Clone, Subcommand)]
pub enum ServiceAccountCommand {
    /// Create an active account, without credentials, allowed `scopes`.
    Create { name: String, scopes: Vec<String> },
    /// Show an account: flags, scopes, and its credentials' ids.
    Get { name: String },
    /// List every account, one line each.
    List,
    /// Activate or deactivate (an inactive account's tokens are refused).
    SetActive {
        name: String,
        #[arg(value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
        active: bool,
    },
    /// Replace the allowed scopes (none given: no scope).
    SetScopes { name: String, scopes: Vec<String> },
    /// Delete the account with its credentials.
    Delete { name: String },
    /// Add a client secret and print it, this once.
    AddSecret { name: String },
    /// Remove the client secret `secret_id`.
    RemoveSecret { name: String, secret_id: String },
    /// Register the public key in the PEM file `pem_file` (Ed25519, P-256
    /// or RSA, as `openssl pkey -pubout` writes it) and print its kid.
    AddKey { name: String, pem_file: PathBuf },
    /// Remove the key `kid`.
    RemoveKey { name: String, kid: String },
}

/// `auth-service user …`: each prints one line saying what it did.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Activate or deactivate (deactivating revokes every token of the user).
    SetActive {
        username: String,
        #[arg(value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
        active: bool,
    },
    /// Grant or take away staff status.
    SetStaff {
        username: String,
        #[arg(value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
        staff: bool,
    },
    /// Grant (with staff status) or take away superuser status.
    SetSuperuser {
        username: String,
        #[arg(value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
        superuser: bool,
    },
    /// Delete the user with their tokens and login counters.
    Delete { username: String },
    /// Set a new password (from AUTH_USER_PASSWORD or, when unset, a hidden
    /// prompt); every earlier token of the user is revoked.
    SetPassword { username: String },
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub server: ServerSettings,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub tokens: TokenSettings,

    /// argon2id parameters for new hashes (OWASP defaults), and how much
    /// hashing may run and wait.
    #[command(flatten)]
    pub passwords: Argon2Settings,

    /// Failed-login throttling.
    #[command(flatten)]
    pub throttle: ThrottleSettings,

    /// The caches in front of the database.
    #[command(flatten)]
    pub cache: CacheSettings,

    #[command(flatten)]
    pub accounts: AccountSettings,

    /// TLS for the gRPC and HTTP listeners; plaintext when unset.
    #[command(flatten)]
    pub tls: TlsSettings,

    #[command(flatten)]
    pub log: LogSettings,

    /// OpenTelemetry traces.
    #[command(flatten)]
    pub traces: TraceSettings,
}

/// TLS (1.2 and 1.3) on both listeners when a certificate and its key are
/// given; mutual TLS when a client CA is too. The certificate and key are
/// read again on SIGHUP.
#[derive(Debug, Clone, Args)]
pub struct TlsSettings {
    /// PEM certificate (chain allowed, leaf first) served to clients;
    /// requires AUTH_TLS_KEY_FILE.
    #[arg(long = "tls-cert-file", env = "AUTH_TLS_CERT_FILE", global = true)]
    pub cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    #[arg(long = "tls-key-file", env = "AUTH_TLS_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate it signed (mTLS).
    #[arg(
        long = "tls-client-ca-file",
        env = "AUTH_TLS_CLIENT_CA_FILE",
        global = true
    )]
    pub client_ca_file: Option<PathBuf>,

    /// With a client CA: whether clients without a certificate are refused
    /// (required) or accepted (optional). A certificate presented is always checked.
    #[arg(long = "tls-client-auth", env = "AUTH_TLS_CLIENT_AUTH", value_enum,
          default_value_t = ClientAuth::Required, global = true)]
    pub client_auth: ClientAuth,
}

/// Whether a client certificate is required when a client CA is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    Required,
    Optional,
}

#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// How log records are written to stderr: text lines (ANSI colours only
    /// on a terminal, and not with NO_COLOR) or one JSON object per line.
    #[arg(long = "log-format", env = "AUTH_LOG_FORMAT", value_enum,
          default_value_t = LogFormat::Text, global = true)]
    pub format: LogFormat,
}

/// OpenTelemetry traces, exported over OTLP/gRPC when a collector is named.
#[derive(Debug, Clone, Args)]
pub struct TraceSettings {
    /// OTLP/gRPC collector to send traces to (`http://collector:4317`);
    /// when unset, OTEL_EXPORTER_OTLP_ENDPOINT; with neither, no traces.
    #[arg(long = "otlp-endpoint", env = "AUTH_OTLP_ENDPOINT",
          value_parser = otlp_endpoint, global = true)]
    pub otlp_endpoint: Option<String>,
}

impl TraceSettings {
    /// The collector: `AUTH_OTLP_ENDPOINT`, else the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, checked alike.
    ///
    /// # Errors
    /// The standard variable is not an http(s) URL.
    pub fn endpoint(&self) -> Result<Option<String>, String> {
        if let Some(endpoint) = &self.otlp_endpoint {
            return Ok(Some(endpoint.clone()));
        }
        match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Ok(value) if !value.is_empty() => otlp_endpoint(&value)
                .map(Some)
                .map_err(|e| format!("invalid OTEL_EXPORTER_OTLP_ENDPOINT '{value}': {e}")),
            _ => Ok(None),
        }
    }
}

/// An http:// or https:// URL with a host: anything else would only fail
/// later, at each export, far from the mistake.
fn otlp_endpoint(value: &str) -> Result<String, String> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(value.to_owned())
        }
        Ok(_) => Err("must be an http:// or https:// URL".into()),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}

/// `AUTH_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Address to serve gRPC on; port 0 picks a free one.
    #[arg(
        long,
        env = "AUTH_LISTEN_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub listen_addr: SocketAddr,

    /// Address to serve HTTP on (`/.well-known/jwks.json`); unset: no HTTP
    /// listener. Port 0 picks a free one.
    #[arg(long, env = "AUTH_HTTP_ADDR", global = true)]
    pub http_addr: Option<SocketAddr>,

    /// After SIGTERM/SIGINT, how long calls in flight (and idle clients that
    /// ignore GOAWAY) may keep the server up.
    #[arg(long, env = "AUTH_SHUTDOWN_GRACE", default_value = "20s",
          value_parser = humantime::parse_duration, global = true)]
    pub shutdown_grace: Duration,

    /// How long a gRPC connection has to complete the HTTP/2 preface and
    /// SETTINGS exchange (after TLS, if any, within the same time), and a
    /// stream to send the whole of its request headers; past it the
    /// connection is closed.
    #[arg(long, env = "AUTH_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_parser = positive_duration, global = true)]
    pub handshake_timeout: Duration,

    /// How long a call's request message may take to arrive in full
    /// (shorter if the client's grpc-timeout is); past it the call ends
    /// with DEADLINE_EXCEEDED and its stream is freed.
    #[arg(long, env = "AUTH_REQUEST_TIMEOUT", default_value = "10s",
          value_parser = positive_duration, global = true)]
    pub request_timeout: Duration,

    /// A gRPC connection with no call open for this long is sent a GOAWAY
    /// and closed.
    #[arg(long, env = "AUTH_IDLE_TIMEOUT", default_value = "5m",
          value_parser = positive_duration, global = true)]
    pub idle_timeout: Duration,

    /// gRPC connections open at once (TLS handshakes included); past it a
    /// new connection is closed at once. Default: the process's descriptor
    /// limit (RLIMIT_NOFILE, soft) less room for the database pool and
    /// files, logged at start-up.
    #[arg(
        id = "server_max_connections",
        long = "max-connections",
        value_name = "MAX_CONNECTIONS",
        env = "AUTH_MAX_CONNECTIONS",
        global = true
    )]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// sqlite://…, postgres://… or mysql://…
    #[arg(
        long = "database-url",
        env = "AUTH_DATABASE_URL",
        default_value = "sqlite://auth.db?mode=rwc",
        hide_env_values = true,
        global = true
    )]
    pub url: Secret,

    /// Database connections per replica.
    #[arg(
        long = "database-max-connections",
        env = "AUTH_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub max_connections: u32,

    /// How long a call waits for the database before answering UNAVAILABLE.
    #[arg(long = "database-timeout", env = "AUTH_DATABASE_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TokenSettings {
    /// HS256 signing key, shared with every replica (and any Django service
    /// that must accept the tokens). Optional only on SQLite.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// Accept an AUTH_JWT_SECRET shorter than 32 bytes (tests only: a short
    /// key can be brute-forced from any token it signed).
    #[arg(long, env = "AUTH_ALLOW_WEAK_SECRET", default_value_t = false,
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub allow_weak_secret: bool,

    #[arg(long = "access-token-lifetime", env = "AUTH_ACCESS_TOKEN_LIFETIME", default_value = "1d",
          value_parser = humantime::parse_duration, global = true)]
    pub access_lifetime: Duration,

    #[arg(long = "refresh-token-lifetime", env = "AUTH_REFRESH_TOKEN_LIFETIME", default_value = "30d",
          value_parser = humantime::parse_duration, global = true)]
    pub refresh_lifetime: Duration,

    /// How long a service token (client-credentials grant) is valid. There
    /// is no refresh token: the service asks again.
    #[arg(long = "service-token-lifetime", env = "AUTH_SERVICE_TOKEN_LIFETIME", default_value = "10m",
          value_parser = positive_duration, global = true)]
    pub service_lifetime: Duration,

    /// How tokens are signed: HS256 with a shared secret (simplejwt's
    /// default), or with a private key whose public part consumers fetch as
    /// a JWKS: EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA, 2048+ bits).
    #[arg(long = "jwt-algorithm", env = "AUTH_JWT_ALGORITHM", value_enum, ignore_case = true,
          default_value_t = JwtAlgorithm::Hs256, global = true)]
    pub algorithm: JwtAlgorithm,

    /// PKCS#8 PEM private key that signs (EdDSA, ES256, RS256). Optional only
    /// on SQLite, where one is generated beside the database.
    #[arg(
        long = "jwt-private-key-file",
        env = "AUTH_JWT_PRIVATE_KEY_FILE",
        global = true
    )]
    pub private_key_file: Option<PathBuf>,

    /// Comma-separated PEM files (public or private keys) that verify tokens
    /// but do not sign: the previous key during a rotation, or the next one.
    #[arg(
        long = "jwt-verify-key-files",
        env = "AUTH_JWT_VERIFY_KEY_FILES",
        value_delimiter = ',',
        global = true
    )]
    pub verify_key_files: Vec<PathBuf>,

    /// `iss` written into every token and required of every token (simplejwt's ISSUER).
    #[arg(long = "jwt-issuer", env = "AUTH_JWT_ISSUER", global = true)]
    pub issuer: Option<String>,

    /// `aud` written into every token and required of every token (simplejwt's AUDIENCE).
    #[arg(long = "jwt-audience", env = "AUTH_JWT_AUDIENCE", global = true)]
    pub audience: Option<String>,

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (simplejwt's LEEWAY).
    #[arg(long = "token-leeway", env = "AUTH_TOKEN_LEEWAY", default_value = "0s",
          value_parser = humantime::parse_duration, global = true)]
    pub leeway: Duration,

    /// How long consumers may cache the published public keys (HTTP
    /// `Cache-Control: max-age`). Must be shorter than the overlap during a
    /// key rotation, so every consumer sees a new key before tokens signed
    /// with it arrive.
    #[arg(long = "jwks-max-age", env = "AUTH_JWKS_MAX_AGE", default_value = "5m",
          value_parser = humantime::parse_duration, global = true)]
    pub jwks_max_age: Duration,

    #[command(flatten)]
    pub policy: TokenPolicy,
}

/// The JWT signing algorithm (the names are the JWA ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
}

/// simplejwt's behaviour switches.
#[derive(Debug, Clone, Copy, Args)]
pub struct TokenPolicy {
    /// RefreshToken also returns a new refresh token.
    #[arg(long, env = "AUTH_ROTATE_REFRESH_TOKENS", default_value_t = false,
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub rotate_refresh_tokens: bool,

    /// With rotation, the refresh token given to RefreshToken is blacklisted.
    #[arg(long, env = "AUTH_BLACKLIST_AFTER_ROTATION", default_value_t = true,
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub blacklist_after_rotation: bool,

    /// ObtainTokenPair records the user's last_login (one write per login).
    #[arg(long, env = "AUTH_UPDATE_LAST_LOGIN", default_value_t = false,
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, global = true)]
    pub update_last_login: bool,
}

impl TokenPolicy {
    /// Reuse detection needs rotated-out tokens on the blacklist: without
    /// blacklisting after rotation they stay valid and nothing is "reused".
    pub fn detects_reuse(&self) -> bool {
        self.rotate_refresh_tokens && self.blacklist_after_rotation
    }
}

#[derive(Debug, Clone, Args)]
pub struct AccountSettings {
    /// Who may call ListUsers, which shows every user's email and staff
    /// flags: any authenticated user (DRF's AllUsersView) or staff only.
    #[arg(long, env = "AUTH_LIST_USERS", value_enum,
          default_value_t = ListUsersAccess::Authenticated, global = true)]
    pub list_users: ListUsersAccess,

    /// Who may create accounts: anyone through Register (open), or only
    /// staff through AdminService.CreateUser (closed).
    #[arg(long, env = "AUTH_REGISTRATION", value_enum,
          default_value_t = Registration::Open, global = true)]
    pub registration: Registration,

    /// How long a password reset token from IssuePasswordResetToken works.
    #[arg(long, env = "AUTH_PASSWORD_RESET_LIFETIME", default_value = "1h",
          value_parser = reset_lifetime, global = true)]
    pub password_reset_lifetime: Duration,
}

/// Whether the public Register call creates accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    Open,
    /// Register answers PERMISSION_DENIED; staff create users.
    Closed,
}

/// Who may call ListUsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListUsersAccess {
    /// Every authenticated user, as the DRF view this service replaces.
    Authenticated,
    /// Only callers whose user row is `is_staff` (as of the user cache).
    Staff,
}

#[derive(Debug, Clone, Args)]
pub struct ThrottleSettings {
    /// Failed logins per username per window before further attempts for
    /// that username are refused (RESOURCE_EXHAUSTED) without hashing. 0: off.
    #[arg(
        long = "login-failure-limit",
        env = "AUTH_LOGIN_FAILURE_LIMIT",
        default_value_t = 5,
        global = true
    )]
    pub failure_limit: u32,

    /// How long failures count; a window of 0 would count none (turn the
    /// limit off with 0 failures instead).
    #[arg(long = "login-failure-window", env = "AUTH_LOGIN_FAILURE_WINDOW", default_value = "15m",
          value_parser = non_zero_duration, global = true)]
    pub window: Duration,

    /// Failed logins per client address per window. 0 (default): off, since
    /// callers are often gateways speaking for many end users.
    #[arg(
        long = "login-address-failure-limit",
        env = "AUTH_LOGIN_ADDRESS_FAILURE_LIMIT",
        default_value_t = 0,
        global = true
    )]
    pub address_failure_limit: u32,

    /// Metadata header the proxies in front of the service append the
    /// client's address to (e.g. `x-forwarded-for`); without it, the peer
    /// address is used.
    #[arg(
        long = "client-address-header",
        env = "AUTH_CLIENT_ADDRESS_HEADER",
        global = true
    )]
    pub address_header: Option<String>,

    /// Proxies in front of the service that append to that header: the
    /// client is the N-th entry from the right, and entries left of it,
    /// which the client wrote itself, are ignored.
    #[arg(
        long = "trusted-proxies",
        env = "AUTH_TRUSTED_PROXIES",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..),
        global = true
    )]
    pub trusted_proxies: u16,
}

/// A humantime duration that is not zero.
fn non_zero_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(duration) if duration.is_zero() => Err("must be longer than 0s".into()),
        Ok(duration) => Ok(duration),
        Err(e) => Err(e.to_string()),
    }
}

/// A reset token is a password for its lifetime: more than a week is a
/// mistake (and years would overflow the expiry).
fn reset_lifetime(value: &str) -> Result<Duration, String> {
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
    match non_zero_duration(value)? {
        duration if duration > WEEK => Err("must be at most 7 days".into()),
        duration => Ok(duration),
    }
}

#[derive(Debug, Clone, Copy, Args)]
pub struct CacheSettings {
    /// Longest time this replica answers from memory what is stored in the
    /// database (user profiles; refresh tokens found not blacklisted): the
    /// bound within which a change made elsewhere (an admin deactivating a
    /// user, a Logout on another replica) takes effect here. 0s: no cache.
    #[arg(long = "cache-ttl", env = "AUTH_CACHE_TTL", default_value = "1s",
          value_parser = humantime::parse_duration, global = true)]
    pub ttl: Duration,

    /// Entries per cache at most (a user profile is well under 1 KiB).
    #[arg(
        long = "cache-capacity",
        env = "AUTH_CACHE_CAPACITY",
        default_value_t = 10_000,
        global = true
    )]
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Argon2Settings {
    #[arg(
        long = "argon2-memory-kib",
        env = "AUTH_ARGON2_MEMORY_KIB",
        default_value_t = 19456,
        global = true
    )]
    pub memory_kib: u32,

    #[arg(
        long = "argon2-iterations",
        env = "AUTH_ARGON2_ITERATIONS",
        default_value_t = 2,
        global = true
    )]
    pub iterations: u32,

    #[arg(
        long = "argon2-parallelism",
        env = "AUTH_ARGON2_PARALLELISM",
        default_value_t = 1,
        global = true
    )]
    pub parallelism: u32,

    /// Hashes computed at once; each holds `memory_kib` of RAM. Default: CPU cores.
    #[arg(
        long = "password-hash-concurrency",
        env = "AUTH_PASSWORD_HASH_CONCURRENCY",
        global = true
    )]
    pub max_concurrent: Option<NonZeroUsize>,

    /// Calls that may wait for a hashing slot; past it, RESOURCE_EXHAUSTED at once.
    #[arg(
        long = "password-hash-queue",
        env = "AUTH_PASSWORD_HASH_QUEUE",
        default_value_t = 64,
        global = true
    )]
    pub queue_limit: usize,

    /// How long a call waits for a hashing slot before RESOURCE_EXHAUSTED.
    #[arg(long = "password-hash-queue-timeout", env = "AUTH_PASSWORD_HASH_QUEUE_TIMEOUT",
          default_value = "2s", value_parser = humantime::parse_duration, global = true)]
    pub queue_timeout: Duration,
}

/// Every group's defaults are its command-line defaults, read without the
/// environment: each default is written once, in its `#[arg]`.
fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
    command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches))
        .expect("every setting has a valid default")
}

macro_rules! default_from_command_line {
    ($($settings:ty),*) => {$(
        impl Default for $settings {
            fn default() -> Self {
                defaults()
            }
        }
    )*};
}

default_from_command_line!(
    Settings,
    ServerSettings,
    DatabaseSettings,
    TokenSettings,
    TokenPolicy,
    Argon2Settings,
    ThrottleSettings,
    CacheSettings,
    AccountSettings,
    TlsSettings
);

/// A string that must not reach a log: `Debug` and `Display` print a
/// placeholder. Database URLs are secrets too, since they may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A duration above zero: a zero timeout would close every connection or
/// call at once.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be above zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let defaults = Settings::default();
        assert_eq!(defaults.server.listen_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(defaults.server.http_addr, None);
        assert_eq!(defaults.tokens.jwks_max_age, Duration::from_secs(300));
        assert_eq!(defaults.database.url.expose(), "sqlite://auth.db?mode=rwc");
        assert_eq!(defaults.tokens.access_lifetime, Duration::from_secs(86_400));
        assert_eq!(
            defaults.tokens.refresh_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(defaults.tokens.service_lifetime, Duration::from_secs(600));
        let policy = defaults.tokens.policy;
        assert!(!policy.rotate_refresh_tokens && policy.blacklist_after_rotation);
        assert_eq!(defaults.accounts.list_users, ListUsersAccess::Authenticated);
        assert!(!defaults.tokens.allow_weak_secret);
        assert_eq!(defaults.throttle.window, Duration::from_secs(15 * 60));
        assert_eq!(defaults.passwords.memory_kib, 19456);
        assert_eq!(defaults.cache.ttl, Duration::from_secs(1));
        assert_eq!(defaults.accounts.registration, Registration::Open);
        assert_eq!(
            defaults.accounts.password_reset_lifetime,
            Duration::from_secs(3600)
        );
        assert_eq!(defaults.log.format, LogFormat::Text);
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let parse = |format: &str| {
            Cli::try_parse_from(["auth-service", "--log-format", format])
                .map(|cli| cli.settings.log.format)
        };
        assert_eq!(parse("json").unwrap(), LogFormat::Json);
        assert_eq!(parse("text").unwrap(), LogFormat::Text);
        assert!(parse("xml").is_err());
    }

    #[test]
    fn the_otlp_endpoint_is_an_http_url() {
        let parse = |endpoint: &str| {
            Cli::try_parse_from(["auth-service", "--otlp-endpoint", endpoint])
                .map(|cli| cli.settings.traces.otlp_endpoint)
        };
        assert_eq!(
            parse("http://collector:4317").unwrap().as_deref(),
            Some("http://collector:4317")
        );
        assert!(parse("https://collector.example.com").is_ok());
        for wrong in ["collector:4317", "not a url", "ftp://collector", "http://"] {
            assert!(parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "auth-service",
            "--rotate-refresh-tokens",
            "yes",
            "--access-token-lifetime",
            "5m",
            "--list-users",
            "staff",
            "--http-addr",
            "127.0.0.1:8080",
            "--jwks-max-age",
            "1m",
            "flush-expired-tokens",
        ])
        .map_err(|e| e.to_string());
        let cli = cli.as_ref().unwrap();
        assert!(cli.settings.tokens.policy.rotate_refresh_tokens);
        assert_eq!(
            cli.settings.tokens.access_lifetime,
            Duration::from_secs(300)
        );
        assert_eq!(cli.settings.accounts.list_users, ListUsersAccess::Staff);
        let http_addr = cli.settings.server.http_addr.map(|a| a.to_string());
        assert_eq!(http_addr.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(cli.settings.tokens.jwks_max_age, Duration::from_secs(60));
        assert!(matches!(cli.command, Some(Command::FlushExpiredTokens)));
    }

    #[test]
    fn registration_and_the_user_commands_parse() {
        let cli = Cli::try_parse_from([
            "auth-service",
            "--registration",
            "closed",
            "--password-reset-lifetime",
            "15m",
            "user",
            "set-active",
            "alice",
            "false",
        ])
        .map_err(|e| e.to_string());
        let cli = cli.as_ref().unwrap();
        assert_eq!(cli.settings.accounts.registration, Registration::Closed);
        assert_eq!(
            cli.settings.accounts.password_reset_lifetime,
            Duration::from_secs(900)
        );
        for too_long in ["8days", "100years"] {
            let parsed =
                Cli::try_parse_from(["auth-service", "--password-reset-lifetime", too_long]);
            assert!(parsed.is_err(), "{too_long}");
        }
        assert!(matches!(
            &cli.command,
            Some(Command::User(UserCommand::SetActive { username, active: false }))
                if username == "alice"
        ));
        let parsed = Cli::try_parse_from(["auth-service", "user", "set-staff", "alice", "maybe"]);
        assert!(parsed.is_err());
        let cli = Cli::try_parse_from([
            "auth-service",
            "service-account",
            "create",
            "billing",
            "orders:read",
            "auth.admin",
        ]);
        assert!(matches!(
            cli.map(|c| c.command),
            Ok(Some(Command::ServiceAccount(ServiceAccountCommand::Create { name, scopes })))
                if name == "billing" && scopes == ["orders:read", "auth.admin"]
        ));
        let parsed = Cli::try_parse_from(["auth-service", "--password-reset-lifetime", "0s"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn the_service_token_lifetime_is_above_zero() {
        let parse = |lifetime: &str| {
            Cli::try_parse_from(["auth-service", "--service-token-lifetime", lifetime])
                .map(|cli| cli.settings.tokens.service_lifetime)
        };
        assert_eq!(parse("5m").ok(), Some(Duration::from_secs(300)));
        assert!(parse("0s").is_err());
        assert!(parse("soon").is_err());
    }

    #[test]
    fn a_zero_failure_window_is_refused() {
        let parsed = Cli::try_parse_from(["auth-service", "--login-failure-window", "0s"]);
        assert!(parsed.is_err());
        let parsed = Cli::try_parse_from(["auth-service", "--login-failure-window", "2s"]);
        let window = parsed.map(|cli| cli.settings.throttle.window).ok();
        assert_eq!(window, Some(Duration::from_secs(2)));
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::from("hunter2hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }
}
