//! Plugins and components in tests: the compiled corpus, JavaScript and
//! Python guests built by their scripts, uploads, the `oms` CLI, digests,
//! and acme's loyalty points.

use super::{Api, Server, order, workspace};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// A component the plugin host's build compiled from `plugins/<name>`
/// (underscored), e.g. the hostile corpus.
pub fn artifact(name: &str) -> Vec<u8> {
    let path =
        std::path::Path::new(oms_plugin_host::builtin::ARTIFACTS_DIR).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JavaScript or Python plugin built by its `plugins/<dir>/build` script
/// (componentize-js from the npm registry, componentize-py from PyPI,
/// installed once under the target directory; rebuilt only when its inputs
/// change).
pub fn scripted_component(dir: &str) -> Vec<u8> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join(format!("{dir}.wasm"));
    let status = std::process::Command::new(workspace().join(format!("plugins/{dir}/build")))
        .arg(&out)
        .env("OMS_TOOLS_DIR", tmp.join("tools"))
        .status()
        .unwrap();
    assert!(status.success(), "building plugins/{dir} failed");
    std::fs::read(out).unwrap()
}

/// Where the JavaScript and Python plugins' builds install componentize-js
/// and componentize-py: (componentize-js, componentize-py).
pub fn guest_tools() -> (PathBuf, PathBuf) {
    let tools = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tools");
    (
        tools.join("componentize-js-0.23.0/node_modules/.bin/componentize-js"),
        tools.join("componentize-py-0.25.1/bin/componentize-py"),
    )
}

/// Uploads a component as `tenant` (with its demo key): status and answer.
pub async fn upload(
    srv: &Server,
    tenant: &str,
    slot: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, Value) {
    upload_with(
        srv,
        tenant,
        &format!("{tenant}-dev-key"),
        slot,
        body,
        content_type,
    )
    .await
}

/// Uploads `body` as a new version of `slot` (`step:<name>` for a tenant's
/// step) with the tenant's key `key`.
pub async fn upload_with(
    srv: &Server,
    tenant: &str,
    key: &str,
    slot: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/plugins/{slot}", srv.url))
        .header("x-tenant-id", tenant)
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A customer's points as acme's loyalty step keeps them (absent: none).
pub async fn loyalty_points(api: &Api, customer: &str) -> Option<i64> {
    let r = api
        .get(&format!("/steps/loyalty-points/state/customer:{customer}"))
        .await;
    match r.status {
        200 => Some(r.body["value"].as_str().unwrap().parse().unwrap()),
        404 => {
            assert_eq!(r.body["error"]["code"], "NOT_FOUND", "{}", r.body);
            None
        }
        other => panic!("reading points: {other} {}", r.body),
    }
}

/// A component's version as the platform names it: its digest's first 12
/// hex digits.
pub fn short_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..12].to_string()
}

/// Runs the `oms` binary: whether it succeeded, its stdout as JSON (null if
/// it is not), its stderr.
pub fn oms_cli(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oms"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `bytes` to `dir/name`, returning the path.
pub fn write_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Milliseconds from placing an order to its saga's end, for each of `n` orders.
pub async fn saga_times(api: &Api, n: usize) -> Vec<f64> {
    let mut times = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let id = api
            .place(&order(&format!("calm-{i}"), "SPROCKET-9", 1, "tok_visa"))
            .await;
        assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Uploads the compiled corpus component `artifact` as a version of
/// `tenant`'s `slot` and activates it as the operator; its version.
pub async fn upload_and_activate(srv: &Server, tenant: &str, slot: &str, artifact: &str) -> i64 {
    let (status, v) = upload(
        srv,
        tenant,
        slot,
        self::artifact(artifact),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let version = v["version"].as_i64().unwrap();
    let (status, a) = super::admin(
        srv,
        &format!("/tenants/{tenant}/plugins/{slot}/activate"),
        Some(serde_json::json!({ "version": version })),
        super::ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{a}");
    version
}
