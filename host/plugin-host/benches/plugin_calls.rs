//! Plugin call cost per extension point (a fresh instance per call, as in
//! production), the same guardrail compiled natively for the ratio, and the
//! time from activating a version a host has not compiled yet to its first
//! answered call. Run: `cargo bench --bench plugin_calls`
//! (set OMS_JS_GUARDRAIL=path/to/js-guardrail.wasm for the JavaScript one;
//! set OMS_PYTHON_GUARDRAIL=path/to/python-guardrail.wasm to include the
//! Python guest; OMS_JS_LOYALTY=path/to/js-loyalty-points.wasm for the
//! JavaScript loyalty step beside the Rust one).
#![allow(clippy::print_stdout)]

#[path = "../../../plugins/guardrail-limits/src/rules.rs"]
mod rules;

use hdrhistogram::Histogram;
use oms_plugin_host::bindings::step::exports::oms::plugin::custom_step::StepContext;
use oms_plugin_host::bindings::{Address, LineItem, Order, fraud, policy};
use oms_plugin_host::step_state::{CallStepState, StateLimits, StateReader};
use oms_plugin_host::{PluginHost, Slot, StepCall, builtin};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// A step's committed state as the bench gives it: every customer has 100
/// points (a database read in production; here only the call's own cost).
struct Balance;

impl StateReader for Balance {
    fn get(&self, _key: &str) -> Result<Option<String>, String> {
        Ok(Some("100".into()))
    }
}

const CALLS: usize = 20_000;

fn order() -> Order {
    Order {
        id: "ord_bench".into(),
        tenant: "acme".into(),
        customer_id: "c-1".into(),
        currency: "USD".into(),
        items: vec![LineItem {
            sku: "WIDGET-1".into(),
            quantity: 2,
            unit_price: 1999,
        }],
        total_amount: 3998,
        shipping_address: Address {
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        },
    }
}

fn settings() -> Vec<(String, String)> {
    vec![
        ("max_quantity".into(), "100".into()),
        ("max_lines".into(), "50".into()),
    ]
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<34} p50 {:>9.2} µs   p99 {:>9.2} µs   ({} calls)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let host = PluginHost::new().expect("plugin host");
    let load = |slot, name| {
        host.load(slot, builtin::find(name).expect("builtin").bytes)
            .expect("builtin loads")
    };
    let guardrail = load(Slot::Guardrail, "guardrail-limits");
    let fraud_plugin = load(Slot::FraudCheck, "fraud-rules");
    let policy_plugin = load(Slot::CompensationPolicy, "compensation-default");

    let mut wasm_guardrail = histogram();
    // Of each call, as the host measures it: set-up (store, WASI context,
    // instance from the pre-instantiated component) and the guest's own work.
    let (mut setup, mut guest) = (histogram(), histogram());
    for _ in 0..CALLS {
        let started = Instant::now();
        let limits = Slot::Guardrail.default_limits();
        let c = host
            .validate("bench", &guardrail, limits, order(), settings())
            .await
            .expect("guardrail call");
        let elapsed = started.elapsed();
        if let Some(s) = c.stats.setup {
            let _ = setup.record(s.as_nanos() as u64);
            let _ = guest.record(c.stats.duration.saturating_sub(s).as_nanos() as u64);
        }
        black_box(c);
        let _ = wasm_guardrail.record(elapsed.as_nanos() as u64);
    }
    report("guardrail (Wasm)", &wasm_guardrail);
    report("  of which set-up", &setup);
    report("  of which the guest's work", &guest);

    let mut wasm_fraud = histogram();
    for _ in 0..CALLS {
        let started = Instant::now();
        let context = fraud::exports::oms::plugin::risk::CustomerContext {
            recent_order_count: 3,
            recent_spend: 10_000,
        };
        let c = host
            .assess(
                "bench",
                &fraud_plugin,
                Slot::FraudCheck.default_limits(),
                order(),
                context,
                vec![("blocked_customer_prefix".into(), "fraud-".into())],
            )
            .await
            .expect("fraud call");
        black_box(c);
        let _ = wasm_fraud.record(started.elapsed().as_nanos() as u64);
    }
    report("fraud-check (Wasm)", &wasm_fraud);

    let mut wasm_policy = histogram();
    for _ in 0..CALLS {
        use policy::exports::oms::plugin::policy as wit;
        let started = Instant::now();
        let failure = wit::Failure {
            step: wit::Step::AuthorizePayment,
            code: "CARD_DECLINED".into(),
            message: "declined".into(),
            transient: false,
            attempt: 1,
        };
        let view = wit::SagaView {
            order_id: "ord_bench".into(),
            customer_id: "c-1".into(),
            total_amount: 3998,
            currency: "USD".into(),
            completed: vec![wit::Step::Validate, wit::Step::ReserveInventory],
        };
        let c = host
            .decide(
                "bench",
                &policy_plugin,
                Slot::CompensationPolicy.default_limits(),
                failure,
                view,
                vec![],
            )
            .await
            .expect("policy call");
        black_box(c);
        let _ = wasm_policy.record(started.elapsed().as_nanos() as u64);
    }
    report("compensation-policy (Wasm)", &wasm_policy);

    // The same rules, compiled natively, from the same input types.
    let mut native = histogram();
    for _ in 0..CALLS * 10 {
        let started = Instant::now();
        let order = black_box(order());
        let settings = black_box(settings());
        let view = rules::OrderView {
            lines: order
                .items
                .iter()
                .map(|i| (i.sku.as_str(), i.quantity))
                .collect(),
            total_amount: order.total_amount,
            currency: &order.currency,
            country: &order.shipping_address.country,
        };
        let findings = rules::check(&view, |key| {
            settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        });
        // Read the answer as the host reads the component's.
        black_box(
            findings
                .iter()
                .map(|f| f.code.len() + f.message.len() + f.field.len())
                .sum::<usize>(),
        );
        let _ = native.record((started.elapsed().as_nanos() as u64).max(1));
    }
    report("guardrail (native Rust)", &native);
    println!(
        "{:<34} p50 {:>8.0}x    p99 {:>8.0}x",
        "Wasm / native",
        wasm_guardrail.value_at_quantile(0.5) as f64 / native.value_at_quantile(0.5) as f64,
        wasm_guardrail.value_at_quantile(0.99) as f64 / native.value_at_quantile(0.99) as f64,
    );

    // A tenant's own step: the loyalty step's run, its state read through
    // the host and its increment kept for the transition. A step may call
    // out, so it always runs on a call thread.
    let mut steps: Vec<(String, Vec<u8>, usize)> = vec![(
        "loyalty-points step (Rust)".into(),
        builtin::find("loyalty-points")
            .expect("builtin")
            .bytes
            .to_vec(),
        CALLS,
    )];
    if let Ok(path) = std::env::var("OMS_JS_LOYALTY") {
        steps.push((
            "loyalty-points step (JavaScript)".into(),
            std::fs::read(&path).expect("reading OMS_JS_LOYALTY"),
            200,
        ));
    }
    for (name, bytes, calls) in steps {
        let plugin = host.load(Slot::SagaStep, &bytes).expect("step loads");
        let mut h = histogram();
        let mut fuel = 0;
        for _ in 0..calls {
            let started = Instant::now();
            let c = host
                .step(
                    "bench",
                    &plugin,
                    Slot::SagaStep.default_limits(),
                    None,
                    CallStepState::new(Arc::new(Balance), StateLimits::DEFAULT),
                    StepCall::Run,
                    order(),
                    StepContext {
                        step: "loyalty-points".into(),
                        attempt: 1,
                        idempotency_key: "ord_bench:loyalty-points".into(),
                    },
                    vec![("points_per_unit".into(), "1".into())],
                )
                .await
                .expect("step call");
            assert!(c.value.result.is_ok(), "{:?}", c.value.result);
            fuel = c.stats.fuel_used;
            black_box(c);
            let _ = h.record(started.elapsed().as_nanos() as u64);
        }
        report(&name, &h);
        println!("{:<34} {fuel} fuel per call", "");
    }

    // Activation to first use on a host that has not compiled the version:
    // check + compile + pre-instantiate, then the first call.
    let mut candidates: Vec<(String, Vec<u8>)> = vec![(
        "guardrail-strict (Rust)".into(),
        builtin::find("guardrail-strict")
            .expect("builtin")
            .bytes
            .to_vec(),
    )];
    if let Ok(path) = std::env::var("OMS_PYTHON_GUARDRAIL") {
        candidates.push((
            "python-guardrail".into(),
            std::fs::read(&path).expect("reading OMS_PYTHON_GUARDRAIL"),
        ));
    }
    if let Ok(path) = std::env::var("OMS_JS_GUARDRAIL") {
        candidates.push((
            "js-guardrail".into(),
            std::fs::read(&path).expect("reading OMS_JS_GUARDRAIL"),
        ));
    }
    for (name, bytes) in candidates {
        let started = Instant::now();
        let plugin = host.load(Slot::Guardrail, &bytes).expect("candidate loads");
        let compiled = started.elapsed();
        let mut limits = Slot::Guardrail.default_limits();
        limits.memory_bytes = Slot::Guardrail.max_limits().memory_bytes;
        limits.timeout = Slot::Guardrail.max_limits().timeout;
        let first = host
            .validate("bench", &plugin, limits, order(), settings())
            .await
            .expect("first call");
        black_box(first);
        let total = started.elapsed();
        let mut warm = histogram();
        for _ in 0..200 {
            let t = Instant::now();
            let c = host
                .validate("bench", &plugin, limits, order(), settings())
                .await
                .expect("call");
            black_box(c);
            let _ = warm.record(t.elapsed().as_nanos() as u64);
        }
        // What another host does: load the native code the first one stored.
        let artifact = host.precompiled(&plugin).expect("serialize");
        let other = PluginHost::new().expect("plugin host");
        let t = Instant::now();
        let loaded = other
            .load_precompiled(Slot::Guardrail, &plugin.digest, bytes.len(), &artifact)
            .expect("precompiled loads");
        let first = other
            .validate("bench", &loaded, limits, order(), settings())
            .await
            .expect("first call");
        black_box(first);
        println!(
            "activation to first use from stored native code, {name:<24} {:>8.1} ms ({} KiB of native code)",
            t.elapsed().as_secs_f64() * 1000.0,
            artifact.len() / 1024
        );
        println!(
            "activation to first use, {name:<24} {:>8.1} ms (compile {:.1} ms; {} KiB); then p50 {:.1} µs p99 {:.1} µs",
            total.as_secs_f64() * 1000.0,
            compiled.as_secs_f64() * 1000.0,
            bytes.len() / 1024,
            warm.value_at_quantile(0.5) as f64 / 1000.0,
            warm.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
}
