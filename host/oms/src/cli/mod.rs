//! One module per command besides `serve` (which lives in `main.rs`).

pub mod dlq;
pub mod host;
pub mod operator;
pub mod plugin;
pub mod plugin_local;
pub mod plugin_scaffold;
pub mod plugin_step;
pub mod saga;
pub mod tenant;
