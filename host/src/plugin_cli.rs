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
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
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
