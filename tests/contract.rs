//! The published contract against the real binary, on SQLite and on
//! PostgreSQL: `/openapi.json` is the committed `host/api/openapi.json`,
//! `/docs` serves Swagger UI from the binary, and Schemathesis fuzzes every
//! operation (examples, coverage, fuzzing and stateful phases, as a tenant's
//! client with each demo tenant's key and as the operator) with every check it has:
//! no 5xx, no answer outside the document (status, content type, headers,
//! schema), no schema-violating request accepted, no hang (30 s per
//! request).
//!
//! Budget: `OMS_CONTRACT_EXAMPLES` examples per operation (25 unless told;
//! raise it for a deeper run). The seed is printed on failure.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use support::{Db, Kind, Server};

async fn fetch(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

/// Runs Schemathesis over the operations under `prefix` with `headers`.
async fn fuzz(srv: &Server, who: &str, prefix: &str, headers: &[String]) {
    let examples = std::env::var("OMS_CONTRACT_EXAMPLES").unwrap_or_else(|_| "25".into());
    let config = support::workspace().join("tests/contract/schemathesis.toml");
    let mut cmd = tokio::process::Command::new("st");
    // Schemathesis keeps a cache where it runs: the server's scratch dir, not the tree.
    cmd.current_dir(srv.log.parent().unwrap());
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", srv.url))
        .args(["--include-path-regex", &format!("^{prefix}")])
        // Component uploads are bytes (application/wasm), which Schemathesis
        // cannot generate; tests/plugin_platform.rs and tests/hostile.rs
        // cover that operation.
        .args(["--exclude-operation-id", "uploadComponent"])
        .args(["--checks", "all"])
        // Schema-valid data can still fail a business rule the document
        // cannot state (stock, state machines, uniqueness, `1.0` for an
        // integer), so a 4xx there is right; and leaving out X-Tenant-Id
        // while keeping a valid key is refused (401) by design, where the
        // check expects one scheme alone to decide.
        .args(["--exclude-checks", "positive_data_acceptance,ignored_auth"])
        .args(["--max-examples", &examples])
        .arg("--no-color");
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().await.unwrap_or_else(|e| {
        panic!("running Schemathesis (`st`) failed: {e}; tests/run installs it from PyPI")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The report ends with the failures and the seed; a tool's traceback
    // can be long, so the head is cut rather than the verdict.
    let start = (stdout.len().saturating_sub(30_000)..stdout.len())
        .find(|i| stdout.is_char_boundary(*i))
        .unwrap_or(0);
    let report = &stdout[start..];
    assert!(
        out.status.success(),
        "Schemathesis found the API ({who}) off its contract:\n{report}\n{}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        srv.log.display()
    );
    assert!(
        stdout.contains("passed"),
        "Schemathesis ran no test ({who}):\n{stdout}"
    );
}

async fn the_api_keeps_its_contract(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;

    let (status, kind_, served) = fetch(&format!("{}/openapi.json", srv.url)).await;
    assert_eq!((status, kind_.as_str()), (200, "application/json"));
    let committed =
        std::fs::read_to_string(support::workspace().join("host/api/openapi.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&served).unwrap(),
        serde_json::from_str::<Value>(&committed).unwrap(),
        "the served document is not the committed one"
    );
    let (status, kind_, page) = fetch(&format!("{}/docs/", srv.url)).await;
    assert_eq!(status, 200);
    assert!(kind_.starts_with("text/html"), "{kind_}");
    assert!(page.contains("swagger-ui"), "{page}");
    let (status, _, css) = fetch(&format!("{}/docs/swagger-ui.css", srv.url)).await;
    assert_eq!(
        status, 200,
        "Swagger UI's assets are served from the binary"
    );
    assert!(css.len() > 1000);

    fuzz(
        &srv,
        "acme's client",
        "/api/",
        &[
            "X-Tenant-Id: acme".into(),
            "Authorization: Bearer acme-dev-key".into(),
        ],
    )
    .await;
    fuzz(
        &srv,
        "globex's client",
        "/api/",
        &[
            "X-Tenant-Id: globex".into(),
            "Authorization: Bearer globex-dev-key".into(),
        ],
    )
    .await;
    fuzz(
        &srv,
        "the operator",
        "/admin/",
        &[format!("Authorization: Bearer {}", support::ADMIN_TOKEN)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    the_api_keeps_its_contract(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    the_api_keeps_its_contract(Kind::Postgres).await;
}
