//! The group-commit writer's SQLite connection, its own (through rusqlite),
//! on which a whole batch runs on the writer's thread.
//!
//! Through sqlx every statement is a message to the connection's worker
//! thread and back (and every row one more): about a third of the host's
//! CPU was threads handing work to each other. Borrowing the pool's
//! connection's handle for a run of batches (`lock_handle`) made that one
//! hand-off per run, but the borrow itself was several: taking the
//! connection from the pool, the handle from sqlx's worker, and giving both
//! back, the return a task sqlx spawns on the saga runtime, which under load
//! waited there behind hundreds of steps. At 1,000 orders/s the writer
//! waited 5-32 ms (median 7) for the connection some fifteen times a
//! second, and every order queued behind it as long (README, the
//! eighteenth session). A connection of its own is never waited for: the
//! writer takes only the write turn (see `on_pool!`), uncontended but for
//! the other writes' own transactions.
//!
//! Its statements are [`crate::direct`]'s, re-exported here: a statement
//! macro given `own` as its query module runs them on this connection.
//! Prepared statements stay in rusqlite's cache for the connection's life
//! (preparing a batch's statements afresh was about 10 % of the host's CPU
//! in a profile).

use crate::Result;
pub(crate) use crate::direct::{Db, failed, query, query_as, query_scalar, run_ready};
use std::path::Path;

/// Room for all the writer's statement texts (seven chunk sizes per
/// multi-row statement, a dozen tables), so none pushes another out.
const STATEMENTS: usize = 256;

/// Opens the writer's connection to the database at `path` (migrated
/// already), set as sqlx sets the pool's: foreign keys enforced, every
/// commit flushed to disk before it returns (`synchronous=FULL`), temporary
/// storage in memory, the log's backstop checkpoint as the pool's.
pub(crate) fn open(path: &Path) -> Result<rusqlite::Connection> {
    // The turn keeps this process's writers apart; `open`'s busy timeout
    // covers another process writing the file (an operator's tool).
    let conn = crate::direct::open(path).map_err(failed)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(failed)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(failed)?;
    conn.pragma_update(None, "temp_store", "memory")
        .map_err(failed)?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        crate::checkpoint::BACKSTOP_PAGES,
    )
    .map_err(failed)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(conn)
}

/// An open transaction on the writer's connection; rolled back when
/// dropped uncommitted (an early return, a failed member, a panic).
pub(crate) struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
}

impl<'c> Tx<'c> {
    /// `BEGIN IMMEDIATE`: the write lock from the start (the writer holds
    /// the write turn, so no other connection of this process writes; the
    /// read connections never wait for it in WAL mode).
    pub(crate) fn begin(conn: &'c rusqlite::Connection) -> Result<Self> {
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(failed)?;
        Ok(Self { tx })
    }

    pub(crate) fn commit(self) -> Result<()> {
        self.tx.commit().map_err(failed)
    }
}

impl Db for &mut Tx<'_> {
    fn connection(&self) -> &rusqlite::Connection {
        &self.tx
    }
}
