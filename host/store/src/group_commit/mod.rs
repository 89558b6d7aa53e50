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
mod careful;
mod fast;
pub(crate) mod on_handle;
mod pg_writer;
pub use pg_writer::writer_options as pg_writer_options;
mod reserve;
pub(crate) mod rows;
mod step_state;

use super::{Backend, Dialect, InventoryOp, NewOrder, Result, StoreError, Transition, counted};
use fast::Fast;
use oms_domain::TenantId;
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
    /// Some of a slot's oldest recorded calls deleted; answered with how
    /// many. In a batch rather than a transaction of its own, so pruning
    /// never holds the write connection between them.
    Prune(crate::recorded::PruneRecorded),
}

impl Write {
    fn consumes(&self) -> Option<&str> {
        match self {
            Self::Transition(t) => t.consumes.as_deref(),
            Self::Order(_)
            | Self::Published { .. }
            | Self::Recorded(_)
            | Self::Numbers { .. }
            | Self::Prune(_) => None,
        }
    }

    fn effects(&self) -> Option<&Transition> {
        match self {
            Self::Transition(t) => Some(t),
            Self::Order(new) => Some(&new.effects),
            Self::Published { .. } | Self::Recorded(_) | Self::Numbers { .. } | Self::Prune(_) => {
                None
            }
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
    /// Resolves once the writer's thread has ended (its sender is dropped
    /// on the thread's way out, a panic included): see [`Writer::stop`].
    ended: oneshot::Receiver<()>,
}

impl Writer {
    /// Starts the writer: on SQLite a thread of its own (its batches run
    /// on the write connection's handle there, see [`on_handle`]), on
    /// PostgreSQL a thread with a runtime and a connection of its own
    /// ([`pg_writer`]). It ends when the store (the last sender) is dropped.
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
        let (ending, ended) = oneshot::channel::<()>();
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
                    .spawn(move || {
                        let _ending = ending;
                        task.run_on_thread(jobs, &runtime)
                    });
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
                        .spawn(move || {
                            let _ending = ending;
                            runtime.block_on(task.run_pg(jobs))
                        })
                });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "the PostgreSQL writer's thread could not start");
                }
            }
        }
        Self { queue, ended }
    }

    /// Stops the writer once the writes queued are written, and waits until
    /// its thread has ended: on SQLite, its prepared statements are then
    /// finalized, so the write pool can be closed (closing it first makes
    /// sqlx's `sqlite3_close` fail on them).
    pub(crate) async fn stop(self) {
        let Self { queue, ended } = self;
        drop(queue);
        // An error is the same news: the sender went with the thread.
        let _ = ended.await;
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

    /// Deletes up to `limit` of a slot's recorded calls no newer than
    /// `cutoff`, oldest first, in the writer's next batch: how many it did.
    pub(crate) async fn write_prune(
        &self,
        tenant: String,
        slot: String,
        cutoff: String,
        limit: i64,
    ) -> Result<u64> {
        let write = Write::Prune(crate::recorded::PruneRecorded {
            sql: self.backend.dialect().prune_recorded,
            tenant,
            slot,
            cutoff,
            limit,
        });
        Ok(u64::try_from(self.writer.write(write).await?).unwrap_or(0))
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
            if let Backend::Sqlite {
                write, checkpoints, ..
            } = &self.backend
            {
                runtime.block_on(self.write_while_queued(write, jobs, &mut queue));
                checkpoints.committed();
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
}

#[cfg(test)]
mod tests;
