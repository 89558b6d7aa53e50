//! OMS: a multi-tenant order management platform whose per-tenant business
//! logic runs as sandboxed WebAssembly components.

pub mod api;
pub mod bench;
pub mod dlq_cli;
pub mod domain;
pub mod engine;
pub mod plugin_cli;
pub mod plugin_local;
pub mod plugin_scaffold;
pub mod plugins;
pub mod psp_sandbox;
pub mod saga;
pub mod shares;
pub mod store;
pub mod tenants;
pub mod transport;

/// Milliseconds since the Unix epoch: the one clock the host reads.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
