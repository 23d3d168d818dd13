//! The catalog's values, checked before anything is stored. Pure: no I/O.
//!
//! A product's tax treatment must be one its seller can charge: a UK business sells
//! standard-, reduced-, zero-rated or exempt goods; an Indian one sells under GST with
//! the product's HSN code and a rate that is (or was) in India's rate table. Whether that
//! rate is in force is a question of the sale's date, so the quote asks it, not this.

use std::collections::HashSet;

use till_access::domain::Country;
use till_kit::{Currency, Money};
use till_pricing::{GstRate, HsnCode, Treatment, UkTreatment};

pub const NAME_CHARS_MAX: usize = 200;
pub const DESCRIPTION_CHARS_MAX: usize = 1000;
pub const PRICES_MAX: usize = 10;
/// The largest unit price, in minor units: ₹100 crore or £1 billion is no small
/// business's single item, and a bound keeps every total far from overflow.
pub const UNIT_AMOUNT_MAX: i64 = 100_000_000_000;
/// The largest stock change in one adjustment.
pub const DELTA_MAX: i64 = 1_000_000_000;
pub const REASON_CHARS_MAX: usize = 200;

/// A field the caller got wrong: its JSON path, why, and whether it is wrong in itself
/// (400) or only together with the rest (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
    pub rule: bool,
}

impl Refusal {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { field: field.into(), message: message.into(), rule: false }
    }

    pub fn rule(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal { field: field.into(), message: message.into(), rule: true }
    }
}

/// A stock-keeping unit: 1 to 64 of letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit. It names the stock in a URL path, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    pub fn parse(text: &str) -> Result<Sku, Refusal> {
        let bytes = text.as_bytes();
        let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
        let valid = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.iter().all(allowed);
        if valid {
            Ok(Sku(text.to_string()))
        } else {
            Err(Refusal::invalid(
                "sku",
                "sku is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's tax treatment as the request gives it.
pub struct TreatmentFields<'a> {
    pub tax_treatment: &'a str,
    pub hsn_code: Option<&'a str>,
    pub gst_rate_bps: Option<i64>,
}

/// The treatment, checked against the seller's country.
pub fn treatment(country: Country, fields: &TreatmentFields<'_>) -> Result<Treatment, Refusal> {
    match (country, fields.tax_treatment) {
        (Country::GB, "gst") => Err(Refusal::rule(
            "tax_treatment",
            "a UK business's products are standard, reduced, zero or exempt for VAT, not gst.",
        )),
        (Country::GB, text) => {
            let uk =
                UkTreatment::parse(text).map_err(|error| Refusal::invalid("tax_treatment", format!("{error}.")))?;
            for (field, present) in
                [("hsn_code", fields.hsn_code.is_some()), ("gst_rate_bps", fields.gst_rate_bps.is_some())]
            {
                if present {
                    return Err(Refusal::rule(field, format!("{field} is for a product sold under GST in India.")));
                }
            }
            Ok(Treatment::Uk(uk))
        }
        (Country::IN, "gst") => {
            let hsn = fields
                .hsn_code
                .ok_or_else(|| Refusal::rule("hsn_code", "a product sold under GST needs its HSN or SAC code."))?;
            let hsn = HsnCode::parse(hsn).map_err(|error| Refusal::invalid("hsn_code", format!("{error}.")))?;
            let rate = fields
                .gst_rate_bps
                .ok_or_else(|| Refusal::rule("gst_rate_bps", "a product sold under GST needs its rate."))?;
            let rate = u32::try_from(rate).ok().and_then(|rate| GstRate::parse(rate).ok()).ok_or_else(|| {
                Refusal::invalid(
                    "gst_rate_bps",
                    "gst_rate_bps is a GST rate in basis points: 0, 25, 300, 500, 1800 or 4000 (from \
                         22 Sep 2025), or 1200 or 2800 for sales before it.",
                )
            })?;
            Ok(Treatment::Gst { hsn, rate })
        }
        (Country::IN, "standard" | "reduced" | "zero" | "exempt") => {
            Err(Refusal::rule("tax_treatment", "an Indian business's products are sold under gst."))
        }
        (Country::IN, _) => {
            Err(Refusal::invalid("tax_treatment", "tax_treatment is standard, reduced, zero, exempt or gst."))
        }
    }
}

/// A price as the request gives it.
pub struct PriceFields<'a> {
    pub currency: &'a str,
    pub unit_amount: i64,
    pub tax_inclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub unit_amount: Money,
    pub tax_inclusive: bool,
}

/// A product's prices: 1 to [`PRICES_MAX`], one per currency.
pub fn prices(fields: &[PriceFields<'_>]) -> Result<Vec<Price>, Refusal> {
    if fields.is_empty() || fields.len() > PRICES_MAX {
        return Err(Refusal::invalid("prices", format!("a product has 1 to {PRICES_MAX} prices, one per currency.")));
    }
    let mut seen = HashSet::new();
    let mut prices = Vec::with_capacity(fields.len());
    for (index, price) in fields.iter().enumerate() {
        let currency = Currency::parse(price.currency)
            .map_err(|error| Refusal::invalid(format!("prices[{index}].currency"), error.to_string()))?;
        if !seen.insert(currency) {
            return Err(Refusal::rule(
                format!("prices[{index}].currency"),
                format!("the product has a price in {currency} already; one price per currency."),
            ));
        }
        if !(0..=UNIT_AMOUNT_MAX).contains(&price.unit_amount) {
            return Err(Refusal::invalid(
                format!("prices[{index}].unit_amount"),
                format!("unit_amount is 0 to {UNIT_AMOUNT_MAX} minor units."),
            ));
        }
        prices.push(Price {
            unit_amount: Money::from_minor(price.unit_amount, currency),
            tax_inclusive: price.tax_inclusive,
        });
    }
    Ok(prices)
}

/// A stock adjustment's delta: at most [`DELTA_MAX`] either way (400), and not zero
/// (422: a schema cannot say "not 0", and an adjustment of nothing is no change).
pub fn delta(delta: i64) -> Result<i64, Refusal> {
    if delta.unsigned_abs() > DELTA_MAX.unsigned_abs() {
        return Err(Refusal::invalid("delta", format!("delta is at most {DELTA_MAX} units either way.")));
    }
    if delta == 0 {
        return Err(Refusal::rule("delta", "An adjustment of 0 units changes nothing."));
    }
    Ok(delta)
}

/// The GST rates a product may carry, as its request schema says them.
pub struct GstRateSchema;

impl utoipa::PartialSchema for GstRateSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let rates: std::collections::BTreeSet<u32> =
            till_pricing::tax::GST_RATE_TABLE.iter().flat_map(|row| row.rates_bps.iter().copied()).collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some(rates))
            .description(Some("A GST rate in basis points that is or was one of India's slabs."))
            .into()
    }
}

impl utoipa::ToSchema for GstRateSchema {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_url_safe_and_bounded() {
        for good in ["A", "TSHIRT-RED-M", "sku_1.2", &"x".repeat(64)] {
            assert!(Sku::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-lead", ".hidden", "has space", "slash/no", "ünï", "a\u{0}b", &"x".repeat(65), "%2e"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_treatment_must_be_one_the_seller_can_charge() {
        let uk = |text| TreatmentFields { tax_treatment: text, hsn_code: None, gst_rate_bps: None };
        assert_eq!(treatment(Country::GB, &uk("reduced")), Ok(Treatment::Uk(UkTreatment::Reduced)));
        assert!(treatment(Country::GB, &uk("gst")).is_err_and(|refusal| refusal.rule));
        assert!(treatment(Country::GB, &uk("luxury")).is_err_and(|refusal| !refusal.rule));
        assert!(treatment(Country::IN, &uk("standard")).is_err_and(|refusal| refusal.rule));
        let with_hsn = TreatmentFields { tax_treatment: "standard", hsn_code: Some("6109"), gst_rate_bps: None };
        assert_eq!(treatment(Country::GB, &with_hsn).map_err(|refusal| refusal.field), Err(String::from("hsn_code")));

        let gst = |hsn, rate| TreatmentFields { tax_treatment: "gst", hsn_code: hsn, gst_rate_bps: rate };
        assert!(treatment(Country::IN, &gst(Some("61091000"), Some(500))).is_ok());
        // The pre-September-2025 rates are still rates: for sales made before it.
        assert!(treatment(Country::IN, &gst(Some("6109"), Some(1200))).is_ok());
        for (fields, field) in [
            (gst(None, Some(500)), "hsn_code"),
            (gst(Some("610"), Some(500)), "hsn_code"),
            (gst(Some("6109"), None), "gst_rate_bps"),
            (gst(Some("6109"), Some(1000)), "gst_rate_bps"),
            (gst(Some("6109"), Some(-1800)), "gst_rate_bps"),
            (gst(Some("6109"), Some(i64::MAX)), "gst_rate_bps"),
        ] {
            assert_eq!(treatment(Country::IN, &fields).map_err(|refusal| refusal.field), Err(String::from(field)));
        }
    }

    #[test]
    fn prices_are_one_per_currency_and_bounded() {
        let price = |currency, unit_amount| PriceFields { currency, unit_amount, tax_inclusive: false };
        assert_eq!(prices(&[price("GBP", 1000), price("EUR", 1200)]).map(|prices| prices.len()), Ok(2));
        for (fields, field) in [
            (vec![], "prices"),
            (vec![price("GBP", 1), price("GBP", 2)], "prices[1].currency"),
            (vec![price("XXQ", 1)], "prices[0].currency"),
            (vec![price("GBP", -1)], "prices[0].unit_amount"),
            (vec![price("GBP", UNIT_AMOUNT_MAX + 1)], "prices[0].unit_amount"),
        ] {
            assert_eq!(prices(&fields).map_err(|refusal| refusal.field), Err(String::from(field)));
        }
    }

    #[test]
    fn a_delta_is_never_zero_nor_huge() {
        assert_eq!(delta(-5), Ok(-5));
        for bad in [0, DELTA_MAX + 1, -DELTA_MAX - 1, i64::MIN, i64::MAX] {
            assert!(delta(bad).is_err(), "{bad}");
        }
    }
}
