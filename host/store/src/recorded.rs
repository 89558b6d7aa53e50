//! Recorded production plugin calls, for `oms plugin replay`: kept per
//! tenant and slot up to a bound, oldest pruned first.

use super::{Result, SqlStore, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::{Deserialize, Serialize};

/// One call as the plugin saw it and as it answered. `input` and `output`
/// are JSON documents (see `plugins::calls`); `verdict` is the comparable
/// form of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCall {
    pub tenant_id: String,
    pub slot: String,
    pub version: String,
    pub order_id: String,
    pub input: String,
    pub output: String,
    pub verdict: String,
    pub fuel_used: i64,
    pub duration_us: i64,
    pub at: i64,
}

const COLUMNS: &str =
    "tenant_id, slot, version, order_id, input, output, verdict, fuel_used, duration_us, at";

/// Inserts recorded plugin calls `$calls` inside `$tx` through module
/// `$q`'s queries (`sqlx`, or the writer's `own`): many calls to a
/// statement, a few statements per batch rather than one per call.
macro_rules! insert_recorded {
    ($q:ident, $tx:ident, $calls:expr) => {{
        use $crate::group_commit::rows::{Value, insert_rows};
        let calls: &[$crate::RecordedCall] = $calls;
        let ids: Vec<String> = calls
            .iter()
            .map(|_| format!("call_{}", oms_clock::monotonic_ulid()))
            .collect();
        let rows: Vec<Vec<Value<'_>>> = calls
            .iter()
            .zip(&ids)
            .map(|(c, id)| {
                vec![
                    Value::Text(id),
                    Value::Text(&c.tenant_id),
                    Value::Text(&c.slot),
                    Value::Text(&c.version),
                    Value::Text(&c.order_id),
                    Value::Text(&c.input),
                    Value::Text(&c.output),
                    Value::Text(&c.verdict),
                    Value::Int(c.fuel_used),
                    Value::Int(c.duration_us),
                    Value::Int(c.at),
                ]
            })
            .collect();
        insert_rows!(
            $q,
            $tx,
            "plugin_calls",
            $crate::recorded::RECORDED_COLUMNS,
            &rows
        );
    }};
}
pub(crate) use insert_recorded;

/// Up to `limit` of `tenant`'s recorded calls in `slot` to delete, the
/// oldest first, none newer than `cutoff`; `sql` is the backend's text of
/// it (`Dialect::prune_recorded`). A write of the group-commit writer's.
pub(crate) struct PruneRecorded {
    pub(crate) sql: &'static str,
    pub(crate) tenant: String,
    pub(crate) slot: String,
    pub(crate) cutoff: String,
    pub(crate) limit: i64,
}

/// Runs a [`PruneRecorded`] inside `$tx` through module `$q`'s queries;
/// evaluates to the rows deleted.
macro_rules! delete_recorded {
    ($q:ident, $tx:ident, $prune:expr) => {{
        let prune: &$crate::recorded::PruneRecorded = $prune;
        let done = $q::query(prune.sql)
            .bind(prune.tenant.as_str())
            .bind(prune.slot.as_str())
            .bind(prune.cutoff.as_str())
            .bind(prune.limit)
            .execute($crate::counted::stmt(&mut *$tx))
            .await?;
        i64::try_from(done.rows_affected()).unwrap_or(i64::MAX)
    }};
}
pub(crate) use delete_recorded;

pub(crate) const RECORDED_COLUMNS: &str =
    "id, tenant_id, slot, version, order_id, input, output, verdict, fuel_used, duration_us, at";

/// Recorded calls one pruning statement deletes at most. Each is a member
/// of a group-commit batch (sharing its transaction and its flush), the
/// next one sent once it is answered: at most one per batch, so a batch
/// carrying one takes a fraction of a millisecond longer, and the saga
/// writes queued meanwhile go in the batches between.
const PRUNE_CHUNK: i64 = 200;

impl SqlStore {
    /// The first tenant and slot with recorded calls after `after` (or the
    /// first of all), in index order: a seek, not a scan.
    async fn next_recorded_slot(
        &self,
        after: Option<&(String, String)>,
    ) -> Result<Option<(String, String)>> {
        Ok(on_pool!(self, read, |pool| match after {
            None => {
                sqlx::query_as(
                    "SELECT tenant_id, slot FROM plugin_calls ORDER BY tenant_id, slot LIMIT 1",
                )
                .fetch_optional(crate::counted::stmt(pool))
                .await?
            }
            Some((tenant, slot)) => {
                sqlx::query_as(
                    "SELECT tenant_id, slot FROM plugin_calls
                     WHERE (tenant_id, slot) > ($1, $2)
                     ORDER BY tenant_id, slot LIMIT 1",
                )
                .bind(tenant)
                .bind(slot)
                .fetch_optional(crate::counted::stmt(pool))
                .await?
            }
        }))
    }
}

#[async_trait]
impl crate::contract::Recordings for SqlStore {
    async fn record_calls(&self, calls: &[RecordedCall]) -> Result<()> {
        // In the group-commit writer's next batch, on both databases: they
        // share its transaction and its one durable commit. A transaction of
        // their own held SQLite's write connection, fsync included, while
        // saga writes waited; on PostgreSQL it was a commit (an fsync) of its
        // own for every few calls, a third of the server's commits.
        self.write_recorded(calls.to_vec()).await
    }

    async fn recorded_calls(
        &self,
        tenant: &TenantId,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<RecordedCall>> {
        let mut calls: Vec<RecordedCall> = on_pool!(self, read, |pool| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM plugin_calls WHERE tenant_id = $1 AND slot = $2 ORDER BY id DESC LIMIT $3"
            ))
            .bind(tenant.as_str())
            .bind(slot)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?
        });
        calls.reverse();
        Ok(calls)
    }

    async fn prune_recorded_calls(&self, keep: i64) -> Result<u64> {
        // Slot by slot, through the index on (tenant, slot, id): the newest
        // call past `keep` found by walking it, then everything from there
        // back deleted a chunk at a time in the writer's batches. Before,
        // one statement ranked every recorded call (a window over the whole
        // table) and deleted all the excess at once: on SQLite that held
        // the write connection, and every group-commit batch behind it (new
        // orders' among them), for 350-390 ms every 30 s at 1,000 orders/s;
        // chunks as transactions of their own on the write connection still
        // stalled the writer for each hand-over (README, the seventeenth
        // session).
        let mut deleted = 0;
        let mut after: Option<(String, String)> = None;
        while let Some((tenant, slot)) = self.next_recorded_slot(after.as_ref()).await? {
            let cutoff: Option<String> = on_pool!(self, read, |pool| {
                sqlx::query_scalar(
                    "SELECT id FROM plugin_calls WHERE tenant_id = $1 AND slot = $2
                     ORDER BY id DESC LIMIT 1 OFFSET $3",
                )
                .bind(&tenant)
                .bind(&slot)
                .bind(keep.max(0))
                .fetch_optional(crate::counted::stmt(pool))
                .await?
            });
            if let Some(cutoff) = cutoff {
                loop {
                    let gone = self
                        .write_prune(tenant.clone(), slot.clone(), cutoff.clone(), PRUNE_CHUNK)
                        .await?;
                    deleted += gone;
                    if gone < PRUNE_CHUNK as u64 {
                        break;
                    }
                }
            }
            after = Some((tenant, slot));
        }
        Ok(deleted)
    }
}
