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
