//! Validated value types shared by every module: ids, money, order shape and
//! the statuses clients see, and the reading of an order from a request
//! body (`validate`), shared by the API, the CLIs and the engine.
//! Constructors check their input, so a value of one of these types is
//! always valid. Pure: no clock, randomness or I/O.

pub mod validate;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Free-form key/values a client attaches to an order or a line (its own
/// references, a gift note): bounded, see [`validate::METADATA_MAX_KEYS`].
pub type Metadata = BTreeMap<String, String>;

/// Why a value was refused, pointing at the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer into the request body, e.g. `/items/0/quantity`.
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A tenant's id: lower-case letters, digits and `-`, 1 to 63 characters.
    TenantId
);
string_id!(
    /// `ord_` followed by a ULID, so ids sort by creation time.
    OrderId
);
string_id!(
    /// A stock keeping unit: 1 to 64 printable ASCII characters, no spaces.
    Sku
);
string_id!(
    /// A warehouse: same rules as a SKU.
    WarehouseId
);

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl TenantId {
    pub fn parse(s: &str) -> Option<Self> {
        is_slug(s).then(|| Self(s.to_owned()))
    }
}

impl OrderId {
    /// The id for `ulid` (which the caller made: this crate reads no clock).
    pub fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self(format!("ord_{ulid}"))
    }

    pub fn parse(s: &str) -> Option<Self> {
        let ulid = s.strip_prefix("ord_")?;
        ulid::Ulid::from_string(ulid)
            .ok()
            .map(|_| Self(s.to_owned()))
    }
}

impl Sku {
    pub fn parse(s: &str) -> Option<Self> {
        is_code(s).then(|| Self(s.to_owned()))
    }
}

impl WarehouseId {
    pub fn parse(s: &str) -> Option<Self> {
        is_code(s).then(|| Self(s.to_owned()))
    }
}

/// ISO 4217 currencies the platform accepts, with their minor-unit exponent.
const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// An ISO 4217 currency code the platform knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(code: &str) -> Option<Self> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, _)| Self(c))
    }

    pub fn code(&self) -> &'static str {
        self.0
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown currency {code}")))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An amount in integer minor units of one currency. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// `None` on overflow: an order total beyond i64 minor units is refused, never wrapped.
    pub fn checked_mul_add(self, quantity: u32, unit: i64) -> Option<Self> {
        let line = unit.checked_mul(i64::from(quantity))?;
        Some(Self {
            minor: self.minor.checked_add(line)?,
            currency: self.currency,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: u32,
    /// Minor units.
    pub unit_price: i64,
    /// The product's name as the customer saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// An order as accepted from a client: every field checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDraft {
    pub customer_id: String,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub payment_token: String,
    /// Absent: the shipping address is the billing address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
    /// Minor units, each at least 0 (absent in orders stored before them: 0).
    #[serde(default)]
    pub shipping_amount: i64,
    #[serde(default)]
    pub tax_amount: i64,
    #[serde(default)]
    pub discount_amount: i64,
}

impl OrderDraft {
    /// The lines' sum: quantity × unit price; `None` on overflow.
    pub fn subtotal(&self) -> Option<Money> {
        self.items
            .iter()
            .try_fold(Money::new(0, self.currency), |acc, item| {
                acc.checked_mul_add(item.quantity, item.unit_price)
            })
    }

    /// What the customer pays: subtotal + shipping + tax − discount. `None`
    /// on overflow or when the discount exceeds the rest (never negative).
    pub fn total(&self) -> Option<Money> {
        let minor = self
            .subtotal()?
            .minor
            .checked_add(self.shipping_amount)?
            .checked_add(self.tax_amount)?
            .checked_sub(self.discount_amount)?;
        (minor >= 0).then_some(Money::new(minor, self.currency))
    }
}

/// An enum with a fixed wire name per variant (serde, `as_str`, `parse`).
#[macro_export]
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every wire name, in declaration order.
            pub const WIRE: &'static [&'static str] = &[$($wire),+];

            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some(Self::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// The order's status as clients see it.
    OrderStatus {
        Pending = "PENDING",
        Confirmed = "CONFIRMED",
        Rejected = "REJECTED",
        Cancelled = "CANCELLED",
        // Some of its lines have shipped, not all.
        PartiallyShipped = "PARTIALLY_SHIPPED",
        Shipped = "SHIPPED",
        Delivered = "DELIVERED",
        // Its saga is stuck: an operator must retry or resolve it.
        RequiresAttention = "REQUIRES_ATTENTION",
        // An operator settled its stuck saga out of band.
        Resolved = "RESOLVED",
    }
);

wire_enum!(
    PaymentStatus {
        None = "NONE",
        Authorized = "AUTHORIZED",
        Captured = "CAPTURED",
        Voided = "VOIDED",
        // Some of the capture went back (a return, cancelled lines).
        PartiallyRefunded = "PARTIALLY_REFUNDED",
        Refunded = "REFUNDED",
        Failed = "FAILED",
    }
);

wire_enum!(
    FulfillmentStatus {
        None = "NONE",
        Requested = "REQUESTED",
        // The warehouse said it will fulfil (tenants whose warehouse answers).
        Accepted = "ACCEPTED",
        // The warehouse said it will not; the order is undone.
        Rejected = "REJECTED",
        PartiallyShipped = "PARTIALLY_SHIPPED",
        Shipped = "SHIPPED",
        Delivered = "DELIVERED",
        Cancelled = "CANCELLED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(TenantId::parse("acme").is_some());
        assert!(TenantId::parse("Acme").is_none());
        assert!(TenantId::parse("").is_none());
        let id = OrderId::from_ulid(ulid::Ulid::from_parts(1, 2));
        assert_eq!(OrderId::parse(id.as_str()), Some(id));
        assert!(OrderId::parse("ord_nope").is_none());
        assert!(Sku::parse("SKU 1").is_none());
    }

    #[test]
    fn totals_are_exact_and_refuse_overflow() {
        let usd = Currency::parse("USD").expect("USD is known");
        let item = |quantity, unit_price| LineItem {
            sku: Sku("A".into()),
            quantity,
            unit_price,
            name: None,
            metadata: Metadata::new(),
        };
        let mut draft = OrderDraft {
            customer_id: "c".into(),
            currency: usd,
            items: vec![item(3, 1999), item(1, 1)],
            shipping_address: Address {
                line1: "1 Main".into(),
                city: "X".into(),
                postal_code: "1".into(),
                country: "US".into(),
            },
            payment_token: "tok_visa".into(),
            billing_address: None,
            metadata: Metadata::new(),
            shipping_amount: 0,
            tax_amount: 0,
            discount_amount: 0,
        };
        assert_eq!(draft.total(), Some(Money::new(5998, usd)));
        draft.shipping_amount = 500;
        draft.tax_amount = 480;
        draft.discount_amount = 1000;
        assert_eq!(draft.subtotal(), Some(Money::new(5998, usd)));
        assert_eq!(draft.total(), Some(Money::new(5978, usd)));
        draft.discount_amount = 6979;
        assert_eq!(draft.total(), None, "a discount beyond the rest");
        draft.discount_amount = 6978;
        assert_eq!(draft.total(), Some(Money::new(0, usd)));
        draft.tax_amount = i64::MAX;
        assert_eq!(draft.total(), None);
        draft.tax_amount = 0;
        draft.items.push(item(u32::MAX, i64::MAX));
        assert_eq!(draft.total(), None);
        assert!(Currency::parse("XXX").is_none());
    }
}
