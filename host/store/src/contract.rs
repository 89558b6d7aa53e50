//! The storage contract: one trait per area, so each part of the engine
//! names the tables it touches (`&dyn Orders`, `&dyn SagaLog`, …) and can be
//! exercised against another implementation. [`crate::SqlStore`] implements
//! them all for SQLite and PostgreSQL; `tests/storage.rs` is the contract's
//! suite, run on both. Times are milliseconds since the epoch, passed in by
//! the caller: the store reads no clock.

use crate::{
    ActivationChange, ActivationRecord, AuditRecord, CanaryCall, CanaryRecord, CanaryWindow,
    CommandRecord, CustomerHistory, IdempotencyBegin, Mismatch, NewOrder, OrderEventRecord,
    OrderFilter, OrderRecord, OutboxClaim, OutboxListener, PaymentRecord, PluginLogRecord,
    PluginQuota, PluginStatsRecord, PluginVersionRecord, RecordedCall, Result, ShadowResult,
    StockLevel, Transition, Unreconciled,
};
use crate::{
    ApiKeyRecord, NewApiKey, OperatorAuditRecord, OperatorRecord, TenantRecord, TenantWrite,
    TenantWritten,
};
use async_trait::async_trait;
use oms_domain::{OrderId, Sku, TenantId, WarehouseId};

/// The database as a whole.
#[async_trait]
pub trait Database: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend_name(&self) -> &'static str;

    /// For readiness checks: one round trip to the database.
    async fn ping(&self) -> Result<()>;

    /// Saga commands are written to the outbox too, for a consumer group
    /// (Kafka); a command applied before its message was published then
    /// takes the message with it.
    fn set_commands_in_outbox(&self, on: bool);
}

/// How long an idempotency key holds (from its first use): 24 hours, as
/// at card processors. After that the key is free again, whatever request
/// used it, and the row is pruned.
pub const IDEMPOTENCY_KEY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Orders, their history, payments and idempotency keys.
#[async_trait]
pub trait Orders: Send + Sync {
    /// Takes an idempotency key for a request. A key left `in_flight` by a
    /// crashed request for longer than `stale_after_ms` may be taken over;
    /// a key first used [`IDEMPOTENCY_KEY_TTL_MS`] or more before `now` has
    /// expired and is taken as new.
    async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key: &str,
        hash: &str,
        now: i64,
        stale_after_ms: i64,
    ) -> Result<IdempotencyBegin>;
    /// Frees a key whose request failed before anything was stored.
    async fn abandon_idempotent(&self, tenant: &TenantId, key: &str) -> Result<()>;
    /// Deletes up to `limit` idempotency keys first used before `before`;
    /// how many.
    async fn prune_idempotency_keys(&self, before: i64, limit: i64) -> Result<u64>;
    /// Hands out `count` (≥ 1) consecutive order numbers of `tenant`, the
    /// first of them returned; numbers are never handed out twice.
    async fn allocate_order_numbers(&self, tenant: &TenantId, count: i64) -> Result<i64>;
    /// Stores a new order, its first saga command and events, and completes
    /// its idempotency key, all in one transaction.
    async fn create_order(&self, new: &NewOrder) -> Result<()>;

    async fn order(&self, tenant: &TenantId, id: &OrderId) -> Result<OrderRecord>;
    /// Orders whose saga is in `saga_status` (of one tenant, or of all;
    /// placed before `placed_before` if given), the longest in that state
    /// first: what operators look at.
    async fn orders_in_saga_status(
        &self,
        saga_status: &str,
        tenant: Option<&TenantId>,
        placed_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>>;

    /// Newest first; `after` is the last id of the previous page.
    async fn list_orders(
        &self,
        tenant: &TenantId,
        filter: &OrderFilter<'_>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>>;

    async fn order_events(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<OrderEventRecord>>;

    async fn payments(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<PaymentRecord>>;
    /// The customer's other orders with this tenant since `since`, in `currency`.
    async fn customer_history(
        &self,
        tenant: &TenantId,
        customer: &str,
        currency: &str,
        since: i64,
        exclude: &OrderId,
    ) -> Result<CustomerHistory>;
    /// How many orders of each tenant have their saga in `saga_status`
    /// (tenants with none are left out), by tenant id.
    async fn count_sagas_by_tenant(&self, saga_status: &str) -> Result<Vec<(String, i64)>>;
}

/// Saga transitions and the commands they leave to carry out.
#[async_trait]
pub trait SagaLog: Send + Sync {
    /// Commits `t` or nothing. Errors: [`StoreError::Duplicate`] (command
    /// already consumed), [`StoreError::Conflict`] (stale version),
    /// [`StoreError::InsufficientStock`] (reservation refused).
    async fn commit_transition(&self, t: &Transition) -> Result<i64>;
    /// [`SagaLog::commit_transition`] of a transition the caller shares:
    /// a store that hands it to another task keeps a reference rather than
    /// a copy (the saga path's every transition; the copy was 2 % of the
    /// host's CPU at saturation).
    async fn commit_shared(&self, t: std::sync::Arc<Transition>) -> Result<i64> {
        self.commit_transition(&t).await
    }
    /// Commands due at `now`, oldest first.
    async fn due_commands(&self, now: i64, limit: i64) -> Result<Vec<CommandRecord>>;
    /// The dispatcher's read: for each `(tenant, limit)`, that tenant's
    /// commands due at `now`, oldest first, at most `limit` of them,
    /// leaving out those in `skip` (running here, or waiting out a retry);
    /// each with its order, read in the same snapshot (a command and its
    /// order change in one transaction, so the order is in the state the
    /// command was issued for). Per tenant, so one tenant's backlog never
    /// hides another's due work.
    async fn due_work(
        &self,
        tenants: &[(TenantId, i64)],
        skip: &[String],
        now: i64,
    ) -> Result<Vec<(CommandRecord, OrderRecord)>>;
    /// Takes a lease on an overdue command: moves its due time to `until`
    /// if no one else did since it was read as due at `seen_due`. Only the
    /// host that gets `true` runs it now; if that host dies, the command is
    /// overdue again after `until`.
    async fn lease_command(&self, id: &str, seen_due: i64, until: i64) -> Result<bool>;
    /// When the next command falls due, if any is waiting.
    async fn next_command_at(&self) -> Result<Option<i64>>;
    /// The order a command is for, if the command is still waiting, read
    /// with one snapshot: while the command exists, the order is in the
    /// state the command was issued for (both change in one transaction).
    /// `None`: the command was applied already.
    async fn order_for_command(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        command: &str,
    ) -> Result<Option<OrderRecord>>;

    async fn pending_commands(&self) -> Result<i64>;
}

/// Messages waiting to be published, claimed by a relay.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` messages due at `now`, oldest first.
    async fn claim_outbox(&self, now: i64, limit: i64) -> Result<OutboxClaim>;
    /// The claimed messages are published: deletes them, and writes each
    /// one's webhook deliveries (due at `now`) in the same transaction.
    async fn complete(&self, claim: OutboxClaim, now: i64) -> Result<()>;
    /// Gives the claimed messages back unpublished, at once (dropping the
    /// claim does too, but only when its connection is next used).
    async fn release(&self, claim: OutboxClaim) -> Result<()>;
    /// When the earliest message waiting for its time falls due.
    async fn next_outbox_due(&self, now: i64) -> Result<Option<i64>>;

    async fn unpublished_count(&self) -> Result<i64>;
    /// When the longest-waiting message that is due (its time has come)
    /// became due: the relay's lag is `now` minus this.
    async fn oldest_due_unpublished(&self, now: i64) -> Result<Option<i64>>;
    /// A listener woken by every commit that adds outbox messages
    /// (PostgreSQL only; see migration 0007).
    async fn outbox_listener(&self) -> Result<Option<OutboxListener>>;
}

/// Stock per warehouse and what orders hold of it.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// Sets on-hand stock. Refused if it would fall below what is reserved.
    async fn set_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        now: i64,
    ) -> Result<StockLevel>;
    /// Seeds stock only where none is recorded yet (demo start-up).
    async fn seed_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        now: i64,
    ) -> Result<()>;

    async fn stock(&self, tenant: &TenantId, sku: &Sku) -> Result<Vec<StockLevel>>;
    /// Quantity an order holds per state (`held`, `released`, `consumed`).
    async fn reservations(
        &self,
        tenant: &TenantId,
        order: &oms_domain::OrderId,
    ) -> Result<Vec<(String, String, i64)>>;
}

/// Uploaded plugin versions, their compiled code, activations, shadows and audit log.
#[async_trait]
pub trait PluginVersions: Send + Sync {
    async fn plugin_versions(
        &self,
        tenant: &TenantId,
        slot: &str,
    ) -> Result<Vec<PluginVersionRecord>>;

    async fn plugin_blob_size(&self, digest: &str) -> Result<usize>;

    async fn plugin_blob(&self, digest: &str) -> Result<Vec<u8>>;
    /// Stores a version's native code for `engine`; a second store of the
    /// same is a no-op.
    async fn put_plugin_artifact(
        &self,
        digest: &str,
        engine: &str,
        bytes: &[u8],
        now: i64,
    ) -> Result<()>;

    async fn plugin_artifact(&self, digest: &str, engine: &str) -> Result<Option<Vec<u8>>>;
    /// Every activation: the table holds one row per tenant and slot.
    async fn activations(&self) -> Result<Vec<ActivationRecord>>;

    async fn activation(&self, tenant: &TenantId, slot: &str) -> Result<Option<ActivationRecord>>;
    /// Makes `change.version` the active one; the one it replaces becomes
    /// the rollback target.
    async fn activate_plugin(
        &self,
        tenant: &TenantId,
        slot: &str,
        change: &ActivationChange<'_>,
        now: i64,
    ) -> Result<ActivationRecord>;
    /// Sets (or with `None` clears) the version that runs in the shadow of
    /// the active one.
    async fn set_shadow(
        &self,
        tenant: &TenantId,
        slot: &str,
        version: Option<i64>,
        actor: &str,
        now: i64,
    ) -> Result<ActivationRecord>;

    async fn record_shadow(&self, tenant: &TenantId, slot: &str, r: &ShadowResult) -> Result<()>;
    /// Calls compared and agreements for a shadow version, and its latest divergences.
    async fn shadow_summary(
        &self,
        tenant: &TenantId,
        slot: &str,
        shadow_version: &str,
    ) -> Result<(i64, i64, Vec<ShadowResult>)>;

    async fn plugin_audit(&self, tenant: &TenantId) -> Result<Vec<AuditRecord>>;
}

/// Storing an upload within the tenant quota.
#[async_trait]
pub trait PluginUploads: Send + Sync {
    /// Records an upload. The same bytes for the same tenant and slot are the
    /// same version: `(record, false)` when it already existed.
    async fn put_plugin_version(
        &self,
        tenant: &TenantId,
        slot: &str,
        digest: &str,
        bytes: &[u8],
        uploaded_by: &str,
        now: i64,
    ) -> Result<(PluginVersionRecord, bool)> {
        self.put_plugin_version_within(
            tenant,
            slot,
            digest,
            bytes,
            uploaded_by,
            now,
            PluginQuota::UNLIMITED,
        )
        .await
    }

    /// [`Self::put_plugin_version`], refused with
    /// [`StoreError::QuotaExceeded`] when a new version would take the
    /// tenant past `quota` (checked in the inserting transaction).
    #[allow(clippy::too_many_arguments)]
    async fn put_plugin_version_within(
        &self,
        tenant: &TenantId,
        slot: &str,
        digest: &str,
        bytes: &[u8],
        uploaded_by: &str,
        now: i64,
        quota: PluginQuota,
    ) -> Result<(PluginVersionRecord, bool)>;
}

/// Canary rollouts and the calls they are judged by.
#[async_trait]
pub trait Canaries: Send + Sync {
    /// Starts (or replaces) the slot's canary.
    async fn start_canary(&self, c: &CanaryRecord) -> Result<ActivationRecord>;

    async fn canary(&self, tenant: &TenantId, slot: &str) -> Result<Option<CanaryRecord>>;

    async fn canaries(&self) -> Result<Vec<CanaryRecord>>;
    /// Ends the canary if it is still `c` (same version, same start):
    /// `false` when someone else ended or replaced it first.
    async fn end_canary(
        &self,
        c: &CanaryRecord,
        action: &str,
        actor: &str,
        detail: Option<String>,
        now: i64,
    ) -> Result<bool>;

    async fn record_canary_call(&self, c: &CanaryRecord, call: &CanaryCall) -> Result<()>;
    /// The canary's latest `window` calls, summarised.
    async fn canary_window(&self, c: &CanaryRecord, window: i64) -> Result<CanaryWindow>;
}

/// Recorded plugin calls, for replay against a new version.
#[async_trait]
pub trait Recordings: Send + Sync {
    /// Stores a batch of calls in one transaction.
    async fn record_calls(&self, calls: &[RecordedCall]) -> Result<()>;
    /// The latest `limit` calls of a tenant's slot, oldest first.
    async fn recorded_calls(
        &self,
        tenant: &TenantId,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<RecordedCall>>;
    /// Keeps the newest `keep` calls of each tenant's slot.
    async fn prune_recorded_calls(&self, keep: i64) -> Result<u64>;
}

/// Which payments were compared with the provider, and how that came out.
#[async_trait]
pub trait Reconciliation: Send + Sync {
    /// Orders with operations recorded at or before `before`, not reconciled
    /// and not deferred past `now`, oldest first.
    async fn unreconciled_orders(
        &self,
        now: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Unreconciled>>;
    /// Leaves the order's unreconciled operations alone until `until`.
    async fn defer_reconciliation(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        until: i64,
    ) -> Result<()>;
    /// Marks the order's operations up to and including `through` (a
    /// payment id) as reconciled with `outcome`, provided the order is still
    /// at `version` (the state the provider's answer was compared with). A
    /// mismatch also goes into the order's history and the outbox, bumping
    /// the version, in the same transaction. Returns whether this call
    /// marked anything: `false` when the order moved or another host was first.
    #[allow(clippy::too_many_arguments)]
    async fn settle_reconciliation(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        version: i64,
        through: &str,
        outcome: &str,
        now: i64,
        mismatch: Option<&Mismatch>,
    ) -> Result<bool>;
}

/// Tenants' manifests and suspension, each change raising the tenant's revision.
#[async_trait]
pub trait TenantConfigs: Send + Sync {
    /// Every tenant's id and revision: what a host compares to what it runs.
    async fn tenant_revisions(&self) -> Result<Vec<(String, i64)>>;
    async fn tenant_records(&self) -> Result<Vec<TenantRecord>>;
    /// [`crate::StoreError::NotFound`] when there is no such tenant.
    async fn tenant_record(&self, id: &TenantId) -> Result<TenantRecord>;
    async fn put_tenant(
        &self,
        id: &TenantId,
        spec: &str,
        write: TenantWrite<'_>,
        actor: &str,
        now: i64,
    ) -> Result<TenantWritten>;
    /// [`crate::StoreError::Conflict`] when it already is so.
    async fn set_tenant_suspended(
        &self,
        id: &TenantId,
        suspended: bool,
        actor: &str,
        now: i64,
    ) -> Result<TenantRecord>;
}

/// Tenant API keys, kept as hashes.
#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// [`crate::StoreError::NotFound`] when the tenant does not exist.
    async fn create_api_key(&self, key: &NewApiKey<'_>) -> Result<ApiKeyRecord>;
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>>;
    /// Stores `new` with the old key's name and scopes; the old key stays
    /// valid until `grace_until`. Conflict if it was revoked or rotated.
    async fn rotate_api_key(
        &self,
        old_id: &str,
        new: &NewApiKey<'_>,
        grace_until: i64,
    ) -> Result<ApiKeyRecord>;
    /// Conflict if it was already revoked.
    async fn revoke_api_key(&self, tenant: &TenantId, id: &str, now: i64) -> Result<ApiKeyRecord>;
    /// Records when keys were last used (batched by the caller).
    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<()>;
}

/// Named operators and their audit log.
#[async_trait]
pub trait Operators: Send + Sync {
    /// Conflict if a live operator has the name.
    async fn create_operator(&self, op: &OperatorRecord) -> Result<OperatorRecord>;
    async fn operators(&self) -> Result<Vec<OperatorRecord>>;
    /// The live operator holding the token, its last use set to `now`.
    async fn operator_by_token(&self, token_hash: &str, now: i64)
    -> Result<Option<OperatorRecord>>;
    async fn revoke_operator(&self, name: &str, now: i64) -> Result<OperatorRecord>;
    async fn audit(&self, entry: &OperatorAuditRecord) -> Result<()>;
    /// Newest first.
    async fn audit_log(
        &self,
        tenant: Option<&TenantId>,
        limit: i64,
    ) -> Result<Vec<OperatorAuditRecord>>;
}

/// How tenants' plugins ran on every host.
#[async_trait]
pub trait PluginTelemetry: Send + Sync {
    /// Upserts each host's cumulative counts (by host, tenant, slot, version).
    async fn save_plugin_stats(&self, rows: &[PluginStatsRecord]) -> Result<()>;
    /// Every host's counts for a tenant's slot.
    async fn plugin_stats(&self, tenant: &str, slot: &str) -> Result<Vec<PluginStatsRecord>>;
    async fn append_plugin_logs(&self, lines: &[PluginLogRecord]) -> Result<()>;
    /// The newest `limit` lines of a tenant's slot from every host, oldest first.
    async fn plugin_logs(
        &self,
        tenant: &str,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<PluginLogRecord>>;
    /// Drops lines logged before `before`; how many.
    async fn prune_plugin_logs(&self, before: i64) -> Result<u64>;
}

/// Every area: what a host's platform holds.
pub trait Store:
    Database
    + Orders
    + SagaLog
    + Outbox
    + Inventory
    + PluginVersions
    + PluginUploads
    + Canaries
    + Recordings
    + Reconciliation
    + TenantConfigs
    + ApiKeys
    + Operators
    + PluginTelemetry
    + crate::webhooks::Webhooks
    + crate::step_state::StepStates
{
}

impl<T> Store for T where
    T: Database
        + Orders
        + SagaLog
        + Outbox
        + Inventory
        + PluginVersions
        + PluginUploads
        + Canaries
        + Recordings
        + Reconciliation
        + TenantConfigs
        + ApiKeys
        + Operators
        + PluginTelemetry
        + crate::webhooks::Webhooks
        + crate::step_state::StepStates
{
}
