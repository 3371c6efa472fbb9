//! The login ceiling: how many argon2id verifies per second this machine can
//! do, measured here, just before a `login` run, with the service's default
//! parameters. Every login costs one verify, so `cores ÷ one verify's time`
//! bounds login throughput whatever the service does around it.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use auth_service::config::Argon2Settings;

/// Verifies timed; the median is used.
const SAMPLES: usize = 9;

pub struct Argon2Bound {
    pub cores: usize,
    /// Median wall time of one verify on one core.
    pub verify: Duration,
}

impl Argon2Bound {
    /// Times `SAMPLES` verifies, one after another on this thread (a
    /// blocking task, so the async workers keep serving).
    pub async fn measure() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| {
            let settings = Argon2Settings::default();
            let params = Params::new(
                settings.memory_kib,
                settings.iterations,
                settings.parallelism,
                None,
            )
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let password = b"auth-bench argon2 bound";
            let stored = argon2
                .hash_password(password)
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
                .to_string();
            let stored = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
            let mut times = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let began = Instant::now();
                argon2
                    .verify_password(password, &stored)
                    .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                times.push(began.elapsed());
            }
            times.sort();
            Ok(Self {
                cores: std::thread::available_parallelism().map_or(1, usize::from),
                verify: times[SAMPLES / 2],
            })
        })
        .await?
    }

    /// Logins per second the hashing alone allows.
    pub fn per_second(&self) -> f64 {
        self.cores as f64 / self.verify.as_secs_f64()
    }
}
