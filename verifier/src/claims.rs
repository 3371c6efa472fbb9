//! The claims of an access token, checked exactly as the auth service
//! checks them (simplejwt-compatible: `token_type`, `exp`, `iat`, `jti`,
//! `user_id` as a decimal string or, from older simplejwt, an integer).

use serde::Deserialize;

use crate::VerifyError;

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
}

/// The longest `jti` the auth service accepts (its blacklist column).
const MAX_JTI_CHARS: usize = 64;

impl IncomingClaims {
    /// The same checks, in the same order, as the auth service's
    /// `TokenCodec::decode` with `expected = Access`.
    pub(crate) fn check(self, kid: &str, now: i64, leeway: i64) -> Result<Claims, VerifyError> {
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
            Some(serde_json::Value::String(jti))
                if !jti.is_empty()
                    && jti.chars().count() <= MAX_JTI_CHARS
                    && !jti.chars().any(char::is_control) =>
            {
                jti
            }
            Some(_) => return Err(VerifyError::Invalid),
        };
        match self.token_type {
            None => return Err(VerifyError::NoType),
            Some(value) if value.as_str() == Some("access") => {}
            Some(_) => return Err(VerifyError::WrongType),
        }
        let user_id = self
            .user_id
            .as_ref()
            .and_then(parse_user_id)
            .ok_or(VerifyError::NoUserId)?;
        let iss = match self.iss {
            None => None,
            Some(serde_json::Value::String(iss)) => Some(iss),
            Some(_) => return Err(VerifyError::Invalid),
        };
        Ok(Claims {
            exp,
            iat,
            jti,
            user_id,
            iss,
            kid: kid.to_owned(),
        })
    }
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
}
