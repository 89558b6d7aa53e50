//! Who is calling. Tenants' clients: `X-Tenant-Id` and a bearer API key
//! holding the scope the endpoint needs ([`Key`]). Operators: a bearer
//! operator token, with the role the endpoint needs ([`Operator`] for
//! reading, [`Admin`] for changing), named in the audit log.

use super::auth_failures::AuthFailures;
use super::{ApiError, AppState};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use oms_engine::tenants::Tenant;
use oms_engine::tenants::keys::{KeyRefusal, Scope, secret_hash};
use oms_store::OperatorAuditRecord;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The scope an endpoint needs, as a type, so a handler cannot forget it.
pub trait Needs: Send + Sync + 'static {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident),+) => {
        $(
            pub struct $name;
            impl Needs for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )+
    };
}
scopes!(
    OrdersRead,
    OrdersWrite,
    InventoryRead,
    InventoryWrite,
    PluginsRead,
    PluginsWrite,
    FulfilmentWrite,
    WebhooksRead,
    WebhooksWrite,
    StepsRead
);

/// The tenant a request acts for, proven by an API key with scope `S`.
pub struct Key<S: Needs>(pub Arc<Tenant>, pub PhantomData<S>);

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The peer's address and the failure budget, if the server tracks them.
fn failures(parts: &Parts) -> Option<(IpAddr, Arc<AuthFailures>)> {
    let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some((ip, parts.extensions.get::<Arc<AuthFailures>>()?.clone()))
}

/// Refuses an address past its budget of failed authentications.
fn check_budget(parts: &Parts) -> Result<(), ApiError> {
    match failures(parts).and_then(|(ip, f)| f.blocked(ip, oms_clock::now_ms())) {
        Some(wait) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_FAILED_AUTHENTICATIONS",
            "too many failed authentications from this address; retry after the Retry-After delay",
        )
        .with_retry_after(wait)),
        None => Ok(()),
    }
}

/// Counts a failed authentication against the caller's address.
fn failed(parts: &Parts, refusal: ApiError) -> ApiError {
    if let Some((ip, f)) = failures(parts) {
        f.record(ip, oms_clock::now_ms());
    }
    refusal
}

impl<S: Needs> FromRequestParts<AppState> for Key<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_budget(parts)?;
        let refused = |parts: &Parts| failed(parts, ApiError::unauthorized());
        let Some(tenant_id) = parts
            .headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(refused(parts));
        };
        let Some(secret) = bearer(parts) else {
            return Err(refused(parts));
        };
        // The same answer for an unknown tenant and a wrong key: nothing to probe.
        let Some(tenant) = state.tenants.get(tenant_id) else {
            return Err(refused(parts));
        };
        let key = match tenant.keys.check(secret, S::SCOPE, oms_clock::now_ms()) {
            Ok(key) => key,
            Err(KeyRefusal::Unknown) => return Err(refused(parts)),
            Err(KeyRefusal::MissingScope(scope)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "INSUFFICIENT_SCOPE",
                    format!("this API key does not have the `{scope}` scope this call needs"),
                )
                .with_details(serde_json::json!({ "requiredScope": scope.as_str() })));
            }
        };
        state.key_used(&key.id);
        tracing::Span::current().record("tenant", tenant.id.as_str());
        if tenant.suspended {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "TENANT_SUSPENDED",
                "this tenant is suspended; its orders in flight finish, new calls are refused",
            ));
        }
        if let Err(wait) = tenant.admit() {
            // Whole seconds, rounded up: a client that waits as told is admitted.
            let seconds = wait.as_millis().div_ceil(1000) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "this tenant's request rate limit is exceeded; retry after the Retry-After delay",
            )
            .with_retry_after(seconds));
        }
        Ok(Self(tenant, PhantomData))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub const WIRE: [&'static str; 2] = ["viewer", "admin"];

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

/// The name the bootstrap token (`OMS_ADMIN_TOKEN`) acts under.
pub const BOOTSTRAP: &str = "bootstrap-admin";

/// An operator (any role), proven by a bearer operator token.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// Where the call came from, for the audit log.
    pub source: String,
}

impl Operator {
    /// Records what this operator did (after it was done). A failure to
    /// record is logged and counted, not hidden: the change itself stands.
    pub async fn audit(
        &self,
        p: &AppState,
        action: &str,
        tenant: Option<&str>,
        target: &str,
        detail: Option<String>,
    ) {
        let entry = OperatorAuditRecord {
            at: oms_clock::now_ms(),
            operator: self.name.clone(),
            source: self.source.clone(),
            action: action.into(),
            tenant_id: tenant.map(str::to_string),
            target: target.into(),
            detail,
        };
        if let Err(e) = p.store.audit(&entry).await {
            oms_engine::metrics::Metrics::inc(&p.metrics.audit_write_failures_total);
            tracing::error!(error = %e, operator = %self.name, action, target, "writing the audit log failed");
        }
    }
}

fn source(parts: &Parts) -> String {
    // Behind a proxy, the first forwarded address is the client's.
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string());
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    match (forwarded, peer) {
        (Some(f), Some(p)) => format!("{f} via {p}"),
        (Some(f), None) => f,
        (None, Some(p)) => p,
        (None, None) => "unknown".into(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "send Authorization: Bearer <operator token>",
            )
        };
        check_budget(parts)?;
        let Some(given) = bearer(parts) else {
            return Err(failed(parts, unauthorized()));
        };
        let source = source(parts);
        if let Some(token) = &state.admin_token
            && constant_time_eq(token.as_bytes(), given.as_bytes())
        {
            return Ok(Self {
                name: BOOTSTRAP.into(),
                role: Role::Admin,
                source,
            });
        }
        let found = state
            .store
            .operator_by_token(&secret_hash(given), oms_clock::now_ms())
            .await
            .map_err(ApiError::store)?;
        let Some(found) = found else {
            return Err(failed(parts, unauthorized()));
        };
        let role = Role::parse(&found.role).ok_or_else(|| {
            tracing::error!(operator = %found.name, role = %found.role, "stored operator has an unknown role");
            unauthorized()
        })?;
        Ok(Self {
            name: found.name,
            role,
            source,
        })
    }
}

/// An operator with the admin role: every change goes through this.
pub struct Admin(pub Operator);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let op = Operator::from_request_parts(parts, state).await?;
        if op.role < Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ROLE_REQUIRED",
                format!(
                    "operator `{}` is a {}; this call needs the admin role",
                    op.name,
                    op.role.as_str()
                ),
            ));
        }
        Ok(Self(op))
    }
}
