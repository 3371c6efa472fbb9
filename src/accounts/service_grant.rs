//! The client-credentials grant (issue 15): a service account obtains a
//! service token with a client secret (RFC 6749 §4.4) or with a JWT signed
//! by one of its registered keys (RFC 7523).
//!
//! Every refusal of the credential answers the same `invalid_client`, so
//! nothing tells an unknown account from a wrong secret; the audit log
//! says which it was. Failures are throttled per client id with the login
//! counters, under keys of their own ([`login_throttle::client_key`]).
//! Only failures: the credential is checked first and a right one always
//! gets its token, because client ids are not secret (every service token
//! carries one) and a throttle read before the check would let anybody
//! lock a service out with a few bad requests in its name. Guessing a
//! 256-bit secret or forging a signature needs no throttle; what it stops
//! is a client hammering with a bad credential (it is told to back off and
//! its failures stop being written). A grant hashes nothing slow and, apart
//! from `last_used_at` (once a minute) and an assertion's `jti`, reads and
//! writes nothing but cached credentials.

use std::fmt;

use super::{Accounts, login_throttle};
use crate::{
    domain::{CredentialId, Scopes, ServiceAccountCredentials, ServiceAccountName},
    error::{AuthFailure, Error},
    persistence::{StoreError, db_now},
    telemetry::{
        audit,
        metrics::{GrantCredential, GrantOutcome},
    },
    tokens::{AssertionError, KeyLookup, RegisteredKey, assertion, unix_now},
};

/// What the client authenticates with. Never shown by `Debug`.
pub enum ClientCredential {
    Secret(String),
    /// An RFC 7523 client assertion (a JWT).
    Assertion(String),
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "Secret([redacted])",
            Self::Assertion(_) => "Assertion([redacted])",
        })
    }
}

impl ClientCredential {
    fn kind(&self) -> GrantCredential {
        match self {
            Self::Secret(_) => GrantCredential::Secret,
            Self::Assertion(_) => GrantCredential::Assertion,
        }
    }
}

/// A request for a service token.
#[derive(Debug)]
pub struct ServiceGrant {
    /// Required with a secret; with an assertion, `None` means the client
    /// its `iss` names.
    pub client_id: Option<ServiceAccountName>,
    pub credential: ClientCredential,
    /// Empty: every scope the account may have.
    pub scopes: Scopes,
}

/// A service token just granted. `Debug` never shows the token.
pub struct ServiceToken {
    pub access: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Sorted.
    pub scopes: Vec<String>,
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("access", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Why a credential was refused, for the audit log and the metrics only.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    UnknownClient,
    WrongSecret,
    /// The assertion names another client than the request's `client_id`.
    WrongClient,
    BadAssertion(AssertionError),
    Inactive,
    Replayed,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::WrongSecret => "wrong_secret",
            Self::WrongClient => "wrong_client",
            Self::BadAssertion(_) => "bad_assertion",
            Self::Inactive => "inactive_client",
            Self::Replayed => "replayed_assertion",
        }
    }

    fn outcome(self) -> GrantOutcome {
        match self {
            Self::Inactive => GrantOutcome::Inactive,
            Self::Replayed => GrantOutcome::Replayed,
            _ => GrantOutcome::BadCredentials,
        }
    }
}

/// A refusal or a failure of the lookup itself.
enum Failed {
    Refused(Refusal),
    Error(Error),
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Self::Error(e.into())
    }
}

/// The account a credential authenticated, and the id of that credential
/// (the token's `cid`).
struct Authenticated {
    account: ServiceAccountCredentials,
    cid: CredentialId,
}

impl Accounts {
    /// The client-credentials grant: a service token for the account the
    /// credential authenticates, with the scopes asked for (all it may
    /// have if none).
    ///
    /// # Errors
    /// `InvalidClient` for every refused credential; `Overloaded` instead
    /// once the client has failed too often; INVALID_ARGUMENT on `scopes` for a
    /// scope the account may not have (said only to an authenticated
    /// client); the database's.
    pub async fn obtain_service_token(&self, grant: ServiceGrant) -> Result<ServiceToken, Error> {
        let kind = grant.credential.kind();
        let credential = credential_name(kind);
        // Whose failures count: the client named, before anything is checked.
        let client = match (&grant.client_id, &grant.credential) {
            (Some(name), _) => name.clone(),
            (None, ClientCredential::Assertion(text)) => {
                match assertion::claimed_client(text)
                    .and_then(|iss| ServiceAccountName::parse(&iss).ok())
                {
                    Some(name) => name,
                    // No client to count against, and nothing looked up.
                    None => {
                        self.metrics
                            .service_grant(kind, GrantOutcome::BadCredentials);
                        grant_failed(None, credential, "bad_assertion", Some("no client id"));
                        return Err(AuthFailure::InvalidClient.into());
                    }
                }
            }
            (None, ClientCredential::Secret(_)) => {
                return Err(Error::invalid("client_id", crate::domain::BLANK));
            }
        };
        let fail = |outcome: GrantOutcome, error: Error, reason: &str| {
            self.metrics.service_grant(kind, outcome);
            grant_failed(Some(&client), credential, reason, None);
            error
        };

        let authenticated = match &grant.credential {
            ClientCredential::Secret(secret) => self.by_secret(&client, secret).await,
            ClientCredential::Assertion(text) => self.by_assertion(&client, text).await,
        };
        let Authenticated { account, cid } = match authenticated {
            Ok(authenticated) => authenticated,
            Err(Failed::Error(e)) => return Err(fail(GrantOutcome::Error, e, "error")),
            Err(Failed::Refused(refusal)) => {
                let key = login_throttle::client_key(client.as_str());
                self.throttle
                    .refuse_if_exhausted(&key)
                    .await
                    .map_err(|e| match e {
                        Error::Overloaded { .. } => fail(GrantOutcome::Throttled, e, "throttled"),
                        e => fail(GrantOutcome::Error, e, "error"),
                    })?;
                self.metrics.service_grant(kind, refusal.outcome());
                let detail = match refusal {
                    Refusal::BadAssertion(e) => Some(e.to_string()),
                    _ => None,
                };
                grant_failed(
                    Some(&client),
                    credential,
                    refusal.reason(),
                    detail.as_deref(),
                );
                self.throttle
                    .count_failure(&key)
                    .await
                    .map_err(|e| fail(GrantOutcome::Error, e, "error"))?;
                return Err(AuthFailure::InvalidClient.into());
            }
        };

        // Only now, to a client that proved who it is: which scopes it may have.
        let scopes = if grant.scopes.is_empty() {
            account.scopes.clone()
        } else if grant.scopes.is_subset(&account.scopes) {
            grant.scopes
        } else {
            let refused: Vec<String> = grant
                .scopes
                .iter()
                .filter(|scope| !account.scopes.contains(scope.as_str()))
                .map(|scope| format!("Scope {:?} is not allowed for this client.", scope.as_str()))
                .collect();
            self.metrics.service_grant(kind, GrantOutcome::BadScope);
            grant_failed(Some(&client), credential, "scope_not_allowed", None);
            return Err(Error::invalid_fields([("scopes", refused)]));
        };
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let issued = self
            .tokens
            .issue_service(client.as_str(), &names, cid.as_str(), unix_now())
            .map_err(|e| fail(GrantOutcome::Error, Error::Internal(e), "error"))?;
        // Bookkeeping only: a failed write must not cost the service its token.
        if let Err(e) = self.service_accounts.record_use(account.id, db_now()).await {
            tracing::warn!(error = %e, service_account_id = account.id, "could not record a service account's last use");
        }
        audit!(
            INFO,
            "service_token",
            "success",
            None::<i64>,
            "self",
            service_account_id = account.id,
            client_id = %client,
            credential,
            cid = %cid,
            scopes = %scopes.to_space_separated(),
            jti = %issued.claims.jti,
            "service token granted"
        );
        self.metrics.service_grant(kind, GrantOutcome::Ok);
        Ok(ServiceToken {
            access: issued.token,
            expires_at: issued.claims.exp,
            scopes: issued.claims.scopes,
        })
    }

    /// The account `client` if `secret` is one of its secrets and it is active.
    async fn by_secret(
        &self,
        client: &ServiceAccountName,
        secret: &str,
    ) -> Result<Authenticated, Failed> {
        let account = self
            .service_accounts
            .credentials_by_name(client)
            .await?
            .ok_or(Failed::Refused(Refusal::UnknownClient))?;
        let cid = account
            .secret_matching(secret)
            .cloned()
            .ok_or(Failed::Refused(Refusal::WrongSecret))?;
        // After the secret, as logins: only the right secret learns this.
        if !account.is_active {
            return Err(Failed::Refused(Refusal::Inactive));
        }
        Ok(Authenticated { account, cid })
    }

    /// The account `client` if `text` is an assertion it signed with one of
    /// its keys, unused until now, and it is active. Uses up the `jti`.
    async fn by_assertion(
        &self,
        client: &ServiceAccountName,
        text: &str,
    ) -> Result<Authenticated, Failed> {
        let refused = |e| Failed::Refused(Refusal::BadAssertion(e));
        let account = match assertion::key_lookup(text).map_err(refused)? {
            // The key's account, whatever the assertion claims: checked below.
            KeyLookup::Kid(kid) => match CredentialId::parse(&kid) {
                Ok(kid) => self.service_accounts.credentials_by_cid(&kid).await?,
                Err(_) => return Err(refused(AssertionError::UnknownKey)),
            },
            KeyLookup::ClientId(iss) => match ServiceAccountName::parse(&iss) {
                Ok(name) => self.service_accounts.credentials_by_name(&name).await?,
                Err(_) => return Err(refused(AssertionError::WrongClient)),
            },
        };
        let account = account.ok_or(Failed::Refused(Refusal::UnknownClient))?;
        if account.name != *client {
            return Err(Failed::Refused(Refusal::WrongClient));
        }
        let keys: Vec<RegisteredKey> = account
            .keys
            .iter()
            .map(|key| RegisteredKey {
                client_id: account.name.as_str().to_owned(),
                kid: key.kid.as_str().to_owned(),
                algorithm: key.algorithm.as_str().to_owned(),
                public_key_pem: key.public_key_pem.clone(),
            })
            .collect();
        let verified = self
            .tokens
            .verify_assertion(text, &keys, unix_now())
            .map_err(refused)?;
        if !account.is_active {
            return Err(Failed::Refused(Refusal::Inactive));
        }
        let cid = account
            .key(&verified.kid)
            .map(|key| key.kid.clone())
            .ok_or_else(|| Failed::Error(Error::internal("a verifying key vanished")))?;
        // Remembered as long as the assertion could be accepted.
        let until = self.tokens.assertion_usable_until(verified.exp);
        let until = chrono::DateTime::from_timestamp(until, 0)
            .map(|t| t.naive_utc())
            .ok_or_else(|| Failed::Error(Error::internal("assertion expiry out of range")))?;
        let first_use = self
            .assertion_ids
            .use_once(client, &verified.jti, until, db_now())
            .await?;
        if !first_use {
            return Err(Failed::Refused(Refusal::Replayed));
        }
        Ok(Authenticated { account, cid })
    }
}

fn credential_name(kind: GrantCredential) -> &'static str {
    match kind {
        GrantCredential::Secret => "secret",
        GrantCredential::Assertion => "assertion",
    }
}

/// The audit record of a refused grant: the client id as given (never the
/// secret or the assertion), the kind of credential, and why.
fn grant_failed(
    client: Option<&ServiceAccountName>,
    credential: &str,
    reason: &str,
    detail: Option<&str>,
) {
    audit!(
        INFO,
        "service_token",
        "failure",
        None::<i64>,
        "self",
        client_id = client.map(tracing::field::display),
        credential,
        reason,
        detail,
        "service token refused"
    );
}
