//! A hostile saga step for the platform's containment tests: what it does
//! depends on the order's customer id. Never use it for a tenant.

wit_bindgen::generate!({ world: "saga-step", path: "../../wit" });

use exports::oms::plugin::custom_step::{Guest, StepContext, StepError};
use oms::plugin::step_state;
use oms::plugin::types::{Order, Settings};
use std::hint::black_box;

struct Hostile;

impl Guest for Hostile {
    fn run(order: Order, _context: StepContext, _settings: Settings) -> Result<String, StepError> {
        match order.customer_id.as_str() {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            // Errors ignored: whatever the host refuses stays refused.
            "huge-value" => {
                let _ = step_state::put("big", &"x".repeat(1 << 20));
                let _ = step_state::put(&"k".repeat(10_000), "v");
                Ok("done".into())
            }
            "many-keys" => {
                for i in 0..1_000_000 {
                    let _ = step_state::put(&format!("k-{i}"), "v");
                }
                Ok("done".into())
            }
            "past-quota" => {
                for i in 0..1_000 {
                    let _ = step_state::put(&format!("k-{i}"), "v");
                }
                Ok("done".into())
            }
            "many-reads" => {
                for i in 0..1_000_000 {
                    let _ = step_state::get(&format!("k-{i}"));
                }
                Ok("done".into())
            }
            "output" => Ok("o".repeat(8 << 20)),
            _ => Ok(String::new()),
        }
    }

    fn compensate(
        _order: Order,
        _context: StepContext,
        _output: String,
        _settings: Settings,
    ) -> Result<(), StepError> {
        Ok(())
    }
}

export!(Hostile);
