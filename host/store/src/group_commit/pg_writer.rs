//! The PostgreSQL writer: its loop, on a thread and runtime of its own
//! (see [`super::Writer::start`]), and the connection it writes on.

use super::careful::answer_unavailable;
use super::fast::Fast;
use super::{Backend, Job, MAX_BATCH, Task, answer_fast, lock_order};
use crate::{Result, StoreError, counted};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use tokio::sync::mpsc;

impl Task {
    /// PostgreSQL: takes whatever is queued, batch after batch, on the
    /// writer's own connection ([`PgLink`]).
    pub(super) async fn run_pg(self, mut queue: mpsc::Receiver<Job>) {
        let mut link = PgLink::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            counted::batch(batch.len());
            self.write_batch(std::mem::take(&mut batch), &mut link)
                .await;
        }
    }

    /// PostgreSQL: writes `jobs` on `link` and answers each: fast, or if
    /// that fails, carefully.
    async fn write_batch(&self, jobs: Vec<Job>, link: &mut PgLink) {
        let mut jobs = jobs;
        // Stock rows are locked in one order by every host's writer, so
        // two batches on PostgreSQL cannot each hold what the other waits
        // for: writes without stock first, then releases, then reservations
        // by SKU. (Members are independent writes, so their order within a
        // batch is free; a tie keeps arrival order.)
        jobs.sort_by_cached_key(|j| lock_order(&j.write));
        let Backend::Postgres(pool) = &self.backend else {
            return self.write_carefully(jobs, None).await;
        };
        let fast = match link.get(pool).await {
            Ok(conn) => self.fast_pg(conn, &jobs).await,
            Err(e) => Err(e),
        };
        match fast {
            Ok(Fast::Committed(versions)) => return answer_fast(jobs, versions),
            Ok(Fast::Failed) => {}
            Err(e) => {
                // The careful path starts on a connection known to be good.
                tracing::debug!(error = %e, "a batch's fast path failed; writing it carefully on a new connection");
                link.drop_connection();
            }
        }
        match link.get(pool).await {
            Ok(conn) => self.write_carefully(jobs, Some(conn)).await,
            Err(e) => answer_unavailable(jobs, &e),
        }
    }
}

/// The longest the writer waits for a new connection (the pool's own
/// acquire timeout): its callers are answered unavailable and retry.
const PG_CONNECT: std::time::Duration = std::time::Duration::from_secs(10);

/// The writer's connection: the pool's options, named (so an operator can
/// tell it in `pg_stat_activity`), and planning each statement for the
/// values it is run with. A prepared statement's generic plan is made once
/// and kept for the connection's life; the writer connects when the
/// database may be new, and the generic plan of its order update, made
/// while `orders` was empty, joined the batch's rows to a scan of the whole
/// table: every batch read every order (at 20,000 orders, 1,505 scans read
/// 13 million rows, and sagas/s fell from about 750 to 528). Planning per
/// call costs a little on each of a batch's few statements.
pub fn writer_options(pool: &PgConnectOptions) -> PgConnectOptions {
    pool.clone()
        .application_name("oms-writer")
        .options([("plan_cache_mode", "force_custom_plan")])
}

/// PostgreSQL: the writer's own connection, opened with the pool's options
/// on first use and kept while it works. On the pool, each batch's
/// connection was pinged as it went back (a round trip that wakes the
/// server's backend) and taken again through the pool's hand-offs.
#[derive(Default)]
struct PgLink {
    conn: Option<(PgConnection, std::time::Instant)>,
}

impl PgLink {
    /// The connection to write on: the kept one (pinged first if idle a
    /// while), or a new one.
    async fn get(&mut self, pool: &PgPool) -> Result<&mut PgConnection> {
        let kept = crate::readers::still_open(self.conn.take(), "the writer's").await;
        let conn = match kept {
            Some(conn) => conn,
            None => {
                let options = writer_options(&pool.connect_options());
                tokio::time::timeout(PG_CONNECT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(
                            "the PostgreSQL writer could not connect in time".into(),
                        )
                    })??
            }
        };
        let (conn, _) = self.conn.insert((conn, std::time::Instant::now()));
        Ok(conn)
    }

    /// Closes nothing gracefully: a connection a failed batch was on is
    /// let go, and the next batch opens another.
    fn drop_connection(&mut self) {
        self.conn = None;
    }
}
