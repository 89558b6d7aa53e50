//! The per-step metrics' handles (`oms_saga_step_duration_seconds`,
//! `oms_saga_step_attempts_total`), registered once per tenant, step and
//! outcome. `metrics::histogram!` with labels allocates each label and
//! looks the key up in the recorder's registry on every call: with the
//! plugin calls' metrics, about 2 % of the host's CPU at saturation.

use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::Mutex;

type ByOutcome = HashMap<&'static str, (Histogram, Counter)>;

#[derive(Default)]
pub(crate) struct StepMetrics(Mutex<HashMap<String, HashMap<String, ByOutcome>>>);

impl StepMetrics {
    /// One attempt of `step` for `tenant` that came out as `outcome`,
    /// taking `seconds`.
    pub(crate) fn record(&self, tenant: &str, step: &str, outcome: &'static str, seconds: f64) {
        let mut by_tenant = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by reference: a label set seen before allocates nothing.
        let handles = match by_tenant
            .get(tenant)
            .and_then(|steps| steps.get(step))
            .and_then(|outcomes| outcomes.get(outcome))
        {
            Some(handles) => handles.clone(),
            None => {
                let labels = [
                    ("tenant", tenant.to_string()),
                    ("step", step.to_string()),
                    ("outcome", outcome.to_string()),
                ];
                let handles = (
                    metrics::histogram!("oms_saga_step_duration_seconds", &labels),
                    metrics::counter!("oms_saga_step_attempts_total", &labels),
                );
                by_tenant
                    .entry(tenant.to_string())
                    .or_default()
                    .entry(step.to_string())
                    .or_default()
                    .insert(outcome, handles.clone());
                handles
            }
        };
        drop(by_tenant);
        handles.0.record(seconds);
        handles.1.increment(1);
    }
}
