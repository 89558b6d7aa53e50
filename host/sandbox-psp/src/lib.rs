//! A sandbox payment service provider in the style of a card processor's
//! test mode. `oms serve` starts it on loopback in demo mode; `oms
//! sandbox-psp` runs it alone. It keeps a ledger of every operation it
//! performed, which tests check the platform's invariants against.
//!
//! An outage can be staged: `POST /v1/outage {"operations": ["void", …]}`
//! with the operator key makes those operations answer 503 for every
//! account until it is posted again without them.
//!
//! Test tokens: `tok_visa` and `tok_mastercard` approve; `tok_chargeDeclined`
//! declines permanently; `tok_flaky` answers 503 to the first two attempts
//! of each operation and then approves; `tok_voidFails` authorizes but every
//! void and refund answers 503 (to watch a saga go STUCK); `tok_slow`
//! approves, after 4 s (inside the payment slot's 5 s request timeout).
//!
//! Every call needs a test secret key (`Authorization: Bearer sk_test_…`),
//! which is the account: a payment belongs to the key that made it, and any
//! other key gets 404 for it. Every POST needs an `Idempotency-Key`, scoped
//! to the key too; a repeated key gets the first answer again and performs
//! nothing (5xx answers are not stored). The ledger shows a key its own
//! operations; the operator key (`OMS_SANDBOX_PSP_OPERATOR_KEY`, default
//! [`DEFAULT_OPERATOR_KEY`]) sees every account's.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub mod journal;
mod state;
use journal::{Change, Journal};
use state::{Caller, Intent, Psp, flaky, intent_json, record};

/// How long `tok_slow` takes to authorize.
const SLOW: std::time::Duration = std::time::Duration::from_secs(4);

/// The key that reads every account's ledger unless configured otherwise.
pub const DEFAULT_OPERATOR_KEY: &str = "sk_operator_sandbox";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    /// The account (derived from the secret key) that performed it.
    pub account: String,
    /// `authorize`, `capture`, `void` or `refund`.
    pub op: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub idempotency_key: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub order_id: Option<String>,
    /// The `traceparent` the request carried, as a traced client sends it.
    pub traceparent: Option<String>,
    pub at: i64,
}

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Mutex<Psp>>,
    operator_key: Arc<str>,
    /// Where changes are kept; `None`: in memory only (gone with the process).
    journal: Option<Arc<Journal>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        let key = std::env::var("OMS_SANDBOX_PSP_OPERATOR_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| DEFAULT_OPERATOR_KEY.to_string());
        Self {
            inner: Arc::default(),
            operator_key: key.into(),
            journal: None,
        }
    }
}

impl Sandbox {
    /// A provider that remembers: its intents, stored answers and ledger are
    /// kept in [`journal::FILE`] in `dir` and read back from there.
    pub fn open(dir: &std::path::Path) -> std::io::Result<Self> {
        let mut psp = Psp::default();
        let journal = Journal::open(dir, &mut psp)?;
        tracing::info!(
            intents = psp.intents.len(),
            ledger = psp.ledger.len(),
            path = %dir.join(journal::FILE).display(),
            "sandbox payment provider state loaded"
        );
        Ok(Self {
            inner: Arc::new(Mutex::new(psp)),
            journal: Some(Arc::new(journal)),
            ..Self::default()
        })
    }
}

/// A test secret key's account id: what the ledger shows instead of the key.
fn account_of(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "acct_{}",
        &hex::encode(Sha256::digest(secret.as_bytes()))[..16]
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The caller's account, from a test secret key.
fn account(headers: &HeaderMap) -> Option<String> {
    bearer(headers)
        .filter(|k| k.starts_with("sk_test_") && k.len() > "sk_test_".len())
        .map(account_of)
}

fn unauthorized() -> Response {
    reply(error(
        401,
        "invalid_api_key",
        "a test secret key (sk_test_…) is required",
    ))
}

fn error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

impl Sandbox {
    fn lock(&self) -> MutexGuard<'_, Psp> {
        // A poisoned lock only means another request panicked mid-way; the
        // ledger itself is append-only, so carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(authorize))
            .route("/v1/payment_intents/{id}", get(show))
            .route("/v1/payment_intents/{id}/capture", post(capture))
            .route("/v1/payment_intents/{id}/cancel", post(void))
            .route("/v1/refunds", post(refund))
            .route("/v1/ledger", get(ledger))
            .route("/v1/outage", post(outage))
            .with_state(self)
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().ledger.clone()
    }

    /// Runs one operation under the idempotency key: a stored answer is
    /// replayed; otherwise `f` runs and its non-5xx answer is stored. Either
    /// way the answer leaves only once what it says is on disk.
    async fn idempotent(
        &self,
        headers: &HeaderMap,
        f: impl FnOnce(&mut Psp, &Caller) -> (u16, Value),
    ) -> Response {
        let Some(account) = account(headers) else {
            return unauthorized();
        };
        let Some(key) = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return reply(error(
                400,
                "idempotency_key_required",
                "send an Idempotency-Key header",
            ));
        };
        let caller = Caller { account, key };
        let scoped = (caller.account.clone(), caller.key.clone());
        let (answer, line, replayed) = {
            let mut psp = self.lock();
            if let Some((stored, line)) = psp.replies.get(&scoped) {
                (stored.clone(), *line, true)
            } else {
                psp.traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                psp.pending.clear();
                let answer = f(&mut psp, &caller);
                if answer.0 < 500 {
                    psp.pending.push(Change::Reply {
                        account: caller.account.clone(),
                        key: caller.key.clone(),
                        status: answer.0,
                        body: answer.1.clone(),
                    });
                }
                let changes = std::mem::take(&mut psp.pending);
                let line = match &self.journal {
                    Some(j) if !changes.is_empty() => match j.append(&changes) {
                        Ok(line) => line,
                        Err(e) => return journal_failed(&e),
                    },
                    _ => 0,
                };
                if answer.0 < 500 {
                    psp.replies.insert(scoped, (answer.clone(), line));
                }
                (answer, line, false)
            }
        };
        if let Some(j) = &self.journal
            && let Err(e) = j.sync(line).await
        {
            return journal_failed(&e);
        }
        let mut r = reply(answer);
        if replayed {
            r.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
        }
        r
    }
}

/// The journal could not be written: the answer is withheld (the caller
/// retries under its idempotency key) rather than given without a record.
fn journal_failed(e: &std::io::Error) -> Response {
    tracing::error!(error = %e, "writing the sandbox provider's journal failed");
    reply(error(
        503,
        "processor_unavailable",
        "the provider could not record the operation; try again",
    ))
}

fn reply((status, body): (u16, Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct AuthorizeBody {
    amount: i64,
    currency: String,
    payment_method: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

async fn authorize(
    State(s): State<Sandbox>,
    headers: HeaderMap,
    body: Json<AuthorizeBody>,
) -> Response {
    let body = body.0;
    if body.payment_method == "tok_slow" {
        // A processor having a bad day: slow, but within any sane timeout.
        tokio::time::sleep(SLOW).await;
    }
    s.idempotent(&headers, |psp, caller| {
        let key = caller.key.as_str();
        if body.amount <= 0 {
            return error(
                400,
                "amount_invalid",
                "amount must be a positive integer in minor units",
            );
        }
        if flaky(psp, &body.payment_method, caller) {
            return error(503, "processor_unavailable", "try again");
        }
        let mut intent = Intent {
            id: format!("pi_{}", oms_clock::monotonic_ulid()),
            account: caller.account.clone(),
            amount: body.amount,
            currency: body.currency.to_ascii_lowercase(),
            token: body.payment_method.clone(),
            order_id: body.metadata.get("order_id").cloned(),
            status: "requires_capture".into(),
            refunded: 0,
        };
        match body.payment_method.as_str() {
            "tok_visa" | "tok_mastercard" | "tok_flaky" | "tok_voidFails" | "tok_slow" => {
                record(psp, "authorize", &intent, body.amount, key, "succeeded");
                let answer = (200, intent_json(&intent));
                psp.save(intent);
                answer
            }
            "tok_chargeDeclined" => {
                intent.status = "canceled".into();
                record(psp, "authorize", &intent, body.amount, key, "failed");
                error(402, "card_declined", "Your card was declined.")
            }
            other => error(
                400,
                "payment_method_invalid",
                &format!("unknown test token {other}"),
            ),
        }
    })
    .await
}

async fn show(State(s): State<Sandbox>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let Some(account) = account(&headers) else {
        return unauthorized();
    };
    let psp = s.lock();
    match psp.intent(&account, &id) {
        Some(i) => reply((200, intent_json(&i))),
        None => reply(error(404, "resource_missing", "no such payment_intent")),
    }
}

#[derive(Deserialize)]
struct CaptureBody {
    amount_to_capture: Option<i64>,
}

async fn capture(
    State(s): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Json<CaptureBody>,
) -> Response {
    s.idempotent(&headers, |psp, caller| {
        let key = caller.key.as_str();
        let Some(intent) = psp.intent(&caller.account, &id) else {
            return error(404, "resource_missing", "no such payment_intent");
        };
        if psp.outage.contains("capture") || flaky(psp, &intent.token, caller) {
            return error(503, "processor_unavailable", "try again");
        }
        if intent.status != "requires_capture" {
            return error(400, "payment_intent_unexpected_state", &format!("payment_intent is {}", intent.status));
        }
        let amount = body.amount_to_capture.unwrap_or(intent.amount);
        if amount <= 0 || amount > intent.amount {
            return error(400, "amount_invalid", "cannot capture more than was authorized");
        }
        let mut intent = intent;
        intent.status = "succeeded".into();
        intent.amount = amount;
        psp.save(intent.clone());
        record(psp, "capture", &intent, amount, key, "succeeded");
        (200, json!({ "id": format!("ch_{}", oms_clock::monotonic_ulid()), "payment_intent": intent.id, "amount": amount }))
    }).await
}

async fn void(State(s): State<Sandbox>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    s.idempotent(&headers, |psp, caller| {
        let key = caller.key.as_str();
        let Some(intent) = psp.intent(&caller.account, &id) else {
            return error(404, "resource_missing", "no such payment_intent");
        };
        if intent.token == "tok_voidFails"
            || psp.outage.contains("void")
            || flaky(psp, &intent.token, caller)
        {
            return error(503, "processor_unavailable", "try again");
        }
        if intent.status != "requires_capture" {
            return error(
                400,
                "payment_intent_unexpected_state",
                &format!("payment_intent is {}", intent.status),
            );
        }
        let mut canceled = intent.clone();
        canceled.status = "canceled".into();
        psp.save(canceled);
        record(psp, "void", &intent, intent.amount, key, "succeeded");
        (200, json!({ "id": intent.id, "status": "canceled" }))
    })
    .await
}

#[derive(Deserialize)]
struct RefundBody {
    payment_intent: String,
    amount: Option<i64>,
}

async fn refund(State(s): State<Sandbox>, headers: HeaderMap, body: Json<RefundBody>) -> Response {
    let body = body.0;
    s.idempotent(&headers, |psp, caller| {
        let key = caller.key.as_str();
        let Some(intent) = psp.intent(&caller.account, &body.payment_intent) else {
            return error(404, "resource_missing", "no such payment_intent");
        };
        if intent.token == "tok_voidFails"
            || psp.outage.contains("refund")
            || flaky(psp, &intent.token, caller)
        {
            return error(503, "processor_unavailable", "try again");
        }
        if intent.status != "succeeded" {
            return error(400, "charge_not_captured", "only a captured payment can be refunded");
        }
        let amount = body.amount.unwrap_or(intent.amount - intent.refunded);
        if amount <= 0 || intent.refunded + amount > intent.amount {
            return error(400, "amount_invalid", "refund exceeds what was captured");
        }
        let mut refunded = intent.clone();
        refunded.refunded += amount;
        psp.save(refunded);
        record(psp, "refund", &intent, amount, key, "succeeded");
        (200, json!({ "id": format!("re_{}", oms_clock::monotonic_ulid()), "payment_intent": intent.id, "amount": amount }))
    }).await
}

#[derive(Deserialize)]
struct OutageBody {
    operations: Vec<String>,
}

/// `POST /v1/outage` (operator key): these operations fail until cleared.
async fn outage(State(s): State<Sandbox>, headers: HeaderMap, body: Json<OutageBody>) -> Response {
    if bearer(&headers) != Some(&*s.operator_key) {
        return unauthorized();
    }
    let known = ["capture", "void", "refund"];
    if let Some(bad) = body
        .operations
        .iter()
        .find(|o| !known.contains(&o.as_str()))
    {
        return reply(error(
            400,
            "parameter_invalid",
            &format!("`{bad}` is not one of capture, void, refund"),
        ));
    }
    let mut psp = s.lock();
    psp.outage = body.0.operations.into_iter().collect();
    let mut now: Vec<&String> = psp.outage.iter().collect();
    now.sort();
    Json(json!({ "operations": now })).into_response()
}

/// Every account's operations for the operator key; a test key's own.
async fn ledger(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    if bearer(&headers) == Some(&*s.operator_key) {
        return Json(json!({ "data": s.ledger() })).into_response();
    }
    let Some(account) = account(&headers) else {
        return unauthorized();
    };
    let own: Vec<LedgerEntry> = s
        .ledger()
        .into_iter()
        .filter(|e| e.account == account)
        .collect();
    Json(json!({ "data": own })).into_response()
}
