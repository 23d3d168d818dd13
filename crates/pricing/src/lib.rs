//! The pricing and tax engine: what a sale costs and what tax it carries, with every
//! rounding named. Pure: no I/O, no HTTP, no SQL, no clock (the tax point is an input),
//! and no float anywhere; amounts are integer minor units and rates integer basis points.
//!
//! - [`calendar`]: the seller's calendar date of a moment (the default tax point).
//! - [`rounding`]: half-up division and the largest-remainder allocation.
//! - [`tax`]: the values a tax rule is made of: rates, UK VAT treatments, India's dated
//!   GST rate table, HSN codes and GST state codes.
//! - [`quote`]: the engine. Lines and discounts in, a [`quote::Quote`] out: per-line net,
//!   taxes and totals, the breakdown per rate an invoice prints, and the rules applied.

// Money: every operation is checked, and no `as` cast can truncate.
#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

pub mod calendar;
pub mod quote;
pub mod rounding;
pub mod tax;

pub use quote::{
    quote, Buyer, BuyerKind, Category, Discount, LineInput, OrderDiscount, PricingError, Quote, QuoteInput, QuotedLine,
    RateGroup, Rule, Seller, TaxAmount, TaxKind, VatRounding,
};
pub use tax::{GstRate, HsnCode, RateBps, StateCode, TaxError, Treatment, UkTreatment};
