//! Orders: creation (with its idempotency key, in the same transaction),
//! reads, history and payments.

use super::transition::Transition;
use super::{Backend, Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::{OrderId, TenantId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRecord {
    pub tenant_id: String,
    pub id: String,
    pub customer_id: String,
    pub currency: String,
    pub total_minor: i64,
    pub status: String,
    pub payment_status: String,
    pub fulfillment_status: String,
    pub draft: String,
    pub violations: Option<String>,
    pub cancellation_reason: Option<String>,
    pub shipment: Option<String>,
    pub saga_state: String,
    pub saga_status: String,
    pub version: i64,
    pub event_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The W3C traceparent the order was placed in (its saga's steps
    /// continue that trace); `None` when no trace was exported.
    pub trace_parent: Option<String>,
    /// The tenant's sequential number for it (`None` for orders placed
    /// before numbers existed).
    pub order_number: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderEventRecord {
    pub seq: i64,
    pub event_type: String,
    pub data: String,
    pub at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRecord {
    pub id: String,
    pub op: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub provider_reference: Option<String>,
    pub error_code: Option<String>,
    pub idempotency_key: String,
    pub plugin_version: Option<String>,
    pub at: i64,
    /// How comparing it with the provider came out; `None` until then.
    pub reconciliation: Option<String>,
}

/// A new order: its row, and the effects of starting its saga.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub record: OrderRecord,
    /// Events, commands and outbox rows; `expected_version` is ignored.
    pub effects: Transition,
    /// The idempotency key taken for this request and the response to store.
    pub idempotency: Option<(String, u16, String)>,
}

/// What a request carrying an `Idempotency-Key` may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is now ours: go ahead.
    Fresh,
    /// Done before: send the stored response again.
    Replay { status: u16, body: String },
    /// Another request with this key is running now.
    InFlight,
    /// The key was used with a different body.
    Mismatch,
}

/// The fraud check's read of a customer's recent orders (tenant, customer,
/// currency, since, the order to leave out): an index range by the key
/// `orders_by_customer` is on. The key is that index's expression exactly,
/// so no other index can serve the read, whatever the planner's statistics
/// (see migration 0018). Public for the test of its plan.
pub const CUSTOMER_HISTORY: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(total_minor), 0) AS BIGINT)
     FROM orders
     WHERE tenant_id || ':' || customer_id = $1 || ':' || $2
       AND currency = $3 AND created_at >= $4 AND id <> $5";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerHistory {
    pub orders: i64,
    pub spend: i64,
}

/// Which of a tenant's orders a list shows; every filter given must match.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderFilter<'a> {
    pub status: Option<&'a str>,
    pub saga_status: Option<&'a str>,
    pub customer: Option<&'a str>,
}

impl OrderFilter<'_> {
    pub fn matches(&self, o: &OrderRecord) -> bool {
        self.status.is_none_or(|s| o.status == s)
            && self.saga_status.is_none_or(|s| o.saga_status == s)
            && self.customer.is_none_or(|c| o.customer_id == c)
    }
}

/// The columns of `orders` (the group-commit writer's rows follow this order).
pub(crate) const ORDER_COLUMNS: &str = "tenant_id, id, customer_id, currency, total_minor, status, payment_status, \
    fulfillment_status, draft, violations, cancellation_reason, shipment, saga_state, saga_status, \
    version, event_seq, created_at, updated_at, trace_parent, order_number";

/// An order row read through rusqlite: [`ORDER_COLUMNS`] in order, from
/// column `at` on.
pub(crate) fn order_from(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<OrderRecord> {
    Ok(OrderRecord {
        tenant_id: row.get(at)?,
        id: row.get(at + 1)?,
        customer_id: row.get(at + 2)?,
        currency: row.get(at + 3)?,
        total_minor: row.get(at + 4)?,
        status: row.get(at + 5)?,
        payment_status: row.get(at + 6)?,
        fulfillment_status: row.get(at + 7)?,
        draft: row.get(at + 8)?,
        violations: row.get(at + 9)?,
        cancellation_reason: row.get(at + 10)?,
        shipment: row.get(at + 11)?,
        saga_state: row.get(at + 12)?,
        saga_status: row.get(at + 13)?,
        version: row.get(at + 14)?,
        event_seq: row.get(at + 15)?,
        created_at: row.get(at + 16)?,
        updated_at: row.get(at + 17)?,
        trace_parent: row.get(at + 18)?,
        order_number: row.get(at + 19)?,
    })
}

/// Completes a new order's idempotency key inside `$tx`, with the answer
/// stored for replays.
macro_rules! complete_idempotency {
    ($q:ident, $tx:ident, $new:expr) => {{
        let new: &$crate::NewOrder = $new;
        if let Some((key, status, body)) = &new.idempotency {
            $q::query(
                "UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4
                 WHERE tenant_id = $1 AND idem_key = $2",
            )
            .bind(&new.record.tenant_id)
            .bind(key)
            .bind(i64::from(*status))
            .bind(body)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?;
        }
    }};
}
pub(crate) use complete_idempotency;

/// Takes a count of a tenant's order numbers; answers the last.
pub(crate) const ALLOCATE_NUMBERS: &str =
    "INSERT INTO order_numbers (tenant_id, last) VALUES ($1, $2)
     ON CONFLICT (tenant_id) DO UPDATE SET last = order_numbers.last + excluded.last
     RETURNING last";

/// [`ALLOCATE_NUMBERS`] on PostgreSQL, committed without waiting for its
/// flush to disk (`synchronous_commit` off for its own transaction only).
/// Safe because nothing durable can depend on an allocation that is not:
/// an order holding one of its numbers is written by a later transaction,
/// which waits for its own commit record to be flushed, and the WAL is
/// flushed in order, so the allocation's record with it. A crash can lose
/// only allocations no acknowledged order holds (their numbers are handed
/// out again). Before, each burst of orders waited for a flush of its own
/// before its orders even reached the writer.
pub const ALLOCATE_NUMBERS_LAZY: &str =
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true))
     INSERT INTO order_numbers (tenant_id, last) SELECT $1, $2 FROM lazy
     ON CONFLICT (tenant_id) DO UPDATE SET last = order_numbers.last + excluded.last
     RETURNING last";

/// Takes `$count` more of `$tenant`'s order numbers inside `$tx` through
/// module `$q`'s queries; evaluates to the first of them.
macro_rules! allocate_numbers {
    ($q:ident, $tx:ident, $tenant:expr, $count:expr) => {{
        let (tenant, count): (&oms_domain::TenantId, i64) = ($tenant, $count);
        let last: i64 = $q::query_scalar($crate::orders::ALLOCATE_NUMBERS)
            .bind(tenant.as_str())
            .bind(count)
            .fetch_one(crate::counted::stmt(&mut *$tx))
            .await?;
        last - count + 1
    }};
}
pub(crate) use allocate_numbers;

/// Moves `$tenant`'s stored counter up to `$number` inside `$tx` with
/// `$sql` (`Dialect::advance_numbers`, where numbers are handed out from
/// memory).
macro_rules! advance_numbers {
    ($q:ident, $tx:ident, $sql:expr, $tenant:expr, $number:expr) => {{
        let (tenant, number): (&str, i64) = ($tenant, $number);
        $q::query($sql)
            .bind(tenant)
            .bind(number)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?;
    }};
}
pub(crate) use advance_numbers;

#[async_trait]
impl crate::contract::Orders for SqlStore {
    async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        hash: &str,
        now: i64,
        stale_after_ms: i64,
    ) -> Result<IdempotencyBegin> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, state, created_at)
                 VALUES ($1, $2, $3, 'in_flight', $4) ON CONFLICT (tenant_id, idem_key) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(hash)
            .bind(now)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            if inserted.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Fresh);
            }
            let (stored_hash, state, status, body, created_at): (
                String,
                String,
                Option<i64>,
                Option<String>,
                i64,
            ) = sqlx::query_as(
                "SELECT request_hash, state, response_status, response_body, created_at
                 FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2",
            )
            .bind(tenant.as_str())
            .bind(key)
            .fetch_one(crate::counted::stmt(&mut *tx))
            .await?;
            let outcome = if created_at <= now - crate::contract::IDEMPOTENCY_KEY_TTL_MS {
                // Expired: the key starts over for this request (unless a
                // concurrent request took it over first).
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET request_hash = $3, state = 'in_flight',
                            response_status = NULL, response_body = NULL, created_at = $4
                     WHERE tenant_id = $1 AND idem_key = $2 AND created_at = $5",
                )
                .bind(tenant.as_str())
                .bind(key)
                .bind(hash)
                .bind(now)
                .bind(created_at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
                if taken.rows_affected() == 1 {
                    IdempotencyBegin::Fresh
                } else {
                    IdempotencyBegin::InFlight
                }
            } else if stored_hash != hash {
                IdempotencyBegin::Mismatch
            } else if let (Some(status), Some(body)) = (status, body) {
                IdempotencyBegin::Replay {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }
            } else if state == "in_flight" && created_at < now - stale_after_ms {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET created_at = $3 WHERE tenant_id = $1 AND idem_key = $2 AND created_at = $4 AND state = 'in_flight'",
                )
                .bind(tenant.as_str())
                .bind(key)
                .bind(now)
                .bind(created_at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
                if taken.rows_affected() == 1 {
                    IdempotencyBegin::Fresh
                } else {
                    IdempotencyBegin::InFlight
                }
            } else {
                IdempotencyBegin::InFlight
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    async fn abandon_idempotent(&self, tenant: &TenantId, key: &str) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2 AND state = 'in_flight'")
                .bind(tenant.as_str())
                .bind(key)
                .execute(crate::counted::auto(pool))
                .await?;
        });
        Ok(())
    }

    async fn prune_idempotency_keys(&self, before: i64, limit: i64) -> Result<u64> {
        let sql = match &self.backend {
            crate::Backend::Sqlite { .. } => {
                "DELETE FROM idempotency_keys WHERE rowid IN
                 (SELECT rowid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
            }
            crate::Backend::Postgres(_) => {
                "DELETE FROM idempotency_keys WHERE ctid IN
                 (SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
            }
        };
        on_pool!(self, write, |pool| {
            Ok(sqlx::query(sql)
                .bind(before)
                .bind(limit)
                .execute(crate::counted::auto(pool))
                .await?
                .rows_affected())
        })
    }

    async fn allocate_order_numbers(&self, tenant: &TenantId, count: i64) -> Result<i64> {
        match &self.backend {
            // One process writes an embedded database, so the counter's
            // next value is kept here and handed out at once: before, each
            // burst of orders waited for a batch commit to number them, and
            // then another to be written. Each order's own write moves the
            // stored counter past its number, in its transaction
            // (`Dialect::advance_numbers`), so no number is handed out twice,
            // across restarts too; one whose order was never written is
            // handed out again after a restart, held by no order. A tenant's
            // first numbers in this process are taken from the stored
            // counter in the writer's next batch (its statement committed
            // on its own would hold the one write connection, fsync
            // included, while saga writes waited).
            Backend::Sqlite { .. } => {
                let mut next = self.next_numbers.lock().await;
                let first = match next.get(tenant.as_str()) {
                    Some(first) => *first,
                    None => self.write_numbers(tenant, count).await?,
                };
                next.insert(tenant.to_string(), first + count);
                Ok(first)
            }
            Backend::Postgres(pool) => {
                let last: i64 = sqlx::query_scalar(ALLOCATE_NUMBERS_LAZY)
                    .bind(tenant.as_str())
                    .bind(count)
                    .fetch_one(crate::counted::auto(pool))
                    .await?;
                Ok(last - count + 1)
            }
        }
    }

    async fn create_order(&self, new: &NewOrder) -> Result<()> {
        self.write_order(new).await
    }

    async fn order(&self, tenant: &TenantId, id: &OrderId) -> Result<OrderRecord> {
        on_pool!(self, read, |pool| {
            sqlx::query_as::<_, OrderRecord>(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(crate::counted::stmt(pool))
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    async fn orders_in_saga_status(
        &self,
        saga_status: &str,
        tenant: Option<&TenantId>,
        placed_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, OrderRecord>(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                 WHERE saga_status = $1 AND ($2 IS NULL OR tenant_id = $2)
                   AND ($4 IS NULL OR created_at < $4)
                 ORDER BY COALESCE(saga_status_at, created_at), id LIMIT $3"
            ))
            .bind(saga_status)
            .bind(tenant.map(TenantId::as_str))
            .bind(limit)
            .bind(placed_before)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn list_orders(
        &self,
        tenant: &TenantId,
        filter: &OrderFilter<'_>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, OrderRecord>(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                 WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3)
                   AND ($5 IS NULL OR saga_status = $5) AND ($6 IS NULL OR customer_id = $6)
                 ORDER BY id DESC LIMIT $4"
            ))
            .bind(tenant.as_str())
            .bind(filter.status)
            .bind(after)
            .bind(limit)
            .bind(filter.saga_status)
            .bind(filter.customer)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn order_events(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<OrderEventRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, OrderEventRecord>(
                "SELECT seq, event_type, data, at FROM order_events WHERE tenant_id = $1 AND order_id = $2 ORDER BY seq",
            )
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn payments(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<PaymentRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, PaymentRecord>(
                "SELECT id, op, amount, currency, status, provider_reference, error_code, idempotency_key, plugin_version, at, reconciliation
                 FROM payments WHERE tenant_id = $1 AND order_id = $2 ORDER BY id",
            )
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn customer_history(
        &self,
        tenant: &TenantId,
        customer: &str,
        currency: &str,
        since: i64,
        exclude: &OrderId,
    ) -> Result<CustomerHistory> {
        // Read on every fraud check.
        crate::readers::on_reader!(self, |q, db| {
            let (orders, spend): (i64, i64) = q::query_as(CUSTOMER_HISTORY)
                .bind(tenant.as_str())
                .bind(customer)
                .bind(currency)
                .bind(since)
                .bind(exclude.as_str())
                .fetch_one(crate::counted::stmt(db))
                .await?;
            Ok(CustomerHistory { orders, spend })
        })
    }

    async fn count_sagas_by_tenant(&self, saga_status: &str) -> Result<Vec<(String, i64)>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(
                "SELECT tenant_id, COUNT(*) FROM orders WHERE saga_status = $1
                 GROUP BY tenant_id ORDER BY tenant_id",
            )
            .bind(saga_status)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }
}
