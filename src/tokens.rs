//! JSON Web Tokens compatible with djangorestframework-simplejwt 5.5.1, so a
//! Django service that shares the signing key accepts ours and we accept its.
//!
//! Header `{"alg":"HS256","typ":"JWT"}`; claims `token_type`, `exp`, `iat`,
//! `jti` (uuid4 as 32 hex digits) and `user_id` (a decimal string; integers
//! from older simplejwt versions are accepted). Error messages are
//! simplejwt's, so callers see the same words they saw from Django.
//!
//! Service tokens ([`service`]) go the same way: same keys, same checks,
//! `token_type` `"service"`; [`assertion`] verifies the JWTs services sign
//! with their own keys to obtain one.

pub mod assertion;
pub mod keys;
pub mod service;
pub mod signing_key;

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use arc_swap::ArcSwap;
use jsonwebtoken::{Validation, errors::ErrorKind, jwk::JwkSet};
use serde::{Deserialize, Serialize};

pub use assertion::{AssertionError, KeyLookup, RegisteredKey, VerifiedAssertion};
pub use keys::KeyRing;
pub use service::{IssuedServiceToken, SERVICE_TOKEN_TYPE, ServiceClaims};

/// Verified tokens remembered (public-key algorithms): a few MiB at most.
const VERIFIED_TOKENS: usize = 10_000;

/// `AUTH_SERVICE_TOKEN_LIFETIME`'s default, for codecs built without it.
const DEFAULT_SERVICE_LIFETIME: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Access,
    Refresh,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "access" => Some(TokenType::Access),
            "refresh" => Some(TokenType::Refresh),
            _ => None,
        }
    }
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub token_type: TokenType,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub user_id: i64,
    /// The user's token generation at issue (claim `gen`, ours only: a
    /// simplejwt peer neither writes nor reads it). See
    /// [`crate::domain::User::revokes`].
    pub generation: Option<i64>,
}

/// A verified token of either kind: a user's (access or refresh) or a
/// service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedToken {
    User(Claims),
    Service(ServiceClaims),
}

impl DecodedToken {
    /// The `token_type` claim: `"access"`, `"refresh"` or `"service"`.
    pub fn token_type(&self) -> &'static str {
        match self {
            DecodedToken::User(claims) => claims.token_type.as_str(),
            DecodedToken::Service(_) => SERVICE_TOKEN_TYPE,
        }
    }

    /// Expiry, seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        match self {
            DecodedToken::User(claims) => claims.exp,
            DecodedToken::Service(claims) => claims.exp,
        }
    }

    pub fn jti(&self) -> &str {
        match self {
            DecodedToken::User(claims) => &claims.jti,
            DecodedToken::Service(claims) => &claims.jti,
        }
    }
}

/// Which tokens a decode accepts.
#[derive(Debug, Clone, Copy)]
enum Accept {
    /// A user's token, of this type if given.
    User(Option<TokenType>),
    /// Any token of ours.
    Any,
}

/// What a token's `token_type` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User(TokenType),
    Service,
}

impl Accept {
    /// simplejwt's "Token has wrong type" for anything else: a service
    /// token on a user path is refused as a refresh token is where an
    /// access token is expected.
    fn admits(self, kind: Kind) -> Result<(), TokenError> {
        match (self, kind) {
            (Accept::Any, _) | (Accept::User(None), Kind::User(_)) => Ok(()),
            (Accept::User(Some(expected)), Kind::User(token_type)) if expected == token_type => {
                Ok(())
            }
            _ => Err(TokenError::WrongType),
        }
    }
}

/// A freshly signed token and the claims inside it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

/// Why a token was refused; [`TokenError::message`] is simplejwt's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    Expired,
    WrongAlgorithm,
    NoId,
    NoType,
    WrongType,
    NoUserId,
    Blacklisted,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Invalid => "Token is invalid",
            TokenError::Expired => "Token is expired",
            TokenError::WrongAlgorithm => "Invalid algorithm specified",
            TokenError::NoId => "Token has no id",
            TokenError::NoType => "Token has no type",
            TokenError::WrongType => "Token has wrong type",
            TokenError::NoUserId => "Token contained no recognizable user identification",
            TokenError::Blacklisted => "Token is blacklisted",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TokenError {}

/// Claims as they are written, in simplejwt's order.
#[derive(Serialize)]
struct OutgoingClaims<'a> {
    token_type: &'static str,
    exp: i64,
    iat: i64,
    jti: &'a str,
    user_id: String,
    #[serde(rename = "gen")]
    generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// Claims as they may arrive: anything can be missing or of the wrong type,
/// and each case has its own answer. User tokens carry `user_id` and
/// `gen`, service tokens `client_id`, `scope` and `cid`.
#[derive(Deserialize)]
struct IncomingClaims {
    token_type: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
    user_id: Option<serde_json::Value>,
    #[serde(rename = "gen")]
    generation: Option<serde_json::Value>,
    client_id: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
    cid: Option<serde_json::Value>,
}

/// The longest `jti` accepted: the blacklist's column (simplejwt's is 255,
/// but writes a 32-digit uuid4 hex).
const MAX_JTI_CHARS: usize = 64;

/// Whether `id` may be a `jti` (or a service token's `cid`, or an
/// assertion's `jti`): 1 to `max_chars` characters, none a control
/// character, since they end up in database columns and logs.
fn is_valid_id(id: &str, max_chars: usize) -> bool {
    !id.is_empty() && id.chars().count() <= max_chars && !id.chars().any(char::is_control)
}

/// `now` less the leeway: a token is refused only once its `exp` is before
/// this, so whatever deletes or skips expired tokens (flushing the
/// blacklist, revoking a family) must use it too, or a blacklisted token
/// could come back to life inside the leeway.
pub fn expired_before(now: chrono::NaiveDateTime, leeway: Duration) -> chrono::NaiveDateTime {
    chrono::TimeDelta::from_std(leeway)
        .ok()
        .and_then(|leeway| now.checked_sub_signed(leeway))
        .unwrap_or(chrono::NaiveDateTime::MIN)
}

/// Signs and verifies tokens with the current [`KeyRing`], which SIGHUP
/// can replace while calls are in flight.
pub struct TokenCodec {
    keys: ArcSwap<KeyRing>,
    /// Bumped by every [`TokenCodec::replace_keys`]: a token verified with
    /// an older ring is verified again.
    generation: AtomicU64,
    /// Tokens whose signature checked out, by the whole token, with the
    /// ring generation that checked them; only for public-key algorithms,
    /// whose verification costs far more than a lookup.
    verified: Option<quick_cache::sync::Cache<String, (u64, DecodedToken)>>,
    validation: Validation,
    /// Seconds of clock skew tolerated.
    leeway: i64,
    access_lifetime: i64,
    refresh_lifetime: i64,
    service_lifetime: i64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCodec")
            .field("keys", &self.keys.load())
            .field("access_lifetime", &self.access_lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .field("service_lifetime", &self.service_lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenCodec {
    /// HS256 with a shared secret (tests, benchmarks); see [`Self::with_keys`].
    ///
    /// # Errors
    /// An empty secret, or a lifetime too long to represent.
    pub fn new(
        secret: &[u8],
        access_lifetime: Duration,
        refresh_lifetime: Duration,
    ) -> anyhow::Result<Self> {
        Self::with_keys(
            KeyRing::shared_secret(secret)?,
            access_lifetime,
            refresh_lifetime,
        )
    }

    /// Service tokens live 10 minutes unless
    /// [`Self::with_service_lifetime`] says otherwise.
    ///
    /// # Errors
    /// A lifetime too long to represent.
    pub fn with_keys(
        keys: KeyRing,
        access_lifetime: Duration,
        refresh_lifetime: Duration,
    ) -> anyhow::Result<Self> {
        // Only the configured algorithm: `none` and algorithm confusion fail here.
        let mut validation = Validation::new(keys.algorithm());
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);

        let verified = (keys.algorithm() != jsonwebtoken::Algorithm::HS256)
            .then(|| quick_cache::sync::Cache::new(VERIFIED_TOKENS));
        Ok(Self {
            verified,
            generation: AtomicU64::new(0),
            keys: ArcSwap::from_pointee(keys),
            validation,
            leeway: 0,
            access_lifetime: lifetime_seconds(access_lifetime)?,
            refresh_lifetime: lifetime_seconds(refresh_lifetime)?,
            service_lifetime: lifetime_seconds(DEFAULT_SERVICE_LIFETIME)?,
            issuer: None,
            audience: None,
        })
    }

    /// Service tokens live `lifetime` (`AUTH_SERVICE_TOKEN_LIFETIME`).
    ///
    /// # Errors
    /// A lifetime too long to represent.
    pub fn with_service_lifetime(mut self, lifetime: Duration) -> anyhow::Result<Self> {
        self.service_lifetime = lifetime_seconds(lifetime)?;
        Ok(self)
    }

    /// Writes `iss` and `aud` into every token and requires them of every
    /// token, when given (simplejwt's ISSUER and AUDIENCE).
    #[must_use]
    pub fn with_issuer_and_audience(
        mut self,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Self {
        if let Some(issuer) = &issuer {
            self.validation.set_issuer(&[issuer]);
            self.validation
                .required_spec_claims
                .insert("iss".to_owned());
        }
        if let Some(audience) = &audience {
            self.validation.set_audience(&[audience]);
            self.validation
                .required_spec_claims
                .insert("aud".to_owned());
        }
        self.issuer = issuer;
        self.audience = audience;
        self
    }

    /// Signs and verifies with `keys` from now on (SIGHUP). Calls in flight
    /// finish with the ring they started with.
    ///
    /// # Errors
    /// `keys` is for another algorithm: that needs a restart.
    pub fn replace_keys(&self, keys: KeyRing) -> anyhow::Result<()> {
        anyhow::ensure!(
            keys.algorithm() == self.keys.load().algorithm(),
            "the new keys are for {:?}, the service signs with {:?}; changing the algorithm needs a restart",
            keys.algorithm(),
            self.keys.load().algorithm()
        );
        self.keys.store(std::sync::Arc::new(keys));
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(verified) = &self.verified {
            verified.clear();
        }
        Ok(())
    }

    /// The `kid`s of the keys that verify now, the signing key's first.
    pub fn kids(&self) -> Vec<String> {
        self.keys.load().kids()
    }

    /// Tolerates `leeway` of clock skew between this service and whoever
    /// issued or checks a token (default none, as simplejwt).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self.leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// The moment before which a token whose `exp` falls counts as expired
    /// now (see [`expired_before`]).
    pub fn expired_before(&self, now: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
        expired_before(now, Duration::from_secs(self.validation.leeway))
    }

    /// The public keys that verify our tokens, as a JWKS. Empty with
    /// HS256: a shared secret is never published.
    pub fn public_keys(&self) -> JwkSet {
        self.keys.load().public_keys().clone()
    }

    /// A refresh token for `user_id`, as `RefreshToken.for_user`, under
    /// the user's current token `generation`.
    pub fn issue_refresh(
        &self,
        user_id: i64,
        generation: i64,
        now: i64,
    ) -> anyhow::Result<IssuedToken> {
        self.issue(
            TokenType::Refresh,
            (user_id, generation),
            now,
            now + self.refresh_lifetime,
        )
    }

    /// An access token derived from a verified refresh token: same user, its
    /// own `jti`, `iat` and `exp` (simplejwt 5.5.1 `RefreshToken.access_token`).
    pub fn access_from_refresh(&self, refresh: &Claims, now: i64) -> anyhow::Result<IssuedToken> {
        // Set by the caller for a refresh token of a Django peer's, which
        // has none (see `Accounts::refresh`).
        let generation = refresh.generation.unwrap_or_default();
        self.issue(
            TokenType::Access,
            (refresh.user_id, generation),
            now,
            now + self.access_lifetime,
        )
    }

    fn issue(
        &self,
        token_type: TokenType,
        (user_id, generation): (i64, i64),
        iat: i64,
        exp: i64,
    ) -> anyhow::Result<IssuedToken> {
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let token = self.sign(&OutgoingClaims {
            token_type: token_type.as_str(),
            exp,
            iat,
            jti: &jti,
            user_id: user_id.to_string(),
            generation,
            aud: self.audience.as_deref(),
            iss: self.issuer.as_deref(),
        })?;
        Ok(IssuedToken {
            token,
            claims: Claims {
                token_type,
                exp,
                iat,
                jti,
                user_id,
                generation: Some(generation),
            },
        })
    }

    /// The claims as signed with the current key.
    fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let keys = self.keys.load();
        jsonwebtoken::encode(&keys.header(), claims, keys.signing_key())
            .map_err(|e| anyhow::anyhow!("signing a token failed: {e}"))
    }

    /// A user's token: verifies signature, algorithm, `exp`, `nbf`, `iat`,
    /// `jti`, `user_id` and `token_type`, which must be `expected` when
    /// given, and is never `"service"` (a service token is refused with
    /// [`TokenError::WrongType`], as simplejwt refuses a token of a type it
    /// does not expect). The blacklist and the user are the caller's to
    /// check: they need the database.
    ///
    /// # Errors
    /// The [`TokenError`] simplejwt would raise for the same token.
    pub fn decode(
        &self,
        token: &str,
        expected: Option<TokenType>,
        now: i64,
    ) -> Result<Claims, TokenError> {
        match self.decode_accepting(token, Accept::User(expected), now)? {
            DecodedToken::User(claims) => Ok(claims),
            // `Accept::User` admits none.
            DecodedToken::Service(_) => Err(TokenError::WrongType),
        }
    }

    /// A token of either kind, with the same checks as [`Self::decode`];
    /// a service token's `client_id`, `scope` (each scope's syntax) and
    /// `cid` too. Whether its credential and account still exist is the
    /// caller's to check.
    ///
    /// # Errors
    /// The [`TokenError`] simplejwt would raise for the same token;
    /// [`TokenError::Invalid`] for a service token's malformed claims.
    pub fn decode_any(&self, token: &str, now: i64) -> Result<DecodedToken, TokenError> {
        self.decode_accepting(token, Accept::Any, now)
    }

    fn decode_accepting(
        &self,
        token: &str,
        accept: Accept,
        now: i64,
    ) -> Result<DecodedToken, TokenError> {
        let Some(verified) = &self.verified else {
            return self.verify(token, accept, now);
        };
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((checked_by, decoded)) = verified.get(token) {
            // Never past `exp` (as the library counts it), never after a reload.
            if checked_by == generation && decoded.exp() >= now.saturating_sub(self.leeway) {
                accept.admits(match &decoded {
                    DecodedToken::User(claims) => Kind::User(claims.token_type),
                    DecodedToken::Service(_) => Kind::Service,
                })?;
                return Ok(decoded);
            }
        }
        let decoded = self.verify(token, accept, now)?;
        verified.insert(token.to_owned(), (generation, decoded.clone()));
        Ok(decoded)
    }

    /// [`Self::decode_accepting`] without the cache.
    fn verify(&self, token: &str, accept: Accept, now: i64) -> Result<DecodedToken, TokenError> {
        let keys = self.keys.load();
        let key = keys.verifying_key(token)?;
        let data =
            jsonwebtoken::decode::<IncomingClaims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    _ => TokenError::Invalid,
                }
            })?;
        let raw = data.claims;

        // exp itself was checked by the library; it must still be an integer.
        let exp = raw
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_i64)
            .ok_or(TokenError::Invalid)?;
        // PyJWT refuses a token issued in the future ("not yet valid (iat)").
        let iat = match raw.iat {
            None => 0,
            Some(value) => value.as_i64().ok_or(TokenError::Invalid)?,
        };
        if iat > now.saturating_add(self.leeway) {
            return Err(TokenError::Invalid);
        }
        let jti = match raw.jti {
            None => return Err(TokenError::NoId),
            // Stored in a 64-character column: a token signed elsewhere (a
            // Django service sharing the key) with a longer or NUL-bearing
            // jti could never be recorded, so it is not a valid token here.
            Some(serde_json::Value::String(jti)) if is_valid_id(&jti, MAX_JTI_CHARS) => jti,
            Some(_) => return Err(TokenError::Invalid),
        };
        let kind = match raw.token_type {
            None => return Err(TokenError::NoType),
            Some(value) => match value.as_str() {
                Some(SERVICE_TOKEN_TYPE) => Kind::Service,
                other => Kind::User(
                    other
                        .and_then(TokenType::parse)
                        .ok_or(TokenError::WrongType)?,
                ),
            },
        };
        accept.admits(kind)?;
        let token_type = match kind {
            Kind::User(token_type) => token_type,
            Kind::Service => {
                let claims = (raw.client_id, raw.scope, raw.cid);
                return Ok(DecodedToken::Service(service_claims(
                    claims, exp, iat, jti,
                )?));
            }
        };
        let user_id = raw
            .user_id
            .as_ref()
            .and_then(parse_user_id)
            .ok_or(TokenError::NoUserId)?;
        let generation = match raw.generation {
            None => None,
            Some(value) => Some(value.as_i64().ok_or(TokenError::Invalid)?),
        };
        Ok(DecodedToken::User(Claims {
            token_type,
            exp,
            iat,
            jti,
            user_id,
            generation,
        }))
    }
}

/// The rest of a service token's claims (`client_id`, `scope`, `cid`),
/// once the common ones passed.
fn service_claims(
    (client_id, scope, cid): (
        Option<serde_json::Value>,
        Option<serde_json::Value>,
        Option<serde_json::Value>,
    ),
    exp: i64,
    iat: i64,
    jti: String,
) -> Result<ServiceClaims, TokenError> {
    let string = |value: Option<serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) => Ok(text),
        _ => Err(TokenError::Invalid),
    };
    let client_id = string(client_id)?;
    let scopes = service::parse_scope_claim(&string(scope)?).ok_or(TokenError::Invalid)?;
    let cid = string(cid)?;
    if !service::is_valid_client_id(&client_id) || !is_valid_id(&cid, MAX_JTI_CHARS) {
        return Err(TokenError::Invalid);
    }
    Ok(ServiceClaims {
        exp,
        iat,
        jti,
        client_id,
        scopes,
        cid,
    })
}

/// A lifetime in whole seconds, as the time claims count.
fn lifetime_seconds(lifetime: Duration) -> anyhow::Result<i64> {
    i64::try_from(lifetime.as_secs()).map_err(|_| anyhow::anyhow!("token lifetime too long"))
}

/// simplejwt ≥ 5.5.1 writes `"42"`, older versions `42`.
fn parse_user_id(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Seconds since the Unix epoch, the unit of every time claim.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use serde_json::json;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    const SECRET: &[u8] = b"test secret that is long enough for HS256";
    const NOW: i64 = 1_800_000_000;

    fn codec() -> TokenCodec {
        TokenCodec::new(
            SECRET,
            Duration::from_secs(86_400),
            Duration::from_secs(2_592_000),
        )
        .unwrap()
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn payload(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn refresh_and_access_claims_match_simplejwt() {
        let codec = codec();
        let refresh = codec.issue_refresh(42, 0, NOW).unwrap();
        let body = payload(&refresh.token);
        assert_eq!(body["token_type"], "refresh");
        assert_eq!(body["user_id"], "42");
        assert_eq!(body["iat"], NOW);
        assert_eq!(body["exp"], NOW + 2_592_000);
        let jti = body["jti"].as_str().unwrap_or_default();
        assert_eq!(jti.len(), 32);
        assert!(
            jti.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );

        let access = codec
            .access_from_refresh(&refresh.claims, NOW + 10)
            .unwrap();
        let body = payload(&access.token);
        assert_eq!(body["token_type"], "access");
        assert_eq!(body["user_id"], "42");
        assert_eq!(body["iat"], NOW + 10);
        assert_eq!(body["exp"], NOW + 10 + 86_400);
        assert_ne!(body["jti"].as_str(), Some(jti));
    }

    #[test]
    fn round_trips_and_checks_type() {
        let codec = codec();
        let now = unix_now();
        let refresh = codec.issue_refresh(7, 0, now).unwrap();
        assert_eq!(
            codec.decode(&refresh.token, Some(TokenType::Refresh), now),
            Ok(refresh.claims)
        );
        assert_eq!(
            codec.decode(&refresh.token, Some(TokenType::Access), now),
            Err(TokenError::WrongType)
        );
    }

    #[test]
    fn leeway_tolerates_that_much_clock_skew_and_no_more() {
        let now = unix_now();
        let claims = |exp: i64, iat: i64| {
            sign(json!({"token_type": "access", "exp": exp, "iat": iat,
                        "jti": "0123456789abcdef0123456789abcdef", "user_id": "5"}))
        };
        let strict = codec();
        let lenient = codec().with_leeway(Duration::from_secs(30));
        let expired_10s_ago = claims(now - 10, now - 100);
        let issued_10s_ahead = claims(now + 100, now + 10);
        assert_eq!(
            strict.decode(&expired_10s_ago, None, now),
            Err(TokenError::Expired)
        );
        assert!(lenient.decode(&expired_10s_ago, None, now).is_ok());
        assert_eq!(
            strict.decode(&issued_10s_ahead, None, now),
            Err(TokenError::Invalid)
        );
        assert!(lenient.decode(&issued_10s_ahead, None, now).is_ok());
        assert_eq!(
            lenient.decode(&claims(now - 40, now - 100), None, now),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn accepts_integer_user_id_from_older_simplejwt() {
        let now = unix_now();
        let token = sign(json!({"token_type": "access", "exp": now + 60, "iat": now,
                                "jti": "0123456789abcdef0123456789abcdef", "user_id": 5}));
        assert_eq!(codec().decode(&token, None, now).map(|c| c.user_id), Ok(5));
    }

    #[test]
    fn refuses_malformed_claims_with_simplejwt_messages() {
        let now = unix_now();
        let base = json!({"token_type": "access", "exp": now + 60, "iat": now,
                          "jti": "0123456789abcdef0123456789abcdef", "user_id": "5"});
        let without = |key: &str| {
            let mut claims = base.clone();
            claims.as_object_mut().map(|o| o.remove(key));
            sign(claims)
        };
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = base.clone();
            claims[key] = value;
            sign(claims)
        };
        let codec = codec();
        let check = |token: String| codec.decode(&token, Some(TokenType::Access), now);
        assert_eq!(check(without("jti")), Err(TokenError::NoId));
        let too_long = "j".repeat(65);
        for jti in ["a\u{0}b", too_long.as_str()] {
            assert_eq!(
                check(with("jti", json!(jti))),
                Err(TokenError::Invalid),
                "{jti:?}"
            );
        }
        assert!(check(with("jti", json!("j".repeat(64)))).is_ok());
        assert_eq!(check(without("token_type")), Err(TokenError::NoType));
        assert_eq!(check(without("user_id")), Err(TokenError::NoUserId));
        assert_eq!(check(without("exp")), Err(TokenError::Invalid));
        assert_eq!(
            check(with("token_type", json!("sliding"))),
            Err(TokenError::WrongType)
        );
        assert_eq!(check(with("exp", json!(now - 1))), Err(TokenError::Expired));
        assert_eq!(
            check(with("iat", json!(now + 60))),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(with("nbf", json!(now + 60))),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(with("user_id", json!("abc"))),
            Err(TokenError::NoUserId)
        );
    }

    #[test]
    fn refuses_other_algorithms_keys_and_garbage() {
        let now = unix_now();
        let claims = json!({"token_type": "access", "exp": now + 60, "iat": now,
                            "jti": "0123456789abcdef0123456789abcdef", "user_id": "5"});
        let codec = codec();

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap_or_default();
        assert_eq!(
            codec.decode(&hs512, None, now),
            Err(TokenError::WrongAlgorithm)
        );

        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(codec.decode(&none, None, now), Err(TokenError::Invalid));

        let wrong_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another key").unwrap(),
        )
        .unwrap_or_default();
        assert_eq!(
            codec.decode(&wrong_key, None, now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            codec.decode("not a token", None, now),
            Err(TokenError::Invalid)
        );
    }

    fn ed25519(file: &str) -> KeyRing {
        let pem = match file {
            "1" => include_str!("../tests/keys/ed25519-1.pem"),
            _ => include_str!("../tests/keys/ed25519-2.pem"),
        };
        KeyRing::asymmetric(jsonwebtoken::Algorithm::EdDSA, (file, pem), &[]).unwrap()
    }

    fn eddsa_codec() -> TokenCodec {
        TokenCodec::with_keys(
            ed25519("1"),
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    #[test]
    fn a_remembered_token_is_not_trusted_past_its_expiry() {
        let codec = eddsa_codec();
        let now = unix_now();
        let refresh = codec.issue_refresh(42, 0, now).unwrap();
        let access = codec.access_from_refresh(&refresh.claims, now).unwrap();
        let decoded = codec.decode(&access.token, Some(TokenType::Access), now);
        assert_eq!(decoded.as_ref().map(|c| c.user_id), Ok(42));
        // Remembered now; still the same answers.
        assert_eq!(
            codec.decode(&access.token, Some(TokenType::Access), now),
            decoded
        );
        assert_eq!(
            codec.decode(&access.token, Some(TokenType::Refresh), now),
            Err(TokenError::WrongType)
        );
        // `exp` passes (the library counts on the real clock).
        let short =
            TokenCodec::with_keys(ed25519("1"), Duration::from_secs(1), Duration::from_secs(9))
                .unwrap();
        let refresh = short.issue_refresh(42, 0, unix_now()).unwrap();
        let access = short
            .access_from_refresh(&refresh.claims, unix_now())
            .unwrap();
        assert!(short.decode(&access.token, None, unix_now()).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(
            short.decode(&access.token, None, unix_now()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_reload_forgets_the_tokens_the_old_keys_verified() {
        let codec = eddsa_codec();
        let now = unix_now();
        let refresh = codec.issue_refresh(42, 0, now).unwrap();
        let access = codec.access_from_refresh(&refresh.claims, now).unwrap();
        assert!(codec.decode(&access.token, None, now).is_ok());
        codec.replace_keys(ed25519("2")).unwrap();
        assert_eq!(
            codec.decode(&access.token, None, now),
            Err(TokenError::Invalid)
        );
    }
}
