//! The areas this store does not keep: plugin versions and their rollouts,
//! reconciliation, tenants, keys, operators, plugin telemetry and webhooks. Reads find nothing stored;
//! writes are refused.

use super::MemoryStore;
use async_trait::async_trait;
use oms_domain::{OrderId, TenantId};
use oms_store::{
    ActivationChange, ActivationRecord, AuditRecord, Canaries, CanaryCall, CanaryRecord,
    CanaryWindow, Mismatch, PluginQuota, PluginUploads, PluginVersionRecord, PluginVersions,
    Reconciliation, Result, ShadowResult, StoreError, Unreconciled,
};
use oms_store::{
    ApiKeyRecord, ApiKeys, NewApiKey, OperatorAuditRecord, OperatorRecord, Operators,
    TenantConfigs, TenantRecord, TenantWrite, TenantWritten,
};

#[async_trait]
impl PluginVersions for MemoryStore {
    async fn plugin_versions(
        &self,
        _tenant: &TenantId,
        _slot: &str,
    ) -> Result<Vec<PluginVersionRecord>> {
        Ok(Vec::new())
    }

    async fn plugin_blob_size(&self, _digest: &str) -> Result<usize> {
        Err(StoreError::NotFound)
    }

    async fn plugin_blob(&self, _digest: &str) -> Result<Vec<u8>> {
        Err(StoreError::NotFound)
    }

    async fn put_plugin_artifact(
        &self,
        _digest: &str,
        _engine: &str,
        _bytes: &[u8],
        _now: i64,
    ) -> Result<()> {
        Err(StoreError::Unsupported("plugin versions"))
    }

    async fn plugin_artifact(&self, _digest: &str, _engine: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    async fn activations(&self) -> Result<Vec<ActivationRecord>> {
        Ok(Vec::new())
    }

    async fn activation(
        &self,
        _tenant: &TenantId,
        _slot: &str,
    ) -> Result<Option<ActivationRecord>> {
        Ok(None)
    }

    async fn activate_plugin(
        &self,
        _tenant: &TenantId,
        _slot: &str,
        _change: &ActivationChange<'_>,
        _now: i64,
    ) -> Result<ActivationRecord> {
        Err(StoreError::Unsupported("plugin versions"))
    }

    async fn set_shadow(
        &self,
        _tenant: &TenantId,
        _slot: &str,
        _version: Option<i64>,
        _actor: &str,
        _now: i64,
    ) -> Result<ActivationRecord> {
        Err(StoreError::Unsupported("plugin versions"))
    }

    async fn record_shadow(
        &self,
        _tenant: &TenantId,
        _slot: &str,
        _r: &ShadowResult,
    ) -> Result<()> {
        Err(StoreError::Unsupported("plugin versions"))
    }

    async fn shadow_summary(
        &self,
        _tenant: &TenantId,
        _slot: &str,
        _shadow_version: &str,
    ) -> Result<(i64, i64, Vec<ShadowResult>)> {
        Ok((0, 0, Vec::new()))
    }

    async fn plugin_audit(&self, _tenant: &TenantId) -> Result<Vec<AuditRecord>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl PluginUploads for MemoryStore {
    #[allow(clippy::too_many_arguments)]
    async fn put_plugin_version_within(
        &self,
        _tenant: &TenantId,
        _slot: &str,
        _digest: &str,
        _bytes: &[u8],
        _uploaded_by: &str,
        _now: i64,
        _quota: PluginQuota,
    ) -> Result<(PluginVersionRecord, bool)> {
        Err(StoreError::Unsupported("plugin versions"))
    }
}

#[async_trait]
impl Canaries for MemoryStore {
    async fn start_canary(&self, _c: &CanaryRecord) -> Result<ActivationRecord> {
        Err(StoreError::Unsupported("canaries"))
    }

    async fn canary(&self, _tenant: &TenantId, _slot: &str) -> Result<Option<CanaryRecord>> {
        Ok(None)
    }

    async fn canaries(&self) -> Result<Vec<CanaryRecord>> {
        Ok(Vec::new())
    }

    async fn end_canary(
        &self,
        _c: &CanaryRecord,
        _action: &str,
        _actor: &str,
        _detail: Option<String>,
        _now: i64,
    ) -> Result<bool> {
        Err(StoreError::Unsupported("canaries"))
    }

    async fn record_canary_call(&self, _c: &CanaryRecord, _call: &CanaryCall) -> Result<()> {
        Err(StoreError::Unsupported("canaries"))
    }

    async fn canary_window(&self, _c: &CanaryRecord, _window: i64) -> Result<CanaryWindow> {
        Err(StoreError::Unsupported("canaries"))
    }
}

#[async_trait]
impl Reconciliation for MemoryStore {
    async fn unreconciled_orders(
        &self,
        _now: i64,
        _before: i64,
        _limit: i64,
    ) -> Result<Vec<Unreconciled>> {
        Ok(Vec::new())
    }

    async fn defer_reconciliation(
        &self,
        _tenant: &TenantId,
        _order: &OrderId,
        _until: i64,
    ) -> Result<()> {
        Err(StoreError::Unsupported("reconciliation"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle_reconciliation(
        &self,
        _tenant: &TenantId,
        _order: &OrderId,
        _version: i64,
        _through: &str,
        _outcome: &str,
        _now: i64,
        _mismatch: Option<&Mismatch>,
    ) -> Result<bool> {
        Err(StoreError::Unsupported("reconciliation"))
    }
}

// Tenants, keys and operators live in the database only; the engine's
// unit tests take their tenants from the manifests.

#[async_trait]
impl TenantConfigs for MemoryStore {
    async fn tenant_revisions(&self) -> Result<Vec<(String, i64)>> {
        Ok(Vec::new())
    }

    async fn tenant_records(&self) -> Result<Vec<TenantRecord>> {
        Ok(Vec::new())
    }

    async fn tenant_record(&self, _id: &TenantId) -> Result<TenantRecord> {
        Err(StoreError::NotFound)
    }

    async fn put_tenant(
        &self,
        _id: &TenantId,
        _spec: &str,
        _write: TenantWrite<'_>,
        _actor: &str,
        _now: i64,
    ) -> Result<TenantWritten> {
        Err(StoreError::Unsupported("tenants"))
    }

    async fn set_tenant_suspended(
        &self,
        _id: &TenantId,
        _suspended: bool,
        _actor: &str,
        _now: i64,
    ) -> Result<TenantRecord> {
        Err(StoreError::Unsupported("tenants"))
    }
}

#[async_trait]
impl ApiKeys for MemoryStore {
    async fn create_api_key(&self, _key: &NewApiKey<'_>) -> Result<ApiKeyRecord> {
        Err(StoreError::Unsupported("API keys"))
    }

    async fn api_keys(&self, _tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        Ok(Vec::new())
    }

    async fn rotate_api_key(
        &self,
        _old_id: &str,
        _new: &NewApiKey<'_>,
        _grace_until: i64,
    ) -> Result<ApiKeyRecord> {
        Err(StoreError::Unsupported("API keys"))
    }

    async fn revoke_api_key(
        &self,
        _tenant: &TenantId,
        _id: &str,
        _now: i64,
    ) -> Result<ApiKeyRecord> {
        Err(StoreError::Unsupported("API keys"))
    }

    async fn touch_api_keys(&self, _used: &[(String, i64)]) -> Result<()> {
        Err(StoreError::Unsupported("API keys"))
    }
}

#[async_trait]
impl Operators for MemoryStore {
    async fn create_operator(&self, _op: &OperatorRecord) -> Result<OperatorRecord> {
        Err(StoreError::Unsupported("operators"))
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        Ok(Vec::new())
    }

    async fn operator_by_token(
        &self,
        _token_hash: &str,
        _now: i64,
    ) -> Result<Option<OperatorRecord>> {
        Ok(None)
    }

    async fn revoke_operator(&self, _name: &str, _now: i64) -> Result<OperatorRecord> {
        Err(StoreError::Unsupported("operators"))
    }

    async fn audit(&self, _entry: &OperatorAuditRecord) -> Result<()> {
        Err(StoreError::Unsupported("operators"))
    }

    async fn audit_log(
        &self,
        _tenant: Option<&TenantId>,
        _limit: i64,
    ) -> Result<Vec<OperatorAuditRecord>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl oms_store::PluginTelemetry for MemoryStore {
    async fn save_plugin_stats(&self, _rows: &[oms_store::PluginStatsRecord]) -> Result<()> {
        Err(StoreError::Unsupported("plugin telemetry"))
    }

    async fn plugin_stats(
        &self,
        _tenant: &str,
        _slot: &str,
    ) -> Result<Vec<oms_store::PluginStatsRecord>> {
        Ok(Vec::new())
    }

    async fn append_plugin_logs(&self, _lines: &[oms_store::PluginLogRecord]) -> Result<()> {
        Err(StoreError::Unsupported("plugin telemetry"))
    }

    async fn plugin_logs(
        &self,
        _tenant: &str,
        _slot: &str,
        _limit: i64,
    ) -> Result<Vec<oms_store::PluginLogRecord>> {
        Ok(Vec::new())
    }

    async fn prune_plugin_logs(&self, _before: i64) -> Result<u64> {
        Ok(0)
    }
}

#[async_trait]
impl oms_store::Webhooks for MemoryStore {
    async fn create_webhook(&self, _e: &oms_store::WebhookEndpoint, _max: i64) -> Result<()> {
        Err(StoreError::Unsupported("webhooks"))
    }

    async fn webhooks(&self, _tenant: &TenantId) -> Result<Vec<oms_store::WebhookEndpoint>> {
        Ok(Vec::new())
    }

    async fn webhook(&self, _tenant: &TenantId, _id: &str) -> Result<oms_store::WebhookEndpoint> {
        Err(StoreError::NotFound)
    }

    async fn delete_webhook(&self, _tenant: &TenantId, _id: &str) -> Result<()> {
        Err(StoreError::NotFound)
    }

    async fn set_webhook_status(
        &self,
        _tenant: &TenantId,
        _id: &str,
        _status: &str,
        _reason: Option<&str>,
        _now: i64,
    ) -> Result<oms_store::WebhookEndpoint> {
        Err(StoreError::NotFound)
    }

    async fn due_deliveries(
        &self,
        _now: i64,
        _limit: i64,
    ) -> Result<Vec<oms_store::WebhookDelivery>> {
        Ok(Vec::new())
    }

    async fn lease_delivery(&self, _id: &str, _seen_due: i64, _until: i64) -> Result<bool> {
        Ok(false)
    }

    async fn record_attempt(
        &self,
        _d: &oms_store::WebhookDelivery,
        _a: &oms_store::Attempt,
        _now: i64,
    ) -> Result<()> {
        Err(StoreError::Unsupported("webhooks"))
    }

    async fn deliveries(
        &self,
        _tenant: &TenantId,
        _endpoint: &str,
        _limit: i64,
    ) -> Result<Vec<oms_store::WebhookDelivery>> {
        Ok(Vec::new())
    }

    async fn prune_deliveries(&self, _before: i64, _limit: i64) -> Result<u64> {
        Ok(0)
    }

    async fn redeliver(
        &self,
        _tenant: &TenantId,
        _endpoint: &str,
        _id: &str,
        _now: i64,
    ) -> Result<()> {
        Err(StoreError::NotFound)
    }
}
