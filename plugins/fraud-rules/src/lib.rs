//! Rule-based fraud assessment.
//!
//! Settings (all optional):
//! - `blocked_customer_prefix`: customer ids starting with it are declined (default `fraud-`).
//! - `review_amount`: orders above this total (minor units) go to review (default: none).
//! - `max_orders_per_day`: more recent orders than this go to review (default 50).

wit_bindgen::generate!({ world: "fraud-check", path: "../../wit" });

use exports::oms::plugin::risk::{Assessment, CustomerContext, Decision, Guest};
use oms::plugin::types::{Order, Settings};

struct Rules;

fn setting<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Guest for Rules {
    fn assess(order: Order, context: CustomerContext, settings: Settings) -> Assessment {
        let prefix = setting(&settings, "blocked_customer_prefix").unwrap_or("fraud-");
        if !prefix.is_empty() && order.customer_id.starts_with(prefix) {
            return Assessment {
                decision: Decision::Decline,
                score: 1000,
                reasons: vec![format!("customer id matches blocked prefix '{prefix}'")],
            };
        }

        let mut score = 0u32;
        let mut reasons = Vec::new();
        let max_orders: u32 = setting(&settings, "max_orders_per_day")
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        if context.recent_order_count > max_orders {
            score += 400;
            reasons.push(format!(
                "{} orders in the last 24h (limit {max_orders})",
                context.recent_order_count
            ));
        }
        if let Some(limit) = setting(&settings, "review_amount").and_then(|v| v.parse::<i64>().ok()) {
            if order.total_amount > limit {
                score += 400;
                reasons.push(format!("order total {} above review amount {limit}", order.total_amount));
            }
        }

        let decision = if score >= 400 { Decision::Review } else { Decision::Approve };
        Assessment { decision, score, reasons }
    }
}

export!(Rules);
