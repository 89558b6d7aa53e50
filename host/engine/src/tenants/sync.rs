//! Tenants live in the database; each host builds what it runs from there
//! and rebuilds a tenant whenever its revision moves (every change to its
//! manifest, suspension or keys raises it), checked with the plugin sync,
//! so a change made on any host reaches every host within a second.
//! Manifest files are imported at start, idempotently.

use super::keys::{DEMO_KEY_PREFIX, Keys, Scope, secret_hash};
use super::manifest::build_tenant;
use super::{LoadOptions, SpecFormat, Target, Tenant, TenantError, TenantSpec, Tenants};
use crate::Platform;
use crate::metrics::Metrics;
use oms_domain::TenantId;
use oms_plugin_host::{PluginHost, Slot, builtin};
use oms_store::{ApiKeyRecord, NewApiKey, StoreError, TenantRecord, TenantWrite};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("storage unavailable: {0}")]
    Store(#[from] StoreError),
}

/// Each slot's and step's component bytes for a manifest file: builtins
/// and paths (relative to the file's directory).
pub fn file_components(
    file: &str,
    spec: &TenantSpec,
    base: Option<&Path>,
) -> Result<HashMap<Target, Vec<u8>>, TenantError> {
    let mut out = HashMap::new();
    for (target, component) in spec.components() {
        let bytes = match builtin_bytes(file, target, component)? {
            Some(b) => b,
            None => {
                let path = base
                    .map(|b| b.join(component))
                    .unwrap_or_else(|| PathBuf::from(component));
                std::fs::read(&path).map_err(|e| TenantError::Io(path, e))?
            }
        };
        out.insert(target, bytes);
    }
    Ok(out)
}

fn builtin_bytes(
    source: &str,
    target: Target,
    component: &str,
) -> Result<Option<Vec<u8>>, TenantError> {
    let Some(name) = component.strip_prefix("builtin:") else {
        return Ok(None);
    };
    let refused = |message: String| TenantError::Manifest {
        file: source.into(),
        field: format!("{}.component", target.field()),
        message,
    };
    // A step is told apart by its world (a slot's wrong builtin is refused
    // by the component check, naming what it lacks).
    let fits =
        |b: &builtin::Builtin| (b.slot == Slot::SagaStep) == (target.slot() == Slot::SagaStep);
    let b = builtin::find(name).filter(|b| fits(b)).ok_or_else(|| {
        refused(format!(
            "no builtin {} `{name}`; there are {}",
            if target.slot() == Slot::SagaStep {
                "saga step"
            } else {
                "plugin"
            },
            builtin::BUILTINS
                .iter()
                .filter(|b| fits(b))
                .map(|b| b.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(Some(b.bytes.to_vec()))
}

/// Each slot's and step's component bytes for a stored manifest (or one
/// sent to the admin API): builtins, and `sha256:<digest>` of a version
/// this tenant has for that slot or step. Paths are refused: the database
/// is shared by hosts that do not share files.
pub async fn stored_components(
    p: &Platform,
    source: &str,
    id: &TenantId,
    spec: &TenantSpec,
) -> Result<HashMap<Target, Vec<u8>>, SyncError> {
    let mut out = HashMap::new();
    for (target, component) in spec.components() {
        if let Some(bytes) = builtin_bytes(source, target, component)? {
            out.insert(target, bytes);
            continue;
        }
        let refused = |message: String| TenantError::Manifest {
            file: source.into(),
            field: format!("{}.component", target.field()),
            message,
        };
        let digest = component.strip_prefix("sha256:").ok_or_else(|| {
            refused(
                "a component is `builtin:<name>` or `sha256:<digest>` of an uploaded version"
                    .into(),
            )
        })?;
        let known = p.store.plugin_versions(id, &target.key()).await?;
        if !known.iter().any(|v| v.digest == digest) {
            return Err(refused(format!(
                "this tenant has no {target} version with digest {digest}"
            ))
            .into());
        }
        out.insert(target, p.store.plugin_blob(digest).await?);
    }
    Ok(out)
}

/// The keys a manifest file carries, as records: its `dev_api_keys`
/// (demo mode only) and `api_key_sha256`, each with every scope.
pub fn manifest_keys(spec: &TenantSpec, now: i64) -> Vec<ApiKeyRecord> {
    let record = |id: String, name: &str, hash: String| ApiKeyRecord {
        id,
        tenant_id: spec.id.clone(),
        name: name.into(),
        secret_hash: hash,
        scopes: Scope::join(&Scope::ALL),
        created_by: "manifest".into(),
        created_at: now,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        replaced_by: None,
    };
    let dev = spec.dev_api_keys.iter().map(|k| {
        let hash = secret_hash(k);
        let id = format!("{DEMO_KEY_PREFIX}{}_{}", spec.id, &hash[..12]);
        record(id, "manifest dev key", hash)
    });
    let prod = spec.api_key_sha256.iter().map(|h| {
        let hash = h.to_ascii_lowercase();
        record(
            format!("key_{}_{}", spec.id, &hash[..hash.len().min(12)]),
            "manifest key",
            hash,
        )
    });
    dev.chain(prod).collect()
}

/// Builds off the async workers (compiling is CPU-heavy).
async fn build(
    p: &Platform,
    source: String,
    spec: TenantSpec,
    components: HashMap<Target, Vec<u8>>,
) -> Result<Tenant, TenantError> {
    let host: Arc<PluginHost> = p.plugins.clone();
    let options: LoadOptions = p.tenant_options.clone();
    tokio::task::spawn_blocking(move || build_tenant(&source, spec, components, &host, &options))
        .await
        .map_err(|e| TenantError::Manifest {
            file: "build".into(),
            field: String::new(),
            message: e.to_string(),
        })?
}

/// Checks a manifest as a new version of tenant `id` would run it: the
/// same checks as a file, plus components from builtins or stored versions.
pub async fn check(p: &Platform, source: &str, spec: &TenantSpec) -> Result<Tenant, SyncError> {
    let bad = |field: &str, message: &str| TenantError::Manifest {
        file: source.into(),
        field: field.into(),
        message: message.into(),
    };
    let id = TenantId::parse(&spec.id).ok_or_else(|| {
        bad(
            "id",
            "a tenant id is lower-case letters, digits and -, at most 64",
        )
    })?;
    if !spec.dev_api_keys.is_empty() {
        return Err(bad(
            "dev_api_keys",
            "keys are made with /admin/v1/tenants/{id}/keys",
        )
        .into());
    }
    if !spec.api_key_sha256.is_empty() {
        return Err(bad(
            "api_key_sha256",
            "keys are made with /admin/v1/tenants/{id}/keys",
        )
        .into());
    }
    let components = stored_components(p, source, &id, spec).await?;
    Ok(build(p, source.into(), spec.clone(), components).await?)
}

/// Builds tenant `id` from what the database holds and puts it in place.
pub async fn reload(p: &Platform, id: &TenantId) -> Result<Arc<Tenant>, SyncError> {
    let record = p.store.tenant_record(id).await?;
    install(p, record).await
}

async fn install(p: &Platform, record: TenantRecord) -> Result<Arc<Tenant>, SyncError> {
    let id = TenantId::parse(&record.id)
        .ok_or_else(|| StoreError::Corrupt(format!("tenant id `{}`", record.id)))?;
    let source = format!("tenant {id} (revision {})", record.revision);
    let spec = TenantSpec::parse(&source, &record.spec, SpecFormat::Json)?;
    let components = stored_components(p, &source, &id, &spec).await?;
    let keys = p.store.api_keys(&id).await?;
    let mut tenant = build(p, source, spec, components).await?;
    tenant.keys = Keys::from_records(&keys, p.tenant_options.demo, oms_clock::now_ms());
    tenant.suspended = record.is_suspended();
    tenant.revision = record.revision;
    p.tenants.install(tenant);
    p.tenants
        .get(id.as_str())
        .ok_or_else(|| StoreError::Corrupt(format!("tenant {id} vanished")).into())
}

/// Rebuilds every tenant whose revision moved since this host built it.
/// A tenant that fails to build keeps running as it was (logged, counted).
pub async fn refresh(p: &Platform) -> Result<(), StoreError> {
    for (id, revision) in p.store.tenant_revisions().await? {
        if p.tenants.get(&id).map(|t| t.revision) == Some(revision) {
            continue;
        }
        let Some(tenant_id) = TenantId::parse(&id) else {
            tracing::error!(tenant = %id, "stored tenant id is not valid; skipped");
            Metrics::inc(&p.metrics.tenant_reload_failures_total);
            continue;
        };
        match reload(p, &tenant_id).await {
            Ok(t) => {
                tracing::info!(tenant = %id, revision = t.revision, suspended = t.suspended, keys = t.keys.len(), "tenant loaded")
            }
            Err(SyncError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::error!(tenant = %id, error = %e, "tenant could not be built; it keeps running as it was");
                Metrics::inc(&p.metrics.tenant_reload_failures_total);
            }
        }
    }
    Ok(())
}

/// Imports manifest files into the database: a new tenant is created, a
/// known one updated only if its file changed since the last import, and
/// the file's keys added where missing. Components named by path are
/// stored as versions and the manifest refers to them by digest.
pub async fn import_manifests(p: &Platform, dir: Option<&Path>) -> Result<(), SyncError> {
    let now = oms_clock::now_ms();
    let mut seen = std::collections::HashSet::new();
    for (file, text, base) in Tenants::read_manifests(dir)? {
        let mut spec = TenantSpec::parse(&file, &text, SpecFormat::Toml)?;
        let components = file_components(&file, &spec, base.as_deref())?;
        // Every check a host will make, made now, so a bad file stops the start.
        let built = build(p, file.clone(), spec.clone(), components.clone()).await?;
        if !seen.insert(built.id.clone()) {
            return Err(TenantError::Manifest {
                file,
                field: "id".into(),
                message: "tenant id defined twice".into(),
            }
            .into());
        }
        let from_files: Vec<Target> = spec
            .components()
            .into_iter()
            .filter(|(_, component)| !component.starts_with("builtin:"))
            .map(|(target, _)| target)
            .collect();
        for target in from_files {
            let bytes = &components[&target];
            let digest = hex::encode(Sha256::digest(bytes));
            p.store
                .put_plugin_version(&built.id, &target.key(), &digest, bytes, "manifest", now)
                .await?;
            spec.set_component(target, format!("sha256:{digest}"));
        }
        let file_digest = hex::encode(Sha256::digest(text.as_bytes()));
        let written = p
            .store
            .put_tenant(
                &built.id,
                &spec.to_stored(),
                TenantWrite::Import {
                    file_digest: &file_digest,
                },
                "manifest",
                now,
            )
            .await?;
        if written.changed {
            tracing::info!(tenant = %built.id, %file, "manifest imported");
        }
        let stored = p.store.api_keys(&built.id).await?;
        for key in manifest_keys(&spec, now) {
            if stored.iter().any(|k| k.secret_hash == key.secret_hash) {
                continue;
            }
            p.store
                .create_api_key(&NewApiKey {
                    id: &key.id,
                    tenant: &built.id,
                    name: &key.name,
                    secret_hash: &key.secret_hash,
                    scopes: &key.scopes,
                    actor: "manifest",
                    now,
                })
                .await?;
        }
    }
    Ok(())
}
