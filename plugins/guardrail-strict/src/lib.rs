//! A stricter guardrail, to roll out over `guardrail-limits`: at most
//! `max_quantity` (default 10) of a line and no P.O. box addresses.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Strict;

impl Guest for Strict {
    fn validate(order: Order, settings: Settings) -> Result<(), Vec<Violation>> {
        let max: u32 = settings
            .iter()
            .find(|(k, _)| k == "strict_max_quantity")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(10);
        let mut violations: Vec<Violation> = order
            .items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.quantity > max)
            .map(|(i, item)| Violation {
                code: "MAX_QUANTITY_EXCEEDED".into(),
                message: format!("quantity {} of {} exceeds the strict limit of {max}", item.quantity, item.sku),
                field: format!("/items/{i}/quantity"),
            })
            .collect();
        let line1 = order.shipping_address.line1.to_ascii_lowercase().replace('.', "");
        if line1.contains("po box") {
            violations.push(Violation {
                code: "PO_BOX_NOT_ALLOWED".into(),
                message: "we cannot deliver to a P.O. box".into(),
                field: "/shippingAddress/line1".into(),
            });
        }
        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }
}

export!(Strict);
