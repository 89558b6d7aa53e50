//! Reads an order request body field by field, so each problem comes back
//! with a JSON pointer to where it is. Wrong types (including a float where
//! money must be an integer) are 400; well-typed but unacceptable values are 422.

use crate::{Address, Currency, FieldError, LineItem, OrderDraft, Sku};
use serde_json::{Map, Value};

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
                if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
                    items.push(LineItem {
                        sku,
                        quantity,
                        unit_price,
                    });
                }
            }
        }
        Some(_) => r.type_error("/items", "an array"),
        None => {}
    }

    let address = match r.get(root, "", "shippingAddress") {
        Some(Value::Object(a)) => {
            let base = "/shippingAddress";
            let line1 = r.string(a, base, "line1", 200);
            let city = r.string(a, base, "city", 100);
            let postal_code = r.string(a, base, "postalCode", 20);
            let country = r.string(a, base, "country", 2).and_then(|c| {
                if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
                    Some(c)
                } else {
                    r.value_error(
                        "/shippingAddress/country",
                        "INVALID_COUNTRY",
                        "an ISO 3166-1 alpha-2 code such as US",
                    );
                    None
                }
            });
            match (line1, city, postal_code, country) {
                (Some(line1), Some(city), Some(postal_code), Some(country)) => Some(Address {
                    line1,
                    city,
                    postal_code,
                    country,
                }),
                _ => None,
            }
        }
        Some(_) => {
            r.type_error("/shippingAddress", "an object");
            None
        }
        None => None,
    };

    let token = match r.get(root, "", "paymentMethod") {
        Some(Value::Object(pm)) => r.string(pm, "/paymentMethod", "token", 200),
        Some(_) => {
            r.type_error("/paymentMethod", "an object");
            None
        }
        None => None,
    };

    match (customer_id, currency, address, token) {
        (Some(customer_id), Some(currency), Some(shipping_address), Some(payment_token))
            if r.errors.is_empty() =>
        {
            let draft = OrderDraft {
                customer_id,
                currency,
                items,
                shipping_address,
                payment_token,
            };
            if draft.total().is_none() {
                r.value_error("/items", "TOTAL_OVERFLOW", "the order total is too large");
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
}
