//! The careful path: a batch whose fast path failed, written member by
//! member, each under its own savepoint and answered with its own outcome.

use super::rows::{Value, insert_rows, order_values};
use super::{Backend, Job, Task, Write};
use crate::orders::{ORDER_COLUMNS, advance_numbers, allocate_numbers, complete_idempotency};
use crate::outbox::complete_published;
use crate::recorded::{delete_recorded, insert_recorded};
use crate::transition::{consume_command, update_order, write_effects};
use crate::{Result, StoreError, counted};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

impl Task {
    /// The careful path for `jobs`, each answered with its own outcome:
    /// on PostgreSQL on `pg`, the writer's connection; on SQLite on the pool.
    pub(super) async fn write_carefully(&self, jobs: Vec<Job>, pg: Option<&mut PgConnection>) {
        let mut jobs = jobs;
        counted::careful();
        match self.careful(&jobs, pg).await {
            Ok(answers) => {
                for (job, answer) in jobs.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => answer_unavailable(jobs, &e),
        }
    }

    /// The careful path: each member under its own savepoint, answered
    /// with its own outcome; `Err` when the batch as a whole failed
    /// (nothing committed).
    async fn careful(
        &self,
        jobs: &[Job],
        pg: Option<&mut PgConnection>,
    ) -> Result<Vec<Result<i64>>> {
        match (&self.backend, pg) {
            (Backend::Postgres(_), Some(conn)) => {
                let tx = counted::tx(conn.begin().await?);
                careful_in!(self, tx, jobs)
            }
            (Backend::Sqlite { write, .. }, _) => {
                let tx = counted::tx(write.begin().await?);
                careful_in!(self, tx, jobs)
            }
            (Backend::Postgres(_), None) => Err(StoreError::Unavailable(
                "the PostgreSQL writer has no connection".into(),
            )),
        }
    }
}

/// Answers every one of `jobs` that the batch could not be written.
pub(super) fn answer_unavailable(jobs: Vec<Job>, e: &StoreError) {
    tracing::warn!(error = %e, writes = jobs.len(), "a batch of saga writes failed; each will be retried by its caller");
    let e = e.to_string();
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::Unavailable(e.clone())));
    }
}

/// The careful path's statements in transaction `$tx`: each of `$jobs`
/// under its own savepoint; evaluates to `Result<Vec<Result<i64>>>`.
macro_rules! careful_in {
    ($task:expr, $tx:ident, $jobs:expr) => {{
        let mut $tx = $tx;
        let unpublish = $task.unpublish();
        let fan_out = crate::webhooks::fan_out_sql(&$task.backend);
        let dialect = $task.dialect();
        let mut answers = Vec::with_capacity($jobs.len());
        for job in $jobs {
            sqlx::query("SAVEPOINT member")
                .execute(counted::stmt(&mut *$tx))
                .await?;
            let answer: Result<i64> = async {
                match &job.write {
                    Write::Transition(t) => {
                        if let Some(command) = &t.consumes {
                            consume_command!($tx, unpublish, command);
                        }
                        let first_seq = update_order!($tx, t);
                        write_effects!($tx, t, first_seq);
                        Ok(t.expected_version + 1)
                    }
                    Write::Order(new) => {
                        let values = [order_values(new)];
                        insert_rows!(sqlx, $tx, "orders", ORDER_COLUMNS, &values);
                        write_effects!($tx, &new.effects, 1i64);
                        complete_idempotency!(sqlx, $tx, new);
                        if let (Some(sql), Some(number)) =
                            (dialect.advance_numbers, new.record.order_number)
                        {
                            advance_numbers!(sqlx, $tx, sql, &new.record.tenant_id, number);
                        }
                        Ok(0)
                    }
                    Write::Published { ids, now } => {
                        complete_published!(sqlx, $tx, ids, *now, &fan_out);
                        Ok(0)
                    }
                    Write::Recorded(calls) => {
                        insert_recorded!(sqlx, $tx, calls);
                        Ok(0)
                    }
                    Write::Numbers { tenant, count } => {
                        Ok(allocate_numbers!(sqlx, $tx, tenant, *count))
                    }
                    Write::Prune(prune) => Ok(delete_recorded!(sqlx, $tx, prune)),
                }
            }
            .await;
            if answer.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT member")
                    .execute(counted::stmt(&mut *$tx))
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT member")
                .execute(counted::stmt(&mut *$tx))
                .await?;
            answers.push(answer);
        }
        $tx.commit().await?;
        Ok(answers)
    }};
}
use careful_in;
