//! The default compensation policy: retry transient failures with exponential
//! backoff (the host adds full jitter), then undo completed steps in reverse.
//!
//! Settings (all optional):
//! - `max_attempts`: attempts at a step before giving up (default 5).
//! - `base_delay_ms`: first retry delay (default 100); doubles each attempt.
//! - `max_delay_ms`: cap on the delay (default 5000).

wit_bindgen::generate!({ world: "compensation-policy", path: "../../wit" });

use exports::oms::plugin::policy::{Compensation, Decision, Failure, Guest, Plan, SagaView, Step};
use oms::plugin::types::Settings;

struct Default;

fn number(settings: &Settings, key: &str, default: u32) -> u32 {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

fn undo(completed: &[Step]) -> Vec<Compensation> {
    let captured = completed.contains(&Step::CapturePayment);
    completed
        .iter()
        .rev()
        .filter_map(|step| match step {
            Step::CapturePayment => Some(Compensation::RefundPayment),
            // A captured payment is refunded, not voided.
            Step::AuthorizePayment if !captured => Some(Compensation::VoidPayment),
            Step::ReserveInventory => Some(Compensation::ReleaseInventory),
            _ => None,
        })
        .collect()
}

impl Guest for Default {
    fn decide(failure: Failure, saga: SagaView, settings: Settings) -> Plan {
        let max_attempts = number(&settings, "max_attempts", 5);
        if failure.transient && failure.attempt < max_attempts {
            let base = number(&settings, "base_delay_ms", 100);
            let cap = number(&settings, "max_delay_ms", 5000);
            let shift = failure.attempt.saturating_sub(1).min(20);
            let delay = base.saturating_mul(1 << shift).min(cap);
            return Plan {
                decision: Decision::Retry(delay),
                actions: Vec::new(),
                notify: Vec::new(),
                reason: format!("transient failure {}, attempt {}", failure.code, failure.attempt),
            };
        }
        let actions = undo(&saga.completed);
        let mut notify = vec!["customer".to_string()];
        if saga.completed.contains(&Step::CapturePayment) {
            notify.push("ops".to_string());
        }
        Plan {
            decision: Decision::Compensate,
            actions,
            notify,
            reason: format!("{} failed: {}", step_name(failure.step), failure.code),
        }
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Validate => "validate",
        Step::FraudCheck => "fraud-check",
        Step::ReserveInventory => "reserve-inventory",
        Step::AuthorizePayment => "authorize-payment",
        Step::CapturePayment => "capture-payment",
        Step::RequestFulfilment => "request-fulfilment",
    }
}

export!(Default);
