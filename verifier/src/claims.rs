//! The claims of an access token, checked exactly as the auth service
//! checks them (simplejwt-compatible: `token_type`, `exp`, `iat`, `jti`,
//! `user_id` as a decimal string or, from older simplejwt, an integer), and
//! those of a service token (`token_type` `"service"`, `client_id`, `scope`
//! space-separated as in RFC 9068, `cid`).

use serde::Deserialize;

use crate::{AccessDenied, VerifyError};

/// Who a verified token speaks for: a user or a service. Both guards put
/// it into the request's extensions, beside the [`AuthenticatedUser`] or
/// [`AuthenticatedService`] it holds, so a handler says which callers it
/// takes by what it reads: one kind, or this, matched exhaustively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    User(AuthenticatedUser),
    Service(AuthenticatedService),
}

impl Authenticated {
    pub fn user(&self) -> Option<&AuthenticatedUser> {
        match self {
            Self::User(user) => Some(user),
            Self::Service(_) => None,
        }
    }

    pub fn service(&self) -> Option<&AuthenticatedService> {
        match self {
            Self::User(_) => None,
            Self::Service(service) => Some(service),
        }
    }
}

/// The service a verified service token speaks for (a service account of
/// the auth service, which obtained the token with its secret or key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedService {
    /// The service account's name.
    pub client_id: String,
    /// What the token allows, as granted by the auth service.
    pub scopes: Vec<String>,
    pub claims: ServiceClaims,
}

impl AuthenticatedService {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }

    /// For a check per method (the guards check per service): `Ok` if the
    /// token carries every one of `required`.
    ///
    /// # Errors
    /// [`AccessDenied::MissingScopes`] naming those it lacks, which is
    /// PERMISSION_DENIED as a `tonic::Status`.
    pub fn require_scopes<S: AsRef<str>>(&self, required: &[S]) -> Result<(), AccessDenied> {
        let missing: Vec<String> = required
            .iter()
            .map(AsRef::as_ref)
            .filter(|scope| !self.has_scope(scope))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AccessDenied::MissingScopes(missing))
        }
    }
}

/// The verified claims of a service token besides its `client_id` and
/// scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceClaims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch (0 if absent).
    pub iat: i64,
    /// The token's unique id.
    pub jti: String,
    /// The id of the secret or key that obtained the token.
    pub cid: String,
    /// The `iss` claim, if the token has one.
    pub iss: Option<String>,
    /// The header's `kid`: which key signed the token.
    pub kid: String,
}

/// The caller a verified access token speaks for; the layer and the
/// interceptor put it into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user_id: i64,
    pub claims: Claims,
}

/// The verified claims of an access token (`token_type` is always
/// `"access"`: anything else is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch (0 if absent).
    pub iat: i64,
    /// The token's unique id.
    pub jti: String,
    pub user_id: i64,
    /// The `iss` claim, if the token has one.
    pub iss: Option<String>,
    /// The header's `kid`: which key signed the token.
    pub kid: String,
}

/// Claims as they may arrive: anything can be missing or of the wrong type,
/// and each case has its own answer. `exp`, `nbf`, `iss` and `aud` are
/// also checked by jsonwebtoken before these.
#[derive(Deserialize)]
pub(crate) struct IncomingClaims {
    token_type: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
    user_id: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    client_id: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
    cid: Option<serde_json::Value>,
}

/// The longest `jti` the auth service accepts (its blacklist column).
const MAX_JTI_CHARS: usize = 64;

/// The longest client id and scope (the auth service's limits).
const MAX_NAME_CHARS: usize = 64;

/// The `token_type` of a service token.
const SERVICE_TOKEN_TYPE: &str = "service";

impl IncomingClaims {
    /// The same checks, in the same order, as the auth service's
    /// `TokenCodec::decode` with `expected = Access`: a service token has
    /// the wrong type.
    pub(crate) fn check(self, kid: &str, now: i64, leeway: i64) -> Result<Claims, VerifyError> {
        match self.check_as(kid, now, leeway, false)? {
            Authenticated::User(user) => Ok(user.claims),
            Authenticated::Service(_) => Err(VerifyError::WrongType),
        }
    }

    /// The checks, with service tokens accepted if `services` (as the
    /// auth service's `TokenCodec::decode_any` checks them; refresh tokens
    /// are refused either way).
    pub(crate) fn check_as(
        self,
        kid: &str,
        now: i64,
        leeway: i64,
        services: bool,
    ) -> Result<Authenticated, VerifyError> {
        let exp = self
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_i64)
            .ok_or(VerifyError::Invalid)?;
        // PyJWT refuses a token issued in the future.
        let iat = match self.iat {
            None => 0,
            Some(value) => value.as_i64().ok_or(VerifyError::Invalid)?,
        };
        if iat > now.saturating_add(leeway) {
            return Err(VerifyError::Invalid);
        }
        let jti = match self.jti {
            None => return Err(VerifyError::NoId),
            Some(serde_json::Value::String(jti)) if is_valid_id(&jti) => jti,
            Some(_) => return Err(VerifyError::Invalid),
        };
        let service = match self.token_type {
            None => return Err(VerifyError::NoType),
            Some(value) => match value.as_str() {
                Some("access") => false,
                Some(SERVICE_TOKEN_TYPE) if services => true,
                _ => return Err(VerifyError::WrongType),
            },
        };
        if service {
            let string = |value: Option<serde_json::Value>| match value {
                Some(serde_json::Value::String(text)) => Ok(text),
                _ => Err(VerifyError::Invalid),
            };
            let client_id = string(self.client_id)?;
            let scopes = parse_scope_claim(&string(self.scope)?).ok_or(VerifyError::Invalid)?;
            let cid = string(self.cid)?;
            if !is_valid_client_id(&client_id) || !is_valid_id(&cid) {
                return Err(VerifyError::Invalid);
            }
            let iss = parse_iss(self.iss)?;
            return Ok(Authenticated::Service(AuthenticatedService {
                client_id,
                scopes,
                claims: ServiceClaims {
                    exp,
                    iat,
                    jti,
                    cid,
                    iss,
                    kid: kid.to_owned(),
                },
            }));
        }
        let user_id = self
            .user_id
            .as_ref()
            .and_then(parse_user_id)
            .ok_or(VerifyError::NoUserId)?;
        let iss = parse_iss(self.iss)?;
        Ok(Authenticated::User(AuthenticatedUser {
            user_id,
            claims: Claims {
                exp,
                iat,
                jti,
                user_id,
                iss,
                kid: kid.to_owned(),
            },
        }))
    }
}

fn parse_iss(iss: Option<serde_json::Value>) -> Result<Option<String>, VerifyError> {
    match iss {
        None => Ok(None),
        Some(serde_json::Value::String(iss)) => Ok(Some(iss)),
        Some(_) => Err(VerifyError::Invalid),
    }
}

/// A `jti` or `cid` the auth service could have written.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_JTI_CHARS && !id.chars().any(char::is_control)
}

/// A service account's name: `[a-z0-9-]{1,64}`.
fn is_valid_client_id(client_id: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&client_id.len())
        && client_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The scopes of a `scope` claim: valid scopes (`[A-Za-z0-9._:/-]{1,64}`)
/// with single spaces between them, or nothing. `None` if malformed.
fn parse_scope_claim(claim: &str) -> Option<Vec<String>> {
    if claim.is_empty() {
        return Some(Vec::new());
    }
    let is_valid_scope = |scope: &str| {
        (1..=MAX_NAME_CHARS).contains(&scope.len())
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
    };
    claim
        .split(' ')
        .map(|scope| is_valid_scope(scope).then(|| scope.to_owned()))
        .collect()
}

/// simplejwt ≥ 5.5.1 writes `"42"`, older versions `42`.
fn parse_user_id(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn check(claims: serde_json::Value) -> Result<Claims, VerifyError> {
        serde_json::from_value::<IncomingClaims>(claims)
            .unwrap()
            .check("k1", NOW, 0)
    }

    fn base() -> serde_json::Value {
        json!({"token_type": "access", "exp": NOW + 60, "iat": NOW,
               "jti": "0123456789abcdef0123456789abcdef", "user_id": "5"})
    }

    fn without(key: &str) -> serde_json::Value {
        let mut claims = base();
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut claims = base();
        claims[key] = value;
        claims
    }

    #[test]
    fn accepts_string_and_integer_user_ids() {
        assert_eq!(check(base()).unwrap().user_id, 5);
        assert_eq!(check(with("user_id", json!(7))).unwrap().user_id, 7);
        assert_eq!(check(base()).unwrap().kid, "k1");
    }

    #[test]
    fn refuses_malformed_claims_with_the_services_errors() {
        assert_eq!(check(without("jti")), Err(VerifyError::NoId));
        assert_eq!(check(with("jti", json!(""))), Err(VerifyError::Invalid));
        assert_eq!(
            check(with("jti", json!("j".repeat(65)))),
            Err(VerifyError::Invalid)
        );
        assert!(check(with("jti", json!("j".repeat(64)))).is_ok());
        assert_eq!(check(without("token_type")), Err(VerifyError::NoType));
        assert_eq!(
            check(with("token_type", json!("refresh"))),
            Err(VerifyError::WrongType)
        );
        assert_eq!(check(without("user_id")), Err(VerifyError::NoUserId));
        assert_eq!(
            check(with("user_id", json!("abc"))),
            Err(VerifyError::NoUserId)
        );
        assert_eq!(check(without("exp")), Err(VerifyError::Invalid));
        assert_eq!(
            check(with("iat", json!(NOW + 1))),
            Err(VerifyError::Invalid)
        );
        assert_eq!(check(with("iss", json!(3))), Err(VerifyError::Invalid));
    }

    fn service() -> serde_json::Value {
        json!({"token_type": "service", "exp": NOW + 60, "iat": NOW,
               "jti": "0123456789abcdef0123456789abcdef", "client_id": "billing",
               "scope": "auth.admin orders.read", "cid": "c0ffee"})
    }

    fn check_any(claims: serde_json::Value) -> Result<Authenticated, VerifyError> {
        serde_json::from_value::<IncomingClaims>(claims)
            .unwrap()
            .check_as("k1", NOW, 0, true)
    }

    #[test]
    fn service_tokens_pass_only_where_services_are_accepted() {
        assert_eq!(check(service()), Err(VerifyError::WrongType));
        // Even a malformed one: the type is checked first.
        let mut malformed = service();
        malformed["client_id"] = json!("Not A Name");
        assert_eq!(check(malformed), Err(VerifyError::WrongType));

        let Ok(Authenticated::Service(service)) = check_any(service()) else {
            panic!("not a service");
        };
        assert_eq!(service.client_id, "billing");
        assert_eq!(service.scopes, ["auth.admin", "orders.read"]);
        assert_eq!(service.claims.cid, "c0ffee");
        assert_eq!(service.claims.kid, "k1");
        assert!(service.has_scope("orders.read") && !service.has_scope("orders"));
        assert_eq!(
            service.require_scopes(&["orders.read", "auth.admin"]),
            Ok(())
        );
        assert_eq!(
            service.require_scopes(&["orders.write", "orders.read", "x"]),
            Err(AccessDenied::MissingScopes(vec![
                "orders.write".to_owned(),
                "x".to_owned()
            ]))
        );

        let user = check_any(base()).unwrap();
        assert_eq!(user.user().map(|u| u.user_id), Some(5));
        assert!(user.service().is_none());
        let refresh = {
            let mut claims = base();
            claims["token_type"] = json!("refresh");
            claims
        };
        assert_eq!(check_any(refresh), Err(VerifyError::WrongType));
    }

    #[test]
    fn refuses_malformed_service_claims() {
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = service();
            claims[key] = value;
            claims
        };
        let without = |key: &str| {
            let mut claims = service();
            claims.as_object_mut().unwrap().remove(key);
            claims
        };
        let empty = check_any(with("scope", json!(""))).unwrap();
        assert_eq!(empty.service().map(|s| s.scopes.len()), Some(0));
        for (case, claims) in [
            ("no client_id", without("client_id")),
            ("bad client_id", with("client_id", json!("a_b"))),
            ("no scope", without("scope")),
            ("scope array", with("scope", json!(["a"]))),
            ("two spaces", with("scope", json!("a  b"))),
            ("bad scope", with("scope", json!("a b,c"))),
            ("no cid", without("cid")),
            ("long cid", with("cid", json!("c".repeat(65)))),
            ("iss number", with("iss", json!(1))),
        ] {
            assert_eq!(check_any(claims), Err(VerifyError::Invalid), "{case}");
        }
        assert_eq!(check_any(without("jti")), Err(VerifyError::NoId));
        assert_eq!(check_any(without("token_type")), Err(VerifyError::NoType));
    }
}
