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

    /// The tenants whose share is all taken now, and the room the others
    /// that have used theirs have left (a tenant not seen yet is in neither).
    pub fn exhausted(&self) -> (Vec<String>, usize) {
        let shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        let mut full = Vec::new();
        let mut room = 0;
        for (tenant, share) in shares.iter() {
            match share.available_permits() {
                0 => full.push(tenant.clone()),
                n => room += n,
            }
        }
        (full, room)
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

#[cfg(test)]
mod tests {
    use super::TenantShares;

    #[test]
    fn a_tenant_is_exhausted_while_its_whole_share_is_taken() {
        let shares = TenantShares::new(2);
        assert_eq!(shares.exhausted(), (vec![], 0));
        let acme = shares.of("acme");
        let _globex = shares.of("globex");
        let first = acme.clone().try_acquire_owned().unwrap();
        assert_eq!(shares.exhausted(), (vec![], 3));
        let second = acme.clone().try_acquire_owned().unwrap();
        assert_eq!(shares.exhausted(), (vec!["acme".to_string()], 2));
        drop((first, second));
        assert_eq!(shares.exhausted(), (vec![], 4));
    }
}
