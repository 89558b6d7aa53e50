//! What every command that talks to a running host shares: its address,
//! the operator token, and printing its JSON answer.

use anyhow::{Context, bail};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct HostArgs {
    /// The host's address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "OMS_URL"
    )]
    pub url: String,
    /// Operator token (for the admin API).
    #[arg(long, global = true, env = "OMS_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl HostArgs {
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    pub fn token(&self) -> anyhow::Result<String> {
        self.token
            .clone()
            .context("the operator token is needed: --token or OMS_ADMIN_TOKEN")
    }
}

/// Prints the host's JSON answer; an error status fails the command after.
pub async fn print_answer(response: reqwest::Response) -> anyhow::Result<()> {
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
