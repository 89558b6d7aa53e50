//! Payment reconciliation (the OMS design's reconciliation job): once an
//! order's saga is at rest, the payment its adapter reported is read back
//! from the provider through the adapter's `payment-status` and compared
//! with what the host recorded. A difference — an operator refunding in the
//! provider's dashboard, an adapter that reported a capture it never made —
//! is recorded on the payment rows, published as `payment.mismatch`, logged
//! and counted. Each order's operations are settled once across hosts.

use super::Platform;
use super::effects::message;
use super::metrics::Metrics;
use crate::transport::topics::TOPIC_ORDER_EVENTS;
use oms_domain::{OrderId, TenantId};
use oms_plugin_host::{PaymentState, ProviderPayment, RetrieveError, Slot};
use oms_store::{Mismatch, PaymentRecord, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Orders compared per round.
const BATCH: i64 = 64;
/// How long an order whose lookup failed is left alone.
const RETRY_AFTER_MS: i64 = 30_000;
/// Default time between rounds (`OMS_RECONCILE_INTERVAL_MS`).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What the host's own records say the provider should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The authorization `retrieve` looks up.
    pub reference: String,
    pub state: PaymentState,
    pub amount: i64,
    pub refunded: i64,
    pub currency: String,
}

/// Folds an order's succeeded payment operations, oldest first, into what
/// the provider should hold; `None` without a succeeded authorization.
pub fn expected(rows: &[PaymentRecord]) -> Option<Expected> {
    let mut ok = rows.iter().filter(|r| r.status == "succeeded");
    let auth = ok.clone().find(|r| r.op == "authorize")?;
    let mut e = Expected {
        reference: auth.provider_reference.clone()?,
        state: PaymentState::Authorized,
        amount: auth.amount,
        refunded: 0,
        currency: auth.currency.clone(),
    };
    for r in ok.by_ref() {
        match r.op.as_str() {
            "capture" => {
                e.state = PaymentState::Captured;
                e.amount = r.amount;
            }
            "void" => e.state = PaymentState::Voided,
            "refund" => e.refunded += r.amount,
            _ => {}
        }
    }
    Some(e)
}

/// Where the provider's payment differs from the host's records, in words.
pub fn differences(expected: &Expected, provider: &ProviderPayment) -> Vec<String> {
    let mut out = Vec::new();
    if expected.state != provider.state {
        out.push(format!(
            "state: recorded {:?}, provider {:?}",
            expected.state, provider.state
        ));
    }
    if expected.amount != provider.amount {
        out.push(format!(
            "amount: recorded {}, provider {}",
            expected.amount, provider.amount
        ));
    }
    if expected.refunded != provider.refunded {
        out.push(format!(
            "refunded: recorded {}, provider {}",
            expected.refunded, provider.refunded
        ));
    }
    if !expected.currency.eq_ignore_ascii_case(&provider.currency) {
        out.push(format!(
            "currency: recorded {}, provider {}",
            expected.currency, provider.currency
        ));
    }
    out
}

/// How one order's reconciliation ended this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    Matched,
    Mismatch,
    /// The adapter cannot read payments back, or nothing was authorized.
    Unverifiable,
    /// The saga is moving, or moved while the provider was asked: next round.
    NotAtRest,
    /// The lookup failed; the order is deferred.
    Deferred,
}

pub(crate) async fn run(p: Arc<Platform>) {
    let every = match std::env::var("OMS_RECONCILE_INTERVAL_MS") {
        Err(_) => DEFAULT_INTERVAL,
        Ok(v) => match v.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms.max(10)),
            Err(_) => {
                tracing::warn!(value = %v, "OMS_RECONCILE_INTERVAL_MS is not a number of ms; using the default");
                DEFAULT_INTERVAL
            }
        },
    };
    // A round's orders are spread over the interval, one every
    // `every / BATCH`: each order's settlement is a write transaction of its
    // own, flushed to disk, which takes the write turn from the group-commit
    // writer (on SQLite). All of a round's at once made a chain of them
    // every five seconds, the writer waiting 5-20 ms for the turn before
    // each of its batches for a few hundred milliseconds and new orders
    // waiting behind it: the accept latency's worst seconds at 1,000
    // orders/s (README, the twentieth session). As many orders a round as
    // before.
    let gap = every / u32::try_from(BATCH).unwrap_or(u32::MAX);
    let mut due_at = tokio::time::Instant::now() + every;
    loop {
        tokio::time::sleep_until(due_at).await;
        // Rounds start `every` apart, or back to back when one takes longer.
        due_at = tokio::time::Instant::now() + every;
        if let Err(e) = reconcile_round(&p, gap).await {
            tracing::warn!(error = %e, "payment reconciliation round failed");
        }
    }
}

/// One round: every order with operations still to compare, up to a batch.
pub async fn reconcile_due(p: &Platform) -> Result<Vec<Reconciled>, StoreError> {
    reconcile_round(p, Duration::ZERO).await
}

/// [`reconcile_due`], waiting `gap` after each order compared.
async fn reconcile_round(p: &Platform, gap: Duration) -> Result<Vec<Reconciled>, StoreError> {
    let now = oms_clock::now_ms();
    let due = p.store.unreconciled_orders(now, now, BATCH).await?;
    let mut outcomes = Vec::with_capacity(due.len());
    for order in due {
        let (Some(tenant), Some(order_id)) = (
            p.tenants.get(&order.tenant_id).map(|t| t.id.clone()),
            OrderId::parse(&order.order_id),
        ) else {
            // Not this host's tenant (or a malformed id): another host's work.
            continue;
        };
        outcomes.push(reconcile_order(p, &tenant, &order_id).await?);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    Ok(outcomes)
}

async fn reconcile_order(
    p: &Platform,
    tenant_id: &TenantId,
    order_id: &OrderId,
) -> Result<Reconciled, StoreError> {
    let before = p.store.order(tenant_id, order_id).await?;
    if matches!(before.saga_status.as_str(), "RUNNING" | "COMPENSATING") {
        return Ok(Reconciled::NotAtRest);
    }
    let rows = p.store.payments(tenant_id, order_id).await?;
    let Some(through) = rows.iter().map(|r| r.id.as_str()).max().map(str::to_owned) else {
        return Ok(Reconciled::NotAtRest);
    };
    let settle = |outcome: &'static str, mismatch| {
        let (version, through) = (before.version, through.as_str());
        let now = oms_clock::now_ms();
        p.store.settle_reconciliation(
            tenant_id, order_id, version, through, outcome, now, mismatch,
        )
    };
    let Some(expected) = expected(&rows) else {
        if !settle("no_reference", None).await? {
            return Ok(Reconciled::NotAtRest);
        }
        return Ok(Reconciled::Unverifiable);
    };
    let Some(tenant) = p.tenants.get(tenant_id.as_str()) else {
        return Ok(Reconciled::NotAtRest);
    };
    let tp = tenant.plugin(Slot::PaymentProvider);
    let (plugin, _) = tp.for_order(order_id.as_str());
    let grant = tp.http_grant();
    let called = p
        .plugins
        .retrieve(
            tenant_id.as_str(),
            &plugin,
            tp.limits,
            grant,
            expected.reference.clone(),
            tp.settings.clone(),
        )
        .await;
    let provider = match called {
        Ok(None) => {
            if !settle("unsupported", None).await? {
                return Ok(Reconciled::NotAtRest);
            }
            Metrics::inc(&p.metrics.payments_unreconcilable_total);
            return Ok(Reconciled::Unverifiable);
        }
        Ok(Some(c)) => c.value,
        Err(e) => Err(RetrieveError::Transient(e.to_string())),
    };
    let found = match provider {
        Ok(found) => Some(found),
        Err(RetrieveError::NotFound(_)) => None,
        Err(RetrieveError::Transient(m)) => {
            tracing::warn!(tenant = %tenant_id, order = %order_id, error = %m, "reading a payment back from the provider failed; trying later");
            Metrics::inc(&p.metrics.reconciliation_errors_total);
            p.store
                .defer_reconciliation(tenant_id, order_id, oms_clock::now_ms() + RETRY_AFTER_MS)
                .await?;
            return Ok(Reconciled::Deferred);
        }
    };
    let differences = match &found {
        Some(found) => differences(&expected, found),
        None => vec!["the provider has no such payment".to_string()],
    };
    if differences.is_empty() {
        // Settling checks the order is still at the version compared: anything
        // the saga did meanwhile bumped it first, and waits for a later round.
        if !settle("matched", None).await? {
            return Ok(Reconciled::NotAtRest);
        }
        Metrics::inc(&p.metrics.payments_reconciled_total);
        return Ok(Reconciled::Matched);
    }
    let history = json!({
        "providerReference": expected.reference,
        "recorded": view(expected.state, expected.amount, expected.refunded, &expected.currency),
        "provider": found.as_ref().map(|f| view(f.state, f.amount, f.refunded, &f.currency)),
        "differences": differences,
        "pluginVersion": plugin.version(),
    });
    let mismatch = Mismatch {
        message: message(
            TOPIC_ORDER_EVENTS,
            "payment.mismatch",
            tenant_id,
            order_id,
            oms_clock::now_ms(),
            history.clone(),
        ),
        history,
    };
    if !settle("mismatch", Some(&mismatch)).await? {
        return Ok(Reconciled::NotAtRest);
    }
    Metrics::inc(&p.metrics.payment_mismatches_total);
    tracing::warn!(tenant = %tenant_id, order = %order_id, ?differences, "payment differs from what the provider holds");
    Ok(Reconciled::Mismatch)
}

fn view(state: PaymentState, amount: i64, refunded: i64, currency: &str) -> serde_json::Value {
    let state = match state {
        PaymentState::Authorized => "authorized",
        PaymentState::Captured => "captured",
        PaymentState::Voided => "voided",
    };
    json!({ "state": state, "amount": amount, "refunded": refunded, "currency": currency })
}
