//! The HTTP API: `/api/v1` for tenants' clients (tenant-scoped by
//! `X-Tenant-Id` and a bearer key), plus health, readiness and metrics.

mod auth;
mod auth_failures;
mod canary;
mod console;
mod edges;
mod error;
mod fulfilment;
mod inventory;
pub mod metrics;
pub mod openapi;
mod operator_views;
mod operators;
mod order_views;
mod orders;
mod plugins;
mod reconciliation;
mod returns;
mod sagas;
mod steps;
mod tenants;
mod tracking;
mod webhooks;

pub use auth::{BOOTSTRAP, Role};
pub use error::ApiError;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use oms_engine::Platform;
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub type AppState = Arc<Platform>;

/// How the HTTP edge treats clients.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Failed authentications an address may make per minute.
    pub auth_failures_per_minute: u32,
    /// The labelled metrics `/metrics` renders besides the platform's
    /// counters ([`metrics::install`]); none when the process installed no
    /// recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 100,
            metrics: None,
        }
    }
}

/// The API's routes and the OpenAPI document describing them, built from
/// the same handler attributes.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = annotated_routes();
    // Modifiers run before nesting adds the paths; run ours over them all.
    utoipa::Modify::modify(&openapi::Contract, &mut doc);
    (routes, doc)
}

/// The routes and each path's own documentation, before what every
/// operation shares is added.
fn annotated_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let upload = {
        // Components can be large (a Python guest carries its interpreter).
        // Above the component limit, so an oversized upload gets TOO_LARGE
        // from the check rather than a bare 413.
        let (schemas, paths, method) = routes!(plugins::upload);
        let limit = oms_plugin_host::MAX_COMPONENT_BYTES + (1 << 20);
        (
            schemas,
            paths,
            method.layer(axum::extract::DefaultBodyLimit::max(limit)),
        )
    };
    let api = OpenApiRouter::new()
        .routes(routes!(orders::create, orders::list))
        .routes(routes!(orders::show))
        .routes(routes!(orders::events))
        .routes(routes!(orders::payments))
        .routes(routes!(orders::cancel))
        .routes(routes!(fulfilment::decide))
        .routes(routes!(tracking::tracking))
        .routes(routes!(returns::open, returns::list))
        .routes(routes!(returns::show))
        .routes(routes!(returns::receive))
        .routes(routes!(returns::cancel_lines))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::show, webhooks::delete))
        .routes(routes!(webhooks::enable))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(steps::state))
        .routes(routes!(orders::ship))
        .routes(routes!(orders::deliver))
        .routes(routes!(inventory::put, inventory::show))
        .routes(upload)
        .routes(routes!(plugins::tenant_versions))
        .routes(routes!(plugins::stats))
        .routes(routes!(plugins::logs))
        .routes(routes!(plugins::calls));
    let admin = OpenApiRouter::new()
        .routes(routes!(operators::whoami))
        .routes(routes!(operators::list, operators::create))
        .routes(routes!(operators::revoke))
        .routes(routes!(operators::audit))
        .routes(routes!(operator_views::dead_letters))
        .routes(routes!(operator_views::orders))
        .routes(routes!(operator_views::plugin_stats))
        .routes(routes!(operator_views::plugin_logs))
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::show, tenants::update))
        .routes(routes!(tenants::suspend))
        .routes(routes!(tenants::keys, tenants::create_key))
        .routes(routes!(tenants::key_action))
        .routes(routes!(plugins::admin_versions))
        .routes(routes!(plugins::activate))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::set_shadow, plugins::shadow_report))
        .routes(routes!(canary::start, canary::report))
        .routes(routes!(canary::promote))
        .routes(routes!(canary::abort))
        .routes(routes!(plugins::audit))
        .routes(routes!(reconciliation::run))
        .routes(routes!(sagas::list))
        .routes(routes!(sagas::show))
        .routes(routes!(sagas::act));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", api)
        .nest("/admin/v1", admin)
        .split_for_parts()
}

/// The OpenAPI document of this build (what `/openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes().1
}

pub fn router(platform: Arc<Platform>, edge: EdgeOptions) -> Router {
    let (api, doc) = routes();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(edges::edges))
        .layer(axum::Extension(Arc::new(auth_failures::AuthFailures::new(
            edge.auth_failures_per_minute,
        ))))
        .layer(axum::Extension(metrics::Exporter(edge.metrics)))
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

/// Reads a JSON body into the type the OpenAPI document describes it with:
/// 400 when it is not JSON, 422 naming the field (as a JSON pointer) when a
/// field is missing or of the wrong type.
pub(crate) fn typed_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = json_body(bytes)?;
    // Every request body is an object; serde would also read a struct from
    // an array of its fields in order (`[null]` as a cancel without reason).
    if !value.is_object() {
        let message = "must be a JSON object";
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!("the body {message}"),
        )
        .with_details(
            json!({ "errors": [{ "field": "", "code": "INVALID", "message": message }] }),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field: String = e
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                serde_path_to_error::Segment::Map { key } => format!("/{key}"),
                serde_path_to_error::Segment::Enum { variant } => format!("/{variant}"),
                serde_path_to_error::Segment::Unknown => "/?".to_string(),
            })
            .collect();
        let message = e.inner().to_string();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!(
                "{} {message}",
                if field.is_empty() {
                    "the body:"
                } else {
                    &field
                }
            ),
        )
        .with_details(
            json!({ "errors": [{ "field": field, "code": "INVALID", "message": message }] }),
        )
    })
}

/// Refuses text with control characters (NUL, escapes, line breaks) in
/// `field` (a JSON pointer): 422 `CONTROL_CHARACTER`.
pub(crate) fn no_control(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    if !value.is_some_and(|v| v.chars().any(char::is_control)) {
        return Ok(());
    }
    let message = "must not contain control characters";
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "CONTROL_CHARACTER",
        format!("{field} {message}"),
    )
    .with_details(
        json!({ "errors": [{ "field": field, "code": "CONTROL_CHARACTER", "message": message }] }),
    ))
}

/// A reason a caller gave: without control characters, trimmed, `None`
/// when left out or blank.
pub(crate) fn stated_reason(reason: Option<&str>) -> Result<Option<String>, ApiError> {
    no_control("/reason", reason)?;
    Ok(reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned))
}

/// A body that may be left out: empty is `T::default()`.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        typed_body(bytes)
    }
}
