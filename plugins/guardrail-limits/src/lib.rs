//! Order rules with limits from the tenant manifest.
//!
//! Settings (all optional):
//! - `max_quantity`: largest quantity on one line (default 100).
//! - `max_lines`: most lines on one order (default 50).
//! - `max_order_total`: largest order total in minor units (default: none).
//! - `allowed_countries`: comma-separated ISO codes to ship to (default: any).

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Limits;

fn setting<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn number(settings: &Settings, key: &str) -> Option<i64> {
    setting(settings, key).and_then(|v| v.trim().parse().ok())
}

impl Guest for Limits {
    fn validate(order: Order, settings: Settings) -> Result<(), Vec<Violation>> {
        let max_quantity = number(&settings, "max_quantity").unwrap_or(100);
        let max_lines = number(&settings, "max_lines").unwrap_or(50);
        let mut violations = Vec::new();

        if order.items.len() as i64 > max_lines {
            violations.push(Violation {
                code: "TOO_MANY_LINES".into(),
                message: format!("an order may have at most {max_lines} lines"),
                field: "/items".into(),
            });
        }
        for (i, item) in order.items.iter().enumerate() {
            if i64::from(item.quantity) > max_quantity {
                violations.push(Violation {
                    code: "MAX_QUANTITY_EXCEEDED".into(),
                    message: format!(
                        "quantity {} of {} exceeds the limit of {max_quantity} per line",
                        item.quantity, item.sku
                    ),
                    field: format!("/items/{i}/quantity"),
                });
            }
        }
        if let Some(max_total) = number(&settings, "max_order_total") {
            if order.total_amount > max_total {
                violations.push(Violation {
                    code: "ORDER_TOTAL_EXCEEDED".into(),
                    message: format!(
                        "order total {} {} exceeds the limit of {max_total}",
                        order.total_amount, order.currency
                    ),
                    field: "/items".into(),
                });
            }
        }
        if let Some(allowed) = setting(&settings, "allowed_countries") {
            let country = order.shipping_address.country.as_str();
            if !allowed.split(',').any(|c| c.trim().eq_ignore_ascii_case(country)) {
                violations.push(Violation {
                    code: "COUNTRY_NOT_SERVED".into(),
                    message: format!("we do not ship to {country}"),
                    field: "/shippingAddress/country".into(),
                });
            }
        }

        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }
}

export!(Limits);
