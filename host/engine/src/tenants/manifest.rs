//! The tenant manifest (`tenants/*.toml`): its format, checked strictly
//! (unknown fields are refused), and its reading into a [`Tenant`].

use super::*;

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
pub(super) struct PluginSection {
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

pub(super) fn parse_tenant(
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
pub(super) fn call_limits(slot: Slot, section: &PluginSection) -> Result<CallLimits, String> {
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
