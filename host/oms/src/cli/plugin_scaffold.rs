//! `oms plugin new SLOT [--lang rust|js|python]`: a guest that builds to a
//! component for the slot as it stands, with the WIT beside it, ready to
//! edit: a Rust crate (wit-bindgen), a JavaScript module (componentize-js)
//! or a Python module (componentize-py), each with its build command.

use anyhow::{Context, bail};
use oms_plugin_host::Slot;
use std::path::Path;

const WIT: &str = include_str!("../../../../wit/oms.wit");

fn lib_rs(slot: Slot) -> &'static str {
    match slot {
        Slot::Guardrail => {
            r#"//! Order rules: refuse an order before anything is reserved or charged.
//! Settings come from the tenant manifest's `[plugins.guardrail] settings`.

wit_bindgen::generate!({ world: "guardrail", path: "wit" });

use exports::oms::plugin::order_rules::{Guest, Violation};
use oms::plugin::types::{Order, Settings};

struct Rules;

impl Guest for Rules {
    fn validate(order: Order, settings: Settings) -> Result<(), Vec<Violation>> {
        let max: u32 = settings.iter().find(|(k, _)| k == "max_quantity").and_then(|(_, v)| v.parse().ok()).unwrap_or(100);
        let violations: Vec<Violation> = order
            .items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.quantity > max)
            .map(|(i, item)| Violation {
                code: "MAX_QUANTITY_EXCEEDED".into(),
                message: format!("quantity {} of {} exceeds {max}", item.quantity, item.sku),
                field: format!("/items/{i}/quantity"),
            })
            .collect();
        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }
}

export!(Rules);
"#
        }
        Slot::FraudCheck => {
            r#"//! Fraud assessment from the order and the context the host supplies.

wit_bindgen::generate!({ world: "fraud-check", path: "wit" });

use exports::oms::plugin::risk::{Assessment, CustomerContext, Decision, Guest};
use oms::plugin::types::{Order, Settings};

struct Risk;

impl Guest for Risk {
    fn assess(order: Order, context: CustomerContext, _settings: Settings) -> Assessment {
        let mut reasons = Vec::new();
        if context.recent_order_count > 20 {
            reasons.push(format!("{} orders in the last 24h", context.recent_order_count));
        }
        if order.total_amount > 1_000_000 {
            reasons.push("large order".to_string());
        }
        let decision = if reasons.is_empty() { Decision::Approve } else { Decision::Review };
        Assessment { decision, score: 300 * reasons.len() as u32, reasons }
    }
}

export!(Risk);
"#
        }
        Slot::PaymentProvider => {
            r#"//! A payment provider adapter. Reach the provider only through
//! `outbound_http::send`, to origins in the tenant's `allowed_origins`.
//! Send `request.idempotency_key` to the provider: the host retries with it.
//! `retrieve` reads a payment back so the host can reconcile it.

wit_bindgen::generate!({ world: "payment-provider", path: "wit" });

use exports::oms::plugin::payment_status::{self, ProviderPayment, RetrieveError};
use exports::oms::plugin::provider::{Decline, Guest, PaymentError, PaymentRequest};
use oms::plugin::types::Settings;

struct Provider;

fn not_yet(op: &str) -> Result<String, PaymentError> {
    Err(PaymentError::Declined(Decline { code: "NOT_IMPLEMENTED".into(), message: format!("{op} is not implemented yet") }))
}

impl Guest for Provider {
    fn authorize(_request: PaymentRequest, _settings: Settings) -> Result<String, PaymentError> {
        not_yet("authorize")
    }
    fn capture(_request: PaymentRequest, _settings: Settings) -> Result<String, PaymentError> {
        not_yet("capture")
    }
    fn void(_request: PaymentRequest, _settings: Settings) -> Result<String, PaymentError> {
        not_yet("void")
    }
    fn refund(_request: PaymentRequest, _settings: Settings) -> Result<String, PaymentError> {
        not_yet("refund")
    }
}

impl payment_status::Guest for Provider {
    fn retrieve(provider_reference: String, _settings: Settings) -> Result<ProviderPayment, RetrieveError> {
        Err(RetrieveError::NotFound(provider_reference))
    }
}

export!(Provider);
"#
        }
        Slot::CompensationPolicy => {
            r#"//! What to do when a saga step fails: retry, or undo what was done.
//! The host checks the plan: it must undo exactly what holds money or stock.

wit_bindgen::generate!({ world: "compensation-policy", path: "wit" });

use exports::oms::plugin::policy::{Compensation, Decision, Failure, Guest, Plan, SagaView, Step};
use oms::plugin::types::Settings;

struct Policy;

impl Guest for Policy {
    fn decide(failure: Failure, saga: SagaView, _settings: Settings) -> Plan {
        if failure.transient && failure.attempt < 3 {
            return Plan { decision: Decision::Retry(200 << failure.attempt), actions: vec![], notify: vec![], reason: failure.code };
        }
        let captured = saga.completed.contains(&Step::CapturePayment);
        let actions = saga
            .completed
            .iter()
            .rev()
            .filter_map(|step| match step {
                Step::CapturePayment => Some(Compensation::RefundPayment),
                Step::AuthorizePayment if !captured => Some(Compensation::VoidPayment),
                Step::ReserveInventory => Some(Compensation::ReleaseInventory),
                _ => None,
            })
            .collect();
        Plan { decision: Decision::Compensate, actions, notify: vec!["customer".into()], reason: failure.code }
    }
}

export!(Policy);
"#
        }
        Slot::SagaStep => {
            r#"//! A saga step of the tenant's own, placed by naming it in the manifest's
//! `saga.steps` and configured in its `[steps.<name>]` section. Its state
//! (`step-state`) is the tenant's and this step's alone; what a call writes
//! is committed with the saga's transition, and only if the call succeeds.

wit_bindgen::generate!({ world: "saga-step", path: "wit" });

use exports::oms::plugin::custom_step::{Guest, StepContext, StepError};
use oms::plugin::step_state;
use oms::plugin::types::{Order, Settings};

struct Step;

fn state_error(e: step_state::StateError) -> StepError {
    let transient = matches!(e, step_state::StateError::Unavailable(_));
    StepError { code: "STATE_ERROR".into(), message: format!("{e:?}"), transient }
}

impl Guest for Step {
    fn run(order: Order, _context: StepContext, _settings: Settings) -> Result<String, StepError> {
        // Counts the customer's orders; the output goes to `compensate`.
        let key = format!("orders:{}", order.customer_id);
        let count = step_state::increment(&key, 1).map_err(state_error)?;
        Ok(count.to_string())
    }

    fn compensate(order: Order, _context: StepContext, _output: String, _settings: Settings) -> Result<(), StepError> {
        let key = format!("orders:{}", order.customer_id);
        step_state::increment(&key, -1).map_err(state_error)?;
        Ok(())
    }
}

export!(Step);
"#
        }
    }
}

/// The languages a guest can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

fn js_source(slot: Slot) -> &'static str {
    match slot {
        Slot::Guardrail => include_str!("scaffold/js/guardrail.js"),
        Slot::FraudCheck => include_str!("scaffold/js/fraud-check.js"),
        Slot::PaymentProvider => include_str!("scaffold/js/payment-provider.js"),
        Slot::CompensationPolicy => include_str!("scaffold/js/compensation-policy.js"),
        Slot::SagaStep => include_str!("scaffold/js/saga-step.js"),
    }
}

fn python_source(slot: Slot) -> &'static str {
    match slot {
        Slot::Guardrail => include_str!("scaffold/python/guardrail.py"),
        Slot::FraudCheck => include_str!("scaffold/python/fraud-check.py"),
        Slot::PaymentProvider => include_str!("scaffold/python/payment-provider.py"),
        Slot::CompensationPolicy => include_str!("scaffold/python/compensation-policy.py"),
        Slot::SagaStep => include_str!("scaffold/python/saga-step.py"),
    }
}

/// componentize-js as the platform's own JavaScript plugins pin it
/// (plugins/componentize-js/package.json).
const JS_PACKAGE: &str = r#"{
  "name": "NAME",
  "private": true,
  "description": "An OMS plugin in JavaScript, built with componentize-js by ./build. preview2-shim is named because componentize-js 0.23 imports it without declaring it.",
  "dependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

/// Writes a new guest for `slot` in `lang` at `dir` (which must not exist).
pub fn scaffold(slot: Slot, lang: Lang, name: &str, dir: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    match lang {
        Lang::Rust => rust(slot, name, dir),
        Lang::Js => js(slot, name, dir),
        Lang::Python => python(slot, name, dir),
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.is_empty()
    {
        bail!("a plugin name is lower-case letters, digits and -");
    }
    Ok(())
}

/// What every guest's README says of trying and uploading it.
fn usage(slot: Slot, file: &str) -> String {
    let run = match slot {
        Slot::Guardrail | Slot::FraudCheck | Slot::SagaStep => format!(
            "oms plugin test {file} --slot {slot} --order order.json{}\n",
            if slot == Slot::SagaStep {
                " --compensate"
            } else {
                ""
            }
        ),
        // These need a saga or a provider: try them on a local host.
        Slot::PaymentProvider | Slot::CompensationPolicy => String::new(),
    };
    let upload_slot = if slot == Slot::SagaStep {
        "step:<name>".to_string()
    } else {
        slot.to_string()
    };
    format!(
        "{run}oms plugin upload --tenant TENANT --key KEY --slot {upload_slot} {file}\n```\n\n\
         `wit/oms.wit` is the contract; this plugin exports the `{slot}` world. Deterministic slots get no clock,\n\
         randomness, filesystem or network: a component importing them is refused at upload.\n"
    )
}

fn executable(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn js(slot: Slot, name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("wit"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("wit/oms.wit"), WIT)?;
    std::fs::write(dir.join("plugin.js"), js_source(slot))?;
    std::fs::write(dir.join("package.json"), JS_PACKAGE.replace("NAME", name))?;
    let build = format!(
        r#"#!/usr/bin/env bash
# Builds plugin.js into {name}.wasm with componentize-js (installed from the
# npm registry into node_modules on first use; $COMPONENTIZE_JS names
# another install). Every WASI feature is disabled: the platform grants
# none, and a component importing one is refused at upload.
set -euo pipefail
cd "$(dirname "$0")"
cj="${{COMPONENTIZE_JS:-node_modules/.bin/componentize-js}}"
if [ ! -x "$cj" ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
"$cj" --wit wit/oms.wit --world-name {slot} \
    -d stdio -d random -d clocks -d http -d fetch-event \
    -o {name}.wasm plugin.js
"#
    );
    executable(&dir.join("build"), &build)?;
    let readme = format!(
        "# {name}\n\nAn OMS `{slot}` plugin in JavaScript.\n\n```sh\n./build\n{}",
        usage(slot, &format!("{name}.wasm"))
    );
    std::fs::write(dir.join("README.md"), readme)?;
    Ok(())
}

fn python(slot: Slot, name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("wit"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("wit/oms.wit"), WIT)?;
    std::fs::write(dir.join("app.py"), python_source(slot))?;
    let build = format!(
        r#"#!/usr/bin/env bash
# Builds app.py into {name}.wasm with componentize-py (pip install
# componentize-py==0.25.1; $COMPONENTIZE_PY names another install). WASI
# imports are stubbed out (--stub-wasi): the platform grants none, and the
# interpreter's start-up already ran at build time.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=1
"${{COMPONENTIZE_PY:-componentize-py}}" -q -d wit -w {slot} componentize app \
    --stub-wasi -p . -o {name}.wasm
"#
    );
    executable(&dir.join("build"), &build)?;
    let readme = format!(
        "# {name}\n\nAn OMS `{slot}` plugin in Python.\n\n```sh\npip install componentize-py==0.25.1\n./build\n{}",
        usage(slot, &format!("{name}.wasm"))
    );
    std::fs::write(dir.join("README.md"), readme)?;
    Ok(())
}

/// A Rust crate for `slot` at `dir`.
fn rust(slot: Slot, name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("wit"))?;
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "0.61"

# A workspace of its own, so it builds wherever it is put.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
    );
    let readme = format!(
        "# {name}\n\nAn OMS `{slot}` plugin.\n\n```sh\nrustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2\n\
         oms plugin test target/wasm32-wasip2/release/{file}.wasm --slot {slot} --order order.json\n\
         oms plugin upload --tenant TENANT --key KEY --slot {slot} target/wasm32-wasip2/release/{file}.wasm\n```\n\n\
         `wit/oms.wit` is the contract; this plugin exports the `{slot}` world. Deterministic slots get no clock,\n\
         randomness, filesystem or network: a component importing them is refused at upload.\n",
        file = name.replace('-', "_"),
    );
    std::fs::write(dir.join("Cargo.toml"), cargo)?;
    std::fs::write(dir.join("src/lib.rs"), lib_rs(slot))?;
    std::fs::write(dir.join("wit/oms.wit"), WIT)?;
    std::fs::write(dir.join("README.md"), readme)?;
    Ok(())
}
