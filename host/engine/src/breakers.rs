//! One circuit breaker per tenant, payment provider (the origins its
//! payment plugin may call) and operation (authorize, capture), in this
//! host's memory. Per operation: an answer to one says nothing of the other
//! (a provider whose captures fail while its authorizations answer kept one
//! breaker for both closed, each authorization resetting the captures'
//! run of failing orders, until the captures had used up their attempts). The policy is
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
    by_provider: Mutex<HashMap<(String, String, &'static str), Breaker>>,
}

/// Which breaker a payment call goes through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) operation: &'static str,
}

impl Route<'_> {
    fn key(&self) -> (String, String, &'static str) {
        (
            self.tenant.to_string(),
            self.provider.to_string(),
            self.operation,
        )
    }
}

impl Breakers {
    /// Whether a call on `route` may go now.
    pub(crate) fn admit(&self, route: Route<'_>, now: i64) -> Admission {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = map.get_mut(&route.key()) else {
            // Closed until a failure says otherwise.
            return Admission::Call;
        };
        let admission = b.admit(&self.policy, now);
        if admission == Admission::Probe {
            changed(route, &b.state);
        }
        admission
    }

    /// What a call admitted by [`Breakers::admit`] came to.
    pub(crate) fn record(
        &self,
        route: Route<'_>,
        result: CallResult,
        order: &str,
        probe: bool,
        now: i64,
    ) {
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        let key = route.key();
        if result == CallResult::Answered && !map.contains_key(&key) {
            return;
        }
        let b = map.entry(key).or_default();
        if let Some(state) = b.record(&self.policy, result, order, probe, now) {
            changed(route, &state);
        }
    }
}

fn changed(route: Route<'_>, state: &BreakerState) {
    let Route {
        tenant,
        provider,
        operation,
    } = route;
    let labels = [
        ("tenant", tenant.to_string()),
        ("provider", provider.to_string()),
        ("operation", operation.to_string()),
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
                operation,
                open_ms,
                "payment provider circuit open: its steps are postponed"
            );
        }
        BreakerState::HalfOpen { .. } => {
            tracing::info!(
                tenant,
                provider,
                operation,
                "payment provider circuit half-open: one call probes"
            )
        }
        BreakerState::Closed { .. } => {
            tracing::info!(
                tenant,
                provider,
                operation,
                "payment provider circuit closed again"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(operation: &'static str) -> Route<'static> {
        Route {
            tenant: "acme",
            provider: "http://psp",
            operation,
        }
    }

    #[test]
    fn answered_authorizations_do_not_keep_failing_captures_from_opening_the_breaker() {
        let b = Breakers::default();
        let orders = BreakerPolicy::default().failing_orders_to_open;
        for n in 0..orders {
            let order = format!("o{n}");
            assert_eq!(b.admit(route("capture"), 0), Admission::Call);
            b.record(route("capture"), CallResult::Transient, &order, false, 0);
            // Another order's authorization answers in between.
            b.record(route("authorize"), CallResult::Answered, "new", false, 0);
        }
        assert!(matches!(
            b.admit(route("capture"), 1),
            Admission::WaitUntil(_)
        ));
        assert_eq!(b.admit(route("authorize"), 1), Admission::Call);
    }
}
