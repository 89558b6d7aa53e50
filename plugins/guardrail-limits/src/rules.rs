//! The rules themselves, in plain Rust with no WIT types: the component
//! (lib.rs) wraps them, and the host's benchmark compiles this same file
//! natively to measure what the Wasm sandbox costs.

/// What the rules read of an order.
pub struct OrderView<'a> {
    /// (sku, quantity) per line.
    pub lines: Vec<(&'a str, u32)>,
    pub total_amount: i64,
    pub currency: &'a str,
    pub country: &'a str,
}

pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub field: String,
}

fn number<'a>(setting: &impl Fn(&str) -> Option<&'a str>, key: &str) -> Option<i64> {
    setting(key).and_then(|v| v.trim().parse().ok())
}

/// Settings (all optional):
/// - `max_quantity`: largest quantity on one line (default 100).
/// - `max_lines`: most lines on one order (default 50).
/// - `max_order_total`: largest order total in minor units (default: none).
/// - `allowed_countries`: comma-separated ISO codes to ship to (default: any).
pub fn check<'a>(order: &OrderView<'_>, setting: impl Fn(&str) -> Option<&'a str>) -> Vec<Finding> {
    let max_quantity = number(&setting, "max_quantity").unwrap_or(100);
    let max_lines = number(&setting, "max_lines").unwrap_or(50);
    let mut findings = Vec::new();

    if order.lines.len() as i64 > max_lines {
        findings.push(Finding {
            code: "TOO_MANY_LINES",
            message: format!("an order may have at most {max_lines} lines"),
            field: "/items".into(),
        });
    }
    for (i, (sku, quantity)) in order.lines.iter().enumerate() {
        if i64::from(*quantity) > max_quantity {
            findings.push(Finding {
                code: "MAX_QUANTITY_EXCEEDED",
                message: format!(
                    "quantity {quantity} of {sku} exceeds the limit of {max_quantity} per line"
                ),
                field: format!("/items/{i}/quantity"),
            });
        }
    }
    if let Some(max_total) = number(&setting, "max_order_total")
        && order.total_amount > max_total
    {
        findings.push(Finding {
            code: "ORDER_TOTAL_EXCEEDED",
            message: format!(
                "order total {} {} exceeds the limit of {max_total}",
                order.total_amount, order.currency
            ),
            field: "/items".into(),
        });
    }
    if let Some(allowed) = setting("allowed_countries")
        && !allowed
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(order.country))
    {
        findings.push(Finding {
            code: "COUNTRY_NOT_SERVED",
            message: format!("we do not ship to {}", order.country),
            field: "/shippingAddress/country".into(),
        });
    }
    findings
}
