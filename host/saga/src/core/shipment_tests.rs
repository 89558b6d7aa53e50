//! Several shipments per order, each with whole lines: each line ships
//! once, the order is shipped when all have, and nothing that left is
//! cancelled.

use super::*;
use Step::*;

const NOW: i64 = 1_000;

fn items() -> Vec<String> {
    vec!["A".into(), "B".into(), "C".into()]
}

fn ship(lines: &[&str], tracking: &str) -> SagaEvent {
    SagaEvent::Shipped {
        shipment: Shipment {
            carrier: "UPS".into(),
            tracking_number: tracking.into(),
            items: lines.iter().map(|s| s.to_string()).collect(),
            shipped_at: NOW,
        },
        order_items: items(),
    }
}

fn confirmed() -> SagaState {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (mut state, _) = start(def.clone(), Limits::default(), 100_000);
    for &step in def.steps() {
        let ok = SagaEvent::StepSucceeded {
            step,
            provider_reference: (step == AuthorizePayment).then(|| "pi_1".into()),
            output: None,
        };
        (state, _) = apply(&state, &ok, NOW).expect("legal");
    }
    assert_eq!(state.status, SagaStatus::Completed);
    state
}

fn stage(actions: &[Action]) -> Option<(Handover, Vec<String>)> {
    match actions {
        [
            Action::Handover {
                stage,
                shipment: Some(s),
            },
        ] => Some((*stage, s.items.clone())),
        _ => None,
    }
}

#[test]
fn lines_ship_in_parts_each_once_and_the_rest_with_the_last() {
    let (state, actions) = apply(&confirmed(), &ship(&["B"], "1"), NOW).expect("legal");
    assert_eq!(state.handover, Handover::PartiallyShipped);
    assert_eq!(
        stage(&actions),
        Some((Handover::PartiallyShipped, vec!["B".into()]))
    );
    for (again, why) in [
        (ship(&["B"], "2"), "already shipped"),
        (ship(&["Z"], "2"), "not a line"),
        (ship(&["A", "A"], "2"), "twice"),
    ] {
        let err = apply(&state, &again, NOW).expect_err(why);
        assert!(err.detail.contains(why), "{err}");
    }
    assert!(
        apply(&state, &SagaEvent::Delivered, NOW).is_err(),
        "not all shipped"
    );
    let err = apply(
        &state,
        &SagaEvent::CancelRequested { reason: "r".into() },
        NOW,
    )
    .expect_err("goods left");
    assert!(err.detail.contains("partly shipped"), "{err}");
    // No lines named: every line not shipped yet.
    let (state, actions) = apply(&state, &ship(&[], "3"), NOW).expect("legal");
    assert_eq!(state.handover, Handover::Shipped);
    assert_eq!(
        stage(&actions),
        Some((Handover::Shipped, vec!["A".into(), "C".into()]))
    );
    assert_eq!(state.shipments.len(), 2);
    assert!(apply(&state, &ship(&[], "4"), NOW).is_err(), "nothing left");
    let (state, _) = apply(&state, &SagaEvent::Delivered, NOW).expect("legal");
    assert_eq!(state.handover, Handover::Delivered);
}

#[test]
fn naming_every_line_ships_the_order_at_once() {
    let (state, actions) = apply(&confirmed(), &ship(&["C", "A", "B"], "1"), NOW).expect("legal");
    assert_eq!(state.handover, Handover::Shipped);
    assert_eq!(stage(&actions).map(|s| s.0), Some(Handover::Shipped));
}

#[test]
fn a_shipment_recorded_before_lines_existed_counts_as_the_whole_order() {
    let mut old = confirmed();
    old.handover = Handover::Shipped;
    assert_eq!(
        crate::handover::shipped_items(&old, &items()).len(),
        3,
        "shipped before shipments were kept: everything"
    );
    assert!(apply(&old, &ship(&["A"], "1"), NOW).is_err());
}
