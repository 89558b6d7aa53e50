//! Counters for operators, exposed at `/metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),+ $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)+
        }

        impl Metrics {
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP oms_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE oms_{} counter", stringify!($name));
                    let _ = writeln!(out, "oms_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )+
                out
            }
        }
    };
}

counters! {
    orders_accepted_total: "Orders accepted through the API.",
    sagas_completed_total: "Sagas that confirmed their order.",
    sagas_rejected_total: "Sagas that ended with the order rejected.",
    sagas_cancelled_total: "Sagas that ended cancelled after compensation.",
    sagas_stuck_total: "Sagas whose compensation exhausted its retries.",
    sagas_resolved_total: "Stuck sagas an operator resolved out of band.",
    saga_steps_total: "Saga steps and compensations carried out.",
    step_retries_total: "Forward steps scheduled for another attempt.",
    illegal_transitions_total: "Events the saga state machine refused.",
    policy_overrides_total: "Compensation plans replaced because they left money or stock held.",
    plugin_failures_total: "Plugin calls that trapped, timed out or ran out of fuel.",
    commit_conflicts_total: "Transitions retried after a concurrent change.",
    duplicate_deliveries_total: "Commands delivered again after they were applied.",
    outbox_published_total: "Outbox messages handed to the transport.",
    outbox_publish_failures_total: "Outbox batches the transport did not take (retried with backoff).",
    plugin_calls_recorded_total: "Plugin calls recorded for replay.",
    plugin_calls_unrecorded_total: "Plugin calls not recorded because the recorder was behind.",
    plugin_calls_unsampled_total: "Plugin calls not recorded because their tenant's slot had its recordings for that second (50).",
    canary_rollbacks_total: "Canary versions rolled back automatically.",
    plugins_compiled_total: "Plugin versions this host compiled from their bytes.",
    plugins_loaded_precompiled_total: "Plugin versions this host loaded from native code another host (or an earlier run) stored.",
    commands_consumed_total: "Saga command messages this host took from Kafka and finished with.",
    dead_letters_total: "Saga command messages sent to the dead-letter topic.",
    commands_rescued_total: "Saga commands run from the database because their message was overdue.",
    payments_reconciled_total: "Orders whose payment matched what the provider holds.",
    payment_mismatches_total: "Orders whose payment differs from what the provider holds.",
    payments_unreconcilable_total: "Orders whose payment adapter cannot read payments back (no payment-status export).",
    reconciliation_errors_total: "Payment lookups for reconciliation that failed and were deferred.",
    consumer_rebalances_total: "Partition assignments and revocations this host's consumer went through.",
    tenant_reload_failures_total: "Tenant changes this host could not build (the tenant kept running as it was).",
    audit_write_failures_total: "Operator actions done whose audit entry could not be written (logged).",
    key_use_write_failures_total: "Batches of API key last-use times that could not be written (kept for the next).",
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
