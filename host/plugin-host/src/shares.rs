//! Per-tenant shares of a host-wide limit: each tenant gets a semaphore of
//! its own, taken before the host-wide one, so a tenant at its share queues
//! behind itself and never holds a host-wide slot while it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub struct TenantShares {
    per_tenant: usize,
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TenantShares {
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant,
            shares: Mutex::default(),
        }
    }

    /// The tenant's semaphore, made on first use.
    pub fn of(&self, tenant: &str) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        // Every call passes here: no allocation once the tenant is known.
        if let Some(share) = shares.get(tenant) {
            return share.clone();
        }
        shares
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }
}
