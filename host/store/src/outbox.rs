//! The transactional outbox: public events (and, with Kafka, saga commands)
//! written with the transition that caused them, then claimed by a relay,
//! handed to the transport and deleted, so the table holds only what is
//! still to be published.
//!
//! Several hosts may relay at once on PostgreSQL: each claims a batch with
//! `FOR UPDATE SKIP LOCKED`, and keeps of it only each order's unbroken run
//! from its oldest unpublished message, so one order's messages are never
//! published out of order by two relays racing.

use super::{Backend, Result, SqlStore};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use std::collections::HashSet;

/// Takes published outbox messages `$ids` out inside `$tx`, through module
/// `$q`'s queries (`sqlx`, or the writer's `own`), and writes each
/// event's webhook deliveries (`$fan_out`, [`crate::webhooks::fan_out_sql`]
/// for SQLite) in the same transaction. A statement per chunk rather than
/// per message.
macro_rules! complete_published {
    ($q:ident, $tx:ident, $ids:expr, $now:expr, $fan_out:expr) => {{
        let (ids, now, fan_out): (&[String], i64, &str) = ($ids, $now, $fan_out);
        for chunk in ids.chunks($crate::group_commit::rows::CHUNKS[0]) {
            let json = serde_json::to_string(chunk)
                .map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
            $q::query(fan_out)
                .bind(json)
                .bind(now)
                .execute($crate::counted::stmt(&mut *$tx))
                .await?;
            // Padded to few statement texts, repeating the last id.
            let n = $crate::group_commit::rows::padded(chunk.len());
            let sql = $crate::group_commit::rows::in_list_sql(
                "DELETE FROM outbox WHERE id IN ",
                n,
                "",
                $crate::group_commit::rows::anonymous(&$tx),
            );
            let mut q = $q::query(&sql);
            for i in 0..n {
                q = q.bind(chunk[i.min(chunk.len() - 1)].as_str());
            }
            q.execute($crate::counted::stmt(&mut *$tx)).await?;
        }
    }};
}
pub(crate) use complete_published;

#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: String,
    pub topic: String,
    pub event_type: String,
    pub payload: Value,
    /// Not published before this time (ms); `None`: as soon as committed.
    pub available_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRecord {
    pub id: String,
    pub tenant_id: String,
    pub order_id: String,
    pub topic: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    /// The traceparent of the transition that wrote it.
    pub trace_parent: Option<String>,
}

/// Messages claimed for publishing. On PostgreSQL their rows stay locked
/// until [`SqlStore::complete`]; dropping the claim releases them unpublished.
pub struct OutboxClaim {
    pub records: Vec<OutboxRecord>,
    tx: Option<Transaction<'static, Postgres>>,
}

impl OutboxClaim {
    /// A claim that holds no lock: for a store whose claims are exclusive
    /// by construction (one process, in memory).
    pub fn detached(records: Vec<OutboxRecord>) -> Self {
        Self { records, tx: None }
    }
}

const COLUMNS: &str =
    "id, tenant_id, order_id, topic, event_type, payload, created_at, trace_parent";

impl crate::direct::FromRow for OutboxRecord {
    /// [`COLUMNS`], in order.
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            tenant_id: row.get(1)?,
            order_id: row.get(2)?,
            topic: row.get(3)?,
            event_type: row.get(4)?,
            payload: row.get(5)?,
            created_at: row.get(6)?,
            trace_parent: row.get(7)?,
        })
    }
}

/// PostgreSQL: takes the relay's published messages out of the outbox, in
/// a transaction committed without waiting for its flush to disk
/// (`synchronous_commit` off for that transaction only). A crash that loses
/// the commit brings the messages back to be published again, with their
/// webhook deliveries: at-least-once delivery allows that, and a crash
/// between publishing and committing already does it. Before, each relay
/// round was a flush of its own.
/// (The setting is an uncorrelated subquery: a one-time filter, evaluated
/// before any row is read, whatever the plan.)
pub const DELETE_PUBLISHED_LAZY: &str = "DELETE FROM outbox
     WHERE (SELECT set_config('synchronous_commit', 'off', true)) = 'off' AND id = ANY($1)";

#[async_trait]
impl crate::contract::Outbox for SqlStore {
    async fn claim_outbox(&self, now: i64, limit: i64) -> Result<OutboxClaim> {
        match &self.backend {
            // The relay's every round: the few unpublished rows (published
            // ones are deleted), on the store's own read connection.
            Backend::Sqlite { readers, .. } => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL AND available_at <= $1
                     ORDER BY rowid LIMIT $2"
                );
                let records = readers.run(|db| {
                    crate::direct::run_ready(
                        crate::direct::query_as::<OutboxRecord>(&sql)
                            .bind(now)
                            .bind(limit)
                            .fetch_all(crate::counted::stmt(db)),
                    )?
                })?;
                Ok(OutboxClaim { records, tx: None })
            }
            Backend::Postgres(pool) => {
                let mut tx = crate::counted::tx(pool.begin().await?);
                let mut records = sqlx::query_as::<_, OutboxRecord>(&format!(
                    "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL AND available_at <= $1
                     ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(crate::counted::stmt(&mut *tx))
                .await?;
                if !records.is_empty() {
                    let orders: Vec<&str> = records
                        .iter()
                        .map(|r| r.order_id.as_str())
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect();
                    // Every due message of these orders, claimed or not, in order.
                    let queue: Vec<(String, String, String)> = sqlx::query_as(
                        "SELECT id, topic, order_id FROM outbox
                         WHERE published_at IS NULL AND available_at <= $1 AND order_id = ANY($2)
                         ORDER BY seq",
                    )
                    .bind(now)
                    .bind(&orders)
                    .fetch_all(crate::counted::stmt(&mut *tx))
                    .await?;
                    let keep = unbroken_runs(&records, &queue);
                    records.retain(|r| keep.contains(r.id.as_str()));
                }
                Ok(OutboxClaim {
                    records,
                    tx: Some(tx),
                })
            }
        }
    }

    async fn complete(&self, claim: OutboxClaim, now: i64) -> Result<()> {
        let ids: Vec<String> = claim.records.into_iter().map(|r| r.id).collect();
        match (claim.tx, &self.backend) {
            (Some(mut tx), _) => {
                if !ids.is_empty() {
                    // Each published event's webhook deliveries, in the
                    // transaction that takes it out of the outbox.
                    sqlx::query(&crate::webhooks::fan_out_sql(&self.backend))
                        .bind(&ids)
                        .bind(now)
                        .execute(crate::counted::stmt(&mut *tx))
                        .await?;
                    sqlx::query(DELETE_PUBLISHED_LAZY)
                        .bind(&ids)
                        .execute(crate::counted::stmt(&mut *tx))
                        .await?;
                }
                tx.commit().await?;
            }
            (None, Backend::Sqlite { .. }) => {
                // In the group-commit writer's next batch: SQLite has a
                // single writer, and this shares its transaction (and its
                // one fsync) with the saga writes ready then.
                if !ids.is_empty() {
                    self.write_published(ids, now).await?;
                }
            }
            (None, Backend::Postgres(_)) => {}
        }
        Ok(())
    }

    async fn release(&self, claim: OutboxClaim) -> Result<()> {
        if let Some(tx) = claim.tx {
            tx.rollback().await?;
        }
        Ok(())
    }

    async fn next_outbox_due(&self, now: i64) -> Result<Option<i64>> {
        // The relay's every round too; the unpublished rows are few.
        crate::readers::on_reader!(self, |q, db| {
            let due: Option<i64> = q::query_scalar(
                "SELECT MIN(available_at) FROM outbox WHERE published_at IS NULL AND available_at > $1",
            )
            .bind(now)
            .fetch_one(crate::counted::stmt(db))
            .await?;
            Ok(due)
        })
    }

    async fn oldest_due_unpublished(&self, now: i64) -> Result<Option<i64>> {
        super::on_pool!(self, read, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(available_at) FROM outbox WHERE published_at IS NULL AND available_at <= $1",
            )
            .bind(now)
            .fetch_one(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn unpublished_count(&self) -> Result<i64> {
        super::on_pool!(self, read, |pool| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(crate::counted::stmt(pool))
                    .await?,
            )
        })
    }

    async fn outbox_listener(&self) -> Result<Option<OutboxListener>> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen("oms_outbox").await?;
                Ok(Some(OutboxListener(listener)))
            }
            Backend::Sqlite { .. } => Ok(None),
        }
    }
}

/// Woken by every commit that adds outbox messages, on any host.
pub struct OutboxListener(sqlx::postgres::PgListener);

impl OutboxListener {
    /// Waits for the next commit; an error means the connection dropped
    /// (the listener reconnects on the next call).
    pub async fn recv(&mut self) -> Result<()> {
        self.0.recv().await?;
        Ok(())
    }
}

/// Of the claimed `records`, the ids to publish now: per (topic, order), the
/// claimed messages from the head of `queue` (all due messages of those
/// orders, oldest first) up to the first one someone else holds.
fn unbroken_runs(records: &[OutboxRecord], queue: &[(String, String, String)]) -> HashSet<String> {
    let claimed: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut blocked: HashSet<(&str, &str)> = HashSet::new();
    let mut keep = HashSet::new();
    for (id, topic, order) in queue {
        let stream = (topic.as_str(), order.as_str());
        if blocked.contains(&stream) {
            continue;
        }
        if claimed.contains(id.as_str()) {
            keep.insert(id.clone());
        } else {
            blocked.insert(stream);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, order: &str) -> OutboxRecord {
        OutboxRecord {
            id: id.into(),
            tenant_id: "t".into(),
            order_id: order.into(),
            topic: "e".into(),
            event_type: "x".into(),
            payload: "{}".into(),
            created_at: 0,
            trace_parent: None,
        }
    }

    fn q(id: &str, order: &str) -> (String, String, String) {
        (id.into(), "e".into(), order.into())
    }

    #[test]
    fn a_claim_keeps_each_orders_unbroken_run_only() {
        // a1 is held by another relay: a2 and a3 must wait for it. b2 is
        // held elsewhere: b1 goes, b3 waits.
        let claimed = [
            record("a2", "a"),
            record("a3", "a"),
            record("b1", "b"),
            record("b3", "b"),
            record("c1", "c"),
        ];
        let queue = [
            q("a1", "a"),
            q("b1", "b"),
            q("a2", "a"),
            q("b2", "b"),
            q("c1", "c"),
            q("a3", "a"),
            q("b3", "b"),
        ];
        let mut keep: Vec<String> = unbroken_runs(&claimed, &queue).into_iter().collect();
        keep.sort_unstable();
        assert_eq!(keep, vec!["b1", "c1"]);
    }
}
