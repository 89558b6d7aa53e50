//! Returns and line cancellations: amounts from the order's book and the
//! tenant's policy, never more than was captured, each unit returned at
//! most once, and refunds retried, finished or handed to an operator.

use super::*;
use crate::book::*;
use crate::refunds::*;
use crate::returns::*;
use Step::*;

const NOW: i64 = 1_000;
const DAY: i64 = 86_400_000;

/// A: 2 × 1000, B: 1 × 3000, C: 1 × 500; tax 550, discount 550 (they
/// cancel out), shipping 700: total 6200.
fn book() -> OrderBook {
    OrderBook::new(
        &[
            ("A".into(), 2, 1000),
            ("B".into(), 1, 3000),
            ("C".into(), 1, 500),
        ],
        550,
        550,
        6200,
    )
}

fn skus() -> Vec<String> {
    vec!["A".into(), "B".into(), "C".into()]
}

fn confirmed(policy: ReturnPolicy) -> SagaState {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let limits = Limits {
        returns: policy,
        ..Limits::default()
    };
    let (mut state, _) = start(def.clone(), limits, 100_000);
    for &step in def.steps() {
        let ok = SagaEvent::StepSucceeded {
            step,
            provider_reference: (step == AuthorizePayment).then(|| "pi_1".into()),
            output: None,
        };
        (state, _) = apply(&state, &ok, NOW).expect("legal");
    }
    state
}

fn ship(state: &SagaState, lines: &[&str]) -> SagaState {
    let e = SagaEvent::Shipped {
        shipment: Shipment {
            carrier: "UPS".into(),
            tracking_number: "1Z".into(),
            items: lines.iter().map(|s| s.to_string()).collect(),
            shipped_at: NOW,
        },
        order_items: skus(),
    };
    apply(state, &e, NOW).expect("ships").0
}

fn ask(id: &str, lines: &[(&str, i64)]) -> SagaEvent {
    SagaEvent::ReturnRequested {
        return_id: id.into(),
        items: lines
            .iter()
            .map(|(sku, quantity)| ReturnLine {
                sku: sku.to_string(),
                quantity: *quantity,
            })
            .collect(),
        reason: "too big".into(),
        book: book(),
    }
}

fn receive(id: &str, lines: &[(&str, i64, Condition)]) -> SagaEvent {
    SagaEvent::ReturnReceived {
        return_id: id.into(),
        items: lines
            .iter()
            .map(|(sku, quantity, condition)| ReceivedLine {
                sku: sku.to_string(),
                quantity: *quantity,
                condition: *condition,
            })
            .collect(),
        warehouse_id: "east".into(),
        book: book(),
    }
}

fn refund_of(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::RunRefund { refund_id, .. } => Some(refund_id.clone()),
        _ => None,
    })
}

#[test]
fn a_book_spreads_tax_and_discount_by_value_and_never_past_the_total() {
    let b = OrderBook::new(
        &[
            ("A".into(), 2, 1000),
            ("B".into(), 1, 3001),
            ("A".into(), 1, 999),
        ],
        100,
        700,
        5400,
    );
    let a = b.lines.iter().find(|l| l.sku == "A").expect("A");
    assert_eq!(a.quantity, 3);
    let sum: i64 = b.lines.iter().map(|l| l.share).sum();
    // 6000 of lines + 100 tax - 700 discount.
    assert!(sum <= 5400, "{sum}");
    assert!(
        sum >= 5400 - 2,
        "rounded down by at most one per line: {sum}"
    );
    // A discount larger than the lines leaves shares at zero, not below.
    let b = OrderBook::new(&[("A".into(), 1, 100)], 0, 500, 0);
    assert_eq!(b.lines[0].share, 0);
}

#[test]
fn a_return_is_received_restocked_and_refunded_for_what_came_back() {
    let state = ship(&confirmed(ReturnPolicy::default()), &[]);
    let (state, actions) = apply(&state, &ask("ret_1", &[("A", 2)]), NOW).expect("opens");
    assert_eq!(state.returns[0].status, ReturnStatus::Requested);
    assert_eq!(
        actions,
        vec![Action::ReturnChanged {
            return_id: "ret_1".into()
        }]
    );
    // One of the two came back, sellable.
    let (state, actions) = apply(
        &state,
        &receive("ret_1", &[("A", 1, Condition::Sellable)]),
        NOW + 1,
    )
    .expect("received");
    assert!(actions.contains(&Action::Restock {
        return_id: "ret_1".into(),
        warehouse_id: "east".into(),
        lines: vec![("A".into(), 1)]
    }));
    assert_eq!(refund_of(&actions).as_deref(), Some("ret_1"));
    assert_eq!(state.returns[0].status, ReturnStatus::Refunding);
    assert_eq!(state.refunds[0].amount, 1000);
    assert_eq!(state.refunds_committed(), 1000);
    let ok = SagaEvent::RefundSucceeded {
        refund_id: "ret_1".into(),
        provider_reference: "re_1".into(),
    };
    let (state, _) = apply(&state, &ok, NOW + 2).expect("refunded");
    assert_eq!(state.returns[0].status, ReturnStatus::Refunded);
    assert_eq!(state.refunded_in_part(), 1000);
    // The order stays shipped; the same refund cannot finish twice.
    assert_eq!(state.status, SagaStatus::Completed);
    assert!(apply(&state, &ok, NOW + 3).is_err());
    // The unit that did not come back can still be returned; a third cannot.
    assert!(apply(&state, &ask("ret_2", &[("A", 1)]), NOW).is_ok());
    assert!(apply(&state, &ask("ret_2", &[("A", 2)]), NOW).is_err());
}

#[test]
fn open_returns_hold_their_units_so_together_they_never_exceed_the_order() {
    let state = ship(&confirmed(ReturnPolicy::default()), &[]);
    let (state, _) = apply(&state, &ask("ret_1", &[("B", 1)]), NOW).expect("opens");
    let err = apply(&state, &ask("ret_2", &[("B", 1)]), NOW).expect_err("none left");
    assert!(err.detail.contains("0 of 1 left"), "{}", err.detail);
    assert!(
        apply(&state, &ask("ret_1", &[("A", 1)]), NOW).is_err(),
        "same id"
    );
    // Receiving more than the return holds, or another SKU, is refused.
    for bad in [
        receive("ret_1", &[("B", 2, Condition::Sellable)]),
        receive("ret_1", &[("A", 1, Condition::Sellable)]),
        receive("ret_9", &[("B", 1, Condition::Sellable)]),
        receive("ret_1", &[]),
    ] {
        assert!(apply(&state, &bad, NOW).is_err(), "{bad:?}");
    }
    let (state, _) = apply(
        &state,
        &receive("ret_1", &[("B", 1, Condition::Sellable)]),
        NOW,
    )
    .expect("received");
    assert!(
        apply(
            &state,
            &receive("ret_1", &[("B", 1, Condition::Sellable)]),
            NOW
        )
        .is_err(),
        "received twice"
    );
    // Every unit returned: the refunds are the lines' shares, not shipping.
    let mut state = state;
    for (i, (sku, q)) in [("A", 2), ("C", 1)].into_iter().enumerate() {
        let id = format!("ret_x{i}");
        (state, _) = apply(&state, &ask(&id, &[(sku, q)]), NOW).expect("opens");
        (state, _) =
            apply(&state, &receive(&id, &[(sku, q, Condition::Sellable)]), NOW).expect("received");
    }
    assert_eq!(state.refunds_committed(), 5500);
    assert!(state.refunds_committed() <= book().total);
}

#[test]
fn the_policy_withholds_a_fee_and_part_of_damaged_goods() {
    let policy = ReturnPolicy {
        window_days: Some(30),
        restocking_fee_percent: 10,
        damaged_refund_percent: 50,
    };
    let state = ship(&confirmed(policy), &[]);
    let (state, _) = apply(&state, &ask("ret_1", &[("A", 2), ("B", 1)]), NOW).expect("opens");
    let (state, actions) = apply(
        &state,
        &receive(
            "ret_1",
            &[("A", 2, Condition::Sellable), ("B", 1, Condition::Damaged)],
        ),
        NOW,
    )
    .expect("received");
    // A: 2000 in full, B: half of 3000; then 10 % of 3500 kept.
    assert_eq!(state.refunds[0].amount, 3150);
    assert_eq!(state.returns[0].value, 5000);
    assert_eq!(state.returns[0].withheld, 1850);
    // Damaged goods are not restocked.
    assert!(actions.contains(&Action::Restock {
        return_id: "ret_1".into(),
        warehouse_id: "east".into(),
        lines: vec![("A".into(), 2)]
    }));
    // Past the window no return opens.
    let late = NOW + 31 * DAY;
    let err = apply(&state, &ask("ret_2", &[("C", 1)]), late).expect_err("closed");
    assert!(err.detail.contains("window"), "{}", err.detail);
}

#[test]
fn nothing_is_returned_before_it_ships_and_only_what_shipped() {
    let state = confirmed(ReturnPolicy::default());
    assert!(apply(&state, &ask("ret_1", &[("A", 1)]), NOW).is_err());
    let state = ship(&state, &["A"]);
    assert!(apply(&state, &ask("ret_1", &[("A", 1)]), NOW).is_ok());
    for bad in [
        ask("ret_1", &[("B", 1)]),
        ask("ret_1", &[("Z", 1)]),
        ask("ret_1", &[("A", 0)]),
        ask("ret_1", &[]),
    ] {
        assert!(apply(&state, &bad, NOW).is_err(), "{bad:?}");
    }
}

#[test]
fn a_refund_retries_transient_failures_then_goes_to_an_operator() {
    let state = ship(&confirmed(ReturnPolicy::default()), &[]);
    let (state, _) = apply(&state, &ask("ret_1", &[("C", 1)]), NOW).expect("opens");
    let (mut state, _) = apply(
        &state,
        &receive("ret_1", &[("C", 1, Condition::Sellable)]),
        NOW,
    )
    .expect("received");
    let fail = |transient| SagaEvent::RefundFailed {
        refund_id: "ret_1".into(),
        failure: Failure {
            code: "X".into(),
            message: "no".into(),
            transient,
        },
    };
    let max = state.limits.max_compensation_attempts;
    for attempt in 1..max {
        let actions;
        (state, actions) = apply(&state, &fail(true), NOW).expect("retried");
        assert!(
            actions.iter().any(|a| matches!(a, Action::RunRefund { attempt: n, delay_ms, .. } if *n == attempt + 1 && *delay_ms > 0)),
            "{actions:?}"
        );
    }
    let (state, actions) = apply(&state, &fail(true), NOW).expect("gives up");
    assert_eq!(state.refunds[0].status, RefundStatus::Failed);
    assert_eq!(state.returns[0].status, ReturnStatus::RefundFailed);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Notify { recipients, .. } if recipients == &["ops"]))
    );
    // A failed refund does not count against what may still go back.
    assert_eq!(state.refunds_committed(), 0);
    // An operator makes it again, once, with a fresh budget.
    let retry = SagaEvent::OperatorRetry {
        operator: "ops".into(),
    };
    let (state, actions) = apply(&state, &retry, NOW).expect("retried");
    assert_eq!(state.refunds[0].status, RefundStatus::Pending);
    assert_eq!(state.refunds[0].attempt, 1);
    assert_eq!(state.returns[0].status, ReturnStatus::Refunding);
    assert_eq!(refund_of(&actions).as_deref(), Some("ret_1"));
    assert_eq!(state.refunds_committed(), 500);
    let err = apply(&state, &retry, NOW).expect_err("nothing failed now");
    assert!(err.detail.contains("failed refund"), "{}", err.detail);
    let ok = SagaEvent::RefundSucceeded {
        refund_id: "ret_1".into(),
        provider_reference: "re_9".into(),
    };
    let (state, _) = apply(&state, &ok, NOW).expect("refunded");
    assert_eq!(state.returns[0].status, ReturnStatus::Refunded);
}

#[test]
fn cancelling_lines_releases_and_refunds_them_and_the_rest_ships() {
    let state = confirmed(ReturnPolicy::default());
    let cancel = |id: &str, lines: &[&str]| SagaEvent::LinesCancelled {
        refund_id: id.into(),
        items: lines.iter().map(|s| s.to_string()).collect(),
        reason: "out of season".into(),
        book: book(),
    };
    let (state, actions) = apply(&state, &cancel("lcx_1", &["B"]), NOW).expect("cancels");
    assert_eq!(state.cancelled_items, vec!["B".to_string()]);
    assert_eq!(state.refunds[0].amount, 3000);
    assert!(matches!(&actions[0], Action::CancelLines { items, .. } if items == &["B"]));
    assert_eq!(refund_of(&actions).as_deref(), Some("lcx_1"));
    assert!(
        apply(&state, &cancel("lcx_2", &["B"]), NOW).is_err(),
        "twice"
    );
    assert!(
        apply(&state, &cancel("lcx_2", &["Z"]), NOW).is_err(),
        "not a line"
    );
    assert!(
        apply(&state, &cancel("lcx_2", &["A", "C"]), NOW).is_err(),
        "every line left is the whole order"
    );
    // Shipping everything now ships what is left; B cannot ship.
    let e = SagaEvent::Shipped {
        shipment: Shipment {
            carrier: "UPS".into(),
            tracking_number: "1".into(),
            items: vec!["B".into()],
            shipped_at: NOW,
        },
        order_items: skus(),
    };
    assert!(apply(&state, &e, NOW).is_err());
    let shipped = ship(&state, &[]);
    assert_eq!(shipped.handover, Handover::Shipped);
    assert_eq!(shipped.shipments[0].items, vec!["A", "C"]);
    // After A shipped, cancelling C (the last line left) leaves it shipped.
    let part = ship(&state, &["A"]);
    let (done, _) = apply(&part, &cancel("lcx_3", &["C"]), NOW).expect("cancels");
    assert_eq!(done.handover, Handover::Shipped);
    assert!(
        apply(&done, &cancel("lcx_4", &["A"]), NOW).is_err(),
        "shipped"
    );
    // A whole cancel of what is left refunds no more than remains.
    let (after, _) = apply(
        &state,
        &SagaEvent::CancelRequested {
            reason: "changed mind".into(),
        },
        NOW,
    )
    .expect("cancels");
    assert_eq!(after.status, SagaStatus::Compensating);
    assert_eq!(after.refunds_committed(), 3000);
}

#[test]
fn lines_are_cancelled_only_on_a_confirmed_order() {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (state, _) = start(def, Limits::default(), 100_000);
    let e = SagaEvent::LinesCancelled {
        refund_id: "lcx_1".into(),
        items: vec!["A".into()],
        reason: "r".into(),
        book: book(),
    };
    let err = apply(&state, &e, NOW).expect_err("running");
    assert!(err.detail.contains("confirmed"), "{}", err.detail);
}

#[test]
fn states_stored_before_returns_read_as_having_none() {
    let state = confirmed(ReturnPolicy::default());
    let mut json = serde_json::to_value(&state).expect("serialises");
    let obj = json.as_object_mut().expect("object");
    assert!(!obj.contains_key("returns"), "empty lists are left out");
    obj.get_mut("limits")
        .and_then(|l| l.as_object_mut())
        .expect("limits")
        .remove("returns");
    let back: SagaState = serde_json::from_value(json).expect("reads");
    assert_eq!(back.limits.returns, ReturnPolicy::default());
    assert!(back.refunds.is_empty());
}
