//! Forward steps, their compensations, and a tenant's step order: the six
//! built-in steps and any the tenant defines (a component of its own with a
//! compensation, see `wit/oms.wit`'s `saga-step` world).

pub use super::step_name::{NameError, StepName};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A forward step of the order saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Validate,
    FraudCheck,
    ReserveInventory,
    AuthorizePayment,
    CapturePayment,
    RequestFulfilment,
    /// A tenant-defined step; its compensation is its component's own.
    Custom(StepName),
}

/// An action that undoes a completed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compensation {
    ReleaseInventory,
    VoidPayment,
    RefundPayment,
    /// Undoes the tenant-defined step of this name (its `compensate`);
    /// named on the wire as the step is.
    Custom(StepName),
}

/// Wire names of the built-in steps and compensations, in one list so a
/// tenant's step can never be named like one of them.
const BUILTIN_STEPS: [(Step, &str); 6] = [
    (Step::Validate, "validate"),
    (Step::FraudCheck, "fraud-check"),
    (Step::ReserveInventory, "reserve-inventory"),
    (Step::AuthorizePayment, "authorize-payment"),
    (Step::CapturePayment, "capture-payment"),
    (Step::RequestFulfilment, "request-fulfilment"),
];
const BUILTIN_COMPENSATIONS: [(Compensation, &str); 3] = [
    (Compensation::ReleaseInventory, "release-inventory"),
    (Compensation::VoidPayment, "void-payment"),
    (Compensation::RefundPayment, "refund-payment"),
];

/// Whether `name` belongs to a built-in step or compensation.
pub fn is_reserved(name: &str) -> bool {
    BUILTIN_STEPS.iter().any(|(_, n)| *n == name)
        || BUILTIN_COMPENSATIONS.iter().any(|(_, n)| *n == name)
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Validate,
        Step::FraudCheck,
        Step::ReserveInventory,
        Step::AuthorizePayment,
        Step::CapturePayment,
        Step::RequestFulfilment,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Custom(name) => name.as_str(),
            builtin => BUILTIN_STEPS
                .iter()
                .find(|(s, _)| s == builtin)
                .map_or("", |(_, n)| n),
        }
    }

    /// A built-in step by its wire name, else a tenant-defined one.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        match BUILTIN_STEPS.iter().find(|(_, n)| *n == raw) {
            Some((step, _)) => Ok(*step),
            None if is_reserved(raw) => Err(NameError::Malformed(raw.into())),
            None => StepName::parse(raw).map(Self::Custom),
        }
    }

    /// The tenant-defined step's name, if this is one.
    pub fn custom(&self) -> Option<StepName> {
        match self {
            Self::Custom(name) => Some(*name),
            _ => None,
        }
    }
}

impl Compensation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Custom(name) => name.as_str(),
            builtin => BUILTIN_COMPENSATIONS
                .iter()
                .find(|(c, _)| c == builtin)
                .map_or("", |(_, n)| n),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        match BUILTIN_COMPENSATIONS.iter().find(|(_, n)| *n == raw) {
            Some((c, _)) => Ok(*c),
            None if is_reserved(raw) => Err(NameError::Malformed(raw.into())),
            None => StepName::parse(raw).map(Self::Custom),
        }
    }
}

macro_rules! named_on_the_wire {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}
named_on_the_wire!(Step);
named_on_the_wire!(Compensation);

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
    #[error("at most {MAX_CUSTOM_STEPS} steps of the tenant's own")]
    TooManyCustom,
}

/// Steps of its own one tenant's saga may have.
pub const MAX_CUSTOM_STEPS: usize = 8;

impl SagaDefinition {
    pub fn new(steps: Vec<Step>) -> Result<Self, DefinitionError> {
        for (i, step) in steps.iter().enumerate() {
            if steps[..i].contains(step) {
                return Err(DefinitionError::Duplicate(*step));
            }
        }
        if steps.iter().filter(|s| s.custom().is_some()).count() > MAX_CUSTOM_STEPS {
            return Err(DefinitionError::TooManyCustom);
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

    /// The tenant's own steps, in the order they run.
    pub fn custom(&self) -> impl Iterator<Item = StepName> + '_ {
        self.0.iter().filter_map(Step::custom)
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
#[allow(clippy::unwrap_used)]
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

    fn custom(name: &str) -> Step {
        Step::parse(name).unwrap()
    }

    #[test]
    fn a_tenants_own_steps_go_anywhere_between_validation_and_fulfilment() {
        let points = custom("loyalty-points");
        let mut steps = Step::ALL.to_vec();
        steps.insert(5, points);
        steps.insert(1, custom("kyc"));
        let d = SagaDefinition::new(steps.clone()).unwrap();
        assert_eq!(
            d.custom().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["kyc", "loyalty-points"]
        );
        use DefinitionError as E;
        let mut first = Step::ALL.to_vec();
        first.insert(0, points);
        assert_eq!(SagaDefinition::new(first), Err(E::ValidateNotFirst));
        let mut last = Step::ALL.to_vec();
        last.push(points);
        assert_eq!(SagaDefinition::new(last), Err(E::FulfilmentNotLast));
        let mut twice = steps;
        twice.insert(2, points);
        assert_eq!(SagaDefinition::new(twice), Err(E::Duplicate(points)));
        let mut many = Step::ALL.to_vec();
        for i in 0..=MAX_CUSTOM_STEPS {
            many.insert(1, custom(&format!("step-{i}")));
        }
        assert_eq!(SagaDefinition::new(many), Err(E::TooManyCustom));
    }

    #[test]
    fn names_round_trip_and_built_in_names_stay_built_in() {
        for step in Step::ALL.into_iter().chain([custom("loyalty-points")]) {
            let wire = serde_json::to_string(&step).unwrap();
            assert_eq!(serde_json::from_str::<Step>(&wire).unwrap(), step);
        }
        assert_eq!(Step::parse("capture-payment"), Ok(Step::CapturePayment));
        // A compensation's name is not a step of one's own either way.
        assert!(Step::parse("refund-payment").is_err());
        assert!(Compensation::parse("validate").is_err());
        assert_eq!(
            Compensation::parse("loyalty-points").unwrap(),
            Compensation::Custom(StepName::parse("loyalty-points").unwrap())
        );
        assert!(serde_json::from_str::<Step>("\"Not A Step\"").is_err());
    }
}
