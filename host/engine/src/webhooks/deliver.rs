//! The delivery worker: sends each due delivery (for every endpoint and
//! order, only the oldest pending one, so an order's events arrive in
//! order) as a CloudEvents JSON body signed like Stripe's:
//! `OMS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A 2xx is delivered; anything else is tried again with a doubling,
//! jittered delay (at most an hour apart) until the event is older than the
//! give-up time (three days), and an endpoint that has only failed for the
//! disable time (three days) is disabled. At least once: a delivery leased
//! by a host that died goes out again when its lease ends.

use super::super::Platform;
use super::guard::{Allow, Guarded};
use hmac::{Hmac, Mac};
use oms_domain::TenantId;
use oms_store::{Attempt, WebhookDelivery};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 24 * 3_600_000;
/// How long a host holds a delivery it is sending.
const LEASE_MS: i64 = 30_000;
/// The longest a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries sent at once by one host.
const BATCH: i64 = 32;
/// Finished deliveries are kept in the log this long (then pruned).
const KEEP_MS: i64 = 30 * DAY_MS;
/// How often each host prunes the log.
const PRUNE_EVERY_MS: i64 = 10 * 60_000;

/// How webhooks are delivered; the operator's (`oms serve --webhooks-allow …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub allow: Allow,
    /// The first retry comes about this long after a failure; each next
    /// one twice as long, at most an hour.
    pub retry_base_ms: u64,
    /// A delivery not made this long after its event is given up on.
    pub give_up_after_ms: i64,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after_ms: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow: Allow::default(),
            retry_base_ms: 10_000,
            give_up_after_ms: 3 * DAY_MS,
            disable_after_ms: 3 * DAY_MS,
        }
    }
}

/// The `OMS-Signature` header for `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body sent for a delivery: the event as a CloudEvents 1.0 JSON event.
fn cloud_event(d: &WebhookDelivery) -> Result<String, serde_json::Error> {
    let message: Value = serde_json::from_str(&d.payload)?;
    let event = json!({
        "specversion": "1.0",
        "id": d.event_id,
        "source": format!("/tenants/{}", d.tenant_id),
        "type": d.event_type,
        "subject": d.order_id,
        "time": message["occurredAt"],
        "datacontenttype": "application/json",
        "schemaversion": message["schemaVersion"],
        "tenantid": d.tenant_id,
        "data": message["data"],
    });
    serde_json::to_string(&event)
}

pub(crate) async fn run(p: Arc<Platform>) {
    let options = p.webhook_options();
    let client = match reqwest::Client::builder()
        .dns_resolver(Arc::new(Guarded(options.allow)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .user_agent("oms-webhooks/1")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the webhook client could not be built; no webhooks are delivered");
            return;
        }
    };
    let mut pruned_at = 0;
    loop {
        let now = oms_clock::now_ms();
        if now - pruned_at >= PRUNE_EVERY_MS {
            pruned_at = now;
            match p.store.prune_deliveries(now - KEEP_MS, 10_000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "old webhook deliveries pruned"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning webhook deliveries failed; next round tries again")
                }
            }
        }
        let due = match p.store.due_deliveries(now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due webhook deliveries failed; retrying");
                Vec::new()
            }
        };
        let busy = !due.is_empty();
        let mut sending = tokio::task::JoinSet::new();
        for d in due {
            match p
                .store
                .lease_delivery(&d.id, d.next_attempt_at, now + LEASE_MS)
                .await
            {
                Ok(true) => {
                    let (p, client) = (p.clone(), client.clone());
                    sending.spawn(async move { send(&p, &client, options, d).await });
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leasing a webhook delivery failed"),
            }
        }
        while sending.join_next().await.is_some() {}
        if !busy {
            tokio::select! {
                _ = p.webhook_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// One attempt at one delivery, recorded.
async fn send(p: &Platform, client: &reqwest::Client, options: Options, d: WebhookDelivery) {
    let Some(tenant) = TenantId::parse(&d.tenant_id) else {
        tracing::error!(delivery = %d.id, "a webhook delivery of a malformed tenant id");
        return;
    };
    let endpoint = match p.store.webhook(&tenant, &d.endpoint_id).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(delivery = %d.id, error = %e, "reading a webhook endpoint failed");
            return;
        }
    };
    let now = oms_clock::now_ms();
    let outcome = match cloud_event(&d) {
        Ok(body) => {
            post(
                client,
                options.allow,
                &endpoint.url,
                &endpoint.secret,
                &d,
                body,
            )
            .await
        }
        Err(e) => Err((None, format!("the event is not JSON: {e}"))),
    };
    let attempt = match outcome {
        Ok(status) => Attempt::Delivered { status },
        Err((status, error)) => {
            let retry_at = (now - d.created_at < options.give_up_after_ms)
                .then(|| now + retry_delay(options.retry_base_ms, d.attempts));
            Attempt::Failed {
                status,
                error,
                retry_at,
            }
        }
    };
    let outcome_label = match &attempt {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Failed {
            retry_at: Some(_), ..
        } => "retrying",
        Attempt::Failed { .. } => "given_up",
    };
    metrics::counter!("oms_webhook_deliveries_total", "tenant" => d.tenant_id.clone(), "outcome" => outcome_label)
        .increment(1);
    if let Err(e) = p.store.record_attempt(&d, &attempt, now).await {
        // The lease runs out and the delivery goes out again: at least once.
        tracing::warn!(delivery = %d.id, error = %e, "recording a webhook attempt failed");
        return;
    }
    if let Attempt::Failed { error, .. } = &attempt {
        tracing::info!(tenant = %d.tenant_id, endpoint = %d.endpoint_id, delivery = %d.id, attempt = d.attempts + 1, %error, "webhook delivery failed");
        let failing_for = endpoint.failing_since.map(|since| now - since);
        if failing_for.is_some_and(|ms| ms >= options.disable_after_ms) {
            let reason = format!(
                "every delivery failed for {} hours, the last: {error}",
                options.disable_after_ms / 3_600_000
            );
            match p
                .store
                .set_webhook_status(&tenant, &d.endpoint_id, "disabled", Some(&reason), now)
                .await
            {
                Ok(_) => {
                    tracing::warn!(tenant = %d.tenant_id, endpoint = %d.endpoint_id, %reason, "webhook endpoint disabled")
                }
                Err(e) => tracing::warn!(error = %e, "disabling a failing webhook endpoint failed"),
            }
        }
    }
}

/// Sends the body; the receiver's status if it was 2xx, else the status (if
/// any) and why.
async fn post(
    client: &reqwest::Client,
    allow: Allow,
    url: &str,
    secret: &str,
    d: &WebhookDelivery,
    body: String,
) -> Result<i64, (Option<i64>, String)> {
    // A literal address is not resolved, so the resolver cannot refuse it.
    if let Ok(parsed) = url::Url::parse(url) {
        let literal: Option<std::net::IpAddr> = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !allow.permits(*ip)) {
            return Err((None, format!("{ip} is not an address webhooks may reach")));
        }
    }
    let t = oms_clock::now_ms() / 1000;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("oms-signature", sign(secret, t, &body))
        .header("oms-delivery-id", &d.id)
        .header("oms-event-id", &d.event_id)
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(i64::from(r.status().as_u16())),
        Ok(r) => {
            let status = r.status().as_u16();
            Err((
                Some(i64::from(status)),
                format!("the endpoint answered {status}"),
            ))
        }
        Err(e) => {
            // reqwest's error chain carries the resolver's refusal.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            Err((None, why))
        }
    }
}

/// About `base · 2^attempts` (at most an hour), at least half of it, the
/// rest drawn at random so endpoints coming back are not hit in lockstep.
fn retry_delay(base_ms: u64, attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let full = base_ms.saturating_mul(1u64 << shift).min(3_600_000);
    (full / 2 + oms_clock::jitter_ms(full / 2)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_stripes_scheme() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently
        // (`printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`).
        assert_eq!(
            sign("whsec_test", 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn retries_double_and_stop_at_an_hour() {
        for attempts in 0..30 {
            let d = retry_delay(10_000, attempts);
            let full = (10_000i64 << attempts.min(20)).min(3_600_000);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d}");
        }
    }
}
