//! The transactional outbox: public events written with the transition that
//! caused them, then relayed to the transport and pruned.

use super::{Result, SqlStore, on_pool};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: String,
    pub topic: String,
    pub event_type: String,
    pub payload: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRecord {
    pub id: String,
    pub tenant_id: String,
    pub order_id: String,
    pub topic: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
}

impl SqlStore {
    /// The oldest unpublished messages.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, OutboxRecord>(
                "SELECT id, tenant_id, order_id, topic, event_type, payload, created_at FROM outbox
                 WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn mark_published(&self, ids: &[String], now: i64) -> Result<()> {
        on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            for id in ids {
                sqlx::query("UPDATE outbox SET published_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes messages published before `before`, so the table stays small.
    pub async fn prune_published(&self, before: i64) -> Result<u64> {
        on_pool!(self, write, |pool| {
            Ok(sqlx::query(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    pub async fn unpublished_count(&self) -> Result<i64> {
        on_pool!(self, read, |pool| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(pool)
                    .await?,
            )
        })
    }
}
