//! One circuit breaker per tenant and payment provider (the origins its
//! payment plugin may call), in this host's memory. The policy is
//! `oms_saga::breaker`; this keeps the breakers, reports their state
//! (`oms_circuit_breaker_state`, `oms_circuit_breaker_opened_total`) and
//! logs each change. Each host learns on its own that a provider is down:
//! a few failed calls per host, not a shared state to keep consistent.

use oms_saga::breaker::{Admission, Breaker, BreakerPolicy, BreakerState, CallResult};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Breakers {
    policy: BreakerPolicy,
    by_provider: Mutex<HashMap<(String, String), Breaker>>,
}

impl Breakers {
    /// Whether a call to `provider` for `tenant` may go now.
    pub(crate) fn admit(&self, tenant: &str, provider: &str, now: i64) -> Admission {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), provider.to_string());
        let Some(b) = map.get_mut(&key) else {
            // Closed until a failure says otherwise.
            return Admission::Call;
        };
        let admission = b.admit(&self.policy, now);
        if admission == Admission::Probe {
            changed(tenant, provider, &b.state);
        }
        admission
    }

    /// What a call admitted by [`Breakers::admit`] came to.
    pub(crate) fn record(
        &self,
        tenant: &str,
        provider: &str,
        result: CallResult,
        order: &str,
        probe: bool,
        now: i64,
    ) {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), provider.to_string());
        if result == CallResult::Answered && !map.contains_key(&key) {
            return;
        }
        let b = map.entry(key).or_default();
        if let Some(state) = b.record(&self.policy, result, order, probe, now) {
            changed(tenant, provider, &state);
        }
    }
}

fn changed(tenant: &str, provider: &str, state: &BreakerState) {
    let labels = [
        ("tenant", tenant.to_string()),
        ("provider", provider.to_string()),
    ];
    let value = match state {
        BreakerState::Closed { .. } => 0.0,
        BreakerState::Open { .. } => 1.0,
        BreakerState::HalfOpen { .. } => 2.0,
    };
    metrics::gauge!("oms_circuit_breaker_state", &labels).set(value);
    match state {
        BreakerState::Open { open_ms, .. } => {
            metrics::counter!("oms_circuit_breaker_opened_total", &labels).increment(1);
            tracing::warn!(
                tenant,
                provider,
                open_ms,
                "payment provider circuit open: its steps are postponed"
            );
        }
        BreakerState::HalfOpen { .. } => {
            tracing::info!(
                tenant,
                provider,
                "payment provider circuit half-open: one call probes"
            )
        }
        BreakerState::Closed { .. } => {
            tracing::info!(tenant, provider, "payment provider circuit closed again")
        }
    }
}
