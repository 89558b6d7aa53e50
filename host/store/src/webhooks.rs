//! Tenants' webhook endpoints and the deliveries of events to them. A
//! delivery row is written for each enabled endpoint that wants an event
//! when the relay publishes it, in the transaction that takes the event
//! out of the outbox ([`fan_out_sql`]), so none is lost or written twice.
//! The worker sends, for each endpoint and order, the oldest pending
//! delivery only: an order's events arrive in order.

use super::{Backend, Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    pub tenant_id: String,
    pub id: String,
    pub url: String,
    /// Comma-separated event types, or `*`.
    pub event_types: String,
    #[serde(skip)]
    pub secret: String,
    pub description: Option<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    pub tenant_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub order_id: String,
    pub event_type: String,
    /// The event's message as published (its envelope).
    pub payload: String,
    pub outbox_seq: i64,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// How an attempt at a delivery ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: i64,
    },
    /// Failed; tried again at `retry_at`, or given up on (`None`).
    Failed {
        status: Option<i64>,
        error: String,
        retry_at: Option<i64>,
    },
}

/// The statement that writes the deliveries of the outbox messages `$1`
/// (ids) at `$2` (now); `seq` is the outbox's order column.
pub(crate) fn fan_out_sql(backend: &Backend) -> String {
    // The deliveries' order: PostgreSQL's outbox sequence never goes back;
    // SQLite reuses row ids once the outbox has emptied, so there each
    // statement's rows come after every delivery written before (its one
    // relay completes in the outbox's order).
    let (ids, seq, found, order) = match backend {
        Backend::Postgres(_) => ("o.id = ANY($1)", "o.seq", "strpos", ""),
        Backend::Sqlite { .. } => (
            "o.id IN (SELECT value FROM json_each($1))",
            "(SELECT COALESCE(MAX(outbox_seq), 0) FROM webhook_deliveries) + o.rowid",
            "instr",
            " ORDER BY o.rowid",
        ),
    };
    format!(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, order_id, event_type, payload, outbox_seq, status, attempts, next_attempt_at, created_at)
         SELECT 'whd_' || e.id || '_' || o.id, o.tenant_id, e.id, o.id, o.order_id, o.event_type, o.payload, {seq}, 'pending', 0, $2, $2
         FROM outbox o JOIN webhook_endpoints e ON e.tenant_id = o.tenant_id AND e.status = 'enabled'
         WHERE {ids} AND o.topic IN ('oms.order-events.v1', 'oms.fulfilment-requests.v1')
           AND (e.event_types = '*' OR {found}(',' || e.event_types || ',', ',' || o.event_type || ',') > 0){order}
         ON CONFLICT (endpoint_id, event_id) DO NOTHING"
    )
}

const ENDPOINT: &str = "tenant_id, id, url, event_types, secret, description, status, disabled_reason, failing_since, created_at, updated_at";
const DELIVERY: &str = "id, tenant_id, endpoint_id, event_id, order_id, event_type, payload, outbox_seq, status, attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

/// Endpoints and deliveries.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Adds an endpoint unless its tenant has `max` already
    /// (`QuotaExceeded`); of concurrent creations past it, none gets in.
    async fn create_webhook(&self, e: &WebhookEndpoint, max: i64) -> Result<()>;
    async fn webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>>;
    /// `NotFound` for another tenant's.
    async fn webhook(&self, tenant: &TenantId, id: &str) -> Result<WebhookEndpoint>;
    /// Deletes it with its deliveries.
    async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<()>;
    /// `enabled` (failures forgotten) or `disabled` with a reason.
    async fn set_webhook_status(
        &self,
        tenant: &TenantId,
        id: &str,
        status: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<WebhookEndpoint>;
    /// Pending deliveries due at `now` to enabled endpoints, each the oldest
    /// pending one of its endpoint and order.
    async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<WebhookDelivery>>;
    /// Takes a due delivery until `until` (so one worker sends it): false
    /// when another took it first.
    async fn lease_delivery(&self, id: &str, seen_due: i64, until: i64) -> Result<bool>;
    /// Records an attempt, and the endpoint's run of failures with it.
    async fn record_attempt(&self, d: &WebhookDelivery, a: &Attempt, now: i64) -> Result<()>;
    /// An endpoint's latest deliveries, newest first.
    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint: &str,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>>;
    /// Deletes up to `limit` finished deliveries (delivered or given up)
    /// of events older than `before`; how many.
    async fn prune_deliveries(&self, before: i64, limit: i64) -> Result<u64>;
    /// Sends a delivery again now (pending, whatever it was).
    async fn redeliver(&self, tenant: &TenantId, endpoint: &str, id: &str, now: i64) -> Result<()>;
}

#[async_trait]
impl Webhooks for SqlStore {
    async fn create_webhook(&self, e: &WebhookEndpoint, max: i64) -> Result<()> {
        // Counted and inserted in one statement, with the tenant's
        // creations taking turns: SQLite has one writer; on PostgreSQL a
        // lock per tenant for the transaction.
        let insert = format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT})
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
             WHERE (SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1) < $12"
        );
        macro_rules! run {
            ($tx:ident) => {{
                let r = sqlx::query(&insert)
                    .bind(&e.tenant_id)
                    .bind(&e.id)
                    .bind(&e.url)
                    .bind(&e.event_types)
                    .bind(&e.secret)
                    .bind(&e.description)
                    .bind(&e.status)
                    .bind(&e.disabled_reason)
                    .bind(e.failing_since)
                    .bind(e.created_at)
                    .bind(e.updated_at)
                    .bind(max)
                    .execute(crate::counted::stmt(&mut *$tx))
                    .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::QuotaExceeded(format!(
                        "a tenant has at most {max} webhook endpoints"
                    )));
                }
                $tx.commit().await?;
            }};
        }
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = crate::counted::tx(pool.begin().await?);
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("webhooks:{}", e.tenant_id))
                    .execute(crate::counted::stmt(&mut *tx))
                    .await?;
                run!(tx);
            }
            Backend::Sqlite { write, turn, .. } => {
                let _turn = turn.lock().await;
                let mut tx = crate::counted::tx(write.begin().await?);
                run!(tx);
            }
        }
        Ok(())
    }

    async fn webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {ENDPOINT} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .bind(tenant.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn webhook(&self, tenant: &TenantId, id: &str) -> Result<WebhookEndpoint> {
        on_pool!(self, read, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ENDPOINT} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(crate::counted::stmt(pool))
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<()> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let gone =
                sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(id)
                    .execute(crate::counted::stmt(&mut *tx))
                    .await?;
            if gone.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2")
                .bind(tenant.as_str())
                .bind(id)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn set_webhook_status(
        &self,
        tenant: &TenantId,
        id: &str,
        status: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<WebhookEndpoint> {
        on_pool!(self, write, |pool| {
            sqlx::query_as(&format!(
                "UPDATE webhook_endpoints SET status = $3, disabled_reason = $4, failing_since = NULL, updated_at = $5
                 WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT}"
            ))
            .bind(tenant.as_str())
            .bind(id)
            .bind(status)
            .bind(reason)
            .bind(now)
            .fetch_optional(crate::counted::stmt(pool))
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<WebhookDelivery>> {
        // On PostgreSQL several relays publish an order's topics
        // independently, so an earlier event of the order may still be in the
        // outbox, its deliveries not yet written: a delivery waits for it too.
        // (SQLite's one relay completes in the outbox's order.)
        let earlier = match &self.backend {
            Backend::Postgres(_) => {
                "AND NOT EXISTS (SELECT 1 FROM outbox ob
                   WHERE ob.order_id = d.order_id AND ob.published_at IS NULL
                     AND ob.tenant_id = d.tenant_id AND ob.seq < d.outbox_seq
                     AND ob.topic IN ('oms.order-events.v1', 'oms.fulfilment-requests.v1'))"
            }
            Backend::Sqlite { .. } => "",
        };
        let sql = format!(
            "SELECT {} FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.status = 'enabled'
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                   WHERE x.tenant_id = d.tenant_id AND x.endpoint_id = d.endpoint_id AND x.order_id = d.order_id
                     AND x.status = 'pending' AND x.outbox_seq < d.outbox_seq)
               {earlier}
             ORDER BY d.next_attempt_at, d.outbox_seq LIMIT $2",
            DELIVERY
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&sql)
                .bind(now)
                .bind(limit)
                .fetch_all(crate::counted::stmt(pool))
                .await?)
        })
    }

    async fn lease_delivery(&self, id: &str, seen_due: i64, until: i64) -> Result<bool> {
        on_pool!(self, write, |pool| {
            let r = sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $3
                 WHERE id = $1 AND status = 'pending' AND next_attempt_at = $2",
            )
            .bind(id)
            .bind(seen_due)
            .bind(until)
            .execute(crate::counted::auto(pool))
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    async fn record_attempt(&self, d: &WebhookDelivery, a: &Attempt, now: i64) -> Result<()> {
        let (status, next, last_status, error, delivered, ok) = match a {
            Attempt::Delivered { status } => {
                ("delivered", now, Some(*status), None, Some(now), true)
            }
            Attempt::Failed {
                status,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                retry_at.unwrap_or(now),
                *status,
                Some(error.as_str()),
                None,
                false,
            ),
        };
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3,
                     last_status = $4, last_error = $5, delivered_at = $6
                 WHERE id = $1",
            )
            .bind(&d.id)
            .bind(status)
            .bind(next)
            .bind(last_status)
            .bind(error)
            .bind(delivered)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            // The endpoint's run of failures: ended by a success, begun by
            // the first failure after one.
            let endpoint = if ok {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE tenant_id = $1 AND id = $2",
                )
            } else {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $3) WHERE tenant_id = $1 AND id = $2",
                )
                .bind(&d.tenant_id)
                .bind(&d.endpoint_id)
                .bind(now)
            };
            let endpoint = if ok {
                endpoint.bind(&d.tenant_id).bind(&d.endpoint_id)
            } else {
                endpoint
            };
            endpoint.execute(crate::counted::stmt(&mut *tx)).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint: &str,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {DELIVERY} FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2
                 ORDER BY outbox_seq DESC, id LIMIT $3"
            ))
            .bind(tenant.as_str())
            .bind(endpoint)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn prune_deliveries(&self, before: i64, limit: i64) -> Result<u64> {
        on_pool!(self, write, |pool| {
            let r = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE id IN (
                     SELECT id FROM webhook_deliveries
                     WHERE status <> 'pending' AND created_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(limit)
            .execute(crate::counted::auto(pool))
            .await?;
            Ok(r.rows_affected())
        })
    }

    async fn redeliver(&self, tenant: &TenantId, endpoint: &str, id: &str, now: i64) -> Result<()> {
        on_pool!(self, write, |pool| {
            let r = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3",
            )
            .bind(tenant.as_str())
            .bind(endpoint)
            .bind(id)
            .bind(now)
            .execute(crate::counted::auto(pool))
            .await?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }
}
