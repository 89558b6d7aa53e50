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
    writer.stop().await;
    assert_eq!(
        open_statements(&write).await,
        0,
        "left open by a stopped writer"
    );
    store.close().await;
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
    // The queue closes: the writer finalizes them on its way out, and
    // stop waits for that.
    writer.stop().await;
    assert_eq!(
        open_statements(&write).await,
        0,
        "left open by a stopped writer"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The writer holds the write connection from one batch to the next while
/// writes keep coming, but never so long that another user of the
/// connection (an operator's write, the careful path) waits for the queue
/// to run dry: here it never does, and a write on the pool still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_connection_is_shared_while_batches_keep_coming() {
    let (store, write, dir) = embedded("hold").await;
    let writer = Arc::new(Writer::keeping(
        store.backend.clone(),
        Arc::new(AtomicBool::new(false)),
        KEEP_IDLE,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // More writers than a batch holds: when a batch is answered the next
    // is already queued, so the queue never runs dry.
    let mut tasks = Vec::new();
    for n in 0..(3 * super::MAX_BATCH) {
        let (writer, stop, written) = (writer.clone(), stop.clone(), written.clone());
        let tenant = TenantId::parse(&format!("t{}", n % 8)).expect("a tenant id");
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.write(numbers(&tenant)).await.expect("numbers taken");
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Batches are flowing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while written.load(std::sync::atomic::Ordering::Relaxed) < 4 * super::MAX_BATCH as u64 {
        assert!(Instant::now() < deadline, "the writer wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        let mut conn = write.acquire().await.expect("the write connection");
        sqlx::query("INSERT INTO order_numbers (tenant_id, last) VALUES ('direct', 7)")
            .execute(&mut *conn)
            .await
            .expect("a write of its own");
    })
    .await;
    let during = written.load(std::sync::atomic::Ordering::Relaxed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer task");
    }
    assert!(
        got.is_ok(),
        "a write on the pool waited over a minute while the writer held the connection"
    );
    assert!(
        written.load(std::sync::atomic::Ordering::Relaxed) > 0 && during > 0,
        "no batch was written"
    );
    // Stopped before the pool closes: a statement it kept open would make
    // closing the connection fail (sqlx panics then).
    let writer = Arc::into_inner(writer).expect("the tasks' handles are gone");
    writer.stop().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// What the database file itself holds, without its write-ahead log: a
/// copy of the file alone, opened apart. (A copy taken while a checkpoint
/// writes may not open; that is "not yet" too.)
fn numbers_in_file_alone(dir: &std::path::Path, tenant: &str) -> Option<i64> {
    let copy = dir.join("alone.db");
    std::fs::copy(dir.join("oms.db"), &copy).ok()?;
    let conn = rusqlite::Connection::open(&copy).ok()?;
    conn.query_row(
        "SELECT last FROM order_numbers WHERE tenant_id = ?1",
        [tenant],
        |r| r.get(0),
    )
    .ok()
}

/// The writer's commits are copied into the database file by the
/// checkpoint thread soon after, not left in the log until the writer's own
/// commit passes SQLite's 1,000-page threshold (and checkpoints inside that
/// commit, holding up every write queued behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_commits_are_checkpointed_off_its_thread() {
    let (store, write, dir) = embedded("checkpoint").await;
    let mut conn = write.acquire().await.expect("the write connection");
    let threshold: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut *conn)
        .await
        .expect("the write connection's threshold");
    drop(conn);
    assert_eq!(
        threshold,
        i64::from(crate::checkpoint::BACKSTOP_PAGES),
        "the write connection checkpoints at SQLite's default, inside its commits"
    );
    let tenant = TenantId::parse("acme").expect("a tenant id");
    let before = crate::checkpoint_counts().runs;
    let mut last = 0;
    for _ in 0..3 {
        last = store
            .writer
            .write(numbers(&tenant))
            .await
            .expect("numbers taken");
    }
    // A few small commits, far below either threshold: only the checkpoint
    // thread can have put them in the file.
    let deadline = Instant::now() + Duration::from_secs(60);
    // (The count is taken after the checkpoint returns: wait for both.)
    while numbers_in_file_alone(&dir, "acme") != Some(last)
        || crate::checkpoint_counts().runs == before
    {
        assert!(
            Instant::now() < deadline,
            "the commits stayed in the write-ahead log: nothing checkpointed them"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
