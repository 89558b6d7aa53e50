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
        // One statement per chunk rather than one per message: the relay marks
        // thousands a second and SQLite has a single writer.
        for chunk in ids.chunks(200) {
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE outbox SET published_at = $1 WHERE id IN ({})",
                placeholders.join(", ")
            );
            on_pool!(self, write, |pool| {
                let mut query = sqlx::query(&sql).bind(now);
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(pool).await?;
            });
        }
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
