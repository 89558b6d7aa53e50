//! What an on-call engineer reads: `/metrics` with labels, in a format
//! Prometheus' own `promtool check metrics` accepts, after real orders ran
//! through the binary, on both databases.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::{Db, Kind, Server, metric_sample as sample, order};

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

    // The saga's own counters move just after its last commit, which the
    // API may show first: wait for the scrape to have both finished.
    let url = format!("{}/metrics", srv.url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let counted = |outcome: &str| {
            let series =
                format!(r#"oms_saga_duration_seconds_count{{tenant="acme",outcome="{outcome}"}}"#);
            sample(&text, &series).is_some()
        };
        if counted("COMPLETED") && counted("CANCELLED") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both sagas finished, but /metrics never counted them:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
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

/// Plugin call stats and logs are the platform's, not a host's: calls made
/// on one host (a misbehaving guardrail: one call logs, one panics) are
/// read through a second host on the same database, merged per version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_stats_and_logs_are_read_across_hosts() {
    let psp = support::load::Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let a = Server::start_with_psp(&db, &psp.url).await;
    let b = Server::start_with_psp(&db, &psp.url).await;
    let (status, v) = support::upload(
        &a,
        "acme",
        "guardrail",
        support::artifact("hostile_guardrail"),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let admin = support::admin::Admin::new(&a.url);
    let activated = admin
        .post(
            "/tenants/acme/plugins/guardrail/activate",
            &serde_json::json!({ "version": v["version"] }),
        )
        .await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    let version = v["digest"].as_str().unwrap()[..12].to_string();

    let on_a = a.api("acme");
    for customer in ["log", "panic"] {
        let id = on_a
            .place(&order(customer, "WIDGET-1", 1, "tok_visa"))
            .await;
        on_a.settle(&id).await;
    }

    // Host b ran none of these calls; it reads host a's from the database.
    let on_b = b.api("acme");
    support::admin::until("host a's plugin calls are read on host b", || async {
        let stats = on_b.get("/plugins/guardrail/stats").await.body;
        stats["data"].as_array().unwrap().iter().any(|s| {
            s["version"] == version.as_str()
                && s["calls"].as_u64() >= Some(2)
                && s["traps"].as_u64() >= Some(1)
                && s["latencyUs"]["p99"].as_u64().is_some_and(|p| p > 0)
        })
    })
    .await;
    support::admin::until("host a's plugin logs are read on host b", || async {
        let logs = on_b.get("/plugins/guardrail/logs?limit=500").await.body;
        logs["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"].as_str().unwrap().contains("panics on purpose"))
    })
    .await;
    // And operators see the same through either host.
    let via_b = support::admin::Admin::new(&b.url)
        .get("/tenants/acme/plugins/guardrail/stats")
        .await;
    assert!(
        via_b.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["version"] == version.as_str()),
        "{}",
        via_b.body
    );
    // Another tenant's plugins are not in it.
    assert!(
        b.api("globex").get("/plugins/guardrail/logs").await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
