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
mod linger;
pub(crate) mod own;
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
    /// Starts the writer: on SQLite a thread of its own writing on `own`,
    /// its connection (see [`own`]); on PostgreSQL a thread with a runtime
    /// and a connection of its own ([`pg_writer`]). It ends when the store
    /// (the last sender) is dropped.
    pub(crate) fn start(
        backend: Backend,
        own: Option<rusqlite::Connection>,
        commands_in_outbox: Arc<AtomicBool>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (ending, ended) = oneshot::channel::<()>();
        let task = Task {
            backend,
            commands_in_outbox,
        };
        match (&task.backend, own) {
            (Backend::Sqlite { .. }, Some(own)) => {
                let runtime = tokio::runtime::Handle::current();
                let spawned = std::thread::Builder::new()
                    .name("oms-sqlite-writer".into())
                    .spawn(move || {
                        let _ending = ending;
                        task.run_on_thread(&own, jobs, &runtime)
                    });
                if let Err(e) = spawned {
                    // The queue's receiver went with the closure: every
                    // write is answered "the store's writer has stopped".
                    tracing::error!(error = %e, "the SQLite writer's thread could not start");
                }
            }
            (Backend::Sqlite { .. }, None) => {
                tracing::error!("the SQLite writer has no connection; every write fails");
            }
            (Backend::Postgres(_), _) => {
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
    /// its thread has ended (on SQLite, its connection closed with it).
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

/// Moves what is queued into `batch`, up to a batch's size.
fn take_queued(queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

struct Task {
    backend: Backend,
    commands_in_outbox: Arc<AtomicBool>,
}

impl Task {
    /// The SQLite writer's loop, on a thread of its own: it sleeps while
    /// the queue is empty and writes whatever is queued the moment it
    /// wakes, on `own`, holding the write turn for the batch. A batch whose
    /// fast path fails is written again carefully, on the pool (driven on
    /// `runtime`), the turn held for that too.
    fn run_on_thread(
        self,
        own: &rusqlite::Connection,
        mut queue: mpsc::Receiver<Job>,
        runtime: &tokio::runtime::Handle,
    ) {
        let Backend::Sqlite {
            turn, checkpoints, ..
        } = &self.backend
        else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut linger = linger::Linger::from_env();
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            take_queued(&mut queue, &mut batch);
            let taken = batch.len();
            if let Some(wait) = linger.wait_for(taken) {
                // Writes are arriving faster than they commit: a moment
                // more shares this commit among more of them (see `linger`).
                std::thread::sleep(wait);
                take_queued(&mut queue, &mut batch);
                counted::linger();
            }
            linger.gathered(batch.len() - taken);
            counted::batch(batch.len());
            let mut jobs = std::mem::take(&mut batch);
            jobs.sort_by_cached_key(|j| lock_order(&j.write));
            {
                let _turn = turn.blocking_lock();
                match self.fast_sqlite(own, &jobs) {
                    Ok(Fast::Committed(versions)) => answer_fast(jobs, versions),
                    Ok(Fast::Failed) | Err(_) => runtime.block_on(self.write_carefully(jobs, None)),
                }
            }
            checkpoints.committed();
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
