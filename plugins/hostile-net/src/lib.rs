//! Opens a socket: must be refused at upload.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Net;

impl Guest for Net {
    fn validate(_order: Order, _settings: Settings) -> Result<(), Vec<Violation>> {
        match std::net::TcpStream::connect("10.0.0.1:80") {
            Ok(_) => Ok(()),
            Err(_) => Err(vec![]),
        }
    }
}

export!(Net);
