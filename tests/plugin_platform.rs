//! The plugin platform: tenants upload components, operators activate and
//! roll back versions while the host keeps serving, and every refusal comes
//! back with a precise code. On SQLite and PostgreSQL.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_plugin_host::builtin;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{ADMIN_TOKEN, Api, Db, Kind, Server, admin, order, upload};

async fn server(kind: Kind) -> (Server, Db) {
    let db = Db::new(kind).await;
    (Server::start(&db).await, db)
}

fn bytes(name: &str) -> Vec<u8> {
    builtin::find(name).unwrap().bytes.to_vec()
}

async fn validate_version(api: &Api, id: &str) -> String {
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    let validate = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["step"] == "validate")
        .unwrap()
        .clone();
    validate["data"]["pluginVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn upload_activate_and_roll_back(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let strict = bytes("guardrail-strict");
    let digest = hex::encode(Sha256::digest(&strict));

    let (status, v) = upload(
        &srv,
        "acme",
        "guardrail",
        strict.clone(),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (
            v["version"].as_i64(),
            v["status"].as_str(),
            v["slot"].as_str()
        ),
        (Some(2), Some("staged"), Some("guardrail"))
    );
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["sizeBytes"], strict.len());
    // The same bytes again: the same version.
    let (status, again) = upload(
        &srv,
        "acme",
        "guardrail",
        strict.clone(),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["version"], 2);

    let acme = srv.api("acme");
    let list = acme.get("/plugins/guardrail/versions").await.body;
    assert_eq!(list["activeVersion"], 1);
    assert_eq!(list["data"][0]["uploadedBy"], "manifest");
    assert_eq!(list["data"][1]["uploadedBy"], "tenant:acme");

    // The manifest's guardrail allows 20 of a line.
    let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");

    let (status, act) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/activate",
        Some(json!({ "version": 2 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{act}");
    assert_eq!(
        (
            act["activeVersion"].as_i64(),
            act["previousVersion"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    let done = acme.settle(&id).await;
    assert_eq!(done["status"], "REJECTED", "{done}");
    assert!(
        done["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("strict limit")
    );
    assert_eq!(validate_version(&acme, &id).await, digest[..12]);
    let mut po_box = order("c", "WIDGET-1", 1, "tok_visa");
    po_box["shippingAddress"]["line1"] = json!("P.O. Box 12");
    let id = acme.place(&po_box).await;
    assert_eq!(
        acme.settle(&id).await["violations"][0]["code"],
        "PO_BOX_NOT_ALLOWED"
    );

    // Another tenant's slot is its own.
    let globex = srv.api("globex");
    let id = globex.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    assert_eq!(globex.settle(&id).await["status"], "CONFIRMED");

    // One call rolls back; another rolls forward again.
    let (status, back) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/rollback",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["activeVersion"], 1);
    let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");
    let (_, forward) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/rollback",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(forward["activeVersion"], 2);

    let (_, audit) = admin(&srv, "/tenants/acme/audit", None, ADMIN_TOKEN).await;
    let guardrail: Vec<(String, i64, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["slot"] == "guardrail")
        .map(|a| {
            (
                a["action"].as_str().unwrap().into(),
                a["version"].as_i64().unwrap(),
                a["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        guardrail,
        vec![
            ("upload".into(), 1, "manifest".into()),
            ("activate".into(), 1, "manifest".into()),
            ("upload".into(), 2, "tenant:acme".into()),
            ("activate".into(), 2, "bootstrap-admin".into()),
            ("rollback".into(), 1, "bootstrap-admin".into()),
            ("rollback".into(), 2, "bootstrap-admin".into()),
        ]
    );
}

async fn refusals_are_precise(kind: Kind) {
    let (srv, _db) = server(kind).await;
    for (body, slot, code) in [
        (b"\0asm\x01\0\0\0".to_vec(), "guardrail", "NOT_A_COMPONENT"),
        (b"hello, world".to_vec(), "guardrail", "NOT_A_COMPONENT"),
        (bytes("fraud-rules"), "guardrail", "WORLD_MISMATCH"),
        (bytes("payment-sandbox"), "guardrail", "FORBIDDEN_IMPORT"),
        (
            bytes("guardrail-limits"),
            "compensation-policy",
            "WORLD_MISMATCH",
        ),
    ] {
        let (status, v) = upload(&srv, "acme", slot, body, "application/wasm").await;
        assert_eq!(status, 422, "{code}: {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, v) = upload(
        &srv,
        "acme",
        "guardrail",
        bytes("guardrail-strict"),
        "application/octet-stream",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    let (status, v) = upload(
        &srv,
        "acme",
        "shipping",
        bytes("guardrail-strict"),
        "application/wasm",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("UNKNOWN_SLOT"))
    );
    // A tenant's own steps are set in its manifest, not uploaded (yet).
    let (status, v) = upload(
        &srv,
        "acme",
        "saga-step",
        bytes("loyalty-points"),
        "application/wasm",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("UNKNOWN_SLOT"))
    );
    // Nothing refused was stored.
    let list = srv
        .api("acme")
        .get("/plugins/guardrail/versions")
        .await
        .body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let (status, v) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/versions",
        None,
        "wrong",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, _) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/activate",
        Some(json!({ "version": 9 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 404);
    let (status, v) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/rollback",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("NOTHING_TO_ROLL_BACK"))
    );
}

async fn hot_swap_under_load_fails_no_request(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let strict = bytes("guardrail-strict");
    let strict_version = hex::encode(Sha256::digest(&strict))[..12].to_string();
    let manifest_version = hex::encode(Sha256::digest(bytes("guardrail-limits")))[..12].to_string();
    assert_eq!(
        upload(&srv, "acme", "guardrail", strict, "application/wasm")
            .await
            .0,
        201
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (api, stop) = (srv.api("acme"), stop.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = api
                        .post(
                            "/orders",
                            &order(&format!("c{c}-{n}"), "WIDGET-1", 1, "tok_visa"),
                        )
                        .await;
                    assert_eq!(r.status, 201, "a request failed during a swap: {}", r.body);
                    ids.push(r.body["id"].as_str().unwrap().to_string());
                    n += 1;
                }
                ids
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut version = 2;
    while Instant::now() < deadline {
        let (status, _) = admin(
            &srv,
            "/tenants/acme/plugins/guardrail/activate",
            Some(json!({ "version": version })),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 200);
        version = 3 - version;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    assert!(ids.len() > 50, "too little load: {}", ids.len());
    let api = srv.api("acme");
    let mut used = HashSet::new();
    for id in &ids {
        let done = api.settle(id).await;
        assert_eq!(done["status"], "CONFIRMED", "{done}");
        used.insert(validate_version(&api, id).await);
    }
    assert_eq!(
        used,
        HashSet::from([strict_version, manifest_version]),
        "both versions served orders"
    );
}

on_both_backends!(
    upload_activate_and_roll_back,
    refusals_are_precise,
    hot_swap_under_load_fails_no_request
);

/// `oms plugin test` runs a component locally under production limits.
#[test]
fn plugin_test_command_reports_verdicts_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let order_file = dir.path().join("order.json");
    std::fs::write(
        &order_file,
        order("c", "WIDGET-1", 120, "tok_visa").to_string(),
    )
    .unwrap();
    let run = |name: &str, bytes: &[u8], slot: &str| {
        let file = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
            .args(["plugin", "test"])
            .arg(&file)
            .args(["--slot", slot, "--order"])
            .arg(&order_file)
            .args(["--repeat", "10"])
            .output()
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    let (ok, v) = run("limits", &bytes("guardrail-limits"), "guardrail");
    assert!(ok, "{v}");
    assert_eq!(
        v["verdict"]["violations"][0]["code"],
        "MAX_QUANTITY_EXCEEDED"
    );
    assert_eq!(v["calls"], 10);
    assert!(v["fuelUsed"].as_u64().unwrap() > 0);
    let (ok, v) = run("fraud", &bytes("fraud-rules"), "fraud-check");
    assert!(ok, "{v}");
    assert_eq!(v["verdict"]["decision"], "approve");
    let (ok, v) = run("wrong", &bytes("fraud-rules"), "guardrail");
    assert!(!ok);
    assert_eq!(
        (v["accepted"].as_bool(), v["code"].as_str()),
        (Some(false), Some("WORLD_MISMATCH"))
    );

    // A saga step: its writes, the state they leave, and its compensation.
    let file = dir.path().join("points.wasm");
    std::fs::write(&file, bytes("loyalty-points")).unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"customer:c": "5"}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
        .args(["plugin", "test"])
        .arg(&file)
        .args(["--slot", "saga-step", "--order"])
        .arg(&order_file)
        .arg("--state")
        .arg(&state)
        .arg("--compensate")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    // 120 × 19.99: 2,398 points.
    assert_eq!(v["run"]["output"], r#"{"awarded":2398,"balance":2403}"#);
    assert_eq!(v["run"]["writes"]["customer:c"], json!({ "add": 2398 }));
    assert_eq!(v["stateAfterRun"]["customer:c"], "2403");
    assert_eq!(
        v["compensate"]["writes"]["customer:c"],
        json!({ "add": -2398 })
    );
    assert_eq!(v["stateAfterCompensate"]["customer:c"], "5");
}

/// `oms plugin new` gives a crate that builds to a component the host accepts
/// for its slot, for every slot.
#[test]
fn scaffolds_build_to_accepted_components() {
    let dir = tempfile::tempdir().unwrap();
    // Shared with earlier runs when CI keeps a target directory.
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("scaffold-test"))
        .unwrap_or_else(|_| dir.path().join("target"));
    let host = oms_plugin_host::PluginHost::new().unwrap();
    let every = oms_plugin_host::Slot::ALL
        .into_iter()
        .chain([oms_plugin_host::Slot::SagaStep]);
    for slot in every {
        let name = format!("t-{slot}");
        let crate_dir = dir.path().join(&name);
        let made = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
            .args(["plugin", "new", slot.as_str(), "--name", &name, "--dir"])
            .arg(&crate_dir)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let built =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--target",
                    "wasm32-wasip2",
                    "--target-dir",
                ])
                .arg(&target)
                .current_dir(&crate_dir)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .unwrap();
        assert!(
            built.status.success(),
            "{slot}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&wasm).unwrap();
        assert!(
            host.load(slot, &bytes).is_ok(),
            "{slot}: {:?}",
            host.load(slot, &bytes).err()
        );
        // And it is refused for the wrong slot.
        let other = oms_plugin_host::Slot::ALL
            .into_iter()
            .find(|s| *s != slot)
            .unwrap();
        assert!(host.load(other, &bytes).is_err());
    }
}

/// `oms plugin new SLOT --lang js|python` gives a module whose own `build`
/// script makes a component the host accepts for its slot (and refuses for
/// another), for every slot; the tools are the ones the platform's own
/// JavaScript and Python plugins are built with.
#[test]
fn javascript_and_python_scaffolds_build_to_accepted_components() {
    support::scripted_component("js-guardrail");
    support::scripted_component("python-guardrail");
    let (componentize_js, componentize_py) = support::guest_tools();
    let dir = tempfile::tempdir().unwrap();
    let host = oms_plugin_host::PluginHost::new().unwrap();
    let every = oms_plugin_host::Slot::ALL
        .into_iter()
        .chain([oms_plugin_host::Slot::SagaStep]);
    for slot in every {
        for lang in ["js", "python"] {
            let name = format!("t-{lang}-{slot}");
            let module = dir.path().join(&name);
            let made = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
                .args([
                    "plugin",
                    "new",
                    slot.as_str(),
                    "--lang",
                    lang,
                    "--name",
                    &name,
                    "--dir",
                ])
                .arg(&module)
                .output()
                .unwrap();
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            let built = std::process::Command::new(module.join("build"))
                .env("COMPONENTIZE_JS", &componentize_js)
                .env("COMPONENTIZE_PY", &componentize_py)
                .output()
                .unwrap();
            assert!(
                built.status.success(),
                "{lang} {slot}: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let bytes = std::fs::read(module.join(format!("{name}.wasm"))).unwrap();
            if let Err(e) = host.load(slot, &bytes) {
                panic!("{lang} {slot}: {e}");
            }
            let other = oms_plugin_host::Slot::ALL
                .into_iter()
                .find(|s| *s != slot)
                .unwrap();
            assert!(host.load(other, &bytes).is_err(), "{lang} {slot}");
        }
    }
}

async fn a_shadow_version_is_compared_never_acted_on(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let (status, v) = upload(
        &srv,
        "acme",
        "guardrail",
        bytes("guardrail-strict"),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, set) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/shadow",
        Some(json!({ "version": 2 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        (set["activeVersion"].as_i64(), set["shadowVersion"].as_i64()),
        (Some(1), Some(2))
    );

    let acme = srv.api("acme");
    // The strict shadow would reject 20 of a line; the active version decides.
    for quantity in [20, 20, 20, 1, 1] {
        let id = acme
            .place(&order("c", "WIDGET-1", quantity, "tok_visa"))
            .await;
        assert_eq!(acme.settle(&id).await["status"], "CONFIRMED");
    }
    let (status, report) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/shadow",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["calls"].as_i64(),
            report["agreements"].as_i64(),
            report["divergences"].as_i64()
        ),
        (Some(5), Some(2), Some(3)),
        "{report}"
    );
    assert_eq!(report["recentDivergences"][0]["active"], "ok");
    assert_eq!(
        report["recentDivergences"][0]["shadow"],
        "MAX_QUANTITY_EXCEEDED"
    );

    // Cleared: orders are no longer compared.
    let (status, cleared) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/shadow",
        Some(json!({ "version": null })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!((status, cleared["shadowVersion"].is_null()), (200, true));
    let id = acme.place(&order("c", "WIDGET-1", 20, "tok_visa")).await;
    acme.settle(&id).await;
    let (_, report) = admin(
        &srv,
        "/tenants/acme/plugins/guardrail/shadow",
        None,
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(report["calls"], 0);

    // Payment calls have side effects: no shadow for them.
    let (status, v) = admin(
        &srv,
        "/tenants/acme/plugins/payment-provider/shadow",
        Some(json!({ "version": 1 })),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("SHADOW_NOT_SUPPORTED"))
    );
}

on_both_backends!(a_shadow_version_is_compared_never_acted_on);

/// The operator CLI drives the same API: list, activate, roll back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_lists_activates_and_rolls_back() {
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start(&db).await;
    assert_eq!(
        upload(
            &srv,
            "acme",
            "guardrail",
            bytes("guardrail-strict"),
            "application/wasm"
        )
        .await
        .0,
        201
    );
    let cli = |args: &[&str], token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
            .args(["plugin", "--url", &srv.url, "--token", token])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
        )
    };
    let target = ["--tenant", "acme", "--slot", "guardrail"];
    let (ok, list) = cli(&[&["list"][..], &target[..]].concat(), ADMIN_TOKEN);
    assert!(ok, "{list}");
    assert_eq!(
        (
            list["activeVersion"].as_i64(),
            list["data"].as_array().unwrap().len()
        ),
        (Some(1), 2)
    );
    let (ok, act) = cli(
        &[&["activate"][..], &target[..], &["--version", "2"][..]].concat(),
        ADMIN_TOKEN,
    );
    assert!(ok, "{act}");
    assert_eq!(act["activeVersion"], 2);
    let (ok, back) = cli(&[&["rollback"][..], &target[..]].concat(), ADMIN_TOKEN);
    assert!(ok, "{back}");
    assert_eq!(back["activeVersion"], 1);
    // A wrong token fails, with the host's error shown.
    let (ok, denied) = cli(&[&["list"][..], &target[..]].concat(), "wrong");
    assert!(!ok);
    assert_eq!(denied["error"]["code"], "UNAUTHORIZED");
}
