//! Protobuf messages ↔ domain values. Decoding parses every field into its
//! domain type and reports all broken rules at once, as field violations.

use chrono::NaiveDateTime;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};

use crate::{
    accounts::{
        ClientCredential, IssuedResetToken, IssuedSecret, NewAccount, NewServiceAccount, Page,
        PasswordChange, PasswordReset, ServiceAccountPage, ServiceGrant, ServiceToken, TokenPair,
        UserBatch, VerifiedToken,
    },
    domain::{
        Avatar, BLANK, CredentialId, Credentials, Email, GivenPassword, Password, PublicKey,
        Scopes, ServiceAccount, ServiceAccountName, TokenText, User, UserAttributes, UserFilter,
        UserIds, Username,
    },
    error::Error,
    pb,
    tokens::SERVICE_TOKEN_TYPE,
};

impl TryFrom<pb::RegisterRequest> for NewAccount {
    type Error = Error;

    fn try_from(req: pb::RegisterRequest) -> Result<Self, Error> {
        let avatar = match req.avatar.as_deref() {
            None | Some("") => Ok(None),
            Some(url) => Avatar::parse(url).map(Some),
        };
        let attributes = UserAttributes {
            username: &req.username,
            email: &req.email,
        };
        let parsed = (
            Email::parse(&req.email),
            Username::parse(&req.username),
            Password::parse(req.password, attributes),
            avatar,
        );
        match parsed {
            (Ok(email), Ok(username), Ok(password), Ok(avatar)) => Ok(Self {
                email,
                username,
                password,
                avatar,
            }),
            (e, u, p, a) => Err(Error::invalid_fields([
                ("email", e.err().into_iter().collect()),
                ("username", u.err().into_iter().collect()),
                ("password", p.err().unwrap_or_default()),
                ("avatar", a.err().into_iter().collect()),
            ])),
        }
    }
}

impl TryFrom<pb::ObtainTokenPairRequest> for Credentials {
    type Error = Error;

    fn try_from(req: pb::ObtainTokenPairRequest) -> Result<Self, Error> {
        Credentials::parse(&req.username, req.password).map_err(Error::invalid_fields)
    }
}

impl TryFrom<pb::ChangePasswordRequest> for PasswordChange {
    type Error = Error;

    /// The new password is validated by the application, against the user.
    fn try_from(req: pb::ChangePasswordRequest) -> Result<Self, Error> {
        let current = GivenPassword::parse(req.current_password);
        match (current, req.new_password.is_empty()) {
            (Ok(current), false) => Ok(Self {
                current,
                new: req.new_password,
            }),
            (current, new_blank) => Err(Error::invalid_fields([
                ("current_password", current.err().into_iter().collect()),
                (
                    "new_password",
                    new_blank.then(|| BLANK.to_owned()).into_iter().collect(),
                ),
            ])),
        }
    }
}

impl TryFrom<pb::CreateUserRequest> for NewAccount {
    type Error = Error;

    /// The fields and rules of Register (`is_staff` aside).
    fn try_from(req: pb::CreateUserRequest) -> Result<Self, Error> {
        NewAccount::try_from(pb::RegisterRequest {
            email: req.email,
            username: req.username,
            password: req.password,
            avatar: req.avatar,
        })
    }
}

impl TryFrom<pb::ResetPasswordRequest> for PasswordReset {
    type Error = Error;

    /// The new password is validated by the application, against the
    /// token's user.
    fn try_from(req: pb::ResetPasswordRequest) -> Result<Self, Error> {
        // As ChangePassword: a password of spaces is the validators' to refuse.
        let blank = |is_blank: bool| is_blank.then(|| BLANK.to_owned()).into_iter().collect();
        let token: Vec<String> = blank(req.token.trim().is_empty());
        let new: Vec<String> = blank(req.new_password.is_empty());
        if token.is_empty() && new.is_empty() {
            Ok(Self {
                token: req.token,
                new: req.new_password,
            })
        } else {
            Err(Error::invalid_fields([
                ("token", token),
                ("new_password", new),
            ]))
        }
    }
}

impl TryFrom<pb::ObtainServiceTokenRequest> for ServiceGrant {
    type Error = Error;

    /// Exactly one of `client_secret` and `assertion`; `client_id` is
    /// required with a secret, optional with an assertion.
    fn try_from(req: pb::ObtainServiceTokenRequest) -> Result<Self, Error> {
        const ONE_OF: &str = "Give exactly one of client_secret and assertion.";
        let mut violations: Vec<(&str, Vec<String>)> = Vec::new();
        let credential = match (req.client_secret.is_empty(), req.assertion.is_empty()) {
            (false, true) => Some(ClientCredential::Secret(req.client_secret)),
            (true, false) => Some(ClientCredential::Assertion(req.assertion)),
            (true, true) => {
                violations.push(("client_secret", vec![ONE_OF.to_owned()]));
                violations.push(("assertion", vec![ONE_OF.to_owned()]));
                None
            }
            (false, false) => {
                violations.push(("assertion", vec![ONE_OF.to_owned()]));
                None
            }
        };
        let client_id = match req.client_id.as_str() {
            "" if matches!(credential, Some(ClientCredential::Secret(_))) => {
                violations.push(("client_id", vec![BLANK.to_owned()]));
                None
            }
            "" => None,
            given => match ServiceAccountName::parse(given) {
                Ok(name) => Some(name),
                Err(e) => {
                    violations.push(("client_id", vec![e]));
                    None
                }
            },
        };
        let scopes = Scopes::parse(req.scopes.iter().map(String::as_str));
        match (credential, scopes) {
            (Some(credential), Ok(scopes)) if violations.is_empty() => Ok(Self {
                client_id,
                credential,
                scopes,
            }),
            (_, scopes) => {
                violations.push(("scopes", scopes.err().unwrap_or_default()));
                Err(Error::invalid_fields(violations))
            }
        }
    }
}

impl From<ServiceToken> for pb::ObtainServiceTokenResponse {
    fn from(token: ServiceToken) -> Self {
        pb::ObtainServiceTokenResponse {
            access: token.access,
            expires_at: Some(prost_types::Timestamp {
                seconds: token.expires_at,
                nanos: 0,
            }),
            scopes: token.scopes,
        }
    }
}

/// A user id from a request: ids start at 1, and 0 is what proto3 sends
/// for a field left out.
pub(super) fn user_id(id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::invalid("id", "A valid user id is required."))
    }
}

impl TryFrom<pb::CreateServiceAccountRequest> for NewServiceAccount {
    type Error = Error;

    fn try_from(req: pb::CreateServiceAccountRequest) -> Result<Self, Error> {
        let name = ServiceAccountName::parse(&req.name);
        let scopes = Scopes::parse(req.scopes.iter().map(String::as_str));
        match (name, scopes) {
            (Ok(name), Ok(scopes)) => Ok(Self { name, scopes }),
            (name, scopes) => Err(Error::invalid_fields([
                ("name", name.err().into_iter().collect()),
                ("scopes", scopes.err().unwrap_or_default()),
            ])),
        }
    }
}

/// A service account id from a request; as [`user_id`].
pub(super) fn service_account_id(id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::invalid(
            "id",
            "A valid service account id is required.",
        ))
    }
}

/// The scopes of a request, every bad one named.
pub(super) fn scopes(scopes: &[String]) -> Result<Scopes, Error> {
    Scopes::parse(scopes.iter().map(String::as_str))
        .map_err(|errors| Error::invalid_fields([("scopes", errors)]))
}

/// A secret id or kid in `field`.
pub(super) fn credential_id(field: &str, value: &str) -> Result<CredentialId, Error> {
    CredentialId::parse(value).map_err(|e| Error::invalid(field, e))
}

pub(super) fn public_key(pem: &str) -> Result<PublicKey, Error> {
    PublicKey::parse(pem).map_err(|e| Error::invalid("public_key_pem", e))
}

/// Two decoded fields, or every violation of both.
pub(super) fn both<A, B>(a: Result<A, Error>, b: Result<B, Error>) -> Result<(A, B), Error> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(Error::InvalidArgument(mut first)), Err(Error::InvalidArgument(second))) => {
            first.extend(second);
            Err(Error::InvalidArgument(first))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The token in `field`, unless it is blank.
pub(super) fn token_text<'a>(field: &str, value: &'a str) -> Result<TokenText<'a>, Error> {
    TokenText::parse(value).map_err(|e| Error::invalid(field, e))
}

/// The avatar to set, or `None` to clear it (an empty or blank URL).
pub(super) fn avatar_update(req: &pb::UpdateAvatarRequest) -> Result<Option<Avatar>, Error> {
    match req.avatar.trim() {
        "" => Ok(None),
        url => Avatar::parse(url)
            .map(Some)
            .map_err(|e| Error::invalid("avatar", e)),
    }
}

/// ListUsers' filter; what it does not support is named in the violation.
pub(super) fn user_filter(text: &str) -> Result<UserFilter, Error> {
    UserFilter::parse(text).map_err(|e| Error::invalid("filter", e))
}

pub(super) fn user_ids(ids: Vec<i64>) -> Result<UserIds, Error> {
    UserIds::parse(ids).map_err(|e| Error::invalid("ids", e))
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        pb::User {
            id: user.id,
            email: user.email,
            username: user.username,
            avatar: user.avatar,
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            last_login: user.last_login.map(timestamp),
            date_joined: Some(timestamp(user.date_joined)),
        }
    }
}

impl From<ServiceAccount> for pb::ServiceAccount {
    fn from(account: ServiceAccount) -> Self {
        pb::ServiceAccount {
            id: account.id,
            name: account.name.as_str().to_owned(),
            scopes: account
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            is_active: account.is_active,
            created_at: Some(timestamp(account.created_at)),
            last_used_at: account.last_used_at.map(timestamp),
            secrets: account
                .secrets
                .into_iter()
                .map(|s| pb::ServiceAccountSecret {
                    secret_id: s.secret_id.as_str().to_owned(),
                    created_at: Some(timestamp(s.created_at)),
                })
                .collect(),
            keys: account
                .keys
                .into_iter()
                .map(|k| pb::ServiceAccountKey {
                    kid: k.kid.as_str().to_owned(),
                    algorithm: k.algorithm.as_str().to_owned(),
                    created_at: Some(timestamp(k.created_at)),
                })
                .collect(),
        }
    }
}

impl From<ServiceAccountPage> for pb::ListServiceAccountsResponse {
    fn from(page: ServiceAccountPage) -> Self {
        pb::ListServiceAccountsResponse {
            service_accounts: page.service_accounts.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }
    }
}

impl From<IssuedSecret> for pb::AddServiceAccountSecretResponse {
    fn from(issued: IssuedSecret) -> Self {
        pb::AddServiceAccountSecretResponse {
            secret_id: issued.secret_id.as_str().to_owned(),
            secret: issued.secret,
        }
    }
}

impl From<IssuedResetToken> for pb::PasswordResetToken {
    fn from(issued: IssuedResetToken) -> Self {
        pb::PasswordResetToken {
            token: issued.token,
            expires_at: Some(timestamp(issued.expires_at)),
        }
    }
}

impl From<TokenPair> for pb::TokenPair {
    fn from(pair: TokenPair) -> Self {
        pb::TokenPair {
            access: pair.access,
            // Without rotation, no new refresh token: empty, as proto3 says "unset".
            refresh: pair.refresh.unwrap_or_default(),
        }
    }
}

impl From<VerifiedToken> for pb::VerifyTokenResponse {
    fn from(token: VerifiedToken) -> Self {
        let expiry = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        match token {
            VerifiedToken::User {
                token_type,
                user_id,
                expires_at,
            } => pb::VerifyTokenResponse {
                token_type: token_type.as_str().to_owned(),
                user_id,
                expires_at: expiry(expires_at),
                client_id: String::new(),
                scopes: Vec::new(),
            },
            VerifiedToken::Service {
                client_id,
                scopes,
                expires_at,
            } => pb::VerifyTokenResponse {
                token_type: SERVICE_TOKEN_TYPE.to_owned(),
                user_id: 0,
                expires_at: expiry(expires_at),
                client_id,
                scopes,
            },
        }
    }
}

impl From<Page> for pb::ListUsersResponse {
    fn from(page: Page) -> Self {
        pb::ListUsersResponse {
            users: page.users.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }
    }
}

impl From<UserBatch> for pb::BatchGetUsersResponse {
    fn from(batch: UserBatch) -> Self {
        pb::BatchGetUsersResponse {
            users: batch.users.into_iter().map(Into::into).collect(),
            missing_ids: batch.missing_ids,
        }
    }
}

impl From<JwkSet> for pb::Jwks {
    fn from(set: JwkSet) -> Self {
        pb::Jwks {
            keys: set.keys.iter().map(jwk).collect(),
        }
    }
}

/// The members of `key` that apply to its type; the rest stay empty.
fn jwk(key: &Jwk) -> pb::Jwk {
    let common = &key.common;
    let mut out = pb::Jwk {
        kid: common.key_id.clone().unwrap_or_default(),
        alg: common
            .key_algorithm
            .map(|alg| alg.to_string())
            .unwrap_or_default(),
        r#use: match &common.public_key_use {
            Some(PublicKeyUse::Signature) => "sig".to_owned(),
            Some(PublicKeyUse::Encryption) => "enc".to_owned(),
            Some(PublicKeyUse::Other(other)) => other.clone(),
            None => String::new(),
        },
        ..pb::Jwk::default()
    };
    match &key.algorithm {
        AlgorithmParameters::OctetKeyPair(p) => {
            out.kty = "OKP".to_owned();
            out.crv = curve(&p.curve);
            out.x.clone_from(&p.x);
        }
        AlgorithmParameters::EllipticCurve(p) => {
            out.kty = "EC".to_owned();
            out.crv = curve(&p.curve);
            out.x.clone_from(&p.x);
            out.y.clone_from(&p.y);
        }
        AlgorithmParameters::RSA(p) => {
            out.kty = "RSA".to_owned();
            out.n.clone_from(&p.n);
            out.e.clone_from(&p.e);
        }
        // A shared secret (never published) or a key type we do not make.
        _ => {}
    }
    out
}

/// The curve's JWK name ("P-256", "Ed25519"), as the library serialises it.
fn curve(curve: &EllipticCurve) -> String {
    serde_json::to_value(curve)
        .ok()
        .and_then(|name| name.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn timestamp(t: NaiveDateTime) -> prost_types::Timestamp {
    let t = t.and_utc();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
