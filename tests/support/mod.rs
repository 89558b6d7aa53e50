//! Shared by the suites: real databases (a fresh SQLite file or a fresh
//! PostgreSQL database per test), the real `oms` binary, and an API client.
#![allow(dead_code, clippy::unwrap_used)]

pub mod admin;
pub mod broker;
pub mod components;
pub mod forge;
pub mod lifecycle;
pub mod load;
pub mod stores;

// Not every test binary uses them.
#[allow(unused_imports)]
pub use components::*;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where PostgreSQL is; each test gets a database of its own in it.
pub fn admin_url() -> String {
    std::env::var("OMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty PostgreSQL database; its URL.
pub async fn fresh_postgres() -> String {
    fresh_database_at(&admin_url()).await
}

/// A fresh, empty database on the PostgreSQL server at `admin`; its URL.
pub async fn fresh_database_at(admin: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is required for these tests (tests/run starts it): {e}")
        });
    let name = format!("oms_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("oms.db").display())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A database for one test.
pub struct Db {
    pub kind: Kind,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    kind,
                    url: sqlite_url(&dir),
                    _dir: Some(dir),
                }
            }
            Kind::Postgres => Self {
                kind,
                url: fresh_postgres().await,
                _dir: None,
            },
        }
    }

    /// A fresh database on the PostgreSQL server at `admin`.
    pub async fn postgres_at(admin: &str) -> Self {
        Self {
            kind: Kind::Postgres,
            url: fresh_database_at(admin).await,
            _dir: None,
        }
    }
}

/// Declares `$name` (an `async fn(Kind)`) once and runs it on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Kind::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Kind::Postgres).await
                }
            }
        )+
    };
}

pub fn workspace() -> PathBuf {
    // host/oms → the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// On-hand and reserved stock of `sku`, over every warehouse of the tenant behind `api`.
pub async fn stock_totals(api: &Api, sku: &str) -> (i64, i64) {
    let inv = api.get(&format!("/inventory/{sku}")).await.body;
    inv["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(h, r), w| {
            (
                h + w["onHand"].as_i64().unwrap(),
                r + w["reserved"].as_i64().unwrap(),
            )
        })
}

/// The sandbox provider's whole ledger, read with its operator key.
/// Every account's ledger entries at the sandbox provider at `psp_url`.
pub async fn ledger_at(psp_url: &str) -> Vec<Value> {
    let v: Value = ledger_request(psp_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().cloned().unwrap_or_default()
}

pub fn ledger_request(psp_url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("{psp_url}/v1/ledger"))
        .bearer_auth(oms_sandbox_psp::DEFAULT_OPERATOR_KEY)
}

/// The operator token every test host is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running `oms serve` process.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub psp_url: String,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a host on `db` with the demo tenants and its own sandbox provider.
    pub async fn start(db: &Db) -> Self {
        Self::start_with(
            db,
            vec!["--sandbox-psp-listen".into(), "127.0.0.1:0".into()],
        )
        .await
    }

    /// Starts a host with the tenant manifests in `tenants` instead of the demo ones.
    pub async fn start_with_tenants(db: &Db, tenants: &std::path::Path) -> Self {
        let extra = vec![
            "--sandbox-psp-listen".into(),
            "127.0.0.1:0".into(),
            "--tenants-dir".into(),
            tenants.display().to_string(),
        ];
        Self::start_with(db, extra).await
    }

    /// Starts a host that uses an already running sandbox provider.
    pub async fn start_with_psp(db: &Db, psp_url: &str) -> Self {
        Self::start_with(db, vec!["--sandbox-psp-url".into(), psp_url.into()]).await
    }

    /// Starts a host with the demo tenants, its own sandbox provider and
    /// these environment variables.
    pub async fn start_with_env(db: &Db, env: &[(&str, &str)]) -> Self {
        let extra = vec!["--sandbox-psp-listen".into(), "127.0.0.1:0".into()];
        Self::start_with_all(db, extra, env).await
    }

    /// Starts a host with extra `oms serve` arguments.
    pub async fn start_with(db: &Db, extra: Vec<String>) -> Self {
        Self::start_with_all(db, extra, &[]).await
    }

    /// Starts a host with extra `oms serve` arguments and environment.
    pub async fn start_with_all(db: &Db, extra: Vec<String>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Port 0: the host picks free ports and reports them in the ready file.
        let mut args = vec!["serve".to_string(), "--listen".into(), "127.0.0.1:0".into()];
        match db.kind {
            // The demo provider's journal in this test's own directory.
            Kind::Postgres => args.extend([
                "--database-url".into(),
                db.url.clone(),
                "--data-dir".into(),
                dir.path().join("data").display().to_string(),
            ]),
            // The embedded default, in this test's own directory.
            Kind::Sqlite => {
                let data = PathBuf::from(db.url.trim_start_matches("sqlite://"));
                args.extend([
                    "--data-dir".into(),
                    data.parent().unwrap().display().to_string(),
                ]);
            }
        }
        if !extra.iter().any(|a| a == "--tenants-dir") {
            args.extend([
                "--tenants-dir".into(),
                workspace().join("tenants").display().to_string(),
            ]);
        }
        args.extend(extra);
        args.extend([
            "--ready-file".into(),
            dir.path().join("ready.json").display().to_string(),
        ]);
        let log = dir.path().join("oms.log");
        let mut server = Self {
            child: None,
            url: String::new(),
            psp_url: String::new(),
            log,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
        };
        server.spawn().await;
        server
    }

    /// (Re)starts the process and waits until it is ready. A restart comes
    /// back on the ports the first start picked.
    pub async fn spawn(&mut self) {
        let ready = self._dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_oms"))
            .args(&self.args)
            .env("RUST_LOG", "info,sqlx=warn")
            .env("OMS_ADMIN_TOKEN", ADMIN_TOKEN)
            // Suites that check many refused keys are not guessing; the
            // budget itself is tested with --auth-failures-per-minute.
            .env("OMS_AUTH_FAILURES_PER_MINUTE", "100000")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(addrs) = serde_json::from_str::<Value>(&text)
            {
                self.learn(&addrs);
                if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                    && r.status() == 200
                {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "oms exited with {status}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "oms did not become ready; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pins the ports the host picked, so a restart comes back on the same ones.
    fn learn(&mut self, addrs: &Value) {
        self.url = addrs["api"].as_str().unwrap_or_default().to_string();
        if let Some(psp) = addrs["sandboxPsp"].as_str() {
            self.psp_url = psp.to_string();
        }
        let pin = |args: &mut Vec<String>, flag: &str, url: &str| {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args[i + 1] = url.trim_start_matches("http://").to_string();
            }
        };
        let (api, psp) = (self.url.clone(), self.psp_url.clone());
        pin(&mut self.args, "--listen", &api);
        pin(&mut self.args, "--sandbox-psp-listen", &psp);
    }

    /// SIGTERM: the host's own shutdown runs.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("the host is running").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end by itself (generous deadline); its status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("the host was started");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the host did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A line of the host process's `/proc/<pid>/status` (`VmHWM`, …), its value.
    pub fn proc_status(&self, field: &str) -> String {
        let pid = self.child.as_ref().expect("the host is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
            .trim()
            .to_string()
    }

    /// The names of the host process's threads (`/proc/<pid>/task/*/comm`).
    pub fn thread_names(&self) -> Vec<String> {
        let pid = self.child.as_ref().expect("the host is running").id();
        let mut names = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the host's threads") {
            let path = task.expect("a thread of the host").path().join("comm");
            // A thread that ended between the listing and the read is no
            // thread of the host any more.
            if let Ok(name) = std::fs::read_to_string(path) {
                names.push(name.trim().to_string());
            }
        }
        names
    }

    /// The host process's peak resident memory so far (`VmHWM`), MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().expect("the host is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib / 1024
    }

    pub fn api(&self, tenant: &str) -> Api {
        Api::new(&self.url, tenant, &format!("{tenant}-dev-key"))
    }

    pub async fn ledger(&self) -> Vec<Value> {
        ledger_at(&self.psp_url).await
    }

    pub async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("oms_{name} "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits (a generous deadline) until metric `name` reads at least
    /// `at_least`: a saga's counters move just after its last commit, which
    /// the API may show first, and a consumer's after its message is done.
    pub async fn wait_metric(&self, name: &str, at_least: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.metric(name).await < at_least {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} stayed below {at_least}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Response {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Response {
    /// Sends `req`; the answer with its body as JSON (or as a string).
    pub async fn of(req: reqwest::RequestBuilder) -> Self {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            body,
            headers,
        }
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub tenant: String,
    pub key: String,
}

impl Api {
    pub fn new(base: &str, tenant: &str, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into(),
            tenant: tenant.into(),
            key: key.into(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .header("x-tenant-id", &self.tenant)
            .bearer_auth(&self.key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Response::of(req).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    /// A client's cancel of order `id`, with a reason.
    pub async fn cancel(&self, id: &str) -> Response {
        self.post(
            &format!("/orders/{id}/cancel"),
            &serde_json::json!({ "reason": "changed my mind" }),
        )
        .await
    }

    /// Places an order; its id.
    pub async fn place(&self, body: &Value) -> String {
        let r = self.post("/orders", body).await;
        assert_eq!(r.status, 201, "order not accepted: {}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Polls until the order's saga has finished (or is stuck).
    pub async fn settle(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/orders/{id}")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let saga = r.body["sagaState"].as_str().unwrap_or_default();
            if matches!(
                saga,
                "COMPLETED" | "REJECTED" | "CANCELLED" | "STUCK" | "RESOLVED"
            ) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} did not settle: {}",
                r.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn order(customer: &str, sku: &str, quantity: u32, token: &str) -> Value {
    json!({
        "customerId": customer,
        "currency": "USD",
        "items": [{ "sku": sku, "quantity": quantity, "unitPrice": 1999 }],
        "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
        "paymentMethod": { "token": token },
    })
}

/// Calls the operator API: POST with a body, POST for the verbs that take
/// none (rollback, promote, abort), GET otherwise.
pub async fn admin(srv: &Server, path: &str, body: Option<Value>, token: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}/admin/v1{path}", srv.url);
    let verb = ["/rollback", "/promote", "/abort"];
    let req = match body {
        Some(b) => client.post(url).json(&b),
        None if verb.iter().any(|v| path.ends_with(v)) => client.post(url),
        None => client.get(url),
    };
    let r = req.bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The value of the sample whose line starts with `series` (name and labels).
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
