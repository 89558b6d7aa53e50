//! Reads a file: must be refused at upload.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Fs;

impl Guest for Fs {
    fn validate(_order: Order, _settings: Settings) -> Result<(), Vec<Violation>> {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(_) => Ok(()),
            Err(_) => Err(vec![]),
        }
    }
}

export!(Fs);
