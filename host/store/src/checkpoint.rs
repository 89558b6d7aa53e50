//! SQLite: the write-ahead log's checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints inside a commit: the connection whose
//! commit takes the log past 1,000 pages copies them into the database file
//! and, with `synchronous=FULL`, flushes that file before its `COMMIT`
//! returns. Here that connection is the group-commit writer's, so every
//! few hundred milliseconds under load one batch carried a checkpoint (a
//! few MiB written and flushed) and every write queued behind it, new
//! orders waiting for their `201` among them, waited as long: the tail of
//! the accept latency.
//!
//! This thread checkpoints after the writer's commits, at most every
//! [`PACE`]; the writer's connection checkpoints itself only past a longer
//! log ([`BACKSTOP_PAGES`]), by then mostly copied already. A `PASSIVE`
//! checkpoint waits for no reader or writer: the writer goes on appending
//! to the log meanwhile, and once a checkpoint has copied all of it, the
//! writer's next transaction starts the log from its beginning again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The write connection's own checkpoint threshold, in pages: twice
/// SQLite's default. Only the writer can start the log from its beginning
/// again, and only once a checkpoint has copied all of it; one running
/// beside a writer that keeps committing rarely catches up (the log grew
/// to 40 MiB with this at 10,000 pages, against 5-8 MiB before). So the
/// writer still checkpoints past this length, but this thread has copied
/// and flushed most of the log by then and the writer's share is the last
/// few pages: a short stall where there was a long one. Not 0: with this
/// thread alone the log was never started over and grew to 2.4 GB in 20
/// seconds at 1,000 orders/s (README, the twelfth session).
pub(crate) const BACKSTOP_PAGES: u32 = 2_000;
/// The least time between two checkpoints: each one flushes the database
/// file, so one per commit would cost a flush per batch again.
const PACE: Duration = Duration::from_millis(100);

static RUNS: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static LOG_PAGES: AtomicU64 = AtomicU64::new(0);

/// Checkpoints run by the checkpoint threads of this process, the ones
/// that failed, and the log's length in pages at the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointCounts {
    pub runs: u64,
    pub failures: u64,
    pub log_pages: u64,
}

pub fn checkpoint_counts() -> CheckpointCounts {
    CheckpointCounts {
        runs: RUNS.load(Ordering::Relaxed),
        failures: FAILURES.load(Ordering::Relaxed),
        log_pages: LOG_PAGES.load(Ordering::Relaxed),
    }
}

/// The sending side: told of each commit; the thread ends when it is dropped.
pub(crate) struct Checkpointer {
    wake: mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`. Should the thread not
    /// start, it is logged and the writer's backstop checkpoints alone.
    pub(crate) fn start(path: PathBuf) -> Self {
        // One pending wake-up is enough: commits while a checkpoint runs
        // are all covered by the next one.
        let (wake, woken) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("oms-sqlite-checkpoint".into())
            .spawn(move || run(&path, &woken));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the SQLite checkpoint thread could not start; the writer checkpoints itself");
        }
        Self { wake }
    }

    /// Something was committed: a checkpoint is due.
    pub(crate) fn committed(&self) {
        // Full: a wake-up is pending already. Disconnected: the thread is
        // gone (logged when it went); the backstop checkpoints.
        let _ = self.wake.try_send(());
    }
}

fn run(path: &std::path::Path, woken: &mpsc::Receiver<()>) {
    let mut conn = None;
    while woken.recv().is_ok() {
        if conn.is_none() {
            conn = open(path)
                .inspect_err(|e| {
                    FAILURES.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "the SQLite checkpoint thread could not open the database");
                })
                .ok();
        }
        if let Some(c) = &conn {
            match checkpoint(c) {
                Ok(log) => {
                    LOG_PAGES.store(log, Ordering::Relaxed);
                    RUNS.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    FAILURES.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "a SQLite checkpoint failed; the next commit tries again");
                    // Opened afresh next time, in case the connection is the trouble.
                    conn = None;
                }
            }
        }
        std::thread::sleep(PACE);
    }
}

fn open(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = crate::direct::open(path)?;
    // As the store's connections: a checkpoint flushes what it copies.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// One `PASSIVE` checkpoint: the log's length in pages when it ran.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let (_busy, log): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(log.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A checkpoint thread that cannot open its database counts and logs
    /// each failed try, and tries again at the next commit.
    #[test]
    fn a_database_that_cannot_be_opened_counts_as_a_failure() {
        let path = std::env::temp_dir()
            .join(format!("oms-no-such-dir-{}", std::process::id()))
            .join("oms.db");
        let before = checkpoint_counts().failures;
        let checkpoints = Checkpointer::start(path);
        let deadline = Instant::now() + Duration::from_secs(60);
        for wanted in [before + 1, before + 2] {
            checkpoints.committed();
            while checkpoint_counts().failures < wanted {
                assert!(Instant::now() < deadline, "no failure was counted");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
