//! Rolling tenant code out safely: canaries that decide a share of orders
//! and roll themselves back, production calls recorded and replayed
//! against a candidate, and a guest written in Python running beside the
//! Rust ones. On SQLite and PostgreSQL where a database is involved.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_engine::tenants::canary_bucket;
use oms_plugin_host::builtin;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{ADMIN_TOKEN, Api, Db, Kind, Server, admin, order, upload};

fn bytes(name: &str) -> Vec<u8> {
    match name {
        "hostile-guardrail" => support::artifact("hostile_guardrail"),
        _ => builtin::find(name).unwrap().bytes.to_vec(),
    }
}

fn short(bytes: &[u8]) -> String {
    support::short_digest(bytes)
}

async fn step_detail(api: &Api, id: &str, step: &str) -> Value {
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["step"] == step)
        .unwrap()["data"]
        .clone()
}

/// Waits until the slot has no canary (rolled back), or fails after 10 s.
async fn canary_gone(srv: &Server, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, report) = admin(srv, path, None, ADMIN_TOKEN).await;
        assert_eq!(status, 200, "{report}");
        if report["canary"].is_null() {
            return report;
        }
        assert!(Instant::now() < deadline, "canary still running: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audit(srv: &Server, tenant: &str) -> Vec<Value> {
    let (status, log) = admin(srv, &format!("/tenants/{tenant}/audit"), None, ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    log["data"].as_array().unwrap().clone()
}

/// A canary decides exactly the orders whose id hashes into its share, every
/// other order stays with the active version, and promoting it makes it the
/// active version.
async fn a_canary_decides_its_share_and_is_promoted(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let strict = bytes("guardrail-strict");
    assert_eq!(
        upload(
            &srv,
            "acme",
            "guardrail",
            strict.clone(),
            "application/wasm"
        )
        .await
        .0,
        201
    );
    let path = "/tenants/acme/plugins/guardrail/canary";
    // Thresholds out of reach: this canary is judged by the operator.
    let (status, started) = admin(
        &srv,
        path,
        Some(json!({ "version": 2, "percent": 50, "minCalls": 1000 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (
            started["canary"]["version"].as_i64(),
            started["canary"]["percent"].as_i64()
        ),
        (Some(2), Some(50))
    );

    let acme = srv.api("acme");
    let (strict_version, limits_version) = (short(&strict), short(&bytes("guardrail-limits")));
    let mut in_canary = 0;
    // 20 of a line: the strict candidate refuses it, the active version allows it.
    for _ in 0..30 {
        let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
        let done = acme.settle(&id).await;
        let detail = step_detail(&acme, &id, "validate").await;
        if canary_bucket(&id) < 50 {
            in_canary += 1;
            assert_eq!(done["status"], "REJECTED", "{id}: {done}");
            assert_eq!(detail["pluginVersion"], strict_version.as_str());
            assert_eq!(detail["canary"], true);
        } else {
            assert_eq!(done["status"], "CONFIRMED", "{id}: {done}");
            assert_eq!(detail["pluginVersion"], limits_version.as_str());
            assert!(detail.get("canary").is_none());
        }
    }
    assert!(
        (1..30).contains(&in_canary),
        "{in_canary} of 30 in a 50% canary"
    );

    let (_, report) = admin(&srv, path, None, ADMIN_TOKEN).await;
    assert_eq!(report["latest"]["calls"], in_canary, "{report}");
    assert_eq!(report["latest"]["failures"], 0);
    // Every canary order was also run on the active version, which disagreed.
    assert_eq!(report["latest"]["compared"], in_canary);
    assert_eq!(report["latest"]["divergences"], in_canary);
    assert!(report["rollbackReason"].is_null());

    let (status, promoted) = admin(&srv, &format!("{path}/promote"), None, ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["activeVersion"], 2);
    assert!(promoted["canary"].is_null());
    let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    assert_eq!(acme.settle(&id).await["status"], "REJECTED");
    let actions: Vec<String> = audit(&srv, "acme")
        .await
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.ends_with(&["canary".to_string(), "canary_promote".to_string()]),
        "{actions:?}"
    );
    // Nothing to promote now.
    let (status, none) = admin(&srv, &format!("{path}/promote"), None, ADMIN_TOKEN).await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (404, Some("NO_CANARY"))
    );
}

on_both_backends!(a_canary_decides_its_share_and_is_promoted);

/// A canary that traps, or that disagrees with the active version too
/// often, is rolled back by the host without an operator, with the reason
/// in the audit log; the active version then decides every order.
async fn a_failing_or_diverging_canary_rolls_itself_back(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let acme = srv.api("acme");
    let path = "/tenants/acme/plugins/guardrail/canary";
    for name in ["hostile-guardrail", "guardrail-strict"] {
        let (status, v) = upload(&srv, "acme", "guardrail", bytes(name), "application/wasm").await;
        assert_eq!(status, 201, "{v}");
    }

    // Version 2 traps on these orders: over 100‰ failures after 3 calls.
    let (status, v) = admin(
        &srv,
        path,
        Some(json!({ "version": 2, "percent": 100, "maxFailurePermille": 100, "minCalls": 3 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..3 {
        let id = acme.place(&order("panic", "WIDGET-1", 1, "tok_visa")).await;
        // The canary's cost: its own orders fail closed.
        assert_eq!(acme.settle(&id).await["status"], "REJECTED");
    }
    canary_gone(&srv, path).await;
    let rollback = audit(&srv, "acme").await.last().unwrap().clone();
    assert_eq!(
        (
            rollback["action"].as_str(),
            rollback["actor"].as_str(),
            rollback["version"].as_i64()
        ),
        (Some("canary_rollback"), Some("canary-guard"), Some(2))
    );
    assert!(
        rollback["detail"]
            .as_str()
            .unwrap()
            .contains("failure rate"),
        "{rollback}"
    );
    let id = acme.place(&order("panic", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(
        step_detail(&acme, &id, "validate").await["pluginVersion"],
        short(&bytes("guardrail-limits")).as_str()
    );

    // Version 3 never fails but disagrees on every order of 20.
    let (status, v) = admin(
        &srv,
        path,
        Some(json!({ "version": 3, "percent": 100, "maxDivergencePermille": 200, "minCalls": 4 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..4 {
        let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
        acme.settle(&id).await;
    }
    canary_gone(&srv, path).await;
    let rollback = audit(&srv, "acme").await.last().unwrap().clone();
    assert_eq!(rollback["action"], "canary_rollback");
    assert_eq!(rollback["version"], 3);
    assert!(
        rollback["detail"].as_str().unwrap().contains("divergence"),
        "{rollback}"
    );
    assert_eq!(srv.metric("canary_rollbacks_total").await, 2);
    // The active version was never changed.
    let (_, versions) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/versions",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(versions["activeVersion"], 1);

    // Bad settings are refused, every field at once.
    let (status, bad) = admin(
        &srv,
        path,
        Some(json!({ "percent": 0, "maxFailurePermille": 2000 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("VALIDATION_FAILED"))
    );
    let fields: Vec<&str> = bad["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/version", "/percent", "/maxFailurePermille"]);
}

on_both_backends!(a_failing_or_diverging_canary_rolls_itself_back);

use support::{oms_cli as oms, write_file as write};

/// Builds the Python guardrail with the project's script (componentize-py
/// from PyPI, cached under the target directory).
fn python_guardrail() -> Vec<u8> {
    support::scripted_component("python-guardrail")
}

fn js_guardrail() -> Vec<u8> {
    support::scripted_component("js-guardrail")
}

/// Production calls are recorded with their input, version and verdict;
/// `oms plugin replay` runs them through a candidate and reports where its
/// verdicts differ, failing when any do.
async fn recorded_calls_replay_against_a_candidate(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let acme = srv.api("acme");
    let quantities = [1, 20, 5, 500];
    for q in quantities {
        let id = acme.place(&order("c", "WIDGET-1", q, "tok_visa")).await;
        acme.settle(&id).await;
    }
    // Recording is asynchronous; the calls land within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let r = acme.get("/plugins/guardrail/calls").await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["data"].as_array().unwrap().len() == quantities.len() {
            break r.body;
        }
        assert!(Instant::now() < deadline, "calls not recorded: {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recorded["recording"], true);
    let first = &recorded["data"][0];
    assert_eq!(first["version"], short(&bytes("guardrail-limits")).as_str());
    assert_eq!(first["input"]["slot"], "guardrail");
    assert_eq!(first["input"]["order"]["items"][0]["quantity"], 1);
    assert!(first["fuelUsed"].as_u64().unwrap() > 0);
    let verdicts: Vec<&str> = recorded["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["ok", "ok", "ok", "MAX_QUANTITY_EXCEEDED"]);
    // Fraud-check calls are recorded too (the order of 500 never got that
    // far); payment calls never are.
    assert_eq!(
        acme.get("/plugins/fraud-check/calls").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        quantities.len() - 1
    );
    assert_eq!(
        acme.get("/plugins/payment-provider/calls").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let dir = tempfile::tempdir().unwrap();
    let calls = write(dir.path(), "calls.json", recorded.to_string().as_bytes());
    let calls = calls.to_str().unwrap();
    // The recorded version replays identically.
    let same = write(dir.path(), "limits.wasm", &bytes("guardrail-limits"));
    let (ok, report, err) = oms(&["plugin", "replay", same.to_str().unwrap(), "--calls", calls]);
    assert!(ok, "{report} {err}");
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(4), Some(0))
    );
    // The strict candidate refuses the order of 20 that was allowed.
    let strict = write(dir.path(), "strict.wasm", &bytes("guardrail-strict"));
    let (ok, report, _) = oms(&[
        "plugin",
        "replay",
        strict.to_str().unwrap(),
        "--calls",
        calls,
    ]);
    assert!(!ok, "differences must fail the replay");
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(report["differences"][0]["recorded"], "ok");
    assert_eq!(
        report["differences"][0]["replayed"],
        "MAX_QUANTITY_EXCEEDED"
    );
    // The same, fetched from the host with the tenant's key.
    let (ok, report, _) = oms(&[
        "plugin",
        "replay",
        strict.to_str().unwrap(),
        "--url",
        &srv.url,
        "--tenant",
        "acme",
        "--key",
        "acme-dev-key",
        "--slot",
        "guardrail",
    ]);
    assert!(!ok);
    assert_eq!(
        (report["calls"].as_u64(), report["different"].as_u64()),
        (Some(4), Some(1))
    );
    // A guardrail component cannot replay fraud-check calls: refused as at upload.
    let (ok, report, _) = oms(&[
        "plugin",
        "replay",
        same.to_str().unwrap(),
        "--url",
        &srv.url,
        "--tenant",
        "acme",
        "--key",
        "acme-dev-key",
        "--slot",
        "fraud-check",
    ]);
    assert!(!ok);
    assert_eq!(
        (report["accepted"].as_bool(), report["code"].as_str()),
        (Some(false), Some("WORLD_MISMATCH"))
    );
}

on_both_backends!(recorded_calls_replay_against_a_candidate);

/// A guardrail written in Python (componentize-py) is built by the project's
/// script, uploaded, activated and decides orders like the Rust one, and
/// replays the Rust version's recorded calls with the same verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_guardrail_runs_like_a_rust_one() {
    let python = python_guardrail();
    assert!(
        python.len() > 10 << 20,
        "a Python component carries its interpreter"
    );
    let db = Db::new(Kind::Postgres).await;
    let srv = Server::start(&db).await;
    let acme = srv.api("acme");
    for q in [3, 500] {
        let id = acme.place(&order("c", "WIDGET-1", q, "tok_visa")).await;
        acme.settle(&id).await;
    }

    let (status, v) = upload(
        &srv,
        "acme",
        "guardrail",
        python.clone(),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["sizeBytes"].as_u64(), Some(python.len() as u64));
    let (status, v) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/activate",
        Some(json!({ "version": v["version"] })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let ok = acme.place(&order("c", "WIDGET-1", 3, "tok_visa")).await;
    assert_eq!(acme.settle(&ok).await["status"], "CONFIRMED");
    assert_eq!(
        step_detail(&acme, &ok, "validate").await["pluginVersion"],
        short(&python).as_str()
    );
    let refused = acme.place(&order("c", "WIDGET-1", 500, "tok_visa")).await;
    let done = acme.settle(&refused).await;
    assert_eq!(done["status"], "REJECTED", "{done}");
    assert_eq!(done["violations"][0]["code"], "MAX_QUANTITY_EXCEEDED");
    assert_eq!(done["violations"][0]["field"], "/items/0/quantity");

    // Restarted, the host loads the Python version from the native code stored
    // at upload instead of compiling it again.
    let mut srv = srv;
    srv.kill();
    srv.spawn().await;
    let acme = srv.api("acme");
    let again = acme.place(&order("c", "WIDGET-1", 3, "tok_visa")).await;
    assert_eq!(acme.settle(&again).await["status"], "CONFIRMED");
    assert_eq!(
        step_detail(&acme, &again, "validate").await["pluginVersion"],
        short(&python).as_str()
    );
    assert!(srv.metric("plugins_loaded_precompiled_total").await >= 1);

    // Every recorded call, the Rust version's and the Python one's, replays
    // on the Python component with the verdict recorded.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "python.wasm", &python);
    let (ok, report, err) = oms(&[
        "plugin",
        "replay",
        file.to_str().unwrap(),
        "--url",
        &srv.url,
        "--tenant",
        "acme",
        "--key",
        "acme-dev-key",
        "--slot",
        "guardrail",
        "--memory-mb",
        "64",
    ]);
    assert!(ok, "{report} {err}");
    assert_eq!(
        (report["calls"].as_u64(), report["different"].as_u64()),
        (Some(5), Some(0))
    );
}

/// A guardrail written in JavaScript (plugins/js-guardrail, built with
/// componentize-js from the npm registry) is uploaded, activated and decides
/// orders as the Rust one does, within the slot's default limits; `oms
/// plugin replay` finds its verdicts the same as the Rust version's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_guardrail_runs_like_a_rust_one() {
    let js = js_guardrail();
    assert!(
        js.len() > 5 << 20,
        "a JavaScript component carries its engine"
    );
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start(&db).await;
    let acme = srv.api("acme");
    for q in [3, 500] {
        let id = acme.place(&order("c", "WIDGET-1", q, "tok_visa")).await;
        acme.settle(&id).await;
    }
    let (status, v) = upload(&srv, "acme", "guardrail", js.clone(), "application/wasm").await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/activate",
        Some(json!({ "version": v["version"] })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let ok = acme.place(&order("c", "WIDGET-1", 3, "tok_visa")).await;
    assert_eq!(acme.settle(&ok).await["status"], "CONFIRMED");
    assert_eq!(
        step_detail(&acme, &ok, "validate").await["pluginVersion"],
        short(&js).as_str()
    );
    let refused = acme.place(&order("c", "WIDGET-1", 500, "tok_visa")).await;
    let done = acme.settle(&refused).await;
    assert_eq!(done["status"], "REJECTED", "{done}");
    assert_eq!(done["violations"][0]["code"], "MAX_QUANTITY_EXCEEDED");
    assert_eq!(done["violations"][0]["field"], "/items/0/quantity");

    // The Rust version's recorded calls and the JavaScript one's agree
    // (recording is asynchronous: wait for all four).
    let deadline = Instant::now() + Duration::from_secs(60);
    while acme.get("/plugins/guardrail/calls").await.body["data"]
        .as_array()
        .map_or(0, Vec::len)
        < 4
    {
        assert!(Instant::now() < deadline, "calls not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "js.wasm", &js);
    let (ok, report, err) = oms(&[
        "plugin",
        "replay",
        file.to_str().unwrap(),
        "--url",
        &srv.url,
        "--tenant",
        "acme",
        "--key",
        "acme-dev-key",
        "--slot",
        "guardrail",
    ]);
    assert!(ok, "{report} {err}");
    assert_eq!(
        (report["calls"].as_u64(), report["different"].as_u64()),
        (Some(4), Some(0)),
        "{report}"
    );
}
