//! Order rules with limits from the tenant manifest (see `rules.rs` for the
//! settings). This file only adapts the WIT world to the rules.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

mod rules;

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Limits;

impl Guest for Limits {
    fn validate(order: Order, settings: Settings) -> Result<(), Vec<Violation>> {
        let view = rules::OrderView {
            lines: order
                .items
                .iter()
                .map(|i| (i.sku.as_str(), i.quantity))
                .collect(),
            total_amount: order.total_amount,
            currency: &order.currency,
            country: &order.shipping_address.country,
        };
        let setting = |key: &str| {
            settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let findings = rules::check(&view, setting);
        if findings.is_empty() {
            return Ok(());
        }
        Err(findings
            .into_iter()
            .map(|f| Violation {
                code: f.code.into(),
                message: f.message,
                field: f.field,
            })
            .collect())
    }
}

export!(Limits);
