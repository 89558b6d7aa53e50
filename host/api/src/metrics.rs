//! `/metrics`: the platform's counters, the labelled metrics the crates
//! record through the `metrics` facade (rendered by the Prometheus
//! exporter the binary installs), and gauges read at scrape time.

use super::AppState;
use axum::Extension;
use axum::extract::State;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// The exporter's handle, if one is installed.
#[derive(Clone)]
pub struct Exporter(pub Option<PrometheusHandle>);

/// Latency buckets, seconds: from a fast plugin call to a slow provider.
const SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Saga durations, seconds: placed to finished, retries and backoff included.
const SAGA_SECONDS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
];
/// Wasm fuel per plugin call.
const FUEL: [f64; 10] = [1e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7, 1e8, 1e9];

/// Installs the process's metrics recorder (histograms with the buckets
/// above) and returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("oms_saga_duration_seconds".into()),
            &SAGA_SECONDS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full("oms_plugin_call_fuel".into()), &FUEL)?
        .install_recorder()?;
    describe();
    metrics_process::Collector::default().describe();
    Ok(handle)
}

/// Every labelled metric, with its unit and help (Prometheus' `# HELP`).
fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_histogram!(
        "oms_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP requests by route template, method and status."
    );
    describe_histogram!(
        "oms_saga_duration_seconds",
        Unit::Seconds,
        "Sagas from the order placed to finished (or stuck), by tenant and outcome."
    );
    describe_histogram!(
        "oms_saga_step_duration_seconds",
        Unit::Seconds,
        "Saga step and compensation attempts, by tenant, step and outcome."
    );
    describe_counter!(
        "oms_saga_step_attempts_total",
        "Saga step and compensation attempts, by tenant, step and outcome."
    );
    describe_histogram!(
        "oms_plugin_call_duration_seconds",
        Unit::Seconds,
        "Plugin calls by tenant, slot and version."
    );
    describe_histogram!(
        "oms_plugin_call_fuel",
        "Wasm fuel a plugin call used, by tenant, slot and version."
    );
    describe_counter!(
        "oms_plugin_calls_total",
        "Plugin calls by tenant, slot, version and outcome (ok or the failure's code)."
    );
    metrics::describe_gauge!(
        "oms_plugin_call_threads",
        "Threads plugin calls that cannot run inline run on (as many as calls ever ran at once)."
    );
    describe_counter!(
        "oms_plugin_thread_start_failures_total",
        "Times the system refused the plugin call pool a new thread."
    );
    metrics::describe_gauge!(
        "oms_consumer_lag",
        "Saga command messages in this host's partitions not yet consumed (Kafka mode)."
    );
    describe_histogram!(
        "oms_provider_request_duration_seconds",
        Unit::Seconds,
        "Requests to payment providers (outbound-http), by tenant and outcome."
    );
}

/// The HTTP request histogram, recorded by the edge middleware: by route
/// template (never the raw path, whose ids would make a series per order),
/// method and status.
pub(crate) fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    metrics::histogram!(
        "oms_http_request_duration_seconds",
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string(),
    )
    .record(seconds);
}

pub async fn render(State(p): State<AppState>, Extension(exporter): Extension<Exporter>) -> String {
    let mut out = p.metrics.render();
    if let Some(handle) = &exporter.0 {
        // The process's CPU seconds, resident memory, threads and fds, read
        // from /proc now: what a saga costs the host, seen from outside.
        metrics_process::Collector::default().collect();
        out.push_str(&handle.render());
    }
    let db = oms_store::db_counts();
    let checkpoints = oms_store::checkpoint_counts();
    for (name, help, value) in [
        (
            "oms_db_statements_total",
            "SQL statements this process sent its database (BEGIN and COMMIT included).",
            db.statements,
        ),
        (
            "oms_db_transactions_total",
            "Database transactions this process committed or tried (a write outside a transaction counts as one).",
            db.transactions,
        ),
        (
            "oms_db_batches_total",
            "Group-commit batches: saga transitions and new orders written together in one transaction.",
            db.batches,
        ),
        (
            "oms_db_batched_writes_total",
            "Saga transitions and new orders written through group commit.",
            db.batched_writes,
        ),
        (
            "oms_db_careful_batches_total",
            "Group-commit batches written again member by member, each under its own savepoint, after one member failed (a stale version, no stock, an error).",
            db.careful_batches,
        ),
        (
            "oms_db_lingered_batches_total",
            "Group-commit batches the SQLite writer held back a moment (OMS_WRITER_LINGER_US) to gather more writes, because writes were arriving faster than it committed them.",
            db.lingered_batches,
        ),
        (
            "oms_db_checkpoints_total",
            "SQLite write-ahead log checkpoints run by the host's checkpoint thread (after the writer's commits, not inside them).",
            checkpoints.runs,
        ),
        (
            "oms_db_checkpoint_failures_total",
            "SQLite checkpoints that failed (each logged; the next commit tries again, and the write connection checkpoints itself past a long log).",
            checkpoints.failures,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP oms_db_wal_pages SQLite's write-ahead log in pages when it was last checkpointed.\n# TYPE oms_db_wal_pages gauge\noms_db_wal_pages {}\n",
        checkpoints.log_pages
    ));
    out.push_str(&format!(
        "# HELP oms_db_writes_in_flight Saga transitions and new orders queued for or being written by the group-commit writer.\n# TYPE oms_db_writes_in_flight gauge\noms_db_writes_in_flight {}\n",
        db.writes_in_flight
    ));
    let now = oms_clock::now_ms();
    match p.store.oldest_due_unpublished(now).await {
        Ok(oldest) => {
            let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            out.push_str(&format!(
                "# HELP oms_outbox_oldest_due_age_seconds How long the longest-due outbox message has waited for the transport.\n# TYPE oms_outbox_oldest_due_age_seconds gauge\noms_outbox_oldest_due_age_seconds {age}\n"
            ));
        }
        Err(e) => tracing::warn!(error = %e, "reading the outbox age for /metrics failed"),
    }
    // A gauge read at scrape time: how far the transport is behind.
    if let Ok(n) = p.store.unpublished_count().await {
        out.push_str(&format!(
            "# HELP oms_outbox_unpublished Outbox messages not yet taken by the transport.\n# TYPE oms_outbox_unpublished gauge\noms_outbox_unpublished {n}\n"
        ));
    }
    // Sagas waiting for an operator, per tenant (every tenant listed, so a
    // tenant's line going back to 0 is seen).
    match p.store.count_sagas_by_tenant("STUCK").await {
        Ok(counts) => {
            out.push_str("# HELP oms_sagas_stuck Sagas stuck, waiting for an operator.\n# TYPE oms_sagas_stuck gauge\n");
            for tenant in p.tenants.all() {
                let tenant = tenant.id.as_str();
                let n = counts
                    .iter()
                    .find(|(t, _)| t == tenant)
                    .map_or(0, |(_, n)| *n);
                out.push_str(&format!("oms_sagas_stuck{{tenant=\"{tenant}\"}} {n}\n"));
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting stuck sagas for /metrics failed"),
    }
    if let oms_engine::transport::Transport::Kafka(k) = &p.transport {
        out.push_str(&format!(
            "# HELP oms_consumer_partitions Saga command partitions this host holds.\n# TYPE oms_consumer_partitions gauge\noms_consumer_partitions {}\n",
            k.owned_count()
        ));
    }
    out
}
