//! `/admin/v1/tenants`: tenants and their API keys at run time. A tenant's
//! body is its manifest (the `tenants/*.toml` format) as JSON; refusals are
//! 422 `INVALID_TENANT` naming the field. Settings that look like secrets
//! are shown as `********`; sending that back keeps the stored value.

use super::auth::{Admin, Operator};
use super::{ApiError, AppState, json_body, optional_body};
use crate::openapi::admin_schemas::RotateRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use oms_domain::TenantId;
use oms_engine::tenants::admin::{self, IssuedKey, TenantOpError};
use oms_engine::tenants::keys::Scope;
use oms_engine::tenants::{SpecFormat, TenantSpec};
use oms_store::{ApiKeyRecord, TenantRecord};
use serde_json::{Value, json};

const REDACTED: &str = "********";

/// Setting names whose values are credentials.
fn secret_setting(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "secret", "token", "password", "credential"]
        .iter()
        .any(|w| n.contains(w))
}

pub(crate) fn tenant_error(e: TenantOpError) -> ApiError {
    match e {
        TenantOpError::Invalid { field, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_TENANT",
            if field.is_empty() {
                message.clone()
            } else {
                format!("{field}: {message}")
            },
        )
        .with_details(
            json!({ "errors": [{ "field": field, "code": "INVALID", "message": message }] }),
        ),
        TenantOpError::Exists(id) => ApiError::new(
            StatusCode::CONFLICT,
            "TENANT_EXISTS",
            format!("tenant `{id}` already exists; PUT /admin/v1/tenants/{id} changes it"),
        ),
        TenantOpError::NotFound => ApiError::not_found("tenant or key"),
        TenantOpError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "STATE_CONFLICT", why),
        TenantOpError::Store(e) => ApiError::store(e),
        TenantOpError::Plugins(e) => super::plugins::op_error(e),
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).ok_or_else(|| ApiError::not_found("tenant"))
}

fn spec_of(body: &Bytes) -> Result<TenantSpec, ApiError> {
    TenantSpec::from_value("request", json_body(body)?).map_err(|e| {
        tenant_error(TenantOpError::from(
            oms_engine::tenants::sync::SyncError::Tenant(e),
        ))
    })
}

fn stored_spec(r: &TenantRecord) -> Result<TenantSpec, ApiError> {
    TenantSpec::parse("stored", &r.spec, SpecFormat::Json)
        .map_err(|e| ApiError::store(oms_store::StoreError::Corrupt(e.to_string())))
}

fn summary(r: &TenantRecord, spec: &TenantSpec) -> Value {
    json!({
        "id": r.id,
        "name": spec.name,
        "status": if r.is_suspended() { "SUSPENDED" } else { "ACTIVE" },
        "revision": r.revision,
        "createdAt": super::plugins::iso(r.created_at),
        "createdBy": r.created_by,
        "updatedAt": super::plugins::iso(r.updated_at),
        "updatedBy": r.updated_by,
    })
}

fn detail(r: &TenantRecord) -> Result<Value, ApiError> {
    let mut spec = stored_spec(r)?;
    for section in spec.plugins.values_mut() {
        for (name, value) in section.settings.iter_mut() {
            if secret_setting(name) {
                *value = REDACTED.into();
            }
        }
    }
    let mut v = summary(r, &spec);
    v["manifest"] = serde_json::to_value(&spec).map_err(ApiError::unavailable)?;
    Ok(v)
}

/// `GET /admin/v1/tenants`.
#[utoipa::path(get, path = "/tenants", tag = "tenants", operation_id = "listTenants",
    responses((status = 200, description = "Every tenant.", body = crate::openapi::views::TenantList)))]
pub async fn list(State(p): State<AppState>, _: Operator) -> Result<Json<Value>, ApiError> {
    let records = p.store.tenant_records().await.map_err(ApiError::store)?;
    let data = records
        .iter()
        .map(|r| Ok(summary(r, &stored_spec(r)?)))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(json!({ "data": data })))
}

/// `GET /admin/v1/tenants/{tenant}`.
#[utoipa::path(get, path = "/tenants/{tenant}", tag = "tenants", operation_id = "getTenant",
    summary = "A tenant's manifest (secrets shown as ********) and revision",
    params(("tenant" = String, Path, description = "The tenant id.")),
    responses((status = 200, description = "The tenant.", body = crate::openapi::views::TenantDetail)))]
pub async fn show(
    State(p): State<AppState>,
    _: Operator,
    Path(t): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = p
        .store
        .tenant_record(&tenant_id(&t)?)
        .await
        .map_err(|e| tenant_error(e.into()))?;
    Ok(Json(detail(&record)?))
}

/// `POST /admin/v1/tenants` with a manifest.
#[utoipa::path(post, path = "/tenants", tag = "tenants", operation_id = "createTenant",
    request_body(content = crate::openapi::admin_schemas::TenantManifest, content_type = "application/json"),
    responses((status = 201, description = "Created.", body = crate::openapi::views::TenantDetail), (status = 409, description = "A tenant with this id exists.", body = crate::openapi::schemas::Error)))]
pub async fn create(
    State(p): State<AppState>,
    Admin(op): Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = spec_of(&body)?;
    // A redacted value copied from another tenant is not a secret to keep.
    for (slot, section) in &spec.plugins {
        if let Some((name, _)) = section.settings.iter().find(|(_, v)| *v == REDACTED) {
            return Err(tenant_error(TenantOpError::Invalid {
                field: format!("plugins.{slot}.settings.{name}"),
                message: "replace ******** with this tenant's own secret".into(),
            }));
        }
    }
    let tenant = admin::create(&p, &spec, &op.name)
        .await
        .map_err(tenant_error)?;
    op.audit(
        &p,
        "tenant.create",
        Some(tenant.id.as_str()),
        tenant.id.as_str(),
        None,
    )
    .await;
    let record = p
        .store
        .tenant_record(&tenant.id)
        .await
        .map_err(ApiError::store)?;
    Ok((StatusCode::CREATED, Json(detail(&record)?)))
}

/// `PUT /admin/v1/tenants/{tenant}` with a manifest; `If-Match: <revision>`
/// makes it refuse (409) if someone changed the tenant since.
#[utoipa::path(put, path = "/tenants/{tenant}", tag = "tenants", operation_id = "updateTenant",
    summary = "Replace a tenant's manifest",
    params(("tenant" = String, Path, description = "The tenant id."), ("If-Match" = Option<String>, Header, description = "The revision this change is based on; a stale one is refused with 409.")),
    request_body(content = crate::openapi::admin_schemas::TenantManifest, content_type = "application/json"),
    responses((status = 200, description = "Updated.", body = crate::openapi::views::TenantDetail), (status = 409, description = "The revision in If-Match is not the current one.", body = crate::openapi::schemas::Error)))]
pub async fn update(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path(t): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = tenant_id(&t)?;
    let mut spec = spec_of(&body)?;
    let expected = match headers.get("if-match").map(|v| v.to_str()) {
        None => None,
        Some(raw) => Some(
            raw.ok()
                .map(|v| v.trim().trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_IF_MATCH",
                        "If-Match is the tenant's revision, a number",
                    )
                })?,
        ),
    };
    let before = p
        .store
        .tenant_record(&id)
        .await
        .map_err(|e| tenant_error(e.into()))?;
    // A secret shown redacted and sent back unchanged keeps its value.
    let old = stored_spec(&before)?;
    for (slot, section) in spec.plugins.iter_mut() {
        for (name, value) in section.settings.iter_mut() {
            if value == REDACTED
                && let Some(kept) = old.plugins.get(slot).and_then(|s| s.settings.get(name))
            {
                value.clone_from(kept);
            }
        }
    }
    admin::update(&p, &id, &spec, expected, &op.name)
        .await
        .map_err(tenant_error)?;
    op.audit(&p, "tenant.update", Some(id.as_str()), id.as_str(), None)
        .await;
    let record = p.store.tenant_record(&id).await.map_err(ApiError::store)?;
    Ok(Json(detail(&record)?))
}

/// `POST /admin/v1/tenants/{tenant}/{suspend|resume}`.
#[utoipa::path(post, path = "/tenants/{tenant}/{action}", tag = "tenants", operation_id = "suspendOrResumeTenant",
    summary = "Suspend a tenant (its sagas in flight finish) or resume it",
    params(("tenant" = String, Path, description = "The tenant id."), ("action" = crate::openapi::admin_schemas::TenantAction, Path)),
    responses((status = 200, description = "Done.", body = crate::openapi::views::TenantDetail), (status = 409, description = "It already is.", body = crate::openapi::schemas::Error)))]
pub async fn suspend(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = tenant_id(&t)?;
    let suspended = match action.as_str() {
        "suspend" => true,
        "resume" => false,
        _ => return Err(ApiError::not_found("route")),
    };
    let record = admin::set_suspended(&p, &id, suspended, &op.name)
        .await
        .map_err(tenant_error)?;
    op.audit(
        &p,
        &format!("tenant.{action}"),
        Some(id.as_str()),
        id.as_str(),
        None,
    )
    .await;
    Ok(Json(detail(&record)?))
}

fn key_json(k: &ApiKeyRecord) -> Value {
    let now = oms_clock::now_ms();
    let status = if k.revoked_at.is_some() {
        "REVOKED"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "EXPIRED"
    } else if k.expires_at.is_some() {
        "ROTATING"
    } else {
        "ACTIVE"
    };
    json!({
        "id": k.id,
        "name": k.name,
        "scopes": k.scopes.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        "status": status,
        "createdAt": super::plugins::iso(k.created_at),
        "createdBy": k.created_by,
        "expiresAt": k.expires_at.map(super::plugins::iso),
        "revokedAt": k.revoked_at.map(super::plugins::iso),
        "lastUsedAt": k.last_used_at.map(super::plugins::iso),
        "replacedBy": k.replaced_by,
    })
}

fn issued_json(issued: &IssuedKey) -> Value {
    let mut v = key_json(&issued.record);
    v["secret"] = json!(issued.secret);
    v["note"] = json!("the secret is shown this once; only its hash is kept");
    v
}

/// `GET /admin/v1/tenants/{tenant}/keys`.
#[utoipa::path(get, path = "/tenants/{tenant}/keys", tag = "tenants", operation_id = "listKeys",
    params(("tenant" = String, Path, description = "The tenant id.")),
    responses((status = 200, description = "The tenant's API keys (never their secrets).", body = crate::openapi::views::ApiKeys)))]
pub async fn keys(
    State(p): State<AppState>,
    _: Operator,
    Path(t): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = tenant_id(&t)?;
    p.store
        .tenant_record(&id)
        .await
        .map_err(|e| tenant_error(e.into()))?;
    let keys = p.store.api_keys(&id).await.map_err(ApiError::store)?;
    Ok(Json(
        json!({ "data": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /admin/v1/tenants/{tenant}/keys {"name", "scopes": [...]}`.
#[utoipa::path(post, path = "/tenants/{tenant}/keys", tag = "tenants", operation_id = "createKey",
    summary = "Issue an API key; its secret is in this answer only",
    params(("tenant" = String, Path, description = "The tenant id.")),
    request_body(content = crate::openapi::admin_schemas::KeyRequest, content_type = "application/json"),
    responses((status = 201, description = "The key with its secret.", body = crate::openapi::views::IssuedKey)))]
pub async fn create_key(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = tenant_id(&t)?;
    let body = json_body(&body)?;
    let invalid = |field: &str, message: String| {
        tenant_error(TenantOpError::Invalid {
            field: field.into(),
            message,
        })
    };
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("name", "a key needs a name".into()))?;
    let scopes: Vec<&str> = match body.get("scopes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .ok_or_else(|| invalid("scopes", "scopes are strings".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "scopes",
                format!("a list of {}", Scope::WIRE.join(", ")),
            ));
        }
    };
    let scopes = Scope::parse_list(&scopes.join(" ")).map_err(|m| invalid("scopes", m))?;
    let issued = admin::create_key(&p, &id, name, &scopes, &op.name)
        .await
        .map_err(tenant_error)?;
    op.audit(
        &p,
        "key.create",
        Some(id.as_str()),
        &issued.record.id,
        Some(issued.record.scopes.clone()),
    )
    .await;
    Ok((StatusCode::CREATED, Json(issued_json(&issued))))
}

/// The grace period a rotation gives the old key unless told otherwise.
const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;

/// `POST /admin/v1/tenants/{tenant}/keys/{id}/{rotate|revoke}`;
/// rotate takes `{"graceSeconds": n}` (default a day).
#[utoipa::path(post, path = "/tenants/{tenant}/keys/{key}/{action}", tag = "tenants", operation_id = "rotateOrRevokeKey",
    summary = "Rotate a key (the old secret works for graceSeconds) or revoke it at once",
    params(("tenant" = String, Path, description = "The tenant id."), ("key" = String, Path, description = "The key id."), ("action" = crate::openapi::admin_schemas::KeyAction, Path)),
    request_body(content = Option<crate::openapi::admin_schemas::RotateRequest>, content_type = "application/json"),
    responses((status = 200, description = "Revoked.", body = serde_json::Value), (status = 201, description = "Rotated: the new key and its secret, once.", body = serde_json::Value), (status = 409, description = "The key is already rotated or revoked.", body = crate::openapi::schemas::Error)))]
pub async fn key_action(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, key, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = tenant_id(&t)?;
    let answer = match action.as_str() {
        "rotate" => {
            let request: RotateRequest = optional_body(&body)?;
            let grace = request.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
            let issued = admin::rotate_key(&p, &id, &key, grace, &op.name)
                .await
                .map_err(tenant_error)?;
            op.audit(
                &p,
                "key.rotate",
                Some(id.as_str()),
                &key,
                Some(format!(
                    "replaced by {}, old valid {grace} s",
                    issued.record.id
                )),
            )
            .await;
            (StatusCode::CREATED, issued_json(&issued))
        }
        "revoke" => {
            let record = admin::revoke_key(&p, &id, &key)
                .await
                .map_err(tenant_error)?;
            op.audit(&p, "key.revoke", Some(id.as_str()), &key, None)
                .await;
            (StatusCode::OK, key_json(&record))
        }
        _ => return Err(ApiError::not_found("route")),
    };
    Ok((answer.0, Json(answer.1)))
}
