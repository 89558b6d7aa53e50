//! The demo plugins, compiled from `plugins/` by the build script and
//! embedded in the binary. Tenant manifests name them `builtin:<name>`.

use super::Slot;

/// Where the build script left every component it compiled from `plugins/`
/// (`<name>.wasm`, underscored), the hostile corpus for the tests included.
pub const ARTIFACTS_DIR: &str = env!("OUT_DIR");

pub struct Builtin {
    pub name: &'static str,
    pub slot: Slot,
    pub bytes: &'static [u8],
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "guardrail-limits",
        slot: Slot::Guardrail,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/guardrail_limits.wasm")),
    },
    Builtin {
        name: "guardrail-strict",
        slot: Slot::Guardrail,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/guardrail_strict.wasm")),
    },
    Builtin {
        name: "fraud-rules",
        slot: Slot::FraudCheck,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/fraud_rules.wasm")),
    },
    Builtin {
        name: "payment-sandbox",
        slot: Slot::PaymentProvider,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/payment_sandbox.wasm")),
    },
    Builtin {
        name: "compensation-default",
        slot: Slot::CompensationPolicy,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/compensation_default.wasm")),
    },
    Builtin {
        name: "loyalty-points",
        slot: Slot::SagaStep,
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/loyalty_points.wasm")),
    },
];

pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}
