//! Worked cases, one per rule, and the properties every quote keeps.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use till_kit::{Currency, Money};
use time::macros::date;

use super::*;
use crate::tax::{GstRate, HsnCode};

fn gbp(minor: i64) -> Money {
    Money::from_minor(minor, Currency::GBP)
}

fn inr(minor: i64) -> Money {
    Money::from_minor(minor, Currency::INR)
}

fn uk(treatment: &str, unit: i64, quantity: u32, inclusive: bool) -> LineInput {
    LineInput {
        unit_amount: gbp(unit),
        tax_inclusive: inclusive,
        quantity,
        treatment: Treatment::Uk(UkTreatment::parse(treatment).unwrap()),
        discount: None,
    }
}

fn gst(rate_bps: u32, unit: i64, quantity: u32, inclusive: bool) -> LineInput {
    LineInput {
        unit_amount: inr(unit),
        tax_inclusive: inclusive,
        quantity,
        treatment: Treatment::Gst { hsn: HsnCode::parse("6109").unwrap(), rate: GstRate::parse(rate_bps).unwrap() },
        discount: None,
    }
}

fn consumer() -> Buyer {
    Buyer { kind: BuyerKind::Consumer, in_india: false, state: None, sez: false }
}

fn in_state(code: &str) -> Buyer {
    Buyer { kind: BuyerKind::Business, in_india: true, state: Some(StateCode::parse(code).unwrap()), sez: false }
}

fn uk_sale(lines: Vec<LineInput>) -> QuoteInput {
    QuoteInput {
        currency: Currency::GBP,
        seller: Seller::Uk { vat_registered: true },
        buyer: consumer(),
        tax_point: date!(2026 - 12 - 03),
        lines,
        order_discounts: vec![],
        vat_rounding: VatRounding::LineHalfUp,
    }
}

/// A Maharashtra (27) seller.
fn india_sale(buyer: Buyer, lines: Vec<LineInput>) -> QuoteInput {
    QuoteInput {
        currency: Currency::INR,
        seller: Seller::India { gstin_state: Some(StateCode::parse("27").unwrap()) },
        buyer,
        tax_point: date!(2026 - 12 - 03),
        lines,
        order_discounts: vec![],
        vat_rounding: VatRounding::LineHalfUp,
    }
}

fn taxes(line: &QuotedLine) -> Vec<(&'static str, i64)> {
    line.taxes.iter().map(|tax| (tax.kind.as_str(), tax.amount.minor())).collect()
}

fn codes(quote: &Quote) -> Vec<&'static str> {
    quote.rules.iter().map(|rule| rule.code).collect()
}

#[test]
fn uk_vat_exclusive_at_each_rate() {
    let quote = quote(&uk_sale(vec![
        uk("standard", 1_000, 3, false),
        uk("reduced", 10, 1, false),
        uk("zero", 250, 2, false),
        uk("exempt", 5_000, 1, false),
    ]))
    .unwrap();
    let [standard, reduced, zero, exempt] = &quote.lines[..] else { panic!("four lines") };
    assert_eq!(
        (standard.net_amount.minor(), taxes(standard), standard.total_amount.minor()),
        (3_000, vec![("vat", 600)], 3_600)
    );
    // 10p at 5 % is 0.5p: half up to 1p, never down.
    assert_eq!(taxes(reduced), vec![("vat", 1)]);
    assert_eq!((zero.category, taxes(zero)), (Category::ZeroRated, vec![("vat", 0)]));
    assert_eq!((exempt.category, exempt.taxes.len(), exempt.tax_amount.minor()), (Category::Exempt, 0, 0));
    assert_eq!((quote.net_total.minor(), quote.tax_total.minor(), quote.total.minor()), (8_510, 601, 9_111));
    // Zero-rated and exempt sales are reported apart.
    let categories: Vec<Category> = quote.breakdown.iter().map(|group| group.category).collect();
    assert_eq!(categories, vec![Category::Standard, Category::Reduced, Category::ZeroRated, Category::Exempt]);
    assert!(codes(&quote).contains(&"uk_vat_zero_rated") && codes(&quote).contains(&"uk_vat_exempt"));
}

#[test]
fn uk_vat_inclusive_is_the_vat_fraction_rounded_half_up() {
    let quote = quote(&uk_sale(vec![
        uk("standard", 100, 1, true),
        uk("reduced", 210, 1, true),
        uk("standard", 5_206, 1, true),
    ]))
    .unwrap();
    // £1.00 at 20 %: 100/6 = 16.67p → 17p, net 83p.
    assert_eq!((quote.lines[0].net_amount.minor(), quote.lines[0].tax_amount.minor()), (83, 17));
    // £2.10 at 5 %: 210/21 = 10p exactly.
    assert_eq!((quote.lines[1].net_amount.minor(), quote.lines[1].tax_amount.minor()), (200, 10));
    // £52.06 at 20 %: 867.67p → 868p (a line is never rounded down to the penny).
    assert_eq!(quote.lines[2].tax_amount.minor(), 868);
    for line in &quote.lines {
        assert_eq!(line.total_amount, line.gross_amount, "an inclusive price is what is paid");
    }
    assert!(codes(&quote).contains(&"uk_vat_fraction"));
}

#[test]
fn the_invoice_round_down_is_for_business_buyers_on_exclusive_prices() {
    // Three lines of 3p at 20 %: 0.6p each rounds up to 1p per line (3p); worked exactly
    // the invoice's VAT is 1.8p, rounded down to 1p.
    let mut sale = uk_sale(vec![uk("standard", 3, 1, false), uk("standard", 3, 1, false), uk("standard", 3, 1, false)]);
    assert_eq!(quote(&sale).unwrap().tax_total.minor(), 3);
    sale.vat_rounding = VatRounding::InvoiceRoundDown;
    assert!(matches!(quote(&sale), Err(PricingError::RoundingNotAllowed(_))), "never for a consumer");
    sale.buyer.kind = BuyerKind::Business;
    let rounded = quote(&sale).unwrap();
    assert_eq!(rounded.tax_total.minor(), 1);
    assert_eq!(rounded.lines.iter().map(|line| line.tax_amount.minor()).sum::<i64>(), 1);
    assert_eq!(rounded.breakdown[0].tax_amount.minor(), 1);
    assert!(codes(&rounded).contains(&"uk_vat_invoice_round_down"));
    sale.lines[0].tax_inclusive = true;
    let refused = quote(&sale).unwrap_err();
    assert_eq!((refused.field(), refused.is_rule()), (String::from("vat_rounding"), true));
}

#[test]
fn cgst_and_sgst_are_rounded_apart_and_can_differ_from_igst_by_a_paisa() {
    // 50 paise at 5 %: IGST 2.5 → 3 paise; CGST and SGST 1.25 → 1 paisa each.
    let intra = quote(&india_sale(in_state("27"), vec![gst(500, 50, 1, false)])).unwrap();
    let inter = quote(&india_sale(in_state("29"), vec![gst(500, 50, 1, false)])).unwrap();
    assert_eq!(taxes(&intra.lines[0]), vec![("cgst", 1), ("sgst", 1)]);
    assert_eq!(taxes(&inter.lines[0]), vec![("igst", 3)]);
    assert_eq!(intra.lines[0].taxes[0].share_bps, 5_000);
    assert_eq!(intra.place_of_supply.map(StateCode::code), Some(String::from("27")));
    assert_eq!(inter.place_of_supply.map(StateCode::code), Some(String::from("29")));
    assert!(codes(&intra).contains(&"gst_intra_state") && codes(&inter).contains(&"gst_inter_state"));
    // The 0.25 % slab's halves stay whole numbers: share 5000 of 25 bps.
    let quarter = quote(&india_sale(in_state("27"), vec![gst(25, 1_000_000, 1, false)])).unwrap();
    assert_eq!(taxes(&quarter.lines[0]), vec![("cgst", 1_250), ("sgst", 1_250)]);
}

#[test]
fn a_tax_inclusive_gst_price_is_split_so_it_adds_up() {
    // ₹100.00 at 18 % within a state: the fraction gives 8475 taxable, whose halves
    // (762.75 → 763 each) would make ₹100.01; 8474 makes ₹100.00 exactly.
    let quote = quote(&india_sale(in_state("27"), vec![gst(1_800, 10_000, 1, true)])).unwrap();
    assert_eq!(
        (quote.lines[0].net_amount.minor(), taxes(&quote.lines[0])),
        (8_474, vec![("cgst", 763), ("sgst", 763)])
    );
    assert_eq!(quote.total.minor(), 10_000);
}

#[test]
fn an_sez_buyer_is_inter_state_and_an_export_is_zero_rated() {
    let mut sez = in_state("27");
    sez.sez = true;
    let to_sez = quote(&india_sale(sez, vec![gst(1_800, 10_000, 1, false)])).unwrap();
    assert_eq!(taxes(&to_sez.lines[0]), vec![("igst", 1_800)]);
    assert!(codes(&to_sez).contains(&"gst_sez_inter_state"));
    let export = quote(&india_sale(consumer(), vec![gst(1_800, 10_000, 1, false)])).unwrap();
    assert_eq!((export.lines[0].category, export.tax_total.minor()), (Category::GstExport, 0));
    assert_eq!(export.place_of_supply, Some(StateCode::OTHER_TERRITORY));
    let no_state = Buyer { state: None, ..in_state("27") };
    assert_eq!(
        quote(&india_sale(no_state, vec![gst(1_800, 100, 1, false)])).unwrap_err(),
        PricingError::PlaceOfSupplyRequired
    );
}

#[test]
fn the_september_2025_rate_change_follows_the_tax_point() {
    let mut sale = india_sale(in_state("29"), vec![gst(1_200, 10_000, 1, false)]);
    sale.tax_point = date!(2025 - 09 - 21);
    assert_eq!(taxes(&quote(&sale).unwrap().lines[0]), vec![("igst", 1_200)]);
    sale.tax_point = date!(2025 - 09 - 22);
    let refused = quote(&sale).unwrap_err();
    assert!(matches!(refused, PricingError::GstRateNotInForce { line: 0, rate_bps: 1_200, .. }));
    assert_eq!((refused.field(), refused.is_rule()), (String::from("lines[0].product_id"), true));
    let mut forty = india_sale(in_state("29"), vec![gst(4_000, 10_000, 1, false)]);
    assert_eq!(quote(&forty).unwrap().tax_total.minor(), 4_000);
    forty.tax_point = date!(2025 - 09 - 21);
    assert!(quote(&forty).is_err());
}

#[test]
fn discounts_come_off_before_tax() {
    let mut line = uk("standard", 10_000, 1, false);
    line.discount = Some(Discount::Percent(RateBps::new(1_000).unwrap()));
    let mut sale = uk_sale(vec![line, uk("zero", 1_000, 1, false)]);
    let quoted = quote(&sale).unwrap();
    assert_eq!((quoted.lines[0].net_amount.minor(), quoted.lines[0].tax_amount.minor()), (9_000, 1_800));
    // A £5 coupon over £90 and £10 of lines: £4.50 and 50p.
    sale.order_discounts = vec![OrderDiscount { code: "FIVER".into(), discount: Discount::Amount(gbp(500)) }];
    let coupon = quote(&sale).unwrap();
    assert_eq!(coupon.lines[0].discount_amount.minor(), 1_000 + 450);
    assert_eq!(coupon.lines[1].discount_amount.minor(), 50);
    assert_eq!(coupon.lines[0].tax_amount.minor(), 1_710);
    assert_eq!(coupon.discount_total.minor(), 1_500);
    // Percent coupons apply one after another; a fixed one never goes below zero.
    sale.order_discounts = vec![
        OrderDiscount { code: "TEN".into(), discount: Discount::Percent(RateBps::new(1_000).unwrap()) },
        OrderDiscount { code: "TEN".into(), discount: Discount::Percent(RateBps::new(1_000).unwrap()) },
        OrderDiscount { code: "HUGE".into(), discount: Discount::Amount(gbp(1_000_000)) },
    ];
    let free = quote(&sale).unwrap();
    assert_eq!((free.total.minor(), free.tax_total.minor()), (0, 0));
    assert!(codes(&free).contains(&"discount_capped"));
}

#[test]
fn unregistered_sellers_charge_no_tax_and_registered_ones_invoice_at_home() {
    let mut sale = uk_sale(vec![uk("standard", 1_000, 1, false)]);
    sale.seller = Seller::Uk { vat_registered: false };
    let quoted = quote(&sale).unwrap();
    assert_eq!((quoted.lines[0].category, quoted.tax_total.minor()), (Category::NotRegistered, 0));
    sale.seller = Seller::Uk { vat_registered: true };
    sale.currency = Currency::EUR;
    sale.lines[0].unit_amount = Money::from_minor(1_000, Currency::EUR);
    assert_eq!(quote(&sale).unwrap_err(), PricingError::CurrencyNotHome { home: Currency::GBP });
    let wrong = quote(&uk_sale(vec![gst(1_800, 100, 1, false)])).unwrap_err();
    assert!(matches!(wrong, PricingError::PriceCurrency { .. }));
    let mut gst_in_uk = uk_sale(vec![gst(1_800, 100, 1, false)]);
    gst_in_uk.lines[0].unit_amount = gbp(100);
    assert_eq!(quote(&gst_in_uk).unwrap_err(), PricingError::TreatmentNotForSeller { line: 0 });
}

#[test]
fn bad_lines_name_their_field() {
    let cases: Vec<(LineInput, &str)> = vec![
        (uk("standard", 100, 0, false), "lines[0].quantity"),
        (uk("standard", 100, QUANTITY_MAX + 1, false), "lines[0].quantity"),
        (uk("standard", i64::MAX / 2, 3, false), "lines[0].quantity"),
        (uk("standard", -1, 1, false), "lines[0].product_id"),
        (
            LineInput { discount: Some(Discount::Amount(gbp(101))), ..uk("standard", 100, 1, false) },
            "lines[0].discount.amount",
        ),
        (
            LineInput { discount: Some(Discount::Amount(gbp(-1))), ..uk("standard", 100, 1, false) },
            "lines[0].discount.amount",
        ),
    ];
    for (line, field) in cases {
        let error = quote(&uk_sale(vec![line.clone()])).unwrap_err();
        assert_eq!(error.field(), field, "{line:?}: {error}");
        // A quantity or a negative amount is wrong in itself; a discount above its line, a
        // negative price or a line too large to add up only against the rest.
        let rule = matches!(
            error,
            PricingError::DiscountAboveLine { .. } | PricingError::NegativePrice { .. } | PricingError::Overflow { .. }
        );
        assert_eq!(error.is_rule(), rule, "{error}");
    }
    assert_eq!(quote(&uk_sale(vec![])).unwrap_err(), PricingError::NoLines);
    let many = uk_sale(vec![uk("standard", 1, 1, false); LINES_MAX + 1]);
    assert_eq!(quote(&many).unwrap_err(), PricingError::TooManyLines);
    // Lines that each fit but whose sum does not.
    let big = uk_sale(vec![
        uk("standard", i64::MAX / 4, 2, false),
        uk("standard", i64::MAX / 4, 2, false),
        uk("standard", i64::MAX / 4, 2, false),
    ]);
    assert!(matches!(quote(&big).unwrap_err(), PricingError::Overflow { .. }));
}

fn arbitrary_line(uk_seller: bool) -> impl Strategy<Value = LineInput> {
    let treatment = if uk_seller {
        prop_oneof![Just("standard"), Just("reduced"), Just("zero"), Just("exempt")]
            .prop_map(|name| Treatment::Uk(UkTreatment::parse(name).unwrap()))
            .boxed()
    } else {
        prop_oneof![Just(0_u32), Just(25), Just(300), Just(500), Just(1_800), Just(4_000)]
            .prop_map(|rate| Treatment::Gst {
                hsn: HsnCode::parse("6109").unwrap(),
                rate: GstRate::parse(rate).unwrap(),
            })
            .boxed()
    };
    let currency = if uk_seller { Currency::GBP } else { Currency::INR };
    (0_i64..10_000_000, 1_u32..1_000, any::<bool>(), treatment, 0_u32..4, 0_u32..=10_000, 0_i64..=100).prop_map(
        move |(unit, quantity, inclusive, treatment, discount_kind, percent, share)| {
            let gross = unit * i64::from(quantity);
            let discount = match discount_kind {
                1 => Some(Discount::Percent(RateBps::new(percent).unwrap())),
                2 => Some(Discount::Amount(Money::from_minor(gross * share / 100, currency))),
                _ => None,
            };
            LineInput {
                unit_amount: Money::from_minor(unit, currency),
                tax_inclusive: inclusive,
                quantity,
                treatment,
                discount,
            }
        },
    )
}

fn arbitrary_sale() -> impl Strategy<Value = QuoteInput> {
    let uk_sale_strategy =
        (proptest::collection::vec(arbitrary_line(true), 1..12), any::<bool>()).prop_map(|(lines, business)| {
            let mut sale = uk_sale(lines);
            if business && sale.lines.iter().all(|line| !line.tax_inclusive) {
                sale.buyer.kind = BuyerKind::Business;
                sale.vat_rounding = VatRounding::InvoiceRoundDown;
            }
            sale
        });
    let india =
        (proptest::collection::vec(arbitrary_line(false), 1..12), prop_oneof![Just("27"), Just("29")], any::<bool>())
            .prop_map(|(lines, state, sez)| india_sale(Buyer { sez, ..in_state(state) }, lines));
    let coupons = proptest::collection::vec((0_u32..=5_000, 0_i64..100_000, any::<bool>()), 0..3);
    (prop_oneof![uk_sale_strategy, india], coupons).prop_map(|(mut sale, coupons)| {
        let currency = sale.currency;
        sale.order_discounts = coupons
            .into_iter()
            .map(|(percent, amount, is_percent)| OrderDiscount {
                code: "CODE".into(),
                discount: if is_percent {
                    Discount::Percent(RateBps::new(percent).unwrap())
                } else {
                    Discount::Amount(Money::from_minor(amount, currency))
                },
            })
            .collect();
        sale
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_quote_adds_up(sale in arbitrary_sale()) {
        let quoted = quote(&sale).unwrap();
        let sum = |pick: fn(&QuotedLine) -> i64| quoted.lines.iter().map(pick).sum::<i64>();
        prop_assert_eq!(quoted.total.minor(), sum(|line| line.total_amount.minor()));
        prop_assert_eq!(quoted.tax_total.minor(), sum(|line| line.tax_amount.minor()));
        prop_assert_eq!(quoted.net_total.minor(), sum(|line| line.net_amount.minor()));
        prop_assert!(quoted.discount_total.minor() <= quoted.gross_total.minor());
        for (line, input) in quoted.lines.iter().zip(&sale.lines) {
            prop_assert!(line.tax_amount.minor() >= 0 && line.net_amount.minor() >= 0);
            prop_assert!(line.taxes.iter().all(|tax| tax.amount.minor() >= 0));
            prop_assert_eq!(line.tax_amount.minor(), line.taxes.iter().map(|tax| tax.amount.minor()).sum::<i64>());
            prop_assert_eq!(line.net_amount.minor() + line.tax_amount.minor(), line.total_amount.minor());
            let paid = line.gross_amount.minor() - line.discount_amount.minor();
            prop_assert!(paid >= 0);
            if input.tax_inclusive {
                // Exact, but for CGST and SGST rounded apart, which may miss by a paisa.
                let slack = if line.taxes.len() == 2 { 1 } else { 0 };
                prop_assert!((line.total_amount.minor() - paid).abs() <= slack);
            } else {
                prop_assert_eq!(line.net_amount.minor(), paid);
                if sale.vat_rounding == VatRounding::LineHalfUp {
                    for tax in &line.taxes {
                        // Within half a minor unit of the exact tax: half up.
                        let exact = i128::from(line.net_amount.minor()) * i128::from(tax.rate.bps()) * i128::from(tax.share_bps);
                        let shown = i128::from(tax.amount.minor()) * SHARE_SCALE;
                        prop_assert!(2 * (shown - exact) <= SHARE_SCALE && 2 * (shown - exact) > -SHARE_SCALE);
                    }
                }
            }
        }
        let groups_net: i64 = quoted.breakdown.iter().map(|group| group.net_amount.minor()).sum();
        let groups_tax: i64 = quoted.breakdown.iter().map(|group| group.tax_amount.minor()).sum();
        prop_assert_eq!((groups_net, groups_tax), (quoted.net_total.minor(), quoted.tax_total.minor()));
        for group in &quoted.breakdown {
            prop_assert_eq!(group.tax_amount.minor(), group.taxes.iter().map(|tax| tax.amount.minor()).sum::<i64>());
        }
    }

    #[test]
    fn the_round_down_never_charges_more_than_the_exact_vat(lines in proptest::collection::vec(arbitrary_line(true), 1..12)) {
        let mut sale = uk_sale(lines.into_iter().map(|line| LineInput { tax_inclusive: false, ..line }).collect());
        sale.buyer.kind = BuyerKind::Business;
        sale.vat_rounding = VatRounding::InvoiceRoundDown;
        let quoted = quote(&sale).unwrap();
        for group in quoted.breakdown.iter().filter(|group| group.category == Category::Standard || group.category == Category::Reduced) {
            let exact = i128::from(group.net_amount.minor()) * i128::from(group.rate.map_or(0, RateBps::bps));
            prop_assert!(i128::from(group.tax_amount.minor()) * 10_000 <= exact);
            prop_assert!((i128::from(group.tax_amount.minor()) + 1) * 10_000 > exact);
        }
    }
}
