//! The HTTP API: `/api/v1` for tenants' clients (tenant-scoped by
//! `X-Tenant-Id` and a bearer key), plus health, readiness and metrics.

mod auth;
mod auth_failures;
mod canary;
mod console;
mod edges;
mod error;
mod inventory;
mod operator_views;
mod operators;
mod orders;
mod plugins;
mod reconciliation;
mod sagas;
mod tenants;

pub use auth::{BOOTSTRAP, Role};
pub use error::ApiError;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oms_engine::Platform;
use serde_json::{Value, json};
use std::sync::Arc;

pub type AppState = Arc<Platform>;

/// How the HTTP edge treats clients.
#[derive(Debug, Clone, Copy)]
pub struct EdgeOptions {
    /// Failed authentications an address may make per minute.
    pub auth_failures_per_minute: u32,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 100,
        }
    }
}

pub fn router(platform: Arc<Platform>, edge: EdgeOptions) -> Router {
    let api = Router::new()
        .route("/orders", post(orders::create).get(orders::list))
        .route("/orders/{id}", get(orders::show))
        .route("/orders/{id}/events", get(orders::events))
        .route("/orders/{id}/payments", get(orders::payments))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/orders/{id}/shipments", post(orders::ship))
        .route("/orders/{id}/delivery", post(orders::deliver))
        .route("/inventory/{sku}", put(inventory::put).get(inventory::show))
        .route(
            "/plugins/{slot}",
            // Components can be large (a Python guest carries its interpreter).
            // Above the component limit, so an oversized upload gets TOO_LARGE
            // from the check rather than a bare 413.
            post(plugins::upload).layer(axum::extract::DefaultBodyLimit::max(
                oms_plugin_host::MAX_COMPONENT_BYTES + (1 << 20),
            )),
        )
        .route("/plugins/{slot}/versions", get(plugins::tenant_versions))
        .route("/plugins/{slot}/stats", get(plugins::stats))
        .route("/plugins/{slot}/logs", get(plugins::logs))
        .route("/plugins/{slot}/calls", get(plugins::calls));
    let admin = Router::new()
        .route("/whoami", get(operators::whoami))
        .route("/operators", get(operators::list).post(operators::create))
        .route("/operators/{name}/revoke", post(operators::revoke))
        .route("/audit", get(operators::audit))
        .route("/dlq", get(operator_views::dead_letters))
        .route("/tenants/{tenant}/orders", get(operator_views::orders))
        .route(
            "/tenants/{tenant}/plugins/{slot}/stats",
            get(operator_views::plugin_stats),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/logs",
            get(operator_views::plugin_logs),
        )
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route("/tenants/{tenant}", get(tenants::show).put(tenants::update))
        .route("/tenants/{tenant}/{action}", post(tenants::suspend))
        .route(
            "/tenants/{tenant}/keys",
            get(tenants::keys).post(tenants::create_key),
        )
        .route(
            "/tenants/{tenant}/keys/{key}/{action}",
            post(tenants::key_action),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/versions",
            get(plugins::admin_versions),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/activate",
            post(plugins::activate),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/rollback",
            post(plugins::rollback),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/shadow",
            post(plugins::set_shadow).get(plugins::shadow_report),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/canary",
            post(canary::start).get(canary::report),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/canary/promote",
            post(canary::promote),
        )
        .route(
            "/tenants/{tenant}/plugins/{slot}/canary/abort",
            post(canary::abort),
        )
        .route("/tenants/{tenant}/audit", get(plugins::audit))
        .route("/payments/reconcile", post(reconciliation::run))
        .route("/sagas", get(sagas::list))
        .route("/tenants/{tenant}/orders/{id}/saga", get(sagas::show))
        .route(
            "/tenants/{tenant}/orders/{id}/saga/{action}",
            post(sagas::act),
        );
    Router::new()
        .nest("/api/v1", api)
        .nest("/admin/v1", admin)
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(edges::edges))
        .layer(axum::Extension(Arc::new(auth_failures::AuthFailures::new(
            edge.auth_failures_per_minute,
        ))))
        .with_state(platform)
}

async fn ready(State(p): State<AppState>) -> impl IntoResponse {
    if p.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    match p.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": p.store.backend_name() })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": e.to_string() })),
        ),
    }
}

async fn metrics(State(p): State<AppState>) -> String {
    let mut out = p.metrics.render();
    // A gauge read at scrape time: how far the transport is behind.
    if let Ok(n) = p.store.unpublished_count().await {
        out.push_str(&format!(
            "# HELP oms_outbox_unpublished Outbox messages not yet taken by the transport.\n# TYPE oms_outbox_unpublished gauge\noms_outbox_unpublished {n}\n"
        ));
    }
    // Sagas waiting for an operator, per tenant (every tenant listed, so a
    // tenant's line going back to 0 is seen).
    match p.store.count_sagas_by_tenant("STUCK").await {
        Ok(counts) => {
            out.push_str("# HELP oms_sagas_stuck Sagas stuck, waiting for an operator.\n# TYPE oms_sagas_stuck gauge\n");
            for tenant in p.tenants.all() {
                let tenant = tenant.id.as_str();
                let n = counts
                    .iter()
                    .find(|(t, _)| t == tenant)
                    .map_or(0, |(_, n)| *n);
                out.push_str(&format!("oms_sagas_stuck{{tenant=\"{tenant}\"}} {n}\n"));
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting stuck sagas for /metrics failed"),
    }
    if let oms_engine::transport::Transport::Kafka(k) = &p.transport {
        out.push_str(&format!(
            "# HELP oms_consumer_partitions Saga command partitions this host holds.\n# TYPE oms_consumer_partitions gauge\noms_consumer_partitions {}\n",
            k.owned_count()
        ));
    }
    out
}

/// Parses a JSON body, answering 400 with a stable code when it is not JSON.
pub(crate) fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("the request body is not valid JSON: {e}"),
        )
    })
}
