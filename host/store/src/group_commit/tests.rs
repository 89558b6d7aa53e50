//! The SQLite writer: its own connection, set for durability; the write
//! turn it shares with the pool's writes, so neither waits on the other
//! for long and neither meets SQLite's lock; its commits checkpointed off
//! its thread.

use super::{Write, Writer};
use crate::{Backend, SqlStore};
use oms_domain::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Many tasks writing through the writer without pause, more than a batch
/// holds, so the queue never runs dry: `(stop, written, tasks)`.
fn keep_writing(
    writer: &Arc<Writer>,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    writers(writer, 3 * super::MAX_BATCH)
}

/// `count` tasks writing through the writer without pause.
fn writers(
    writer: &Arc<Writer>,
    count: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..count {
        let (writer, stop, written) = (writer.clone(), stop.clone(), written.clone());
        let tenant = TenantId::parse(&format!("t{}", n % 8)).expect("a tenant id");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                writer.write(numbers(&tenant)).await.expect("numbers taken");
                written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    (stop, written, tasks)
}

async fn until_written(written: &AtomicU64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while written.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "the writer wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A second writer on the store's backend, with a connection of its own,
/// as the store's is.
fn second_writer(store: &SqlStore, dir: &std::path::Path) -> Arc<Writer> {
    let own = super::own::open(&dir.join("oms.db")).expect("the writer's connection");
    Arc::new(Writer::start(
        store.backend.clone(),
        Some(own),
        Arc::new(AtomicBool::new(false)),
    ))
}

/// One of the pool's writes as the store's own are made (`on_pool!`, so
/// holding the write turn): a transaction that reads, then writes what it
/// read. Were it to run beside the writer's commits outside the turn, its
/// first write would fail whenever the writer committed after its read
/// (`SQLITE_BUSY_SNAPSHOT`: SQLite cannot let it write on a stale snapshot,
/// and no busy timeout retries that).
async fn read_then_write(store: &SqlStore, n: i64) -> crate::Result<()> {
    crate::on_pool!(store, write, |pool| {
        let mut tx = pool.begin().await?;
        let seen: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(last), 0) FROM order_numbers WHERE tenant_id LIKE 't%'",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO order_numbers (tenant_id, last) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET last = excluded.last",
        )
        .bind(format!("direct{n}"))
        .bind(seen)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// While batches keep coming (the writer never idle), the pool's writes
/// still get in, each within its turn, and none fails: the writer and the
/// pool take turns rather than meeting in SQLite's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_writes_take_turns_with_the_writers_batches() {
    let (store, _write, dir) = embedded("turns").await;
    let writer = second_writer(&store, &dir);
    let (stop, written, tasks) = keep_writing(&writer);
    until_written(&written, 4 * super::MAX_BATCH as u64).await;
    let before = written.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for n in 0..200 {
        let done = tokio::time::timeout(Duration::from_secs(60), read_then_write(&store, n)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("waited over a minute for its turn".into()),
        }
    }
    // The writer went on meanwhile: the turns were shared, not taken over.
    until_written(&written, before + 1).await;
    wind_down(&stop, tasks, writer, store, &dir).await;
    assert!(
        failures.is_empty(),
        "{} of 200 writes on the pool failed beside the writer: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// Stops the writing tasks, then the second writer, then the store, and
/// removes its directory.
async fn wind_down(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: Arc<Writer>,
    store: SqlStore,
    dir: &std::path::Path,
) {
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer task");
    }
    Arc::into_inner(writer)
        .expect("the tasks' handles are gone")
        .stop()
        .await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The writer's connection is as durable as the pool's: every commit on
/// disk before it returns, foreign keys enforced, the same checkpoint
/// backstop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_connection_is_set_as_the_pools() {
    let (store, _write, dir) = embedded("own").await;
    let own = super::own::open(&dir.join("oms.db")).expect("the writer's connection");
    let pragma = |name: &str| -> i64 {
        own.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect("a pragma")
    };
    assert_eq!(pragma("synchronous"), 2, "synchronous is not FULL");
    assert_eq!(pragma("foreign_keys"), 1, "foreign keys are not enforced");
    assert_eq!(
        pragma("wal_autocheckpoint"),
        i64::from(crate::checkpoint::BACKSTOP_PAGES)
    );
    let mode: String = own
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("the journal mode");
    assert_eq!(mode, "wal");
    drop(own);
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

/// A lone writer (each write sent once the last committed, as a lone
/// saga's) finds one write at a time and never waits to fill a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_never_waits_for_more() {
    let (store, _write, dir) = embedded("lone").await;
    let tenant = TenantId::parse("t0").expect("a tenant id");
    let before = crate::db_counts();
    for _ in 0..200 {
        store
            .writer
            .write(numbers(&tenant))
            .await
            .expect("numbers taken");
    }
    let after = crate::db_counts();
    assert_eq!(after.batches - before.batches, 200, "one batch a write");
    assert_eq!(after.lingered_batches, before.lingered_batches);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes piling up while the writer commits (a few writers, none waiting
/// for another) make it wait a moment to fill its batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_piling_up_wait_to_fill_the_batch() {
    let (store, _write, dir) = embedded("linger").await;
    let writer = second_writer(&store, &dir);
    let before = crate::db_counts().lingered_batches;
    let (stop, written, tasks) = writers(&writer, 8);
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::db_counts().lingered_batches == before {
        assert!(
            Instant::now() < deadline,
            "no batch waited: {} writes",
            written.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wind_down(&stop, tasks, writer, store, &dir).await;
}
