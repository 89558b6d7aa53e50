//! A custom step's state during one call: reads of what is committed
//! (through the caller's [`StateReader`]) overlaid with the call's own
//! writes, which stay here, bounded by the step's quota, until the caller
//! commits them with the saga transition that records the call's outcome.

use super::bindings::step::oms::plugin::step_state::StateError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Reads committed values of one step's namespace (the tenant and step are
/// the reader's: a guest names only keys). Called on the call's blocking
/// thread.
pub trait StateReader: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<String>, String>;
}

/// What one call may do to its step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Distinct keys one call may write.
    pub max_writes: usize,
    /// Reads one call may make (each is a database read).
    pub max_reads: usize,
    pub max_value_bytes: usize,
}

impl StateLimits {
    /// What a step gets unless its manifest says otherwise.
    pub const DEFAULT: Self = Self {
        max_writes: 100,
        max_reads: 1_000,
        max_value_bytes: 4 << 10,
    };
    /// The platform's maxima: a manifest may set each up to these.
    pub const MAX: Self = Self {
        max_writes: 1_000,
        max_reads: 10_000,
        max_value_bytes: 64 << 10,
    };
}

/// A write to commit. An increment is committed as an addition to whatever
/// is stored then, so concurrent sagas' increments of one key all count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    Put(String),
    Delete,
    Add(i64),
}

/// One call's view of its step's state.
pub struct CallStepState {
    reader: Arc<dyn StateReader>,
    limits: StateLimits,
    reads: usize,
    writes: BTreeMap<String, StateOp>,
}

impl CallStepState {
    pub fn new(reader: Arc<dyn StateReader>, limits: StateLimits) -> Self {
        Self {
            reader,
            limits,
            reads: 0,
            writes: BTreeMap::new(),
        }
    }

    /// The writes to commit, by key.
    pub fn into_writes(self) -> BTreeMap<String, StateOp> {
        self.writes
    }

    fn check_key(key: &str) -> Result<(), StateError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StateError::TooLarge(format!(
                "a key of {} bytes, at most {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(())
    }

    fn committed(&mut self, key: &str) -> Result<Option<String>, StateError> {
        if self.reads >= self.limits.max_reads {
            return Err(StateError::QuotaExceeded(format!(
                "more than {} reads in one call",
                self.limits.max_reads
            )));
        }
        self.reads += 1;
        self.reader.get(key).map_err(StateError::Unavailable)
    }

    fn write(&mut self, key: &str, op: StateOp) -> Result<(), StateError> {
        if !self.writes.contains_key(key) && self.writes.len() >= self.limits.max_writes {
            return Err(StateError::QuotaExceeded(format!(
                "more than {} keys written in one call",
                self.limits.max_writes
            )));
        }
        self.writes.insert(key.to_owned(), op);
        Ok(())
    }

    pub fn get(&mut self, key: &str) -> Result<Option<String>, StateError> {
        Self::check_key(key)?;
        match self.writes.get(key) {
            Some(StateOp::Put(v)) => Ok(Some(v.clone())),
            Some(StateOp::Delete) => Ok(None),
            Some(StateOp::Add(delta)) => {
                let delta = *delta;
                let base = number(key, self.committed(key)?.as_deref())?;
                Ok(Some(base.saturating_add(delta).to_string()))
            }
            None => self.committed(key),
        }
    }

    pub fn put(&mut self, key: &str, value: String) -> Result<(), StateError> {
        Self::check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(StateError::TooLarge(format!(
                "a value of {} bytes, at most {}",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        self.write(key, StateOp::Put(value))
    }

    pub fn delete(&mut self, key: &str) -> Result<(), StateError> {
        Self::check_key(key)?;
        self.write(key, StateOp::Delete)
    }

    pub fn increment(&mut self, key: &str, delta: i64) -> Result<i64, StateError> {
        Self::check_key(key)?;
        let (op, sum) = match self.writes.get(key).cloned() {
            // After this call's own put or delete the value is known here:
            // what is committed later is a plain put.
            Some(StateOp::Put(v)) => {
                let sum = number(key, Some(&v))?.saturating_add(delta);
                (StateOp::Put(sum.to_string()), sum)
            }
            Some(StateOp::Delete) => (StateOp::Put(delta.to_string()), delta),
            Some(StateOp::Add(before)) => {
                let base = number(key, self.committed(key)?.as_deref())?;
                let total = before.saturating_add(delta);
                (StateOp::Add(total), base.saturating_add(total))
            }
            None => {
                let base = number(key, self.committed(key)?.as_deref())?;
                (StateOp::Add(delta), base.saturating_add(delta))
            }
        };
        self.write(key, op)?;
        Ok(sum)
    }
}

/// A stored value read as the integer `increment` adds to (absent: 0).
fn number(key: &str, value: Option<&str>) -> Result<i64, StateError> {
    match value {
        None => Ok(0),
        Some(v) => v.trim().parse().map_err(|_| {
            StateError::NotANumber(format!(
                "{key} holds {:?}",
                v.chars().take(32).collect::<String>()
            ))
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Committed(Mutex<BTreeMap<String, String>>);

    impl StateReader for Committed {
        fn get(&self, key: &str) -> Result<Option<String>, String> {
            Ok(self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .cloned())
        }
    }

    fn call(committed: &[(&str, &str)], limits: StateLimits) -> CallStepState {
        let map = committed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CallStepState::new(Arc::new(Committed(Mutex::new(map))), limits)
    }

    #[test]
    fn reads_see_the_calls_own_writes_over_what_is_committed() {
        let mut s = call(&[("a", "5"), ("b", "x")], StateLimits::DEFAULT);
        assert_eq!(s.increment("a", 3).ok(), Some(8));
        assert_eq!(s.get("a").ok(), Some(Some("8".into())));
        assert_eq!(s.increment("a", -1).ok(), Some(7));
        s.put("b", "y".into()).unwrap();
        assert_eq!(s.get("b").ok(), Some(Some("y".into())));
        s.delete("c").unwrap();
        assert_eq!(s.increment("c", 2).ok(), Some(2));
        let writes = s.into_writes();
        assert_eq!(
            writes["a"],
            StateOp::Add(2),
            "an addition, not the sum read"
        );
        assert_eq!(writes["b"], StateOp::Put("y".into()));
        assert_eq!(writes["c"], StateOp::Put("2".into()));
    }

    #[test]
    fn quotas_and_sizes_are_refused_with_their_reason() {
        let limits = StateLimits {
            max_writes: 2,
            max_reads: 3,
            max_value_bytes: 8,
        };
        let mut s = call(&[("n", "not a number")], limits);
        assert!(matches!(
            s.increment("n", 1),
            Err(StateError::NotANumber(_))
        ));
        assert!(matches!(
            s.put("k", "123456789".into()),
            Err(StateError::TooLarge(_))
        ));
        assert!(matches!(
            s.get(&"k".repeat(257)),
            Err(StateError::TooLarge(_))
        ));
        s.put("k1", "v".into()).unwrap();
        s.put("k2", "v".into()).unwrap();
        s.put("k1", "w".into()).unwrap();
        assert!(matches!(
            s.put("k3", "v".into()),
            Err(StateError::QuotaExceeded(_))
        ));
        assert_eq!(s.get("x").ok(), Some(None));
        assert_eq!(s.get("y").ok(), Some(None));
        assert!(matches!(s.get("z"), Err(StateError::QuotaExceeded(_))));
        assert_eq!(s.into_writes().len(), 2);
    }
}
