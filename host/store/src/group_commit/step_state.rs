//! A batch's writes to tenants' step state, folded per key and written many
//! to a statement. Each key's writes, in batch order, become the one write
//! that leaves the same value: additions add up (so concurrent sagas'
//! additions all still count), a later put or delete replaces what came
//! before, an addition after a put or a delete puts the sum. A key whose
//! writes cannot be folded exactly (an addition to a put value that is not
//! an integer, or a sum that overflows) is written one write at a time.

use crate::{StepStateOp, StepStateWrite, Transition};
use std::collections::HashMap;

/// One key's writes in a batch, folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Folded {
    Put(String),
    Add(i64),
    Delete,
}

/// A key of a tenant's step state.
pub(super) type Key<'a> = (&'a str, &'a str, &'a str);

/// The batch's writes: folded ones (key, write, time of the last write),
/// and the keys written one at a time (their writes in batch order).
#[derive(Default)]
pub(super) struct Plan<'a> {
    pub(super) folded: Vec<(Key<'a>, Folded, i64)>,
    pub(super) one_by_one: Vec<(Key<'a>, &'a StepStateOp, i64)>,
}

/// Folds the step-state writes of `members` (in batch order).
pub(super) fn plan<'a>(members: impl IntoIterator<Item = &'a Transition>) -> Plan<'a> {
    // Each key's writes, keys in order of first write.
    let mut order: Vec<Key<'a>> = Vec::new();
    let mut writes: HashMap<Key<'a>, Vec<(&'a StepStateWrite, i64)>> = HashMap::new();
    for t in members {
        for w in &t.step_state {
            let key = (t.tenant.as_str(), w.step.as_str(), w.key.as_str());
            writes
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push((w, t.now));
        }
    }
    let mut plan = Plan::default();
    for key in order {
        let list = &writes[&key];
        let last_at = list.last().map_or(0, |(_, at)| *at);
        match fold(list.iter().map(|(w, _)| &w.op)) {
            Some(folded) => plan.folded.push((key, folded, last_at)),
            None => plan
                .one_by_one
                .extend(list.iter().map(|(w, at)| (key, &w.op, *at))),
        }
    }
    plan
}

/// The one write that leaves what `ops` in turn would, if there is one.
fn fold<'a>(ops: impl Iterator<Item = &'a StepStateOp>) -> Option<Folded> {
    let mut acc: Option<Folded> = None;
    for op in ops {
        acc = Some(match (acc, op) {
            (_, StepStateOp::Put(v)) => Folded::Put(v.clone()),
            (_, StepStateOp::Delete) => Folded::Delete,
            (None, StepStateOp::Add(d)) => Folded::Add(*d),
            (Some(Folded::Add(a)), StepStateOp::Add(d)) => Folded::Add(a.checked_add(*d)?),
            // Absent counts as 0.
            (Some(Folded::Delete), StepStateOp::Add(d)) => Folded::Put(d.to_string()),
            (Some(Folded::Put(v)), StepStateOp::Add(d)) => {
                Folded::Put(v.parse::<i64>().ok()?.checked_add(*d)?.to_string())
            }
        });
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepStateOp::{Add, Delete, Put};

    fn folded(ops: &[StepStateOp]) -> Option<Folded> {
        fold(ops.iter())
    }

    #[test]
    fn writes_fold_to_the_value_they_leave() {
        assert_eq!(folded(&[Add(3), Add(-1)]), Some(Folded::Add(2)));
        assert_eq!(
            folded(&[Put("4".into()), Add(3)]),
            Some(Folded::Put("7".into()))
        );
        assert_eq!(folded(&[Delete, Add(3)]), Some(Folded::Put("3".into())));
        assert_eq!(folded(&[Add(3), Delete]), Some(Folded::Delete));
        assert_eq!(
            folded(&[Add(3), Put("x".into())]),
            Some(Folded::Put("x".into()))
        );
        // Not exactly foldable: written one by one.
        assert_eq!(folded(&[Put("x".into()), Add(1)]), None);
        assert_eq!(folded(&[Add(i64::MAX), Add(1)]), None);
    }
}
