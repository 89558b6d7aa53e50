//! Reading one field at a time, each problem recorded with a JSON pointer
//! to where it is: the vocabulary `order` is written in.

use super::{METADATA_KEY_MAX, METADATA_MAX_KEYS, METADATA_VALUE_MAX, pointer_escape};
use crate::{Address, FieldError, Metadata};
use serde_json::{Map, Value};

pub(super) struct Reader {
    pub(super) type_errors: bool,
    pub(super) errors: Vec<FieldError>,
}

impl Reader {
    pub(super) fn type_error(&mut self, field: &str, expected: &str) {
        self.type_errors = true;
        self.errors.push(FieldError::new(
            field,
            "INVALID_TYPE",
            format!("must be {expected}"),
        ));
    }

    pub(super) fn value_error(
        &mut self,
        field: &str,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.errors.push(FieldError::new(field, code, message));
    }

    pub(super) fn get<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        base: &str,
        key: &str,
    ) -> Option<&'a Value> {
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

    pub(super) fn string(
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
    pub(super) fn optional_string(
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
    pub(super) fn optional_amount(&mut self, obj: &Map<String, Value>, key: &str) -> Option<i64> {
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
    pub(super) fn metadata(&mut self, obj: &Map<String, Value>, base: &str) -> Option<Metadata> {
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
    pub(super) fn address(
        &mut self,
        root: &Map<String, Value>,
        key: &str,
        required: bool,
    ) -> Option<Address> {
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
    pub(super) fn integer(
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
