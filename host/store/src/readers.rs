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

use crate::{Result, direct};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections kept: one per thread reading at once, roughly.
const KEEP: usize = 8;

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
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(direct::failed)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(direct::failed)?;
        conn.pragma_update(None, "query_only", true)
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
/// PostgreSQL the pool (`$q` = `sqlx`). The body is compiled once per
/// backend, so it may only use what both offer.
macro_rules! on_reader {
    ($store:expr, |$q:ident, $db:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { readers, .. } => readers.run(|$db| {
                use $crate::direct as $q;
                $crate::direct::run_ready(async { $body })?
            }),
            $crate::Backend::Postgres($db) => {
                use sqlx as $q;
                $body
            }
        }
    };
}
pub(crate) use on_reader;
