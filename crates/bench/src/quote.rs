#![allow(clippy::float_arithmetic)] // Times and ratios: measurements, never money.

//! `till-bench quote`: the pricing engine alone, in process. The commerce issue asks a
//! quote of 10 lines to take at most 20 µs; this measures two such sales — a UK one
//! (every VAT treatment, inclusive and exclusive prices, a line discount and a coupon)
//! and an Indian one within the seller's state (CGST and SGST on tax-inclusive prices,
//! where each line searches its taxable value to the paisa) — and, as the same run's
//! baseline, the cost of only cloning the input the engine is given, which every call
//! pays too.

use std::hint::black_box;
use std::time::{Duration, Instant};

use till_kit::{Currency, Money};
use till_pricing::{
    Buyer, BuyerKind, Discount, GstRate, HsnCode, LineInput, OrderDiscount, QuoteInput, RateBps, Seller, StateCode,
    Treatment, UkTreatment, VatRounding,
};

use crate::BenchQuoteArgs;

/// The goal for one 10-line quote.
const GOAL: Duration = Duration::from_micros(20);

fn uk_sale() -> anyhow::Result<QuoteInput> {
    let treatments = ["standard", "standard", "reduced", "zero", "exempt"];
    let mut lines = Vec::with_capacity(10);
    for index in 0..10_u32 {
        let treatment = UkTreatment::parse(treatments[usize::try_from(index)? % treatments.len()])?;
        lines.push(LineInput {
            unit_amount: Money::from_minor(
                1_199_i64.saturating_add(i64::from(index).saturating_mul(37)),
                Currency::GBP,
            ),
            tax_inclusive: index % 2 == 0,
            quantity: index.saturating_add(1),
            treatment: Treatment::Uk(treatment),
            discount: (index == 3).then(|| Discount::Percent(RateBps::new(1_000).unwrap_or(RateBps::ZERO))),
        });
    }
    Ok(QuoteInput {
        currency: Currency::GBP,
        seller: Seller::Uk { vat_registered: true },
        buyer: Buyer { kind: BuyerKind::Consumer, in_india: false, state: None, sez: false },
        tax_point: time::macros::date!(2026 - 12 - 03),
        lines,
        order_discounts: vec![OrderDiscount {
            code: String::from("SUMMER10"),
            discount: Discount::Amount(Money::from_minor(500, Currency::GBP)),
        }],
        vat_rounding: VatRounding::LineHalfUp,
    })
}

fn india_sale() -> anyhow::Result<QuoteInput> {
    let rates = [500_u32, 1_800, 300, 4_000, 25];
    let mut lines = Vec::with_capacity(10);
    for index in 0..10_u32 {
        lines.push(LineInput {
            unit_amount: Money::from_minor(
                49_900_i64.saturating_add(i64::from(index).saturating_mul(101)),
                Currency::INR,
            ),
            tax_inclusive: true,
            quantity: index.saturating_add(1),
            treatment: Treatment::Gst {
                hsn: HsnCode::parse("61091000")?,
                rate: GstRate::parse(rates[usize::try_from(index)? % rates.len()])?,
            },
            discount: None,
        });
    }
    Ok(QuoteInput {
        currency: Currency::INR,
        seller: Seller::India { gstin_state: Some(StateCode::parse("27")?) },
        buyer: Buyer { kind: BuyerKind::Consumer, in_india: true, state: Some(StateCode::parse("27")?), sez: false },
        tax_point: time::macros::date!(2026 - 12 - 03),
        lines,
        order_discounts: Vec::new(),
        vat_rounding: VatRounding::LineHalfUp,
    })
}

/// Per-call times of `batches` batches of `batch` calls each: (median, p99, fastest).
fn measure(batches: usize, batch: u32, mut call: impl FnMut()) -> (Duration, Duration, Duration) {
    for _ in 0..batch {
        call();
    }
    let mut per_call: Vec<Duration> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..batch {
                call();
            }
            started.elapsed() / batch
        })
        .collect();
    per_call.sort_unstable();
    let at = |fraction_percent: usize| {
        let index = per_call.len().saturating_sub(1).saturating_mul(fraction_percent) / 100;
        per_call.get(index).copied().unwrap_or_default()
    };
    (at(50), at(99), at(0))
}

fn micros(duration: Duration) -> String {
    format!("{:.2} µs", duration.as_nanos() as f64 / 1_000.0)
}

pub fn quote(args: &BenchQuoteArgs) -> anyhow::Result<()> {
    println!(
        "till bench quote: the pricing engine in process, 10-line quotes, {} batches of {}",
        args.batches, args.batch
    );
    for (name, sale) in
        [("UK VAT (5 treatments, a coupon)", uk_sale()?), ("India GST intra-state, inclusive", india_sale()?)]
    {
        let quoted = till_pricing::quote(&sale)?;
        anyhow::ensure!(quoted.lines.len() == 10, "the sale quotes 10 lines");
        let (baseline, _, _) = measure(args.batches, args.batch, || {
            black_box(black_box(&sale).clone());
        });
        let (median, p99, fastest) = measure(args.batches, args.batch, || {
            let input = black_box(&sale).clone();
            // A refusal cannot happen for these sales (checked above); it is timed the same.
            let _ = black_box(till_pricing::quote(&input));
        });
        println!(
            "{name}: median {}, p99 {}, fastest {} per quote, {:.2}x the {} goal; cloning the input alone {} (a quote is {:.1}x that)",
            micros(median),
            micros(p99),
            micros(fastest),
            median.as_nanos() as f64 / GOAL.as_nanos() as f64,
            micros(GOAL),
            micros(baseline),
            median.as_nanos() as f64 / baseline.as_nanos().max(1) as f64,
        );
    }
    Ok(())
}
