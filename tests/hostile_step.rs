//! A hostile saga step, built from plugins/hostile-step and uploaded as
//! acme's loyalty step: contained by its budget and its state quota, while
//! the host keeps serving and another tenant keeps its latency. On both
//! databases.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::{Db, Kind, Server, order, saga_times};

/// Orders of acme for each of `attacks`' customers, from two clients at
/// once (their ids with the customer each), while globex places 20 orders
/// one after another: globex's saga times.
async fn globex_beside_acme_load(
    srv: &Server,
    attacks: &[(&'static str, Option<&'static str>)],
) -> (Vec<f64>, Vec<(&'static str, String)>) {
    let acme = srv.api("acme");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let acme = acme.clone();
            let customers: Vec<&'static str> = attacks.iter().map(|(c, _)| *c).collect();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for customer in customers {
                    let id = acme
                        .place(&order(customer, "WIDGET-1", 1, "tok_visa"))
                        .await;
                    placed.push((customer, id));
                }
                placed
            })
        })
        .collect();
    let during = saga_times(&srv.api("globex"), 20).await;
    let mut placed = Vec::new();
    for c in clients {
        placed.extend(c.await.unwrap());
    }
    for (_, id) in &placed {
        acme.settle(id).await;
    }
    (during, placed)
}

/// A hostile saga step (`plugins/hostile-step`), uploaded and activated as
/// acme's loyalty step: loops, memory bombs and an 8 MB output fail the
/// step at once (not retried: they would fail again) and the saga turns
/// back; huge values, a million keys, writes past the quota and a million
/// reads are cut off by the step's state quota, so what is committed stays
/// within it; the host keeps serving and globex's sagas go on. Their
/// latency is recorded idle, beside the same acme orders with the real
/// loyalty step, and beside them with the hostile one.
async fn a_hostile_step_is_contained(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let attacks = [
        ("loop", Some("CANCELLED")),
        ("alloc", Some("CANCELLED")),
        ("output", Some("CANCELLED")),
        ("huge-value", Some("CONFIRMED")),
        ("past-quota", Some("CONFIRMED")),
        // A million writes or reads, all but the quota's refused: done, or
        // out of fuel first.
        ("many-keys", None),
        ("many-reads", None),
    ];
    let globex = srv.api("globex");
    let idle = saga_times(&globex, 20).await;
    let (benign, _) = globex_beside_acme_load(&srv, &attacks).await;

    support::upload_and_activate(&srv, "acme", "step:loyalty-points", "hostile_step").await;
    let (during, placed) = globex_beside_acme_load(&srv, &attacks).await;
    let acme = srv.api("acme");
    for (customer, id) in placed {
        let done = acme.settle(&id).await;
        let status = done["status"].as_str().unwrap().to_string();
        match attacks.iter().find(|(c, _)| *c == customer).unwrap().1 {
            Some(expected) => assert_eq!(status, expected, "{customer}: {done}"),
            None => assert!(
                ["CONFIRMED", "CANCELLED"].contains(&status.as_str()),
                "{customer}: {done}"
            ),
        }
        let events = acme.get(&format!("/orders/{id}/events")).await.body;
        // Out of fuel, out of memory, an answer too large: it would
        // fail again on the same order and state, so it is not retried.
        if status == "CANCELLED" {
            let failed = events["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "step.failed")
                .count();
            assert_eq!(failed, 1, "{customer}: {events}");
        }
        assert!(
            events.to_string().len() < 64 << 10,
            "{customer}: history is {} bytes",
            events.to_string().len()
        );
    }
    // Only what the quota let through was committed.
    let state = |key: &str| {
        let acme = acme.clone();
        let key = key.to_string();
        async move {
            acme.get(&format!("/steps/loyalty-points/state/{key}"))
                .await
                .status
        }
    };
    assert_eq!(
        state("big").await,
        404,
        "a value over the limit is never written"
    );
    assert_eq!(state("k-0").await, 200);
    assert_eq!(state("k-99").await, 200);
    assert_eq!(
        state("k-100").await,
        404,
        "past the write quota of 100 keys"
    );
    assert_eq!(
        reqwest::get(format!("{}/healthz", srv.url))
            .await
            .unwrap()
            .status(),
        200
    );
    let peak = srv.peak_rss_mib();
    assert!(peak < 1024, "host peaked at {peak} MiB");
    let p = |v: &[f64], q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    // Recorded, not asserted: timing belongs to benchmarks, not tests.
    eprintln!(
        "{kind:?}: globex saga ms idle p50 {:.1} p95 {:.1}; beside acme's orders with its loyalty step p50 {:.1} p95 {:.1}; with the hostile step p50 {:.1} p95 {:.1}; host peak {peak} MiB",
        p(&idle, 0.5),
        p(&idle, 0.95),
        p(&benign, 0.5),
        p(&benign, 0.95),
        p(&during, 0.5),
        p(&during, 0.95)
    );
}

on_both_backends!(a_hostile_step_is_contained);
