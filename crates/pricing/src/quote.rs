//! The engine: lines and discounts in, a priced and taxed [`Quote`] out.
//!
//! The order of work, which is also the order the law reads it in:
//! 1. each line's gross (unit amount × quantity) and its own discount;
//! 2. order discounts (coupons), each on what is left, spread over the lines in
//!    proportion to them so that tax is worked out on what is really paid (a discount
//!    reduces the taxable value before tax, VAT Notice 700 §7.4; CGST Act s.15(3));
//! 3. each line's tax: which taxes apply (the seller's registration, the treatment, the
//!    place of supply), then each tax on the line's taxable value, rounded half up to the
//!    minor unit, per line and per tax;
//! 4. for a UK business buyer who chose it, the whole-invoice round-down concession;
//! 5. totals, the breakdown per rate an invoice prints, and the rules applied.
//!
//! Arithmetic is in i128 on minor units (an i64 amount times a rate at most 10^8 stays
//! far inside it) and every result is brought back to an i64 [`Money`] checked.

// Each operation below is on i128 values bounded as the module says, or is checked.
#![allow(clippy::arithmetic_side_effects)]

use till_kit::{Currency, Money};
use time::Date;

use crate::rounding::{allocate, half_up};
use crate::tax::{RateBps, StateCode, Treatment, UkTreatment};

/// A quote has 1 to 100 lines.
pub const LINES_MAX: usize = 100;
/// Units of one product on one line.
pub const QUANTITY_MAX: u32 = 1_000_000;
/// Order discounts (coupon codes) on one quote.
pub const ORDER_DISCOUNTS_MAX: usize = 5;

const BPS_PER_WHOLE: i128 = 10_000;
/// A tax's factor is `rate_bps × share_bps / SHARE_SCALE`.
const SHARE_SCALE: i128 = 100_000_000;
const WHOLE_SHARE: u32 = 10_000;
const HALF_SHARE: u32 = 5_000;

/// Who sells: the business, by its country and tax registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seller {
    /// A UK business; `vat_registered` when it has a VAT number (otherwise it charges
    /// no VAT at all).
    Uk { vat_registered: bool },
    /// An Indian business; `gstin_state` is its GSTIN's state (the first two digits),
    /// `None` when it is not registered for GST.
    India { gstin_state: Option<StateCode> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerKind {
    Business,
    Consumer,
}

/// Who buys, as far as tax cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buyer {
    pub kind: BuyerKind,
    /// In India (an export otherwise, for an Indian seller).
    pub in_india: bool,
    /// The place of supply: the buyer's state, from its state code or else its GSTIN.
    pub state: Option<StateCode>,
    /// In a Special Economic Zone: supplies to it are inter-state (IGST Act s.8(1)).
    pub sez: bool,
}

/// A discount: a percentage in basis points, or a fixed amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    Percent(RateBps),
    Amount(Money),
}

/// A discount on the whole order, from a coupon code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDiscount {
    pub code: String,
    pub discount: Discount,
}

/// How UK VAT is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VatRounding {
    /// Per line and per rate, half up to the penny (VAT Notice 700 §17.5; never down).
    #[default]
    LineHalfUp,
    /// The invoice-trader concession (VATREC12010): each line's VAT worked exactly, the
    /// total at each rate rounded down to the penny. Only for business buyers on
    /// VAT-exclusive prices: a retailer may not use it (§17.6).
    InvoiceRoundDown,
}

impl VatRounding {
    pub fn as_str(self) -> &'static str {
        match self {
            VatRounding::LineHalfUp => "line_half_up",
            VatRounding::InvoiceRoundDown => "invoice_round_down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    pub unit_amount: Money,
    /// The unit amount includes the tax (the price a consumer sees), or not.
    pub tax_inclusive: bool,
    pub quantity: u32,
    pub treatment: Treatment,
    pub discount: Option<Discount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInput {
    pub currency: Currency,
    pub seller: Seller,
    pub buyer: Buyer,
    /// The date of supply, which decides the GST rates in force.
    pub tax_point: Date,
    pub lines: Vec<LineInput>,
    pub order_discounts: Vec<OrderDiscount>,
    pub vat_rounding: VatRounding,
}

/// Why a quote cannot be made. [`PricingError::field`] names the request field and
/// [`PricingError::is_rule`] tells a value wrong in itself (400) from one refused by a
/// rule across values (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("a quote needs at least one line")]
    NoLines,
    #[error("a quote has at most {LINES_MAX} lines")]
    TooManyLines,
    #[error("at most {ORDER_DISCOUNTS_MAX} discount codes apply to one order")]
    TooManyDiscounts,
    #[error("the quantity must be 1 to {QUANTITY_MAX}")]
    Quantity { line: usize },
    #[error("the price is in {found}; the quote is in {expected}")]
    PriceCurrency { line: usize, found: Currency, expected: Currency },
    #[error("a price cannot be negative")]
    NegativePrice { line: usize },
    #[error("a percentage discount is 0 to 10000 basis points")]
    DiscountPercent { line: Option<usize> },
    #[error("a fixed discount is a non-negative amount in the quote's currency")]
    DiscountAmount { line: Option<usize> },
    #[error("the discount is larger than the line it applies to")]
    DiscountAboveLine { line: usize },
    #[error("the amounts are too large to add up")]
    Overflow { line: Option<usize> },
    #[error("the product's tax treatment is not one a seller in this country can charge")]
    TreatmentNotForSeller { line: usize },
    #[error("{rate_bps} basis points is not a GST rate in force on {tax_point} (from 22 Sep 2025: 0, 25, 300, 500, 1800, 4000)")]
    GstRateNotInForce { line: usize, rate_bps: u32, tax_point: Date },
    #[error("the place of supply is needed: the buyer's state code, or a GSTIN")]
    PlaceOfSupplyRequired,
    #[error("a tax invoice is in {home}; Till holds no exchange rates to show the tax in {home}")]
    CurrencyNotHome { home: Currency },
    #[error("{0}")]
    RoundingNotAllowed(&'static str),
}

impl PricingError {
    /// The request field at fault, as a JSON path (`lines[2].quantity`).
    pub fn field(&self) -> String {
        let line = |index: &usize, field: &str| format!("lines[{index}].{field}");
        let discount = |index: &Option<usize>, field: &str| match index {
            Some(index) => format!("lines[{index}].discount.{field}"),
            None => String::from("discount_codes"),
        };
        match self {
            PricingError::NoLines | PricingError::TooManyLines => String::from("lines"),
            PricingError::TooManyDiscounts => String::from("discount_codes"),
            PricingError::Quantity { line: index } => line(index, "quantity"),
            PricingError::PriceCurrency { line: index, .. } | PricingError::NegativePrice { line: index } => {
                line(index, "product_id")
            }
            PricingError::DiscountPercent { line } => discount(line, "percent_bps"),
            PricingError::DiscountAmount { line } => discount(line, "amount"),
            PricingError::DiscountAboveLine { line: index } => line(index, "discount.amount"),
            PricingError::Overflow { line: Some(index) } => line(index, "quantity"),
            PricingError::Overflow { line: None } => String::from("lines"),
            PricingError::TreatmentNotForSeller { line: index }
            | PricingError::GstRateNotInForce { line: index, .. } => line(index, "product_id"),
            PricingError::PlaceOfSupplyRequired => String::from("buyer.state_code"),
            PricingError::CurrencyNotHome { .. } => String::from("currency"),
            PricingError::RoundingNotAllowed(_) => String::from("vat_rounding"),
        }
    }

    /// Refused by a rule that a request's schema cannot state (422): a tax rule, a
    /// discount larger than its line, amounts too large to add up, a place of supply a
    /// GSTIN or state code must give. `false` for a value wrong in itself (400): a
    /// quantity, a discount percentage or amount out of range, too many lines or codes.
    pub fn is_rule(&self) -> bool {
        !matches!(
            self,
            PricingError::NoLines
                | PricingError::TooManyLines
                | PricingError::TooManyDiscounts
                | PricingError::Quantity { .. }
                | PricingError::DiscountPercent { .. }
                | PricingError::DiscountAmount { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaxKind {
    Vat,
    Cgst,
    Sgst,
    Igst,
}

impl TaxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaxKind::Vat => "vat",
            TaxKind::Cgst => "cgst",
            TaxKind::Sgst => "sgst",
            TaxKind::Igst => "igst",
        }
    }
}

/// How a line is taxed, for invoices and returns: zero-rated and exempt sales are
/// reported apart from each other and from taxed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// UK VAT at 20 %.
    Standard,
    /// UK VAT at 5 %.
    Reduced,
    /// UK VAT at 0 %: a taxable supply, reported.
    ZeroRated,
    /// UK exempt: no VAT and not a taxable supply.
    Exempt,
    /// Indian GST charged at the product's rate.
    Gst,
    /// An Indian export, zero-rated under a letter of undertaking (IGST Act s.16).
    GstExport,
    /// The seller is not registered: no tax is charged.
    NotRegistered,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Standard => "standard",
            Category::Reduced => "reduced",
            Category::ZeroRated => "zero_rated",
            Category::Exempt => "exempt",
            Category::Gst => "gst",
            Category::GstExport => "gst_export",
            Category::NotRegistered => "not_registered",
        }
    }
}

/// One tax on a line or a rate group. `rate_bps` is the supply's rate; `share_bps` the
/// part of it this tax levies: CGST and SGST half each (5000), IGST and VAT all (10000).
/// So the 0.25 % slab's halves (0.125 % each) stay integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaxAmount {
    pub kind: TaxKind,
    pub rate: RateBps,
    pub share_bps: u32,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedLine {
    pub quantity: u32,
    pub unit_amount: Money,
    pub tax_inclusive: bool,
    pub category: Category,
    /// The line's rate (`None` for exempt and not-registered lines).
    pub rate: Option<RateBps>,
    /// Unit amount × quantity, as priced (with tax, for a tax-inclusive price).
    pub gross_amount: Money,
    /// The line's own discount and its share of the order's.
    pub discount_amount: Money,
    /// The taxable value: what is paid for the line, less its tax.
    pub net_amount: Money,
    pub taxes: Vec<TaxAmount>,
    pub tax_amount: Money,
    pub total_amount: Money,
}

/// Lines of one category and rate, summed: the "each rate and the tax at that rate" an
/// invoice must show (VAT Regulations 1995 reg. 14(1)(k); CGST Rule 46).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateGroup {
    pub category: Category,
    pub rate: Option<RateBps>,
    pub net_amount: Money,
    pub taxes: Vec<TaxAmount>,
    pub tax_amount: Money,
}

/// A rule the engine applied, for the reader of the quote and the auditor of the invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub code: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub currency: Currency,
    pub lines: Vec<QuotedLine>,
    pub gross_total: Money,
    pub discount_total: Money,
    pub net_total: Money,
    pub tax_total: Money,
    pub total: Money,
    pub breakdown: Vec<RateGroup>,
    pub vat_rounding: VatRounding,
    /// India: where the supply is made (97 for an export); `None` in the UK.
    pub place_of_supply: Option<StateCode>,
    pub rules: Vec<Rule>,
}

/// Which taxes the seller charges on this sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    UkVat,
    UkUnregistered,
    GstIntraState { state: StateCode },
    GstInterState { seller: StateCode, place: StateCode, sez: bool },
    GstExport,
    GstUnregistered,
}

struct Rules(Vec<Rule>);

impl Rules {
    fn add(&mut self, code: &'static str, detail: impl FnOnce() -> String) {
        if !self.0.iter().any(|rule| rule.code == code) {
            self.0.push(Rule { code, detail: detail() });
        }
    }
}

fn money(minor: i128, currency: Currency, line: Option<usize>) -> Result<Money, PricingError> {
    i64::try_from(minor).map(|minor| Money::from_minor(minor, currency)).map_err(|_| PricingError::Overflow { line })
}

fn regime_of(input: &QuoteInput) -> Result<Regime, PricingError> {
    let registered_home = match input.seller {
        Seller::Uk { vat_registered: true } => Some(Currency::GBP),
        Seller::India { gstin_state: Some(_) } => Some(Currency::INR),
        _ => None,
    };
    if let Some(home) = registered_home {
        if input.currency != home {
            return Err(PricingError::CurrencyNotHome { home });
        }
    }
    Ok(match input.seller {
        Seller::Uk { vat_registered: true } => Regime::UkVat,
        Seller::Uk { vat_registered: false } => Regime::UkUnregistered,
        Seller::India { gstin_state: None } => Regime::GstUnregistered,
        Seller::India { gstin_state: Some(seller) } => {
            if !input.buyer.in_india {
                Regime::GstExport
            } else {
                let place = input.buyer.state.ok_or(PricingError::PlaceOfSupplyRequired)?;
                if input.buyer.sez || place != seller {
                    Regime::GstInterState { seller, place, sez: input.buyer.sez }
                } else {
                    Regime::GstIntraState { state: seller }
                }
            }
        }
    })
}

/// A line's category, its rate, and the taxes it carries as (kind, share) pairs.
type LineTaxes = (Category, Option<RateBps>, Vec<(TaxKind, u32)>);

fn taxes_of(regime: Regime, treatment: &Treatment, index: usize, tax_point: Date) -> Result<LineTaxes, PricingError> {
    let not_for_seller = PricingError::TreatmentNotForSeller { line: index };
    match (regime, treatment) {
        (Regime::UkVat, Treatment::Uk(uk)) => Ok(match uk {
            UkTreatment::Standard => (Category::Standard, uk.rate(), vec![(TaxKind::Vat, WHOLE_SHARE)]),
            UkTreatment::Reduced => (Category::Reduced, uk.rate(), vec![(TaxKind::Vat, WHOLE_SHARE)]),
            UkTreatment::Zero => (Category::ZeroRated, uk.rate(), vec![(TaxKind::Vat, WHOLE_SHARE)]),
            UkTreatment::Exempt => (Category::Exempt, None, vec![]),
        }),
        (Regime::UkUnregistered, Treatment::Uk(_)) | (Regime::GstUnregistered, Treatment::Gst { .. }) => {
            Ok((Category::NotRegistered, None, vec![]))
        }
        (
            Regime::GstIntraState { .. } | Regime::GstInterState { .. } | Regime::GstExport,
            Treatment::Gst { rate, .. },
        ) => {
            if !rate.in_force_at(tax_point) {
                return Err(PricingError::GstRateNotInForce { line: index, rate_bps: rate.rate().bps(), tax_point });
            }
            Ok(match regime {
                Regime::GstIntraState { .. } => {
                    (Category::Gst, Some(rate.rate()), vec![(TaxKind::Cgst, HALF_SHARE), (TaxKind::Sgst, HALF_SHARE)])
                }
                Regime::GstExport => (Category::GstExport, Some(rate.rate()), vec![]),
                _ => (Category::Gst, Some(rate.rate()), vec![(TaxKind::Igst, WHOLE_SHARE)]),
            })
        }
        _ => Err(not_for_seller),
    }
}

/// One tax on a taxable value, half up: `value × rate × share / 10^8`.
fn tax_on(value: i128, rate: RateBps, share_bps: u32) -> i128 {
    half_up(value * i128::from(rate.bps()) * i128::from(share_bps), SHARE_SCALE)
}

/// A line's taxable value and its taxes, from what is paid for it (`consideration`).
/// Returns the net and the amount of each of `taxes`, in order.
fn tax_line(consideration: i128, inclusive: bool, rate: RateBps, taxes: &[(TaxKind, u32)]) -> (i128, Vec<i128>, bool) {
    if taxes.is_empty() {
        return (consideration, vec![], false);
    }
    let amounts_on = |net: i128| taxes.iter().map(|(_, share)| tax_on(net, rate, *share)).collect::<Vec<i128>>();
    if !inclusive {
        return (consideration, amounts_on(consideration), false);
    }
    let rate_bps = i128::from(rate.bps());
    // The tax in a tax-inclusive price is its tax fraction: rate / (1 + rate), which is
    // 1/6 at 20 % and 1/21 at 5 % (VAT Notice 700 §4.5), rounded half up.
    let fraction = half_up(consideration * rate_bps, BPS_PER_WHOLE + rate_bps);
    if taxes.len() == 1 {
        return (consideration - fraction, vec![fraction], false);
    }
    // CGST and SGST are each worked on the taxable value and rounded alone, so their sum
    // can miss the price by a paisa. Of the taxable values a paisa either side, take one
    // whose taxes make the price exactly; if none does, keep the fraction's and let the
    // line's total be its taxable value plus its taxes, as the tax invoice shows them.
    let first = consideration - fraction;
    for net in [first, first - 1, first + 1] {
        if (0..=consideration).contains(&net) {
            let amounts = amounts_on(net);
            if net + amounts.iter().sum::<i128>() == consideration {
                return (net, amounts, false);
            }
        }
    }
    (first, amounts_on(first), true)
}

/// Prices and taxes a sale. Pure: the same input always gives the same quote.
pub fn quote(input: &QuoteInput) -> Result<Quote, PricingError> {
    if input.lines.is_empty() {
        return Err(PricingError::NoLines);
    }
    if input.lines.len() > LINES_MAX {
        return Err(PricingError::TooManyLines);
    }
    if input.order_discounts.len() > ORDER_DISCOUNTS_MAX {
        return Err(PricingError::TooManyDiscounts);
    }
    let currency = input.currency;
    let regime = regime_of(input)?;
    let mut rules = Rules(Vec::new());

    // 1. Gross amounts and each line's own discount.
    let mut gross: Vec<i128> = Vec::with_capacity(input.lines.len());
    let mut line_discount: Vec<i128> = Vec::with_capacity(input.lines.len());
    for (index, line) in input.lines.iter().enumerate() {
        if line.quantity == 0 || line.quantity > QUANTITY_MAX {
            return Err(PricingError::Quantity { line: index });
        }
        if line.unit_amount.currency() != currency {
            return Err(PricingError::PriceCurrency {
                line: index,
                found: line.unit_amount.currency(),
                expected: currency,
            });
        }
        if line.unit_amount.is_negative() {
            return Err(PricingError::NegativePrice { line: index });
        }
        let amount = i128::from(line.unit_amount.minor()) * i128::from(line.quantity);
        money(amount, currency, Some(index))?;
        let discount = match line.discount {
            None => 0,
            Some(Discount::Percent(percent)) => half_up(amount * i128::from(percent.bps()), BPS_PER_WHOLE),
            Some(Discount::Amount(fixed)) => {
                if fixed.currency() != currency || fixed.is_negative() {
                    return Err(PricingError::DiscountAmount { line: Some(index) });
                }
                let fixed = i128::from(fixed.minor());
                if fixed > amount {
                    return Err(PricingError::DiscountAboveLine { line: index });
                }
                fixed
            }
        };
        gross.push(amount);
        line_discount.push(discount);
    }
    if line_discount.iter().any(|discount| *discount > 0) {
        rules.add("line_discount", || String::from("A line's discount comes off its gross amount, before tax."));
    }

    // 2. Order discounts, each on what is left after the ones before it.
    let after_lines: Vec<i128> = gross.iter().zip(&line_discount).map(|(gross, discount)| gross - discount).collect();
    let subtotal: i128 = after_lines.iter().sum();
    money(subtotal, currency, None)?;
    let mut order_discount: i128 = 0;
    for coupon in &input.order_discounts {
        let left = subtotal - order_discount;
        let amount = match coupon.discount {
            Discount::Percent(percent) => half_up(left * i128::from(percent.bps()), BPS_PER_WHOLE),
            Discount::Amount(fixed) => {
                if fixed.currency() != currency || fixed.is_negative() {
                    return Err(PricingError::DiscountAmount { line: None });
                }
                let fixed = i128::from(fixed.minor());
                if fixed > left {
                    rules.add("discount_capped", || {
                        format!(
                            "The discount of code {} is more than the order; it takes the order to zero, never below.",
                            coupon.code
                        )
                    });
                }
                fixed.min(left)
            }
        };
        order_discount += amount;
        rules.add("discount_code", || String::from("Order discounts come off the order before tax, spread over the lines in proportion to them (largest remainder)."));
    }
    let shares = allocate(order_discount, &after_lines);

    // 3. Each line's taxes.
    let mut lines: Vec<QuotedLine> = Vec::with_capacity(input.lines.len());
    let mut exact_vat: Vec<Option<i128>> = Vec::with_capacity(input.lines.len());
    for (index, line) in input.lines.iter().enumerate() {
        let (category, rate, kinds) = taxes_of(regime, &line.treatment, index, input.tax_point)?;
        let consideration = after_lines[index] - shares[index];
        let rate_or_zero = rate.unwrap_or(RateBps::ZERO);
        let (net, amounts, adjusted) = tax_line(consideration, line.tax_inclusive, rate_or_zero, &kinds);
        if adjusted {
            rules.add("gst_inclusive_paisa", || String::from("CGST and SGST, each rounded on the taxable value, miss a tax-inclusive price by a paisa on a line: its total is its taxable value plus its taxes."));
        }
        let is_vat = kinds.first().is_some_and(|(kind, _)| *kind == TaxKind::Vat);
        exact_vat.push(is_vat.then(|| net * i128::from(rate_or_zero.bps())));
        let taxes = kinds
            .iter()
            .zip(&amounts)
            .map(|((kind, share), amount)| {
                Ok(TaxAmount {
                    kind: *kind,
                    rate: rate_or_zero,
                    share_bps: *share,
                    amount: money(*amount, currency, Some(index))?,
                })
            })
            .collect::<Result<Vec<TaxAmount>, PricingError>>()?;
        let tax: i128 = amounts.iter().sum();
        lines.push(QuotedLine {
            quantity: line.quantity,
            unit_amount: line.unit_amount,
            tax_inclusive: line.tax_inclusive,
            category,
            rate,
            gross_amount: money(gross[index], currency, Some(index))?,
            discount_amount: money(line_discount[index] + shares[index], currency, Some(index))?,
            net_amount: money(net, currency, Some(index))?,
            taxes,
            tax_amount: money(tax, currency, Some(index))?,
            total_amount: money(net + tax, currency, Some(index))?,
        });
    }

    // 4. The invoice-trader concession, when asked for and allowed.
    if input.vat_rounding == VatRounding::InvoiceRoundDown {
        if regime != Regime::UkVat {
            return Err(PricingError::RoundingNotAllowed("the invoice round-down concession is for UK VAT invoices"));
        }
        if input.buyer.kind != BuyerKind::Business {
            return Err(PricingError::RoundingNotAllowed(
                "the invoice round-down concession is for business buyers; a retailer rounds each line half up (VAT Notice 700 §17.6)",
            ));
        }
        if input.lines.iter().zip(&exact_vat).any(|(line, exact)| line.tax_inclusive && exact.is_some()) {
            return Err(PricingError::RoundingNotAllowed(
                "the invoice round-down concession applies to VAT-exclusive prices; a VAT-inclusive price is rounded per line",
            ));
        }
        round_down_per_rate(&mut lines, &exact_vat, currency)?;
        rules.add("uk_vat_invoice_round_down", || String::from("VAT is worked exactly on each line and the total at each rate is rounded down to the penny: the invoice-trader concession (VAT Notice 700 §17.5, VATREC12010), chosen for this business buyer."));
    }

    rules_for_regime(regime, &lines, input, &mut rules);
    let place_of_supply = match regime {
        Regime::GstIntraState { state } => Some(state),
        Regime::GstInterState { place, .. } => Some(place),
        Regime::GstExport => Some(StateCode::OTHER_TERRITORY),
        _ => None,
    };

    // 5. Totals and the breakdown per rate.
    let sum = |pick: fn(&QuotedLine) -> Money| -> Result<Money, PricingError> {
        let total: i128 = lines.iter().map(|line| i128::from(pick(line).minor())).sum();
        money(total, currency, None)
    };
    Ok(Quote {
        currency,
        gross_total: sum(|line| line.gross_amount)?,
        discount_total: sum(|line| line.discount_amount)?,
        net_total: sum(|line| line.net_amount)?,
        tax_total: sum(|line| line.tax_amount)?,
        total: sum(|line| line.total_amount)?,
        breakdown: breakdown_of(&lines, currency)?,
        vat_rounding: input.vat_rounding,
        place_of_supply,
        rules: rules.0,
        lines,
    })
}

/// The concession: at each VAT rate, the exact VAT of its lines summed and rounded down,
/// then given back to the lines in proportion to their exact VAT (largest remainder), so
/// that the lines still add up to the invoice.
fn round_down_per_rate(
    lines: &mut [QuotedLine],
    exact_vat: &[Option<i128>],
    currency: Currency,
) -> Result<(), PricingError> {
    let mut rates: Vec<RateBps> =
        lines.iter().zip(exact_vat).filter(|(_, exact)| exact.is_some()).filter_map(|(line, _)| line.rate).collect();
    rates.sort();
    rates.dedup();
    for rate in rates {
        let members: Vec<usize> =
            (0..lines.len()).filter(|index| exact_vat[*index].is_some() && lines[*index].rate == Some(rate)).collect();
        let exact: Vec<i128> = members.iter().map(|index| exact_vat[*index].unwrap_or(0)).collect();
        let total = exact.iter().sum::<i128>() / BPS_PER_WHOLE;
        for (index, vat) in members.iter().zip(allocate(total, &exact)) {
            let line = &mut lines[*index];
            let vat_money = money(vat, currency, Some(*index))?;
            if let Some(tax) = line.taxes.first_mut() {
                tax.amount = vat_money;
            }
            line.tax_amount = vat_money;
            line.total_amount = money(i128::from(line.net_amount.minor()) + vat, currency, Some(*index))?;
        }
    }
    Ok(())
}

fn rules_for_regime(regime: Regime, lines: &[QuotedLine], input: &QuoteInput, rules: &mut Rules) {
    let has = |category: Category| lines.iter().any(|line| line.category == category);
    match regime {
        Regime::UkVat => {
            if input.vat_rounding == VatRounding::LineHalfUp {
                rules.add("uk_vat_line_half_up", || String::from("VAT is worked out per line and per rate and rounded half up to the penny, never down (VAT Notice 700 §17.5)."));
            }
            if lines.iter().any(|line| line.tax_inclusive && !line.taxes.is_empty()) {
                rules.add("uk_vat_fraction", || String::from("The VAT in a VAT-inclusive price is its VAT fraction: 1/6 at 20 %, 1/21 at 5 % (VAT Notice 700 §4.5)."));
            }
            if has(Category::ZeroRated) {
                rules.add("uk_vat_zero_rated", || {
                    String::from("Zero-rated lines are taxable supplies at 0 % and are reported apart.")
                });
            }
            if has(Category::Exempt) {
                rules.add("uk_vat_exempt", || {
                    String::from("Exempt lines carry no VAT, are not taxable supplies, and are reported apart.")
                });
            }
        }
        Regime::UkUnregistered => {
            rules.add("seller_not_vat_registered", || {
                String::from("The business has no VAT number: it charges no VAT.")
            });
        }
        Regime::GstUnregistered => {
            rules.add("seller_not_gst_registered", || String::from("The business has no GSTIN: it charges no GST."));
        }
        Regime::GstIntraState { state } => {
            rules.add("gst_intra_state", || format!("The seller's state and the place of supply are both {} ({}): CGST and SGST at half the rate each, each worked on the taxable value and rounded half up to the paisa (IGST Act s.8).", state.code(), state.name()));
        }
        Regime::GstInterState { seller, place, sez: false } => {
            rules.add("gst_inter_state", || format!("The seller is in {} ({}) and the place of supply is {} ({}): IGST at the full rate, rounded half up to the paisa (IGST Act s.7).", seller.code(), seller.name(), place.code(), place.name()));
        }
        Regime::GstInterState { place, sez: true, .. } => {
            rules.add("gst_sez_inter_state", || format!("The buyer is in a Special Economic Zone in {} ({}): a supply to an SEZ is inter-state even within one state, so IGST (IGST Act s.8(1) proviso).", place.code(), place.name()));
        }
        Regime::GstExport => {
            rules.add("gst_export", || String::from("The buyer is outside India: an export, zero-rated under a letter of undertaking (IGST Act s.16), place of supply 97 (Other Territory)."));
        }
    }
}

fn breakdown_of(lines: &[QuotedLine], currency: Currency) -> Result<Vec<RateGroup>, PricingError> {
    let mut groups: Vec<RateGroup> = Vec::new();
    for line in lines {
        let position = groups.iter().position(|group| group.category == line.category && group.rate == line.rate);
        let group = match position {
            Some(position) => &mut groups[position],
            None => {
                groups.push(RateGroup {
                    category: line.category,
                    rate: line.rate,
                    net_amount: Money::zero(currency),
                    taxes: line.taxes.iter().map(|tax| TaxAmount { amount: Money::zero(currency), ..*tax }).collect(),
                    tax_amount: Money::zero(currency),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        let overflow = |_| PricingError::Overflow { line: None };
        group.net_amount = group.net_amount.checked_add(line.net_amount).map_err(overflow)?;
        group.tax_amount = group.tax_amount.checked_add(line.tax_amount).map_err(overflow)?;
        for (sum, tax) in group.taxes.iter_mut().zip(&line.taxes) {
            sum.amount = sum.amount.checked_add(tax.amount).map_err(overflow)?;
        }
    }
    groups.sort_by_key(|group| (group.category, group.rate));
    Ok(groups)
}

#[cfg(test)]
mod tests;
