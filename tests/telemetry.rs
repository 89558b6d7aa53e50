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
    // What deploy/ alerts on and charts is what a host exposes.
    for file in ["deploy/prometheus/rules.yml", "deploy/grafana/oms.json"] {
        let source = std::fs::read_to_string(support::workspace().join(file)).unwrap();
        for name in metric_names(&source) {
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
async fn sqlite() {
    metrics_carry_tenant_route_step_slot_and_outcome(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    metrics_carry_tenant_route_step_slot_and_outcome(Kind::Postgres).await;
}
