//! Bodies of webhook endpoints and their deliveries, as the OpenAPI
//! document describes them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "url": "https://hooks.example.com/oms", "eventTypes": ["order.confirmed", "order.cancelled"], "description": "ERP" }))]
pub struct WebhookRequest {
    /// `http` or `https`, no credentials; it must not point at a private,
    /// loopback or link-local address unless the operator allows it.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// The event types to deliver, or `["*"]` for every one.
    #[schema(min_items = 1, max_items = 32)]
    pub event_types: Vec<String>,
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    #[schema(example = "we_01JD5V7Q1M7G3Y8K5T0N6B2C4D")]
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// `enabled`, or `disabled` (after days of failed deliveries; enable it again).
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Since when every delivery failed; null while they succeed.
    pub failing_since: Option<String>,
    pub created_at: String,
    /// Only in the answer that created it: the signing secret.
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookEndpoints {
    pub data: Vec<WebhookEndpoint>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    /// The event's id (CloudEvents `id`): the same in every attempt.
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    /// `pending`, `delivered` or `failed` (given up on after three days).
    pub status: String,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveries {
    pub data: Vec<WebhookDelivery>,
}
