//! `oms bench`: drives orders over HTTP at a running host, as fast as
//! possible or at a fixed rate, and reports accepted orders/s, completed
//! sagas/s and accept latency percentiles.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
}

type Seen = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

/// Watches `oms.order-events.v1` as an outside consumer would, noting when
/// each order's `order.confirmed` arrives. Returns once it is assigned
/// partitions, so no event of the run is missed.
fn watch_confirmations(
    brokers: &str,
    seen: Seen,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("oms-bench-{}", oms_clock::monotonic_ulid()),
        )
        // From the start: "latest" resolves lazily and can skip the first events.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Ask the broker to answer a fetch within 20 ms rather than librdkafka's
        // 500 ms default, so the figure is the pipeline's, not the poll interval's.
        .set("fetch.wait.max.ms", "20")
        .create()?;
    consumer.subscribe(&[oms_engine::TOPIC_ORDER_EVENTS])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map_or(0, |a| a.count()) == 0 {
        if Instant::now() > deadline {
            bail!("the bench's Kafka consumer got no partitions within 30 s");
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    Ok(std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let Some(Ok(event)) = m.payload().map(serde_json::from_slice::<Value>) else {
                continue;
            };
            if event["type"] == "order.confirmed"
                && let Some(id) = event["orderId"].as_str()
            {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_string(), Instant::now());
            }
        }
    }))
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

async fn finished_on_all(client: &reqwest::Client, urls: &[String]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for url in urls {
        sum += finished_sagas(client, url)
            .await
            .with_context(|| format!("reading /metrics of {url}"))?;
    }
    Ok(sum)
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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let before = finished_on_all(&client, &urls).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let accepted_at: Seen = Seen::default();
    let confirmed_at: Seen = Seen::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = match &args.kafka_brokers {
        Some(brokers) => Some(watch_confirmations(
            brokers,
            confirmed_at.clone(),
            stop.clone(),
        )?),
        None => None,
    };
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));

    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, urls, args) = (client.clone(), urls.clone(), args.clone());
        let (histogram, errors, next) = (histogram.clone(), errors.clone(), next.clone());
        let accepted_at = accepted_at.clone();
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
                let url = &urls[n as usize % urls.len()];
                let t = Instant::now();
                let response = client
                    .post(format!("{url}/api/v1/orders"))
                    .header("x-tenant-id", &args.tenant)
                    .bearer_auth(&args.key)
                    .json(&body)
                    .send()
                    .await;
                let us = t.elapsed().as_micros() as u64;
                let ok = match response {
                    Ok(r) if r.status().as_u16() == 201 => {
                        if args.kafka_brokers.is_some()
                            && let Ok(order) = r.json::<Value>().await
                            && let Some(id) = order["id"].as_str()
                        {
                            accepted_at
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(id.to_string(), t + Duration::from_micros(us));
                        }
                        true
                    }
                    _ => false,
                };
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
        done = finished_on_all(&client, &urls).await? - before;
        if done >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_time = started.elapsed();
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
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
