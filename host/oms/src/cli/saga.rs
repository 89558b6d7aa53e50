//! `oms saga …`: sagas that need an operator, through the admin API of a
//! running host: list them by state, show one, retry, compensate or
//! resolve it.

use super::host::{HostArgs, print_answer};

#[derive(clap::Args, Debug)]
pub struct SagaArgs {
    #[command(flatten)]
    host: HostArgs,
    #[command(subcommand)]
    command: SagaCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SagaCommand {
    /// Sagas in a state, the longest in it first, with what each holds.
    List {
        /// STUCK, COMPENSATING, RUNNING, …
        #[arg(long, default_value = "STUCK")]
        state: String,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only sagas placed more than this many minutes ago.
        #[arg(long)]
        older_than_minutes: Option<u32>,
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
    let token = args.host.token()?;
    let base = format!("{}/admin/v1", args.host.base());
    let client = reqwest::Client::new();
    let act = |tenant: &str, order: &str, action: &str| {
        format!("{base}/tenants/{tenant}/orders/{order}/saga/{action}")
    };
    let request = match &args.command {
        SagaCommand::List {
            state,
            tenant,
            older_than_minutes,
            limit,
        } => {
            let mut query = vec![("state", state.clone()), ("limit", limit.to_string())];
            if let Some(t) = tenant {
                query.push(("tenant", t.clone()));
            }
            if let Some(m) = older_than_minutes {
                query.push(("olderThanMinutes", m.to_string()));
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
    print_answer(request.bearer_auth(token).send().await?).await
}
