//! Money: an integer number of minor units and the currency that gives them meaning.
//!
//! There is no `impl Add` and no float anywhere: every operation is checked and
//! currency-aware, and returns an error instead of wrapping, saturating or mixing currencies.

// Money and balances: every operation is checked, and no `as` cast can truncate.
#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::fmt;

use crate::currency::Currency;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("the amount is out of range")]
    Overflow,
    #[error("`{0}` is not a decimal amount")]
    NotDecimal(String),
    #[error("{currency} has {exponent} decimal places; the amount has more")]
    TooPrecise { currency: Currency, exponent: u8 },
}

impl Money {
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    pub fn is_positive(self) -> bool {
        self.minor > 0
    }

    pub fn is_negative(self) -> bool {
        self.minor < 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.minor.checked_sub(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    /// Multiplies by a whole quantity (for example units of a product).
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(quantity).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    /// Compares two amounts of the same currency; amounts of different currencies are
    /// not ordered, so this returns an error rather than a misleading answer.
    pub fn checked_cmp(self, other: Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.minor.cmp(&other.minor))
    }

    /// Parses a decimal string in major units ("12.34", "-0.5", "1000") exactly. Refuses
    /// more decimal places than the currency has rather than rounding silently.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let not_decimal = || MoneyError::NotDecimal(text.chars().take(40).collect());
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
            Some(_) => return Err(not_decimal()),
            None => (digits, ""),
        };
        let is_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) {
            return Err(not_decimal());
        }
        let exponent = usize::from(currency.exponent());
        let significant_fraction = fraction.trim_end_matches('0');
        if significant_fraction.len() > exponent {
            return Err(MoneyError::TooPrecise { currency, exponent: currency.exponent() });
        }
        // Accumulate in i128 so that i64::MIN, whose magnitude has no positive i64, parses.
        let mut magnitude: i128 = 0;
        let padded_fraction = format!("{significant_fraction:0<exponent$}");
        for byte in whole.bytes().chain(padded_fraction.bytes()) {
            // An ASCII digit (checked above), so the subtraction cannot go below zero.
            let digit = i128::from(byte.saturating_sub(b'0'));
            magnitude = magnitude.checked_mul(10).and_then(|m| m.checked_add(digit)).ok_or(MoneyError::Overflow)?;
        }
        let signed = if negative { magnitude.checked_neg().ok_or(MoneyError::Overflow)? } else { magnitude };
        let minor = i64::try_from(signed).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { minor, currency })
    }

    /// The amount in major units as an exact decimal string, e.g. "12.34" for 1234 GBP minor units.
    pub fn to_decimal_string(self) -> String {
        let exponent = u32::from(self.currency.exponent());
        let sign = if self.minor < 0 { "-" } else { "" };
        let magnitude = self.minor.unsigned_abs();
        if exponent == 0 {
            return format!("{sign}{magnitude}");
        }
        // ISO 4217 exponents are at most 4, so 10^exponent fits and is never zero.
        let per_major = 10_u64.checked_pow(exponent).unwrap_or(u64::MAX);
        let width = usize::from(self.currency.exponent());
        let (major, minor) = (magnitude.checked_div(per_major), magnitude.checked_rem(per_major));
        format!("{sign}{}.{:0width$}", major.unwrap_or_default(), minor.unwrap_or_default())
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
// Wide (i128) arithmetic on i64 operands, to check the checked operations against it.
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn currency() -> impl Strategy<Value = Currency> {
        let all: Vec<Currency> = Currency::all().collect();
        proptest::sample::select(all)
    }

    #[test]
    fn decimal_formatting_follows_the_exponent() {
        let jpy = Currency::parse("JPY").unwrap_or(Currency::GBP);
        let kwd = Currency::parse("KWD").unwrap_or(Currency::GBP);
        assert_eq!(Money::from_minor(1234, Currency::GBP).to_decimal_string(), "12.34");
        assert_eq!(Money::from_minor(-5, Currency::GBP).to_decimal_string(), "-0.05");
        assert_eq!(Money::from_minor(1234, jpy).to_decimal_string(), "1234");
        assert_eq!(Money::from_minor(1234, kwd).to_decimal_string(), "1.234");
        assert_eq!(Money::from_minor(i64::MIN, Currency::GBP).to_decimal_string(), "-92233720368547758.08");
    }

    #[test]
    fn parse_refuses_extra_precision_and_junk() {
        assert_eq!(
            Money::parse_decimal("1.234", Currency::GBP),
            Err(MoneyError::TooPrecise { currency: Currency::GBP, exponent: 2 })
        );
        assert_eq!(Money::parse_decimal("1.230", Currency::GBP), Ok(Money::from_minor(123, Currency::GBP)));
        for junk in ["", "-", ".5", "1.", "1e3", "+1", "1,00", " 1", "0x10", "1.2.3", "NaN"] {
            assert!(Money::parse_decimal(junk, Currency::GBP).is_err(), "{junk:?}");
        }
        assert_eq!(Money::parse_decimal("92233720368547758.08", Currency::GBP), Err(MoneyError::Overflow));
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let pounds = Money::from_minor(100, Currency::GBP);
        let rupees = Money::from_minor(100, Currency::INR);
        assert_eq!(
            pounds.checked_add(rupees),
            Err(MoneyError::CurrencyMismatch { left: Currency::GBP, right: Currency::INR })
        );
        assert!(pounds.checked_sub(rupees).is_err());
        assert!(pounds.checked_cmp(rupees).is_err());
    }

    proptest! {
        #[test]
        fn decimal_roundtrip(minor in any::<i64>(), currency in currency()) {
            let money = Money::from_minor(minor, currency);
            prop_assert_eq!(Money::parse_decimal(&money.to_decimal_string(), currency), Ok(money));
        }

        #[test]
        fn checked_add_matches_wide_arithmetic(a in any::<i64>(), b in any::<i64>(), currency in currency()) {
            let wide = i128::from(a) + i128::from(b);
            let result = Money::from_minor(a, currency).checked_add(Money::from_minor(b, currency));
            match i64::try_from(wide) {
                Ok(expected) => prop_assert_eq!(result, Ok(Money::from_minor(expected, currency))),
                Err(_) => prop_assert_eq!(result, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn checked_sub_matches_wide_arithmetic(a in any::<i64>(), b in any::<i64>(), currency in currency()) {
            let wide = i128::from(a) - i128::from(b);
            let result = Money::from_minor(a, currency).checked_sub(Money::from_minor(b, currency));
            match i64::try_from(wide) {
                Ok(expected) => prop_assert_eq!(result, Ok(Money::from_minor(expected, currency))),
                Err(_) => prop_assert_eq!(result, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn checked_mul_matches_wide_arithmetic(a in any::<i64>(), q in any::<i64>(), currency in currency()) {
            let wide = i128::from(a) * i128::from(q);
            let result = Money::from_minor(a, currency).checked_mul(q);
            match i64::try_from(wide) {
                Ok(expected) => prop_assert_eq!(result, Ok(Money::from_minor(expected, currency))),
                Err(_) => prop_assert_eq!(result, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn add_then_sub_is_identity_when_in_range(a in -(1_i64 << 60)..(1_i64 << 60), b in -(1_i64 << 60)..(1_i64 << 60)) {
            let x = Money::from_minor(a, Currency::INR);
            let y = Money::from_minor(b, Currency::INR);
            prop_assert_eq!(x.checked_add(y).and_then(|s| s.checked_sub(y)), Ok(x));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}", currency in currency()) {
            let _ = Money::parse_decimal(&text, currency);
        }
    }
}
