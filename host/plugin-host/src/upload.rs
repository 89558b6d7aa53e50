//! Loading a tenant's upload: every check a component passes before any
//! call can run it, cheapest first — its shape before compiling, the
//! compilation under its budget, the pool's share and a trial
//! instantiation after.

use super::compiler::CompilerProcess;
use super::{
    CallLimits, LoadError, MAX_COMPONENT_BYTES, Plugin, PluginHost, Pre, Slot, deserialize,
    invoke::run_call, shape,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use wasmtime::component::Component;

impl PluginHost {
    /// From now on, tenants' components ([`Self::load_untrusted`]) are
    /// compiled by `compiler`, in its own process under its budget.
    pub fn compile_out_of_process(&self, compiler: CompilerProcess) {
        if self.compiler.set(compiler).is_err() {
            tracing::warn!("a plugin compiler process was already configured; keeping it");
        }
    }

    /// [`Self::load`] for a tenant's upload: its shape checked before
    /// compiling (`shape`), compiled under the budget (`compiler`), then
    /// refused unless it fits the instance pool's share of a call and can be
    /// instantiated under `limits`.
    pub fn load_untrusted(
        &self,
        slot: Slot,
        bytes: &[u8],
        limits: &CallLimits,
    ) -> Result<Arc<Plugin>, LoadError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(plugin) = self.cached(slot, &digest) {
            return Ok(plugin);
        }
        precheck(bytes)?;
        shape::inspect(bytes, &shape::LIMITS)?;
        let component = match self.compiler.get() {
            Some(compiler) => match deserialize(&self.engine, &compiler.compile(bytes)?) {
                // The pool's per-instance limits are checked as native code loads.
                Err(LoadError::Invalid(m)) if m.contains("pooling allocator") => {
                    return Err(LoadError::CannotInstantiate(m));
                }
                other => other?,
            },
            None => Component::new(&self.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?,
        };
        fits_the_pool(&component, limits)?;
        let plugin = self.check(slot, component, digest.clone(), bytes.len())?;
        self.trial(&plugin, limits)?;
        self.cache().insert((slot, digest), plugin.clone());
        Ok(plugin)
    }

    /// Instantiates once under `limits`, calling nothing: what cannot, is
    /// refused now rather than failing every call later.
    fn trial(&self, plugin: &Arc<Plugin>, limits: &CallLimits) -> Result<(), LoadError> {
        let running = plugin.clone();
        let (result, _) = run_call(
            &self.engine,
            plugin,
            *limits,
            super::invoke::Grants::default(),
            &move |store: &mut wasmtime::Store<super::CallState>, _: &Plugin| match &running.pre {
                Pre::Guardrail(pre) => pre.instantiate(&mut *store).map(drop),
                Pre::Fraud(pre) => pre.instantiate(&mut *store).map(drop),
                Pre::Payment { operations, .. } => operations.instantiate(&mut *store).map(drop),
                Pre::Policy(pre) => pre.instantiate(&mut *store).map(drop),
                Pre::Step(pre) => pre.instantiate(&mut *store).map(drop),
            },
        );
        result.map_err(|e| LoadError::CannotInstantiate(format!("under the slot's limits: {e}")))
    }
}

/// The checks every component passes before anything parses it further.
pub(super) fn precheck(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge(bytes.len()));
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(LoadError::NotAComponent(
                "this is a core Wasm module; build a component (e.g. --target wasm32-wasip2)"
                    .into(),
            ));
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
        _ => {
            return Err(LoadError::NotAComponent(
                "the bytes are not WebAssembly".into(),
            ));
        }
    }
    Ok(())
}

/// The pool's share of one call: memories and tables (as compiled, every
/// instantiation counted) and the initial memory under the tenant's limit.
fn fits_the_pool(component: &Component, limits: &CallLimits) -> Result<(), LoadError> {
    let Some(needs) = component.resources_required() else {
        return Err(LoadError::Invalid(
            "the component imports core modules, which no slot grants".into(),
        ));
    };
    let max = &shape::LIMITS;
    if needs.num_memories > max.memories {
        return Err(LoadError::TooManyMemories {
            found: needs.num_memories,
            max: max.memories,
        });
    }
    if needs.num_tables > max.tables {
        return Err(LoadError::TooManyTables {
            found: needs.num_tables,
            max: max.tables,
        });
    }
    let initial = needs
        .max_initial_memory_size
        .unwrap_or(0)
        .saturating_mul(64 << 10);
    if initial > limits.memory_bytes as u64 {
        return Err(LoadError::CannotInstantiate(format!(
            "a memory starts at {initial} bytes, over the slot's limit of {}",
            limits.memory_bytes
        )));
    }
    Ok(())
}
