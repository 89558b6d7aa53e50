//! The circuit breaker in front of a tenant's payment provider, as policy:
//! pure, with the clock passed in. After a run of transient failures of
//! several different orders (no call answered in between) it opens, and steps that would call the provider are postponed instead of
//! each hammering it on its own retry schedule (their sagas keep their retry
//! budget); once the cool-down is over one call goes through as a probe, and
//! its outcome closes the breaker or opens it again for longer.

use serde::Serialize;

/// How the breaker behaves; the platform's defaults suit a card processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Different orders whose calls failed in a row (no call answered in
    /// between) that open it. Orders, not calls: one payment that keeps
    /// failing (a card the provider chokes on) says nothing about the
    /// provider, and must not hold every other saga back.
    pub failing_orders_to_open: u32,
    /// The first cool-down; each failed probe doubles it, up to `max_open_ms`.
    pub open_ms: i64,
    pub max_open_ms: i64,
    /// How long a probe may be in flight before another call may probe
    /// (a probe whose saga crashed must not keep the breaker half-open).
    pub probe_timeout_ms: i64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failing_orders_to_open: 5,
            open_ms: 1_000,
            // Short: a probe is one request, and a provider that is back
            // should not wait long for it.
            max_open_ms: 10_000,
            probe_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum BreakerState {
    /// Calls go through; `failing` orders failed in a row so far.
    Closed { failing: u32 },
    /// Calls wait until `until`; `open_ms` is the cool-down that set it.
    Open { until: i64, open_ms: i64 },
    /// One probe is in flight since `since`; the others wait for its outcome.
    HalfOpen { since: i64, open_ms: i64 },
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// Whether a call may go to the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call.
    Call,
    /// This call is the probe: its outcome decides.
    Probe,
    /// Do not call; try again at this time (ms).
    WaitUntil(i64),
}

/// What a call to the provider came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// The provider answered (approved or declined: either way it is up).
    Answered,
    /// Unavailable, timed out, 5xx: the kind of failure a retry may cure.
    Transient,
}

/// One provider's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub state: BreakerState,
    /// The orders of the current run of failures.
    run: Vec<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(BreakerState::Closed { failing: 0 })
    }
}

impl Breaker {
    pub fn new(state: BreakerState) -> Self {
        Self {
            state,
            run: Vec::new(),
        }
    }

    /// Asks to call at `now`; a `Probe` answer moves the breaker to half-open.
    pub fn admit(&mut self, policy: &BreakerPolicy, now: i64) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Call,
            BreakerState::Open { until, .. } if now < until => Admission::WaitUntil(until),
            BreakerState::Open { open_ms, .. } => {
                self.state = BreakerState::HalfOpen {
                    since: now,
                    open_ms,
                };
                Admission::Probe
            }
            BreakerState::HalfOpen { since, open_ms } => {
                if now >= since.saturating_add(policy.probe_timeout_ms) {
                    // The probe never reported: this call probes instead.
                    self.state = BreakerState::HalfOpen {
                        since: now,
                        open_ms,
                    };
                    Admission::Probe
                } else {
                    // Look again shortly: the probe's outcome is due.
                    Admission::WaitUntil(now + (open_ms / 4).clamp(100, 1_000))
                }
            }
        }
    }

    /// Records the outcome at `now` of a call for `order`; `probe` says
    /// whether it was admitted as the probe. Returns the state it moved to,
    /// if it moved.
    pub fn record(
        &mut self,
        policy: &BreakerPolicy,
        result: CallResult,
        order: &str,
        probe: bool,
        now: i64,
    ) -> Option<BreakerState> {
        let before = self.state;
        if result == CallResult::Answered || !matches!(self.state, BreakerState::Closed { .. }) {
            self.run.clear();
        }
        self.state = match (self.state, result) {
            (_, CallResult::Answered) => BreakerState::Closed { failing: 0 },
            (BreakerState::Closed { .. }, CallResult::Transient) => {
                if !self.run.iter().any(|o| o == order) {
                    self.run.push(order.to_string());
                }
                let failing = self.run.len() as u32;
                if failing >= policy.failing_orders_to_open {
                    self.run.clear();
                    BreakerState::Open {
                        until: now.saturating_add(policy.open_ms),
                        open_ms: policy.open_ms,
                    }
                } else {
                    BreakerState::Closed { failing }
                }
            }
            (BreakerState::HalfOpen { open_ms, .. }, CallResult::Transient) if probe => {
                let open_ms = open_ms.saturating_mul(2).min(policy.max_open_ms);
                BreakerState::Open {
                    until: now.saturating_add(open_ms),
                    open_ms,
                }
            }
            // A call admitted before the breaker opened, failing late: the
            // breaker already knows.
            (state, CallResult::Transient) => state,
        };
        (self.state != before && self.state.as_str() != before.as_str()).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BreakerPolicy = BreakerPolicy {
        failing_orders_to_open: 3,
        open_ms: 1_000,
        max_open_ms: 4_000,
        probe_timeout_ms: 5_000,
    };

    fn open(until: i64, open_ms: i64) -> BreakerState {
        BreakerState::Open { until, open_ms }
    }

    #[test]
    fn opens_after_several_orders_fail_in_a_row_and_an_answer_resets_the_run() {
        let mut b = Breaker::default();
        b.record(&P, CallResult::Transient, "o1", false, 0);
        b.record(&P, CallResult::Transient, "o2", false, 0);
        b.record(&P, CallResult::Answered, "o3", false, 0);
        b.record(&P, CallResult::Transient, "o1", false, 0);
        b.record(&P, CallResult::Transient, "o2", false, 0);
        assert_eq!(b.admit(&P, 1), Admission::Call);
        let moved = b.record(&P, CallResult::Transient, "o4", false, 10);
        assert_eq!(moved, Some(open(1_010, 1_000)));
        assert_eq!(b.admit(&P, 500), Admission::WaitUntil(1_010));
    }

    #[test]
    fn one_order_failing_over_and_over_does_not_open_it() {
        let mut b = Breaker::default();
        for _ in 0..100 {
            assert_eq!(b.record(&P, CallResult::Transient, "o1", false, 0), None);
        }
        b.record(&P, CallResult::Transient, "o2", false, 0);
        assert_eq!(b.state, BreakerState::Closed { failing: 2 });
        assert_eq!(b.admit(&P, 1), Admission::Call);
    }

    #[test]
    fn one_probe_after_the_cool_down_decides() {
        let mut b = Breaker::new(open(1_000, 1_000));
        assert_eq!(b.admit(&P, 1_000), Admission::Probe);
        // Everyone else waits for the probe.
        assert!(matches!(b.admit(&P, 1_001), Admission::WaitUntil(t) if t > 1_001));
        // The probe fails: open again, twice as long.
        b.record(&P, CallResult::Transient, "o1", true, 1_100);
        assert_eq!(b.state, open(3_100, 2_000));
        assert_eq!(b.admit(&P, 3_100), Admission::Probe);
        b.record(&P, CallResult::Transient, "o1", true, 3_200);
        assert_eq!(b.admit(&P, 7_200), Admission::Probe);
        b.record(&P, CallResult::Transient, "o1", true, 7_200);
        // Capped.
        assert_eq!(b.state, open(11_200, 4_000));
        assert_eq!(b.admit(&P, 11_200), Admission::Probe);
        b.record(&P, CallResult::Answered, "o1", true, 11_300);
        assert_eq!(b.state, BreakerState::Closed { failing: 0 });
        assert_eq!(b.admit(&P, 11_301), Admission::Call);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let mut b = Breaker::new(BreakerState::HalfOpen {
            since: 0,
            open_ms: 1_000,
        });
        assert!(matches!(b.admit(&P, 4_999), Admission::WaitUntil(_)));
        assert_eq!(b.admit(&P, 5_000), Admission::Probe);
    }

    #[test]
    fn a_late_failure_from_before_the_probe_changes_nothing() {
        let mut b = Breaker::new(BreakerState::HalfOpen {
            since: 0,
            open_ms: 1_000,
        });
        assert_eq!(b.record(&P, CallResult::Transient, "o9", false, 10), None);
        assert!(matches!(b.state, BreakerState::HalfOpen { .. }));
    }
}
