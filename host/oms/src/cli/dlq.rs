//! `oms dlq …`: the dead-letter topic from the command line. Talks to Kafka
//! directly, so it works with every host down.

use anyhow::{Context, bail};
use oms_engine::transport::dlq::{self, DeadLetter};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    /// Kafka bootstrap servers (`HOST:PORT,…`).
    #[arg(long, global = true, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters: id, when, error code, origin and error.
    List {
        /// One JSON object per line, with headers and payload.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the topic they came from (after a fix is
    /// deployed). A command applies once by its id, so replaying twice is
    /// harmless; a message still unreadable comes back to the dead letters.
    Replay {
        /// Dead-letter ids (`PARTITION:OFFSET`, as `list` shows them).
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

async fn read(brokers: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || dlq::read_all(&brokers))
        .await?
        .context("reading the dead-letter topic")
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let Some(brokers) = args.kafka_brokers.as_deref() else {
        bail!("dead letters live in Kafka: pass --kafka-brokers or set KAFKA_BROKERS");
    };
    let letters = read(brokers).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DlqCommand::List { json } => {
            if json {
                for l in &letters {
                    writeln!(out, "{}", serde_json::to_string(l)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<10} {:<24} {:<24} {:<28} ERROR",
                    "ID", "AT", "CODE", "ORIGIN"
                )?;
                for l in &letters {
                    let at = chrono::DateTime::from_timestamp_millis(l.dead_at)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_default();
                    let origin = format!(
                        "{}/{}@{}",
                        l.origin_topic, l.origin_partition, l.origin_offset
                    );
                    writeln!(
                        out,
                        "{:<10} {:<24} {:<24} {:<28} {}",
                        l.id, at, l.error_code, origin, l.error
                    )?;
                }
                writeln!(out, "{} dead letter(s)", letters.len())?;
            }
        }
        DlqCommand::Replay { ids, all } => {
            if !all && ids.is_empty() {
                bail!("name the dead letters to replay (ids from `oms dlq list`) or pass --all");
            }
            let unknown: Vec<&String> = ids
                .iter()
                .filter(|id| !letters.iter().any(|l| &l.id == *id))
                .collect();
            if !unknown.is_empty() {
                bail!("no dead letter with id {unknown:?}");
            }
            let chosen: Vec<DeadLetter> = letters
                .into_iter()
                .filter(|l| all || ids.contains(&l.id))
                .collect();
            let n = dlq::replay(brokers, &chosen)
                .await
                .context("replaying dead letters")?;
            writeln!(out, "replayed {n} dead letter(s)")?;
        }
    }
    Ok(())
}
