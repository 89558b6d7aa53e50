//! What the hosts under load say about themselves: finished sagas and
//! database statements from `/metrics`, CPU seconds and resident memory
//! from `/proc` (of `--host-pid`, else the host's own `process_*` metrics,
//! which it also reads from `/proc`).

use anyhow::Context;
use serde_json::{Value, json};

/// One reading of every host, summed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub finished: u64,
    pub statements: Option<u64>,
    pub transactions: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    }
}

/// CPU seconds (user + system) and resident bytes of process `pid`.
fn proc_figures(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // USER_HZ is 100 on every Linux ABI this runs on.
    let cpu = (ticks(14)? + ticks(15)?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok((cpu, rss_kib * 1024))
}

/// Reads every host (and every `pids` process) now.
pub(crate) async fn sample(
    client: &reqwest::Client,
    urls: &[String],
    pids: &[u32],
) -> anyhow::Result<Sample> {
    let mut s = Sample {
        statements: Some(0),
        transactions: Some(0),
        cpu_seconds: Some(0.0),
        rss_bytes: Some(0),
        ..Sample::default()
    };
    for url in urls {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("reading /metrics of {url}"))?
            .text()
            .await?;
        s.finished += [
            "oms_sagas_completed_total",
            "oms_sagas_rejected_total",
            "oms_sagas_cancelled_total",
            "oms_sagas_stuck_total",
        ]
        .iter()
        .filter_map(|n| metric(&text, n))
        .sum::<f64>() as u64;
        let count = |n| metric(&text, n).map(|v| v as u64);
        s.statements = add(s.statements, count("oms_db_statements_total"));
        s.transactions = add(s.transactions, count("oms_db_transactions_total"));
        if pids.is_empty() {
            s.cpu_seconds = add(s.cpu_seconds, metric(&text, "process_cpu_seconds_total"));
            s.rss_bytes = add(s.rss_bytes, count("process_resident_memory_bytes"));
        }
    }
    if !pids.is_empty() {
        for pid in pids {
            let (cpu, rss) = proc_figures(*pid)?;
            s.cpu_seconds = add(s.cpu_seconds, Some(cpu));
            s.rss_bytes = add(s.rss_bytes, Some(rss));
        }
    }
    Ok(s)
}

/// `after - before` per finished saga, as JSON (null when unknown).
pub(crate) fn per_saga(before: &Sample, after: &Sample) -> Value {
    let sagas = after.finished.saturating_sub(before.finished).max(1) as f64;
    let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!((a - b) / sagas),
        _ => Value::Null,
    };
    let f = |v: Option<u64>| v.map(|v| v as f64);
    json!({
        "hostCpuMs": per(after.cpu_seconds, before.cpu_seconds).as_f64().map(|s| (s * 1e6).round() / 1e3),
        "dbStatements": per(f(after.statements), f(before.statements)).as_f64().map(|v| (v * 100.0).round() / 100.0),
        "dbTransactions": per(f(after.transactions), f(before.transactions)).as_f64().map(|v| (v * 100.0).round() / 100.0),
    })
}
