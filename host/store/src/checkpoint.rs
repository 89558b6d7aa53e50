//! SQLite: WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints in whichever connection commits past 1,000
//! WAL pages: here the group-commit writer, which then copies those pages
//! into the database file and flushes it (`synchronous=FULL`) before it
//! takes its next batch, while every write queued meanwhile (new orders
//! among them) waits. Instead this thread runs a PASSIVE checkpoint every
//! [`EVERY`]: it copies what is committed without taking the writer's lock
//! or waiting for readers, so batches keep committing while it works.
//!
//! The writer still checkpoints itself once the WAL passes
//! [`WRITER_CHECKPOINT_PAGES`] (its connection's `wal_autocheckpoint`): the
//! explicit fall-back if this thread fails or falls behind. Most of those
//! pages are copied already by then, so that checkpoint is short, and it
//! lets SQLite start the WAL from its beginning again (which it only does
//! once every frame is copied, rare under constant writes).

use crate::{Result, StoreError, counted};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// How often the checkpointer copies the WAL back.
const EVERY: Duration = Duration::from_millis(100);
/// The writer's own `wal_autocheckpoint` (pages of 4 KiB: 64 MiB).
pub(crate) const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The running checkpointer; it stops when this is dropped (within [`EVERY`]).
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the SQLite database at `path` (in WAL mode).
    pub(crate) fn start(path: PathBuf) -> Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(crate::direct::failed)?;
        // The database file is flushed after each checkpoint, as the
        // writer's own checkpoints did.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(crate::direct::failed)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("oms-sqlite-ckpt".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    checkpoint(&conn);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the WAL checkpointer: {e}")))?;
        Ok(Self { _stop: stop })
    }
}

/// One PASSIVE checkpoint: copies every committed frame no reader still
/// needs; a failure is logged and counted, and left to the next one (or,
/// past [`WRITER_CHECKPOINT_PAGES`], to the writer).
fn checkpoint(conn: &rusqlite::Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match done {
        Ok((log, copied)) => counted::checkpoint(log, copied),
        Err(e) => {
            counted::checkpoint_failed();
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints past {WRITER_CHECKPOINT_PAGES} pages");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use std::time::Instant;

    /// Rows committed through the store's write connection reach the
    /// database file itself (read without its WAL), though the writer's own
    /// checkpoint is thousands of pages away: the checkpointer copied them.
    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = std::env::temp_dir().join(format!(
            "oms-ckpt-{}-{}",
            std::process::id(),
            oms_clock::now_ms()
        ));
        let store = crate::SqlStore::open_embedded(&dir)
            .await
            .expect("the store opens");
        let Backend::Sqlite { write, .. } = &store.backend else {
            unreachable!("an embedded store is SQLite")
        };
        sqlx::query("CREATE TABLE ckpt_probe (n BIGINT NOT NULL)")
            .execute(write)
            .await
            .expect("the probe table");
        for n in 0..200_i64 {
            sqlx::query("INSERT INTO ckpt_probe (n) VALUES ($1)")
                .bind(n)
                .execute(write)
                .await
                .expect("a probe row");
        }
        let writer_checkpoints_at: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(write)
            .await
            .expect("the writer's wal_autocheckpoint");
        assert_eq!(writer_checkpoints_at, i64::from(WRITER_CHECKPOINT_PAGES));
        // The database file alone, as if the WAL were gone.
        let file = format!("file:{}?immutable=1", dir.join("oms.db").display());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let conn = rusqlite::Connection::open_with_flags(
                &file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
            .expect("the database file opens");
            let rows: rusqlite::Result<i64> =
                conn.query_row("SELECT COUNT(*) FROM ckpt_probe", [], |r| r.get(0));
            if rows.as_ref().is_ok_and(|n| *n == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the database file never got the committed rows: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(crate::db_counts().wal_checkpoints > 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
