//! Operators changing one tenant concurrently, checked against a model.
//!
//! Several operators hit the tenant with a random interleaving of
//! suspends, resumes, manifest updates (with `If-Match`), key creations,
//! rotations and revocations, each picking keys any of them made.
//! Afterwards one legal history must explain everything: suspends and
//! resumes that succeeded alternate (so the final status follows from
//! their counts); each key was rotated at most once and revoked at most
//! once, and exactly as the successful answers say; every 409 was deserved
//! (the key was rotated or revoked by someone, the revision had moved);
//! the tenant's revision rose by one per successful change; and every key
//! works, or not, as its final state says.
//!
//! Seeded: the seed is printed first and in every failure; replay one with
//! `OMS_MODEL_SEED=<seed>`; `OMS_MODEL_OPS=<n>` gives each operator more.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::admin::Admin;
use support::{Api, Db, Kind, Server};

const OPERATORS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Suspend,
    Resume,
    Update,
    CreateKey,
    Rotate,
    Revoke,
}

#[derive(Debug, Clone)]
struct Answer {
    op: Op,
    key: Option<String>,
    status: u16,
    code: Option<String>,
    /// The key a creation or rotation made: id and secret.
    made: Option<(String, String)>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn act(admin: &Admin, rng: &mut StdRng, known: &Mutex<Vec<String>>) -> Answer {
    let op = [
        Op::Suspend,
        Op::Resume,
        Op::Update,
        Op::CreateKey,
        Op::Rotate,
        Op::Rotate,
        Op::Revoke,
    ][rng.random_range(0..7)];
    let key = {
        let keys = known.lock().unwrap();
        keys[rng.random_range(0..keys.len())].clone()
    };
    let r = match op {
        Op::Suspend => admin.post("/tenants/acme/suspend", &json!({})).await,
        Op::Resume => admin.post("/tenants/acme/resume", &json!({})).await,
        Op::Update => {
            let shown = admin.get("/tenants/acme").await.body;
            let mut m = shown["manifest"].clone();
            m["plugins"]["guardrail"]["settings"]["max_lines"] =
                json!(rng.random_range(10..60).to_string());
            let revision = shown["revision"].to_string();
            admin
                .put("/tenants/acme", &m, &[("if-match", revision.as_str())])
                .await
        }
        Op::CreateKey => {
            admin
                .post(
                    "/tenants/acme/keys",
                    &json!({ "name": "model", "scopes": ["orders:read"] }),
                )
                .await
        }
        Op::Rotate => {
            let grace = if rng.random_bool(0.5) { 0 } else { 3600 };
            admin
                .post(
                    &format!("/tenants/acme/keys/{key}/rotate"),
                    &json!({ "graceSeconds": grace }),
                )
                .await
        }
        Op::Revoke => {
            admin
                .post(&format!("/tenants/acme/keys/{key}/revoke"), &json!({}))
                .await
        }
    };
    let made = (r.status == 201).then(|| {
        (
            r.body["id"].as_str().unwrap().to_string(),
            r.body["secret"].as_str().unwrap().to_string(),
        )
    });
    if let Some((id, _)) = &made {
        known.lock().unwrap().push(id.clone());
    }
    Answer {
        op,
        key: matches!(op, Op::Rotate | Op::Revoke).then_some(key),
        status: r.status,
        code: r.body["error"]["code"].as_str().map(str::to_string),
        made,
    }
}

async fn concurrent_operators_leave_one_legal_history(kind: Kind) {
    let seed = env_u64("OMS_MODEL_SEED").unwrap_or_else(rand::random);
    let ops = env_u64("OMS_MODEL_OPS").unwrap_or(12) as usize;
    eprintln!("access model: seed {seed} ({kind:?}, {OPERATORS} operators × {ops} changes)");
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let admin = Admin::new(&srv.url);

    let mut secrets: HashMap<String, String> = HashMap::new();
    for _ in 0..3 {
        let r = admin
            .post(
                "/tenants/acme/keys",
                &json!({ "name": "seed", "scopes": ["orders:read"] }),
            )
            .await;
        secrets.insert(
            r.body["id"].as_str().unwrap().into(),
            r.body["secret"].as_str().unwrap().into(),
        );
    }
    let known = Arc::new(Mutex::new(secrets.keys().cloned().collect::<Vec<_>>()));
    let start_revision = admin.get("/tenants/acme").await.body["revision"]
        .as_i64()
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..OPERATORS {
        let (admin, known) = (admin.clone(), known.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..ops {
                answers.push(act(&admin, &mut rng, &known).await);
            }
            answers
        }));
    }
    let mut answers: Vec<Answer> = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    for a in &answers {
        if let Some((id, secret)) = &a.made {
            secrets.insert(id.clone(), secret.clone());
        }
    }
    let fail = |what: String| -> ! { panic!("seed {seed}: {what}\nanswers: {answers:#?}") };

    // Every answer is one a legal history can give.
    for a in &answers {
        let legal = matches!(
            (a.op, a.status, a.code.as_deref()),
            (
                Op::Suspend | Op::Resume | Op::Update | Op::Revoke,
                200,
                None
            ) | (Op::CreateKey | Op::Rotate, 201, None)
                | (
                    Op::Suspend | Op::Resume | Op::Update | Op::Rotate | Op::Revoke,
                    409,
                    Some("STATE_CONFLICT"),
                )
        );
        if !legal {
            fail(format!("{a:?} is not an answer this change can get"));
        }
    }
    let ok = |op: Op| {
        answers
            .iter()
            .filter(|a| a.op == op && a.status < 300)
            .count() as i64
    };

    // Suspends and resumes that succeeded alternate, starting active.
    let tenant = admin.get("/tenants/acme").await.body;
    let (s, r) = (ok(Op::Suspend), ok(Op::Resume));
    let expected = match s - r {
        0 => "ACTIVE",
        1 => "SUSPENDED",
        _ => fail(format!(
            "{s} suspends and {r} resumes succeeded: they cannot alternate"
        )),
    };
    if tenant["status"] != expected {
        fail(format!(
            "status {} after {s} suspends and {r} resumes",
            tenant["status"]
        ));
    }

    // One revision per successful change, no more, no fewer.
    let changes = [
        Op::Suspend,
        Op::Resume,
        Op::Update,
        Op::CreateKey,
        Op::Rotate,
        Op::Revoke,
    ]
    .into_iter()
    .map(ok)
    .sum::<i64>();
    let revision = tenant["revision"].as_i64().unwrap();
    if revision != start_revision + changes {
        fail(format!(
            "revision {revision}, expected {start_revision} + {changes}"
        ));
    }

    // Each key: rotated at most once, revoked at most once, as answered.
    let keys = admin.get("/tenants/acme/keys").await.body;
    let keys: HashMap<String, Value> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k.clone()))
        .collect();
    for (id, k) in keys.iter().filter(|(id, _)| secrets.contains_key(*id)) {
        let of = |op: Op, status: u16| {
            answers
                .iter()
                .filter(|a| a.op == op && a.key.as_deref() == Some(id) && a.status == status)
                .collect::<Vec<_>>()
        };
        let (rotations, revokes) = (of(Op::Rotate, 201), of(Op::Revoke, 200));
        if rotations.len() > 1 || revokes.len() > 1 {
            fail(format!(
                "key {id} rotated {} and revoked {} times",
                rotations.len(),
                revokes.len()
            ));
        }
        let successor = rotations
            .first()
            .and_then(|a| a.made.as_ref())
            .map(|m| m.0.as_str());
        if k["replacedBy"].as_str() != successor {
            fail(format!(
                "key {id} replaced by {} but answered {successor:?}",
                k["replacedBy"]
            ));
        }
        if k["revokedAt"].is_null() == (revokes.len() == 1) {
            fail(format!(
                "key {id} revoked {} but {} revoke succeeded",
                k["revokedAt"],
                revokes.len()
            ));
        }
        // A refusal is deserved only by a key someone rotated or revoked.
        for refused in of(Op::Rotate, 409) {
            if k["replacedBy"].is_null() && k["revokedAt"].is_null() {
                fail(format!("rotating live key {id} was refused: {refused:?}"));
            }
        }
        if !of(Op::Revoke, 409).is_empty() && k["revokedAt"].is_null() {
            fail(format!("revoking live key {id} was refused"));
        }
    }
    for a in answers.iter().filter(|a| a.made.is_some()) {
        let id = &a.made.as_ref().unwrap().0;
        if !keys.contains_key(id) {
            fail(format!("key {id} was answered but is not stored"));
        }
    }

    // Every key works exactly as its final state says (on a resumed tenant).
    if expected == "SUSPENDED" {
        assert_eq!(
            admin.post("/tenants/acme/resume", &json!({})).await.status,
            200
        );
    }
    for (id, secret) in &secrets {
        let k = &keys[id];
        let live = matches!(k["status"].as_str(), Some("ACTIVE" | "ROTATING"));
        let want = if live { 200 } else { 401 };
        let api = Api::new(&srv.url, "acme", secret);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = api.get("/orders?limit=1").await.status;
            if got == want {
                break;
            }
            if Instant::now() > deadline {
                fail(format!(
                    "key {id} ({}) answered {got}, expected {want}",
                    k["status"]
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

on_both_backends!(concurrent_operators_leave_one_legal_history);
