//! The group-commit writer's fast path on SQLite runs on the write
//! connection's own handle (through rusqlite), a whole batch on the
//! writer's thread. Through sqlx every statement is a message to the
//! connection's worker thread and back (and every row one more): about a
//! third of the host's CPU was threads handing work to each other, ten or
//! more hand-offs a batch. Here a batch is one: the handle is lent by
//! sqlx's worker for the batch (`lock_handle`) and given back after.
//!
//! The types mirror the calls the statement macros make of sqlx
//! (`query(…).bind(…).execute(…)`, `query_scalar`, `query_as`, `fetch_*`),
//! so each statement's text is written once and serves sqlx (PostgreSQL,
//! the careful path) and this path alike: a macro takes the module (`sqlx`
//! or `on_handle`) as its first argument.

use crate::{Result, StoreError};
use rusqlite::types::{FromSql, ToSqlOutput, ValueRef};
use std::marker::PhantomData;

/// A statement's outcome, as sqlx's `rows_affected` reads it.
pub(crate) struct Done(usize);

impl Done {
    pub(crate) fn rows_affected(&self) -> u64 {
        self.0 as u64
    }
}

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

/// Runs `work`, whose every wait is one of this module's statements (ready
/// when first polled), to its end on this thread.
pub(crate) fn run_ready<T>(work: impl Future<Output = T>) -> Result<T> {
    let mut work = std::pin::pin!(work);
    match work
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(StoreError::Unavailable(
            "a statement on the lent SQLite handle waited for something else".into(),
        )),
    }
}

fn failed(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite: {e}"))
}

/// One bound value.
pub(crate) enum Arg<'q> {
    Text(&'q str),
    Owned(String),
    Int(i64),
    Null,
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Text(s) => ValueRef::Text(s.as_bytes()),
            Arg::Owned(s) => ValueRef::Text(s.as_bytes()),
            Arg::Int(i) => ValueRef::Integer(*i),
            Arg::Null => ValueRef::Null,
        }))
    }
}

/// What `bind` takes: the value kinds the writer's statements bind.
pub(crate) trait IntoArg<'q> {
    fn into_arg(self) -> Arg<'q>;
}

impl<'q> IntoArg<'q> for &'q str {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self)
    }
}

impl<'q> IntoArg<'q> for &'q String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self)
    }
}

impl<'q> IntoArg<'q> for String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Owned(self)
    }
}

impl<'q> IntoArg<'q> for i64 {
    fn into_arg(self) -> Arg<'q> {
        Arg::Int(self)
    }
}

impl<'q, T: IntoArg<'q>> IntoArg<'q> for Option<T> {
    fn into_arg(self) -> Arg<'q> {
        self.map_or(Arg::Null, IntoArg::into_arg)
    }
}

/// A statement and its values.
pub(crate) struct Query<'q> {
    sql: &'q str,
    args: Vec<Arg<'q>>,
}

pub(crate) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl<'q> Query<'q> {
    pub(crate) fn bind(mut self, value: impl IntoArg<'q>) -> Self {
        self.args.push(value.into_arg());
        self
    }

    pub(crate) async fn execute(self, tx: &mut Tx<'_>) -> Result<Done> {
        let mut stmt = prepared(tx, self.sql, &self.args)?;
        stmt.raw_execute().map(Done).map_err(failed)
    }

    /// Every row, each read by `read`.
    fn rows<O>(
        self,
        tx: &mut Tx<'_>,
        mut read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<O>,
    ) -> Result<Vec<O>> {
        let mut stmt = prepared(tx, self.sql, &self.args)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(failed)? {
            out.push(read(row).map_err(failed)?);
        }
        Ok(out)
    }
}

/// The statement `sql` from the connection's cache with `args` bound: a
/// numbered placeholder (`$N`, `?N`) takes value N, an anonymous `?` the
/// next in order (as sqlx binds them).
fn prepared<'c>(
    tx: &'c Tx<'_>,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = tx.tx.prepare_cached(sql).map_err(failed)?;
    let mut next = 0;
    for i in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(i) {
            None => {
                next += 1;
                next
            }
            Some(name) => name[1..].parse::<usize>().map_err(|_| {
                StoreError::Corrupt(format!("placeholder {name} is not numbered: {sql}"))
            })?,
        };
        let arg = args.get(n - 1).ok_or_else(|| {
            StoreError::Corrupt(format!("no value bound for placeholder {n} of {sql}"))
        })?;
        stmt.raw_bind_parameter(i, arg).map_err(failed)?;
    }
    Ok(stmt)
}

/// A statement whose rows are one value each.
pub(crate) struct QueryScalar<'q, O> {
    query: Query<'q>,
    out: PhantomData<O>,
}

pub(crate) fn query_scalar<O>(sql: &str) -> QueryScalar<'_, O> {
    QueryScalar {
        query: query(sql),
        out: PhantomData,
    }
}

impl<'q, O> QueryScalar<'q, O> {
    pub(crate) fn bind(mut self, value: impl IntoArg<'q>) -> Self {
        self.query = self.query.bind(value);
        self
    }
}

impl<O: FromSql> QueryScalar<'_, O> {
    pub(crate) async fn fetch_all(self, tx: &mut Tx<'_>) -> Result<Vec<O>> {
        self.query.rows(tx, |row| row.get(0))
    }

    pub(crate) async fn fetch_optional(self, tx: &mut Tx<'_>) -> Result<Option<O>> {
        Ok(self.fetch_all(tx).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(self, tx: &mut Tx<'_>) -> Result<O> {
        self.fetch_optional(tx).await?.ok_or(StoreError::NotFound)
    }
}

/// A row read into a tuple, column by column.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

impl<A: FromSql, B: FromSql, C: FromSql> FromRow for (A, B, C) {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    }
}

/// A statement whose rows are tuples.
pub(crate) struct QueryAs<'q, O> {
    query: Query<'q>,
    out: PhantomData<O>,
}

pub(crate) fn query_as<O>(sql: &str) -> QueryAs<'_, O> {
    QueryAs {
        query: query(sql),
        out: PhantomData,
    }
}

impl<'q, O> QueryAs<'q, O> {
    pub(crate) fn bind(mut self, value: impl IntoArg<'q>) -> Self {
        self.query = self.query.bind(value);
        self
    }
}

impl<O: FromRow> QueryAs<'_, O> {
    pub(crate) async fn fetch_all(self, tx: &mut Tx<'_>) -> Result<Vec<O>> {
        self.query.rows(tx, O::from_row)
    }
}
