//! `/admin/v1/operators`: named operator tokens with a role (viewer or
//! admin), shown once and kept hashed; `/admin/v1/audit`: who did what,
//! from where, when; `/admin/v1/whoami`: the caller, for the console.

use super::auth::{Admin, BOOTSTRAP, Operator, Role};
use super::plugins::iso;
use super::{ApiError, AppState, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use oms_domain::TenantId;
use oms_engine::tenants::keys::secret_hash;
use oms_store::{OperatorRecord, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;

fn operator_json(o: &OperatorRecord) -> Value {
    json!({
        "name": o.name,
        "role": o.role,
        "status": if o.revoked_at.is_some() { "REVOKED" } else { "ACTIVE" },
        "createdAt": iso(o.created_at),
        "createdBy": o.created_by,
        "revokedAt": o.revoked_at.map(iso),
        "lastUsedAt": o.last_used_at.map(iso),
    })
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        format!("{field}: {message}"),
    )
    .with_details(json!({ "errors": [{ "field": field, "code": "INVALID", "message": message }] }))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
        && name != BOOTSTRAP
}

/// `GET /admin/v1/whoami`.
#[utoipa::path(get, path = "/whoami", tag = "operators", operation_id = "whoami",
    summary = "The operator this token belongs to",
    responses((status = 200, description = "Name, role and how they signed in.", body = crate::openapi::views::Whoami)))]
pub async fn whoami(op: Operator) -> Json<Value> {
    Json(json!({ "name": op.name, "role": op.role.as_str(), "source": op.source }))
}

/// `GET /admin/v1/operators`.
#[utoipa::path(get, path = "/operators", tag = "operators", operation_id = "listOperators",
    responses((status = 200, description = "Every operator (never their tokens).", body = crate::openapi::views::Operators)))]
pub async fn list(State(p): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let all = p.store.operators().await.map_err(ApiError::store)?;
    Ok(Json(
        json!({ "data": all.iter().map(operator_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /admin/v1/operators {"name", "role"}`: the token is in the answer, once.
#[utoipa::path(post, path = "/operators", tag = "operators", operation_id = "createOperator",
    summary = "Create an operator; the token is in this answer only",
    request_body(content = crate::openapi::admin_schemas::OperatorRequest, content_type = "application/json"),
    responses((status = 201, description = "The operator with their token.", body = serde_json::Value), (status = 409, description = "An operator with this name exists.", body = crate::openapi::schemas::Error)))]
pub async fn create(
    State(p): State<AppState>,
    Admin(op): Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_body(&body)?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| {
            invalid(
                "name",
                "1 to 64 of a-z, 0-9, `.`, `_`, `@`, `-` (not the bootstrap name)".into(),
            )
        })?;
    let role = body
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| invalid("role", format!("one of {}", Role::WIRE.join(", "))))?;
    let token = format!("omso_{}", hex::encode(oms_clock::secret_bytes()));
    let record = OperatorRecord {
        name: name.into(),
        role: role.as_str().into(),
        token_hash: secret_hash(&token),
        created_by: op.name.clone(),
        created_at: oms_clock::now_ms(),
        revoked_at: None,
        last_used_at: None,
    };
    let stored = p
        .store
        .create_operator(&record)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "OPERATOR_EXISTS",
                format!("operator `{name}` exists; revoke it first to issue a new token"),
            ),
            other => ApiError::store(other),
        })?;
    op.audit(
        &p,
        "operator.create",
        None,
        name,
        Some(role.as_str().into()),
    )
    .await;
    let mut v = operator_json(&stored);
    v["token"] = json!(token);
    v["note"] = json!("the token is shown this once; only its hash is kept");
    Ok((StatusCode::CREATED, Json(v)))
}

/// `POST /admin/v1/operators/{name}/revoke`.
#[utoipa::path(post, path = "/operators/{name}/revoke", tag = "operators", operation_id = "revokeOperator",
    params(("name" = String, Path)),
    responses((status = 200, description = "Revoked.", body = serde_json::Value), (status = 409, description = "Already revoked.", body = crate::openapi::schemas::Error)))]
pub async fn revoke(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = p
        .store
        .revoke_operator(&name, oms_clock::now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("operator"),
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "STATE_CONFLICT",
                "the operator is already revoked",
            ),
            other => ApiError::store(other),
        })?;
    op.audit(&p, "operator.revoke", None, &name, None).await;
    Ok(Json(operator_json(&record)))
}

/// `GET /admin/v1/audit?tenant=&limit=`: newest first.
#[utoipa::path(get, path = "/audit", tag = "operators", operation_id = "getAudit",
    summary = "Who changed what, from where and when",
    params(("tenant" = Option<String>, Query, description = "Only changes to this tenant."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (100 unless told).")),
    responses((status = 200, description = "Newest first.", body = crate::openapi::views::AuditLog)))]
pub async fn audit(
    State(p): State<AppState>,
    _: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = match q.get("tenant") {
        Some(t) => Some(TenantId::parse(t).ok_or_else(|| ApiError::not_found("tenant"))?),
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_LIMIT",
                    "limit is 1 to 1000",
                )
            })?,
        None => 100,
    };
    let log = p
        .store
        .audit_log(tenant.as_ref(), limit)
        .await
        .map_err(ApiError::store)?;
    let data: Vec<Value> = log
        .iter()
        .map(|a| {
            json!({
                "at": iso(a.at),
                "operator": a.operator,
                "source": a.source,
                "action": a.action,
                "tenant": a.tenant_id,
                "target": a.target,
                "detail": a.detail,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}
