//! What operators' and tenants' reads answer with, as the OpenAPI document
//! describes it (the handlers build the same fields; the contract fuzzing
//! checks every answer against these).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Whoami {
    pub name: String,
    /// `viewer` or `admin`.
    pub role: String,
    /// How the caller signed in: a named operator's token or the bootstrap one.
    pub source: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    pub name: String,
    pub role: String,
    /// `ACTIVE` or `REVOKED`.
    pub status: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Operators {
    pub data: Vec<Operator>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: String,
    pub operator: String,
    /// The client address (`X-Forwarded-For` first).
    pub source: String,
    #[schema(example = "tenant.suspend")]
    pub action: String,
    pub tenant: Option<String>,
    pub target: String,
    pub detail: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    pub data: Vec<AuditEntry>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    /// `ACTIVE` or `SUSPENDED`.
    pub status: String,
    /// Raised by every change; `If-Match` on `PUT`.
    pub revision: i64,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub data: Vec<TenantSummary>,
}

/// A tenant with its manifest; secret settings shown as `********`.
#[derive(Serialize, ToSchema)]
pub struct TenantDetail {
    #[serde(flatten)]
    pub summary: TenantSummary,
    pub manifest: super::admin_schemas::TenantManifest,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// `ACTIVE`, `ROTATING` (its grace running), `EXPIRED` or `REVOKED`.
    pub status: String,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The key that replaced it in a rotation.
    pub replaced_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeys {
    pub data: Vec<ApiKey>,
}

/// A key as issued: its secret is in this answer only.
#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub secret: String,
    pub note: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersion {
    pub version: i64,
    pub slot: String,
    /// sha256 of the component's bytes.
    pub digest: String,
    /// `active` or `staged`.
    pub status: String,
    pub size_bytes: i64,
    pub uploaded_by: String,
    pub uploaded_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct Canary {
    pub version: i64,
    pub percent: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersions {
    pub tenant: String,
    pub slot: String,
    pub active_version: Option<i64>,
    pub previous_version: Option<i64>,
    pub shadow_version: Option<i64>,
    pub canary: Option<Canary>,
    pub data: Vec<ComponentVersion>,
}

#[derive(Serialize, ToSchema)]
pub struct Latency {
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

/// A version's calls on every host.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStats {
    pub version: String,
    pub calls: i64,
    pub succeeded: i64,
    pub traps: i64,
    pub timeouts: i64,
    pub out_of_fuel: i64,
    pub output_too_large: i64,
    pub invalid_answers: i64,
    pub other_failures: i64,
    pub fuel_used_total: i64,
    pub latency_us: Latency,
}

#[derive(Serialize, ToSchema)]
pub struct PluginStats {
    pub slot: String,
    pub data: Vec<VersionStats>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginLogLine {
    pub at: String,
    pub version: String,
    pub line: String,
}

#[derive(Serialize, ToSchema)]
pub struct PluginLogs {
    pub slot: String,
    pub data: Vec<PluginLogLine>,
}
