//! What a tenant keeps versions of: one of the four plugin slots, or one of
//! its own saga steps. Each is rolled out on its own (versions, activation,
//! rollback, shadow, canary), kept in the store under its `key`: the slot's
//! name, or `step:<name>`.

use super::TenantSpec;
use oms_plugin_host::Slot;
use oms_saga::StepName;

/// A tenant's slot or one of its own steps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    Slot(Slot),
    Step(StepName),
}

/// How a step's key starts in the store and in the API's paths.
pub const STEP_PREFIX: &str = "step:";

impl Target {
    /// The store's and the API's name for it.
    pub fn key(self) -> String {
        match self {
            Self::Slot(slot) => slot.as_str().to_string(),
            Self::Step(name) => format!("{STEP_PREFIX}{name}"),
        }
    }

    /// The world its components are checked against and run in.
    pub fn slot(self) -> Slot {
        match self {
            Self::Slot(slot) => slot,
            Self::Step(_) => Slot::SagaStep,
        }
    }

    /// Where the manifest sets it: `plugins.<slot>` or `steps.<name>`.
    pub fn field(self) -> String {
        match self {
            Self::Slot(slot) => format!("plugins.{slot}"),
            Self::Step(name) => format!("steps.{name}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Slot(slot) => write!(f, "{slot}"),
            Self::Step(name) => write!(f, "{STEP_PREFIX}{name}"),
        }
    }
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a manifest names for its slots and steps.
impl TenantSpec {
    /// Each component the manifest names, with what runs it. Sections
    /// under a name that is no slot or step are left out here (refused,
    /// with their field, when the tenant is built).
    pub fn components(&self) -> Vec<(Target, &str)> {
        let slots = self.plugins.iter().filter_map(|(name, section)| {
            let slot = Slot::parse(name).filter(|s| Slot::ALL.contains(s))?;
            Some((Target::Slot(slot), section.component.as_str()))
        });
        let steps = self.steps.iter().filter_map(|(name, section)| {
            let name = oms_saga::StepName::parse(name).ok()?;
            Some((Target::Step(name), section.component.as_str()))
        });
        slots.chain(steps).collect()
    }

    /// Names another component for `target` (e.g. a stored version's digest
    /// in place of a file's path).
    pub fn set_component(&mut self, target: Target, component: String) {
        let slot = match target {
            Target::Slot(slot) => self
                .plugins
                .get_mut(slot.as_str())
                .map(|s| &mut s.component),
            Target::Step(name) => self.steps.get_mut(name.as_str()).map(|s| &mut s.component),
        };
        if let Some(c) = slot {
            *c = component;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_names_and_steps_are_prefixed() {
        assert_eq!(Target::Slot(Slot::Guardrail).key(), "guardrail");
        let step = Target::Step(StepName::parse("loyalty-points").unwrap());
        assert_eq!(step.key(), "step:loyalty-points");
        assert_eq!(step.to_string(), step.key());
        assert_eq!(step.slot(), Slot::SagaStep);
        assert_eq!(step.field(), "steps.loyalty-points");
    }
}
