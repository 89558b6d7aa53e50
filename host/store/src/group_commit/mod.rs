//! Group commit: saga transitions and new orders from every task of this
//! process are written by one writer, as many to a transaction as are
//! waiting, so one durable commit (one fsync) serves them all, and their
//! history, commands, outbox and payment rows go in multi-row statements.
//!
//! The writer takes whatever is queued the moment it is free: no fixed
//! wait, so a lone saga is written at once, and under load batches grow by
//! themselves while the previous one commits. Each caller is answered only
//! after the transaction holding its write committed: an order is
//! acknowledged once it is durable.
//!
//! Each write stays all-or-nothing on its own. A batch runs fast first: the
//! consumed commands deleted in one statement (one already gone is a
//! redelivery, answered [`StoreError::Duplicate`] with nothing written),
//! each order row updated under its version check and its stock changed,
//! then every member's rows inserted together. If anything fails (a stale
//! version, not enough stock, a database error), the transaction is rolled
//! back and the batch runs again carefully: each member under its own
//! savepoint, so a failure undoes only that member's writes and is answered
//! to its caller alone.

pub(crate) mod arrays;
mod fast;
pub(crate) mod on_handle;
mod reserve;
pub(crate) mod rows;
mod step_state;

use super::orders::{ORDER_COLUMNS, advance_numbers, allocate_numbers, complete_idempotency};
use super::outbox::complete_published;
use super::recorded::insert_recorded;
use super::transition::{consume_command, update_order, write_effects};
use super::{Backend, Dialect, InventoryOp, NewOrder, Result, StoreError, Transition, counted};
use fast::Fast;
use oms_domain::TenantId;
use rows::{Value, insert_rows, order_values};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: bounds a batch's statements' parameters
/// and how long the first caller in it waits for the last.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to queue (back-pressure).
const QUEUE: usize = 4 * MAX_BATCH;
/// SQLite: how long the writer keeps its prepared statements without a
/// write to use them on (see [`on_handle::Kept`]).
const KEEP_IDLE: std::time::Duration = std::time::Duration::from_millis(200);
/// SQLite: the longest the writer holds the write connection for batch
/// after batch; other writes on it (operators', the careful path) wait at
/// most this long.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_millis(20);

/// What the writer writes.
pub(crate) enum Write {
    /// Shared with the caller, who reads it again once it is committed.
    Transition(Arc<Transition>),
    Order(Box<NewOrder>),
    /// Outbox messages the relay has handed to the transport (SQLite):
    /// deleted, each event's webhook deliveries written, in the batch's
    /// transaction rather than one of their own.
    Published {
        ids: Vec<String>,
        now: i64,
    },
    /// Recorded plugin calls, in the batch's transaction.
    Recorded(Vec<crate::RecordedCall>),
    /// A count of a tenant's order numbers taken (SQLite); answered with
    /// the first.
    Numbers {
        tenant: TenantId,
        count: i64,
    },
}

impl Write {
    fn consumes(&self) -> Option<&str> {
        match self {
            Self::Transition(t) => t.consumes.as_deref(),
            Self::Order(_) | Self::Published { .. } | Self::Recorded(_) | Self::Numbers { .. } => {
                None
            }
        }
    }

    fn effects(&self) -> Option<&Transition> {
        match self {
            Self::Transition(t) => Some(t),
            Self::Order(new) => Some(&new.effects),
            Self::Published { .. } | Self::Recorded(_) | Self::Numbers { .. } => None,
        }
    }
}

struct Job {
    write: Write,
    /// The order's new version (a new order: 0).
    reply: oneshot::Sender<Result<i64>>,
}

/// The sending side: every write of the store's saga path goes through it.
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer: on SQLite a thread of its own (its batches run
    /// on the write connection's handle there, see [`on_handle`]), on
    /// PostgreSQL a thread with a runtime and a connection of its own
    /// ([`PgLink`]). It ends when the store (the last sender) is dropped.
    pub(crate) fn start(backend: Backend, commands_in_outbox: Arc<AtomicBool>) -> Self {
        Self::keeping(backend, commands_in_outbox, KEEP_IDLE)
    }

    /// [`Writer::start`], keeping SQLite's prepared statements for
    /// `keep_idle` without a write.
    fn keeping(
        backend: Backend,
        commands_in_outbox: Arc<AtomicBool>,
        keep_idle: std::time::Duration,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let task = Task {
            backend,
            commands_in_outbox,
            kept: on_handle::Kept::new(),
            keep_idle,
        };
        match &task.backend {
            Backend::Sqlite { .. } => {
                let runtime = tokio::runtime::Handle::current();
                let spawned = std::thread::Builder::new()
                    .name("oms-sqlite-writer".into())
                    .spawn(move || task.run_on_thread(jobs, &runtime));
                if let Err(e) = spawned {
                    // The queue's receiver went with the closure: every
                    // write is answered "the store's writer has stopped".
                    tracing::error!(error = %e, "the SQLite writer's thread could not start");
                }
            }
            Backend::Postgres(_) => {
                // A thread and a runtime of its own: as a task among the
                // saga path's hundreds, each of a batch's round trips waited
                // its turn on the shared workers before the next could go.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let spawned = runtime.map_err(std::io::Error::other).and_then(|runtime| {
                    std::thread::Builder::new()
                        .name("oms-pg-writer".into())
                        .spawn(move || runtime.block_on(task.run_pg(jobs)))
                });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "the PostgreSQL writer's thread could not start");
                }
            }
        }
        Self { queue }
    }

    /// Writes `write` in the next batch and waits until that batch committed.
    pub(crate) async fn write(&self, write: Write) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        let _counted = counted::InFlight::new();
        self.queue
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }
}

impl super::SqlStore {
    /// Commits a saga transition in the writer's next batch.
    pub(crate) async fn write_transition(&self, t: Arc<Transition>) -> Result<i64> {
        self.writer.write(Write::Transition(t)).await
    }

    /// Stores a new order (and starts its saga) in the writer's next batch.
    pub(crate) async fn write_order(&self, new: &NewOrder) -> Result<()> {
        self.writer
            .write(Write::Order(Box::new(new.clone())))
            .await
            .map(|_| ())
    }

    /// Takes `count` of `tenant`'s order numbers in the writer's next
    /// batch: the first of them.
    pub(crate) async fn write_numbers(&self, tenant: &TenantId, count: i64) -> Result<i64> {
        let tenant = tenant.clone();
        self.writer.write(Write::Numbers { tenant, count }).await
    }

    /// Stores recorded plugin calls in the writer's next batch.
    pub(crate) async fn write_recorded(&self, calls: Vec<crate::RecordedCall>) -> Result<()> {
        self.writer.write(Write::Recorded(calls)).await.map(|_| ())
    }

    /// Takes published outbox messages out in the writer's next batch.
    pub(crate) async fn write_published(&self, ids: Vec<String>, now: i64) -> Result<()> {
        self.writer
            .write(Write::Published { ids, now })
            .await
            .map(|_| ())
    }
}

/// Answers each of a committed batch's callers with its new version.
fn answer_fast(jobs: Vec<Job>, versions: Vec<Option<i64>>) {
    for (job, version) in jobs.into_iter().zip(versions) {
        let _ = job.reply.send(version.ok_or(StoreError::Duplicate));
    }
}

/// Where a write goes in its batch: see [`Task::write_batch`].
fn lock_order(write: &Write) -> (u8, Vec<String>) {
    match write.effects().and_then(|t| t.inventory.as_ref()) {
        None => (0, Vec::new()),
        Some(InventoryOp::Release | InventoryOp::Consume(_) | InventoryOp::ReleaseLines(_)) => {
            (1, Vec::new())
        }
        Some(InventoryOp::Reserve(lines) | InventoryOp::Restock { lines, .. }) => {
            let mut skus: Vec<String> = lines.iter().map(|(sku, _)| sku.clone()).collect();
            skus.sort();
            (2, skus)
        }
    }
}

struct Task {
    backend: Backend,
    commands_in_outbox: Arc<AtomicBool>,
    /// SQLite: the writer's view of the write connection's handle.
    kept: on_handle::Kept,
    /// SQLite: how long the kept statements outlast the last write.
    keep_idle: std::time::Duration,
}

impl Task {
    /// PostgreSQL: takes whatever is queued, batch after batch, on the
    /// writer's own connection ([`PgLink`]).
    async fn run_pg(self, mut queue: mpsc::Receiver<Job>) {
        let mut link = PgLink::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            counted::batch(batch.len());
            self.write_batch(std::mem::take(&mut batch), &mut link)
                .await;
        }
    }

    /// The same loop on a thread of its own: it sleeps while the queue is
    /// empty, and drives each batch's few waits (the pool, the handle's
    /// lock; the careful path's statements) on `runtime`. The batches'
    /// prepared statements are kept from one to the next and let go after
    /// `keep_idle` without a write, and when the writer stops.
    fn run_on_thread(self, mut queue: mpsc::Receiver<Job>, runtime: &tokio::runtime::Handle) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = if self.kept.holds() {
                // (The timer is made inside the runtime: it needs its context.)
                let next = async { tokio::time::timeout(self.keep_idle, queue.recv()).await };
                match runtime.block_on(next) {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(_) => {
                        self.release_kept(runtime);
                        continue;
                    }
                }
            } else {
                match queue.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            counted::batch(batch.len());
            let jobs = std::mem::take(&mut batch);
            if let Backend::Sqlite { write, .. } = &self.backend {
                runtime.block_on(self.write_while_queued(write, jobs, &mut queue));
            }
        }
        self.release_kept(runtime);
    }

    /// SQLite: writes `jobs` and then every batch already queued behind
    /// them on one hold of the write connection and its handle, for at most
    /// [`MAX_HOLD`]. Taking the connection from the pool, borrowing its
    /// handle from sqlx's worker thread and giving both back (the pool
    /// pings the connection on its return) are three hand-offs between
    /// threads; once per batch they were on every batch's way, and at
    /// saturation the writer slept in them more than it ran. A batch whose
    /// fast path fails ends the hold: the careful path runs on the pool.
    async fn write_while_queued(
        &self,
        write: &sqlx::SqlitePool,
        jobs: Vec<Job>,
        queue: &mut mpsc::Receiver<Job>,
    ) {
        let mut jobs = jobs;
        let started = std::time::Instant::now();
        let held = async {
            let mut conn = write.acquire().await?;
            let mut locked = conn.lock_handle().await?;
            loop {
                jobs.sort_by_cached_key(|j| lock_order(&j.write));
                match self.fast_on(&mut locked, &jobs) {
                    Ok(Fast::Committed(versions)) => {
                        answer_fast(std::mem::take(&mut jobs), versions)
                    }
                    Ok(Fast::Failed) | Err(_) => return Ok::<_, StoreError>(()),
                }
                if started.elapsed() >= MAX_HOLD {
                    return Ok(());
                }
                while jobs.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                if jobs.is_empty() {
                    return Ok(());
                }
                counted::batch(jobs.len());
            }
        };
        if let Err(e) = held.await {
            tracing::debug!(error = %e, "the SQLite write connection could not be held; writing on the pool");
        }
        // Left over: a batch whose fast path failed (or none).
        if !jobs.is_empty() {
            self.write_carefully(jobs, None).await;
        }
    }

    /// Finalizes the kept statements on the lent handle. Should that fail
    /// (the pool gone, the runtime shutting down), they are left open and
    /// it is logged: sqlx then cannot close the connection cleanly.
    fn release_kept(&self, runtime: &tokio::runtime::Handle) {
        let Backend::Sqlite { write, .. } = &self.backend else {
            return;
        };
        if !self.kept.holds() {
            return;
        }
        let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                let mut conn = write.acquire().await?;
                let mut locked = conn.lock_handle().await?;
                self.kept.release(&mut locked)
            })
        }));
        match released {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the SQLite writer could not finalize its statements");
            }
            Err(_) => {
                tracing::warn!(
                    "the SQLite writer could not finalize its statements: the runtime is shutting down"
                );
            }
        }
    }

    fn dialect(&self) -> &'static Dialect {
        self.backend.dialect()
    }

    /// The statement that takes a consumed command's outbox message back
    /// (Kafka), if commands travel there.
    fn unpublish(&self) -> Option<&'static str> {
        self.commands_in_outbox
            .load(Ordering::Relaxed)
            .then_some(self.dialect().unpublish_command)
    }

    /// PostgreSQL: writes `jobs` on `link` and answers each: fast, or if
    /// that fails, carefully.
    async fn write_batch(&self, jobs: Vec<Job>, link: &mut PgLink) {
        let mut jobs = jobs;
        // Stock rows are locked in one order by every host's writer, so
        // two batches on PostgreSQL cannot each hold what the other waits
        // for: writes without stock first, then releases, then reservations
        // by SKU. (Members are independent writes, so their order within a
        // batch is free; a tie keeps arrival order.)
        jobs.sort_by_cached_key(|j| lock_order(&j.write));
        let Backend::Postgres(pool) = &self.backend else {
            return self.write_carefully(jobs, None).await;
        };
        let fast = match link.get(pool).await {
            Ok(conn) => self.fast_pg(conn, &jobs).await,
            Err(e) => Err(e),
        };
        match fast {
            Ok(Fast::Committed(versions)) => return answer_fast(jobs, versions),
            Ok(Fast::Failed) => {}
            Err(e) => {
                // The careful path starts on a connection known to be good.
                tracing::debug!(error = %e, "a batch's fast path failed; writing it carefully on a new connection");
                link.drop_connection();
            }
        }
        match link.get(pool).await {
            Ok(conn) => self.write_carefully(jobs, Some(conn)).await,
            Err(e) => answer_unavailable(jobs, &e),
        }
    }

    /// The careful path for `jobs`, each answered with its own outcome:
    /// on PostgreSQL on `pg`, the writer's connection; on SQLite on the pool.
    async fn write_carefully(&self, jobs: Vec<Job>, pg: Option<&mut PgConnection>) {
        let mut jobs = jobs;
        counted::careful();
        match self.careful(&jobs, pg).await {
            Ok(answers) => {
                for (job, answer) in jobs.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => answer_unavailable(jobs, &e),
        }
    }

    /// The careful path: each member under its own savepoint, answered
    /// with its own outcome; `Err` when the batch as a whole failed
    /// (nothing committed).
    async fn careful(
        &self,
        jobs: &[Job],
        pg: Option<&mut PgConnection>,
    ) -> Result<Vec<Result<i64>>> {
        match (&self.backend, pg) {
            (Backend::Postgres(_), Some(conn)) => {
                let tx = counted::tx(conn.begin().await?);
                careful_in!(self, tx, jobs)
            }
            (Backend::Sqlite { write, .. }, _) => {
                let tx = counted::tx(write.begin().await?);
                careful_in!(self, tx, jobs)
            }
            (Backend::Postgres(_), None) => Err(StoreError::Unavailable(
                "the PostgreSQL writer has no connection".into(),
            )),
        }
    }
}

/// Answers every one of `jobs` that the batch could not be written.
fn answer_unavailable(jobs: Vec<Job>, e: &StoreError) {
    tracing::warn!(error = %e, writes = jobs.len(), "a batch of saga writes failed; each will be retried by its caller");
    let e = e.to_string();
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::Unavailable(e.clone())));
    }
}

/// The careful path's statements in transaction `$tx`: each of `$jobs`
/// under its own savepoint; evaluates to `Result<Vec<Result<i64>>>`.
macro_rules! careful_in {
    ($task:expr, $tx:ident, $jobs:expr) => {{
        let mut $tx = $tx;
        let unpublish = $task.unpublish();
        let fan_out = crate::webhooks::fan_out_sql(&$task.backend);
        let dialect = $task.dialect();
        let mut answers = Vec::with_capacity($jobs.len());
        for job in $jobs {
            sqlx::query("SAVEPOINT member")
                .execute(counted::stmt(&mut *$tx))
                .await?;
            let answer: Result<i64> = async {
                match &job.write {
                    Write::Transition(t) => {
                        if let Some(command) = &t.consumes {
                            consume_command!($tx, unpublish, command);
                        }
                        let first_seq = update_order!($tx, t);
                        write_effects!($tx, t, first_seq);
                        Ok(t.expected_version + 1)
                    }
                    Write::Order(new) => {
                        let values = [order_values(new)];
                        insert_rows!(sqlx, $tx, "orders", ORDER_COLUMNS, &values);
                        write_effects!($tx, &new.effects, 1i64);
                        complete_idempotency!(sqlx, $tx, new);
                        if let (Some(sql), Some(number)) =
                            (dialect.advance_numbers, new.record.order_number)
                        {
                            advance_numbers!(sqlx, $tx, sql, &new.record.tenant_id, number);
                        }
                        Ok(0)
                    }
                    Write::Published { ids, now } => {
                        complete_published!(sqlx, $tx, ids, *now, &fan_out);
                        Ok(0)
                    }
                    Write::Recorded(calls) => {
                        insert_recorded!(sqlx, $tx, calls);
                        Ok(0)
                    }
                    Write::Numbers { tenant, count } => {
                        Ok(allocate_numbers!(sqlx, $tx, tenant, *count))
                    }
                }
            }
            .await;
            if answer.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT member")
                    .execute(counted::stmt(&mut *$tx))
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT member")
                .execute(counted::stmt(&mut *$tx))
                .await?;
            answers.push(answer);
        }
        $tx.commit().await?;
        Ok(answers)
    }};
}
use careful_in;

/// A connection idle longer is pinged before the writer's next batch (as
/// the pool's are): the server may have restarted meanwhile.
const PG_IDLE_PING: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest the writer waits for a new connection (the pool's own
/// acquire timeout): its callers are answered unavailable and retry.
const PG_CONNECT: std::time::Duration = std::time::Duration::from_secs(10);

/// PostgreSQL: the writer's own connection, opened with the pool's options
/// on first use and kept while it works. On the pool, each batch's
/// connection was pinged as it went back (a round trip that wakes the
/// server's backend) and taken again through the pool's hand-offs.
#[derive(Default)]
struct PgLink {
    conn: Option<(PgConnection, std::time::Instant)>,
}

impl PgLink {
    /// The connection to write on: the kept one (pinged first if idle a
    /// while), or a new one.
    async fn get(&mut self, pool: &PgPool) -> Result<&mut PgConnection> {
        let kept = match self.conn.take() {
            Some((conn, since)) if since.elapsed() < PG_IDLE_PING => Some(conn),
            Some((mut conn, _)) => match conn.ping().await {
                Ok(()) => Some(conn),
                Err(e) => {
                    tracing::debug!(error = %e, "the PostgreSQL writer's idle connection was gone; opening another");
                    None
                }
            },
            None => None,
        };
        let conn = match kept {
            Some(conn) => conn,
            None => {
                // (Named, so an operator can tell it in `pg_stat_activity`.)
                let options = (*pool.connect_options())
                    .clone()
                    .application_name("oms-writer");
                tokio::time::timeout(PG_CONNECT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(
                            "the PostgreSQL writer could not connect in time".into(),
                        )
                    })??
            }
        };
        let (conn, _) = self.conn.insert((conn, std::time::Instant::now()));
        Ok(conn)
    }

    /// Closes nothing gracefully: a connection a failed batch was on is
    /// let go, and the next batch opens another.
    fn drop_connection(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests;
