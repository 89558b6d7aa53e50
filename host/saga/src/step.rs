//! Forward steps, their compensations, and a tenant's step order.

use oms_domain::wire_enum;
use serde::{Deserialize, Serialize};

wire_enum!(
    /// A forward step of the order saga.
    Step {
        Validate = "validate",
        FraudCheck = "fraud-check",
        ReserveInventory = "reserve-inventory",
        AuthorizePayment = "authorize-payment",
        CapturePayment = "capture-payment",
        RequestFulfilment = "request-fulfilment",
    }
);

wire_enum!(
    /// An action that undoes a completed step.
    Compensation {
        ReleaseInventory = "release-inventory",
        VoidPayment = "void-payment",
        RefundPayment = "refund-payment",
    }
);

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Validate,
        Step::FraudCheck,
        Step::ReserveInventory,
        Step::AuthorizePayment,
        Step::CapturePayment,
        Step::RequestFulfilment,
    ];
}

/// A tenant's step order, checked so that every saga built from it can finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Step>", into = "Vec<Step>")]
pub struct SagaDefinition(Vec<Step>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error("step {0} appears more than once")]
    Duplicate(Step),
    #[error("step {0} is missing")]
    Missing(Step),
    #[error("validate must be the first step")]
    ValidateNotFirst,
    #[error("capture-payment must come after authorize-payment")]
    CaptureBeforeAuthorize,
    #[error("request-fulfilment must be the last step")]
    FulfilmentNotLast,
}

impl SagaDefinition {
    pub fn new(steps: Vec<Step>) -> Result<Self, DefinitionError> {
        for (i, step) in steps.iter().enumerate() {
            if steps[..i].contains(step) {
                return Err(DefinitionError::Duplicate(*step));
            }
        }
        if let Some(missing) = Step::ALL.iter().find(|s| !steps.contains(s)) {
            return Err(DefinitionError::Missing(*missing));
        }
        let at = |s: Step| steps.iter().position(|x| *x == s).unwrap_or(usize::MAX);
        if at(Step::Validate) != 0 {
            return Err(DefinitionError::ValidateNotFirst);
        }
        if at(Step::CapturePayment) < at(Step::AuthorizePayment) {
            return Err(DefinitionError::CaptureBeforeAuthorize);
        }
        if at(Step::RequestFulfilment) != steps.len() - 1 {
            return Err(DefinitionError::FulfilmentNotLast);
        }
        Ok(Self(steps))
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }
}

impl TryFrom<Vec<Step>> for SagaDefinition {
    type Error = DefinitionError;
    fn try_from(steps: Vec<Step>) -> Result<Self, Self::Error> {
        Self::new(steps)
    }
}

impl From<SagaDefinition> for Vec<Step> {
    fn from(d: SagaDefinition) -> Self {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    #[test]
    fn both_demo_orders_are_valid() {
        assert!(SagaDefinition::new(Step::ALL.to_vec()).is_ok());
        let pay_first = vec![
            Validate,
            FraudCheck,
            AuthorizePayment,
            ReserveInventory,
            CapturePayment,
            RequestFulfilment,
        ];
        assert!(SagaDefinition::new(pay_first).is_ok());
    }

    #[test]
    fn broken_orders_are_refused() {
        use DefinitionError as E;
        let mut dup = Step::ALL.to_vec();
        dup[1] = Validate;
        assert_eq!(SagaDefinition::new(dup), Err(E::Duplicate(Validate)));
        assert_eq!(
            SagaDefinition::new(vec![Validate]),
            Err(E::Missing(FraudCheck))
        );
        let mut capture_first = Step::ALL.to_vec();
        capture_first.swap(3, 4);
        assert_eq!(
            SagaDefinition::new(capture_first),
            Err(E::CaptureBeforeAuthorize)
        );
        let mut late_validate = Step::ALL.to_vec();
        late_validate.swap(0, 1);
        assert_eq!(SagaDefinition::new(late_validate), Err(E::ValidateNotFirst));
        let mut early_fulfil = Step::ALL.to_vec();
        early_fulfil.swap(4, 5);
        assert_eq!(SagaDefinition::new(early_fulfil), Err(E::FulfilmentNotLast));
    }
}
