//! The login ceiling: how many argon2id verifies per second this machine can
//! do, measured here, just before a `login` run, with the service's default
//! parameters. Every login costs one verify, so `cores ÷ one verify's time`
//! bounds login throughput whatever the service does around it.

use std::time::{Duration, Instant};

use argon2::{Argon2, Block};
use auth_service::config::Argon2Settings;

/// Verifies timed; the median is used.
const SAMPLES: usize = 9;

pub struct Argon2Bound {
    pub cores: usize,
    /// Median wall time of one verify on one core.
    pub verify: Duration,
    /// Verifies a second with every core verifying at once (less than
    /// `cores ÷ verify` where cores share caches or memory bandwidth).
    pub all_cores_per_second: f64,
}

impl Argon2Bound {
    /// Times `SAMPLES` verifies, one after another on this thread (a
    /// blocking task, so the async workers keep serving).
    pub async fn measure() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| {
            let argon2 = auth_service::passwords::argon2id(&Argon2Settings::default())?;
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let mut times = verifies(&argon2, SAMPLES)?;
            times.sort();
            // Then every core at once, as the service's permits run them.
            let began = Instant::now();
            let done = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..cores)
                    .map(|_| scope.spawn(|| verifies(&argon2, SAMPLES)))
                    .collect();
                let mut done = 0;
                for worker in workers {
                    let times = worker
                        .join()
                        .map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))??;
                    done += times.len();
                }
                anyhow::Ok(done)
            })?;
            Ok(Self {
                cores,
                verify: times[SAMPLES / 2],
                all_cores_per_second: done as f64 / began.elapsed().as_secs_f64(),
            })
        })
        .await?
    }

    /// Logins per second the hashing alone allows.
    pub fn per_second(&self) -> f64 {
        self.cores as f64 / self.verify.as_secs_f64()
    }
}

/// Times `n` verifies, one after another, into one reused memory area (as
/// the service hashes: a fresh 19 MiB allocation each would add page faults).
fn verifies(argon2: &Argon2<'static>, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut memory = vec![Block::new(); argon2.params().block_count()];
    let (password, salt) = (b"auth-bench argon2 bound", [7u8; 16]);
    let mut out = [0u8; 32];
    let mut verify = || {
        argon2
            .hash_password_into_with_memory(password, &salt, &mut out, &mut memory)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    };
    verify()?; // warms the memory area
    (0..n)
        .map(|_| {
            let began = Instant::now();
            verify()?;
            Ok(began.elapsed())
        })
        .collect()
}
