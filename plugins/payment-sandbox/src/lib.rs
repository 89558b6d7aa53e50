//! Payment adapter for the OMS sandbox payment service provider (a
//! Stripe-test-mode-style API shipped with the platform).
//!
//! Settings:
//! - `base_url` (required): e.g. `http://127.0.0.1:8090`; its origin must be
//!   in the tenant's `allowed_origins`.
//! - `api_key`: sent as a bearer token (default `sk_test_oms`).

wit_bindgen::generate!({ world: "payment-provider", path: "../../wit" });

use exports::oms::plugin::provider::{Decline, Guest, PaymentError, PaymentRequest};
use exports::oms::plugin::payment_status::{
    Guest as StatusGuest, PaymentState, ProviderPayment, RetrieveError,
};
use oms::plugin::outbound_http::{self, HttpError, Request};
use oms::plugin::types::Settings;
use serde::Deserialize;

struct Sandbox;

#[derive(Deserialize)]
struct Ok_ {
    id: String,
}

#[derive(Deserialize)]
struct ErrBody {
    error: ErrDetail,
}

#[derive(Deserialize)]
struct ErrDetail {
    code: String,
    message: String,
}

fn setting<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn call(settings: &Settings, path: &str, key: &str, body: serde_json::Value) -> Result<String, PaymentError> {
    let base = setting(settings, "base_url")
        .ok_or_else(|| PaymentError::Transient("adapter setting base_url is missing".into()))?;
    let api_key = setting(settings, "api_key").unwrap_or("sk_test_oms");
    let request = Request {
        method: "POST".into(),
        url: format!("{}{path}", base.trim_end_matches('/')),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {api_key}")),
            ("idempotency-key".into(), key.into()),
        ],
        body: body.to_string().into_bytes(),
    };
    let response = outbound_http::send(&request).map_err(|e| match e {
        HttpError::ForbiddenOrigin(origin) => PaymentError::Declined(Decline {
            code: "ORIGIN_NOT_ALLOWED".into(),
            message: format!("{origin} is not in the tenant's allowed origins"),
        }),
        HttpError::Timeout => PaymentError::Transient("provider timed out".into()),
        HttpError::Connection(m) => PaymentError::Transient(format!("connection: {m}")),
    })?;
    match response.status {
        200..=299 => serde_json::from_slice::<Ok_>(&response.body)
            .map(|ok| ok.id)
            .map_err(|e| PaymentError::Transient(format!("unreadable provider response: {e}"))),
        400..=499 if response.status != 429 && response.status != 409 => {
            let (code, message) = serde_json::from_slice::<ErrBody>(&response.body)
                .map(|b| (b.error.code, b.error.message))
                .unwrap_or_else(|_| (format!("http_{}", response.status), "declined".into()));
            Err(PaymentError::Declined(Decline { code, message }))
        }
        status => Err(PaymentError::Transient(format!("provider answered HTTP {status}"))),
    }
}

fn reference(request: &PaymentRequest) -> Result<&str, PaymentError> {
    request.provider_reference.as_deref().ok_or_else(|| {
        PaymentError::Declined(Decline {
            code: "MISSING_REFERENCE".into(),
            message: "no authorization to act on".into(),
        })
    })
}

impl Guest for Sandbox {
    fn authorize(request: PaymentRequest, settings: Settings) -> Result<String, PaymentError> {
        let body = serde_json::json!({
            "amount": request.amount,
            "currency": request.currency,
            "payment_method": request.token,
            "metadata": { "order_id": request.order_id },
        });
        call(&settings, "/v1/payment_intents", &request.idempotency_key, body)
    }

    fn capture(request: PaymentRequest, settings: Settings) -> Result<String, PaymentError> {
        let id = reference(&request)?;
        let body = serde_json::json!({ "amount_to_capture": request.amount });
        call(&settings, &format!("/v1/payment_intents/{id}/capture"), &request.idempotency_key, body)
    }

    fn void(request: PaymentRequest, settings: Settings) -> Result<String, PaymentError> {
        let id = reference(&request)?;
        call(&settings, &format!("/v1/payment_intents/{id}/cancel"), &request.idempotency_key, serde_json::json!({}))
    }

    fn refund(request: PaymentRequest, settings: Settings) -> Result<String, PaymentError> {
        let id = reference(&request)?;
        let body = serde_json::json!({ "payment_intent": id, "amount": request.amount });
        call(&settings, "/v1/refunds", &request.idempotency_key, body)
    }
}

#[derive(Deserialize)]
struct Intent {
    status: String,
    amount: i64,
    amount_refunded: i64,
    currency: String,
}

impl StatusGuest for Sandbox {
    fn retrieve(provider_reference: String, settings: Settings) -> Result<ProviderPayment, RetrieveError> {
        let base = setting(&settings, "base_url")
            .ok_or_else(|| RetrieveError::Transient("adapter setting base_url is missing".into()))?;
        let api_key = setting(&settings, "api_key").unwrap_or("sk_test_oms");
        let request = Request {
            method: "GET".into(),
            url: format!("{}/v1/payment_intents/{provider_reference}", base.trim_end_matches('/')),
            headers: vec![("authorization".into(), format!("Bearer {api_key}"))],
            body: vec![],
        };
        let response = outbound_http::send(&request).map_err(|e| match e {
            HttpError::ForbiddenOrigin(origin) => RetrieveError::Transient(format!("{origin} is not allowed")),
            HttpError::Timeout => RetrieveError::Transient("provider timed out".into()),
            HttpError::Connection(m) => RetrieveError::Transient(format!("connection: {m}")),
        })?;
        match response.status {
            200 => {
                let intent: Intent = serde_json::from_slice(&response.body)
                    .map_err(|e| RetrieveError::Transient(format!("unreadable provider response: {e}")))?;
                let state = match intent.status.as_str() {
                    "requires_capture" => PaymentState::Authorized,
                    "succeeded" => PaymentState::Captured,
                    "canceled" => PaymentState::Voided,
                    other => return Err(RetrieveError::Transient(format!("unknown payment state {other}"))),
                };
                Ok(ProviderPayment {
                    state,
                    amount: intent.amount,
                    refunded: intent.amount_refunded,
                    currency: intent.currency.to_uppercase(),
                })
            }
            404 => Err(RetrieveError::NotFound(provider_reference)),
            status => Err(RetrieveError::Transient(format!("provider answered HTTP {status}"))),
        }
    }
}

export!(Sandbox);
