//! The bodies the API reads and answers with, as the OpenAPI document
//! describes them. Handlers that read a body parse it into these types (or,
//! for orders, check it field by field into `OrderDraft` with the same
//! fields); the answers are checked against them by the contract fuzzing
//! in `tests/contract`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, SchemaType, Type};

// Patterns: a SKU or warehouse id is 1 to 64 printable ASCII characters;
// a text field is not blank and holds no control characters (what the
// handlers check; ECMA-262 and Python both read `\uXXXX` ranges).

/// A string schema listing its values (the wire names of a domain enum).
fn one_of(values: &[&str], description: &str) -> Object {
    Object::builder()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

pub(crate) fn order_status() -> Object {
    one_of(oms_domain::OrderStatus::WIRE, "the order's status")
}

pub(crate) fn payment_status() -> Object {
    one_of(oms_domain::PaymentStatus::WIRE, "where its payment stands")
}

pub(crate) fn fulfillment_status() -> Object {
    one_of(
        oms_domain::FulfillmentStatus::WIRE,
        "where its fulfilment stands",
    )
}

/// Bounded key/values of text: the order's or a line's `metadata`.
pub(crate) fn metadata() -> Object {
    use oms_domain::validate::{METADATA_KEY_MAX, METADATA_MAX_KEYS, METADATA_VALUE_MAX};
    let key = Object::builder()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(format!("^[A-Za-z0-9_.-]{{1,{METADATA_KEY_MAX}}}$")));
    let value = Object::builder()
        .schema_type(SchemaType::Type(Type::String))
        .max_length(Some(METADATA_VALUE_MAX))
        .pattern(Some(TEXT));
    Object::builder()
        .schema_type(SchemaType::Type(Type::Object))
        .max_properties(Some(METADATA_MAX_KEYS))
        .property_names(Some(key))
        .additional_properties(Some(value))
        .description(Some(format!(
            "At most {METADATA_MAX_KEYS} keys of 1 to {METADATA_KEY_MAX} of A-Z a-z 0-9 _ . -, \
             each a text of at most {METADATA_VALUE_MAX} characters"
        )))
        .build()
}

/// Not blank, no control characters.
const TEXT: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";

pub(crate) fn saga_state() -> Object {
    let all = oms_saga::SagaStatus::ALL.map(|s| s.as_str());
    one_of(&all, "where the order's saga stands")
}

/// The error envelope every refusal answers with.
#[derive(Serialize, ToSchema)]
pub struct Error {
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable and machine-readable, e.g. `VALIDATION_FAILED`.
    #[schema(example = "VALIDATION_FAILED")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// What the code needs to be acted on (e.g. `errors` with a JSON
    /// pointer per field), or null.
    pub details: Value,
    /// Also the response's `X-Request-Id`.
    #[schema(example = "req_01JD5V7Q1M7G3Y8K5T0N6B2C4D")]
    pub request_id: String,
    pub timestamp: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    /// 1 to 64 printable ASCII characters without spaces.
    #[schema(example = "WIDGET-1", pattern = r"^[!-~]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, example = 2)]
    pub quantity: i64,
    /// Minor units (cents): an integer, never a decimal.
    #[schema(minimum = 0, example = 1999)]
    pub unit_price: i64,
    /// The product's name as the customer saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        example = "Widget, blue",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = metadata)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[schema(
        max_length = 200,
        example = "1 Main St",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub line1: String,
    #[schema(
        max_length = 100,
        example = "Springfield",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub city: String,
    #[schema(
        max_length = 20,
        example = "12345",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(min_length = 2, max_length = 2, example = "US")]
    pub country: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PaymentMethod {
    /// The payment provider's token for the customer's card.
    #[schema(
        max_length = 200,
        example = "tok_visa",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub token: String,
}

/// An order to place. Strings must not be blank nor hold control characters.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "customerId": "cust-1",
    "currency": "USD",
    "items": [{ "sku": "WIDGET-1", "quantity": 2, "unitPrice": 1999 }],
    "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
    "paymentMethod": { "token": "tok_visa" }
}))]
pub struct OrderRequest {
    #[schema(
        max_length = 128,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub customer_id: String,
    /// ISO 4217.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    /// 1 to 500 items.
    #[schema(min_items = 1, max_items = 500)]
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
    /// Absent: the shipping address is also the billing address.
    pub billing_address: Option<Address>,
    #[schema(schema_with = metadata)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Minor units, default 0.
    #[schema(minimum = 0, example = 500)]
    pub shipping_amount: Option<i64>,
    /// Minor units, default 0.
    #[schema(minimum = 0, example = 320)]
    pub tax_amount: Option<i64>,
    /// Minor units, default 0; at most the lines, shipping and tax together.
    #[schema(minimum = 0, example = 0)]
    pub discount_amount: Option<i64>,
    /// If given, must equal Σ quantity × unitPrice + shippingAmount +
    /// taxAmount − discountAmount (422 `TOTAL_MISMATCH` otherwise).
    pub total_amount: Option<i64>,
}

/// The order's saga: its steps, those done and those undone.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaSummary {
    pub steps: Vec<String>,
    pub completed: Vec<String>,
    pub compensated: Vec<String>,
    pub pending_compensations: Vec<String>,
    pub attempt: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    #[schema(example = "ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D")]
    pub id: String,
    /// The tenant's number for it: 1, 2, 3, … in the order orders were
    /// accepted (absent on orders placed before numbers existed).
    #[schema(nullable = false, minimum = 1, example = 1042)]
    pub order_number: Option<i64>,
    #[schema(schema_with = order_status)]
    pub status: String,
    #[schema(schema_with = payment_status)]
    pub payment_status: String,
    #[schema(schema_with = fulfillment_status)]
    pub fulfillment_status: String,
    /// Minor units: subtotalAmount + shippingAmount + taxAmount − discountAmount.
    pub total_amount: i64,
    /// Σ quantity × unitPrice.
    pub subtotal_amount: i64,
    pub shipping_amount: i64,
    pub tax_amount: i64,
    pub discount_amount: i64,
    pub currency: String,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    /// The shipping address unless the order named another.
    pub billing_address: Address,
    #[schema(schema_with = metadata)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[schema(schema_with = saga_state)]
    pub saga_state: String,
    pub saga: SagaSummary,
    pub created_at: String,
    pub updated_at: String,
    /// What the tenant's guardrail found wrong, when it rejected the order.
    #[schema(nullable = false)]
    pub violations: Option<Value>,
    #[schema(nullable = false)]
    pub cancellation_reason: Option<String>,
    #[schema(nullable = false)]
    pub shipment: Option<Value>,
    /// The warehouse's answer to the fulfilment request, for tenants whose
    /// warehouse answers; absent otherwise.
    #[schema(nullable = false)]
    pub fulfilment: Option<FulfilmentView>,
    /// SKUs of lines cancelled before they shipped.
    pub cancelled_lines: Vec<String>,
    /// Parts of the capture going back (returns, cancelled lines), in the
    /// order they began; a cancel of the whole order refunds the rest.
    pub refunds: Vec<super::return_schemas::PartialRefund>,
    /// Σ of the partial refunds that succeeded, minor units.
    pub refunded_amount: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FulfilmentView {
    /// While the saga waits: when it stops waiting and undoes the order.
    pub answer_by: Option<String>,
    /// `accepted` or `rejected` once the warehouse answered.
    pub decision: Option<FulfilmentAnswer>,
    pub reason: Option<String>,
    pub estimated_delivery: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub data: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderEvent {
    pub sequence: i64,
    #[serde(rename = "type")]
    #[schema(example = "order.created")]
    pub kind: String,
    pub at: String,
    pub data: Value,
}

#[derive(Serialize, ToSchema)]
pub struct OrderEvents {
    pub data: Vec<OrderEvent>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// authorize, capture, void or refund.
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub provider_reference: Option<String>,
    pub error_code: Option<String>,
    pub idempotency_key: String,
    pub plugin_version: Option<String>,
    pub at: String,
    pub reconciliation: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Payments {
    pub data: Vec<Payment>,
}

#[derive(Default, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "reason": "customer changed their mind" }))]
pub struct CancelRequest {
    /// At most 500 characters are kept.
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "carrier": "ups", "trackingNumber": "1Z999AA10123456784", "items": [{ "sku": "WIDGET-1" }] }))]
pub struct ShipmentRequest {
    /// The order's lines in this shipment, whole lines by SKU; absent: every
    /// line not shipped yet.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Option<Vec<ShipmentLine>>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub carrier: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub tracking_number: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ShipmentLine {
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub sku: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackedShipment {
    /// 1 for the first shipment of the order, 2 for the next, …
    pub number: u32,
    pub carrier: String,
    pub tracking_number: String,
    pub items: Vec<TrackedLine>,
    pub shipped_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TrackedLine {
    pub sku: String,
    pub quantity: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    pub order_id: String,
    #[schema(schema_with = order_status)]
    pub status: String,
    #[schema(schema_with = fulfillment_status)]
    pub fulfillment_status: String,
    /// As the warehouse gave it when it accepted.
    pub estimated_delivery: Option<String>,
    pub shipments: Vec<TrackedShipment>,
    /// Lines not shipped yet.
    pub not_shipped: Vec<TrackedLine>,
    pub delivered: bool,
}

/// The warehouse's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FulfilmentAnswer {
    Accepted,
    Rejected,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "decision": "accepted", "estimatedDelivery": "2026-12-09" }))]
pub struct FulfilmentDecisionRequest {
    pub decision: FulfilmentAnswer,
    /// Why (for a rejection, shown as the order's cancellation reason); at most 500 characters.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
    /// An RFC 3339 date (`2026-12-09`) or date-time.
    pub estimated_delivery: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "warehouseId": "wh-1", "onHand": 100 }))]
pub struct StockRequest {
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub warehouse_id: String,
    #[schema(minimum = 0)]
    pub on_hand: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseStock {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Stock {
    pub sku: String,
    pub warehouses: Vec<WarehouseStock>,
}
