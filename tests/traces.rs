//! Traces against a real OTLP/HTTP receiver (`tests/telemetry/otlp_receiver.py`,
//! protobuf decoded with PyPI's opentelemetry-proto): one connected trace
//! per order from the client to the provider, on both databases and across
//! two hosts sharing saga work through Kafka.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::{Db, Kind, Server, metric_sample as sample, order};

/// A real OTLP/HTTP receiver (`tests/telemetry/otlp_receiver.py`), and the
/// spans it has received so far.
struct Receiver {
    child: tokio::process::Child,
    url: String,
    spans: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let spans = dir.path().join("spans.jsonl");
        let child = tokio::process::Command::new("python3")
            .arg(support::workspace().join("tests/telemetry/otlp_receiver.py"))
            .arg(&ready)
            .arg(&spans)
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with opentelemetry-proto: tests/run installs it");
        let path = ready.clone();
        support::admin::until("the OTLP receiver listens", || {
            let path = path.clone();
            async move { path.exists() }
        })
        .await;
        let url = std::fs::read_to_string(&ready).unwrap();
        Self {
            child,
            url,
            spans,
            _dir: dir,
        }
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn named<'a>(spans: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// One order, one trace: the client's `traceparent` is continued by the
/// HTTP span; every saga step is a span of that trace (run later, by the
/// runner, from the context stored with the order); each plugin call is a
/// child of its step; the provider request is a child of the payment
/// plugin's call, and the sandbox provider received that span's context.
async fn an_order_is_one_trace_from_the_client_to_the_provider(kind: Kind) {
    let receiver = Receiver::start().await;
    let db = Db::new(kind).await;
    let srv = Server::start_with_env(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let trace = format!("{:032x}", rand_u128());
    let client_span = "b7ad6b7169203331";
    let placed = reqwest::Client::new()
        .post(format!("{}/api/v1/orders", srv.url))
        .header("x-tenant-id", "acme")
        .bearer_auth("acme-dev-key")
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .json(&order("c-1", "WIDGET-1", 1, "tok_visa"))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let id = placed.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let api = srv.api("acme");
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");

    let steps = [
        "validate",
        "fraud-check",
        "reserve-inventory",
        "authorize-payment",
        "capture-payment",
        "request-fulfilment",
    ];
    support::admin::until("every step's span reached the receiver", || async {
        let spans = receiver.spans();
        steps.iter().all(|step| {
            spans
                .iter()
                .any(|s| s["name"] == format!("step {step}") && s["traceId"] == trace)
        })
    })
    .await;
    let spans: Vec<serde_json::Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["traceId"] == trace)
        .collect();
    let by_id = |id: &serde_json::Value| spans.iter().find(|s| &s["spanId"] == id);

    // The HTTP span continues the client's.
    let request = spans
        .iter()
        .find(|s| s["parentSpanId"] == client_span)
        .unwrap_or_else(|| panic!("no span continues the client's: {spans:#?}"));
    assert_eq!(request["name"], "request");
    assert_eq!(request["attributes"]["tenant"], "acme");
    // Each step, once, with its tenant, order and outcome.
    for step in steps {
        let mine = named(&spans, &format!("step {step}"));
        assert_eq!(mine.len(), 1, "{step}: {mine:#?}");
        let a = &mine[0]["attributes"];
        assert_eq!(
            (a["tenant"].as_str(), a["order_id"].as_str()),
            (Some("acme"), Some(id.as_str()))
        );
        assert_eq!(a["outcome"], "step.succeeded", "{step}");
    }
    // Plugin calls are children of the steps that made them.
    for (slot, step) in [
        ("guardrail", "validate"),
        ("fraud-check", "fraud-check"),
        ("payment-provider", "authorize-payment"),
        ("payment-provider", "capture-payment"),
    ] {
        let calls = named(&spans, &format!("plugin {slot}"));
        assert!(
            calls
                .iter()
                .any(|c| by_id(&c["parentSpanId"])
                    .is_some_and(|p| p["name"] == format!("step {step}"))),
            "no {slot} call under step {step}: {calls:#?}"
        );
        for c in &calls {
            assert_eq!(c["attributes"]["outcome"], "ok");
            assert!(
                c["attributes"]["fuel"].as_i64().is_some_and(|f| f > 0),
                "{c:#}"
            );
            assert!(c["attributes"]["version"].is_string());
        }
    }
    // Provider requests are children of the payment plugin's calls, and the
    // provider received each one's context.
    let requests = named(&spans, "provider request");
    assert!(requests.len() >= 2, "{requests:#?}");
    for r in &requests {
        assert_eq!(
            by_id(&r["parentSpanId"]).map(|p| p["name"].clone()),
            Some("plugin payment-provider".into())
        );
    }
    let ledger = srv.ledger().await;
    let sent: Vec<&str> = ledger
        .iter()
        .filter(|e| e["order_id"] == id.as_str())
        .map(|e| {
            e["traceparent"]
                .as_str()
                .expect("the provider got a traceparent")
        })
        .collect();
    assert_eq!(sent.len(), 2, "authorize and capture: {ledger:#?}");
    for tp in sent {
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[1], trace);
        assert!(
            requests.iter().any(|r| r["spanId"] == parts[2]),
            "{tp} is not a provider request span"
        );
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    ((a as u128) << 64) | h.finish() as u128 | 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_sqlite() {
    an_order_is_one_trace_from_the_client_to_the_provider(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_postgres() {
    an_order_is_one_trace_from_the_client_to_the_provider(Kind::Postgres).await;
}

/// Follows `span`'s parents within `spans` up to the client's span.
fn reaches(spans: &[serde_json::Value], span: &serde_json::Value, client: &str) -> bool {
    let mut at = span;
    for _ in 0..spans.len() + 1 {
        if at["parentSpanId"] == client {
            return true;
        }
        match spans.iter().find(|s| s["spanId"] == at["parentSpanId"]) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

/// Two hosts sharing saga work through Kafka: an order placed on one whose
/// steps run on the other is still one connected trace, through the
/// outbox publish and the consume spans whose contexts the messages carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_cross_hosts_through_kafka() {
    let receiver = Receiver::start().await;
    let broker = support::broker::Broker::start();
    let psp = support::load::Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let host = |name: &'static str| {
        let args = vec![
            "--sandbox-psp-url".to_string(),
            psp.url.clone(),
            "--kafka-brokers".into(),
            broker.addr(),
            "--kafka-partitions".into(),
            "6".into(),
        ];
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_SERVICE_NAME", name.into()),
        ];
        let db = &db;
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Server::start_with_all(db, args, &env).await
        }
    };
    let a = host("oms-a").await;
    let b = host("oms-b").await;
    for h in [&a, &b] {
        let url = format!("{}/metrics", h.url);
        support::admin::until("both hosts own command partitions", || async {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            sample(&text, "oms_consumer_partitions ").is_some_and(|n| n > 0.0)
        })
        .await;
        // The consumer's lag, from librdkafka's statistics (every 5 s).
        support::admin::until("the consumer lag is reported", || async {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            sample(&text, "oms_consumer_lag ").is_some_and(|n| n >= 0.0)
        })
        .await;
    }

    // Orders placed on host a until one's steps ran on host b.
    let client = "b7ad6b7169203331";
    let http = reqwest::Client::new();
    let api = a.api("acme");
    let deadline = std::time::Instant::now() + support::admin::DEADLINE * 2;
    let crossed = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no order's steps ran on host b"
        );
        let trace = format!("{:032x}", rand_u128());
        let placed: serde_json::Value = http
            .post(format!("{}/api/v1/orders", a.url))
            .header("x-tenant-id", "acme")
            .bearer_auth("acme-dev-key")
            .header("traceparent", format!("00-{trace}-{client}-01"))
            .json(&order("c-1", "WIDGET-1", 1, "tok_visa"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = placed["id"].as_str().unwrap().to_string();
        assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
        // The whole trace, every span connected to the client's.
        let mine = || -> Vec<serde_json::Value> {
            receiver
                .spans()
                .into_iter()
                .filter(|s| s["traceId"] == trace)
                .collect()
        };
        support::admin::until("the order's trace arrived whole", || async {
            let spans = mine();
            named(&spans, "step request-fulfilment").len() == 1
                && spans.iter().all(|s| reaches(&spans, s, client))
        })
        .await;
        let spans = mine();
        if named(&spans, "step request-fulfilment")[0]["service"] == "oms-b" {
            break spans;
        }
    };
    let services: std::collections::BTreeSet<&str> = crossed
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(services, ["oms-a", "oms-b"].into(), "{crossed:#?}");
    let request = crossed.iter().find(|s| s["name"] == "request").unwrap();
    assert_eq!(request["service"], "oms-a");
    let consumed = named(&crossed, "consume saga command");
    assert!(
        consumed.iter().any(|c| c["service"] == "oms-b"
            && crossed
                .iter()
                .find(|p| p["spanId"] == c["parentSpanId"])
                .is_some_and(|p| p["name"] == "publish oms.saga-commands.v1")),
        "host b's consume span continues a publish span: {crossed:#?}"
    );
}
