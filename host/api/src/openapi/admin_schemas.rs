//! What operators send to `/admin/v1`, as the OpenAPI document describes it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant's manifest: the engine's own type, as its requests read it.
pub use oms_engine::tenants::TenantSpec as TenantManifest;

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Admin,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "name": "alice", "role": "viewer" }))]
pub struct OperatorRequest {
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "name": "checkout", "scopes": ["orders:read", "orders:write"] }))]
pub struct KeyRequest {
    pub name: String,
    /// Any of `orders:read`, `orders:write`, `inventory:read`,
    /// `inventory:write`, `plugins:read`, `plugins:write`, `fulfilment:write`,
    /// `webhooks:read`, `webhooks:write`, `steps:read`.
    pub scopes: Vec<String>,
}

#[derive(Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "graceSeconds": 3600 }))]
pub struct RotateRequest {
    /// How long the old secret keeps working: a day unless told, at most a week.
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_seconds: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "version": 2 }))]
pub struct VersionRequest {
    #[schema(minimum = 1)]
    pub version: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "version": 2 }))]
pub struct ShadowRequest {
    /// The version to run in shadow; null stops shadowing.
    pub version: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "version": 2, "percent": 10, "maxFailurePermille": 10, "minCalls": 20 }))]
pub struct CanaryRequest {
    #[schema(minimum = 1)]
    pub version: i64,
    #[schema(minimum = 1, maximum = 100)]
    pub percent: i64,
    #[schema(minimum = 0, maximum = 1000)]
    pub max_failure_permille: Option<i64>,
    #[schema(minimum = 1, maximum = 600000)]
    pub max_p99_ms: Option<i64>,
    #[schema(minimum = 0, maximum = 1000)]
    pub max_divergence_permille: Option<i64>,
    #[schema(minimum = 1, maximum = 1000)]
    pub min_calls: Option<i64>,
}

#[derive(Default, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "reason": "refunded by phone; ticket 4711" }))]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantAction {
    Suspend,
    Resume,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyAction {
    Rotate,
    Revoke,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SagaAction {
    Retry,
    Compensate,
    Resolve,
}

/// A plugin slot (`guardrail`, `fraud-check`, `payment-provider`,
/// `compensation-policy`) or one of the tenant's own saga steps,
/// `step:<name>` (its versions are rolled out as a slot's are).
pub struct Slot;

impl utoipa::PartialSchema for Slot {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                "^(guardrail|fraud-check|payment-provider|compensation-policy|step:[a-z][a-z0-9-]{0,38}[a-z0-9])$",
            ))
            .description(Some(
                "A plugin slot, or `step:<name>` for one of the tenant's own saga steps.",
            ))
            .examples(["guardrail", "step:loyalty-points"])
            .into()
    }
}

impl ToSchema for Slot {}
