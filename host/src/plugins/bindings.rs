//! Host-side bindings, one module per WIT world. The shared `types`
//! interface is generated once (in `guardrail`) and reused by the others.

pub mod guardrail {
    wasmtime::component::bindgen!({ world: "guardrail", path: "../wit" });
}

pub mod fraud {
    wasmtime::component::bindgen!({
        world: "fraud-check",
        path: "../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

pub mod payment {
    wasmtime::component::bindgen!({
        world: "payment-provider",
        path: "../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        world: "compensation-policy",
        path: "../wit",
        with: { "oms:plugin/types": super::guardrail::oms::plugin::types },
    });
}

pub use guardrail::oms::plugin::types::{Address, LineItem, Order};
