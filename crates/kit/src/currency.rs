//! ISO 4217 currencies. A `Currency` can only be obtained from the table, so holding one
//! proves the code is real and tells how many minor units make a major unit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct CurrencyInfo {
    code: &'static str,
    numeric: u16,
    exponent: u8,
}

include!("currency_table.rs");

/// An ISO 4217 currency that Till can hold, with its exponent (minor-unit digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(&'static CurrencyInfo);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 4217 currency code that Till supports")]
pub struct UnknownCurrency(pub String);

impl Currency {
    pub const GBP: Currency = Currency(&CurrencyInfo { code: "GBP", numeric: 826, exponent: 2 });
    pub const INR: Currency = Currency(&CurrencyInfo { code: "INR", numeric: 356, exponent: 2 });
    pub const EUR: Currency = Currency(&CurrencyInfo { code: "EUR", numeric: 978, exponent: 2 });
    pub const USD: Currency = Currency(&CurrencyInfo { code: "USD", numeric: 840, exponent: 2 });

    /// Parses an upper-case three-letter code. Lower case is refused on purpose: API.md
    /// fixes upper case, and accepting both would make two spellings of one value.
    pub fn parse(code: &str) -> Result<Currency, UnknownCurrency> {
        CURRENCIES
            .binary_search_by(|info| info.code.cmp(code))
            .map(|index| Currency(&CURRENCIES[index]))
            .map_err(|_| UnknownCurrency(code.chars().take(16).collect()))
    }

    pub fn code(self) -> &'static str {
        self.0.code
    }

    pub fn numeric_code(self) -> u16 {
        self.0.numeric
    }

    /// Digits after the decimal point in the major unit: 2 for GBP, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.0.exponent
    }

    /// How many minor units make one major unit (10^exponent).
    pub fn minor_units_per_major(self) -> i64 {
        10_i64.pow(u32::from(self.0.exponent))
    }

    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(Currency)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.code)
    }
}

impl std::str::FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::parse(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Currency::all().map(Currency::code)))
            .description(Some("ISO 4217 currency code, upper case; it decides the exponent of `amount`."))
            .examples([serde_json::json!("GBP")])
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique_so_binary_search_is_sound() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].code < pair[1].code, "{} before {}", pair[0].code, pair[1].code);
        }
    }

    #[test]
    fn exponents_of_well_known_currencies() {
        for (code, exponent) in [
            ("GBP", 2),
            ("INR", 2),
            ("EUR", 2),
            ("USD", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("OMR", 3),
            ("CLF", 4),
        ] {
            assert_eq!(Currency::parse(code).map(Currency::exponent), Ok(exponent), "{code}");
        }
    }

    #[test]
    fn constants_agree_with_the_table() {
        for constant in [Currency::GBP, Currency::INR, Currency::EUR, Currency::USD] {
            assert_eq!(Currency::parse(constant.code()), Ok(constant));
        }
    }

    #[test]
    fn refuses_lower_case_unknown_and_metal_codes() {
        for code in ["gbp", "GB", "GBPX", "XAU", "XXX", "", "ZWL"] {
            assert!(Currency::parse(code).is_err(), "{code}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_display_roundtrip(index in 0..CURRENCIES.len()) {
            let currency = Currency(&CURRENCIES[index]);
            proptest::prop_assert_eq!(Currency::parse(&currency.to_string()), Ok(currency));
        }

        #[test]
        fn arbitrary_strings_never_panic(code in "\\PC{0,8}") {
            let _ = Currency::parse(&code);
        }
    }
}
