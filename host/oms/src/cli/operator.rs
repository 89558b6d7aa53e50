//! `oms operator …`: named operator tokens (viewer or admin) and the audit
//! log of what operators did, through the admin API of a running host.

use super::host::{HostArgs, print_answer};

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    #[command(flatten)]
    host: HostArgs,
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(clap::Subcommand, Debug)]
enum OperatorCommand {
    /// Every operator, with role and last use.
    List,
    /// A new operator; the token is printed this once.
    Create {
        name: String,
        /// viewer (reads) or admin (changes too).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// The token stops working at once.
    Revoke { name: String },
    /// Who did what, from where, when (newest first).
    Audit {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The operator the token belongs to.
    Whoami,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let token = args.host.token()?;
    let base = format!("{}/admin/v1", args.host.base());
    let client = reqwest::Client::new();
    let request = match &args.command {
        OperatorCommand::List => client.get(format!("{base}/operators")),
        OperatorCommand::Create { name, role } => client
            .post(format!("{base}/operators"))
            .json(&serde_json::json!({ "name": name, "role": role })),
        OperatorCommand::Revoke { name } => client.post(format!("{base}/operators/{name}/revoke")),
        OperatorCommand::Audit { tenant, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(t) = tenant {
                query.push(("tenant", t.clone()));
            }
            client.get(format!("{base}/audit")).query(&query)
        }
        OperatorCommand::Whoami => client.get(format!("{base}/whoami")),
    };
    print_answer(request.bearer_auth(token).send().await?).await
}
