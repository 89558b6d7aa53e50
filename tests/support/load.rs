//! Load and bookkeeping shared by the crash, cluster and database-restart
//! suites: a sandbox provider whose ledger outlives any host, clients
//! placing a mix of orders, and the books every accepted order must balance.
#![allow(dead_code, clippy::unwrap_used)]

use super::{Api, order};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sandbox provider in a process of its own, so its ledger outlives the host.
pub struct Psp {
    child: Child,
    pub url: String,
}

impl Psp {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_oms"))
            .args(["sandbox-psp", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: Value = serde_json::from_str(&text).unwrap();
                let url = v["sandboxPsp"].as_str().unwrap().to_string();
                return Self { child, url };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sandbox provider did not start");
    }
}

impl Drop for Psp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One kind of order in the load, by index.
pub fn pick(n: usize) -> (&'static str, Value) {
    match n % 10 {
        0 => ("acme", order(&format!("c{n}"), "WIDGET-1", 2, "tok_visa")),
        1 => (
            "globex",
            order(&format!("c{n}"), "SPROCKET-9", 1, "tok_visa"),
        ),
        2 => ("acme", order(&format!("c{n}"), "GADGET-7", 1, "tok_flaky")),
        3 => (
            "globex",
            order(&format!("c{n}"), "NO-SUCH-SKU", 1, "tok_visa"),
        ),
        4 => (
            "acme",
            order(&format!("c{n}"), "WIDGET-1", 1, "tok_chargeDeclined"),
        ),
        5 => (
            "globex",
            order(&format!("c{n}"), "WIDGET-1", 3, "tok_flaky"),
        ),
        6 => ("acme", order(&format!("c{n}"), "WIDGET-1", 101, "tok_visa")),
        7 => (
            "acme",
            order(&format!("fraud-{n}"), "GADGET-7", 1, "tok_visa"),
        ),
        8 => (
            "globex",
            order(&format!("c{n}"), "WIDGET-1", 1, "tok_chargeDeclined"),
        ),
        _ => ("acme", order(&format!("c{n}"), "GADGET-7", 4, "tok_visa")),
    }
}

pub type Accepted = Arc<Mutex<Vec<(String, String)>>>;

/// The hosts the load goes to; a test removes one it kills.
pub type Hosts = Arc<Mutex<Vec<String>>>;

pub fn hosts(urls: &[&str]) -> Hosts {
    Arc::new(Mutex::new(urls.iter().map(|u| u.to_string()).collect()))
}

/// Clients placing orders (and cancelling some) across `hosts` until
/// `stop`; failures while a host or the database is down are expected and
/// ignored. What got a 201 is recorded.
pub fn load(
    hosts: Hosts,
    accepted: Accepted,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (0..8)
        .map(|_| {
            let (hosts, accepted, stop, next) =
                (hosts.clone(), accepted.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (tenant, body) = pick(n);
                    let base = {
                        let hosts = hosts.lock().unwrap();
                        hosts[n % hosts.len()].clone()
                    };
                    let key = format!("{tenant}-dev-key");
                    let sent = http
                        .post(format!("{base}/api/v1/orders"))
                        .header("x-tenant-id", tenant)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(r) = sent else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if r.status() != 201 {
                        continue;
                    }
                    let Ok(v) = r.json::<Value>().await else {
                        continue;
                    };
                    let id = v["id"].as_str().unwrap().to_string();
                    accepted
                        .lock()
                        .unwrap()
                        .push((tenant.to_string(), id.clone()));
                    if n % 7 == 0 {
                        // Cancel some while their sagas run; errors while the host is down are fine.
                        let _ = http
                            .post(format!("{base}/api/v1/orders/{id}/cancel"))
                            .header("x-tenant-id", tenant)
                            .bearer_auth(&key)
                            .json(&json!({ "reason": "load test" }))
                            .send()
                            .await;
                    }
                }
            })
        })
        .collect()
}

pub async fn all_orders(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orders?limit=200&cursor={c}"),
            None => "/orders?limit=200".to_string(),
        };
        let page = api.get(&path).await.body;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Waits until every saga has finished (reading through `base`), then checks
/// that no accepted order was lost, the provider's ledger agrees with every
/// order's outcome (nothing charged twice, nothing left held) and reserved
/// stock is exactly what confirmed orders hold. Returns the orders.
pub async fn check_books(
    base: &str,
    psp_url: &str,
    accepted: &[(String, String)],
) -> Vec<(String, Value)> {
    let apis: HashMap<&str, Api> = ["acme", "globex"]
        .into_iter()
        .map(|t| (t, Api::new(base, t, &format!("{t}-dev-key"))))
        .collect();
    // Every saga finishes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let orders: Vec<(String, Value)> = loop {
        let mut all = Vec::new();
        for (t, api) in &apis {
            all.extend(
                all_orders(api)
                    .await
                    .into_iter()
                    .map(|o| (t.to_string(), o)),
            );
        }
        let running: Vec<&Value> = all
            .iter()
            .map(|(_, o)| o)
            .filter(|o| {
                !matches!(
                    o["sagaState"].as_str(),
                    Some("COMPLETED" | "REJECTED" | "CANCELLED")
                )
            })
            .collect();
        if running.is_empty() {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{} sagas did not finish, e.g. {}",
            running.len(),
            running[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // No accepted order was lost.
    let stored: HashSet<&str> = orders
        .iter()
        .map(|(_, o)| o["id"].as_str().unwrap())
        .collect();
    for (_, id) in accepted {
        assert!(stored.contains(id.as_str()), "accepted order {id} is gone");
    }

    // Money: the provider's ledger agrees with every order's outcome.
    let ledger: Value = super::ledger_request(psp_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut by_order: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in ledger["data"].as_array().unwrap() {
        let id = e["order_id"].as_str().unwrap().to_string();
        by_order.entry(id).or_default().push((
            e["op"].as_str().unwrap().into(),
            e["status"].as_str().unwrap().into(),
        ));
    }
    for (_, o) in &orders {
        let id = o["id"].as_str().unwrap();
        let ops = by_order.get(id).cloned().unwrap_or_default();
        let count = |op: &str| {
            ops.iter()
                .filter(|(o, s)| o == op && s == "succeeded")
                .count()
        };
        let (auth, capture, void, refund) = (
            count("authorize"),
            count("capture"),
            count("void"),
            count("refund"),
        );
        assert!(
            auth <= 1 && capture <= 1 && void <= 1 && refund <= 1,
            "{id}: an operation ran twice: {ops:?}"
        );
        match o["status"].as_str().unwrap() {
            "CONFIRMED" => assert_eq!((auth, capture, void, refund), (1, 1, 0, 0), "{id}: {ops:?}"),
            "REJECTED" => assert!(
                ops.is_empty(),
                "{id} was rejected but reached the provider: {ops:?}"
            ),
            "CANCELLED" => {
                // Whatever was taken was given back.
                assert_eq!(capture, refund, "{id}: captured without refund: {ops:?}");
                if auth == 1 && capture == 0 {
                    assert_eq!(void, 1, "{id}: authorization left open: {ops:?}");
                }
            }
            other => panic!("{id} ended {other}"),
        }
    }

    // Numbers: every order has one, none shared within a tenant (also
    // across kills and restarts).
    let mut numbers: HashSet<(String, i64)> = HashSet::new();
    for (t, o) in &orders {
        let n = o["orderNumber"]
            .as_i64()
            .unwrap_or_else(|| panic!("no orderNumber: {o}"));
        assert!(
            numbers.insert((t.clone(), n)),
            "{t} order number {n} given twice"
        );
    }
    // Amounts: the provider was asked for each order's total, no other sum.
    let totals: HashMap<&str, &Value> = orders
        .iter()
        .map(|(_, o)| (o["id"].as_str().unwrap(), &o["totalAmount"]))
        .collect();
    for e in ledger["data"].as_array().unwrap() {
        if let Some(total) = e["order_id"].as_str().and_then(|id| totals.get(id)) {
            assert_eq!(&e["amount"], *total, "{e}");
        }
    }

    // Stock: what is reserved is exactly what confirmed orders hold.
    let mut held: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (t, o) in &orders {
        if o["status"] == "CONFIRMED" {
            for item in o["items"].as_array().unwrap() {
                *held
                    .entry((t.clone(), item["sku"].as_str().unwrap().into()))
                    .or_default() += item["quantity"].as_i64().unwrap();
            }
        }
    }
    for (tenant, sku, seeded) in [
        ("acme", "WIDGET-1", 2_000_000),
        ("acme", "GADGET-7", 1_000_000),
        ("globex", "SPROCKET-9", 1_000_000),
        ("globex", "WIDGET-1", 1_000_000),
    ] {
        let (on_hand, reserved) = super::stock_totals(&apis[tenant], sku).await;
        assert_eq!(on_hand, seeded, "{tenant}/{sku}: on-hand drifted");
        assert_eq!(
            reserved,
            held.get(&(tenant.to_string(), sku.to_string()))
                .copied()
                .unwrap_or(0),
            "{tenant}/{sku}: reserved drifted"
        );
    }
    // Loyalty points (acme's own step, after capture): each customer holds
    // exactly the points of its confirmed orders; an order that turned back
    // holds none (never awarded, or taken back). A load's rounds reuse
    // customer ids, so points are summed per customer.
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for (t, o) in &orders {
        if t != "acme" {
            continue;
        }
        let earned = match o["status"].as_str() {
            Some("CONFIRMED") => o["totalAmount"].as_i64().unwrap() / 100,
            _ => 0,
        };
        *expected
            .entry(o["customerId"].as_str().unwrap())
            .or_default() += earned;
    }
    for (customer, expected) in expected {
        let r = apis["acme"]
            .get(&format!("/steps/loyalty-points/state/customer:{customer}"))
            .await;
        let held = match r.status {
            200 => r.body["value"].as_str().unwrap().parse::<i64>().unwrap(),
            404 => 0,
            other => panic!("reading {customer}'s points: {other} {}", r.body),
        };
        assert_eq!(held, expected, "{customer}'s points");
    }
    orders
}
