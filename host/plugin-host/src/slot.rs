//! The extension points (slots), what each may import, and the limits a
//! call runs under: each slot's defaults and the platform's maxima.

use oms_domain::wire_enum;
use std::time::Duration;

wire_enum!(
    /// An extension point; each is one WIT world.
    Slot {
        Guardrail = "guardrail",
        FraudCheck = "fraud-check",
        PaymentProvider = "payment-provider",
        CompensationPolicy = "compensation-policy",
        // A step of the tenant's own; a tenant has one per step it defines.
        SagaStep = "saga-step",
    }
);

/// Imports every slot may have: process plumbing that Rust, C and Python
/// guests link by default. The host gives them an empty environment, empty
/// stdin and a bounded log for stdout/stderr, so they carry no information in.
const PLUMBING: &[&str] = &[
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-input@",
    "wasi:cli/terminal-output@",
    "wasi:cli/terminal-stdin@",
    "wasi:cli/terminal-stdout@",
    "wasi:cli/terminal-stderr@",
    "wasi:io/error@",
    "wasi:io/streams@",
    "wasi:io/poll@",
    "oms:plugin/types@",
];

impl Slot {
    /// The slots every tenant fills, one component each (a `saga-step` is
    /// filled once per step the tenant defines).
    pub const ALL: [Slot; 4] = [
        Slot::Guardrail,
        Slot::FraudCheck,
        Slot::PaymentProvider,
        Slot::CompensationPolicy,
    ];

    pub(super) fn allows_import(&self, name: &str) -> bool {
        PLUMBING.iter().any(|p| name.starts_with(p))
            || (matches!(self, Slot::PaymentProvider | Slot::SagaStep)
                && name.starts_with("oms:plugin/outbound-http@"))
            || (*self == Slot::SagaStep && name.starts_with("oms:plugin/step-state@"))
    }

    /// Whether the slot's calls may reach the network (never replayable).
    pub fn has_network(&self) -> bool {
        matches!(self, Slot::PaymentProvider | Slot::SagaStep)
    }

    /// What a tenant gets unless its manifest says otherwise.
    pub fn default_limits(&self) -> CallLimits {
        match self {
            Slot::PaymentProvider => CallLimits {
                fuel: 200_000_000,
                timeout: Duration::from_secs(10),
                memory_bytes: 32 << 20,
                log_bytes: 16 << 10,
                output_bytes: 64 << 10,
                http_timeout: Duration::from_secs(5),
            },
            // A step waits on HTTP as a payment does (waiting burns no
            // fuel), but its compute is a guardrail's: the JavaScript
            // loyalty step takes 1.9M fuel, the Python scaffold 114k. A step
            // failing transiently is retried, each attempt with this budget
            // again, so a looping step's cost to the host is this times its
            // attempts: 20M keeps that near a tenth of a second per attempt.
            Slot::SagaStep => CallLimits {
                fuel: 20_000_000,
                timeout: Duration::from_secs(10),
                memory_bytes: 32 << 20,
                log_bytes: 16 << 10,
                output_bytes: 64 << 10,
                http_timeout: Duration::from_secs(5),
            },
            _ => CallLimits {
                fuel: 50_000_000,
                timeout: Duration::from_millis(250),
                memory_bytes: 16 << 20,
                log_bytes: 16 << 10,
                output_bytes: 64 << 10,
                http_timeout: Duration::ZERO,
            },
        }
    }

    /// The platform maxima: a tenant manifest may set any limit up to these,
    /// never beyond (a Python guest, carrying its interpreter, needs more
    /// memory than the defaults).
    pub fn max_limits(&self) -> CallLimits {
        match self {
            Slot::PaymentProvider | Slot::SagaStep => CallLimits {
                fuel: 2_000_000_000,
                timeout: Duration::from_secs(30),
                memory_bytes: MAX_MEMORY_BYTES,
                log_bytes: 256 << 10,
                output_bytes: 1 << 20,
                http_timeout: Duration::from_secs(15),
            },
            _ => CallLimits {
                fuel: 1_000_000_000,
                timeout: Duration::from_secs(2),
                memory_bytes: MAX_MEMORY_BYTES,
                log_bytes: 256 << 10,
                output_bytes: 1 << 20,
                http_timeout: Duration::ZERO,
            },
        }
    }
}

/// Linear memory of one instance, at most (the pooling allocator reserves this much per slot).
pub const MAX_MEMORY_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Instructions, roughly: one unit of fuel per Wasm operator.
    pub fuel: u64,
    /// Wall clock, enforced by epoch interruption.
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// What the plugin may write to stdout/stderr per call; the rest is cut off.
    pub log_bytes: usize,
    /// The largest answer accepted, measured as the canonical ABI lays it
    /// out (`answers`): every list element and field counts.
    pub output_bytes: usize,
    /// Per outbound request (payment slot only).
    pub http_timeout: Duration,
}
