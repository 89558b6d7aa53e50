//! A hostile guardrail for the platform's containment tests: what it does
//! depends on the order's customer id. Never use it for a tenant.

wit_bindgen::generate!({ world: "guardrail", path: "../../wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};
use std::hint::black_box;

struct Hostile;

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    // Not a tail call, so every level keeps a frame.
    black_box(recurse(black_box(n + 1))) + 1
}

impl Guest for Hostile {
    fn validate(order: Order, _settings: Settings) -> Result<(), Vec<Violation>> {
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
            "recurse" => {
                black_box(recurse(0));
                Ok(())
            }
            "panic" => panic!("hostile guardrail panics on purpose"),
            "output" => Err((0..2_000)
                .map(|i| Violation { code: "X".repeat(100), message: format!("{i}{}", "y".repeat(200)), field: "/".into() })
                .collect()),
            // No string bytes at all, yet half a megabyte as the canonical ABI
            // lays them out (far over the limit), made quickly enough to be
            // refused for its size, not its deadline, on a loaded machine.
            "empty" => Err((0..20_000)
                .map(|_| Violation { code: String::new(), message: String::new(), field: String::new() })
                .collect()),
            // Small, but more violations than any answer may list.
            "many" => Err((0..101)
                .map(|_| Violation { code: "X".into(), message: "x".into(), field: "/".into() })
                .collect()),
            "log" => {
                // About 700 KB, far over any log budget.
                for _ in 0..20_000 {
                    eprintln!("hostile guardrail floods its log");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

export!(Hostile);
