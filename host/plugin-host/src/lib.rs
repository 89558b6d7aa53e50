//! The Wasm plugin host: loads tenant components, checks each against its
//! slot's world and import allow-list, pre-instantiates it once per content
//! hash, and runs every call in a fresh instance under fuel, an epoch
//! deadline and a memory limit. A plugin cannot crash the host: every trap,
//! timeout and exhausted budget comes back as a [`PluginError`] for the
//! slot's failure policy to handle.

pub mod answers;
pub mod bindings;
pub mod builtin;
pub mod calls;
pub mod compiler;
pub mod http;
mod invoke;
pub mod log;
mod resolve;
pub mod shape;
pub mod shares;
mod slot;
pub mod stats;
pub mod step_state;
#[cfg(test)]
mod step_tests;
mod threads;
mod upload;

use bindings::{fraud, guardrail, payment, policy, reconciliation, step};
use http::HttpGrant;
use sha2::{Digest, Sha256};
pub use slot::{CallLimits, MAX_MEMORY_BYTES, Slot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How often the epoch advances; deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Calls running at once; beyond this, callers wait (back-pressure) rather
/// than exhaust the instance pool.
const MAX_CONCURRENT_CALLS: usize = 128;
/// Calls one tenant may have running at once: a tenant that saturates its
/// share waits on it alone, and leaves the rest of the host to the others.
/// With every component inside [`shape::LIMITS`], all calls the host allows
/// at once fit the instance pool, so no tenant can exhaust it.
const TENANT_CONCURRENT_CALLS: usize = 32;
const POOL_INSTANCES: u32 = 512;
/// Largest component accepted (a componentize-py guest is about 18 MB).
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Why a component was refused at load. Codes are stable API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("TOO_LARGE: {0} bytes exceeds the limit of {MAX_COMPONENT_BYTES}")]
    TooLarge(usize),
    #[error("NOT_A_COMPONENT: {0}")]
    NotAComponent(String),
    #[error("FORBIDDEN_IMPORT: the {slot} slot does not grant {}", imports.join(", "))]
    ForbiddenImport { slot: Slot, imports: Vec<String> },
    #[error("WORLD_MISMATCH: the component does not implement the {slot} world: {detail}")]
    WorldMismatch { slot: Slot, detail: String },
    #[error("INVALID_COMPONENT: {0}")]
    Invalid(String),
    #[error("COMPILE_BUDGET_EXCEEDED: {0}")]
    OverBudget(String),
    #[error(
        "TOO_MANY_INSTANCES: the component creates {found} core instances per call, at most {max}"
    )]
    TooManyInstances { found: u32, max: u32 },
    #[error(
        "TOO_MANY_MEMORIES: the component needs {found} linear memories per call, at most {max}"
    )]
    TooManyMemories { found: u32, max: u32 },
    #[error("TOO_MANY_TABLES: the component needs {found} tables per call, at most {max}")]
    TooManyTables { found: u32, max: u32 },
    #[error("CANNOT_INSTANTIATE: {0}")]
    CannotInstantiate(String),
}

impl LoadError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "TOO_LARGE",
            Self::NotAComponent(_) => "NOT_A_COMPONENT",
            Self::ForbiddenImport { .. } => "FORBIDDEN_IMPORT",
            Self::WorldMismatch { .. } => "WORLD_MISMATCH",
            Self::Invalid(_) => "INVALID_COMPONENT",
            Self::OverBudget(_) => "COMPILE_BUDGET_EXCEEDED",
            Self::TooManyInstances { .. } => "TOO_MANY_INSTANCES",
            Self::TooManyMemories { .. } => "TOO_MANY_MEMORIES",
            Self::TooManyTables { .. } => "TOO_MANY_TABLES",
            Self::CannotInstantiate(_) => "CANNOT_INSTANTIATE",
        }
    }
}

/// Why a call did not return a value. The slot's failure policy decides
/// what that means for the order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin ran out of fuel")]
    OutOfFuel,
    #[error("plugin exceeded its deadline")]
    Timeout,
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin answered {0} bytes, over its output limit")]
    OutputTooLarge(usize),
    #[error("plugin answered outside its contract: {0}")]
    InvalidAnswer(String),
    #[error("plugin host unavailable: {0}")]
    Unavailable(String),
}

impl PluginError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::OutOfFuel => "PLUGIN_OUT_OF_FUEL",
            Self::Timeout => "PLUGIN_TIMEOUT",
            Self::Trap(_) => "PLUGIN_TRAP",
            Self::Instantiate(_) => "PLUGIN_INSTANTIATE_FAILED",
            Self::OutputTooLarge(_) => "PLUGIN_OUTPUT_TOO_LARGE",
            Self::InvalidAnswer(_) => "PLUGIN_INVALID_ANSWER",
            Self::Unavailable(_) => "PLUGIN_UNAVAILABLE",
        }
    }
}

/// Measurements of one call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub fuel_used: u64,
    /// The whole call: set-up and the guest's own work.
    pub duration: Duration,
    /// Of `duration`, making the store, WASI context and instance (`None`
    /// when the call failed before its instance was ready).
    pub setup: Option<Duration>,
    pub log: String,
    /// Bytes written past the log budget, cut off.
    pub log_dropped: usize,
}

#[derive(Debug)]
pub struct Called<R> {
    pub value: R,
    pub stats: CallStats,
}

enum Pre {
    Guardrail(guardrail::GuardrailPre<CallState>),
    Fraud(fraud::FraudCheckPre<CallState>),
    Payment {
        operations: payment::PaymentOperationsPre<CallState>,
        /// Present when the adapter exports `payment-status`.
        status: Option<reconciliation::PaymentReconciliationIndices>,
    },
    Policy(policy::CompensationPolicyPre<CallState>),
    Step(step::SagaStepPre<CallState>),
}

/// A checked, compiled and pre-instantiated component.
pub struct Plugin {
    pub slot: Slot,
    /// sha256 of the component bytes, hex: the version everything records.
    pub digest: String,
    pub size_bytes: usize,
    component: Component,
    pre: Pre,
    /// Its calls go to a call thread even when they could run inline
    /// (it writes to its log: see `invoke`).
    threaded: std::sync::atomic::AtomicBool,
}

impl Plugin {
    fn threaded(&self) -> bool {
        self.threaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn needs_thread(&self) {
        self.threaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Short form of the digest for logs and API answers.
    pub fn version(&self) -> &str {
        &self.digest[..12]
    }
}

/// Per-call store data.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    http: Option<HttpGrant>,
    /// A custom step's state (its calls only).
    step_state: Option<step_state::CallStepState>,
    /// When the instance was ready and the guest's own work began.
    ready: Option<std::time::Instant>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl payment::oms::plugin::outbound_http::Host for CallState {
    fn send(
        &mut self,
        request: payment::oms::plugin::outbound_http::Request,
    ) -> Result<
        payment::oms::plugin::outbound_http::Response,
        payment::oms::plugin::outbound_http::HttpError,
    > {
        match &mut self.http {
            Some(grant) => grant.send(request),
            None => {
                Err(payment::oms::plugin::outbound_http::HttpError::ForbiddenOrigin(request.url))
            }
        }
    }
}

impl guardrail::oms::plugin::types::Host for CallState {}

impl step::oms::plugin::step_state::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<String>, StateError> {
        self.step_state()?.get(&key)
    }

    fn put(&mut self, key: String, value: String) -> Result<(), StateError> {
        self.step_state()?.put(&key, value)
    }

    fn delete(&mut self, key: String) -> Result<(), StateError> {
        self.step_state()?.delete(&key)
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, StateError> {
        self.step_state()?.increment(&key, delta)
    }

    fn decrement(&mut self, key: String, amount: u64) -> Result<i64, StateError> {
        let delta = i64::try_from(amount)
            .map(|a| -a)
            .map_err(|_| StateError::NotANumber(format!("{amount} is past the largest s64")))?;
        self.step_state()?.increment(&key, delta)
    }
}

use step::oms::plugin::step_state::StateError;

impl CallState {
    fn step_state(&mut self) -> Result<&mut step_state::CallStepState, StateError> {
        // Only a saga-step's calls link it; a step call always brings one.
        self.step_state
            .as_mut()
            .ok_or_else(|| StateError::Unavailable("no step state in this call".into()))
    }
}

pub struct PluginHost {
    engine: Engine,
    linker: Linker<CallState>,
    permits: Arc<Semaphore>,
    /// The threads calls run on when they cannot run inline.
    threads: threads::CallThreads,
    /// Each tenant's share of `permits`.
    tenant_permits: crate::shares::TenantShares,
    /// Where tenants' uploads are compiled; in this process when unset
    /// (tools and tests that load trusted code).
    compiler: OnceLock<compiler::CompilerProcess>,
    /// Compiled, pre-instantiated components by slot and content hash: the
    /// same bytes are compiled once however many tenants use them.
    loaded: Mutex<HashMap<(Slot, String), Arc<Plugin>>>,
    /// How each tenant's calls went, per slot and version.
    pub stats: stats::PluginStats,
}

/// The engine's settings, the same wherever code is compiled or run, so
/// native code made by the compiler process loads here.
pub(crate) fn engine_config() -> Config {
    let mut config = compiler_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config()));
    config
}

/// The settings that decide native code; the compiler process runs with
/// these alone (no instance pool: it instantiates nothing, and the pool's
/// reservations would count against its memory limit). The engine's
/// compatibility check refuses an artifact if they ever drift apart.
pub(crate) fn compiler_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10);
    config
}

fn pool_config() -> PoolingAllocationConfig {
    // Sized for every call the host allows at once, each with a component
    // inside `shape::LIMITS`: a call can never find the pool empty.
    let calls = MAX_CONCURRENT_CALLS as u32;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES.max(calls))
        .total_core_instances(calls * shape::LIMITS.core_instances)
        .total_memories(calls * shape::LIMITS.memories)
        .total_tables(calls * shape::LIMITS.tables)
        .max_memory_size(MAX_MEMORY_BYTES)
        // Zero the first pages of a freed instance in place rather than hand
        // them back to the kernel: the next call then takes no page faults.
        // Guardrail p99 went from 2.7 ms to 0.2 ms with this.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        // Reset only the pages a call dirtied (Linux 6.7+'s PAGEMAP_SCAN;
        // elsewhere the memset above as before): a guardrail touches a few
        // pages of its memory, and zeroing all 2 MiB after every call was a
        // tenth of the host's CPU per saga (perf, 2026-12-02).
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// Loads native code. The one `unsafe` call in the host.
fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: deserializing runs the artifact's machine code later, so it
    // must be what `Component::serialize` or `Engine::precompile_component`
    // produced. Artifacts are only ever made by this binary: by a host
    // (`precompiled`), stored in the same database that already decides
    // which code every tenant runs, or by its own compiler process
    // (`compiler`), handed over a pipe. wasmtime also checks the artifact's
    // header against this engine's version and settings.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, artifact) };
    component.map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

impl PluginHost {
    pub fn new() -> Result<Arc<Self>, PluginError> {
        let engine =
            Engine::new(&engine_config()).map_err(|e| PluginError::Unavailable(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        let unavailable = |e: wasmtime::Error| PluginError::Unavailable(e.to_string());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(unavailable)?;
        payment::PaymentOperations::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(unavailable)?;
        step::oms::plugin::step_state::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(unavailable)?;

        // The epoch clock: deadlines are counted in its ticks. A weak handle,
        // so the thread ends when the engine is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("oms-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;

        Ok(Arc::new(Self {
            engine,
            linker,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
            threads: threads::CallThreads::new(MAX_CONCURRENT_CALLS),
            tenant_permits: crate::shares::TenantShares::new(TENANT_CONCURRENT_CALLS),
            compiler: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
            stats: stats::PluginStats::default(),
        }))
    }

    /// Checks, compiles and pre-instantiates a component for `slot`, or returns
    /// the one already loaded from the same bytes.
    pub fn load(&self, slot: Slot, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let key = (slot, digest);
        if let Some(plugin) = self.cache().get(&key) {
            return Ok(plugin.clone());
        }
        let plugin = self.compile(slot, bytes, key.1.clone())?;
        self.cache().insert(key, plugin.clone());
        Ok(plugin)
    }

    /// The component already loaded for `slot` from the bytes with `digest`.
    pub fn cached(&self, slot: Slot, digest: &str) -> Option<Arc<Plugin>> {
        self.cache().get(&(slot, digest.to_string())).cloned()
    }

    /// Identifies the compiler and settings native code was produced with:
    /// a precompiled artifact is only used by an engine with the same key.
    pub fn engine_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime-48-{:016x}", h.finish())
    }

    /// The plugin's native code, for other hosts (and this one after a
    /// restart) to load without compiling again.
    pub fn precompiled(&self, plugin: &Plugin) -> Result<Vec<u8>, LoadError> {
        plugin
            .component
            .serialize()
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }

    /// Loads a component from native code [`Self::precompiled`] made, with
    /// the same import and world checks as [`Self::load`]. Compiling a
    /// Python guest takes seconds; this takes milliseconds.
    pub fn load_precompiled(
        &self,
        slot: Slot,
        digest: &str,
        size_bytes: usize,
        artifact: &[u8],
    ) -> Result<Arc<Plugin>, LoadError> {
        if let Some(plugin) = self.cached(slot, digest) {
            return Ok(plugin);
        }
        let component = deserialize(&self.engine, artifact)?;
        let plugin = self.check(slot, component, digest.to_string(), size_bytes)?;
        self.cache()
            .insert((slot, digest.to_string()), plugin.clone());
        Ok(plugin)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(Slot, String), Arc<Plugin>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn compile(&self, slot: Slot, bytes: &[u8], digest: String) -> Result<Arc<Plugin>, LoadError> {
        upload::precheck(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.check(slot, component, digest, bytes.len())
    }

    /// The checks that follow compilation: imports within the slot's grant,
    /// exports the slot's world; then pre-instantiation.
    fn check(
        &self,
        slot: Slot,
        component: Component,
        digest: String,
        size_bytes: usize,
    ) -> Result<Arc<Plugin>, LoadError> {
        // Every import the slot does not grant, so the author fixes them all at once.
        let forbidden: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name)
            .filter(|name| !slot.allows_import(name))
            .map(|name| format!("`{name}`"))
            .collect();
        if !forbidden.is_empty() {
            return Err(LoadError::ForbiddenImport {
                slot,
                imports: forbidden,
            });
        }
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WorldMismatch {
                    slot,
                    detail: format!("{e:#}"),
                })?;
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch {
            slot,
            detail: format!("{e:#}"),
        };
        let pre = match slot {
            Slot::Guardrail => {
                Pre::Guardrail(guardrail::GuardrailPre::new(instance_pre).map_err(mismatch)?)
            }
            Slot::FraudCheck => {
                Pre::Fraud(fraud::FraudCheckPre::new(instance_pre).map_err(mismatch)?)
            }
            Slot::PaymentProvider => Pre::Payment {
                // Optional, so adapters built before `payment-status` existed
                // run on; but one that exports it must export it right.
                status: if exports_payment_status(&component, &self.engine) {
                    Some(
                        reconciliation::PaymentReconciliationIndices::new(&instance_pre)
                            .map_err(mismatch)?,
                    )
                } else {
                    None
                },
                operations: payment::PaymentOperationsPre::new(instance_pre).map_err(mismatch)?,
            },
            Slot::CompensationPolicy => {
                Pre::Policy(policy::CompensationPolicyPre::new(instance_pre).map_err(mismatch)?)
            }
            Slot::SagaStep => Pre::Step(step::SagaStepPre::new(instance_pre).map_err(mismatch)?),
        };
        Ok(Arc::new(Plugin {
            slot,
            digest,
            size_bytes,
            component,
            pre,
            threaded: Default::default(),
        }))
    }
}

pub use invoke::{PaymentOp, PaymentState, ProviderPayment, RetrieveError, StepAnswer, StepCall};

fn exports_payment_status(component: &Component, engine: &Engine) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("oms:plugin/payment-status@"))
}
