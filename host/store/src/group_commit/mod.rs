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

pub(crate) mod rows;
mod step_state;

use super::inventory::apply_inventory;
use super::orders::{ORDER_COLUMNS, complete_idempotency};
use super::transition::{consume_command, update_order, write_effects};
use super::{
    Backend, Dialect, InventoryOp, NewOrder, Result, StoreError, Transition, counted, on_pool,
};
use rows::{
    CHUNKS, Rows, Texts, Value, bind_rows, chunk_len, in_list_sql, insert_rows, insert_sql,
    order_values, padded, update_sql, update_values,
};
use std::collections::{HashMap, HashSet};
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
    Transition(Box<Transition>),
    Order(Box<NewOrder>),
}

impl Write {
    fn consumes(&self) -> Option<&str> {
        match self {
            Self::Transition(t) => t.consumes.as_deref(),
            Self::Order(_) => None,
        }
    }

    fn effects(&self) -> &Transition {
        match self {
            Self::Transition(t) => t,
            Self::Order(new) => &new.effects,
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
    /// Starts the writer task on the current runtime; it ends when the
    /// store (the last sender) is dropped.
    pub(crate) fn start(backend: Backend, commands_in_outbox: Arc<AtomicBool>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let task = Task {
            backend,
            commands_in_outbox,
        };
        tokio::spawn(task.run(jobs));
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
    pub(crate) async fn write_transition(&self, t: &Transition) -> Result<i64> {
        self.writer
            .write(Write::Transition(Box::new(t.clone())))
            .await
    }

    /// Stores a new order (and starts its saga) in the writer's next batch.
    pub(crate) async fn write_order(&self, new: &NewOrder) -> Result<()> {
        self.writer
            .write(Write::Order(Box::new(new.clone())))
            .await
            .map(|_| ())
    }
}

/// Where a write goes in its batch: see [`Task::write_batch`].
fn lock_order(write: &Write) -> (u8, Vec<String>) {
    match &write.effects().inventory {
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
}

impl Task {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            counted::batch(batch.len());
            self.write_batch(std::mem::take(&mut batch)).await;
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

    /// Writes `jobs` and answers each: fast, or if that fails, carefully.
    async fn write_batch(&self, jobs: Vec<Job>) {
        let mut jobs = jobs;
        // Stock rows are locked in one order by every host's writer, so
        // two batches on PostgreSQL cannot each hold what the other waits
        // for: writes without stock first, then releases, then reservations
        // by SKU. (Members are independent writes, so their order within a
        // batch is free; a tie keeps arrival order.)
        jobs.sort_by_cached_key(|j| lock_order(&j.write));
        match self.fast(&jobs).await {
            Ok(Fast::Committed(versions)) => {
                for (job, version) in jobs.into_iter().zip(versions) {
                    let _ = job.reply.send(version.ok_or(StoreError::Duplicate));
                }
                return;
            }
            Ok(Fast::Failed) | Err(_) => {}
        }
        counted::careful();
        match self.careful(&jobs).await {
            Ok(answers) => {
                for (job, answer) in jobs.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = jobs.len(), "a batch of saga writes failed; each will be retried by its caller");
                let e = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(e.clone())));
                }
            }
        }
    }

    /// The fast path: `Ok(Committed)` with each member's new version (`None`
    /// for a redelivered command, nothing of which was written), or
    /// `Ok(Failed)`/`Err` with nothing committed.
    async fn fast(&self, jobs: &[Job]) -> Result<Fast> {
        let unpublish = self.unpublish();
        // The JSON texts, made before the transaction begins.
        let texts: Vec<Texts> = jobs.iter().map(|j| Texts::of(j.write.effects())).collect();
        on_pool!(self, write, |pool| {
            let mut tx = counted::tx(pool.begin().await?);
            // 1. Consume every command in one statement per chunk; a command
            // not found was consumed by another delivery first.
            let consumed: Vec<&str> = jobs.iter().filter_map(|j| j.write.consumes()).collect();
            let mut gone: HashSet<String> = HashSet::with_capacity(consumed.len());
            for chunk in consumed.chunks(CHUNKS[0]) {
                let n = padded(chunk.len());
                let sql = in_list_sql(
                    "DELETE FROM saga_commands WHERE id IN ",
                    n,
                    " RETURNING id",
                    rows::anonymous(&tx),
                );
                let mut q = sqlx::query_scalar::<_, String>(&sql);
                for i in 0..n {
                    q = q.bind(chunk[i.min(chunk.len() - 1)]);
                }
                gone.extend(q.fetch_all(counted::stmt(&mut *tx)).await?);
            }
            if let Some((prefix, suffix)) = unpublish.map(|_| self.dialect().unpublish_commands) {
                let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
                for chunk in gone.chunks(CHUNKS[0]) {
                    let n = padded(chunk.len());
                    let sql = in_list_sql(prefix, n, suffix, rows::anonymous(&tx));
                    let mut q = sqlx::query(&sql);
                    for i in 0..n {
                        q = q.bind(chunk[i.min(chunk.len() - 1)]);
                    }
                    q.execute(counted::stmt(&mut *tx)).await?;
                }
            }
            // 2. Every transition's order row under its version check, many
            // to a statement; then each member's stock, in batch order.
            let live: Vec<usize> = (0..jobs.len())
                .filter(|i| jobs[*i].write.consumes().is_none_or(|c| gone.contains(c)))
                .collect();
            let transitions: Vec<&Transition> = live
                .iter()
                .filter_map(|i| match &jobs[*i].write {
                    Write::Transition(t) => Some(&**t),
                    Write::Order(_) => None,
                })
                .collect();
            let mut last_seq: HashMap<(String, String), i64> = HashMap::new();
            {
                // Two writes of one order cannot be told apart in one
                // statement's answer: such a batch is written carefully.
                let mut orders = HashSet::new();
                if !transitions
                    .iter()
                    .all(|t| orders.insert((t.tenant.as_str(), t.order_id.as_str())))
                {
                    return Ok(Fast::Failed);
                }
                let rows: Vec<Vec<Value<'_>>> =
                    transitions.iter().map(|t| update_values(t)).collect();
                let mut rest = rows.as_slice();
                while !rest.is_empty() {
                    let n = chunk_len(rest.len());
                    let (chunk, tail) = rest.split_at(n);
                    let sql = update_sql(n, rows::anonymous(&tx));
                    let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
                    bind_rows!(q, chunk);
                    for (tenant, order, seq) in q.fetch_all(counted::stmt(&mut *tx)).await? {
                        last_seq.insert((tenant, order), seq);
                    }
                    rest = tail;
                }
            }
            let mut versions = vec![None; jobs.len()];
            // New reservations: (member, SKU, warehouse, quantity).
            let mut reserved: Vec<(usize, String, String, i64)> = Vec::new();
            let mut rows = Rows::default();
            for i in live {
                let (job, texts) = (&jobs[i], &texts[i]);
                let member: Result<(i64, i64)> = async {
                    match &job.write {
                        Write::Transition(t) => {
                            // Not updated: another write of the order came first.
                            let key = (t.tenant.to_string(), t.order_id.to_string());
                            let Some(last) = last_seq.get(&key) else {
                                return Err(StoreError::Conflict);
                            };
                            if let Some(op) = &t.inventory {
                                let mut held = Vec::new();
                                apply_inventory!(tx, &t.tenant, &t.order_id, op, t.now, held);
                                reserved.extend(held.into_iter().map(|(s, w, q)| (i, s, w, q)));
                            }
                            Ok((t.expected_version + 1, last - t.events.len() as i64 + 1))
                        }
                        Write::Order(new) => {
                            complete_idempotency!(tx, new);
                            Ok((0, 1))
                        }
                    }
                }
                .await;
                let Ok((version, first_seq)) = member else {
                    return Ok(Fast::Failed);
                };
                if let Write::Order(new) = &job.write {
                    rows.orders.push(order_values(new));
                }
                rows.add(job.write.effects(), first_seq, texts);
                versions[i] = Some(version);
            }
            // 3. Every member's rows, many to a statement.
            insert_rows!(tx, "orders", ORDER_COLUMNS, &rows.orders);
            write_step_states!(tx, &transitions);
            let reservations: Vec<Vec<Value<'_>>> = reserved
                .iter()
                .map(|(i, sku, warehouse, quantity)| {
                    let t = jobs[*i].write.effects();
                    rows::reservation_values(t, sku, warehouse, *quantity)
                })
                .collect();
            insert_rows!(
                tx,
                "reservations",
                "tenant_id, order_id, sku, warehouse_id, quantity, state, created_at, updated_at",
                &reservations
            );
            insert_rows!(
                tx,
                "order_events",
                "tenant_id, order_id, seq, event_type, data, at",
                &rows.events
            );
            insert_rows!(
                tx,
                "saga_commands",
                "id, tenant_id, order_id, action, available_at, created_at",
                &rows.commands
            );
            insert_rows!(
                tx,
                "outbox",
                "id, tenant_id, order_id, topic, event_type, payload, created_at, available_at, trace_parent",
                &rows.outbox
            );
            insert_rows!(
                tx,
                "payments",
                "id, tenant_id, order_id, op, amount, currency, status, provider_reference, error_code, idempotency_key, plugin_version, at",
                &rows.payments
            );
            tx.commit().await?;
            Ok(Fast::Committed(versions))
        })
    }

    /// The careful path: each member under its own savepoint, answered
    /// with its own outcome; `Err` when the batch as a whole failed
    /// (nothing committed).
    async fn careful(&self, jobs: &[Job]) -> Result<Vec<Result<i64>>> {
        let unpublish = self.unpublish();
        on_pool!(self, write, |pool| {
            let mut tx = counted::tx(pool.begin().await?);
            let mut answers = Vec::with_capacity(jobs.len());
            for job in jobs {
                sqlx::query("SAVEPOINT member")
                    .execute(counted::stmt(&mut *tx))
                    .await?;
                let answer: Result<i64> = async {
                    match &job.write {
                        Write::Transition(t) => {
                            if let Some(command) = &t.consumes {
                                consume_command!(tx, unpublish, command);
                            }
                            let first_seq = update_order!(tx, t);
                            write_effects!(tx, t, first_seq);
                            Ok(t.expected_version + 1)
                        }
                        Write::Order(new) => {
                            let values = [order_values(new)];
                            insert_rows!(tx, "orders", ORDER_COLUMNS, &values);
                            write_effects!(tx, &new.effects, 1i64);
                            complete_idempotency!(tx, new);
                            Ok(0)
                        }
                    }
                }
                .await;
                if answer.is_err() {
                    sqlx::query("ROLLBACK TO SAVEPOINT member")
                        .execute(counted::stmt(&mut *tx))
                        .await?;
                }
                sqlx::query("RELEASE SAVEPOINT member")
                    .execute(counted::stmt(&mut *tx))
                    .await?;
                answers.push(answer);
            }
            tx.commit().await?;
            Ok(answers)
        })
    }
}

/// The step-state writes of a batch's `$transitions` inside `$tx`: folded
/// per key (see [`step_state`]), puts and additions many to a statement.
macro_rules! write_step_states {
    ($tx:ident, $transitions:expr) => {{
        use step_state::Folded;
        let plan = step_state::plan($transitions.iter().copied());
        let texts: Vec<String> = plan
            .folded
            .iter()
            .map(|(_, f, _)| match f {
                Folded::Put(v) => v.clone(),
                Folded::Add(d) => d.to_string(),
                Folded::Delete => String::new(),
            })
            .collect();
        let (mut puts, mut adds) = (Vec::new(), Vec::new());
        for (((tenant, step, key), f, at), text) in plan.folded.iter().zip(&texts) {
            let row = vec![
                Value::Text(tenant),
                Value::Text(step),
                Value::Text(key),
                Value::Text(text),
                Value::Int(*at),
            ];
            match f {
                Folded::Put(_) => puts.push(row),
                Folded::Add(_) => adds.push(row),
                Folded::Delete => {
                    crate::step_state::write_step_op!(
                        $tx,
                        tenant,
                        step,
                        key,
                        &crate::StepStateOp::Delete,
                        *at
                    )
                }
            }
        }
        const COLUMNS: &str = "tenant_id, step, state_key, value, updated_at";
        insert_rows!(
            $tx,
            "step_state",
            COLUMNS,
            &puts,
            crate::step_state::PUT_ON_CONFLICT
        );
        insert_rows!(
            $tx,
            "step_state",
            COLUMNS,
            &adds,
            crate::step_state::ADD_ON_CONFLICT
        );
        for ((tenant, step, key), op, at) in &plan.one_by_one {
            crate::step_state::write_step_op!($tx, tenant, step, key, *op, *at);
        }
    }};
}
use write_step_states;

enum Fast {
    /// Each member's new version; `None` for a redelivered command.
    Committed(Vec<Option<i64>>),
    Failed,
}
