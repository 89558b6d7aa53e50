//! A tenant's own saga steps: the manifest's `[steps.<name>]` sections
//! (component, settings, limits, state quota, network, retry) and what a
//! running tenant keeps of each.

use super::manifest::{PluginSection, call_limits, pick};
use super::{Target, TenantError, TenantPlugin};
use oms_plugin_host::http::HttpGrant;
use oms_plugin_host::step_state::StateLimits;
use oms_plugin_host::{CallLimits, PluginHost, Slot};
use oms_saga::{SagaDefinition, StepName, StepRetry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A step of the tenant's own, as its manifest describes it. The step is
/// placed by naming it in `saga.steps`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSection {
    /// A component of the `saga-step` world: `builtin:<name>` (e.g.
    /// `builtin:loyalty-points`), `sha256:<digest>` of a version uploaded
    /// for this step, or (in a manifest file) a path to a `.wasm` file.
    pub component: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Origins the step may call through `outbound-http`; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Call limits, as for a slot's plugin, each up to the platform's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_kb: Option<usize>,
    /// Attempts at the step in all (default 5), and the backoff between
    /// them: doubling from `base_delay_ms` (default 200) up to
    /// `max_delay_ms` (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// The state quota of one call: keys written (default 100, at most
    /// 1,000), reads (default 1,000, at most 10,000) and the largest value
    /// (default 4 KiB, at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_writes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value_kb: Option<usize>,
    /// Record every production call (input, the state it read, answer) for
    /// `oms plugin replay`. Only for a step without `allowed_origins`: a
    /// replay must reach nothing outside.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_calls: bool,
}

/// A tenant-defined step as a running tenant keeps it: its component
/// versions (active, shadow, canary), settings, limits and grant as a
/// slot's, and the step's own state quota and retry policy.
pub struct CustomStep {
    pub name: StepName,
    pub plugin: TenantPlugin,
    pub state_limits: StateLimits,
    pub retry: StepRetry,
}

impl CustomStep {
    /// A step that may run in the shadow of another: one that reaches
    /// nothing outside (its state writes are dropped with its answer).
    pub fn shadowable(&self) -> bool {
        self.plugin
            .grant
            .as_ref()
            .is_none_or(|g| g.allowed_origins.is_empty())
    }
}

/// Builds each step the definition names from its section: every custom
/// step in `saga.steps` needs one, and every section a step there. Errors
/// are (field, message).
pub(super) fn build(
    tenant: &str,
    definition: &SagaDefinition,
    sections: &BTreeMap<String, StepSection>,
    components: &mut HashMap<Target, Vec<u8>>,
    host: &PluginHost,
    substitute: &dyn Fn(&str) -> String,
) -> Result<HashMap<StepName, CustomStep>, BuildError> {
    let bad = |field: String, message: String| BuildError::Field { field, message };
    for name in sections.keys() {
        if !definition.custom().any(|n| n.as_str() == name) {
            return Err(bad(
                format!("steps.{name}"),
                format!("no step `{name}` in saga.steps"),
            ));
        }
    }
    let mut out = HashMap::new();
    for name in definition.custom() {
        let field = format!("steps.{name}");
        let section = sections.get(name.as_str()).ok_or_else(|| {
            bad(
                field.clone(),
                format!("saga.steps names `{name}`, which needs a [steps.{name}] section"),
            )
        })?;
        let bytes = components
            .remove(&Target::Step(name))
            .ok_or_else(|| bad(format!("{field}.component"), "no component".into()))?;
        let plugin = host
            .load(Slot::SagaStep, &bytes)
            .map_err(|error| BuildError::Plugin {
                step: name.to_string(),
                error,
            })?;
        let limits = limits(section).map_err(|(f, m)| bad(format!("{field}.{f}"), m))?;
        let state_limits =
            state_limits(section).map_err(|(f, m)| bad(format!("{field}.{f}"), m))?;
        if section.record_calls && !section.allowed_origins.is_empty() {
            return Err(bad(
                format!("{field}.record_calls"),
                "record_calls is for a step without allowed_origins: a replay would call out again"
                    .into(),
            ));
        }
        let origins: Vec<String> = section
            .allowed_origins
            .iter()
            .map(|o| substitute(o))
            .collect();
        let defaults = StepRetry::default();
        let retry = StepRetry {
            max_attempts: section.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            base_delay_ms: section.base_delay_ms.unwrap_or(defaults.base_delay_ms),
            max_delay_ms: section.max_delay_ms.unwrap_or(defaults.max_delay_ms),
        };
        if retry.max_delay_ms > MAX_RETRY_DELAY_MS {
            return Err(bad(
                format!("{field}.max_delay_ms"),
                format!("max_delay_ms is at most {MAX_RETRY_DELAY_MS}"),
            ));
        }
        out.insert(
            name,
            CustomStep {
                name,
                plugin: TenantPlugin::new(
                    plugin,
                    bytes,
                    section
                        .settings
                        .iter()
                        .map(|(k, v)| (k.clone(), substitute(v)))
                        .collect(),
                    limits,
                    Some(HttpGrant::new(&origins, limits.http_timeout).for_tenant(tenant)),
                    section.record_calls,
                ),
                state_limits,
                retry,
            },
        );
    }
    Ok(out)
}

/// The longest backoff a step may ask for between attempts: an hour.
const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

#[derive(Debug)]
pub(super) enum BuildError {
    Field {
        field: String,
        message: String,
    },
    Plugin {
        step: String,
        error: oms_plugin_host::LoadError,
    },
}

impl BuildError {
    pub(super) fn into_tenant_error(self, file: &str) -> TenantError {
        match self {
            Self::Field { field, message } => TenantError::Manifest {
                file: file.into(),
                field,
                message,
            },
            Self::Plugin { step, error } => TenantError::Plugin {
                file: file.into(),
                slot: format!("step {step}"),
                error,
            },
        }
    }
}

fn limits(s: &StepSection) -> Result<CallLimits, (&'static str, String)> {
    let as_plugin = PluginSection {
        component: s.component.clone(),
        settings: BTreeMap::new(),
        allowed_origins: vec![],
        fuel: s.fuel,
        timeout_ms: s.timeout_ms,
        memory_mb: s.memory_mb,
        output_kb: s.output_kb,
        log_kb: s.log_kb,
        record_calls: false,
    };
    call_limits(Slot::SagaStep, &as_plugin)
}

fn state_limits(s: &StepSection) -> Result<StateLimits, (&'static str, String)> {
    let (default, max) = (StateLimits::DEFAULT, StateLimits::MAX);
    Ok(StateLimits {
        max_writes: pick(
            "max_writes",
            s.max_writes,
            default.max_writes,
            max.max_writes,
        )?,
        max_reads: pick("max_reads", s.max_reads, default.max_reads, max.max_reads)?,
        max_value_bytes: pick(
            "max_value_kb",
            s.max_value_kb.map(|k| k << 10),
            default.max_value_bytes,
            max.max_value_bytes,
        )?,
    })
}
