//! The SQLite writer's kept statements: kept from one batch to the next,
//! and let go (finalized on the lent handle) once the writer is idle and
//! when it stops, so sqlx can close the connection. A statement of ours
//! left open there makes sqlx's `sqlite3_close` fail, and sqlx panics.

use super::{KEEP_IDLE, Write, Writer};
use crate::{Backend, SqlStore};
use oms_domain::TenantId;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Text only the writer's order-number allocation prepares on the write
/// connection (sqlx would only on the careful path, which no test here takes).
const NEEDLE: &str = "INSERT INTO order_numbers";

/// How many statements open on the write connection's handle read [`NEEDLE`].
async fn open_statements(write: &sqlx::SqlitePool) -> usize {
    let mut conn = write.acquire().await.expect("the write connection");
    let mut locked = conn.lock_handle().await.expect("its handle");
    let db = locked.as_raw_handle().as_ptr();
    let mut open = 0;
    // SAFETY: sqlx's worker lends the handle while `locked` lives and makes
    // no call on it meanwhile; walking its list of statements and reading
    // their texts changes nothing.
    #[allow(unsafe_code)]
    unsafe {
        let mut stmt = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let sql = rusqlite::ffi::sqlite3_sql(stmt);
            if !sql.is_null()
                && std::ffi::CStr::from_ptr(sql)
                    .to_string_lossy()
                    .contains(NEEDLE)
            {
                open += 1;
            }
            stmt = rusqlite::ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    open
}

/// Waits (a generous deadline) until none of the writer's statements is open.
async fn until_none_open(write: &sqlx::SqlitePool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_statements(write).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the writer's statements were never finalized"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn embedded(test: &str) -> (SqlStore, sqlx::SqlitePool, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "oms-{test}-{}-{}",
        std::process::id(),
        oms_clock::now_ms()
    ));
    let store = SqlStore::open_embedded(&dir)
        .await
        .expect("the store opens");
    let Backend::Sqlite { write, .. } = &store.backend else {
        unreachable!("an embedded store is SQLite")
    };
    let write = write.clone();
    (store, write, dir)
}

fn numbers(tenant: &TenantId) -> Write {
    Write::Numbers {
        tenant: tenant.clone(),
        count: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_statements_are_let_go_once_the_writer_is_idle() {
    let (store, write, dir) = embedded("kept-idle").await;
    let tenant = TenantId::parse("acme").expect("a tenant id");
    let writer = Writer::keeping(
        store.backend.clone(),
        Arc::new(AtomicBool::new(false)),
        Duration::from_millis(50),
    );
    // Kept after a batch: seen right after a write (a few tries, since
    // they are let go 50 ms after the last one).
    let mut kept = false;
    for _ in 0..100 {
        writer.write(numbers(&tenant)).await.expect("numbers taken");
        if open_statements(&write).await > 0 {
            kept = true;
            break;
        }
    }
    assert!(
        kept,
        "the writer kept no statement from one batch to the next"
    );
    until_none_open(&write).await;
    // And prepared again for the next write.
    writer.write(numbers(&tenant)).await.expect("numbers taken");
    drop(writer);
    drop(store);
    until_none_open(&write).await;
    write.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_statements_are_let_go_when_the_writer_stops() {
    let (store, write, dir) = embedded("kept-stop").await;
    let tenant = TenantId::parse("acme").expect("a tenant id");
    // Idle far longer than this test: only stopping lets them go.
    let writer = Writer::keeping(
        store.backend.clone(),
        Arc::new(AtomicBool::new(false)),
        Duration::from_secs(3600),
    );
    assert!(KEEP_IDLE < Duration::from_secs(3600));
    writer.write(numbers(&tenant)).await.expect("numbers taken");
    writer.write(numbers(&tenant)).await.expect("numbers taken");
    assert!(
        open_statements(&write).await > 0,
        "the writer kept no statement after its batch"
    );
    // The queue closes: the writer finalizes them on its way out.
    drop(writer);
    until_none_open(&write).await;
    drop(store);
    write.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
