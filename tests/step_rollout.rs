//! A tenant's own step rolled out as a slot is: acme's `loyalty-points`
//! step with the same step in JavaScript (plugins/js-loyalty-points)
//! uploaded, shadowed, run as a canary, activated, rolled back, named by
//! digest in a manifest; its production calls recorded with the state they
//! read and replayed against candidates with `oms plugin replay`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_plugin_host::builtin;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::admin::{Admin, tenant_with};
use support::{
    ADMIN_TOKEN, Api, Db, Kind, Server, admin, loyalty_points as points, oms_cli, order, write_file,
};

/// Uploads a component as a new version of `slot` (`step:<name>` for a step).
async fn upload_to(
    srv: &Server,
    tenant: &str,
    key: &str,
    slot: &str,
    bytes: &[u8],
) -> (u16, Value) {
    support::upload_with(srv, tenant, key, slot, bytes.to_vec(), "application/wasm").await
}

use support::short_digest as short;

/// The loyalty step's entry in the order's history.
async fn step_entry(api: &Api, id: &str) -> Value {
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "step.succeeded" && e["data"]["step"] == "loyalty-points")
        .unwrap_or_else(|| panic!("no loyalty-points entry: {events}"))["data"]
        .clone()
}

async fn a_steps_versions_roll_out_as_a_slots_do(kind: Kind) {
    let js = support::scripted_component("js-loyalty-points");
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");
    let slot = "step:loyalty-points";
    let versions = api.get(&format!("/plugins/{slot}/versions")).await;
    assert_eq!(versions.status, 200, "{}", versions.body);
    assert_eq!(versions.body["activeVersion"], 1, "{}", versions.body);
    let builtin = versions.body["data"][0]["digest"].as_str().unwrap()[..12].to_string();

    // Checked against the saga-step world at upload; only the tenant's own steps.
    let (status, v) = upload_to(&srv, "acme", "acme-dev-key", slot, &js).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["slot"].as_str()),
        (Some(2), Some(slot))
    );
    let guardrail = support::artifact("guardrail_limits");
    let (status, v) = upload_to(&srv, "acme", "acme-dev-key", slot, &guardrail).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = upload_to(&srv, "acme", "acme-dev-key", "step:nope", &js).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("UNKNOWN_SLOT")),
        "{v}"
    );

    // In shadow: both versions run the step on the same state; only the
    // active one's points count, and the two agree.
    let base = format!("/tenants/acme/plugins/{slot}");
    let (status, v) = admin(
        &srv,
        &format!("{base}/shadow"),
        Some(json!({ "version": 2 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = api
        .place(&order("c-shadow", "WIDGET-1", 1, "tok_visa"))
        .await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(points(&api, "c-shadow").await, Some(19));
    assert_eq!(
        step_entry(&api, &id).await["pluginVersion"],
        builtin.as_str()
    );
    let (_, report) = admin(&srv, &format!("{base}/shadow"), None, ADMIN_TOKEN).await;
    assert_eq!(
        (report["calls"].as_i64(), report["agreements"].as_i64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let (status, v) = admin(
        &srv,
        &format!("{base}/shadow"),
        Some(json!({ "version": null })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // As a canary on every order, then aborted.
    let (status, v) = admin(
        &srv,
        &format!("{base}/canary"),
        Some(json!({ "version": 2, "percent": 100, "minCalls": 1000 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = api
        .place(&order("c-canary", "WIDGET-1", 2, "tok_visa"))
        .await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    let entry = step_entry(&api, &id).await;
    assert_eq!(
        (entry["pluginVersion"].as_str(), entry["canary"].as_bool()),
        (Some(short(&js).as_str()), Some(true)),
        "{entry}"
    );
    assert_eq!(points(&api, "c-canary").await, Some(39));
    let (_, report) = admin(&srv, &format!("{base}/canary"), None, ADMIN_TOKEN).await;
    assert_eq!(report["latest"]["calls"], 1, "{report}");
    let (status, v) = admin(&srv, &format!("{base}/canary/abort"), None, ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{v}");

    // Active: the JavaScript step awards the points and, on a cancel, its
    // compensation takes them back.
    let (status, v) = admin(
        &srv,
        &format!("{base}/activate"),
        Some(json!({ "version": 2 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!((status, v["activeVersion"].as_i64()), (200, Some(2)), "{v}");
    let id = api.place(&order("c-js", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(
        step_entry(&api, &id).await["pluginVersion"],
        short(&js).as_str()
    );
    assert_eq!(points(&api, "c-js").await, Some(19));
    let r = api.cancel(&id).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(api.settle(&id).await["status"], "CANCELLED");
    assert_eq!(points(&api, "c-js").await, Some(0));

    // Rolled back: the builtin again.
    let (status, v) = admin(&srv, &format!("{base}/rollback"), None, ADMIN_TOKEN).await;
    assert_eq!((status, v["activeVersion"].as_i64()), (200, Some(1)), "{v}");
    let id = api.place(&order("c-back", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(
        step_entry(&api, &id).await["pluginVersion"],
        builtin.as_str()
    );
    // The step's stats are its own versions' calls.
    let stats = api.get(&format!("/plugins/{slot}/stats")).await.body;
    let mut seen: Vec<&str> = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_str().unwrap())
        .collect();
    seen.sort();
    let js_version = short(&js);
    let mut both = vec![builtin.as_str(), js_version.as_str()];
    both.sort();
    assert_eq!(seen, both, "{stats}");

    // A step with allowed_origins reaches outside: it cannot be shadowed.
    let steps = json!({ "loyalty-points": {
        "component": "builtin:loyalty-points",
        "allowed_origins": ["http://127.0.0.1:9"],
    }});
    tenant_with(&srv, "acme-net", &[("steps", steps)]).await;
    let (status, v) = admin(
        &srv,
        &format!("/tenants/acme-net/plugins/{slot}/shadow"),
        Some(json!({ "version": 1 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("SHADOW_NOT_SUPPORTED")),
        "{v}"
    );

    // A manifest names an uploaded version by its digest; the tenant then runs it.
    let (client, _) = tenant_with(&srv, "acme-js", &[]).await;
    let admin_api = Admin::new(&srv.url);
    let key = admin_api.key("acme-js", &["plugins:write"]).await;
    let (status, v) = upload_to(&srv, "acme-js", &key, slot, &js).await;
    assert_eq!(status, 201, "{v}");
    let mut m = support::admin::manifest("acme-js");
    m["steps"]["loyalty-points"]["component"] =
        json!(format!("sha256:{}", v["digest"].as_str().unwrap()));
    let r = admin_api.put("/tenants/acme-js", &m, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = client
        .place(&order("c-digest", "WIDGET-1", 1, "tok_visa"))
        .await;
    assert_eq!(client.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(
        step_entry(&client, &id).await["pluginVersion"],
        short(&js).as_str()
    );
    // A digest that is no version of this tenant's step is refused, naming the field.
    m["steps"]["loyalty-points"]["component"] = json!(format!("sha256:{}", "0".repeat(64)));
    let r = admin_api.put("/tenants/acme-js", &m, &[]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .to_string()
            .contains("steps.loyalty-points.component"),
        "{}",
        r.body
    );
}

/// Every production call of a step whose manifest sets `record_calls` is
/// recorded with what it read of the step's state; `oms plugin replay` runs
/// each through a candidate with exactly that state. The component that
/// made them and its JavaScript port agree on every run and compensation;
/// another step is caught. A step that may call out cannot be recorded.
async fn a_steps_recorded_calls_replay_with_the_state_they_read(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");
    // 2 × 19.99 earns 39 points; then 19 more on top; that order cancelled.
    let first = api.place(&order("c-rec", "WIDGET-1", 2, "tok_visa")).await;
    assert_eq!(api.settle(&first).await["status"], "CONFIRMED");
    let second = api.place(&order("c-rec", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&second).await["status"], "CONFIRMED");
    let r = api.cancel(&second).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(api.settle(&second).await["status"], "CANCELLED");
    assert_eq!(points(&api, "c-rec").await, Some(39));

    // Recording is asynchronous; the calls land within moments.
    let slot = "step:loyalty-points";
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let r = api.get(&format!("/plugins/{slot}/calls")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["data"].as_array().unwrap().len() == 3 {
            break r.body;
        }
        assert!(Instant::now() < deadline, "calls not recorded: {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let calls = recorded["data"].as_array().unwrap();
    let input = |i: usize| &calls[i]["input"];
    assert_eq!(input(0)["slot"], "saga-step");
    assert_eq!(input(0)["export"], "run");
    assert_eq!(input(0)["context"]["step"], "loyalty-points");
    assert_eq!(input(0)["reads"], json!({ "customer:c-rec": null }));
    assert_eq!(input(1)["reads"], json!({ "customer:c-rec": "39" }));
    assert_eq!(
        input(2)["export"]["compensate"]["output"],
        r#"{"awarded":19,"balance":58}"#
    );
    assert_eq!(input(2)["reads"], json!({ "customer:c-rec": "58" }));
    assert_eq!(
        calls[1]["output"]["writes"]["customer:c-rec"],
        json!({ "add": 19 })
    );
    assert_eq!(
        calls[2]["output"]["writes"]["customer:c-rec"],
        json!({ "add": -19 })
    );
    assert!(
        calls
            .iter()
            .all(|c| c["verdict"].as_str().unwrap().starts_with("ok ")),
        "{recorded}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "calls.json", recorded.to_string().as_bytes());
    let replay = |component: &[u8], name: &str| {
        let wasm = write_file(dir.path(), name, component);
        oms_cli(&[
            "plugin",
            "replay",
            wasm.to_str().unwrap(),
            "--calls",
            file.to_str().unwrap(),
        ])
    };
    let rust = builtin::find("loyalty-points").unwrap().bytes.to_vec();
    let (ok, report, err) = replay(&rust, "rust.wasm");
    assert!(ok, "{report} {err}");
    assert_eq!(
        (report["same"].as_u64(), report["different"].as_u64()),
        (Some(3), Some(0)),
        "{report}"
    );
    let js = support::scripted_component("js-loyalty-points");
    let (ok, report, err) = replay(&js, "js.wasm");
    assert!(ok, "{report} {err}");
    assert_eq!(report["same"].as_u64(), Some(3), "{report}");
    // Another step answers otherwise: the replay fails, naming the orders.
    let (ok, report, _) = replay(&support::artifact("hostile_step"), "other.wasm");
    assert!(!ok, "{report}");
    assert_eq!(report["different"].as_u64(), Some(3), "{report}");
    assert_eq!(report["differences"][0]["orderId"], first.as_str());

    // A step that may call out is never recorded: its replay would call again.
    let mut m = support::admin::manifest("acme-rec");
    m["steps"]["loyalty-points"]["allowed_origins"] = json!(["http://127.0.0.1:9"]);
    let r = Admin::new(&srv.url).post("/tenants", &m).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .to_string()
            .contains("steps.loyalty-points.record_calls"),
        "{}",
        r.body
    );
}

on_both_backends!(
    a_steps_versions_roll_out_as_a_slots_do,
    a_steps_recorded_calls_replay_with_the_state_they_read
);
