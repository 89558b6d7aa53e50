//! SQLite: the store's short reads on connections of its own, through
//! rusqlite on the calling thread. Through sqlx's read pool each read is a
//! message to the connection's worker thread and back, each row another,
//! plus a ping and a task when the connection goes back to the pool: for a
//! lookup of one row by its key, far more than SQLite's own work (the
//! worker threads were a fifth of the host's CPU in a profile, mostly the
//! scheduler switching them in and out).
//!
//! Only reads that are an index lookup of a few rows go here ([`on_reader!`]):
//! they hold the calling thread (a Tokio worker) for tens of microseconds.
//! Anything that may scan stays on sqlx's pool.
//!
//! PostgreSQL: the same reads on a few connections of the store's own
//! ([`PgReaders`]). sqlx's pool pings every connection given back to it (a
//! round trip, which wakes the server's backend): each of these reads cost
//! two round trips, and about a quarter of the server's CPU in a profile
//! was waking up for round trips.

use crate::{Result, StoreError, direct};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept: one per thread reading at once, roughly.
const KEEP: usize = 8;
/// Each connection's page cache, in KiB (SQLite's negative `cache_size`).
/// SQLite's default, 2 MiB, fills as the database grows: with eight kept
/// connections and more opened at busy moments, the host's memory grew
/// with the orders it had stored. A read here is a lookup by key, whose
/// inner pages stay cached and whose leaf comes from the system's file
/// cache (a `pread`) when it is not.
const READER_CACHE_KIB: i64 = -256;

pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection of the store's own: it writes nothing (`query_only`),
    /// and waits for the database's locks as sqlx's connections do.
    fn open(&self) -> Result<rusqlite::Connection> {
        let conn = direct::open(&self.path).map_err(direct::failed)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(direct::failed)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)
            .map_err(direct::failed)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `read` on an idle connection (a new one if none is).
    pub(crate) fn run<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T>,
    ) -> Result<T> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = read(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < KEEP
        {
            idle.push(conn);
        }
        out
    }
}

/// Runs `$body`, a short indexed read, with `$q` the query module and `$db`
/// what its statements run on: on SQLite one of the store's own read
/// connections on this thread ([`Readers`], `$q` = [`direct`]); on
/// PostgreSQL one of the store's own connections ([`PgReaders`], `$q` =
/// `sqlx`). The body is compiled once per
/// backend, so it may only use what both offer.
macro_rules! on_reader {
    ($store:expr, |$q:ident, $db:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { readers, .. } => readers.run(|$db| {
                use $crate::direct as $q;
                $crate::direct::run_ready(async { $body })?
            }),
            $crate::Backend::Postgres(pool) => {
                let mut reader = $store.pg_readers.take(pool).await?;
                let out = {
                    let $db = &mut reader.conn;
                    use sqlx as $q;
                    $body
                };
                // (A read that failed, or was dropped midway, drops its
                // connection instead: nothing half-read is left on it.)
                if out.is_ok() {
                    reader.give_back();
                }
                out
            }
        }
    };
}
pub(crate) use on_reader;

/// PostgreSQL connections for [`on_reader!`]: at most this many at once.
const PG_READERS: usize = 4;
/// A connection idle longer is pinged before use (as the pool's are): the
/// server may have restarted meanwhile.
const PG_IDLE_PING: Duration = Duration::from_secs(5);

/// PostgreSQL: a few connections of the store's own for its short reads,
/// opened on first use with the pool's options and kept while they work.
pub(crate) struct PgReaders {
    permits: tokio::sync::Semaphore,
    /// Each with when it was last given back.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
}

impl Default for PgReaders {
    fn default() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(PG_READERS),
            idle: Mutex::new(Vec::new()),
        }
    }
}

/// A connection taken from [`PgReaders`]: dropped, it is closed; given back,
/// kept for the next read.
pub(crate) struct PgReader<'a> {
    readers: &'a PgReaders,
    pub(crate) conn: PgConnection,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl PgReaders {
    /// A connection to read on: an idle one, or a new one with `pool`'s
    /// options, waiting while [`PG_READERS`] are in use.
    pub(crate) async fn take(&self, pool: &PgPool) -> Result<PgReader<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store's readers are closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match still_open(idle, "read").await {
            Some(conn) => conn,
            None => PgConnection::connect_with(&pool.connect_options()).await?,
        };
        Ok(PgReader {
            readers: self,
            conn,
            _permit: permit,
        })
    }
}

/// A kept connection (with when it was last used), if it is still open:
/// one idle [`PG_IDLE_PING`] or longer is pinged first, as the pool's are,
/// since the server may have restarted meanwhile. `what` names it in the
/// log when it was gone.
pub(crate) async fn still_open(
    kept: Option<(PgConnection, Instant)>,
    what: &str,
) -> Option<PgConnection> {
    match kept {
        Some((conn, since)) if since.elapsed() < PG_IDLE_PING => Some(conn),
        Some((mut conn, _)) => match conn.ping().await {
            Ok(()) => Some(conn),
            Err(e) => {
                tracing::debug!(error = %e, what, "an idle PostgreSQL connection was gone; opening another");
                None
            }
        },
        None => None,
    }
}

impl PgReader<'_> {
    /// Keeps the connection for the next read.
    pub(crate) fn give_back(self) {
        if let Ok(mut idle) = self.readers.idle.lock() {
            idle.push((self.conn, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader's page cache stays small however large the database grows
    /// (SQLite's default filled with it: the host's memory followed).
    #[test]
    fn a_reader_keeps_a_small_page_cache() {
        let dir = std::env::temp_dir().join(format!("oms-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("oms.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .expect("a database");
        let readers = Readers::new(path);
        let size: i64 = readers
            .run(|c| {
                c.query_row("PRAGMA cache_size", [], |r| r.get(0))
                    .map_err(direct::failed)
            })
            .expect("the setting");
        assert_eq!(size, READER_CACHE_KIB);
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
