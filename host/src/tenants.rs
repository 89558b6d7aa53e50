//! Tenants: their manifests (`tenants/*.toml`), API keys, saga step order,
//! limits and plugins.

use crate::domain::{Sku, TenantId, WarehouseId};
use crate::plugins::http::HttpGrant;
use crate::plugins::{CallLimits, LoadError, Plugin, PluginHost, Slot, builtin};
use crate::saga::{Limits, SagaDefinition, Step};
use crate::store::CanaryRecord;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The demo manifests, embedded so the binary runs from any directory.
pub const DEMO_MANIFESTS: &[(&str, &str)] = &[
    ("acme.toml", include_str!("../../tenants/acme.toml")),
    ("globex.toml", include_str!("../../tenants/globex.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("{file}: {message}")]
    Manifest { file: String, message: String },
    #[error("{file}: plugin for {slot}: {error}")]
    Plugin {
        file: String,
        slot: String,
        error: LoadError,
    },
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    id: String,
    name: String,
    /// Plain-text keys honoured only in demo mode.
    #[serde(default)]
    dev_api_keys: Vec<String>,
    /// sha256 (hex) of production API keys.
    #[serde(default)]
    api_key_sha256: Vec<String>,
    saga: SagaSection,
    #[serde(default)]
    fraud: FraudSection,
    #[serde(default)]
    limits: LimitsSection,
    plugins: BTreeMap<String, PluginSection>,
    #[serde(default)]
    demo_stock: Vec<StockSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SagaSection {
    steps: Vec<Step>,
    #[serde(default = "default_step_timeout")]
    step_timeout_ms: u64,
    #[serde(default = "default_deadline")]
    deadline_ms: u64,
    #[serde(default)]
    max_step_attempts: Option<u32>,
    #[serde(default)]
    max_compensation_attempts: Option<u32>,
    #[serde(default)]
    compensation_base_delay_ms: Option<u64>,
    #[serde(default)]
    compensation_max_delay_ms: Option<u64>,
}

fn default_step_timeout() -> u64 {
    15_000
}

fn default_deadline() -> u64 {
    10 * 60_000
}

/// Per-tenant API rate limit: a token bucket refilled at `requests_per_second`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_rps")]
    requests_per_second: u32,
    #[serde(default = "default_burst")]
    burst: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            requests_per_second: default_rps(),
            burst: default_burst(),
        }
    }
}

fn default_rps() -> u32 {
    20_000
}

fn default_burst() -> u32 {
    40_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FraudSection {
    /// What a `review` verdict does: `accept` (default) or `reject`.
    #[serde(default)]
    review: ReviewAction,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewAction {
    #[default]
    Accept,
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSection {
    /// `builtin:<name>` or a path to a `.wasm` component, relative to the manifest.
    component: String,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Limits for this slot; each defaults to the platform's default and may
    /// be set up to the platform's maximum (`Slot::max_limits`).
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_mb: Option<usize>,
    output_kb: Option<usize>,
    log_kb: Option<usize>,
    /// Record every call (input, version, verdict, fuel) for `oms plugin
    /// replay`. Guardrail and fraud-check only: payment calls have side
    /// effects and carry credentials.
    #[serde(default)]
    record_calls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockSeed {
    sku: String,
    warehouse: String,
    on_hand: i64,
}

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
    key_hashes: Vec<String>,
    pub definition: SagaDefinition,
    pub limits: Limits,
    pub step_timeout: Duration,
    pub deadline: Duration,
    pub fraud_review: ReviewAction,
    plugins: HashMap<Slot, TenantPlugin>,
    pub demo_stock: Vec<(Sku, WarehouseId, i64)>,
    limiter: governor::DefaultDirectRateLimiter,
}

impl Tenant {
    pub fn plugin(&self, slot: Slot) -> &TenantPlugin {
        // Every slot is checked present when the manifest loads.
        &self.plugins[&slot]
    }

    /// Takes one request from the tenant's budget; `false` when it is spent.
    pub fn admit(&self) -> bool {
        self.limiter.check().is_ok()
    }

    pub fn accepts_key(&self, key: &str) -> bool {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.key_hashes
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&hash))
    }
}

/// How to read manifests.
pub struct LoadOptions<'a> {
    /// Honour `dev_api_keys`.
    pub demo: bool,
    /// Replaces `{{sandbox_psp}}` in settings and origins.
    pub sandbox_psp_url: Option<&'a str>,
}

pub struct Tenants {
    by_id: HashMap<TenantId, Arc<Tenant>>,
}

impl Tenants {
    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        TenantId::parse(id).and_then(|id| self.by_id.get(&id))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    /// Loads every `*.toml` in `dir`, or the embedded demo manifests when `dir` is `None`.
    pub fn load(
        dir: Option<&Path>,
        host: &PluginHost,
        options: &LoadOptions<'_>,
    ) -> Result<Self, TenantError> {
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
        let mut by_id = HashMap::new();
        for (file, text, base) in files {
            let tenant = parse_tenant(&file, &text, base.as_deref(), host, options)?;
            if by_id.insert(tenant.id.clone(), Arc::new(tenant)).is_some() {
                return Err(TenantError::Manifest {
                    file,
                    message: "tenant id defined twice".into(),
                });
            }
        }
        Ok(Self { by_id })
    }
}

fn parse_tenant(
    file: &str,
    text: &str,
    base: Option<&Path>,
    host: &PluginHost,
    options: &LoadOptions<'_>,
) -> Result<Tenant, TenantError> {
    let bad = |message: String| TenantError::Manifest {
        file: file.to_string(),
        message,
    };
    let m: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let id = TenantId::parse(&m.id).ok_or_else(|| {
        bad(format!(
            "tenant id `{}` must be lower-case letters, digits and -",
            m.id
        ))
    })?;
    let definition = SagaDefinition::new(m.saga.steps).map_err(|e| bad(e.to_string()))?;
    let defaults = Limits::default();
    let limits = Limits {
        max_step_attempts: m
            .saga
            .max_step_attempts
            .unwrap_or(defaults.max_step_attempts),
        max_compensation_attempts: m
            .saga
            .max_compensation_attempts
            .unwrap_or(defaults.max_compensation_attempts),
        compensation_base_delay_ms: m
            .saga
            .compensation_base_delay_ms
            .unwrap_or(defaults.compensation_base_delay_ms),
        compensation_max_delay_ms: m
            .saga
            .compensation_max_delay_ms
            .unwrap_or(defaults.compensation_max_delay_ms),
    };

    let substitute = |s: &str| match options.sandbox_psp_url {
        Some(url) => s.replace("{{sandbox_psp}}", url),
        None => s.to_string(),
    };
    let mut plugins = HashMap::new();
    for (slot_name, section) in m.plugins {
        let slot = Slot::parse(&slot_name)
            .ok_or_else(|| bad(format!("unknown plugin slot `{slot_name}`")))?;
        let bytes: Vec<u8> = match section.component.strip_prefix("builtin:") {
            Some(name) => {
                let b = builtin::find(name)
                    .ok_or_else(|| bad(format!("no builtin plugin `{name}`")))?;
                b.bytes.to_vec()
            }
            None => {
                let path = base
                    .map(|b| b.join(&section.component))
                    .unwrap_or_else(|| PathBuf::from(&section.component));
                std::fs::read(&path).map_err(|e| TenantError::Io(path, e))?
            }
        };
        let plugin = host
            .load(slot, &bytes)
            .map_err(|error| TenantError::Plugin {
                file: file.to_string(),
                slot: slot_name.clone(),
                error,
            })?;
        let limits =
            call_limits(slot, &section).map_err(|m| bad(format!("plugins.{slot_name}: {m}")))?;
        if section.record_calls && !matches!(slot, Slot::Guardrail | Slot::FraudCheck) {
            return Err(bad(format!(
                "record_calls is for guardrail and fraud-check, not {slot}: its calls have side effects"
            )));
        }
        let origins: Vec<String> = section
            .allowed_origins
            .iter()
            .map(|o| substitute(o))
            .collect();
        if slot != Slot::PaymentProvider && !origins.is_empty() {
            return Err(bad(format!(
                "only the payment-provider slot may have allowed_origins, not {slot}"
            )));
        }
        let grant =
            (slot == Slot::PaymentProvider).then(|| HttpGrant::new(&origins, limits.http_timeout));
        let settings = section
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v)))
            .collect();
        plugins.insert(
            slot,
            TenantPlugin {
                active: RwLock::new(plugin.clone()),
                shadow: RwLock::new(None),
                canary: RwLock::new(None),
                record_calls: section.record_calls,
                manifest_plugin: plugin,
                manifest_bytes: bytes,
                settings,
                limits,
                grant,
            },
        );
    }
    if let Some(missing) = Slot::ALL.iter().find(|s| !plugins.contains_key(s)) {
        return Err(bad(format!("no plugin for the {missing} slot")));
    }

    let mut key_hashes = m.api_key_sha256;
    if options.demo {
        key_hashes.extend(
            m.dev_api_keys
                .iter()
                .map(|k| hex::encode(Sha256::digest(k.as_bytes()))),
        );
    }
    let per_second = std::num::NonZeroU32::new(m.limits.requests_per_second)
        .ok_or_else(|| bad("limits.requests_per_second must be at least 1".into()))?;
    let burst = std::num::NonZeroU32::new(m.limits.burst)
        .ok_or_else(|| bad("limits.burst must be at least 1".into()))?;
    let limiter =
        governor::RateLimiter::direct(governor::Quota::per_second(per_second).allow_burst(burst));
    let mut demo_stock = Vec::new();
    for s in m.demo_stock {
        let sku = Sku::parse(&s.sku).ok_or_else(|| bad(format!("bad SKU `{}`", s.sku)))?;
        let wh = WarehouseId::parse(&s.warehouse)
            .ok_or_else(|| bad(format!("bad warehouse `{}`", s.warehouse)))?;
        demo_stock.push((sku, wh, s.on_hand));
    }
    Ok(Tenant {
        id,
        name: m.name,
        key_hashes,
        definition,
        limits,
        step_timeout: Duration::from_millis(m.saga.step_timeout_ms),
        deadline: Duration::from_millis(m.saga.deadline_ms),
        fraud_review: m.fraud.review,
        plugins,
        demo_stock,
        limiter,
    })
}

/// The slot's limits for this tenant: the platform default unless the
/// manifest sets one, and never above the platform maximum.
fn call_limits(slot: Slot, section: &PluginSection) -> Result<CallLimits, String> {
    let (default, max) = (slot.default_limits(), slot.max_limits());
    fn pick<T: Copy + PartialOrd + std::fmt::Debug>(
        name: &str,
        set: Option<T>,
        default: T,
        max: T,
    ) -> Result<T, String> {
        match set {
            Some(v) if v > max => Err(format!(
                "{name} = {v:?} is above the platform maximum of {max:?}"
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    }
    Ok(CallLimits {
        fuel: pick("fuel", section.fuel, default.fuel, max.fuel)?,
        timeout: pick(
            "timeout_ms",
            section.timeout_ms.map(Duration::from_millis),
            default.timeout,
            max.timeout,
        )?,
        memory_bytes: pick(
            "memory_mb",
            section.memory_mb.map(|m| m << 20),
            default.memory_bytes,
            max.memory_bytes,
        )?,
        output_bytes: pick(
            "output_kb",
            section.output_kb.map(|k| k << 10),
            default.output_bytes,
            max.output_bytes,
        )?,
        log_bytes: pick(
            "log_kb",
            section.log_kb.map(|k| k << 10),
            default.log_bytes,
            max.log_bytes,
        )?,
        http_timeout: default.http_timeout,
    })
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
        assert!(too_much.unwrap_err().contains("memory_mb"));
    }
}
