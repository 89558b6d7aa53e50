//! The operator API as tests call it: a token, JSON in, [`Response`] out;
//! and manifests made from the demo ones.

use super::{ADMIN_TOKEN, Api, Response, Server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Generous: only a broken sync takes this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `check` holds, or fails with `what`.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Admin {
    /// The bootstrap admin of the host at `url`.
    pub fn new(url: &str) -> Self {
        Self::with_token(url, ADMIN_TOKEN)
    }

    pub fn with_token(url: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: url.into(),
            token: token.into(),
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
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.token);
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

    pub async fn put(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        self.send(reqwest::Method::PUT, path, Some(body), headers)
            .await
    }

    /// Creates a key for `tenant` with `scopes`; its secret.
    pub async fn key(&self, tenant: &str, scopes: &[&str]) -> String {
        let r = self
            .post(
                &format!("/tenants/{tenant}/keys"),
                &serde_json::json!({ "name": "test", "scopes": scopes }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["secret"].as_str().unwrap().to_string()
    }
}

/// The demo tenant acme's manifest as JSON, as tenant `id` (no keys).
pub fn manifest(id: &str) -> Value {
    let text = std::fs::read_to_string(super::workspace().join("tenants/acme.toml")).unwrap();
    let mut m: Value = toml::from_str(&text).unwrap();
    let obj = m.as_object_mut().unwrap();
    obj.insert("id".into(), id.into());
    obj.insert("name".into(), format!("Tenant {id}").into());
    obj.remove("dev_api_keys");
    m
}

/// A tenant like acme (with its demo stock, and 10 more WIDGET-1 in
/// `east`) whose warehouse answers within `decision_ms`; its client API and
/// its warehouse's API (a key with `fulfilment:write` only).
pub async fn answering_tenant(srv: &Server, id: &str, decision_ms: u64) -> (Api, Api) {
    let fulfilment = json!({ "decision_timeout_ms": decision_ms });
    tenant_with(srv, id, &[("fulfilment", fulfilment)]).await
}

/// A tenant like acme (with its demo stock, and 10 more WIDGET-1 in
/// `east`) with these manifest sections set (or amended); its client API and its
/// warehouse's API (a key with `fulfilment:write` only).
pub async fn tenant_with(srv: &Server, id: &str, sections: &[(&str, Value)]) -> (Api, Api) {
    let admin = Admin::new(&srv.url);
    let mut m = manifest(id);
    // A section the manifest has already is amended, key by key.
    for (name, section) in sections {
        match (m.get_mut(*name), section) {
            (Some(Value::Object(have)), Value::Object(set)) => {
                have.extend(set.clone());
            }
            _ => m[*name] = section.clone(),
        }
    }
    let created = admin.post("/tenants", &m).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let client = admin
        .key(
            id,
            &[
                "orders:read",
                "orders:write",
                "inventory:read",
                "inventory:write",
            ],
        )
        .await;
    let warehouse = admin.key(id, &["fulfilment:write"]).await;
    let api = Api::new(&srv.url, id, &client);
    let put = api
        .send(
            reqwest::Method::PUT,
            "/inventory/WIDGET-1",
            Some(&json!({ "warehouseId": "east", "onHand": 10 })),
            &[],
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    (api, Api::new(&srv.url, id, &warehouse))
}
