//! Host-side bindings, one module per WIT world. The shared `types`
//! interface is generated once (in `guardrail`) and reused by the others.

pub mod guardrail {
    wasmtime::component::bindgen!({ world: "guardrail", path: "../../wit" });
}

pub mod fraud {
    wasmtime::component::bindgen!({
        world: "fraud-check",
        path: "../../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

/// A payment adapter's required exports: the operations the saga calls.
pub mod payment {
    wasmtime::component::bindgen!({
        world: "payment-operations",
        path: "../../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

/// A payment adapter's optional export, read back for reconciliation.
pub mod reconciliation {
    wasmtime::component::bindgen!({
        world: "payment-reconciliation",
        path: "../../wit",
        with: {
            "oms:plugin/types": super::guardrail::oms::plugin::types,
            "oms:plugin/outbound-http": super::payment::oms::plugin::outbound_http,
        },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        world: "compensation-policy",
        path: "../../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

pub use guardrail::oms::plugin::types::{Address, LineItem, Order};

/// A tenant-defined saga step: `custom-step`, with the host's `step-state`
/// and `outbound-http`.
pub mod step {
    wasmtime::component::bindgen!({
        world: "saga-step",
        path: "../../wit",
        with: {
            "oms:plugin/types": super::guardrail::oms::plugin::types,
            "oms:plugin/outbound-http": super::payment::oms::plugin::outbound_http,
        },
    });
}
