//! Tenant API keys as a host holds them: the sha256 of each secret with its
//! scopes and validity, looked up per request without the database.

use oms_domain::wire_enum;
use oms_store::ApiKeyRecord;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

wire_enum!(
    /// What a key may do. Each tenant endpoint needs exactly one.
    Scope {
        OrdersRead = "orders:read",
        OrdersWrite = "orders:write",
        InventoryRead = "inventory:read",
        InventoryWrite = "inventory:write",
        PluginsRead = "plugins:read",
        PluginsWrite = "plugins:write",
        FulfilmentWrite = "fulfilment:write",
        WebhooksRead = "webhooks:read",
        WebhooksWrite = "webhooks:write",
        StepsRead = "steps:read",
    }
);

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::InventoryRead,
        Scope::InventoryWrite,
        Scope::PluginsRead,
        Scope::PluginsWrite,
        Scope::FulfilmentWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::StepsRead,
    ];

    /// Parses a stored or requested list (space- or comma-separated).
    pub fn parse_list(raw: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::new();
        for word in raw.split([' ', ',']).filter(|w| !w.is_empty()) {
            let scope = Scope::parse(word).ok_or_else(|| {
                format!(
                    "unknown scope `{word}`; scopes are {}",
                    Scope::WIRE.join(", ")
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(scopes)
    }

    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The sha256 (hex) a secret is kept and looked up by.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret: 32 random bytes, prefixed so a leaked key is recognisable
/// (secret scanners match on `omsk_`).
pub fn new_secret() -> String {
    format!("omsk_{}", hex::encode(oms_clock::secret_bytes()))
}

/// Keys that only demo mode honours: a manifest's plain-text `dev_api_keys`.
pub const DEMO_KEY_PREFIX: &str = "dev_";

#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
}

/// Why a key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Unknown, revoked or past its grace period: the same answer for all.
    Unknown,
    MissingScope(Scope),
}

/// A tenant's live keys, by the hash of their secret.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_hash: HashMap<String, KeyEntry>,
}

impl Keys {
    /// The keys valid now; demo keys only in demo mode.
    pub fn from_records(records: &[ApiKeyRecord], demo: bool, now: i64) -> Self {
        let by_hash = records
            .iter()
            .filter(|r| r.valid_at(now))
            .filter(|r| demo || !r.id.starts_with(DEMO_KEY_PREFIX))
            .map(|r| {
                let scopes = Scope::parse_list(&r.scopes).unwrap_or_else(|e| {
                    // Written only by this code, so a bad scope means a
                    // hand-edited row: grant nothing rather than guess.
                    tracing::error!(key = %r.id, error = %e, "stored key has an unknown scope");
                    Vec::new()
                });
                (
                    r.secret_hash.to_ascii_lowercase(),
                    KeyEntry {
                        id: r.id.clone(),
                        scopes,
                        expires_at: r.expires_at,
                    },
                )
            })
            .collect();
        Self { by_hash }
    }

    /// The key presented, if it may act with `scope` at `now`.
    pub fn check(&self, secret: &str, scope: Scope, now: i64) -> Result<&KeyEntry, KeyRefusal> {
        let entry = self
            .by_hash
            .get(&secret_hash(secret))
            .filter(|k| k.expires_at.is_none_or(|e| now < e))
            .ok_or(KeyRefusal::Unknown)?;
        if entry.scopes.contains(&scope) {
            Ok(entry)
        } else {
            Err(KeyRefusal::MissingScope(scope))
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: &str, secret: &str, scopes: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            tenant_id: "acme".into(),
            name: "k".into(),
            secret_hash: secret_hash(secret),
            scopes: scopes.into(),
            created_by: "t".into(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        }
    }

    #[test]
    fn a_key_acts_only_within_its_scopes_and_its_grace() {
        let mut rotated = record("key_old", "old", "orders:read");
        rotated.expires_at = Some(100);
        let mut revoked = record("key_gone", "gone", "orders:read");
        revoked.revoked_at = Some(5);
        let keys = Keys::from_records(
            &[
                record("key_a", "a", "orders:read orders:write"),
                rotated,
                revoked,
            ],
            false,
            10,
        );
        assert_eq!(keys.check("a", Scope::OrdersWrite, 10).unwrap().id, "key_a");
        assert_eq!(
            keys.check("a", Scope::PluginsWrite, 10).unwrap_err(),
            KeyRefusal::MissingScope(Scope::PluginsWrite)
        );
        assert!(keys.check("old", Scope::OrdersRead, 99).is_ok());
        assert_eq!(
            keys.check("old", Scope::OrdersRead, 100).unwrap_err(),
            KeyRefusal::Unknown
        );
        assert_eq!(
            keys.check("gone", Scope::OrdersRead, 10).unwrap_err(),
            KeyRefusal::Unknown
        );
        assert_eq!(
            keys.check("nope", Scope::OrdersRead, 10).unwrap_err(),
            KeyRefusal::Unknown
        );
    }

    #[test]
    fn demo_keys_work_only_in_demo_mode() {
        let records = [record("dev_acme_0", "acme-dev-key", "orders:read")];
        assert!(
            Keys::from_records(&records, true, 0)
                .check("acme-dev-key", Scope::OrdersRead, 0)
                .is_ok()
        );
        assert!(Keys::from_records(&records, false, 0).is_empty());
    }

    #[test]
    fn scope_lists_refuse_unknown_scopes() {
        assert_eq!(
            Scope::parse_list("orders:read, orders:read plugins:write").unwrap(),
            vec![Scope::OrdersRead, Scope::PluginsWrite]
        );
        assert!(
            Scope::parse_list("orders:delete")
                .unwrap_err()
                .contains("orders:delete")
        );
    }
}
