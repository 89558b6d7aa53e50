//! What a plugin may answer. An answer is measured the way the canonical
//! ABI lays it out (every list element and every field counts, not only
//! string bytes), its lists are capped per slot, and its values must lie in
//! the ranges the WIT documents. An answer that breaks any of these is
//! refused like a trap, so the slot's failure policy decides, and nothing
//! unbounded reaches the saga, the database or another tenant's reads.

use super::PluginError;
use super::bindings::{fraud, guardrail, payment, policy};
use super::invoke::StepAnswer;

/// Violations one guardrail answer may list.
pub const MAX_VIOLATIONS: usize = 100;
/// Reasons one fraud assessment may give.
pub const MAX_REASONS: usize = 32;
/// Recipients one compensation plan may name.
pub const MAX_NOTIFY: usize = 16;
/// The highest fraud score (`risk.assessment.score`: 0 to 1000).
pub const MAX_SCORE: u32 = 1000;
/// The longest retry delay a compensation policy may ask for, in ms.
pub const MAX_RETRY_DELAY_MS: u32 = 3_600_000;

/// A string: pointer and length, then its bytes.
fn string(s: &str) -> usize {
    8 + s.len()
}

/// A list: pointer and length, then each element.
fn list<T>(items: &[T], each: impl Fn(&T) -> usize) -> usize {
    8 + items.iter().map(each).sum::<usize>()
}

fn capped<T>(what: &str, items: &[T], max: usize) -> Result<(), PluginError> {
    if items.len() > max {
        return Err(PluginError::InvalidAnswer(format!(
            "{} {what}, at most {max} allowed",
            items.len()
        )));
    }
    Ok(())
}

fn sized(size: usize, limit: usize) -> Result<(), PluginError> {
    if size > limit {
        return Err(PluginError::OutputTooLarge(size));
    }
    Ok(())
}

type Violations = Vec<guardrail::exports::oms::plugin::order_rules::Violation>;

pub fn guardrail(answer: &Result<(), Violations>, limit: usize) -> Result<(), PluginError> {
    let Err(violations) = answer else {
        return Ok(());
    };
    let size = 1 + list(violations, |v| {
        string(&v.code) + string(&v.message) + string(&v.field)
    });
    sized(size, limit)?;
    capped("violations", violations, MAX_VIOLATIONS)
}

pub fn fraud(
    answer: &fraud::exports::oms::plugin::risk::Assessment,
    limit: usize,
) -> Result<(), PluginError> {
    let size = 1 + 4 + list(&answer.reasons, |r| string(r));
    sized(size, limit)?;
    capped("reasons", &answer.reasons, MAX_REASONS)?;
    if answer.score > MAX_SCORE {
        return Err(PluginError::InvalidAnswer(format!(
            "score {} is outside 0..={MAX_SCORE}",
            answer.score
        )));
    }
    Ok(())
}

pub fn payment(
    answer: &Result<String, payment::exports::oms::plugin::provider::PaymentError>,
    limit: usize,
) -> Result<(), PluginError> {
    use payment::exports::oms::plugin::provider::PaymentError;
    let size = 1 + match answer {
        Ok(reference) => string(reference),
        Err(PaymentError::Declined(d)) => 1 + string(&d.code) + string(&d.message),
        Err(PaymentError::Transient(m)) => 1 + string(m),
    };
    sized(size, limit)
}

pub fn payment_status(
    answer: &Result<super::ProviderPayment, super::RetrieveError>,
    limit: usize,
) -> Result<(), PluginError> {
    use super::RetrieveError;
    let size = 1 + match answer {
        Ok(p) => 1 + 8 + 8 + string(&p.currency),
        Err(RetrieveError::NotFound(m) | RetrieveError::Transient(m)) => 1 + string(m),
    };
    sized(size, limit)?;
    if let Ok(p) = answer
        && (p.amount < 0 || p.refunded < 0)
    {
        return Err(PluginError::InvalidAnswer(format!(
            "negative amounts ({} held, {} refunded)",
            p.amount, p.refunded
        )));
    }
    Ok(())
}

pub fn policy(
    answer: &policy::exports::oms::plugin::policy::Plan,
    limit: usize,
) -> Result<(), PluginError> {
    use policy::exports::oms::plugin::policy::Decision;
    let size = 1
        + 4
        + list(&answer.actions, |_| 1)
        + list(&answer.notify, |n| string(n))
        + string(&answer.reason);
    sized(size, limit)?;
    capped("recipients", &answer.notify, MAX_NOTIFY)?;
    // A plan may reorder the undo steps, never repeat them.
    capped("compensations", &answer.actions, 3)?;
    if let Decision::Retry(ms) = answer.decision
        && ms > MAX_RETRY_DELAY_MS
    {
        return Err(PluginError::InvalidAnswer(format!(
            "a retry in {ms} ms is beyond {MAX_RETRY_DELAY_MS} ms"
        )));
    }
    Ok(())
}

/// A custom step's output or error. Its state writes are bounded as they
/// are made (`step_state`), not here.
pub fn step(answer: &StepAnswer<String>, limit: usize) -> Result<(), PluginError> {
    let size = 1 + match &answer.result {
        Ok(output) => string(output),
        Err(e) => string(&e.code) + string(&e.message) + 1,
    };
    sized(size, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardrail::exports::oms::plugin::order_rules::Violation;

    fn empty_violations(n: usize) -> Result<(), Violations> {
        Err((0..n)
            .map(|_| Violation {
                code: String::new(),
                message: String::new(),
                field: String::new(),
            })
            .collect())
    }

    #[test]
    fn empty_strings_still_count() {
        // 150,000 violations of empty strings: no string bytes at all, yet
        // 3.6 MB as the canonical ABI lays them out.
        assert!(matches!(
            guardrail(&empty_violations(150_000), 64 << 10),
            Err(PluginError::OutputTooLarge(n)) if n > 3_000_000
        ));
    }

    #[test]
    fn lists_are_capped_even_when_small() {
        assert!(guardrail(&empty_violations(MAX_VIOLATIONS), 64 << 10).is_ok());
        assert!(matches!(
            guardrail(&empty_violations(MAX_VIOLATIONS + 1), 64 << 10),
            Err(PluginError::InvalidAnswer(_))
        ));
    }

    #[test]
    fn a_score_outside_the_documented_range_is_refused() {
        use fraud::exports::oms::plugin::risk::{Assessment, Decision};
        let at = |score| Assessment {
            decision: Decision::Approve,
            score,
            reasons: vec![],
        };
        assert!(fraud(&at(MAX_SCORE), 1024).is_ok());
        assert!(matches!(
            fraud(&at(u32::MAX), 1024),
            Err(PluginError::InvalidAnswer(_))
        ));
    }
}
