//! Crash safety: SIGKILL the host twice while orders pour in, restart it,
//! and check against the payment provider's ledger and the stock that no
//! accepted order was lost, every saga finished, no payment was captured
//! twice and no stock drifted; the same with the kill landing while the
//! group-commit writer holds many sagas' writes; and with the demo
//! provider killed along with the host.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::load::{self, Accepted, Psp};
use support::{Db, Kind, Server};

async fn sigkill_under_load_loses_nothing(kind: Kind) {
    let psp = Psp::start().await;
    let db = Db::new(kind).await;
    let mut srv = Server::start_with_psp(&db, &psp.url).await;
    let accepted: Accepted = Arc::default();

    for round in 0..2 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = load::load(load::hosts(&[&srv.url]), accepted.clone(), stop.clone());
        let before = accepted.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while accepted.lock().unwrap().len() < before + 120 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        srv.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        srv.spawn().await;
        tokio::time::sleep(Duration::from_millis(300 * (round + 1))).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
    }

    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 240, "load too small: {}", accepted.len());
    load::check_books(&srv.url, &psp.url, &accepted).await;
    assert_eq!(srv.metric("illegal_transitions_total").await, 0);
}

/// The host's gauge of writes queued for or inside a group-commit batch.
async fn writes_in_flight(srv: &Server) -> Option<u64> {
    let text = reqwest::get(format!("{}/metrics", srv.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oms_db_writes_in_flight "))
        .and_then(|v| v.trim().parse().ok())
}

/// Group commit: SIGKILL the host the moment it reports many writes inside
/// its writer (several sagas' transitions and new orders in one batch,
/// uncommitted), three times; afterwards no acknowledged order is lost,
/// every saga finished, nothing was applied twice, and the provider's ledger
/// and the stock balance.
async fn sigkill_mid_batch_loses_nothing(kind: Kind) {
    let psp = Psp::start().await;
    let db = Db::new(kind).await;
    let mut srv = Server::start_with_psp(&db, &psp.url).await;
    let accepted: Accepted = Arc::default();
    let mut killed_with = Vec::new();

    for _ in 0..3 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = load::load(load::hosts(&[&srv.url]), accepted.clone(), stop.clone());
        let before = accepted.lock().unwrap().len();
        // Wait for the condition itself: some orders in, and a batch in the
        // writer with several writes in it (8 clients and their sagas keep
        // it busy).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if accepted.lock().unwrap().len() >= before + 40
                && let Some(n) = writes_in_flight(&srv).await
                && n >= 4
            {
                killed_with.push(n);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the writer never held 4 writes at once under load"
            );
        }
        srv.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        srv.spawn().await;
    }

    let accepted = accepted.lock().unwrap().clone();
    assert!(!accepted.is_empty(), "no order was accepted");
    load::check_books(&srv.url, &psp.url, &accepted).await;
    assert_eq!(srv.metric("illegal_transitions_total").await, 0);
    eprintln!(
        "killed with {killed_with:?} writes in flight; {} orders accepted",
        accepted.len()
    );
}

/// The demo setup: the sandbox provider inside `oms serve`, killed with it.
/// A provider that forgot its payment intents on restart left sagas STUCK
/// ("no such payment_intent" at capture); this one keeps them in its
/// journal, so after two kills every saga finishes and the ledger balances.
async fn sigkill_with_the_provider_in_process_leaves_no_saga_stuck(kind: Kind) {
    let db = Db::new(kind).await;
    let mut srv = Server::start(&db).await;
    let accepted: Accepted = Arc::default();
    for _ in 0..2 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = load::load(load::hosts(&[&srv.url]), accepted.clone(), stop.clone());
        let before = accepted.lock().unwrap().len();
        let ledger_before = srv.ledger().await.len();
        // Killed once orders and payments are flowing: sagas are between
        // authorize and capture at that moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted.lock().unwrap().len() < before + 60
            || srv.ledger().await.len() < ledger_before + 40
        {
            assert!(Instant::now() < deadline, "no load reached the provider");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        srv.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        srv.spawn().await;
    }
    let accepted = accepted.lock().unwrap().clone();
    load::check_books(&srv.url, &srv.psp_url, &accepted).await;
    assert_eq!(srv.metric("sagas_stuck_total").await, 0);
    assert_eq!(srv.metric("illegal_transitions_total").await, 0);
}

on_both_backends!(
    sigkill_under_load_loses_nothing,
    sigkill_mid_batch_loses_nothing,
    sigkill_with_the_provider_in_process_leaves_no_saga_stuck
);
