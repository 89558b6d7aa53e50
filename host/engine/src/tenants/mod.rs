//! Tenants: their manifests, API keys, saga step order, limits and plugins.
//! The registry of running tenants here; the manifest format and building a
//! tenant from it in `manifest`; keys and scopes in `keys`; keeping the
//! registry in step with the database (and importing manifest files into
//! it) in `sync`.

use oms_domain::{Sku, TenantId, WarehouseId};
use oms_plugin_host::http::HttpGrant;
use oms_plugin_host::{CallLimits, LoadError, Plugin, PluginHost, Slot};
use oms_saga::{Limits, ReturnPolicy, SagaDefinition, Step};
use oms_store::CanaryRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The demo manifests, embedded so the binary runs from any directory.
pub const DEMO_MANIFESTS: &[(&str, &str)] = &[
    ("acme.toml", include_str!("../../../../tenants/acme.toml")),
    (
        "globex.toml",
        include_str!("../../../../tenants/globex.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The manifest is refused; `field` names where (empty for the whole).
    #[error("{file}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Manifest {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: plugin for {slot}: {error}")]
    Plugin {
        file: String,
        slot: String,
        error: LoadError,
    },
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

pub mod admin;
pub mod keys;
mod manifest;
mod steps;
pub mod sync;
mod target;

use keys::Keys;
use manifest::build_tenant;
#[cfg(test)]
use manifest::call_limits;
pub use manifest::{PluginSection, ReviewAction, SpecFormat, TenantSpec};
pub use steps::{CustomStep, StepSection};
pub use target::{STEP_PREFIX, Target};

/// A candidate deciding a share of orders, chosen by [`canary_bucket`].
pub struct Canary {
    pub plugin: Arc<Plugin>,
    pub record: CanaryRecord,
}

/// The bucket (0–99) an order falls in for canary rollouts: a hash of the
/// order id, the same on every host and for every step of the order, so one
/// order meets one version of a slot from its first call to its last.
pub fn canary_bucket(order_id: &str) -> u64 {
    let digest = Sha256::digest(order_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 100
}

/// A tenant's slot: the component running now (hot-swappable), the one its
/// manifest names, and the tenant's settings and limits for the slot.
pub struct TenantPlugin {
    active: RwLock<Arc<Plugin>>,
    /// A candidate run beside the active one, its verdict recorded, never acted on.
    shadow: RwLock<Option<Arc<Plugin>>>,
    canary: RwLock<Option<Arc<Canary>>>,
    pub record_calls: bool,
    /// The manifest's component and its bytes, registered as a version at start.
    pub manifest_plugin: Arc<Plugin>,
    pub manifest_bytes: Vec<u8>,
    pub settings: Vec<(String, String)>,
    pub limits: CallLimits,
    pub grant: Option<HttpGrant>,
}

impl TenantPlugin {
    /// What a manifest sets for a slot or step: its component running, no
    /// shadow, no canary (rollouts carry over with `Tenant::carry_over`).
    pub fn new(
        plugin: Arc<Plugin>,
        bytes: Vec<u8>,
        settings: Vec<(String, String)>,
        limits: CallLimits,
        grant: Option<HttpGrant>,
        record_calls: bool,
    ) -> Self {
        Self {
            active: RwLock::new(plugin.clone()),
            shadow: RwLock::new(None),
            canary: RwLock::new(None),
            record_calls,
            manifest_plugin: plugin,
            manifest_bytes: bytes,
            settings,
            limits,
            grant,
        }
    }

    /// What the slot's calls may reach: the manifest's origins, or nothing
    /// (every request refused) for a slot without any.
    pub fn http_grant(&self) -> HttpGrant {
        self.grant
            .clone()
            .unwrap_or_else(|| HttpGrant::new(&[], self.limits.http_timeout))
    }

    /// The component new calls use. A call holds on to what it got, so a
    /// swap never changes a call in flight.
    pub fn current(&self) -> Arc<Plugin> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn shadow(&self) -> Option<Arc<Plugin>> {
        self.shadow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_canary(&self, canary: Option<Arc<Canary>>) {
        *self.canary.write().unwrap_or_else(|p| p.into_inner()) = canary;
    }

    /// The component that decides this order: the canary's, if one runs
    /// and the order falls in its share, else the active one.
    pub fn for_order(&self, order_id: &str) -> (Arc<Plugin>, Option<Arc<Canary>>) {
        match self.canary() {
            Some(c) if canary_bucket(order_id) < c.record.percent.clamp(0, 100) as u64 => {
                (c.plugin.clone(), Some(c))
            }
            _ => (self.current(), None),
        }
    }

    pub fn set_shadow(&self, plugin: Option<Arc<Plugin>>) {
        *self.shadow.write().unwrap_or_else(|p| p.into_inner()) = plugin;
    }

    /// Makes `plugin` the one new calls use; `true` if it changed.
    pub fn swap(&self, plugin: Arc<Plugin>) -> bool {
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if active.digest == plugin.digest {
            return false;
        }
        *active = plugin;
        true
    }
}

pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub keys: Keys,
    /// A suspended tenant's calls are refused; its sagas in flight finish.
    pub suspended: bool,
    /// The database revision this was built from (0: from files only).
    pub revision: i64,
    pub definition: SagaDefinition,
    pub limits: Limits,
    pub step_timeout: Duration,
    pub deadline: Duration,
    pub fraud_review: ReviewAction,
    plugins: HashMap<Slot, TenantPlugin>,
    /// The tenant's own steps, by name.
    pub steps: HashMap<oms_saga::StepName, CustomStep>,
    pub demo_stock: Vec<(Sku, WarehouseId, i64)>,
    limiter: governor::DefaultDirectRateLimiter,
}

impl Tenant {
    pub fn plugin(&self, slot: Slot) -> &TenantPlugin {
        // Every slot is checked present when the manifest loads.
        &self.plugins[&slot]
    }

    /// What runs a slot or one of the tenant's steps; `None` for a step
    /// it does not have (any more).
    pub fn target(&self, target: Target) -> Option<&TenantPlugin> {
        match target {
            Target::Slot(slot) => self.plugins.get(&slot),
            Target::Step(name) => self.steps.get(&name).map(|s| &s.plugin),
        }
    }

    /// The slot or step a path or a stored row names (`guardrail`,
    /// `step:loyalty-points`), if this tenant has it.
    pub fn find_target(&self, raw: &str) -> Option<Target> {
        match raw.strip_prefix(STEP_PREFIX) {
            Some(step) => self
                .steps
                .keys()
                .find(|n| n.as_str() == step)
                .map(|n| Target::Step(*n)),
            None => Slot::parse(raw)
                .filter(|s| Slot::ALL.contains(s))
                .map(Target::Slot),
        }
    }

    /// Its four slots and its own steps, in that order.
    pub fn targets(&self) -> Vec<Target> {
        let mut steps: Vec<_> = self.steps.keys().copied().collect();
        steps.sort();
        Slot::ALL
            .into_iter()
            .map(Target::Slot)
            .chain(steps.into_iter().map(Target::Step))
            .collect()
    }

    /// Takes one request from the tenant's budget; when it is spent, how
    /// long until the next request would be admitted.
    pub fn admit(&self) -> Result<(), std::time::Duration> {
        use governor::clock::Clock;
        self.limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// Carries over what this host runs for each slot (activated,
    /// shadowed and canary versions) and the rate budget from the tenant
    /// this one replaces, so a manifest change does not undo a rollout.
    fn carry_over(&self, old: &Tenant) {
        for target in self.targets() {
            if let (Some(tp), Some(before)) = (self.target(target), old.target(target)) {
                tp.swap(before.current());
                tp.set_shadow(before.shadow());
                tp.set_canary(before.canary());
            }
        }
    }
}

/// How to build tenants from manifests.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Honour `dev_api_keys`.
    pub demo: bool,
    /// Replaces `{{sandbox_psp}}` in settings and origins.
    pub sandbox_psp_url: Option<String>,
}

/// The tenants this host serves, replaced one by one as they change.
#[derive(Default)]
pub struct Tenants {
    by_id: RwLock<HashMap<TenantId, Arc<Tenant>>>,
}

impl Tenants {
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        let id = TenantId::parse(id)?;
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every tenant, in id order.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<Arc<Tenant>> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Puts `tenant` in place of the one with its id, carrying over what
    /// that one runs; returns `false` (and keeps the newer) if the one in
    /// place was built from a later revision.
    pub fn install(&self, tenant: Tenant) -> bool {
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = by_id.get(&tenant.id) {
            if old.revision > tenant.revision {
                return false;
            }
            tenant.carry_over(old);
        }
        by_id.insert(tenant.id.clone(), Arc::new(tenant));
        true
    }

    /// Reads every `*.toml` in `dir`, or the embedded demo manifests when
    /// `dir` is `None`: `(file, text, directory paths are relative to)`.
    pub fn read_manifests(
        dir: Option<&Path>,
    ) -> Result<Vec<(String, String, Option<PathBuf>)>, TenantError> {
        let mut files: Vec<(String, String, Option<PathBuf>)> = Vec::new();
        match dir {
            Some(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|e| TenantError::Io(dir.into(), e))?;
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                paths.sort();
                for path in paths {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| TenantError::Io(path.clone(), e))?;
                    files.push((
                        path.display().to_string(),
                        text,
                        path.parent().map(Path::to_path_buf),
                    ));
                }
            }
            None => {
                for (name, text) in DEMO_MANIFESTS {
                    files.push(((*name).to_string(), (*text).to_string(), None));
                }
            }
        }
        Ok(files)
    }

    /// Builds the tenants straight from manifest files, every key with
    /// every scope (the engine's own tests; a host loads from the database).
    pub fn load(
        dir: Option<&Path>,
        host: &PluginHost,
        options: &LoadOptions,
    ) -> Result<Self, TenantError> {
        let tenants = Self::default();
        for (file, text, base) in Self::read_manifests(dir)? {
            let spec = TenantSpec::parse(&file, &text, SpecFormat::Toml)?;
            let components = sync::file_components(&file, &spec, base.as_deref())?;
            let records = sync::manifest_keys(&spec, 0);
            let mut tenant = build_tenant(&file, spec, components, host, options)?;
            tenant.keys = Keys::from_records(&records, options.demo, 0);
            if tenants.get(tenant.id.as_str()).is_some() {
                return Err(TenantError::Manifest {
                    file,
                    field: "id".into(),
                    message: "tenant id defined twice".into(),
                });
            }
            tenants.install(tenant);
        }
        Ok(tenants)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canary_buckets_spread_evenly_and_never_move() {
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            counts[canary_bucket(&format!("ord_{i:08}")) as usize] += 1;
        }
        // 1,000 expected per bucket; a skewed hash would show far outside this.
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(canary_bucket("ord_fixed"), canary_bucket("ord_fixed"));
    }

    fn section(toml_text: &str) -> PluginSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn manifest_limits_default_rise_to_the_maximum_and_no_further() {
        let defaults = call_limits(Slot::Guardrail, &section("component = \"x\"")).unwrap();
        assert_eq!(defaults, Slot::Guardrail.default_limits());
        let raised = call_limits(
            Slot::Guardrail,
            &section("component = \"x\"\nmemory_mb = 64\nlog_kb = 64\noutput_kb = 128"),
        )
        .unwrap();
        assert_eq!(
            (raised.memory_bytes, raised.log_bytes, raised.output_bytes),
            (64 << 20, 64 << 10, 128 << 10)
        );
        let too_much = call_limits(
            Slot::Guardrail,
            &section("component = \"x\"\nmemory_mb = 65"),
        );
        assert_eq!(too_much.unwrap_err().0, "memory_mb");
    }
}
