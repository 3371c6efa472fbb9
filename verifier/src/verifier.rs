//! [`Verifier`]: the key cache, its refreshes, and the token checks.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::Uri;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation, errors::ErrorKind};
use tokio::{runtime::Handle, task::AbortHandle};
use tonic::transport::Channel;

use crate::{
    Authenticated, AuthenticatedUser, BuildError, FetchError, VerifyError,
    claims::IncomingClaims,
    interceptor::VerifierInterceptor,
    keys::KeySet,
    layer::VerifierLayer,
    pb::auth_service_client::AuthServiceClient,
    source::{Source, parse_jwks},
};

/// The algorithms expected unless [`VerifierBuilder::algorithms`] says
/// otherwise: the public-key ones the auth service can sign with.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// Background refreshes never come more often than this, whatever the
/// `Cache-Control` max-age, nor less often than [`MAX_REFRESH`].
const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// Verifies the auth service's access tokens (and, where asked, its
/// service tokens) locally, with the public keys of its JWKS. Cheap to
/// clone (one shared cache).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    algorithms: Vec<Algorithm>,
    /// One per expected algorithm: jsonwebtoken checks the header `alg`
    /// against it, plus `exp`, `nbf`, `iss` and `aud`.
    validations: HashMap<Algorithm, Validation>,
    leeway: i64,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so concurrent triggers wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
    /// When a fetch for an unknown `kid` last started.
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    min_refetch_interval: Duration,
    refresh_interval: Duration,
    fetch_timeout: Duration,
    runtime: Handle,
    refresh_task: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresh_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.inner.algorithms)
            .field("keys", &self.inner.keys().len())
            .finish_non_exhaustive()
    }
}

enum SourceSpec {
    Grpc(Channel),
    Url(String),
    Json(String),
}

/// Configures a [`Verifier`]; see [`Verifier::builder`].
pub struct VerifierBuilder {
    source: Option<SourceSpec>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    min_refetch_interval: Duration,
    refresh_interval: Duration,
    fetch_timeout: Duration,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Default for VerifierBuilder {
    fn default() -> Self {
        Self {
            source: None,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::ZERO,
            min_refetch_interval: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(5 * 60),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

impl VerifierBuilder {
    /// Keys from the auth service's `AuthService/GetJwks` on `channel`
    /// (which may use TLS, as configured on the channel).
    #[must_use]
    pub fn jwks_grpc(mut self, channel: Channel) -> Self {
        self.source = Some(SourceSpec::Grpc(channel));
        self
    }

    /// Keys from `GET url` (the auth service's `/.well-known/jwks.json`),
    /// refreshed at half its `Cache-Control` max-age. Plain `http://` only
    /// (HTTP/1.1, no TLS): meant for an internal address; use
    /// [`jwks_grpc`](Self::jwks_grpc) with a TLS channel otherwise.
    #[must_use]
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.source = Some(SourceSpec::Url(url.into()));
        self
    }

    /// A fixed JWKS document (RFC 7517 JSON): never refetched. For tests,
    /// benchmarks, or keys pinned in configuration.
    #[must_use]
    pub fn jwks_json(mut self, jwks: impl Into<String>) -> Self {
        self.source = Some(SourceSpec::Json(jwks.into()));
        self
    }

    /// The algorithms a token may be signed with (default
    /// [`DEFAULT_ALGORITHMS`]). HS algorithms are refused by `build`.
    #[must_use]
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Requires `iss` to be present and equal to `issuer`.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to be present and to contain `audience` (or, called
    /// several times, one of them).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default none, as the
    /// auth service; whole seconds).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// A token with an unknown `kid` triggers a refetch at most this often
    /// (default 10 s), so a flood of made-up `kid`s cannot hammer the auth
    /// service. Also the shortest interval between background refreshes.
    #[must_use]
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// How often the keys are refreshed in the background when the source
    /// gives no `Cache-Control` max-age (gRPC; default 5 min). After a
    /// failed fetch the next try comes after at most 30 s.
    #[must_use]
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// How long one fetch may take (default 10 s).
    #[must_use]
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Fetches the keys and, for a remote source, starts the background
    /// refresh on the current tokio runtime.
    ///
    /// # Errors
    /// No source, no or an HS algorithm, a bad URL or JWKS, the first fetch
    /// failing, or no key in the JWKS for the expected algorithms.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        if self.algorithms.is_empty() {
            return Err(BuildError::NoAlgorithms);
        }
        if let Some(&alg) = self
            .algorithms
            .iter()
            .find(|alg| alg.family() == AlgorithmFamily::Hmac)
        {
            return Err(BuildError::SharedSecretAlgorithm(alg));
        }
        let source = match self.source.ok_or(BuildError::NoSource)? {
            SourceSpec::Grpc(channel) => Source::Grpc(AuthServiceClient::new(channel)),
            SourceSpec::Url(url) => Source::http(http_uri(&url)?),
            SourceSpec::Json(json) => {
                Source::Static(parse_jwks(json.as_bytes()).map_err(BuildError::BadJwks)?)
            }
        };
        let runtime = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;

        let leeway = self.leeway.as_secs();
        let validations = self
            .algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = leeway;
                validation.validate_exp = true;
                validation.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(issuer) = &self.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                validation.validate_aud = !self.audience.is_empty();
                if !self.audience.is_empty() {
                    validation.set_audience(&self.audience);
                    required.push("aud");
                }
                validation.set_required_spec_claims(&required);
                (alg, validation)
            })
            .collect();

        let inner = Arc::new(Inner {
            source,
            algorithms: self.algorithms,
            validations,
            leeway: i64::try_from(leeway).unwrap_or(i64::MAX),
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(()),
            last_unknown_kid_fetch: Mutex::new(None),
            min_refetch_interval: self.min_refetch_interval,
            refresh_interval: self.refresh_interval,
            fetch_timeout: self.fetch_timeout,
            runtime,
            refresh_task: Mutex::new(None),
        });

        let max_age = inner.fetch().await.map_err(BuildError::Fetch)?;
        if inner.keys().is_empty() {
            return Err(BuildError::NoUsableKey(inner.algorithms.clone()));
        }
        if inner.source.is_remote() {
            let first = inner.refresh_after(max_age);
            let task = inner
                .runtime
                .spawn(refresh_loop(Arc::downgrade(&inner), first));
            *inner
                .refresh_task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        }
        Ok(Verifier { inner })
    }
}

fn http_uri(url: &str) -> Result<Uri, BuildError> {
    let bad = |reason| BuildError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported: use an internal http:// URL, or jwks_grpc with a TLS channel",
            ));
        }
        _ => return Err(bad("not an http:// URL")),
    }
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// Refreshes the keys until the last [`Verifier`] clone is dropped.
async fn refresh_loop(inner: Weak<Inner>, mut next: Duration) {
    loop {
        tokio::time::sleep(next).await;
        let Some(inner) = inner.upgrade() else { return };
        next = match inner.fetch().await {
            Ok(max_age) => inner.refresh_after(max_age),
            Err(e) => {
                tracing::warn!(error = %e, "refreshing the JWKS failed; keeping the last good keys");
                inner.retry_after_failure()
            }
        };
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Inner {
    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches the JWKS (one fetch at a time) and replaces the cached keys;
    /// on failure the old keys stay. Returns the `Cache-Control` max-age.
    async fn fetch(&self) -> Result<Option<Duration>, FetchError> {
        let _fetching = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<Option<Duration>, FetchError> {
        let fetched = tokio::time::timeout(self.fetch_timeout, self.source.fetch())
            .await
            .map_err(|_| FetchError::Timeout(self.fetch_timeout))??;
        let keys = KeySet::from_jwks(&fetched.keys, &self.algorithms);
        if keys.is_empty() {
            tracing::warn!(
                algorithms = ?self.algorithms,
                "the JWKS has no signing key for the expected algorithms: every token will be refused"
            );
        } else {
            tracing::debug!(keys = keys.len(), "JWKS fetched");
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(fetched.max_age)
    }

    /// Half the max-age, else the configured interval; never more often
    /// than the refetch interval.
    fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age.map_or(self.refresh_interval, |age| age / 2).clamp(
            self.min_refetch_interval,
            MAX_REFRESH.max(self.min_refetch_interval),
        )
    }

    fn retry_after_failure(&self) -> Duration {
        self.refresh_interval
            .min(Duration::from_secs(30))
            .max(self.min_refetch_interval)
    }

    /// Whether an unknown `kid` may trigger a fetch now (and if so, counts
    /// it).
    fn unknown_kid_fetch_allowed(&self) -> bool {
        if !self.source.is_remote() {
            return false;
        }
        let mut last = self
            .last_unknown_kid_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.min_refetch_interval) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn fetch_for_unknown_kid(&self, kid: &str) {
        let _fetching = self.fetching.lock().await;
        // A fetch that was under way may have brought it.
        if self.keys().get(kid).is_some() || !self.unknown_kid_fetch_allowed() {
            return;
        }
        tracing::info!(kid, "token signed with an unknown kid: fetching the JWKS");
        if let Err(e) = self.fetch_locked().await {
            tracing::warn!(error = %e, "fetching the JWKS failed; keeping the last good keys");
        }
    }

    /// The header checks done before any key lookup: `alg` expected (so
    /// never `none` or HS), a `kid` present.
    fn header(&self, token: &str) -> Result<(Algorithm, String), VerifyError> {
        // `alg: none` (or any unknown alg) does not parse.
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(VerifyError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(VerifyError::Invalid)?;
        Ok((header.alg, kid))
    }

    /// The signature and the library's checks, then `check` on the claims.
    fn verify_with<T>(
        &self,
        token: &str,
        keys: &KeySet,
        (alg, kid): (Algorithm, &str),
        check: impl FnOnce(IncomingClaims, &str, i64, i64) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let key = keys.get(kid).ok_or(VerifyError::Invalid)?;
        // A key published for one algorithm verifies only that one.
        if !key.algorithms.contains(&alg) {
            return Err(VerifyError::Invalid);
        }
        let validation = self
            .validations
            .get(&alg)
            .ok_or(VerifyError::WrongAlgorithm)?;
        let data = jsonwebtoken::decode::<IncomingClaims>(token, &key.key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::InvalidAlgorithm => VerifyError::WrongAlgorithm,
                _ => VerifyError::Invalid,
            },
        )?;
        check(data.claims, kid, unix_now(), self.leeway)
    }
}

/// The claims of an access token only.
fn user(
    claims: IncomingClaims,
    kid: &str,
    now: i64,
    leeway: i64,
) -> Result<AuthenticatedUser, VerifyError> {
    let claims = claims.check(kid, now, leeway)?;
    Ok(AuthenticatedUser {
        user_id: claims.user_id,
        claims,
    })
}

/// The claims of an access token or a service token.
fn user_or_service(
    claims: IncomingClaims,
    kid: &str,
    now: i64,
    leeway: i64,
) -> Result<Authenticated, VerifyError> {
    claims.check_as(kid, now, leeway, true)
}

impl Verifier {
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// Verifies an access token: signature with the key its `kid` names,
    /// `alg` among the expected ones, `exp`/`nbf`/`iat` (with the leeway),
    /// `iss`/`aud` when configured, `token_type == "access"`, `jti` and
    /// `user_id`.
    ///
    /// An unknown `kid` makes it fetch the JWKS first (at most once per
    /// [`min_refetch_interval`](VerifierBuilder::min_refetch_interval);
    /// otherwise, or if the key is still unknown, the token is invalid).
    ///
    /// # Errors
    /// Why the token is refused, in the auth service's words.
    pub async fn verify(&self, token: &str) -> Result<AuthenticatedUser, VerifyError> {
        self.verify_checking(token, user).await
    }

    /// [`verify`](Self::verify), but a service token (`token_type`
    /// `"service"`, with `client_id`, `scope` and `cid`) is accepted too.
    /// Refresh tokens are refused still.
    ///
    /// # Errors
    /// Why the token is refused, in the auth service's words.
    pub async fn verify_any(&self, token: &str) -> Result<Authenticated, VerifyError> {
        self.verify_checking(token, user_or_service).await
    }

    async fn verify_checking<T>(
        &self,
        token: &str,
        check: impl FnOnce(IncomingClaims, &str, i64, i64) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let inner = &self.inner;
        let (alg, kid) = inner.header(token)?;
        let mut keys = inner.keys();
        if keys.get(&kid).is_none() {
            inner.fetch_for_unknown_kid(&kid).await;
            keys = inner.keys();
        }
        inner.verify_with(token, &keys, (alg, &kid), check)
    }

    /// [`verify`](Self::verify) with the cached keys only, without waiting:
    /// an unknown `kid` starts a (rate-limited) fetch in the background and
    /// the token is refused now; a retry after the fetch succeeds. Used by
    /// the synchronous [`interceptor`](Self::interceptor).
    ///
    /// # Errors
    /// Why the token is refused, in the auth service's words.
    pub fn verify_cached(&self, token: &str) -> Result<AuthenticatedUser, VerifyError> {
        self.verify_cached_checking(token, user)
    }

    /// [`verify_any`](Self::verify_any) with the cached keys only, as
    /// [`verify_cached`](Self::verify_cached).
    ///
    /// # Errors
    /// Why the token is refused, in the auth service's words.
    pub fn verify_any_cached(&self, token: &str) -> Result<Authenticated, VerifyError> {
        self.verify_cached_checking(token, user_or_service)
    }

    fn verify_cached_checking<T>(
        &self,
        token: &str,
        check: impl FnOnce(IncomingClaims, &str, i64, i64) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let inner = &self.inner;
        let (alg, kid) = inner.header(token)?;
        let keys = inner.keys();
        if keys.get(&kid).is_none() && inner.unknown_kid_fetch_allowed() {
            let background = Arc::clone(inner);
            inner.runtime.spawn(async move {
                let _fetching = background.fetching.lock().await;
                if background.keys().get(&kid).is_none() {
                    tracing::info!(kid, "token signed with an unknown kid: fetching the JWKS");
                    if let Err(e) = background.fetch_locked().await {
                        tracing::warn!(error = %e, "fetching the JWKS failed; keeping the last good keys");
                    }
                }
            });
            return Err(VerifyError::Invalid);
        }
        inner.verify_with(token, &keys, (alg, &kid), check)
    }

    /// Fetches the JWKS now (waiting for one under way). The cached keys
    /// are replaced on success and kept on failure.
    ///
    /// # Errors
    /// Why the fetch failed.
    pub async fn refresh(&self) -> Result<(), FetchError> {
        self.inner.fetch().await.map(drop)
    }

    /// The `kid`s of the cached, usable keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.inner.keys().kids()
    }

    /// A synchronous tonic interceptor (cached keys only; see
    /// [`verify_cached`](Self::verify_cached)).
    pub fn interceptor(&self) -> VerifierInterceptor {
        VerifierInterceptor::new(self.clone())
    }

    /// A `tower::Layer` for `tonic::transport::Server::builder().layer(..)`
    /// or one service; it awaits a refetch for an unknown `kid`.
    pub fn layer(&self) -> VerifierLayer {
        VerifierLayer::new(self.clone())
    }
}
