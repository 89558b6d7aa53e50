//! The saga's vocabulary: its state, the events it is told, the actions it
//! asks for, and the plans and endings in between. Data only; the
//! transitions are `core::apply`, undoing is `compensation`, shipping and
//! delivery are `handover`.

use super::book::OrderBook;
use super::refunds::Refund;
use super::returns::{ReceivedLine, Return, ReturnLine, ReturnPolicy};
use super::step::{Compensation, SagaDefinition, Step};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// Forward steps are running.
    Running,
    /// Undoing completed steps.
    Compensating,
    /// Every forward step done: the order is confirmed.
    Completed,
    /// A guardrail or the fraud check refused the order; compensations done.
    Rejected,
    /// A step failed, the deadline passed or the client cancelled; compensations done.
    Cancelled,
    /// A compensation exhausted its retries. Needs an operator; never skipped.
    Stuck,
    /// An operator settled a stuck saga out of band (with a reason); final.
    Resolved,
}

impl SagaStatus {
    pub const ALL: [SagaStatus; 7] = [
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Rejected,
        Self::Cancelled,
        Self::Stuck,
        Self::Resolved,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Completed => "COMPLETED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
            Self::Stuck => "STUCK",
            Self::Resolved => "RESOLVED",
        }
    }
}

/// Retry bounds fixed when the saga starts, from the tenant manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Hard ceiling on attempts at one forward step, whatever the policy says.
    pub max_step_attempts: u32,
    pub max_compensation_attempts: u32,
    pub compensation_base_delay_ms: u64,
    pub compensation_max_delay_ms: u64,
    /// How long the warehouse has to accept or reject a fulfilment request;
    /// `None`: the tenant's warehouse does not answer, and the order is
    /// confirmed once the request is sent. (Absent from states stored
    /// before it existed: `None`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment_decision_ms: Option<u64>,
    /// The tenant's terms for returns. (Absent from states stored before
    /// returns existed: the defaults.)
    #[serde(default)]
    pub returns: ReturnPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_step_attempts: 8,
            max_compensation_attempts: 8,
            compensation_base_delay_ms: 200,
            compensation_max_delay_ms: 10_000,
            fulfilment_decision_ms: None,
            returns: ReturnPolicy::default(),
        }
    }
}

/// Why forward progress stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Ending {
    Rejected {
        step: Step,
        code: String,
        reason: String,
    },
    Failed {
        step: Step,
        code: String,
        message: String,
    },
    CancelledByClient {
        reason: String,
    },
    DeadlineExceeded,
}

impl Ending {
    /// The `cancellationReason` clients see.
    pub fn reason(&self) -> String {
        match self {
            Self::Rejected { code, reason, .. } => format!("{code}: {reason}"),
            Self::Failed {
                step,
                code,
                message,
            } => format!("{step} failed: {code}: {message}"),
            Self::CancelledByClient { reason } => format!("CANCELLED_BY_CLIENT: {reason}"),
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED: the saga ran out of time".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    /// Retrying may succeed.
    pub transient: bool,
}

/// The compensation policy's answer to a failed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum Plan {
    Retry {
        delay_ms: u64,
    },
    Compensate {
        actions: Vec<Compensation>,
        notify: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SagaEvent {
    StepSucceeded {
        step: Step,
        provider_reference: Option<String>,
        /// A tenant-defined step's output, kept for its compensation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    StepRejected {
        step: Step,
        code: String,
        reason: String,
    },
    StepFailed {
        step: Step,
        failure: Failure,
        plan: Plan,
    },
    CompensationSucceeded {
        compensation: Compensation,
    },
    CompensationFailed {
        compensation: Compensation,
        failure: Failure,
    },
    CancelRequested {
        reason: String,
    },
    /// Some or all of the goods left the warehouse (from the API). Legal
    /// only on a completed saga with lines not shipped yet; `order_items`
    /// are the order's SKUs (from the order, which never changes).
    #[serde(rename_all = "camelCase")]
    Shipped {
        shipment: Shipment,
        #[serde(default)]
        order_items: Vec<String>,
    },
    /// The goods reached the customer (from the API). Legal only once shipped.
    Delivered,
    /// The warehouse answered the fulfilment request (from the API).
    /// Legal only while the saga waits for it; repeating the same
    /// acceptance changes nothing.
    FulfilmentDecided {
        decision: FulfilmentDecision,
    },
    /// The warehouse's time to answer ran out (the timer command of
    /// [`Action::AwaitFulfilment`]). Harmless once it answered.
    FulfilmentDeadlinePassed,
    /// A client opens a return of shipped goods (from the API; the id is
    /// made there). `book` is the order's money per line.
    #[serde(rename_all = "camelCase")]
    ReturnRequested {
        return_id: String,
        items: Vec<ReturnLine>,
        reason: String,
        book: OrderBook,
    },
    /// The warehouse received a return's goods (from the API).
    #[serde(rename_all = "camelCase")]
    ReturnReceived {
        return_id: String,
        items: Vec<ReceivedLine>,
        warehouse_id: String,
        book: OrderBook,
    },
    /// A client cancels some lines of a confirmed order before they ship
    /// (from the API; `refund_id` made there).
    #[serde(rename_all = "camelCase")]
    LinesCancelled {
        refund_id: String,
        items: Vec<String>,
        reason: String,
        book: OrderBook,
    },
    /// A partial refund ([`Action::RunRefund`]) went through.
    #[serde(rename_all = "camelCase")]
    RefundSucceeded {
        refund_id: String,
        provider_reference: String,
    },
    #[serde(rename_all = "camelCase")]
    RefundFailed {
        refund_id: String,
        failure: Failure,
    },
    /// An operator runs a stuck saga's failed compensation again, now.
    OperatorRetry {
        operator: String,
    },
    /// An operator stops a running saga going forward; its running step
    /// finishes first, then what it did is undone.
    OperatorCompensate {
        operator: String,
        reason: String,
    },
    /// An operator settled a stuck saga out of band.
    OperatorResolve {
        operator: String,
        reason: String,
    },
    /// The running step or compensation was not tried: what it would call
    /// is known to be down (an open circuit breaker). It runs again after
    /// `delay_ms` at the same attempt, so the saga keeps its retry budget.
    #[serde(rename_all = "camelCase")]
    Postponed {
        delay_ms: u64,
        reason: String,
    },
}

impl SagaEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::StepSucceeded { .. } => "step.succeeded",
            Self::StepRejected { .. } => "step.rejected",
            Self::StepFailed { .. } => "step.failed",
            Self::CompensationSucceeded { .. } => "compensation.succeeded",
            Self::CompensationFailed { .. } => "compensation.failed",
            Self::CancelRequested { .. } => "cancel.requested",
            Self::Shipped { .. } => "order.shipped",
            Self::Delivered => "order.delivered",
            Self::FulfilmentDecided { decision } if decision.accepted => "fulfilment.accepted",
            Self::FulfilmentDecided { .. } => "fulfilment.rejected",
            Self::FulfilmentDeadlinePassed => "fulfilment.deadline_passed",
            Self::OperatorRetry { .. } => "operator.retry",
            Self::OperatorCompensate { .. } => "operator.compensate",
            Self::OperatorResolve { .. } => "operator.resolve",
            Self::Postponed { .. } => "step.postponed",
            Self::ReturnRequested { .. } => "return.requested",
            Self::ReturnReceived { .. } => "return.received",
            Self::LinesCancelled { .. } => "order.lines_cancelled",
            Self::RefundSucceeded { .. } => "refund.succeeded",
            Self::RefundFailed { .. } => "refund.failed",
        }
    }
}

/// What the executor must do next. Delays are upper bounds for full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    RunStep {
        step: Step,
        attempt: u32,
        delay_ms: u64,
    },
    RunCompensation {
        compensation: Compensation,
        attempt: u32,
        delay_ms: u64,
    },
    Notify {
        recipients: Vec<String>,
        reason: String,
    },
    /// The saga reached `status`; the order's status follows from it.
    Finish { status: SagaStatus },
    /// Fulfilment was requested and the warehouse must answer by `until`
    /// (epoch ms): a timer that reports [`SagaEvent::FulfilmentDeadlinePassed`].
    AwaitFulfilment { until: i64 },
    /// Fulfilment was requested and the saga now turns back: the warehouse
    /// must be told to stop (the goods have not left: a cancel after
    /// shipment is refused).
    CancelFulfilment { reason: String },
    /// The goods moved on after the saga completed: the order becomes
    /// shipped (its stock leaves on-hand and reserved) or delivered.
    Handover {
        stage: Handover,
        shipment: Option<Shipment>,
    },
    /// A partial refund (of a return or of cancelled lines) to make, a
    /// command like a compensation.
    #[serde(rename_all = "camelCase")]
    RunRefund {
        refund_id: String,
        attempt: u32,
        delay_ms: u64,
    },
    /// A return's sellable goods go back on hand in `warehouse_id`.
    #[serde(rename_all = "camelCase")]
    Restock {
        return_id: String,
        warehouse_id: String,
        lines: Vec<(String, i64)>,
    },
    /// These lines will not ship: their stock is released and the
    /// warehouse told.
    CancelLines { items: Vec<String>, reason: String },
    /// A return changed: announce it as it now is.
    #[serde(rename_all = "camelCase")]
    ReturnChanged { return_id: String },
    /// A partial refund changed: announce it as it now is.
    #[serde(rename_all = "camelCase")]
    RefundChanged { refund_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaState {
    pub definition: SagaDefinition,
    pub limits: Limits,
    pub status: SagaStatus,
    /// Index into the definition of the forward step now running.
    pub position: usize,
    /// Attempt at the running step or compensation, from 1.
    pub attempt: u32,
    pub completed: Vec<Step>,
    /// Compensations still to run; the first is running now.
    pub pending: Vec<Compensation>,
    pub compensated: Vec<Compensation>,
    pub ending: Option<Ending>,
    /// A cancel that arrived while a forward step was in flight.
    pub cancel_requested: Option<String>,
    pub notify: Vec<String>,
    /// The payment provider's reference from authorize-payment.
    pub payment_reference: Option<String>,
    /// Epoch ms after which no new forward step starts.
    pub deadline_at: i64,
    /// How far the goods of a completed saga have gone. Shipping and
    /// delivery are events of this machine, so they and a cancel are decided
    /// against one state under one version check: whichever commits first wins.
    /// (Absent from states stored before it existed: not shipped.)
    #[serde(default)]
    pub handover: Handover,
    /// The shipments so far, in the order they left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipments: Vec<Shipment>,
    /// Epoch ms by which the warehouse must answer the fulfilment request;
    /// set while the saga waits for that answer (nothing else runs then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_fulfilment_until: Option<i64>,
    /// The warehouse's answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment_decision: Option<FulfilmentDecision>,
    /// Returns, in the order they were opened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns: Vec<Return>,
    /// Partial refunds (returns, cancelled lines), in the order they began.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// SKUs of lines cancelled before they shipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled_items: Vec<String>,
    /// What each completed tenant-defined step returned, handed to its
    /// compensation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<(Step, String)>,
    /// How an operator settled the saga (RESOLVED), in their words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal saga transition: {event} in status {status:?} ({detail})")]
pub struct IllegalTransition {
    pub status: SagaStatus,
    pub event: &'static str,
    pub detail: String,
}

/// How far a completed saga's goods have gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Handover {
    #[default]
    NotShipped,
    /// Some lines have shipped, not all.
    PartiallyShipped,
    Shipped,
    Delivered,
}

impl Handover {
    pub fn past_tense(&self) -> &'static str {
        match self {
            Self::NotShipped => "not shipped",
            Self::PartiallyShipped => "partly shipped",
            Self::Shipped => "shipped",
            Self::Delivered => "been delivered",
        }
    }
}

/// A warehouse's answer to a fulfilment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FulfilmentDecision {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// As the warehouse gave it (RFC 3339 date or date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery: Option<String>,
}

/// The carrier's record of a shipment, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
    /// The SKUs of the order's lines in it (whole lines). Asked for empty:
    /// every line not shipped yet; recorded, always the lines. (Absent from
    /// shipments recorded before lines existed: the whole order.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// Epoch ms, when it was recorded.
    #[serde(default)]
    pub shipped_at: i64,
}

impl SagaState {
    /// What the tenant-defined step `step` returned when it completed.
    pub fn output_of(&self, step: Step) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, o)| o.as_str())
    }

    /// The forward step now running; none while the saga waits for the
    /// warehouse's answer.
    pub fn current_step(&self) -> Option<Step> {
        (self.status == SagaStatus::Running && self.awaiting_fulfilment_until.is_none())
            .then(|| self.definition.steps().get(self.position).copied())
            .flatten()
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            SagaStatus::Completed | SagaStatus::Rejected | SagaStatus::Cancelled
        )
    }
}
