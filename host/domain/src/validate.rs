//! Reads an order request body field by field, so each problem comes back
//! with a JSON pointer to where it is. Wrong types (including a float where
//! money must be an integer) are 400; well-typed but unacceptable values are 422.

use crate::{Address, Currency, FieldError, LineItem, Metadata, OrderDraft, Sku};
use serde_json::{Map, Value};

/// Metadata bounds, per order and per line (as card processors bound theirs).
pub const METADATA_MAX_KEYS: usize = 20;
/// Keys: 1 to 40 of `A-Z a-z 0-9 _ . -`.
pub const METADATA_KEY_MAX: usize = 40;
pub const METADATA_VALUE_MAX: usize = 500;

pub struct Problems {
    pub type_errors: bool,
    pub errors: Vec<FieldError>,
}

struct Reader {
    type_errors: bool,
    errors: Vec<FieldError>,
}

impl Reader {
    fn type_error(&mut self, field: &str, expected: &str) {
        self.type_errors = true;
        self.errors.push(FieldError::new(
            field,
            "INVALID_TYPE",
            format!("must be {expected}"),
        ));
    }

    fn value_error(&mut self, field: &str, code: &'static str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, code, message));
    }

    fn get<'a>(&mut self, obj: &'a Map<String, Value>, base: &str, key: &str) -> Option<&'a Value> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                self.type_errors = true;
                self.errors.push(FieldError::new(
                    format!("{base}/{key}"),
                    "REQUIRED",
                    "is required",
                ));
                None
            }
            some => some,
        }
    }

    fn string(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        key: &str,
        max: usize,
    ) -> Option<String> {
        let field = format!("{base}/{key}");
        match self.get(obj, base, key)? {
            Value::String(s) if s.trim().is_empty() => {
                self.value_error(&field, "EMPTY", "must not be empty");
                None
            }
            Value::String(s) if s.chars().count() > max => {
                self.value_error(
                    &field,
                    "TOO_LONG",
                    format!("must be at most {max} characters"),
                );
                None
            }
            // Control characters (NUL, ANSI escapes, line breaks) would
            // reach logs, terminals and databases (PostgreSQL cannot store
            // NUL) as they are.
            Value::String(s) if s.chars().any(char::is_control) => {
                self.value_error(
                    &field,
                    "CONTROL_CHARACTER",
                    "must not contain control characters",
                );
                None
            }
            Value::String(s) => Some(s.clone()),
            _ => {
                self.type_error(&field, "a string");
                None
            }
        }
    }

    /// A field that may be absent (or null): `None` then, with no error.
    fn optional_string(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        key: &str,
        max: usize,
    ) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(_) => self.string(obj, base, key, max),
        }
    }

    /// An optional amount in minor units, at least 0; absent is 0.
    fn optional_amount(&mut self, obj: &Map<String, Value>, key: &str) -> Option<i64> {
        match obj.get(key) {
            None | Some(Value::Null) => Some(0),
            Some(_) => match self.integer(obj, "", key, true)? {
                n if n < 0 => {
                    self.value_error(
                        &format!("/{key}"),
                        "NEGATIVE_AMOUNT",
                        "must not be negative",
                    );
                    None
                }
                n => Some(n),
            },
        }
    }

    /// Optional bounded key/values of strings.
    fn metadata(&mut self, obj: &Map<String, Value>, base: &str) -> Option<Metadata> {
        let field = format!("{base}/metadata");
        let map = match obj.get("metadata") {
            None | Some(Value::Null) => return Some(Metadata::new()),
            Some(Value::Object(map)) => map,
            Some(_) => {
                self.type_error(&field, "an object of strings");
                return None;
            }
        };
        if map.len() > METADATA_MAX_KEYS {
            self.value_error(
                &field,
                "TOO_MANY_METADATA_KEYS",
                format!("at most {METADATA_MAX_KEYS} keys"),
            );
            return None;
        }
        let mut out = Metadata::new();
        let before = self.errors.len();
        for key in map.keys() {
            let valid = !key.is_empty()
                && key.len() <= METADATA_KEY_MAX
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                self.value_error(
                    &format!("{field}/{}", pointer_escape(key)),
                    "INVALID_METADATA_KEY",
                    format!("keys are 1 to {METADATA_KEY_MAX} of A-Z a-z 0-9 _ . -"),
                );
                continue;
            }
            if let Some(value) = self.string(map, &field, key, METADATA_VALUE_MAX) {
                out.insert(key.clone(), value);
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    /// An address object under `key` (required or not).
    fn address(&mut self, root: &Map<String, Value>, key: &str, required: bool) -> Option<Address> {
        let base = format!("/{key}");
        let value = if required {
            self.get(root, "", key)?
        } else {
            match root.get(key) {
                None | Some(Value::Null) => return None,
                Some(v) => v,
            }
        };
        let Value::Object(a) = value else {
            self.type_error(&base, "an object");
            return None;
        };
        let line1 = self.string(a, &base, "line1", 200);
        let city = self.string(a, &base, "city", 100);
        let postal_code = self.string(a, &base, "postalCode", 20);
        let country = self.string(a, &base, "country", 2).and_then(|c| {
            if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
                Some(c)
            } else {
                self.value_error(
                    &format!("{base}/country"),
                    "INVALID_COUNTRY",
                    "an ISO 3166-1 alpha-2 code such as US",
                );
                None
            }
        });
        Some(Address {
            line1: line1?,
            city: city?,
            postal_code: postal_code?,
            country: country?,
        })
    }

    /// Money and counts: JSON integers only, never floats or strings.
    fn integer(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        key: &str,
        money: bool,
    ) -> Option<i64> {
        let field = format!("{base}/{key}");
        match self.get(obj, base, key)? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            Value::Number(n) if money && (n.is_f64()) => {
                self.type_errors = true;
                self.value_error(
                    &field,
                    "MONEY_NOT_INTEGER",
                    "money is an integer number of minor units (e.g. cents), never a decimal",
                );
                None
            }
            Value::Number(_) => {
                self.type_error(&field, "an integer");
                None
            }
            _ => {
                self.type_error(
                    &field,
                    if money {
                        "an integer number of minor units"
                    } else {
                        "an integer"
                    },
                );
                None
            }
        }
    }
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
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "customerId": "cust-1",
            "currency": "USD",
            "items": [{ "sku": "WIDGET-1", "quantity": 2, "unitPrice": 1999 }],
            "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
            "paymentMethod": { "token": "tok_visa" }
        })
    }

    fn problems(body: Value) -> Problems {
        order(&body).expect_err("refused")
    }

    #[test]
    fn a_valid_order_is_read() {
        let draft = order(&valid()).ok().expect("valid");
        assert_eq!(draft.total().map(|m| m.minor), Some(3998));
    }

    #[test]
    fn a_float_price_is_a_type_error_with_a_pointer() {
        let mut body = valid();
        body["items"][0]["unitPrice"] = json!(19.99);
        let p = problems(body);
        assert!(p.type_errors);
        assert_eq!(p.errors[0].field, "/items/0/unitPrice");
        assert_eq!(p.errors[0].code, "MONEY_NOT_INTEGER");
    }

    #[test]
    fn business_values_are_value_errors() {
        let mut body = valid();
        body["currency"] = json!("XYZ");
        body["items"][0]["quantity"] = json!(0);
        let p = problems(body);
        assert!(!p.type_errors);
        let fields: Vec<_> = p
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect();
        assert!(fields.contains(&("/currency", "UNKNOWN_CURRENCY")));
        assert!(fields.contains(&("/items/0/quantity", "INVALID_QUANTITY")));

        let mut empty = valid();
        empty["items"] = json!([]);
        assert_eq!(problems(empty).errors[0].code, "EMPTY_ITEMS");
    }

    #[test]
    fn missing_fields_are_named() {
        let p = problems(json!({ "currency": "USD" }));
        let fields: Vec<_> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"/customerId"));
        assert!(fields.contains(&"/items"));
        assert!(fields.contains(&"/paymentMethod"));
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        for bad in ["nul\u{0}byte", "ansi\u{1b}[31mred", "two\nlines"] {
            let mut body = valid();
            body["customerId"] = json!(bad);
            body["shippingAddress"]["city"] = json!(bad);
            let p = problems(body);
            let fields: Vec<_> = p
                .errors
                .iter()
                .map(|e| (e.field.as_str(), e.code))
                .collect();
            assert!(
                fields.contains(&("/customerId", "CONTROL_CHARACTER")),
                "{fields:?}"
            );
            assert!(
                fields.contains(&("/shippingAddress/city", "CONTROL_CHARACTER")),
                "{fields:?}"
            );
        }
        let mut fine = valid();
        fine["customerId"] = json!("Zoë Ünïcode 客户");
        assert!(order(&fine).is_ok());
    }

    #[test]
    fn a_full_order_is_read_and_its_total_checked() {
        let mut body = valid();
        body["items"][0]["name"] = json!("Widget, blue");
        body["items"][0]["metadata"] = json!({ "colour": "blue" });
        body["billingAddress"] = json!({ "line1": "2 Side St", "city": "Shelbyville", "postalCode": "54321", "country": "US" });
        body["metadata"] = json!({ "po_number": "PO-7", "gift.note": "Happy birthday" });
        body["shippingAmount"] = json!(500);
        body["taxAmount"] = json!(320);
        body["discountAmount"] = json!(1000);
        body["totalAmount"] = json!(3818);
        let draft = order(&body).ok().expect("valid");
        assert_eq!(draft.total().map(|m| m.minor), Some(3818));
        assert_eq!(draft.subtotal().map(|m| m.minor), Some(3998));
        assert_eq!(draft.items[0].name.as_deref(), Some("Widget, blue"));
        assert_eq!(draft.metadata["po_number"], "PO-7");
        assert_eq!(
            draft.billing_address.as_ref().map(|a| a.city.as_str()),
            Some("Shelbyville")
        );
        // Stored drafts from before these fields read as before.
        let old: OrderDraft = serde_json::from_value(json!({
            "customerId": "c", "currency": "USD",
            "items": [{ "sku": "A", "quantity": 1, "unitPrice": 5 }],
            "shippingAddress": { "line1": "1", "city": "X", "postalCode": "1", "country": "US" },
            "paymentToken": "tok_visa"
        }))
        .expect("an old draft");
        assert_eq!(old.total().map(|m| m.minor), Some(5));
    }

    #[test]
    fn amounts_and_metadata_are_bounded() {
        let codes = |body: Value| -> Vec<(String, &'static str)> {
            problems(body)
                .errors
                .into_iter()
                .map(|e| (e.field, e.code))
                .collect()
        };
        let mut body = valid();
        body["totalAmount"] = json!(1);
        assert_eq!(
            codes(body),
            vec![("/totalAmount".to_string(), "TOTAL_MISMATCH")]
        );
        let mut body = valid();
        body["discountAmount"] = json!(3999);
        assert_eq!(
            codes(body),
            vec![("/discountAmount".to_string(), "DISCOUNT_EXCEEDS_TOTAL")]
        );
        let mut body = valid();
        body["taxAmount"] = json!(-1);
        assert_eq!(
            codes(body),
            vec![("/taxAmount".to_string(), "NEGATIVE_AMOUNT")]
        );
        let mut body = valid();
        body["shippingAmount"] = json!(i64::MAX);
        assert_eq!(codes(body), vec![(String::new(), "TOTAL_OVERFLOW")]);
        let mut body = valid();
        body["shippingAmount"] = json!(4.5);
        assert!(problems(body).type_errors);

        let mut body = valid();
        let many: serde_json::Map<String, Value> = (0..=METADATA_MAX_KEYS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        body["metadata"] = Value::Object(many);
        assert_eq!(
            codes(body),
            vec![("/metadata".to_string(), "TOO_MANY_METADATA_KEYS")]
        );
        let mut body = valid();
        body["items"][0]["metadata"] =
            json!({ "a/b c": "v", "ok": "x".repeat(METADATA_VALUE_MAX + 1) });
        let got = codes(body);
        assert!(
            got.contains(&(
                "/items/0/metadata/a~1b c".to_string(),
                "INVALID_METADATA_KEY"
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&("/items/0/metadata/ok".to_string(), "TOO_LONG")),
            "{got:?}"
        );
        let mut body = valid();
        body["metadata"] = json!({ "n": 5 });
        assert!(problems(body).type_errors);
        let mut body = valid();
        body["billingAddress"] = json!({ "line1": "x" });
        let got = codes(body);
        assert!(
            got.contains(&("/billingAddress/city".to_string(), "REQUIRED")),
            "{got:?}"
        );
    }
}
