//! The order saga: step vocabulary, tenant step orders and the pure state
//! machine. Nothing here does I/O; `engine` carries out the actions.

pub mod book;
pub mod breaker;
pub mod compensation;
pub mod core;
pub mod fulfilment;
pub mod handover;
pub mod operator;
pub mod refunds;
pub mod returns;
pub mod state;
pub mod step;
pub mod step_name;

pub use self::core::{
    Action, Ending, Failure, FulfilmentDecision, IllegalTransition, Limits, Plan, SagaEvent,
    SagaState, SagaStatus, apply, resolve_plan, start,
};
pub use book::{BookLine, OrderBook};
pub use compensation::{StepRetry, default_plan, step_plan};
pub use handover::{Handover, Shipment};
pub use refunds::{Refund, RefundStatus};
pub use returns::{Condition, ReceivedLine, Return, ReturnLine, ReturnPolicy, ReturnStatus};
pub use step::{Compensation, SagaDefinition, Step, StepName};
