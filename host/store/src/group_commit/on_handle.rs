//! The group-commit writer's fast path on SQLite runs on the write
//! connection's own handle (through rusqlite), a whole batch on the
//! writer's thread. Through sqlx every statement is a message to the
//! connection's worker thread and back (and every row one more): about a
//! third of the host's CPU was threads handing work to each other, ten or
//! more hand-offs a batch. Here a batch is one: the handle is lent by
//! sqlx's worker for the batch (`lock_handle`) and given back after.
//!
//! Its statements are [`crate::direct`]'s, re-exported here: a statement
//! macro given `on_handle` as its query module runs them on the handle.

pub(crate) use crate::direct::{Db, failed, query, query_as, query_scalar, run_ready};
use crate::{Result, StoreError};

/// An open transaction on the lent handle; rolled back when dropped
/// uncommitted (an early return, a failed member, a panic).
pub(crate) struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
}

impl<'c> Tx<'c> {
    /// `BEGIN IMMEDIATE`: the write lock from the start (this connection is
    /// the only writer; the read connections never wait for it in WAL mode).
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

/// rusqlite's view of the write connection's handle, with its prepared
/// statements, kept from one batch to the next (preparing a batch's
/// statements afresh was about 10 % of the host's CPU in a profile). It is
/// used, and dropped, only while sqlx's worker has lent the handle. The
/// writer lets it go ([`Kept::release`]) once no batch has come for a
/// while and when it stops, so the connection is as sqlx lent it whenever
/// the writer is idle: sqlx can close it then (closing a connection with
/// statements of someone else's still open fails).
pub(crate) struct Kept(std::sync::Mutex<Option<(usize, rusqlite::Connection)>>);

impl Kept {
    pub(crate) fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<(usize, rusqlite::Connection)>>> {
        self.0
            .lock()
            .map_err(|_| StoreError::Unavailable("the SQLite writer panicked".into()))
    }

    /// Whether prepared statements are kept now.
    pub(crate) fn holds(&self) -> bool {
        self.lock().is_ok_and(|kept| kept.is_some())
    }

    /// Runs `work` on the handle `locked` lends, and keeps the connection
    /// (its statements) for the next batch if `work` succeeded.
    pub(crate) fn run<T>(
        &self,
        locked: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T>,
    ) -> Result<T> {
        let raw = locked.as_raw_handle().as_ptr();
        let mut kept = self.lock()?;
        let conn = match kept.take() {
            Some((at, conn)) if at == raw as usize => conn,
            stale => {
                forget_stale(stale);
                lend(raw)?
            }
        };
        let out = work(&conn);
        if out.is_ok() {
            *kept = Some((raw as usize, conn));
        }
        out
    }

    /// Finalizes the kept statements on the handle `locked` lends.
    pub(crate) fn release(&self, locked: &mut sqlx::sqlite::LockedSqliteHandle<'_>) -> Result<()> {
        let raw = locked.as_raw_handle().as_ptr();
        match self.lock()?.take() {
            Some((at, conn)) if at == raw as usize => drop(conn),
            stale => forget_stale(stale),
        }
        Ok(())
    }
}

/// A kept connection whose handle is not the one lent now: its statements
/// belong to a handle not lent, so they are left alone, not finalized.
/// (Not expected: the write pool never replaces its connection while the
/// writer runs.)
fn forget_stale(stale: Option<(usize, rusqlite::Connection)>) {
    if let Some((_, old)) = stale {
        tracing::warn!("the SQLite write connection changed under the writer");
        std::mem::forget(old);
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Ok(Some((_, conn))) = self.0.get_mut().map(Option::take) {
            // Not lent now: finalizing its statements could race sqlx's
            // worker on the handle.
            std::mem::forget(conn);
        }
    }
}

/// rusqlite's view of the handle `raw`, lent by sqlx's worker.
fn lend(raw: *mut rusqlite::ffi::sqlite3) -> Result<rusqlite::Connection> {
    // SAFETY: `raw` is a live `sqlite3*` lent by sqlx's worker thread
    // (`lock_handle`): the worker makes no call on it while the lock is
    // held, and every use and drop of the connection returned happens with
    // it held ([`Kept::run`], [`Kept::release`]; a kept connection is not
    // touched between them, and only forgotten, never dropped, without it). `from_handle` does not take
    // ownership: dropping it finalizes its own statements and does not
    // close the handle. rusqlite and sqlx link the same `libsqlite3-sys`,
    // so the pointer's type is the one rusqlite expects.
    #[allow(unsafe_code)]
    let conn = unsafe { rusqlite::Connection::from_handle(raw) }.map_err(failed)?;
    // Room for all the writer's statement texts (seven chunk sizes per
    // multi-row statement, a dozen tables), so none pushes another out.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}
