//! Canaries: started on a share of orders, judged over their latest calls
//! against the operator's thresholds, promoted, aborted or rolled back.

use super::PluginOpError;
use super::apply::{apply, apply_canary};
use crate::Platform;
use crate::metrics::Metrics;
use crate::tenants::{Target, Tenant};
use oms_store::{ActivationChange, ActivationRecord, CanaryRecord, CanaryWindow};

/// Calls a canary is judged over: its latest ones, so an early bad patch
/// is not diluted by a long good run (nor the reverse).
const CANARY_WINDOW: i64 = 1_000;

/// Why a canary must be rolled back, if it must.
pub fn verdict(c: &CanaryRecord, w: &CanaryWindow) -> Option<String> {
    if w.calls < c.min_calls.max(1) {
        return None;
    }
    let failure_permille = w.failures * 1000 / w.calls;
    if failure_permille > c.max_failure_permille {
        return Some(format!(
            "failure rate {failure_permille}‰ ({} of {} calls) is above {}‰",
            w.failures, w.calls, c.max_failure_permille
        ));
    }
    if w.p99_us > c.max_p99_us {
        return Some(format!(
            "p99 latency {} µs is above {} µs",
            w.p99_us, c.max_p99_us
        ));
    }
    if w.compared > 0 {
        let divergence_permille = w.divergences * 1000 / w.compared;
        if divergence_permille > c.max_divergence_permille {
            return Some(format!(
                "divergence {divergence_permille}‰ ({} of {} verdicts differ from the active version) is above {}‰",
                w.divergences, w.compared, c.max_divergence_permille
            ));
        }
    }
    None
}

pub(super) async fn judge(p: &Platform, c: &CanaryRecord) -> Result<(), PluginOpError> {
    let window = p.store.canary_window(c, CANARY_WINDOW).await?;
    let Some(reason) = verdict(c, &window) else {
        return Ok(());
    };
    let _rollout = p.rollout.lock().await;
    if p.store
        .end_canary(
            c,
            "canary_rollback",
            "canary-guard",
            Some(reason.clone()),
            oms_clock::now_ms(),
        )
        .await?
    {
        Metrics::inc(&p.metrics.canary_rollbacks_total);
        tracing::warn!(tenant = %c.tenant_id, slot = %c.slot, version = c.version, %reason, "canary rolled back");
        if let Some(tenant) = p.tenants.get(&c.tenant_id)
            && let Some(tp) = tenant.find_target(&c.slot).and_then(|t| tenant.target(t))
        {
            tp.set_canary(None);
        }
    }
    Ok(())
}

/// Starts a canary of `c.version` for the slot, replacing any running one.
pub async fn start_canary(p: &Platform, c: &CanaryRecord) -> Result<(), PluginOpError> {
    let _rollout = p.rollout.lock().await;
    let record = p.store.start_canary(c).await?;
    if let Some(tenant) = p.tenants.get(&c.tenant_id)
        && let Some(target) = tenant.find_target(&c.slot)
    {
        apply_canary(p, &tenant, target, &record, Some(c)).await?;
    }
    Ok(())
}

/// Ends the slot's canary: `promote` makes its version the active one,
/// otherwise it is aborted and the active version decides every order.
pub async fn end_canary(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    promote: bool,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let _rollout = p.rollout.lock().await;
    let c = p
        .store
        .canary(&tenant.id, &target.key())
        .await?
        .ok_or(PluginOpError::NoCanary)?;
    let record = if promote {
        // Activating the canary's version ends the canary in the same transaction.
        p.store
            .activate_plugin(
                &tenant.id,
                &target.key(),
                &ActivationChange {
                    version: c.version,
                    actor,
                    action: "canary_promote",
                    only_if_unset: false,
                },
                oms_clock::now_ms(),
            )
            .await?
    } else {
        p.store
            .end_canary(&c, "canary_abort", actor, None, oms_clock::now_ms())
            .await?;
        p.store
            .activation(&tenant.id, &target.key())
            .await?
            .ok_or(PluginOpError::UnknownVersion)?
    };
    apply_canary(p, tenant, target, &record, None).await?;
    apply(p, tenant, target, &record).await?;
    Ok(record)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::verdict;
    use oms_store::{CanaryRecord, CanaryWindow};

    fn canary() -> CanaryRecord {
        CanaryRecord {
            tenant_id: "acme".into(),
            slot: "guardrail".into(),
            version: 2,
            percent: 10,
            max_failure_permille: 10,
            max_p99_us: 50_000,
            max_divergence_permille: 100,
            min_calls: 20,
            started_by: "operator".into(),
            started_at: 0,
        }
    }

    fn window(
        calls: i64,
        failures: i64,
        p99_us: i64,
        compared: i64,
        divergences: i64,
    ) -> CanaryWindow {
        CanaryWindow {
            calls,
            failures,
            compared,
            divergences,
            p99_us,
        }
    }

    #[test]
    fn nothing_is_judged_before_min_calls() {
        assert_eq!(verdict(&canary(), &window(19, 19, 900_000, 19, 19)), None);
    }

    #[test]
    fn within_every_threshold_the_canary_stays() {
        // 10‰ failures and 100‰ divergence are allowed; only above rolls back.
        assert_eq!(verdict(&canary(), &window(100, 1, 50_000, 100, 10)), None);
    }

    #[test]
    fn each_threshold_rolls_back_on_its_own() {
        let failures = verdict(&canary(), &window(100, 2, 1_000, 100, 0)).unwrap();
        assert!(failures.starts_with("failure rate 20‰"), "{failures}");
        let slow = verdict(&canary(), &window(100, 0, 50_001, 100, 0)).unwrap();
        assert!(slow.starts_with("p99 latency"), "{slow}");
        let diverging = verdict(&canary(), &window(100, 0, 1_000, 100, 11)).unwrap();
        assert!(diverging.starts_with("divergence 110‰"), "{diverging}");
    }

    #[test]
    fn slots_without_comparison_are_not_judged_on_divergence() {
        assert_eq!(verdict(&canary(), &window(100, 0, 1_000, 0, 0)), None);
    }
}
