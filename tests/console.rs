//! The operator console in a real browser: headless Chromium from the
//! machine's packages, driven through Selenium by `tests/console/drive.py`
//! against the real binary. The page signs in, retries a saga made stuck on
//! purpose (a staged provider outage on voids, since cleared) and watches it
//! finish, activates and rolls back a plugin version, and creates a tenant
//! whose first order then succeeds. Afterwards the provider's ledger and the
//! audit log must show exactly that, once.
//!
//! `OMS_CONSOLE_SHOTS=<dir>` keeps the screenshots (README's come from here).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use support::{Db, Kind, Server, order};

fn ledger_of<'a>(ledger: &'a [Value], order_id: &str) -> Vec<(&'a str, &'a str)> {
    ledger
        .iter()
        .filter(|e| e["order_id"] == order_id)
        .map(|e| (e["op"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_through_the_console() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: tests/run installs Debian's chromium and chromium-driver"
        );
    }
    let db = Db::new(Kind::Sqlite).await;
    let srv = Server::start(&db).await;
    let http = reqwest::Client::new();
    let outage = |ops: Value| {
        http.post(format!("{}/v1/outage", srv.psp_url))
            .bearer_auth(oms_sandbox_psp::DEFAULT_OPERATOR_KEY)
            .json(&json!({ "operations": ops }))
            .send()
    };

    // globex authorizes first; the SKU has no stock; voids fail until the
    // outage is over: the saga is stuck, its money held.
    assert_eq!(outage(json!(["void"])).await.unwrap().status(), 200);
    let globex = srv.api("globex");
    let stuck = globex
        .place(&order("c-1", "NO-SUCH-SKU", 1, "tok_visa"))
        .await;
    assert_eq!(globex.settle(&stuck).await["sagaState"], "STUCK");
    assert_eq!(outage(json!([])).await.unwrap().status(), 200);

    // A staged guardrail version for the page to activate and roll back.
    let strict = oms_plugin_host::builtin::find("guardrail-strict")
        .unwrap()
        .bytes
        .to_vec();
    let (status, body) =
        support::upload(&srv, "acme", "guardrail", strict, "application/wasm").await;
    assert_eq!(status, 201, "{body}");

    let shots = std::env::var("OMS_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| srv.log.parent().unwrap().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(support::workspace().join("tests/console/drive.py"))
        .env("OMS_URL", &srv.url)
        .env("OMS_TOKEN", support::ADMIN_TOKEN)
        .env("OMS_STUCK_ORDER", &stuck)
        .env("OMS_SHOTS", &shots)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the console drive failed (screenshot in {}):\n{stderr}\nhost log:\n{}",
        shots.display(),
        std::fs::read_to_string(&srv.log).unwrap_or_default()
    );
    let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let first = done["initechOrder"].as_str().unwrap();

    // The books: the stuck authorization voided exactly once, after the four
    // voids the outage failed; the new tenant's order paid exactly once.
    let ledger = srv.ledger().await;
    let voids = ledger_of(&ledger, &stuck);
    assert_eq!(
        voids,
        [("authorize", "succeeded"), ("void", "succeeded"),],
        "the provider records only what it performed"
    );
    assert_eq!(
        ledger_of(&ledger, first),
        [("authorize", "succeeded"), ("capture", "succeeded")]
    );
    let payments = globex.get(&format!("/orders/{stuck}/payments")).await.body;
    let void_attempts: Vec<&str> = payments["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "void")
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        void_attempts,
        ["failed", "failed", "failed", "failed", "succeeded"]
    );

    // Every action the page took is in the audit log, once, by its operator.
    let (status, log) = support::admin(&srv, "/audit", None, support::ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let mut actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["operator"], "bootstrap-admin");
            e["action"].as_str().unwrap()
        })
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "saga.retry",
            "plugin.activate",
            "plugin.rollback",
            "tenant.create",
            "key.create"
        ]
    );
}
