//! A custom step's calls against the real loyalty-points component: its
//! state read through the caller, its writes handed back, not applied.
#![allow(clippy::unwrap_used)]

use super::bindings::step::exports::oms::plugin::custom_step::StepContext;
use super::bindings::{Address, LineItem, Order};
use super::step_state::{CallStepState, StateLimits, StateOp, StateReader};
use super::{CallLimits, PluginHost, Slot, StepCall, builtin};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Committed {
    values: Mutex<BTreeMap<String, String>>,
    reads: Mutex<Vec<String>>,
}

impl StateReader for Committed {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        self.reads.lock().unwrap().push(key.to_string());
        Ok(self.values.lock().unwrap().get(key).cloned())
    }
}

fn order(total: i64) -> Order {
    Order {
        id: "ord_1".into(),
        tenant: "acme".into(),
        customer_id: "c1".into(),
        currency: "USD".into(),
        items: vec![LineItem {
            sku: "WIDGET-1".into(),
            quantity: 1,
            unit_price: total,
        }],
        total_amount: total,
        shipping_address: Address {
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        },
    }
}

fn context() -> StepContext {
    StepContext {
        step: "loyalty-points".into(),
        attempt: 1,
        idempotency_key: "ord_1:loyalty-points".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_its_state_and_hands_its_writes_back() {
    let host = PluginHost::new().unwrap();
    let plugin = host
        .load(
            Slot::SagaStep,
            builtin::find("loyalty-points").unwrap().bytes,
        )
        .unwrap();
    let committed = Arc::new(Committed::default());
    committed
        .values
        .lock()
        .unwrap()
        .insert("customer:c1".into(), "100".into());
    let call = |which| {
        let state = CallStepState::new(committed.clone(), StateLimits::DEFAULT);
        host.step(
            "acme",
            &plugin,
            Slot::SagaStep.default_limits(),
            None,
            state,
            which,
            order(1999),
            context(),
            vec![],
        )
    };
    let ran = call(StepCall::Run).await.unwrap().value;
    let output = ran.result.unwrap();
    assert_eq!(output, r#"{"awarded":19,"balance":119}"#);
    assert_eq!(
        ran.writes,
        BTreeMap::from([("customer:c1".to_string(), StateOp::Add(19))])
    );
    // Nothing was applied: the caller commits the writes.
    assert_eq!(committed.values.lock().unwrap()["customer:c1"], "100");
    let undone = call(StepCall::Compensate(output)).await.unwrap().value;
    assert_eq!(undone.result.unwrap(), "");
    assert_eq!(
        undone.writes,
        BTreeMap::from([("customer:c1".to_string(), StateOp::Add(-19))])
    );
    assert_eq!(
        *committed.reads.lock().unwrap(),
        ["customer:c1", "customer:c1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_component_is_checked_against_its_world() {
    let host = PluginHost::new().unwrap();
    // A step is not a guardrail, nor a guardrail a step.
    let step = builtin::find("loyalty-points").unwrap().bytes;
    assert_eq!(
        host.load(Slot::Guardrail, step).err().map(|e| e.code()),
        Some("FORBIDDEN_IMPORT")
    );
    let guardrail = builtin::find("guardrail-limits").unwrap().bytes;
    assert_eq!(
        host.load(Slot::SagaStep, guardrail).err().map(|e| e.code()),
        Some("WORLD_MISMATCH")
    );
}

/// plugins/hostile-step, from where the build script left it.
fn hostile() -> Vec<u8> {
    std::fs::read(format!("{}/hostile_step.wasm", builtin::ARTIFACTS_DIR)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_step_is_stopped_by_limits_and_writes_at_most_its_quota() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(Slot::SagaStep, &hostile()).unwrap();
    let committed = Arc::new(Committed::default());
    // Fuel enough that the memory cap, not the fuel, stops the bomb.
    let limits = CallLimits {
        fuel: 200_000_000,
        ..Slot::SagaStep.default_limits()
    };
    let quota = StateLimits::DEFAULT;
    let run = |customer: &'static str| {
        let mut o = order(1999);
        o.customer_id = customer.into();
        host.step(
            "evil",
            &plugin,
            limits,
            None,
            CallStepState::new(committed.clone(), quota),
            StepCall::Run,
            o,
            context(),
            vec![],
        )
    };
    // Budgets: fuel or the deadline, the memory cap, the output limit.
    let looped = run("loop").await.unwrap_err();
    assert!(
        matches!(
            looped,
            super::PluginError::OutOfFuel | super::PluginError::Timeout
        ),
        "{looped:?}"
    );
    assert!(matches!(
        run("alloc").await.unwrap_err(),
        super::PluginError::Trap(_)
    ));
    assert!(matches!(
        run("output").await.unwrap_err(),
        super::PluginError::OutputTooLarge(_)
    ));
    // State: a value or key over the limit is never written; writes past
    // the quota are refused; a million writes run out of budget (and a
    // call that fails hands back nothing to commit); reads stop at their
    // quota whatever the call's fate.
    let huge = run("huge-value").await.unwrap().value;
    assert!(huge.writes.is_empty(), "{:?}", huge.writes.keys());
    let past = run("past-quota").await.unwrap().value;
    assert_eq!(past.writes.len(), quota.max_writes);
    assert!(past.writes.contains_key("k-99") && !past.writes.contains_key("k-100"));
    let million = run("many-keys").await.unwrap_err();
    assert!(
        matches!(
            million,
            super::PluginError::OutOfFuel | super::PluginError::Timeout
        ),
        "{million:?}"
    );
    committed.reads.lock().unwrap().clear();
    let _ = run("many-reads").await;
    assert_eq!(committed.reads.lock().unwrap().len(), quota.max_reads);
    // None of it reached the committed state: only a saga commit could.
    assert!(committed.values.lock().unwrap().is_empty());
}
