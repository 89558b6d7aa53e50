//! Running a component on the author's machine, with no host or database:
//! `oms plugin test` (one order, the same checks and limits as production)
//! and `oms plugin replay` (recorded production calls against a candidate).

use anyhow::{Context, bail};
use oms_plugin_host::calls::{self, CallInput, ContextInput, OrderInput};
use oms_plugin_host::{CallLimits, PluginHost, Slot};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Limits for a local run: the slot's platform defaults unless set, as a
/// tenant manifest would set them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    #[arg(long)]
    fuel: Option<u64>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long)]
    memory_mb: Option<usize>,
}

impl LimitArgs {
    fn limits(&self, slot: Slot) -> anyhow::Result<CallLimits> {
        let (mut l, max) = (slot.default_limits(), slot.max_limits());
        if let Some(f) = self.fuel {
            l.fuel = f;
        }
        if let Some(t) = self.timeout_ms {
            l.timeout = Duration::from_millis(t);
        }
        if let Some(m) = self.memory_mb {
            l.memory_bytes = m << 20;
        }
        if l.fuel > max.fuel || l.timeout > max.timeout || l.memory_bytes > max.memory_bytes {
            bail!(
                "limits above the platform maxima (fuel {}, timeout {:?}, memory {} MiB)",
                max.fuel,
                max.timeout,
                max.memory_bytes >> 20
            );
        }
        Ok(l)
    }
}

fn print(value: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn load(
    host: &PluginHost,
    slot: Slot,
    file: &Path,
) -> anyhow::Result<std::sync::Arc<oms_plugin_host::Plugin>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match host.load(slot, &bytes) {
        Ok(p) => Ok(p),
        Err(e) => {
            print(&json!({ "accepted": false, "code": e.code(), "message": e.to_string() }))?;
            bail!("the component would be refused at upload");
        }
    }
}

/// What `oms plugin test` is asked to do.
pub struct TestArgs<'a> {
    pub file: &'a Path,
    pub slot: &'a str,
    pub order: &'a PathBuf,
    pub settings: &'a [String],
    pub repeat: usize,
    pub limits: &'a LimitArgs,
    /// A saga step's committed state (JSON object), and whether to run its
    /// compensation after it.
    pub state: Option<&'a Path>,
    pub compensate: bool,
}

/// `oms plugin test FILE --slot S --order order.json`.
pub async fn test(args: TestArgs<'_>) -> anyhow::Result<()> {
    let TestArgs {
        file,
        slot,
        order,
        settings,
        repeat,
        limits,
        state,
        compensate,
    } = args;
    let slot = Slot::parse(slot).with_context(|| format!("unknown slot {slot}"))?;
    let order_json: Value = serde_json::from_slice(
        &std::fs::read(order).with_context(|| format!("reading {}", order.display()))?,
    )?;
    let draft = oms_domain::validate::order(&order_json).map_err(|problems| {
        let errors = problems.errors;
        anyhow::anyhow!(
            "the order is not valid: {}",
            serde_json::to_string(&errors).unwrap_or_default()
        )
    })?;
    let total = draft.total().context("the order total overflows")?;
    let order = OrderInput {
        id: "ord_local_test".into(),
        tenant: "local".into(),
        customer_id: draft.customer_id.clone(),
        currency: draft.currency.code().into(),
        items: draft
            .items
            .iter()
            .map(|i| calls::LineInput {
                sku: i.sku.to_string(),
                quantity: i.quantity,
                unit_price: i.unit_price,
            })
            .collect(),
        total_amount: total.minor,
        shipping_address: calls::AddressInput {
            line1: draft.shipping_address.line1.clone(),
            city: draft.shipping_address.city.clone(),
            postal_code: draft.shipping_address.postal_code.clone(),
            country: draft.shipping_address.country.clone(),
        },
    };
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect::<Option<_>>()
        .context("settings are KEY=VALUE")?;
    if slot == Slot::SagaStep {
        let host = PluginHost::new().map_err(|e| anyhow::anyhow!("{e}"))?;
        let plugin = load(&host, slot, file)?;
        let run = super::plugin_step::StepRun {
            order,
            settings,
            state,
            compensate,
            limits: limits.limits(slot)?,
        };
        let mut out = super::plugin_step::test(&host, &plugin, run).await?;
        out["accepted"] = json!(true);
        out["version"] = json!(plugin.version());
        return print(&out);
    }
    let input = match slot {
        Slot::Guardrail => CallInput::Guardrail { order, settings },
        Slot::FraudCheck => CallInput::FraudCheck {
            order,
            context: ContextInput {
                recent_order_count: 0,
                recent_spend: 0,
            },
            settings,
        },
        other => bail!(
            "oms plugin test runs guardrail, fraud-check and saga-step components; {other} needs a saga or a provider"
        ),
    };

    let host = PluginHost::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let plugin = load(&host, slot, file)?;
    let limits = limits.limits(slot)?;
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut last = json!(null);
    for _ in 0..repeat.max(1) {
        let started = std::time::Instant::now();
        let (verdict, fuel) = match calls::invoke(&host, "local", &plugin, limits, &input).await {
            Ok(c) => (c.value.output, c.stats.fuel_used),
            Err(e) => (calls::error_output(&e).output, 0),
        };
        let _ = latencies.record((started.elapsed().as_micros() as u64).max(1));
        last = json!({ "verdict": verdict, "fuelUsed": fuel });
    }
    last["accepted"] = json!(true);
    last["version"] = json!(plugin.version());
    last["calls"] = json!(repeat.max(1));
    last["callUs"] = json!({
        "p50": latencies.value_at_quantile(0.5),
        "p99": latencies.value_at_quantile(0.99),
        "max": latencies.max(),
    });
    print(&last)
}

/// `oms plugin replay FILE`: runs each recorded call's input through the
/// candidate and compares verdicts. The calls come as
/// `GET /api/v1/plugins/{slot}/calls` answers them (`{"data": [...]}`) or as
/// a bare array. Exits non-zero when any verdict differs, so it can gate a
/// tenant's release.
pub async fn replay(file: &Path, recorded: &Value, limits: &LimitArgs) -> anyhow::Result<bool> {
    let calls: &Vec<Value> = recorded
        .get("data")
        .unwrap_or(recorded)
        .as_array()
        .context("expected the recorded calls: an array, or {\"data\": [...]}")?;
    let mut inputs = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        let input: CallInput = serde_json::from_value(c["input"].clone())
            .with_context(|| format!("call {i}: the input is not a recorded call input"))?;
        inputs.push((input, c));
    }
    let Some(slot) = inputs.first().map(|(i, _)| i.slot()) else {
        bail!("there are no recorded calls to replay");
    };
    if inputs.iter().any(|(i, _)| i.slot() != slot) {
        bail!("the recorded calls are for more than one slot");
    }
    let host = PluginHost::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let plugin = load(&host, slot, file)?;
    let limits = limits.limits(slot)?;
    let (mut same, mut differences) = (0usize, Vec::new());
    let (mut recorded_fuel, mut replayed_fuel) = (0i64, 0u64);
    for (input, call) in &inputs {
        let (verdict, output, fuel) =
            match calls::invoke(&host, "replay", &plugin, limits, input).await {
                Ok(c) => (c.value.verdict, c.value.output, c.stats.fuel_used),
                Err(e) => {
                    let o = calls::error_output(&e);
                    (o.verdict, o.output, 0)
                }
            };
        recorded_fuel += call["fuelUsed"].as_i64().unwrap_or(0);
        replayed_fuel += fuel;
        let recorded_verdict = call["verdict"].as_str().unwrap_or_default();
        if verdict == recorded_verdict {
            same += 1;
        } else {
            differences.push(json!({
                "orderId": input.order_id(),
                "recordedVersion": call["version"],
                "recorded": recorded_verdict,
                "replayed": verdict,
                "replayedOutput": output,
            }));
        }
    }
    let differ = differences.len();
    differences.truncate(50);
    print(&json!({
        "slot": slot,
        "candidateVersion": plugin.version(),
        "calls": inputs.len(),
        "same": same,
        "different": differ,
        "fuelUsed": { "recorded": recorded_fuel, "replayed": replayed_fuel },
        "differences": differences,
    }))?;
    Ok(differ == 0)
}
