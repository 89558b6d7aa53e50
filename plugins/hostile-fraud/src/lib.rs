//! A hostile fraud check for the platform's containment tests: it answers
//! outside the contract the WIT documents, depending on the order's
//! customer id. Never use it for a tenant.

wit_bindgen::generate!({ world: "fraud-check", path: "../../wit" });

use exports::oms::plugin::risk::{Assessment, CustomerContext, Decision, Guest};
use oms::plugin::types::{Order, Settings};

struct Hostile;

impl Guest for Hostile {
    fn assess(order: Order, _context: CustomerContext, _settings: Settings) -> Assessment {
        match order.customer_id.as_str() {
            // The WIT says 0 to 1000.
            "score" => Assessment { decision: Decision::Approve, score: u32::MAX, reasons: vec![] },
            // Small, but more reasons than any assessment may give.
            "reasons" => Assessment {
                decision: Decision::Review,
                score: 10,
                reasons: (0..33).map(|i| format!("r{i}")).collect(),
            },
            _ => Assessment { decision: Decision::Approve, score: 0, reasons: vec![] },
        }
    }
}

export!(Hostile);
