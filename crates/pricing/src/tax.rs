//! The values a tax rule is made of. Parse, don't validate: each has one fallible
//! constructor, and code that holds one never checks it again.

use time::{Date, Month};

/// A value that does not parse, and why (the caller knows which field it came from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxError {
    #[error("a rate is 0 to 10000 basis points")]
    RateOutOfRange,
    #[error("`{0}` is not a UK VAT treatment (standard, reduced, zero or exempt)")]
    UnknownTreatment(String),
    #[error("{0} basis points has never been a GST rate (rates from 22 Sep 2025: 0, 25, 300, 500, 1800, 4000; before it also 1200 and 2800)")]
    NotAGstRate(u32),
    #[error("an HSN or SAC code is 4, 6 or 8 digits")]
    Hsn,
    #[error("a GST state code is two digits, 01 to 38 or 97 (other territory)")]
    StateCode,
}

/// A rate in basis points (1800 = 18 %), 0 to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateBps(u32);

impl RateBps {
    pub const MAX: u32 = 10_000;
    pub const ZERO: RateBps = RateBps(0);

    pub fn new(bps: u32) -> Result<RateBps, TaxError> {
        if bps <= RateBps::MAX {
            Ok(RateBps(bps))
        } else {
            Err(TaxError::RateOutOfRange)
        }
    }

    pub fn bps(self) -> u32 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// How a UK supply is treated for VAT (VAT Notice 700 §3; rates in force since
/// 4 Jan 2011: standard 20 %, reduced 5 %, zero 0 %). Exempt supplies carry no VAT and
/// are not taxable supplies, but they are still sales and are reported apart from
/// zero-rated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UkTreatment {
    Standard,
    Reduced,
    Zero,
    Exempt,
}

impl UkTreatment {
    pub fn parse(text: &str) -> Result<UkTreatment, TaxError> {
        match text {
            "standard" => Ok(UkTreatment::Standard),
            "reduced" => Ok(UkTreatment::Reduced),
            "zero" => Ok(UkTreatment::Zero),
            "exempt" => Ok(UkTreatment::Exempt),
            other => Err(TaxError::UnknownTreatment(other.chars().take(20).collect())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UkTreatment::Standard => "standard",
            UkTreatment::Reduced => "reduced",
            UkTreatment::Zero => "zero",
            UkTreatment::Exempt => "exempt",
        }
    }

    /// The VAT rate, or `None` for an exempt supply (which has no rate at all).
    pub fn rate(self) -> Option<RateBps> {
        match self {
            UkTreatment::Standard => Some(RateBps(2_000)),
            UkTreatment::Reduced => Some(RateBps(500)),
            UkTreatment::Zero => Some(RateBps(0)),
            UkTreatment::Exempt => None,
        }
    }
}

/// One row of India's GST rate table: the slabs in force from `from` until the next row.
#[derive(Debug, Clone, Copy)]
pub struct GstTableRow {
    pub from: Date,
    pub rates_bps: &'static [u32],
}

/// India's GST slabs, dated. GST began on 1 Jul 2017 with 0, 0.25, 3, 5, 12, 18 and
/// 28 %. The 56th GST Council (3 Sep 2025; CGST rate notifications 09/2025-CTR to
/// 17/2025-CTR of 17 Sep 2025) removed 12 % and 28 % and added 40 % from 22 Sep 2025
/// (research/providers.md §6). Invoices keep the rate of their tax point, so both rows
/// stay: a supply made on 21 Sep 2025 at 12 % is right, one on 22 Sep 2025 is not.
pub const GST_RATE_TABLE: [GstTableRow; 2] = [
    GstTableRow { from: date(2017, Month::July, 1), rates_bps: &[0, 25, 300, 500, 1_200, 1_800, 2_800] },
    GstTableRow { from: date(2025, Month::September, 22), rates_bps: &[0, 25, 300, 500, 1_800, 4_000] },
];

const fn date(year: i32, month: Month, day: u8) -> Date {
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => date,
        Err(_) => panic!("the GST rate table holds real dates"),
    }
}

/// The GST slabs in force at `tax_point`, or `None` before GST existed.
pub fn gst_rates_in_force(tax_point: Date) -> Option<&'static [u32]> {
    GST_RATE_TABLE.iter().rev().find(|row| row.from <= tax_point).map(|row| row.rates_bps)
}

/// A rate that is, or was, one of India's GST slabs. Whether it is in force at a sale's
/// tax point is the quote's question ([`GstRate::in_force_at`]): a product keeps its rate,
/// and a quote for a date the rate does not cover is refused rather than remapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GstRate(RateBps);

impl GstRate {
    pub fn parse(bps: u32) -> Result<GstRate, TaxError> {
        if GST_RATE_TABLE.iter().any(|row| row.rates_bps.contains(&bps)) {
            Ok(GstRate(RateBps(bps)))
        } else {
            Err(TaxError::NotAGstRate(bps))
        }
    }

    pub fn rate(self) -> RateBps {
        self.0
    }

    pub fn in_force_at(self, tax_point: Date) -> bool {
        gst_rates_in_force(tax_point).is_some_and(|rates| rates.contains(&self.0 .0))
    }
}

/// A Harmonized System of Nomenclature code (goods) or Services Accounting Code:
/// 4, 6 or 8 digits (Notification 78/2020-CT asks 4 digits up to ₹5 crore turnover, 6
/// above it; the tariff goes to 8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HsnCode(String);

impl HsnCode {
    pub fn parse(text: &str) -> Result<HsnCode, TaxError> {
        let digits = text.bytes().all(|byte| byte.is_ascii_digit());
        if digits && matches!(text.len(), 4 | 6 | 8) {
            Ok(HsnCode(text.to_string()))
        } else {
            Err(TaxError::Hsn)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's tax treatment: a UK VAT treatment, or an Indian GST rate with its HSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    Uk(UkTreatment),
    Gst { hsn: HsnCode, rate: GstRate },
}

/// The GST state and union-territory codes (the first two digits of a GSTIN, and the
/// place of supply on an invoice), with their names, as GSTN lists them
/// (mastersindia.co's list, cited in research/providers.md §6). 25 (Daman and Diu) and
/// 28 (Andhra Pradesh before 2014) still appear on older registrations. 97 is "Other
/// Territory", the place of supply of exports in returns.
const STATES: [(u8, &str); 40] = [
    (1, "Jammu and Kashmir"),
    (2, "Himachal Pradesh"),
    (3, "Punjab"),
    (4, "Chandigarh"),
    (5, "Uttarakhand"),
    (6, "Haryana"),
    (7, "Delhi"),
    (8, "Rajasthan"),
    (9, "Uttar Pradesh"),
    (10, "Bihar"),
    (11, "Sikkim"),
    (12, "Arunachal Pradesh"),
    (13, "Nagaland"),
    (14, "Manipur"),
    (15, "Mizoram"),
    (16, "Tripura"),
    (17, "Meghalaya"),
    (18, "Assam"),
    (19, "West Bengal"),
    (20, "Jharkhand"),
    (21, "Odisha"),
    (22, "Chhattisgarh"),
    (23, "Madhya Pradesh"),
    (24, "Gujarat"),
    (25, "Daman and Diu"),
    (26, "Dadra and Nagar Haveli and Daman and Diu"),
    (27, "Maharashtra"),
    (28, "Andhra Pradesh (before 2014)"),
    (29, "Karnataka"),
    (30, "Goa"),
    (31, "Lakshadweep"),
    (32, "Kerala"),
    (33, "Tamil Nadu"),
    (34, "Puducherry"),
    (35, "Andaman and Nicobar Islands"),
    (36, "Telangana"),
    (37, "Andhra Pradesh"),
    (38, "Ladakh"),
    (97, "Other Territory"),
    (99, "Centre Jurisdiction"),
];

/// A GST state code, `01` to `38`, `97` or `99`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateCode(u8);

impl StateCode {
    /// "Other Territory": where an export is supplied, for returns.
    pub const OTHER_TERRITORY: StateCode = StateCode(97);

    /// Two ASCII digits naming a state in the table.
    pub fn parse(text: &str) -> Result<StateCode, TaxError> {
        let bytes = text.as_bytes();
        let [tens @ b'0'..=b'9', ones @ b'0'..=b'9'] = bytes else {
            return Err(TaxError::StateCode);
        };
        let code = tens.wrapping_sub(b'0').wrapping_mul(10).wrapping_add(ones.wrapping_sub(b'0'));
        if STATES.iter().any(|(known, _)| *known == code) {
            Ok(StateCode(code))
        } else {
            Err(TaxError::StateCode)
        }
    }

    /// The two digits, `"07"`.
    pub fn code(self) -> String {
        format!("{:02}", self.0)
    }

    pub fn name(self) -> &'static str {
        STATES.iter().find(|(code, _)| *code == self.0).map_or("", |(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_september_2025_change_is_dated() {
        let twelve = GstRate::parse(1_200).unwrap();
        let forty = GstRate::parse(4_000).unwrap();
        let day_before = date(2025, Month::September, 21);
        let change = date(2025, Month::September, 22);
        assert!(twelve.in_force_at(day_before), "12 % on 21 Sep 2025 (providers.md appendix)");
        assert!(!twelve.in_force_at(change), "12 % on 22 Sep 2025 must be remapped");
        assert!(!forty.in_force_at(day_before));
        assert!(forty.in_force_at(change));
        assert!(!GstRate::parse(1_800).unwrap().in_force_at(date(2017, Month::June, 30)), "before GST");
        assert_eq!(GstRate::parse(1_000), Err(TaxError::NotAGstRate(1_000)));
        assert!(GstRate::parse(25).is_ok());
    }

    #[test]
    fn treatments_and_codes_parse_strictly() {
        assert_eq!(UkTreatment::parse("reduced").map(UkTreatment::rate), Ok(Some(RateBps(500))));
        assert_eq!(UkTreatment::parse("exempt").map(UkTreatment::rate), Ok(None));
        assert!(UkTreatment::parse("Standard").is_err());
        assert!(HsnCode::parse("0402").is_ok() && HsnCode::parse("61091000").is_ok());
        for bad in ["040", "04021", "04٠2", "", "0402 "] {
            assert_eq!(HsnCode::parse(bad), Err(TaxError::Hsn), "{bad:?}");
        }
        assert_eq!(StateCode::parse("27").map(StateCode::name), Ok("Maharashtra"));
        assert_eq!(StateCode::parse("38").map(StateCode::code), Ok("38".to_string()));
        for bad in ["00", "39", "7", "007", "२७", "96"] {
            assert_eq!(StateCode::parse(bad), Err(TaxError::StateCode), "{bad:?}");
        }
        assert_eq!(RateBps::new(10_001), Err(TaxError::RateOutOfRange));
    }
}
