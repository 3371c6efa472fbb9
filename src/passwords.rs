//! argon2id password hashing, off the async workers.
//!
//! A hash costs ~20 ms of CPU and `memory_kib` of RAM (19 MiB at the OWASP
//! defaults). Running it on a tokio worker would stall every other call on
//! that thread, and running an unbounded number at once would let a login
//! flood exhaust memory. So every hash runs on the blocking pool behind a
//! semaphore with one permit per allowed concurrent hash.

use std::{fmt, sync::Arc};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::{config::Argon2Settings, domain::Password, error::Error};

#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the username is unknown, so that answer takes
    /// as long as a wrong password (no user enumeration by timing).
    dummy_hash: String,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.inner.argon2.params())
            .field("available_permits", &self.inner.permits.available_permits())
            .finish()
    }
}

impl Hasher {
    /// # Errors
    /// Argon2 parameters out of range.
    pub async fn new(settings: Argon2Settings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let permits = settings
            .max_concurrent
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, usize::from);

        let hasher = argon2.clone();
        let dummy_hash = tokio::task::spawn_blocking(move || {
            hasher
                .hash_password(b"dummy password to equalise login timing")
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;

        Ok(Self {
            inner: Arc::new(Inner {
                argon2,
                permits: Arc::new(Semaphore::new(permits)),
                dummy_hash,
            }),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`.
    ///
    /// # Errors
    /// Internal only: argon2 does not fail for valid parameters.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        let password = password.expose().to_owned();
        self.run(move |argon2| {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(anyhow::anyhow!("argon2 hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown user)
    /// the dummy hash is verified instead, and the answer is `false`.
    ///
    /// # Errors
    /// Internal only, if the blocking pool has gone away.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, Error> {
        let password = password.to_owned();
        let inner = Arc::clone(&self.inner);
        self.run(move |argon2| {
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(|| inner.dummy_hash.clone());
            let matches = match PasswordHash::new(&stored) {
                Ok(parsed) => argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
                // A hash we cannot read (another hasher, a disabled account):
                // spend the same time anyway, then refuse.
                Err(_) => {
                    let _ = argon2.verify_password(password.as_bytes(), inner.dummy_hash.as_str());
                    false
                }
            };
            known && matches
        })
        .await
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit
    /// moves into the blocking task, so a caller that gives up (deadline,
    /// cancelled call) still cannot push concurrency past the limit.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("password hasher closed")))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&inner.argon2)
        })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("password hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: None,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_use_argon2id_phc_format() {
        let hasher = Hasher::new(cheap()).await.unwrap_or_else(|e| panic!("{e}"));
        let password = Password::parse("correct horse".into()).unwrap_or_else(|e| panic!("{e}"));
        let hash = hasher
            .hash(&password)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(matches!(
            hasher.verify("correct horse", Some(hash.clone())).await,
            Ok(true)
        ));
        assert!(matches!(
            hasher.verify("wrong horse", Some(hash)).await,
            Ok(false)
        ));
    }

    #[tokio::test]
    async fn unknown_users_and_unreadable_hashes_never_match() {
        let hasher = Hasher::new(cheap()).await.unwrap_or_else(|e| panic!("{e}"));
        let dummy = "dummy password to equalise login timing";
        assert!(matches!(hasher.verify(dummy, None).await, Ok(false)));
        assert!(matches!(
            hasher.verify(dummy, Some("!unusable".into())).await,
            Ok(false)
        ));
    }
}
