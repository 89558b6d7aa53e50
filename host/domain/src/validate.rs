//! Reads an order request body field by field, so each problem comes back
//! with a JSON pointer to where it is. Wrong types (including a float where
//! money must be an integer) are 400; well-typed but unacceptable values are 422.

use crate::{Currency, FieldError, LineItem, OrderDraft, Sku};
use serde_json::Value;

mod reader;
use reader::Reader;

/// Metadata bounds, per order and per line (as card processors bound theirs).
pub const METADATA_MAX_KEYS: usize = 20;
/// Keys: 1 to 40 of `A-Z a-z 0-9 _ . -`.
pub const METADATA_KEY_MAX: usize = 40;
pub const METADATA_VALUE_MAX: usize = 500;

pub struct Problems {
    pub type_errors: bool,
    pub errors: Vec<FieldError>,
}

/// A key as a JSON pointer segment (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

pub fn order(body: &Value) -> Result<OrderDraft, Problems> {
    let mut r = Reader {
        type_errors: false,
        errors: Vec::new(),
    };
    let Some(root) = body.as_object() else {
        r.type_error("", "a JSON object");
        return Err(Problems {
            type_errors: true,
            errors: r.errors,
        });
    };
    let customer_id = r.string(root, "", "customerId", 128);
    let currency = match r.string(root, "", "currency", 3) {
        Some(code) => match Currency::parse(&code) {
            Some(c) => Some(c),
            None => {
                r.value_error(
                    "/currency",
                    "UNKNOWN_CURRENCY",
                    format!("{code} is not a supported ISO 4217 currency code"),
                );
                None
            }
        },
        None => None,
    };

    let mut items = Vec::new();
    match r.get(root, "", "items") {
        Some(Value::Array(list)) if list.is_empty() => {
            r.value_error("/items", "EMPTY_ITEMS", "an order needs at least one item")
        }
        Some(Value::Array(list)) if list.len() > 500 => {
            r.value_error("/items", "TOO_MANY_ITEMS", "at most 500 items")
        }
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let base = format!("/items/{i}");
                let Some(obj) = item.as_object() else {
                    r.type_error(&base, "an object");
                    continue;
                };
                let sku = r
                    .string(obj, &base, "sku", 64)
                    .and_then(|s| match Sku::parse(&s) {
                        Some(sku) => Some(sku),
                        None => {
                            r.value_error(
                                &format!("{base}/sku"),
                                "INVALID_SKU",
                                "printable characters without spaces, at most 64",
                            );
                            None
                        }
                    });
                let quantity =
                    r.integer(obj, &base, "quantity", false)
                        .and_then(|q| match u32::try_from(q) {
                            Ok(q) if q > 0 => Some(q),
                            _ => {
                                r.value_error(
                                    &format!("{base}/quantity"),
                                    "INVALID_QUANTITY",
                                    "must be a whole number of at least 1",
                                );
                                None
                            }
                        });
                let unit_price = r.integer(obj, &base, "unitPrice", true).and_then(|p| {
                    if p < 0 {
                        r.value_error(
                            &format!("{base}/unitPrice"),
                            "NEGATIVE_AMOUNT",
                            "must not be negative",
                        );
                        None
                    } else {
                        Some(p)
                    }
                });
                let name = r.optional_string(obj, &base, "name", 200);
                let metadata = r.metadata(obj, &base);
                if let (Some(sku), Some(quantity), Some(unit_price), Some(metadata)) =
                    (sku, quantity, unit_price, metadata)
                {
                    items.push(LineItem {
                        sku,
                        quantity,
                        unit_price,
                        name,
                        metadata,
                    });
                }
            }
        }
        Some(_) => r.type_error("/items", "an array"),
        None => {}
    }

    let address = r.address(root, "shippingAddress", true);
    let billing_address = r.address(root, "billingAddress", false);
    let metadata = r.metadata(root, "");
    let shipping_amount = r.optional_amount(root, "shippingAmount");
    let tax_amount = r.optional_amount(root, "taxAmount");
    let discount_amount = r.optional_amount(root, "discountAmount");
    let stated_total = match root.get("totalAmount") {
        None | Some(Value::Null) => None,
        Some(_) => r.integer(root, "", "totalAmount", true),
    };

    let token = match r.get(root, "", "paymentMethod") {
        Some(Value::Object(pm)) => r.string(pm, "/paymentMethod", "token", 200),
        Some(_) => {
            r.type_error("/paymentMethod", "an object");
            None
        }
        None => None,
    };

    match (
        (customer_id, currency, address, token),
        (metadata, shipping_amount, tax_amount, discount_amount),
    ) {
        (
            (Some(customer_id), Some(currency), Some(shipping_address), Some(payment_token)),
            (Some(metadata), Some(shipping_amount), Some(tax_amount), Some(discount_amount)),
        ) if r.errors.is_empty() => {
            let draft = OrderDraft {
                customer_id,
                currency,
                items,
                shipping_address,
                payment_token,
                billing_address,
                metadata,
                shipping_amount,
                tax_amount,
                discount_amount,
            };
            check_total(&mut r, &draft, stated_total);
            if !r.errors.is_empty() {
                return Err(Problems {
                    type_errors: false,
                    errors: r.errors,
                });
            }
            Ok(draft)
        }
        _ => Err(Problems {
            type_errors: r.type_errors,
            errors: r.errors,
        }),
    }
}

/// The total adds up without overflow, the discount does not exceed the
/// rest, and a total the client stated is the one computed.
fn check_total(r: &mut Reader, draft: &OrderDraft, stated: Option<i64>) {
    let Some(subtotal) = draft.subtotal() else {
        r.value_error("/items", "TOTAL_OVERFLOW", "the order total is too large");
        return;
    };
    let Some(before_discount) = subtotal
        .minor
        .checked_add(draft.shipping_amount)
        .and_then(|m| m.checked_add(draft.tax_amount))
    else {
        r.value_error("", "TOTAL_OVERFLOW", "the order total is too large");
        return;
    };
    if draft.discount_amount > before_discount {
        r.value_error(
            "/discountAmount",
            "DISCOUNT_EXCEEDS_TOTAL",
            format!("at most the lines, shipping and tax together ({before_discount})"),
        );
        return;
    }
    let total = before_discount - draft.discount_amount;
    if let Some(stated) = stated
        && stated != total
    {
        r.value_error(
            "/totalAmount",
            "TOTAL_MISMATCH",
            format!("the lines + shipping + tax − discount come to {total}, not {stated}"),
        );
    }
}

#[cfg(test)]
mod tests;
