//! Reads the clock in a deterministic slot: must be refused at upload.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Clock;

impl Guest for Clock {
    fn validate(_order: Order, _settings: Settings) -> Result<(), Vec<Violation>> {
        let now = std::time::SystemTime::now();
        if now.elapsed().is_ok() { Ok(()) } else { Err(vec![]) }
    }
}

export!(Clock);
