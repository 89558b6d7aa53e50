//! `oms bench`: drives orders over HTTP at a running host, as fast as
//! possible or at a fixed rate, and reports accepted orders/s, completed
//! sagas/s and accept latency percentiles.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    #[arg(long, default_value = "acme-dev-key")]
    pub key: String,
    /// Orders to place.
    #[arg(long, default_value_t = 10_000)]
    pub orders: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Orders per second to aim for; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value = "WIDGET-1")]
    pub sku: String,
    #[arg(long, default_value = "tok_visa")]
    pub token: String,
    /// How long to wait for sagas to finish after the last order is accepted.
    #[arg(long, default_value_t = 300)]
    pub settle_secs: u64,
}

async fn finished_sagas(client: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("oms_sagas_completed_total ")
                || l.starts_with("oms_sagas_rejected_total ")
                || l.starts_with("oms_sagas_cancelled_total ")
                || l.starts_with("oms_sagas_stuck_total ")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let url = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let before = finished_sagas(&client, &url)
        .await
        .context("reading /metrics of the host")?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));

    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, args) = (client.clone(), url.clone(), args.clone());
        let (histogram, errors, next) = (histogram.clone(), errors.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= args.orders {
                    break;
                }
                if let Some(every) = interval {
                    let due = started + every * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let body: Value = json!({
                    "customerId": format!("bench-{}", n % 1000),
                    "currency": "USD",
                    "items": [{ "sku": args.sku, "quantity": 1, "unitPrice": 1250 }],
                    "shippingAddress": { "line1": "1 Bench Way", "city": "Loadville", "postalCode": "10001", "country": "US" },
                    "paymentMethod": { "token": args.token },
                });
                let t = Instant::now();
                let ok = client
                    .post(format!("{url}/api/v1/orders"))
                    .header("x-tenant-id", &args.tenant)
                    .bearer_auth(&args.key)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 201)
                    .unwrap_or(false);
                let us = t.elapsed().as_micros() as u64;
                if ok {
                    let _ = histogram.lock().await.record(us.max(1));
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let accept_time = started.elapsed();
    let h = histogram.lock().await.clone();
    let accepted = h.len();
    let failed = errors.load(std::sync::atomic::Ordering::Relaxed);
    if accepted == 0 {
        bail!("no order was accepted ({failed} failed)");
    }

    let deadline = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut done = 0;
    while Instant::now() < deadline {
        done = finished_sagas(&client, &url).await? - before;
        if done >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_time = started.elapsed();
    let report = json!({
        "ordersAccepted": accepted,
        "ordersFailed": failed,
        "sagasFinished": done,
        "acceptedPerSec": (accepted as f64 / accept_time.as_secs_f64()).round(),
        "completedSagasPerSec": (done as f64 / total_time.as_secs_f64()).round(),
        "acceptLatencyMs": {
            "p50": h.value_at_quantile(0.50) as f64 / 1000.0,
            "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
            "max": h.max() as f64 / 1000.0,
        },
        "seconds": { "accept": accept_time.as_secs_f64(), "total": total_time.as_secs_f64() },
    });
    tracing::info!(%report, "bench finished");
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, &report)?;
    std::io::Write::write_all(&mut out, b"\n")?;
    if done < accepted {
        bail!(
            "only {done} of {accepted} sagas finished within {}s",
            args.settle_secs
        );
    }
    Ok(())
}
