//! `oms saga …`: sagas that need an operator, through the admin API of a
//! running host: list them by state, show one, retry, compensate or
//! resolve it.

use anyhow::{Context, bail};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct SagaArgs {
    /// The host's address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "OMS_URL"
    )]
    url: String,
    /// Operator token.
    #[arg(long, global = true, env = "OMS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: SagaCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SagaCommand {
    /// Sagas in a state, the longest unchanged first, with what each holds.
    List {
        /// STUCK, COMPENSATING, RUNNING, …
        #[arg(long, default_value = "STUCK")]
        state: String,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One order's saga history.
    Show { tenant: String, order: String },
    /// Run a stuck saga's failed compensation again, now.
    Retry { tenant: String, order: String },
    /// Stop a running saga going forward and undo what it did.
    Compensate {
        tenant: String,
        order: String,
        #[arg(long)]
        reason: String,
    },
    /// Close a stuck saga settled out of band.
    Resolve {
        tenant: String,
        order: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(args: SagaArgs) -> anyhow::Result<()> {
    let token = args
        .token
        .clone()
        .context("the operator token is needed: --token or OMS_ADMIN_TOKEN")?;
    let base = format!("{}/admin/v1", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let act = |tenant: &str, order: &str, action: &str| {
        format!("{base}/tenants/{tenant}/orders/{order}/saga/{action}")
    };
    let request = match &args.command {
        SagaCommand::List {
            state,
            tenant,
            limit,
        } => {
            let mut query = vec![("state", state.clone()), ("limit", limit.to_string())];
            if let Some(t) = tenant {
                query.push(("tenant", t.clone()));
            }
            client.get(format!("{base}/sagas")).query(&query)
        }
        SagaCommand::Show { tenant, order } => {
            client.get(format!("{base}/tenants/{tenant}/orders/{order}/saga"))
        }
        SagaCommand::Retry { tenant, order } => client
            .post(act(tenant, order, "retry"))
            .json(&serde_json::json!({})),
        SagaCommand::Compensate {
            tenant,
            order,
            reason,
        } => client
            .post(act(tenant, order, "compensate"))
            .json(&serde_json::json!({ "reason": reason })),
        SagaCommand::Resolve {
            tenant,
            order,
            reason,
        } => client
            .post(act(tenant, order, "resolve"))
            .json(&serde_json::json!({ "reason": reason })),
    };
    let response = request.bearer_auth(token).send().await?;
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
