//! Bodies of returns, their receipt, line cancellations and partial
//! refunds, as the OpenAPI document describes them.

use super::schemas::{OrderEvent, ShipmentLine};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "items": [{ "sku": "WIDGET-1", "quantity": 1 }], "reason": "too small" }))]
pub struct ReturnRequest {
    /// Units of shipped lines to send back.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ReturnItem>,
    /// Why, in the customer's words: 1 to 500 characters.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnItem {
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({ "items": [{ "sku": "WIDGET-1", "quantity": 1, "condition": "sellable" }], "warehouseId": "east" }))]
pub struct ReceiveRequest {
    /// What arrived, at most what the return holds of each SKU.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ReceivedItem>,
    /// Where sellable items go back on hand.
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub warehouse_id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceivedItem {
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i64,
    pub condition: ItemCondition,
}

/// `sellable` goes back on hand; `damaged` does not, and is refunded as the
/// tenant's policy says.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ItemCondition {
    Sellable,
    Damaged,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "items": [{ "sku": "GADGET-7" }], "reason": "no longer wanted" }))]
pub struct LineCancellationRequest {
    /// Whole lines by SKU, none shipped yet.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ShipmentLine>,
    /// At most 500 characters are kept.
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnStatusView {
    Requested,
    Refunding,
    Refunded,
    RefundFailed,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Return {
    #[schema(example = "ret_01JD5V7Q1M7G3Y8K5T0N6B2C4D")]
    pub id: String,
    /// `REQUESTED` until received; `REFUNDING` once received and restocked;
    /// then `REFUNDED`, or `REFUND_FAILED` for an operator.
    pub status: ReturnStatusView,
    pub items: Vec<ReturnItem>,
    pub reason: String,
    pub requested_at: String,
    pub received: Vec<ReceivedItem>,
    pub warehouse_id: Option<String>,
    pub received_at: Option<String>,
    /// What the received lines paid (their share of tax and discount
    /// included, shipping not), minor units.
    pub received_value: i64,
    /// What the tenant's policy kept of it (restocking fee, damaged goods).
    pub withheld: i64,
    /// The refund of what came back, once received (none when nothing was due).
    pub refund: Option<PartialRefund>,
    /// Only on `GET /orders/{id}/returns/{returnId}`: the return's own entries in the order's history.
    #[schema(nullable = false)]
    pub history: Option<Vec<OrderEvent>>,
}

#[derive(Serialize, ToSchema)]
pub struct ReturnList {
    pub data: Vec<Return>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefundKind {
    Return,
    CancelledLines,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatusView {
    Pending,
    Succeeded,
    Failed,
}

/// Part of the capture going back through the tenant's payment plugin.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartialRefund {
    /// The return's id, or the line cancellation's (`lcx_…`).
    pub id: String,
    pub kind: RefundKind,
    /// Minor units.
    pub amount: i64,
    pub status: RefundStatusView,
    pub attempts: u32,
    pub provider_reference: Option<String>,
    /// The last failure, while retrying or once failed.
    pub error: Option<String>,
    /// A line cancellation's SKUs.
    pub items: Vec<String>,
}
