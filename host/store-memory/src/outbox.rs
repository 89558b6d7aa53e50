//! The outbox: messages queued by committed transitions, claimed and
//! completed by the relay.

use super::MemoryStore;
use async_trait::async_trait;
use oms_store::{Outbox, OutboxClaim, OutboxListener, Result};
use std::collections::HashSet;

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim_outbox(&self, now: i64, limit: i64) -> Result<OutboxClaim> {
        self.check("claim_outbox")?;
        let records = self
            .tables()
            .outbox
            .iter()
            .filter(|q| q.available_at <= now)
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|q| q.record.clone())
            .collect();
        Ok(OutboxClaim::detached(records))
    }

    async fn complete(&self, claim: OutboxClaim, _now: i64) -> Result<()> {
        self.check("complete")?;
        let ids: HashSet<&str> = claim.records.iter().map(|r| r.id.as_str()).collect();
        self.tables()
            .outbox
            .retain(|q| !ids.contains(q.record.id.as_str()));
        Ok(())
    }

    async fn release(&self, _claim: OutboxClaim) -> Result<()> {
        self.check("release")
    }

    async fn next_outbox_due(&self, now: i64) -> Result<Option<i64>> {
        self.check("next_outbox_due")?;
        let t = self.tables();
        Ok(t.outbox
            .iter()
            .map(|q| q.available_at)
            .filter(|at| *at > now)
            .min())
    }

    async fn oldest_due_unpublished(&self, now: i64) -> Result<Option<i64>> {
        self.check("oldest_due_unpublished")?;
        let t = self.tables();
        Ok(t.outbox
            .iter()
            .map(|q| q.available_at)
            .filter(|at| *at <= now)
            .min())
    }

    async fn unpublished_count(&self) -> Result<i64> {
        self.check("unpublished_count")?;
        Ok(self.tables().outbox.len() as i64)
    }

    async fn outbox_listener(&self) -> Result<Option<OutboxListener>> {
        Ok(None)
    }
}
