//! The login and register ceiling: how many argon2id verifies per second
//! this machine can do, measured here, just before a `login` or `register`
//! run, with the service's default parameters. Every login costs one
//! verify and every register one hash, the same argon2 work (a hash adds
//! only a salt), so `cores ÷ one verify's time` bounds their throughput
//! whatever the service does around it.

use std::{
    sync::Barrier,
    time::{Duration, Instant},
};

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
            // Then every core at once, as the service's permits run them:
            // timed from when all have warmed up (allocating and touching
            // 19 MiB each is not a verify) to when the last one is done.
            let ready = Barrier::new(cores);
            let (began, ended) = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..cores)
                    .map(|_| scope.spawn(|| verifies_from(&argon2, SAMPLES, Some(&ready))))
                    .collect();
                let (mut began, mut ended) = (None::<Instant>, None::<Instant>);
                for worker in workers {
                    let (start, times) = worker
                        .join()
                        .map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))??;
                    let end = start + times.iter().sum::<Duration>();
                    began = Some(began.map_or(start, |b| b.min(start)));
                    ended = Some(ended.map_or(end, |e| e.max(end)));
                }
                anyhow::Ok((began, ended))
            })?;
            let wall = match (began, ended) {
                (Some(began), Some(ended)) => ended - began,
                _ => anyhow::bail!("no argon2 thread ran"),
            };
            Ok(Self {
                cores,
                verify: times[SAMPLES / 2],
                all_cores_per_second: (cores * SAMPLES) as f64 / wall.as_secs_f64(),
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
    Ok(verifies_from(argon2, n, None)?.1)
}

/// [`verifies`], waiting at `ready` after the warm-up; also returns when
/// the first timed verify started.
fn verifies_from(
    argon2: &Argon2<'static>,
    n: usize,
    ready: Option<&Barrier>,
) -> anyhow::Result<(Instant, Vec<Duration>)> {
    let mut memory = vec![Block::new(); argon2.params().block_count()];
    let (password, salt) = (b"auth-bench argon2 bound", [7u8; 16]);
    let mut out = [0u8; 32];
    let mut verify = || {
        argon2
            .hash_password_into_with_memory(password, &salt, &mut out, &mut memory)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    };
    // Warms the memory area; the others wait at `ready` even if it failed.
    let warmed = verify();
    if let Some(ready) = ready {
        ready.wait();
    }
    warmed?;
    let start = Instant::now();
    let mut times = Vec::with_capacity(n);
    let mut began = start;
    for _ in 0..n {
        verify()?;
        let now = Instant::now();
        times.push(now - began);
        began = now;
    }
    Ok((start, times))
}
