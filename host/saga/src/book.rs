//! The money of an order's lines, from the order (which never changes):
//! what each SKU's units paid of the total, so a return or a cancelled
//! line refunds exactly its part.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The money of an order's lines, per SKU: how many units and what part of
/// the order's total they paid (their value with the order's tax and
/// discount spread over the lines by value; shipping is not a line's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderBook {
    pub lines: Vec<BookLine>,
    /// What was charged: the order's total, minor units.
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookLine {
    pub sku: String,
    pub quantity: i64,
    /// Minor units; never negative.
    pub share: i64,
}

impl OrderBook {
    /// From the order's lines `(sku, quantity, unit price)`, its tax,
    /// discount and total. Lines of one SKU are one line. Exact (128-bit,
    /// rounded down), so the shares never sum past `total - shipping`.
    pub fn new(lines: &[(String, i64, i64)], tax: i64, discount: i64, total: i64) -> Self {
        let mut per_sku: BTreeMap<&str, (i128, i128)> = BTreeMap::new();
        for (sku, quantity, unit_price) in lines {
            let e = per_sku.entry(sku).or_default();
            e.0 += i128::from(*quantity);
            e.1 += i128::from(*quantity) * i128::from(*unit_price);
        }
        let subtotal: i128 = per_sku.values().map(|(_, v)| v).sum();
        let adjust = i128::from(tax) - i128::from(discount);
        let lines = per_sku
            .into_iter()
            .map(|(sku, (quantity, value))| {
                let spread = if subtotal == 0 {
                    0
                } else {
                    (adjust * value).div_euclid(subtotal)
                };
                BookLine {
                    sku: sku.to_string(),
                    quantity: i64::try_from(quantity).unwrap_or(i64::MAX),
                    share: i64::try_from((value + spread).max(0)).unwrap_or(i64::MAX),
                }
            })
            .collect();
        Self { lines, total }
    }

    pub(crate) fn line(&self, sku: &str) -> Option<&BookLine> {
        self.lines.iter().find(|l| l.sku == sku)
    }

    /// What `quantity` units of `sku` paid, rounded down.
    pub(crate) fn value(&self, sku: &str, quantity: i64) -> i64 {
        match self.line(sku) {
            Some(l) if l.quantity > 0 => {
                i64::try_from(i128::from(l.share) * i128::from(quantity) / i128::from(l.quantity))
                    .unwrap_or(i64::MAX)
            }
            _ => 0,
        }
    }
}
