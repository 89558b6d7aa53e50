//! Names of tenant-defined steps. A step is `Copy` (a saga's state is
//! cloned on every transition and steps are compared everywhere), so a
//! custom step carries its name as an interned `&'static str`: each
//! distinct name is stored once for the life of the process. Names are few
//! (each tenant's handful) and the table is bounded, so a stream of made-up
//! names (a poison message) cannot grow it without end.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Distinct names one process keeps at most.
const MAX_NAMES: usize = 10_000;
/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 40;

static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// A tenant-defined step's name: 2–40 of `a-z`, `0-9` and `-`, starting
/// with a letter and not ending with `-`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepName(&'static str);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{0:?} is not a step name: 2-{MAX_NAME_LEN} of a-z, 0-9 and '-', starting with a letter"
    )]
    Malformed(String),
    #[error("too many distinct step names in this process ({MAX_NAMES})")]
    TooMany,
}

impl StepName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let well_formed = (2..=MAX_NAME_LEN).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && !raw.ends_with('-')
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(NameError::Malformed(raw.chars().take(64).collect()));
        }
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = names.get(raw) {
            return Ok(Self(known));
        }
        if names.len() >= MAX_NAMES {
            return Err(NameError::TooMany);
        }
        let interned: &'static str = Box::leak(raw.to_owned().into_boxed_str());
        names.insert(interned);
        Ok(Self(interned))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Debug for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_interned_once() {
        let a = StepName::parse("loyalty-points").unwrap();
        let b = StepName::parse(&String::from("loyalty-points")).unwrap();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        for bad in [
            "",
            "a",
            "Loyalty",
            "1st",
            "points-",
            "a b",
            "ü-points",
            &"x".repeat(41),
        ] {
            assert!(StepName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StepName::parse("kyc-2").is_ok());
    }
}
