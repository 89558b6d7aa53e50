//! Loyalty points, a saga step of the tenant's own: a confirmed order earns
//! its customer points, kept per customer in the step's state; if the saga
//! turns back after this step, its compensation takes them back.
//!
//! State (the step's namespace): `customer:<id>` holds the customer's
//! balance, a decimal integer.
//!
//! Settings (all optional):
//! - `points_per_unit`: points per whole unit of the order's currency
//!   (default 1; an order of 19.99 earns 19).
//! - `minor_units`: minor units per whole unit (default 100).
//! - `notify_url`: where to tell a loyalty service of each award, by POST
//!   with the step's idempotency key (the origin must be in the step's
//!   `allowed_origins`); a failure there is transient, and the step is
//!   retried without having awarded anything.

wit_bindgen::generate!({ world: "saga-step", path: "../../wit" });

use exports::oms::plugin::custom_step::{Guest, StepContext, StepError};
use oms::plugin::outbound_http;
use oms::plugin::step_state;
use oms::plugin::types::{Order, Settings};

struct Points;

fn setting(settings: &Settings, key: &str, default: i64) -> Result<i64, StepError> {
    match settings.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v.parse().map_err(|_| StepError {
            code: "BAD_SETTING".into(),
            message: format!("{key} = {v:?} is not an integer"),
            transient: false,
        }),
    }
}

fn state_error(e: step_state::StateError) -> StepError {
    let (transient, message) = match e {
        step_state::StateError::Unavailable(m) => (true, m),
        step_state::StateError::TooLarge(m)
        | step_state::StateError::QuotaExceeded(m)
        | step_state::StateError::NotANumber(m) => (false, m),
    };
    StepError {
        code: "STATE_ERROR".into(),
        message,
        transient,
    }
}

fn key(order: &Order) -> String {
    format!("customer:{}", order.customer_id)
}

impl Guest for Points {
    fn run(order: Order, context: StepContext, settings: Settings) -> Result<String, StepError> {
        let per_unit = setting(&settings, "points_per_unit", 1)?;
        let minor = setting(&settings, "minor_units", 100)?.max(1);
        let earned = (order.total_amount / minor).saturating_mul(per_unit).max(0);
        let balance = step_state::increment(&key(&order), earned).map_err(state_error)?;
        if let Some((_, url)) = settings.iter().find(|(k, _)| k == "notify_url") {
            notify(url, &context, &order, earned)?;
        }
        // What compensate needs: how many to take back. The balance is for
        // the history (the step's output is kept with the saga).
        Ok(format!(r#"{{"awarded":{earned},"balance":{balance}}}"#))
    }

    fn compensate(
        order: Order,
        _context: StepContext,
        output: String,
        _settings: Settings,
    ) -> Result<(), StepError> {
        let awarded = awarded(&output).ok_or_else(|| StepError {
            code: "BAD_OUTPUT".into(),
            message: format!("no points awarded in {output:?}"),
            transient: false,
        })?;
        step_state::increment(&key(&order), -awarded).map_err(state_error)?;
        Ok(())
    }
}

/// Tells the loyalty service; anything but a 2xx is worth another try.
fn notify(url: &str, context: &StepContext, order: &Order, awarded: i64) -> Result<(), StepError> {
    let body = format!(
        r#"{{"orderId":"{}","customerId":"{}","awarded":{awarded}}}"#,
        order.id, order.customer_id
    );
    let request = outbound_http::Request {
        method: "POST".into(),
        url: url.into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("idempotency-key".into(), context.idempotency_key.clone()),
        ],
        body: body.into_bytes(),
    };
    let failed = |message: String| StepError {
        code: "LOYALTY_SERVICE_UNAVAILABLE".into(),
        message,
        transient: true,
    };
    match outbound_http::send(&request) {
        Ok(r) if (200..300).contains(&r.status) => Ok(()),
        Ok(r) => Err(failed(format!("the loyalty service answered {}", r.status))),
        Err(e) => Err(failed(format!("{e:?}"))),
    }
}

/// The `awarded` figure of this step's own output.
fn awarded(output: &str) -> Option<i64> {
    let rest = output.split("\"awarded\":").nth(1)?;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

export!(Points);
