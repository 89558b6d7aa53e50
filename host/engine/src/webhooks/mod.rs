//! Tenant webhooks: endpoints a tenant registers, to which every order,
//! payment, return and fulfilment event is delivered from the outbox,
//! signed, at least once, in order per order (`deliver`). Registration
//! checks the URL; where it points is checked again at every delivery.

mod deliver;
mod guard;

pub(crate) use deliver::run;
pub use deliver::{Options, sign};
pub use guard::Allow;

use super::Platform;
use oms_domain::TenantId;
use oms_store::{StoreError, WebhookEndpoint};

/// The event types an endpoint may ask for (`*`: all of them).
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.confirmed",
    "order.rejected",
    "order.cancelled",
    "order.shipped",
    "order.delivered",
    "order.saga_stuck",
    "order.resolved",
    "order.lines_cancelled",
    "return.requested",
    "return.received",
    "return.refunded",
    "return.refund_failed",
    "payment.authorized",
    "payment.captured",
    "payment.voided",
    "payment.refunded",
    "payment.refund_failed",
    "payment.mismatch",
    "fulfilment.requested",
    "fulfilment.cancel_requested",
    "fulfilment.lines_cancelled",
];

/// At most this many endpoints per tenant.
pub const MAX_ENDPOINTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request names a bad field: (JSON pointer, message).
    #[error("{0} {1}")]
    Invalid(&'static str, String),
    /// Where the URL points is not allowed (private, loopback, …).
    #[error("{0}")]
    Forbidden(String),
    #[error("a tenant has at most {MAX_ENDPOINTS} webhook endpoints")]
    TooMany,
    #[error("webhook endpoint not found")]
    NotFound,
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// A new endpoint: its URL (http or https, no credentials, not pointing
/// where the operator does not allow), the types it wants and a secret,
/// shown to the tenant in this answer only.
pub async fn register(
    p: &Platform,
    tenant: &TenantId,
    url: &str,
    types: &[String],
    description: Option<String>,
) -> Result<WebhookEndpoint, WebhookError> {
    let parsed = check_url(url)?;
    guard::check_target(&parsed, p.webhook_options().allow).await?;
    let types = check_types(types)?;
    let now = oms_clock::now_ms();
    let endpoint = WebhookEndpoint {
        tenant_id: tenant.to_string(),
        id: format!("we_{}", oms_clock::monotonic_ulid()),
        url: parsed.to_string(),
        event_types: types,
        secret: format!("whsec_{}", hex::encode(oms_clock::secret_bytes())),
        description,
        status: "enabled".into(),
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    match p
        .store
        .create_webhook(&endpoint, MAX_ENDPOINTS as i64)
        .await
    {
        Err(StoreError::QuotaExceeded(_)) => return Err(WebhookError::TooMany),
        other => other?,
    }
    Ok(endpoint)
}

fn check_url(raw: &str) -> Result<url::Url, WebhookError> {
    let bad = |m: &str| WebhookError::Invalid("/url", m.to_string());
    if raw.len() > 2048 {
        return Err(bad("must be at most 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    Ok(url)
}

/// The types as stored: comma-separated, known ones only, or `*`.
fn check_types(types: &[String]) -> Result<String, WebhookError> {
    if types.is_empty() || types.len() > EVENT_TYPES.len() {
        return Err(WebhookError::Invalid(
            "/eventTypes",
            "must list 1 or more event types, or [\"*\"]".into(),
        ));
    }
    if types.iter().any(|t| t == "*") {
        return Ok("*".into());
    }
    let mut known: Vec<&str> = Vec::new();
    for t in types {
        let Some(k) = EVENT_TYPES.iter().find(|k| **k == t.as_str()) else {
            return Err(WebhookError::Invalid(
                "/eventTypes",
                format!(
                    "`{t}` is not an event type; they are {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        };
        if !known.contains(k) {
            known.push(k);
        }
    }
    Ok(known.join(","))
}

/// Enables an endpoint again (after it was disabled for failing), its
/// failures forgotten; its pending deliveries go out again.
pub async fn enable(
    p: &Platform,
    tenant: &TenantId,
    id: &str,
) -> Result<WebhookEndpoint, WebhookError> {
    Ok(p.store
        .set_webhook_status(tenant, id, "enabled", None, oms_clock::now_ms())
        .await?)
}
