//! Crash safety: SIGKILL the host twice while orders pour in, restart it,
//! and check against the payment provider's ledger and the stock that no
//! accepted order was lost, every saga finished, no payment was captured
//! twice and no stock drifted.
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

on_both_backends!(sigkill_under_load_loses_nothing);
