//! Hostile plugins, built from plugins/hostile-*: each is refused at upload
//! or contained at run time by its slot's failure policy, while the host
//! keeps serving and another tenant's orders go on. On both databases.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::Instant;
use support::{ADMIN_TOKEN, Db, Kind, Server, order};

async fn upload(srv: &Server, body: Vec<u8>) -> (u16, Value) {
    support::upload(srv, "acme", "guardrail", body, "application/wasm").await
}

async fn hostile_plugins_are_refused_or_contained(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;

    // Refused at upload, naming the import.
    for (bytes, import) in [
        (support::artifact("hostile_clock"), "wasi:clocks"),
        (support::artifact("hostile_fs"), "wasi:filesystem"),
        (support::artifact("hostile_net"), "wasi:sockets"),
    ] {
        let (status, v) = upload(&srv, bytes.to_vec()).await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["code"], "FORBIDDEN_IMPORT");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(import),
            "{v}"
        );
    }
    let mut huge = vec![0u8; oms_plugin_host::MAX_COMPONENT_BYTES + 1];
    huge[..8].copy_from_slice(b"\0asm\x0d\0\x01\0");
    let (status, v) = upload(&srv, huge).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("TOO_LARGE")),
        "{v}"
    );

    // Accepted (it is a well-formed guardrail), then contained when it misbehaves.
    let (status, v) = upload(&srv, support::artifact("hostile_guardrail")).await;
    assert_eq!(status, 201, "{v}");
    let activated = reqwest::Client::new()
        .post(format!(
            "{}/admin/v1/tenants/acme/plugins/guardrail/activate",
            srv.url
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "version": v["version"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), 200);

    let globex = srv.api("globex");
    let before = support::saga_times(&globex, 20).await;

    let acme = srv.api("acme");
    let attacks = [
        ("loop", "PLUGIN_OUT_OF_FUEL"),
        ("alloc", "PLUGIN_TRAP"),
        ("recurse", "PLUGIN_TRAP"),
        ("panic", "PLUGIN_TRAP"),
        ("output", "PLUGIN_OUTPUT_TOO_LARGE"),
        ("empty", "PLUGIN_OUTPUT_TOO_LARGE"),
        ("many", "PLUGIN_INVALID_ANSWER"),
    ];
    // A log flood is cut off at the budget; the call itself still answers.
    let flood = acme.place(&order("log", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(acme.settle(&flood).await["status"], "CONFIRMED");
    // Attack from several clients while globex keeps trading.
    let attackers: Vec<_> = (0..3)
        .map(|round| {
            let acme = acme.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for (customer, _) in attacks {
                    let id = acme
                        .place(&order(customer, "WIDGET-1", 1, "tok_visa"))
                        .await;
                    outcomes.push((round, customer, id));
                }
                outcomes
            })
        })
        .collect();
    let during = support::saga_times(&globex, 20).await;
    let mut placed = Vec::new();
    for a in attackers {
        placed.extend(a.await.unwrap());
    }
    for (_, customer, id) in &placed {
        let done = acme.settle(id).await;
        assert_eq!(done["status"], "REJECTED", "{customer}: {done}");
        assert_eq!(
            done["violations"][0]["code"], "GUARDRAIL_UNAVAILABLE",
            "{customer}"
        );
        let events = acme.get(&format!("/orders/{id}/events")).await.body;
        let rejected = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "step.rejected")
            .unwrap()
            .clone();
        let expected = attacks.iter().find(|(c, _)| c == customer).unwrap().1;
        assert_eq!(
            rejected["data"]["pluginError"]["code"], expected,
            "{customer}: {rejected}"
        );
        // Nothing the plugin answered is carried into the order or its history.
        let order = acme.get(&format!("/orders/{id}")).await.body.to_string();
        assert!(
            order.len() < 8 << 10,
            "{customer}: order is {} bytes",
            order.len()
        );
        assert!(
            events.to_string().len() < 32 << 10,
            "{customer}: history is {} bytes",
            events.to_string().len()
        );
    }
    // A well-behaved order through the same component still goes through.
    let id = acme
        .place(&order("regular", "WIDGET-1", 1, "tok_visa"))
        .await;
    assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");

    // The tenant sees what happened, per version, and the plugin's own output.
    let hostile_version = v["digest"].as_str().unwrap()[..12].to_string();
    let stats = acme.get("/plugins/guardrail/stats").await.body;
    let mine = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["version"] == hostile_version.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["calls"], 23, "{mine}");
    assert_eq!(
        (
            mine["outOfFuel"].as_u64(),
            mine["outputTooLarge"].as_u64(),
            mine["invalidAnswers"].as_u64(),
            mine["traps"].as_u64()
        ),
        (Some(3), Some(6), Some(3), Some(9)),
        "{mine}"
    );
    assert_eq!(mine["succeeded"], 2);
    assert!(mine["latencyUs"]["p99"].as_u64().unwrap() > 0);
    let logs = acme.get("/plugins/guardrail/logs?limit=500").await.body;
    let lines: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("panics on purpose")),
        "no panic message among {} lines",
        lines.len()
    );
    assert!(lines.len() <= 500);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("more lines from this call were dropped"))
    );
    assert!(
        lines.iter().any(|l| l.contains("log cut off:")),
        "the flood's cut-off is not reported"
    );
    // Another tenant's plugins are not in it.
    assert!(
        globex.get("/plugins/guardrail/logs").await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        reqwest::get(format!("{}/healthz", srv.url))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(srv.metric("plugin_failures_total").await >= 21);
    // Bounded, not measured: every attack above ran at once, yet the host
    // stayed far below what one unbounded answer or allocation would take.
    let peak = srv.peak_rss_mib();
    eprintln!("host peak resident memory after the attacks: {peak} MiB");
    assert!(peak < 1024, "host peaked at {peak} MiB");
    let p = |v: &[f64], q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    // Recorded, not asserted: timing belongs to benchmarks, not tests.
    eprintln!(
        "globex saga ms before attack p50 {:.1} p95 {:.1}; during attack p50 {:.1} p95 {:.1}",
        p(&before, 0.5),
        p(&before, 0.95),
        p(&during, 0.5),
        p(&during, 0.95)
    );
}

on_both_backends!(hostile_plugins_are_refused_or_contained);

async fn versions(srv: &Server) -> usize {
    let v = srv
        .api("acme")
        .get("/plugins/guardrail/versions")
        .await
        .body;
    v["data"].as_array().map_or(0, Vec::len)
}

/// What could starve other tenants is refused at upload with a precise code,
/// before or while compiling, and nothing of it is stored: components that
/// would take more than their share of the instance pool, one that cannot
/// instantiate under the slot's memory limit, one function too big to
/// compile cheaply, a compilation over its CPU budget, and uploads past the
/// tenant's quota.
async fn uploads_that_could_starve_others_are_refused(kind: Kind) {
    use support::forge::{component, module};
    let db = Db::new(kind).await;
    let srv = Server::start_with(
        &db,
        vec!["--sandbox-psp-listen".into(), "127.0.0.1:0".into()],
    )
    .await;
    let before = versions(&srv).await;
    let memoryless = module(None, 1, &[]);
    let refused = [
        (component(&module(Some(1), 0, &[]), 5), "TOO_MANY_MEMORIES"),
        (component(&memoryless, 65), "TOO_MANY_INSTANCES"),
        // 31 MiB of memory from the start, over the guardrail's 16 MiB.
        (
            component(&module(Some(500), 0, &[]), 1),
            "CANNOT_INSTANTIATE",
        ),
        // Over the pool's 64 MiB per memory.
        (
            component(&module(Some(1600), 0, &[]), 1),
            "CANNOT_INSTANTIATE",
        ),
        (
            component(&module(None, 1, &vec![0x01; 700 << 10]), 1),
            "COMPILE_BUDGET_EXCEEDED",
        ),
    ];
    for (bytes, code) in refused {
        let (status, v) = upload(&srv, bytes).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (422, Some(code)),
            "{v}"
        );
    }
    assert_eq!(versions(&srv).await, before, "a refused upload was stored");
    // The host still serves.
    let globex = srv.api("globex");
    let id = globex
        .place(&order("calm", "SPROCKET-9", 1, "tok_visa"))
        .await;
    assert_eq!(globex.settle(&id).await["status"], "CONFIRMED");
}

/// A compilation that runs past its CPU budget is stopped and refused; the
/// quota on stored versions holds.
async fn compile_budget_and_quota_hold(kind: Kind) {
    use support::forge::{busy_body, component, module};
    let db = Db::new(kind).await;
    // Acme registers one version per slot and one for its loyalty step at
    // start (5); one more fits.
    let srv = Server::start_with_env(
        &db,
        &[
            ("OMS_COMPILE_CPU_SECONDS", "1"),
            ("OMS_PLUGIN_QUOTA_VERSIONS", "6"),
        ],
    )
    .await;
    let before = versions(&srv).await;
    // Sixteen functions of 100,000 additions: seconds of compiler CPU.
    let heavy = component(&module(None, 16, &busy_body(100_000)), 1);
    let (status, v) = upload(&srv, heavy).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("COMPILE_BUDGET_EXCEEDED")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("CPU"),
        "{v}"
    );
    assert_eq!(versions(&srv).await, before);
    // The compiler ran in its own process: none of its memory is the host's.
    let peak = srv.peak_rss_mib();
    eprintln!("host peak resident memory after the refused compile: {peak} MiB");
    assert!(peak < 1024, "host peaked at {peak} MiB");

    let strict = oms_plugin_host::builtin::find("guardrail-strict")
        .unwrap()
        .bytes;
    let (status, v) = upload(&srv, strict.to_vec()).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = upload(&srv, support::artifact("hostile_guardrail")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("PLUGIN_QUOTA_EXCEEDED")),
        "{v}"
    );
    // The same bytes again are the version already kept, quota or not.
    let (status, _) = upload(&srv, strict.to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(versions(&srv).await, before + 1);
}

on_both_backends!(
    uploads_that_could_starve_others_are_refused,
    compile_budget_and_quota_hold
);

/// One tenant's slow payment provider holds only that tenant's share of the
/// plugin host and the saga runner. Acme floods the host with orders whose
/// provider takes 4 s to answer (far more than acme's share of calls); once
/// its first round of payment calls is in flight, globex places orders, and
/// every one of them is confirmed before any of acme's payments has even
/// come back. Without per-tenant shares, globex's calls queued behind acme's
/// until a whole round of them ended.
async fn a_tenant_with_slow_payments_slows_only_itself(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    slow_tenant_floods(&srv, 160).await;
}

on_both_backends!(a_tenant_with_slow_payments_slows_only_itself);

/// The same with Kafka and two hosts, each holding one of the two
/// partitions: every order is placed through the first host, so the second
/// runs its half from messages its consumer fetched. Acme's half there is
/// more messages than the runner has slots; globex's messages behind them
/// in the partition are still fetched and run at once. (When the consumer
/// took a slot per message before knowing its tenant, acme's waiting
/// messages held them all, and globex waited for acme's payments.)
///
/// A load test: its own flood (640 orders, two hosts, a broker) can slow
/// globex past the 4 s margin on a 2-core machine, so it is not in the
/// default run (`cargo nextest run --release --workspace --run-ignored all
/// over_kafka` runs it; it fails on the code before the consumer fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test with a timing margin; run with --run-ignored all"]
async fn over_kafka_a_tenant_with_slow_payments_slows_only_itself() {
    let broker = support::broker::Broker::start();
    let psp = support::load::Psp::start().await;
    let db = Db::new(Kind::Postgres).await;
    let front = support::broker::kafka_host(&db, &broker, &psp.url, 2).await;
    let back = support::broker::kafka_host(&db, &broker, &psp.url, 2).await;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while front.metric("consumer_partitions").await != 1
        || back.metric("consumer_partitions").await != 1
    {
        assert!(
            Instant::now() < deadline,
            "the two hosts never split the partitions"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    slow_tenant_floods(&front, 640).await;
    assert!(back.metric("commands_consumed_total").await > 256);
}

/// Acme places `n` orders whose provider takes 4 s; once a full share of
/// its payment calls is in flight, globex places orders, and every one is
/// confirmed before any of those acme payments has come back.
async fn slow_tenant_floods(srv: &Server, n: usize) {
    let acme = srv.api("acme");
    let globex = srv.api("globex");
    let placing: Vec<_> = (0..n)
        .map(|i| {
            let acme = acme.clone();
            tokio::spawn(async move {
                acme.place(&order(&format!("slow-{i}"), "WIDGET-1", 1, "tok_slow"))
                    .await
            })
        })
        .collect();
    let mut flood = Vec::new();
    for p in placing {
        flood.push(p.await.unwrap());
    }
    // Acme's orders waiting on their provider: reserved, not yet authorized.
    let waiting = |orders: Vec<Value>| -> Vec<String> {
        orders
            .into_iter()
            .filter(|o| {
                let done = o["saga"]["completed"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                done.contains(&json!("reserve-inventory"))
                    && !done.contains(&json!("authorize-payment"))
            })
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Wait until a full share of acme's payment calls is in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let in_flight = loop {
        let now = waiting(support::load::all_orders(&acme).await);
        if now.len() >= 32 {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acme's flood never reached payment"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for i in 0..5 {
        let id = globex
            .place(&order(&format!("calm-{i}"), "SPROCKET-9", 1, "tok_visa"))
            .await;
        assert_eq!(globex.settle(&id).await["status"], "CONFIRMED");
    }
    // Globex is done; none of those acme payments has come back yet.
    let still = waiting(support::load::all_orders(&acme).await);
    let answered: Vec<&String> = in_flight.iter().filter(|id| !still.contains(id)).collect();
    assert!(
        answered.is_empty(),
        "globex finished only after {} of acme's 4 s payments came back: it waited on acme",
        answered.len()
    );
    // Acme's orders all finish, slowly, none lost.
    for id in &flood {
        assert_eq!(acme.settle(id).await["status"], "CONFIRMED");
    }
}

/// A fraud check answering outside the WIT's contract (a score over 1000,
/// more reasons than allowed) is refused like a trap: the slot's failure
/// policy sends the order to review (which acme accepts), and the history
/// records the refusal and the policy's score, never the plugin's value.
async fn fraud_answers_outside_the_contract_are_refused(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    support::upload_and_activate(&srv, "acme", "fraud-check", "hostile_fraud").await;
    let acme = srv.api("acme");
    for customer in ["score", "reasons", "fine"] {
        let id = acme
            .place(&order(customer, "WIDGET-1", 1, "tok_visa"))
            .await;
        assert_eq!(acme.settle(&id).await["status"], "CONFIRMED", "{customer}");
        let events = acme.get(&format!("/orders/{id}/events")).await.body;
        let assessed = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["data"]["fraud"].is_object())
            .unwrap_or_else(|| panic!("{customer}: no assessment in {events}"))
            .clone();
        let fraud = &assessed["data"]["fraud"];
        if customer == "fine" {
            assert_eq!(fraud["score"], 0, "{assessed}");
            continue;
        }
        assert_eq!(
            assessed["data"]["pluginError"]["code"], "PLUGIN_INVALID_ANSWER",
            "{customer}: {assessed}"
        );
        assert_eq!(fraud["decision"], "review", "{customer}: {assessed}");
        assert!(fraud["score"].as_u64().unwrap() <= 1000, "{assessed}");
        assert_eq!(fraud["reasons"].as_array().unwrap().len(), 1, "{assessed}");
    }
}

on_both_backends!(fraud_answers_outside_the_contract_are_refused);
