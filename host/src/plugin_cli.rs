//! `oms plugin …`: the operator API and tenant uploads from the command line.

use anyhow::{Context, bail};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    /// The host's address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "OMS_URL"
    )]
    url: String,
    /// Operator token (for list, activate, rollback).
    #[arg(long, global = true, env = "OMS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PluginCommand {
    /// Upload a component for a tenant (with the tenant's API key).
    Upload {
        #[arg(long)]
        tenant: String,
        #[arg(long, env = "OMS_TENANT_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        slot: String,
        file: PathBuf,
    },
    /// List a tenant's versions for a slot, with who uploaded them and when.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
    },
    /// Make a version the one new calls use.
    Activate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        version: i64,
    },
    /// Go back to the previously active version.
    Rollback {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
    },
    /// Create a guest crate for a slot that builds to a component, ready to edit.
    New {
        slot: String,
        /// The crate's name (lower-case letters, digits, -).
        #[arg(long, default_value = "my-plugin")]
        name: String,
        /// Where to create it (default ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a component locally under the platform's limits for its slot and
    /// print the verdict, fuel and time; with --repeat, call-cost percentiles.
    Test {
        file: PathBuf,
        #[arg(long)]
        slot: String,
        /// An order as POST /api/v1/orders takes it (JSON file).
        #[arg(long)]
        order: PathBuf,
        /// Settings as KEY=VALUE, repeatable.
        #[arg(long = "setting")]
        settings: Vec<String>,
        /// Calls to make; each instantiates afresh, as in production.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    if let PluginCommand::Test {
        file,
        slot,
        order,
        settings,
        repeat,
    } = &args.command
    {
        return test(file, slot, order, settings, *repeat).await;
    }
    if let PluginCommand::New { slot, name, dir } = &args.command {
        let slot =
            crate::plugins::Slot::parse(slot).with_context(|| format!("unknown slot {slot}"))?;
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
        crate::plugin_scaffold::scaffold(slot, name, &dir)?;
        return print(&serde_json::json!({ "created": dir.display().to_string(), "slot": slot }));
    }
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let token = || {
        args.token
            .clone()
            .context("the operator token is needed: --token or OMS_ADMIN_TOKEN")
    };
    let response = match &args.command {
        PluginCommand::Upload {
            tenant,
            key,
            slot,
            file,
        } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            client
                .post(format!("{base}/api/v1/plugins/{slot}"))
                .header("x-tenant-id", tenant)
                .bearer_auth(key)
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .await?
        }
        PluginCommand::List { tenant, slot } => {
            client
                .get(format!(
                    "{base}/admin/v1/tenants/{tenant}/plugins/{slot}/versions"
                ))
                .bearer_auth(token()?)
                .send()
                .await?
        }
        PluginCommand::Activate {
            tenant,
            slot,
            version,
        } => {
            client
                .post(format!(
                    "{base}/admin/v1/tenants/{tenant}/plugins/{slot}/activate"
                ))
                .bearer_auth(token()?)
                .json(&serde_json::json!({ "version": version }))
                .send()
                .await?
        }
        PluginCommand::Test { .. } | PluginCommand::New { .. } => unreachable!("handled above"),
        PluginCommand::Rollback { tenant, slot } => {
            client
                .post(format!(
                    "{base}/admin/v1/tenants/{tenant}/plugins/{slot}/rollback"
                ))
                .bearer_auth(token()?)
                .send()
                .await?
        }
    };
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading the host's answer")?;
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, &body)?;
    out.write_all(b"\n")?;
    if !status.is_success() {
        bail!("the host answered {status}");
    }
    Ok(())
}

fn print(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// `oms plugin test`: the same checks as an upload, the same limits as
/// production, no host or database needed.
async fn test(
    file: &PathBuf,
    slot: &str,
    order: &PathBuf,
    settings: &[String],
    repeat: usize,
) -> anyhow::Result<()> {
    use crate::plugins::bindings::{Address, LineItem, Order};
    use crate::plugins::{PluginHost, Slot};
    use serde_json::json;

    let slot = Slot::parse(slot).with_context(|| format!("unknown slot {slot}"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let order_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(order).with_context(|| format!("reading {}", order.display()))?,
    )?;
    let draft = crate::api::validate_order(&order_json).map_err(|errors| {
        anyhow::anyhow!(
            "the order is not valid: {}",
            serde_json::to_string(&errors).unwrap_or_default()
        )
    })?;
    let total = draft.total().context("the order total overflows")?;
    let wit_order = Order {
        id: "ord_local_test".into(),
        tenant: "local".into(),
        customer_id: draft.customer_id.clone(),
        currency: draft.currency.code().into(),
        items: draft
            .items
            .iter()
            .map(|i| LineItem {
                sku: i.sku.to_string(),
                quantity: i.quantity,
                unit_price: i.unit_price,
            })
            .collect(),
        total_amount: total.minor,
        shipping_address: Address {
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

    let host = PluginHost::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let plugin = match host.load(slot, &bytes) {
        Ok(p) => p,
        Err(e) => {
            print(&json!({ "accepted": false, "code": e.code(), "message": e.to_string() }))?;
            bail!("the component would be refused at upload");
        }
    };
    let limits = slot.default_limits();
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut last = json!(null);
    for _ in 0..repeat.max(1) {
        let started = std::time::Instant::now();
        let (verdict, fuel) = match slot {
            Slot::Guardrail => match host
                .validate(
                    "local",
                    &plugin,
                    limits,
                    wit_order.clone(),
                    settings.clone(),
                )
                .await
            {
                Ok(c) => {
                    let v = match &c.value {
                        Ok(()) => json!({ "ok": true }),
                        Err(vs) => {
                            json!({ "ok": false, "violations": vs.iter().map(|v| json!({ "code": v.code, "message": v.message, "field": v.field })).collect::<Vec<_>>() })
                        }
                    };
                    (v, c.stats.fuel_used)
                }
                Err(e) => (json!({ "error": e.code(), "message": e.to_string() }), 0),
            },
            Slot::FraudCheck => {
                use crate::plugins::bindings::fraud::exports::oms::plugin::risk::Decision;
                let context =
                    crate::plugins::bindings::fraud::exports::oms::plugin::risk::CustomerContext {
                        recent_order_count: 0,
                        recent_spend: 0,
                    };
                match host
                    .assess(
                        "local",
                        &plugin,
                        limits,
                        wit_order.clone(),
                        context,
                        settings.clone(),
                    )
                    .await
                {
                    Ok(c) => (
                        json!({ "decision": match c.value.decision {
                        Decision::Approve => "approve",
                        Decision::Review => "review",
                        Decision::Decline => "decline",
                    }, "score": c.value.score, "reasons": c.value.reasons }),
                        c.stats.fuel_used,
                    ),
                    Err(e) => (json!({ "error": e.code(), "message": e.to_string() }), 0),
                }
            }
            other => bail!(
                "oms plugin test runs guardrail and fraud-check components; {other} needs a saga or a provider"
            ),
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
