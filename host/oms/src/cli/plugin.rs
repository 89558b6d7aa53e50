//! `oms plugin …`: the operator API and tenant uploads from the command line.

use crate::cli::plugin_local::LimitArgs;
use anyhow::{Context, bail};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(flatten)]
    host: super::host::HostArgs,
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
        /// The guest's language: a Rust crate, or a JavaScript or Python
        /// module built with componentize-js or componentize-py.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::cli::plugin_scaffold::Lang,
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
        #[command(flatten)]
        limits: LimitArgs,
        /// saga-step: the step's state before the call, a JSON object of
        /// keys and values (default empty).
        #[arg(long)]
        state: Option<PathBuf>,
        /// saga-step: after a successful run, run its compensation with the
        /// run's output, and show the state after each.
        #[arg(long)]
        compensate: bool,
    },
    /// Replay recorded production calls against a component and compare
    /// verdicts; exits 1 when any differ. The calls come from a file saved
    /// from GET /api/v1/plugins/{slot}/calls, or straight from the host.
    Replay {
        file: PathBuf,
        /// Recorded calls (JSON file).
        #[arg(long, conflicts_with = "tenant")]
        calls: Option<PathBuf>,
        /// Fetch the tenant's recorded calls from the host instead.
        #[arg(long, requires = "slot")]
        tenant: Option<String>,
        #[arg(long, env = "OMS_TENANT_KEY", hide_env_values = true)]
        key: Option<String>,
        #[arg(long)]
        slot: Option<String>,
        /// How many of the newest calls to fetch.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run a candidate beside the active version (guardrail, fraud-check):
    /// its verdicts are compared, never acted on. Without --version or --off,
    /// prints the comparison so far.
    Shadow {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
        #[arg(long, conflicts_with = "off")]
        version: Option<i64>,
        /// Stop shadowing.
        #[arg(long)]
        off: bool,
    },
    /// Roll a candidate out to a share of orders, rolled back automatically
    /// when it crosses its thresholds.
    #[command(subcommand)]
    Canary(CanaryCommand),
}

#[derive(clap::Subcommand, Debug)]
enum CanaryCommand {
    /// Start (or replace) the slot's canary.
    Start {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        version: i64,
        /// Share of orders (1-100), chosen by a hash of the order id.
        #[arg(long)]
        percent: i64,
        /// Roll back above this many failed calls (traps, timeouts, fuel) per 1000.
        #[arg(long)]
        max_failure_permille: Option<i64>,
        /// Roll back when the p99 call time is above this.
        #[arg(long)]
        max_p99_ms: Option<i64>,
        /// Roll back above this many verdicts per 1000 that differ from the active version's.
        #[arg(long)]
        max_divergence_permille: Option<i64>,
        /// Calls to see before judging.
        #[arg(long)]
        min_calls: Option<i64>,
    },
    /// The running canary, its thresholds and how its latest calls went.
    Status {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
    },
    /// Make the canary's version the active one.
    Promote {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
    },
    /// Stop the canary; the active version decides every order again.
    Abort {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        slot: String,
    },
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    if let PluginCommand::Test {
        file,
        slot,
        order,
        settings,
        repeat,
        limits,
        state,
        compensate,
    } = &args.command
    {
        return crate::cli::plugin_local::test(crate::cli::plugin_local::TestArgs {
            file,
            slot,
            order,
            settings,
            repeat: *repeat,
            limits,
            state: state.as_deref(),
            compensate: *compensate,
        })
        .await;
    }
    if let PluginCommand::New {
        slot,
        name,
        dir,
        lang,
    } = &args.command
    {
        let slot =
            oms_plugin_host::Slot::parse(slot).with_context(|| format!("unknown slot {slot}"))?;
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
        crate::cli::plugin_scaffold::scaffold(slot, *lang, name, &dir)?;
        return print(
            &serde_json::json!({ "created": dir.display().to_string(), "slot": slot, "lang": format!("{lang:?}").to_lowercase() }),
        );
    }
    if let PluginCommand::Replay {
        file,
        calls,
        tenant,
        key,
        slot,
        limit,
        limits,
    } = &args.command
    {
        let recorded: serde_json::Value = match (calls, tenant, slot) {
            (Some(path), _, _) => serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )?,
            (None, Some(tenant), Some(slot)) => {
                let key = key
                    .as_deref()
                    .context("the tenant's API key is needed: --key or OMS_TENANT_KEY")?;
                let response = reqwest::Client::new()
                    .get(format!(
                        "{}/api/v1/plugins/{slot}/calls?limit={limit}",
                        args.host.base()
                    ))
                    .header("x-tenant-id", tenant)
                    .bearer_auth(key)
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                if !status.is_success() {
                    print(&body)?;
                    bail!("the host answered {status}");
                }
                body
            }
            _ => bail!("give --calls FILE, or --tenant and --slot to fetch them from the host"),
        };
        if !crate::cli::plugin_local::replay(file, &recorded, limits).await? {
            bail!("some verdicts differ from the recorded ones");
        }
        return Ok(());
    }
    let client = reqwest::Client::new();
    let base = args.host.base();
    let token = || args.host.token();
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
        PluginCommand::Test { .. } | PluginCommand::New { .. } | PluginCommand::Replay { .. } => {
            unreachable!("handled above")
        }
        PluginCommand::Shadow {
            tenant,
            slot,
            version,
            off,
        } => {
            let url = format!("{base}/admin/v1/tenants/{tenant}/plugins/{slot}/shadow");
            let request = match (version, off) {
                (Some(v), _) => client.post(url).json(&serde_json::json!({ "version": v })),
                (None, true) => client
                    .post(url)
                    .json(&serde_json::json!({ "version": null })),
                (None, false) => client.get(url),
            };
            request.bearer_auth(token()?).send().await?
        }
        PluginCommand::Canary(command) => {
            let path = |tenant: &str, slot: &str, rest: &str| {
                format!("{base}/admin/v1/tenants/{tenant}/plugins/{slot}/canary{rest}")
            };
            let request = match command {
                CanaryCommand::Start {
                    tenant,
                    slot,
                    version,
                    percent,
                    max_failure_permille,
                    max_p99_ms,
                    max_divergence_permille,
                    min_calls,
                } => client
                    .post(path(tenant, slot, ""))
                    .json(&serde_json::json!({
                        "version": version,
                        "percent": percent,
                        "maxFailurePermille": max_failure_permille,
                        "maxP99Ms": max_p99_ms,
                        "maxDivergencePermille": max_divergence_permille,
                        "minCalls": min_calls,
                    })),
                CanaryCommand::Status { tenant, slot } => client.get(path(tenant, slot, "")),
                CanaryCommand::Promote { tenant, slot } => {
                    client.post(path(tenant, slot, "/promote"))
                }
                CanaryCommand::Abort { tenant, slot } => client.post(path(tenant, slot, "/abort")),
            };
            request.bearer_auth(token()?).send().await?
        }
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
    super::host::print_answer(response).await
}

fn print(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}
