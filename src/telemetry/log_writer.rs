//! Where log records go: appended to a buffer in memory (a short lock and a
//! copy, no allocation and no system call), which a thread of its own
//! writes to stderr every few milliseconds in one write.
//!
//! Not `tracing-appender`'s non-blocking writer: its worker sleeps on the
//! channel when the queue is empty, so at a few thousand calls a second
//! nearly every record wakes it, a system call and a context switch per
//! record on the calling thread (see "Logs" in BENCHMARKS.md).

use std::{
    io::{self, Write},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How often the buffer is written out: the longest a record waits.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Past this much unwritten, ordinary records are dropped (and counted)
/// rather than held: stderr is not keeping up.
const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;
/// Audit records go on being held past that, up to this much: only a
/// stderr that has stopped for good loses them (counted too), rather than
/// the memory they would take or the calls a blocking write would stall.
const MAX_BUFFERED_AUDIT_BYTES: usize = 64 * 1024 * 1024;
/// The target whose records are never dropped.
const AUDIT_TARGET: &str = "audit";

struct Shared {
    buffer: Mutex<Vec<u8>>,
    stopping: Mutex<bool>,
    stop: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves whole records or none: go on.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`MakeWriter`] for the log: each record is one `write` into the
/// buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes out what is buffered and stops the writer thread when dropped.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// The writer, and the guard whose drop writes out the rest.
    ///
    /// # Errors
    /// The writer thread could not be started.
    pub fn to_stderr() -> io::Result<(LogWriter, LogWriterGuard)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
            stopping: Mutex::new(false),
            stop: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_out_until_stopped(&shared, &mut io::stderr())
            })?;
        Ok((
            LogWriter {
                shared: Arc::clone(&shared),
            },
            LogWriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Ordinary records dropped so far because stderr did not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_out_until_stopped(shared: &Shared, out: &mut impl Write) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = {
            let stopping = shared
                .stopping
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (stopping, _) = shared
                .stop
                .wait_timeout_while(stopping, FLUSH_EVERY, |stopping| !*stopping)
                .unwrap_or_else(PoisonError::into_inner);
            *stopping
        };
        std::mem::swap(&mut *shared.buffer(), &mut spare);
        if !spare.is_empty() {
            if out.write_all(&spare).and_then(|()| out.flush()).is_err() {
                let lost = spare.iter().filter(|&&byte| byte == b'\n').count();
                shared.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            }
            spare.clear();
        }
        if stopping {
            return;
        }
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One record's writer: whole records are appended, or (ordinary ones,
/// when too much is waiting) dropped whole.
pub struct RecordWriter<'a> {
    shared: &'a Shared,
    audit: bool,
}

impl Write for RecordWriter<'_> {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        let limit = if self.audit {
            MAX_BUFFERED_AUDIT_BYTES
        } else {
            MAX_BUFFERED_BYTES
        };
        let mut buffer = self.shared.buffer();
        if buffer.len() + record.len() > limit {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(record);
        }
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = RecordWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RecordWriter {
            shared: &self.shared,
            audit: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RecordWriter {
            shared: &self.shared,
            audit: meta.target() == AUDIT_TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            buffer: Mutex::new(Vec::new()),
            stopping: Mutex::new(true),
            stop: Condvar::new(),
            dropped: AtomicU64::new(0),
        }
    }

    #[test]
    fn past_the_limit_ordinary_records_are_dropped_and_counted_audit_ones_kept() {
        let shared = shared();
        let record = vec![b'x'; MAX_BUFFERED_BYTES / 2];
        let mut ordinary = RecordWriter {
            shared: &shared,
            audit: false,
        };
        let mut audit = RecordWriter {
            shared: &shared,
            audit: true,
        };
        ordinary.write_all(&record).unwrap();
        ordinary.write_all(&record).unwrap();
        ordinary.write_all(b"one too many\n").unwrap();
        audit.write_all(b"audit\n").unwrap();
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
        let buffered = shared.buffer().clone();
        assert_eq!(buffered.len(), MAX_BUFFERED_BYTES + 6);
        assert!(buffered.ends_with(b"audit\n"));

        // Stopping writes out everything held, once.
        let mut out = Vec::new();
        write_out_until_stopped(&shared, &mut out);
        assert_eq!(out, buffered);
        assert!(shared.buffer().is_empty());
    }

    #[test]
    fn audit_records_are_held_longer_but_not_without_limit() {
        let shared = shared();
        let mut audit = RecordWriter {
            shared: &shared,
            audit: true,
        };
        let record = vec![b'a'; MAX_BUFFERED_AUDIT_BYTES / 4];
        for _ in 0..4 {
            audit.write_all(&record).unwrap();
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 0);
        audit.write_all(b"one too many\n").unwrap();
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(shared.buffer().len(), MAX_BUFFERED_AUDIT_BYTES);
    }

    #[test]
    fn a_failed_write_counts_its_records_as_dropped() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let shared = shared();
        shared.buffer().extend_from_slice(b"a\nb\nc\n");
        write_out_until_stopped(&shared, &mut Broken);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 3);
    }
}
