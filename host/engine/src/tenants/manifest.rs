//! The tenant manifest: the `tenants/*.toml` format, also what
//! `/admin/v1/tenants` takes as JSON and what the database keeps. Checked
//! strictly (unknown fields are refused); every refusal names its field.

use super::*;

/// A tenant's manifest. `Serialize` gives the JSON the database keeps.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TenantManifest, example = json!({
    "id": "initech",
    "name": "Initech",
    "saga": { "steps": ["validate", "reserve-inventory", "authorize-payment", "capture-payment", "request-fulfilment"] },
    "plugins": {
        "payment-provider": {
            "component": "builtin:payment-sandbox",
            "allowed_origins": ["http://127.0.0.1:8090"],
            "settings": { "base_url": "http://127.0.0.1:8090" }
        }
    }
}))]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: String,
    pub name: String,
    /// Plain-text keys honoured only in demo mode (imported from files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_api_keys: Vec<String>,
    /// sha256 (hex) of production API keys (imported from files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_key_sha256: Vec<String>,
    saga: SagaSection,
    #[serde(default)]
    fraud: FraudSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default, skip_serializing_if = "FulfilmentSection::is_default")]
    fulfilment: FulfilmentSection,
    #[serde(default, skip_serializing_if = "ReturnsSection::is_default")]
    returns: ReturnsSection,
    pub plugins: BTreeMap<String, PluginSection>,
    /// Steps of the tenant's own, each placed by naming it in `saga.steps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, super::steps::StepSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    demo_stock: Vec<StockSeed>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SagaSection {
    /// The saga's steps in order, e.g. `validate`, `reserve-inventory`,
    /// `authorize-payment`, `capture-payment`, `request-fulfilment`.
    #[schema(value_type = Vec<String>)]
    steps: Vec<Step>,
    #[serde(default = "default_step_timeout")]
    step_timeout_ms: u64,
    #[serde(default = "default_deadline")]
    deadline_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_step_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_compensation_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compensation_base_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compensation_max_delay_ms: Option<u64>,
}

fn default_step_timeout() -> u64 {
    15_000
}

fn default_deadline() -> u64 {
    10 * 60_000
}

/// Per-tenant API rate limit: a token bucket refilled at `requests_per_second`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_rps")]
    requests_per_second: u32,
    #[serde(default = "default_burst")]
    burst: u32,
    /// For a slower plan than one request a second: replaces
    /// `requests_per_second` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests_per_minute: Option<u32>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            requests_per_second: default_rps(),
            burst: default_burst(),
            requests_per_minute: None,
        }
    }
}

fn default_rps() -> u32 {
    20_000
}

fn default_burst() -> u32 {
    40_000
}

/// How the tenant's warehouse takes fulfilment requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FulfilmentSection {
    /// When set, the saga waits this long for the warehouse to accept or
    /// reject (`POST /api/v1/orders/{id}/fulfilment`); no answer in time
    /// undoes the order. Unset: the order is confirmed once the request is
    /// sent. From 1,000 ms to 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision_timeout_ms: Option<u64>,
}

impl FulfilmentSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The tenant's terms for returns, fixed for each order when it is placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReturnsSection {
    /// Days after the last shipment during which a return may be opened
    /// (1 to 365); unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_days: Option<u32>,
    /// Percent of a received return's value kept as a restocking fee (0 to 100; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restocking_fee_percent: Option<u8>,
    /// Percent of a damaged item's value refunded (0 to 100; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    damaged_refund_percent: Option<u8>,
}

impl ReturnsSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn policy(&self) -> Result<ReturnPolicy, (String, String)> {
        if let Some(days) = self.window_days
            && !(1..=365).contains(&days)
        {
            return Err((
                "returns.window_days".into(),
                "returns.window_days must be from 1 to 365".into(),
            ));
        }
        for (field, value) in [
            (
                "returns.restocking_fee_percent",
                self.restocking_fee_percent,
            ),
            (
                "returns.damaged_refund_percent",
                self.damaged_refund_percent,
            ),
        ] {
            if value.is_some_and(|v| v > 100) {
                return Err((field.into(), format!("{field} must be from 0 to 100")));
            }
        }
        let defaults = ReturnPolicy::default();
        Ok(ReturnPolicy {
            window_days: self.window_days,
            restocking_fee_percent: self
                .restocking_fee_percent
                .unwrap_or(defaults.restocking_fee_percent),
            damaged_refund_percent: self
                .damaged_refund_percent
                .unwrap_or(defaults.damaged_refund_percent),
        })
    }
}

/// The bounds of `fulfilment.decision_timeout_ms`.
const DECISION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=30 * 24 * 3_600_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FraudSection {
    /// What a `review` verdict does: `accept` (default) or `reject`.
    #[serde(default)]
    review: ReviewAction,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewAction {
    #[default]
    Accept,
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// `builtin:<name>`, `sha256:<digest>` of a version the tenant has
    /// uploaded, or (in a manifest file only) a path to a `.wasm` component
    /// relative to the manifest.
    pub component: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_origins: Vec<String>,
    /// Limits for this slot; each defaults to the platform's default and may
    /// be set up to the platform's maximum (`Slot::max_limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) memory_mb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) output_kb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) log_kb: Option<usize>,
    /// Record every call (input, version, verdict, fuel) for `oms plugin
    /// replay`. Guardrail and fraud-check only: payment calls have side
    /// effects and carry credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) record_calls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StockSeed {
    sku: String,
    warehouse: String,
    on_hand: i64,
}

impl TenantSpec {
    /// Reads a manifest file (TOML) or a request body (JSON): a refusal
    /// names the field it is about.
    pub fn parse(source: &str, text: &str, format: SpecFormat) -> Result<Self, TenantError> {
        let value: serde_json::Value = match format {
            SpecFormat::Toml => toml::from_str(text).map_err(|e| TenantError::Manifest {
                file: source.into(),
                field: String::new(),
                message: e.to_string(),
            })?,
            SpecFormat::Json => serde_json::from_str(text).map_err(|e| TenantError::Manifest {
                file: source.into(),
                field: String::new(),
                message: e.to_string(),
            })?,
        };
        Self::from_value(source, value)
    }

    pub fn from_value(source: &str, value: serde_json::Value) -> Result<Self, TenantError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            TenantError::Manifest {
                file: source.into(),
                field: if field == "." { String::new() } else { field },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// The JSON the database keeps (keys are kept apart, hashed).
    pub fn to_stored(&self) -> String {
        let mut kept = self.clone();
        kept.dev_api_keys.clear();
        kept.api_key_sha256.clear();
        // Serializing plain data cannot fail.
        serde_json::to_string(&kept).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Toml,
    Json,
}

/// Builds a running tenant from its manifest and each slot's component
/// bytes (resolved by the caller from builtins, files or stored versions).
/// Compiles components not compiled before: call it off the async workers.
pub(super) fn build_tenant(
    source: &str,
    m: TenantSpec,
    components: HashMap<Target, Vec<u8>>,
    host: &PluginHost,
    options: &LoadOptions,
) -> Result<Tenant, TenantError> {
    let bad = |field: &str, message: String| TenantError::Manifest {
        file: source.to_string(),
        field: field.to_string(),
        message,
    };
    let id = TenantId::parse(&m.id).ok_or_else(|| {
        bad(
            "id",
            format!(
                "tenant id `{}` must be lower-case letters, digits and -",
                m.id
            ),
        )
    })?;
    if m.name.trim().is_empty() || m.name.chars().any(char::is_control) {
        return Err(bad(
            "name",
            "a tenant needs a name, without control characters".into(),
        ));
    }
    let definition =
        SagaDefinition::new(m.saga.steps).map_err(|e| bad("saga.steps", e.to_string()))?;
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
        fulfilment_decision_ms: match m.fulfilment.decision_timeout_ms {
            Some(ms) if !DECISION_TIMEOUT_MS.contains(&ms) => {
                return Err(bad(
                    "fulfilment.decision_timeout_ms",
                    format!(
                        "fulfilment.decision_timeout_ms must be from {} to {} (30 days)",
                        DECISION_TIMEOUT_MS.start(),
                        DECISION_TIMEOUT_MS.end()
                    ),
                ));
            }
            other => other,
        },
        returns: m
            .returns
            .policy()
            .map_err(|(field, message)| bad(&field, message))?,
    };

    let substitute = |s: &str| match &options.sandbox_psp_url {
        Some(url) => s.replace("{{sandbox_psp}}", url),
        None => s.to_string(),
    };
    let mut components = components;
    let mut plugins = HashMap::new();
    for (slot_name, section) in m.plugins {
        let field = format!("plugins.{slot_name}");
        let slot = Slot::parse(&slot_name)
            .filter(|s| Slot::ALL.contains(s))
            .ok_or_else(|| match Slot::parse(&slot_name) {
                Some(Slot::SagaStep) => bad(
                    &field,
                    "a step of the tenant's own goes in saga.steps and [steps.<name>]".into(),
                ),
                _ => bad(&field, format!("unknown plugin slot `{slot_name}`")),
            })?;
        let bytes = components
            .remove(&Target::Slot(slot))
            .ok_or_else(|| bad(&format!("{field}.component"), "no component".into()))?;
        let plugin = host
            .load(slot, &bytes)
            .map_err(|error| TenantError::Plugin {
                file: source.to_string(),
                slot: slot_name.clone(),
                error,
            })?;
        let limits =
            call_limits(slot, &section).map_err(|(f, m)| bad(&format!("{field}.{f}"), m))?;
        if section.record_calls && !matches!(slot, Slot::Guardrail | Slot::FraudCheck) {
            return Err(bad(
                &format!("{field}.record_calls"),
                format!(
                    "record_calls is for guardrail and fraud-check, not {slot}: its calls have side effects"
                ),
            ));
        }
        let origins: Vec<String> = section
            .allowed_origins
            .iter()
            .map(|o| substitute(o))
            .collect();
        if slot != Slot::PaymentProvider && !origins.is_empty() {
            return Err(bad(
                &format!("{field}.allowed_origins"),
                format!("only the payment-provider slot may have allowed_origins, not {slot}"),
            ));
        }
        let grant = (slot == Slot::PaymentProvider)
            .then(|| HttpGrant::new(&origins, limits.http_timeout).for_tenant(&m.id));
        let settings = section
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v)))
            .collect();
        plugins.insert(
            slot,
            TenantPlugin::new(plugin, bytes, settings, limits, grant, section.record_calls),
        );
    }
    if let Some(missing) = Slot::ALL.iter().find(|s| !plugins.contains_key(s)) {
        return Err(bad(
            &format!("plugins.{missing}"),
            format!("no plugin for the {missing} slot"),
        ));
    }
    let steps = super::steps::build(
        &m.id,
        &definition,
        &m.steps,
        &mut components,
        host,
        &substitute,
    )
    .map_err(|e| e.into_tenant_error(source))?;

    let per_second = std::num::NonZeroU32::new(m.limits.requests_per_second).ok_or_else(|| {
        bad(
            "limits.requests_per_second",
            "limits.requests_per_second must be at least 1".into(),
        )
    })?;
    let burst = std::num::NonZeroU32::new(m.limits.burst)
        .ok_or_else(|| bad("limits.burst", "limits.burst must be at least 1".into()))?;
    let quota = match m.limits.requests_per_minute {
        None => governor::Quota::per_second(per_second),
        Some(n) => governor::Quota::per_minute(std::num::NonZeroU32::new(n).ok_or_else(|| {
            bad(
                "limits.requests_per_minute",
                "limits.requests_per_minute must be at least 1".into(),
            )
        })?),
    };
    let limiter = governor::RateLimiter::direct(quota.allow_burst(burst));
    let mut demo_stock = Vec::new();
    for (i, s) in m.demo_stock.into_iter().enumerate() {
        let sku = Sku::parse(&s.sku).ok_or_else(|| {
            bad(
                &format!("demo_stock[{i}].sku"),
                format!("bad SKU `{}`", s.sku),
            )
        })?;
        let wh = WarehouseId::parse(&s.warehouse).ok_or_else(|| {
            bad(
                &format!("demo_stock[{i}].warehouse"),
                format!("bad warehouse `{}`", s.warehouse),
            )
        })?;
        demo_stock.push((sku, wh, s.on_hand));
    }
    Ok(Tenant {
        id,
        name: m.name,
        keys: Keys::default(),
        suspended: false,
        revision: 0,
        definition,
        limits,
        step_timeout: Duration::from_millis(m.saga.step_timeout_ms),
        deadline: Duration::from_millis(m.saga.deadline_ms),
        fraud_review: m.fraud.review,
        plugins,
        steps,
        demo_stock,
        limiter,
    })
}

/// The slot's limits for this tenant: the platform default unless the
/// manifest sets one, and never above the platform maximum.
pub(super) fn call_limits(
    slot: Slot,
    section: &PluginSection,
) -> Result<CallLimits, (&'static str, String)> {
    let (default, max) = (slot.default_limits(), slot.max_limits());
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

/// A manifest's setting, or the platform default when unset; never above
/// the platform maximum.
pub(super) fn pick<T: Copy + PartialOrd + std::fmt::Debug>(
    name: &'static str,
    set: Option<T>,
    default: T,
    max: T,
) -> Result<T, (&'static str, String)> {
    match set {
        Some(v) if v > max => Err((
            name,
            format!("{name} = {v:?} is above the platform maximum of {max:?}"),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}
