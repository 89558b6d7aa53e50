//! SQLite statements straight through rusqlite, on the calling thread:
//! the group-commit writer's batches on the write connection's lent handle
//! (`group_commit::own`) and the store's short reads on its own read
//! connections ([`crate::readers`]). Through sqlx every statement is a
//! message to the connection's worker thread and back (every row one more,
//! and a ping when the connection goes back to its pool).
//!
//! The types mirror the calls the statement macros make of sqlx
//! (`query(…).bind(…).execute(…)`, `query_scalar`, `query_as`, `fetch_*`),
//! so each statement's text is written once and serves sqlx (PostgreSQL,
//! sqlx's SQLite pools) and this path alike: a macro takes the module
//! (`sqlx`, or `direct` and its re-export `own`) as an argument.

use crate::{Result, StoreError};
use rusqlite::types::{FromSql, ToSqlOutput, ValueRef};
use std::marker::PhantomData;

/// What statements run on: a connection, or a transaction on one.
pub(crate) trait Db {
    fn connection(&self) -> &rusqlite::Connection;
}

impl Db for &rusqlite::Connection {
    fn connection(&self) -> &rusqlite::Connection {
        self
    }
}

/// A statement's outcome, as sqlx's `rows_affected` reads it.
pub(crate) struct Done(usize);

impl Done {
    pub(crate) fn rows_affected(&self) -> u64 {
        self.0 as u64
    }
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

/// A rusqlite connection of the store's own to the database at `path`:
/// used by one thread at a time (no SQLite mutex), waiting up to 10 s for
/// another connection's lock as sqlx's connections do.
pub(crate) fn open(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

pub(crate) fn failed(e: rusqlite::Error) -> StoreError {
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

    pub(crate) async fn execute(self, db: impl Db) -> Result<Done> {
        let mut stmt = prepared(db.connection(), self.sql, &self.args)?;
        stmt.raw_execute().map(Done).map_err(failed)
    }

    /// Every row, each read by `read`.
    fn rows<O>(
        self,
        db: impl Db,
        mut read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<O>,
    ) -> Result<Vec<O>> {
        let mut stmt = prepared(db.connection(), self.sql, &self.args)?;
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
    db: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = db.prepare_cached(sql).map_err(failed)?;
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
    pub(crate) async fn fetch_all(self, db: impl Db) -> Result<Vec<O>> {
        self.query.rows(db, |row| row.get(0))
    }

    pub(crate) async fn fetch_optional(self, db: impl Db) -> Result<Option<O>> {
        Ok(self.fetch_all(db).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(self, db: impl Db) -> Result<O> {
        self.fetch_optional(db).await?.ok_or(StoreError::NotFound)
    }
}

/// A row read into a tuple, column by column.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

impl<A: FromSql, B: FromSql> FromRow for (A, B) {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?))
    }
}

impl<A: FromSql, B: FromSql, C: FromSql, D: FromSql> FromRow for (A, B, C, D) {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    }
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
    pub(crate) async fn fetch_all(self, db: impl Db) -> Result<Vec<O>> {
        self.query.rows(db, O::from_row)
    }

    pub(crate) async fn fetch_optional(self, db: impl Db) -> Result<Option<O>> {
        Ok(self.fetch_all(db).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(self, db: impl Db) -> Result<O> {
        self.fetch_optional(db).await?.ok_or(StoreError::NotFound)
    }
}
