//! What an on-call engineer reads: `/metrics` with labels, in a format
//! Prometheus' own `promtool check metrics` accepts, after real orders ran
//! through the binary, on both databases.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::{Db, Kind, Server, order};

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Every `oms_…` metric name in `source`.
fn metric_names(source: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while let Some(at) = source[i..].find("oms_") {
        let start = i + at;
        let end = (start..bytes.len())
            .find(|&j| !(bytes[j].is_ascii_lowercase() || bytes[j] == b'_'))
            .unwrap_or(bytes.len());
        names.insert(source[start..end].to_string());
        i = end;
    }
    names
}

/// `promtool check metrics` on the exposition: format and naming lint.
async fn promtool_accepts(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: tests/run installs Debian's prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn metrics_carry_tenant_route_step_slot_and_outcome(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");
    let paid = api.place(&order("c-1", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&paid).await["status"], "CONFIRMED");
    let declined = api
        .place(&order("c-2", "WIDGET-1", 1, "tok_chargeDeclined"))
        .await;
    assert_eq!(api.settle(&declined).await["status"], "CANCELLED");

    let text = reqwest::get(format!("{}/metrics", srv.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_accepts(&text).await;
    let count = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    // Two orders placed: requests by route template, not by raw path.
    assert_eq!(
        count(
            r#"oms_http_request_duration_seconds_count{route="/api/v1/orders",method="POST",status="201"}"#
        ),
        2.0
    );
    assert!(!text.contains(&format!("route=\"/api/v1/orders/{paid}\"")));
    assert!(
        count(
            r#"oms_http_request_duration_seconds_count{route="/api/v1/orders/{id}",method="GET",status="200"}"#
        ) >= 2.0
    );
    // One saga completed, one cancelled, each timed placed to finished.
    assert_eq!(
        count(r#"oms_saga_duration_seconds_count{tenant="acme",outcome="COMPLETED"}"#),
        1.0
    );
    assert_eq!(
        count(r#"oms_saga_duration_seconds_count{tenant="acme",outcome="CANCELLED"}"#),
        1.0
    );
    // Steps by name and how they came out: both authorized once, one declined.
    assert_eq!(
        count(
            r#"oms_saga_step_attempts_total{tenant="acme",step="reserve-inventory",outcome="step.succeeded"}"#
        ),
        2.0
    );
    assert_eq!(
        count(
            r#"oms_saga_step_attempts_total{tenant="acme",step="authorize-payment",outcome="step.failed"}"#
        ),
        1.0
    );
    assert!(
        count(
            r#"oms_saga_step_duration_seconds_count{tenant="acme",step="release-inventory",outcome="compensation.succeeded"}"#
        ) >= 1.0
    );
    // Plugin calls by slot and version; the provider's requests by outcome.
    assert!(text.contains(
        r#"oms_plugin_call_duration_seconds_count{tenant="acme",slot="guardrail",version=""#
    ));
    assert!(
        text.contains(r#"oms_plugin_call_fuel_bucket{tenant="acme",slot="fraud-check",version=""#)
    );
    assert!(
        text.contains(r#"oms_plugin_calls_total{tenant="acme",slot="payment-provider",version=""#)
    );
    assert!(
        count(r#"oms_provider_request_duration_seconds_count{tenant="acme",outcome="ok"}"#) >= 2.0
    );
    // A step's log line carries its tenant, order and trace (JSON logs: the
    // test hosts' stderr is not a terminal).
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let failed: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "saga step failed")
        .unwrap_or_else(|| panic!("no line for the declined payment:\n{log}"));
    let span = &failed["span"];
    assert_eq!(span["tenant"], "acme", "{failed}");
    assert_eq!(span["order_id"], declined.as_str(), "{failed}");
    assert_eq!(span["step"], "authorize-payment", "{failed}");
    assert_eq!(
        span["trace_id"].as_str().map(str::len),
        Some(32),
        "{failed}"
    );
    assert!(
        failed["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{failed}"
    );

    // What deploy/ alerts on and charts is what a host exposes.
    for file in ["deploy/prometheus/rules.yml", "deploy/grafana/oms.json"] {
        let source = std::fs::read_to_string(support::workspace().join(file)).unwrap();
        // Kafka mode's own are checked in traces_cross_hosts_through_kafka.
        for name in metric_names(&source)
            .into_iter()
            .filter(|n| !n.starts_with("oms_consumer_"))
        {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{file} names {name}, which /metrics does not have"
            );
        }
    }
    // Gauges read at scrape time: nothing is stuck, and the relay catches up.
    assert_eq!(count(r#"oms_sagas_stuck{tenant="acme"}"#), 0.0);
    assert!(count("oms_outbox_oldest_due_age_seconds ") >= 0.0);
    let url = format!("{}/metrics", srv.url);
    support::admin::until("the outbox relay caught up", || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        sample(&text, "oms_outbox_oldest_due_age_seconds ") == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_sqlite() {
    metrics_carry_tenant_route_step_slot_and_outcome(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_postgres() {
    metrics_carry_tenant_route_step_slot_and_outcome(Kind::Postgres).await;
}

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
