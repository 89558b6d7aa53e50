//! `oms bench`: drives orders over HTTP at a running host, as fast as
//! possible (closed loop) or at a fixed rate (open loop), and reports
//! accepted orders/s, completed sagas/s, accept latency percentiles and what
//! each saga cost the hosts: CPU, database statements and transactions.
//!
//! At a fixed rate every order's latency is measured from the moment it was
//! scheduled to be sent, not from when the client got round to sending it:
//! a client that falls behind (all its connections busy) would otherwise
//! hide the queueing it met (coordinated omission).

mod hosts;
mod kafka;

use anyhow::bail;
use hdrhistogram::Histogram;
use kafka::Seen;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The host, or several hosts (comma-separated) sharing one database:
    /// orders go to them in turn, and finished sagas are summed over all.
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
    /// Also measure the time from an order's acceptance to its
    /// `order.confirmed` on the Kafka topic (the host must publish there).
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// The hosts' process ids (comma-separated), to read their CPU time and
    /// memory from /proc; without it, from their `process_*` metrics.
    #[arg(long, value_delimiter = ',')]
    pub host_pid: Vec<u32>,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
}

type Latencies = Arc<std::sync::Mutex<Histogram<u64>>>;

/// What the load loops share.
struct Load {
    client: reqwest::Client,
    urls: Arc<Vec<String>>,
    args: BenchArgs,
    latencies: Latencies,
    /// The same since the last progress line: where in a run a tail was.
    recent: Latencies,
    accepted_at: Seen,
    sent: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
}

impl Load {
    /// Places order `n`; its latency counted from `since` (when it was due).
    async fn place(&self, n: u64, since: Instant) {
        let args = &self.args;
        let body: Value = json!({
            "customerId": format!("bench-{}", n % 1000),
            "currency": "USD",
            "items": [{ "sku": args.sku, "quantity": 1, "unitPrice": 1250 }],
            "shippingAddress": { "line1": "1 Bench Way", "city": "Loadville", "postalCode": "10001", "country": "US" },
            "paymentMethod": { "token": args.token },
        });
        let url = &self.urls[n as usize % self.urls.len()];
        self.sent.fetch_add(1, Ordering::Relaxed);
        let response = self
            .client
            .post(format!("{url}/api/v1/orders"))
            .header("x-tenant-id", &args.tenant)
            .bearer_auth(&args.key)
            .json(&body)
            .send()
            .await;
        let answered = Instant::now();
        let ok = match response {
            Ok(r) if r.status().as_u16() == 201 => {
                if args.kafka_brokers.is_some()
                    && let Ok(order) = r.json::<Value>().await
                    && let Some(id) = order["id"].as_str()
                {
                    self.accepted_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.to_string(), answered);
                }
                true
            }
            _ => false,
        };
        if ok {
            let us = answered.saturating_duration_since(since).as_micros() as u64;
            let _ = self
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(us.max(1));
            let _ = self
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(us.max(1));
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// As fast as answered: `--concurrency` clients, each sending its next
/// order when the last is answered.
async fn closed_loop(load: &Arc<Load>) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..load.args.concurrency {
        let (load, next) = (load.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= load.args.orders {
                    break;
                }
                load.place(n, Instant::now()).await;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok(())
}

/// At `--rate`: order n is due at start + n/rate and sent then, whatever
/// became of the others (at most `--concurrency` in flight; an order that
/// waits for a free slot has that wait in its latency). The most the
/// sender fell behind its schedule.
async fn open_loop(load: &Arc<Load>, started: Instant) -> anyhow::Result<Duration> {
    let every = Duration::from_secs_f64(1.0 / load.args.rate as f64);
    let slots = Arc::new(Semaphore::new(load.args.concurrency));
    let mut behind = Duration::ZERO;
    for n in 0..load.args.orders {
        let due = started + every.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let slot = slots.clone().acquire_owned().await?;
        behind = behind.max(Instant::now().saturating_duration_since(due));
        let load = load.clone();
        tokio::spawn(async move {
            load.place(n, due).await;
            drop(slot);
        });
    }
    // Every order answered: all slots free again.
    let _all = slots.acquire_many(load.args.concurrency as u32).await?;
    Ok(behind)
}

/// A progress line a second (logged) while the run lasts.
fn progress(
    load: Arc<Load>,
    finished: Arc<AtomicU64>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_accepted, mut last_finished) = (0, 0);
        loop {
            tick.tick().await;
            let accepted = load.accepted.load(Ordering::Relaxed);
            let done = finished.load(Ordering::Relaxed);
            let p99 = load
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .value_at_quantile(0.99) as f64
                / 1000.0;
            let (recent_p99, recent_max) = {
                let mut recent = load.recent.lock().unwrap_or_else(|p| p.into_inner());
                let seen = (
                    recent.value_at_quantile(0.99) as f64 / 1000.0,
                    recent.max() as f64 / 1000.0,
                );
                recent.reset();
                seen
            };
            tracing::info!(
                seconds = started.elapsed().as_secs(),
                sent = load.sent.load(Ordering::Relaxed),
                accepted,
                accepted_per_sec = accepted - last_accepted,
                failed = load.failed.load(Ordering::Relaxed),
                finished = done,
                finished_per_sec = done.saturating_sub(last_finished),
                accept_p99_ms = p99,
                last_second_p99_ms = recent_p99,
                last_second_max_ms = recent_max,
                "bench progress"
            );
            (last_accepted, last_finished) = (accepted, done);
        }
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let urls: Arc<Vec<String>> = Arc::new(
        args.url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect(),
    );
    if urls.is_empty() {
        bail!("--url names no host");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let pids = args.host_pid.clone();
    let before = hosts::sample(&client, &urls, &pids).await?;
    let accepted_at: Seen = Seen::default();
    let confirmed_at: Seen = Seen::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = match &args.kafka_brokers {
        Some(brokers) => Some(kafka::watch_confirmations(
            brokers,
            confirmed_at.clone(),
            stop.clone(),
        )?),
        None => None,
    };
    let load = Arc::new(Load {
        client: client.clone(),
        urls: urls.clone(),
        args: args.clone(),
        latencies: Arc::new(std::sync::Mutex::new(Histogram::new_with_bounds(
            1,
            600_000_000,
            3,
        )?)),
        recent: Arc::new(std::sync::Mutex::new(Histogram::new_with_bounds(
            1,
            600_000_000,
            3,
        )?)),
        accepted_at: accepted_at.clone(),
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let finished = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = (!args.quiet).then(|| progress(load.clone(), finished.clone(), started));
    // The hosts' finished sagas, read while the load runs (for the progress line).
    let watch = {
        let (client, urls, pids, finished) =
            (client.clone(), urls.clone(), pids.clone(), finished.clone());
        let base = before.finished;
        tokio::spawn(async move {
            loop {
                if let Ok(s) = hosts::sample(&client, &urls, &pids).await {
                    finished.store(s.finished.saturating_sub(base), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let behind = if args.rate > 0 {
        Some(open_loop(&load, started).await?)
    } else {
        closed_loop(&load).await?;
        None
    };
    let accept_time = started.elapsed();
    let h = load
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let accepted = h.len();
    let failed = load.failed.load(Ordering::Relaxed);
    if accepted == 0 {
        bail!("no order was accepted ({failed} failed)");
    }

    let deadline = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut after = hosts::sample(&client, &urls, &pids).await?;
    while after.finished - before.finished < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = hosts::sample(&client, &urls, &pids).await?;
    }
    let done = after.finished - before.finished;
    let total_time = started.elapsed();
    watch.abort();
    if let Some(p) = progress {
        p.abort();
    }
    let on_topic = match watcher {
        Some(watcher) => {
            let wait = Instant::now() + Duration::from_secs(30);
            let missing = || {
                let accepted = accepted_at.lock().unwrap_or_else(|p| p.into_inner());
                let confirmed = confirmed_at.lock().unwrap_or_else(|p| p.into_inner());
                accepted
                    .keys()
                    .filter(|id| !confirmed.contains_key(*id))
                    .count()
            };
            while missing() > 0 && Instant::now() < wait {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
            let accepted = accepted_at.lock().unwrap_or_else(|p| p.into_inner());
            let confirmed = confirmed_at.lock().unwrap_or_else(|p| p.into_inner());
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            for (id, at) in accepted.iter() {
                if let Some(seen) = confirmed.get(id) {
                    let _ =
                        h.record((seen.saturating_duration_since(*at).as_micros() as u64).max(1));
                }
            }
            json!({
                "measured": h.len(),
                "p50": h.value_at_quantile(0.50) as f64 / 1000.0,
                "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
                "max": h.max() as f64 / 1000.0,
            })
        }
        None => Value::Null,
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let report = json!({
        "mode": if args.rate > 0 { "open loop" } else { "closed loop" },
        "rate": (args.rate > 0).then_some(args.rate),
        "concurrency": args.concurrency,
        "ordersAccepted": accepted,
        "ordersFailed": failed,
        "sagasFinished": done,
        "acceptedPerSec": (accepted as f64 / accept_time.as_secs_f64()).round(),
        "completedSagasPerSec": (done as f64 / total_time.as_secs_f64()).round(),
        "acceptLatencyMs": {
            "measuredFrom": if args.rate > 0 { "scheduled send time" } else { "send time" },
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "p999": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()),
        },
        "senderBehindScheduleMaxMs": behind.map(|b| b.as_secs_f64() * 1000.0),
        "perSaga": hosts::per_saga(&before, &after),
        "hostCpuSeconds": after.cpu_seconds.zip(before.cpu_seconds).map(|(a, b)| a - b),
        "hostRssBytes": { "before": before.rss_bytes, "after": after.rss_bytes },
        "seconds": { "accept": accept_time.as_secs_f64(), "total": total_time.as_secs_f64() },
        "acceptedToConfirmedOnTopicMs": on_topic,
    });
    tracing::info!(%report, "bench finished");
    let mut out = std::io::stdout();
    serde_json::to_writer_pretty(&mut out, &report)?;
    std::io::Write::write_all(&mut out, b"\n")?;
    if done < accepted {
        bail!(
            "only {done} of {accepted} sagas finished within {}s (counted from the /metrics \
             of the --url hosts: with several hosts sharing the work, list them all)",
            args.settle_secs
        );
    }
    Ok(())
}
