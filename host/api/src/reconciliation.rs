//! `POST /admin/v1/payments/reconcile`: an operator runs a reconciliation
//! round now instead of waiting for the periodic one (after fixing a
//! provider outage, or to check a suspicion).

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use oms_engine::{Reconciled, reconcile_due};
use serde_json::{Value, json};

#[utoipa::path(post, path = "/payments/reconcile", tag = "sagas", operation_id = "reconcilePayments",
    summary = "Compare recorded payments with the provider's ledger",
    responses((status = 200, description = "What matched and what did not.", body = serde_json::Value)))]
pub async fn run(State(p): State<AppState>, Admin(op): Admin) -> Result<Json<Value>, ApiError> {
    let outcomes = reconcile_due(&p).await.map_err(ApiError::unavailable)?;
    let count = |what: Reconciled| outcomes.iter().filter(|o| **o == what).count();
    op.audit(
        &p,
        "payments.reconcile",
        None,
        "payments",
        Some(format!("{} orders looked at", outcomes.len())),
    )
    .await;
    Ok(Json(json!({
        "matched": count(Reconciled::Matched),
        "mismatched": count(Reconciled::Mismatch),
        "unverifiable": count(Reconciled::Unverifiable),
        "deferred": count(Reconciled::Deferred),
        "notAtRest": count(Reconciled::NotAtRest),
    })))
}
