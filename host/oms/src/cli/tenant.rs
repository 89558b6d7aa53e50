//! `oms tenant …`: tenants and their API keys, through the admin API of a
//! running host. A manifest is given as a file, TOML (the `tenants/*.toml`
//! format) or JSON; components are `builtin:<name>` or `sha256:<digest>`
//! of a version the tenant uploaded.

use super::host::{HostArgs, print_answer};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct TenantArgs {
    #[command(flatten)]
    host: HostArgs,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TenantCommand {
    /// Every tenant, with its status and revision.
    List,
    /// One tenant and its manifest (secrets shown as ********).
    Show { tenant: String },
    /// Create a tenant from a manifest file.
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a tenant's manifest.
    Update {
        tenant: String,
        #[arg(long)]
        file: PathBuf,
        /// Refuse if the tenant is no longer at this revision.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Refuse the tenant's calls (its sagas in flight finish).
    Suspend { tenant: String },
    /// Serve a suspended tenant again.
    Resume { tenant: String },
    /// The tenant's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(clap::Subcommand, Debug)]
enum KeyCommand {
    List {
        tenant: String,
    },
    /// A new key; its secret is printed this once.
    Create {
        tenant: String,
        #[arg(long)]
        name: String,
        /// orders:read, orders:write, inventory:read, inventory:write,
        /// plugins:read, plugins:write (repeat, or separate with commas).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// A new secret for a key; the old one works for the grace period.
    Rotate {
        tenant: String,
        key: String,
        #[arg(long, default_value_t = 86_400)]
        grace_seconds: i64,
    },
    Revoke {
        tenant: String,
        key: String,
    },
}

/// A manifest file as the JSON the admin API takes.
fn manifest(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))
    }
}

pub async fn run(args: TenantArgs) -> anyhow::Result<()> {
    let token = args.host.token()?;
    let base = format!("{}/admin/v1/tenants", args.host.base());
    let client = reqwest::Client::new();
    let request = match &args.command {
        TenantCommand::List => client.get(&base),
        TenantCommand::Show { tenant } => client.get(format!("{base}/{tenant}")),
        TenantCommand::Create { file } => client.post(&base).json(&manifest(file)?),
        TenantCommand::Update {
            tenant,
            file,
            revision,
        } => {
            let r = client
                .put(format!("{base}/{tenant}"))
                .json(&manifest(file)?);
            match revision {
                Some(rev) => r.header("if-match", rev.to_string()),
                None => r,
            }
        }
        TenantCommand::Suspend { tenant } => client.post(format!("{base}/{tenant}/suspend")),
        TenantCommand::Resume { tenant } => client.post(format!("{base}/{tenant}/resume")),
        TenantCommand::Key(KeyCommand::List { tenant }) => {
            client.get(format!("{base}/{tenant}/keys"))
        }
        TenantCommand::Key(KeyCommand::Create {
            tenant,
            name,
            scopes,
        }) => client
            .post(format!("{base}/{tenant}/keys"))
            .json(&serde_json::json!({ "name": name, "scopes": scopes })),
        TenantCommand::Key(KeyCommand::Rotate {
            tenant,
            key,
            grace_seconds,
        }) => client
            .post(format!("{base}/{tenant}/keys/{key}/rotate"))
            .json(&serde_json::json!({ "graceSeconds": grace_seconds })),
        TenantCommand::Key(KeyCommand::Revoke { tenant, key }) => {
            client.post(format!("{base}/{tenant}/keys/{key}/revoke"))
        }
    };
    print_answer(request.bearer_auth(token).send().await?).await
}
