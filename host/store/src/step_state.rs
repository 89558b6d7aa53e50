//! The state of tenants' own saga steps. Written only by a saga transition
//! ([`write_step_state`], in the transaction that records the step's or its
//! compensation's outcome), so a step retried or cut off by a crash never
//! applies its writes twice; read by the step's next calls and the API.

use super::{Result, SqlStore};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

/// One write of a step's call, committed with its transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepStateWrite {
    pub step: String,
    pub key: String,
    pub op: StepStateOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStateOp {
    Put(String),
    Delete,
    /// Added to the decimal integer stored then (absent: 0), so concurrent
    /// sagas' additions all count.
    Add(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct StepStateRecord {
    pub step: String,
    pub key: String,
    pub value: String,
    pub updated_at: i64,
}

#[async_trait]
pub trait StepStates: Send + Sync {
    /// The committed value of `key` in the tenant's `step` namespace.
    async fn step_state(
        &self,
        tenant: &TenantId,
        step: &str,
        key: &str,
    ) -> Result<Option<StepStateRecord>>;
}

/// Applies a transition's step-state writes inside `$tx`, a statement
/// each. A macro, so the same text compiles for both backends' transaction
/// types. An addition to a value that is not an integer fails the
/// transaction on PostgreSQL (the step then runs again, and sees it);
/// SQLite counts such a value as 0.
macro_rules! write_step_state {
    ($tx:ident, $t:expr) => {{
        let t: &$crate::Transition = $t;
        for w in &t.step_state {
            $crate::step_state::write_step_op!(
                sqlx,
                $tx,
                t.tenant.as_str(),
                &w.step,
                &w.key,
                &w.op,
                t.now
            );
        }
    }};
}

/// The statement that adds to a value (absent: 0) the number inserted as
/// text: shared by a write alone and a batch's folded additions.
pub(crate) const ADD_ON_CONFLICT: &str = " ON CONFLICT (tenant_id, step, state_key) DO UPDATE
     SET value = CAST(CAST(step_state.value AS BIGINT) + CAST(excluded.value AS BIGINT) AS TEXT),
         updated_at = excluded.updated_at";
/// The statement that replaces a value.
pub(crate) const PUT_ON_CONFLICT: &str = " ON CONFLICT (tenant_id, step, state_key) DO UPDATE
     SET value = excluded.value, updated_at = excluded.updated_at";

/// One step-state write of `$tenant`'s `$step` at `$key` inside `$tx`.
macro_rules! write_step_op {
    ($q:ident, $tx:ident, $tenant:expr, $step:expr, $key:expr, $op:expr, $now:expr) => {{
        let (tenant, step, key, now): (&str, &str, &str, i64) = ($tenant, $step, $key, $now);
        // A put inserts its value, an addition its amount (added on conflict).
        let upsert = match $op {
            $crate::StepStateOp::Put(value) => Some((value.clone(), $crate::step_state::PUT_ON_CONFLICT)),
            $crate::StepStateOp::Add(delta) => Some((delta.to_string(), $crate::step_state::ADD_ON_CONFLICT)),
            $crate::StepStateOp::Delete => None,
        };
        match upsert {
            Some((value, on_conflict)) => {
                let sql = format!(
                    "INSERT INTO step_state (tenant_id, step, state_key, value, updated_at) VALUES ($1, $2, $3, $4, $5){on_conflict}"
                );
                $q::query(&sql)
                    .bind(tenant)
                    .bind(step)
                    .bind(key)
                    .bind(value)
                    .bind(now)
                    .execute(crate::counted::stmt(&mut *$tx))
                    .await?;
            }
            None => {
                $q::query(
                    "DELETE FROM step_state WHERE tenant_id = $1 AND step = $2 AND state_key = $3",
                )
                .bind(tenant)
                .bind(step)
                .bind(key)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
            }
        }
    }};
}
pub(crate) use write_step_op;
pub(crate) use write_step_state;

#[async_trait]
impl StepStates for SqlStore {
    async fn step_state(
        &self,
        tenant: &TenantId,
        step: &str,
        key: &str,
    ) -> Result<Option<StepStateRecord>> {
        // Read by a custom step's every call: one row by its key.
        crate::readers::on_reader!(self, |q, db| {
            let row: Option<(String, String, String, i64)> = q::query_as(
                "SELECT step, state_key, value, updated_at FROM step_state
                 WHERE tenant_id = $1 AND step = $2 AND state_key = $3",
            )
            .bind(tenant.as_str())
            .bind(step)
            .bind(key)
            .fetch_optional(crate::counted::stmt(db))
            .await?;
            Ok(row.map(|(step, key, value, updated_at)| StepStateRecord {
                step,
                key,
                value,
                updated_at,
            }))
        })
    }
}
