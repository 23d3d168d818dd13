//! `/v1/quotes`: lines of the catalog priced and taxed for a buyer.
//!
//! The route gathers what the engine needs — the seller's country and registration, the
//! buyer, each line's product price and treatment — and [`till_pricing::quote`] does the
//! arithmetic. The answer is stored as given, so that what a buyer was shown can be
//! read back (`GET /v1/quotes/{id}`) and an order made from it charges exactly that.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_access::business::BusinessProfile;
use till_access::domain::{Country, Gstin, TaxRegistration};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiPath};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::{Currency, Money};
use till_pricing::{
    Buyer, BuyerKind, Discount, LineInput, OrderDiscount, PricingError, Quote, RateBps, Seller, StateCode, TaxAmount,
    Treatment, UkTreatment, VatRounding,
};
use time::{Date, Duration, OffsetDateTime};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{self, PriceRow, ProductRow};
use crate::{ProductId, QuoteId};

pub const QUOTES_PATH: &str = "/v1/quotes";
/// How long a quote stands: long enough to check out, short enough that prices and
/// stock have not moved under it.
pub const QUOTE_LIFETIME: Duration = Duration::minutes(30);
/// A tax point may be at most this far ahead (an invoice dated for a delivery).
const TAX_POINT_AHEAD_MAX: Duration = Duration::days(366);

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(create_quote)).routes(routes!(get_quote))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineDiscountRequest {
    /// A percentage off the line, in basis points (1000 = 10 %).
    #[schema(minimum = 0, maximum = 10000)]
    pub percent_bps: Option<i64>,
    /// A fixed amount off the line, in minor units; at most the line's amount.
    #[schema(minimum = 0)]
    pub amount: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteLineRequest {
    #[schema(value_type = ProductId)]
    pub product_id: String,
    /// 1 to 1 000 000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
    /// Exactly one of `percent_bps` and `amount` (422 otherwise).
    pub discount: Option<LineDiscountRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyerRequest {
    /// `business` or `consumer`.
    #[schema(pattern = "^(business|consumer)$")]
    pub r#type: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// India: the GST state code of the place of supply (`27` Maharashtra); taken from
    /// the GSTIN when left out.
    #[schema(pattern = "^(0[1-9]|[12][0-9]|3[0-8]|97|99)$")]
    pub state_code: Option<String>,
    /// India: a registered buyer's GSTIN (its check character is checked: 422).
    #[schema(pattern = "^[0-9]{2}[0-9A-Z]{13}$")]
    pub gstin: Option<String>,
    /// India: the buyer is in a Special Economic Zone (taxed as inter-state).
    pub sez: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuoteRequest {
    #[schema(value_type = Currency)]
    pub currency: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<QuoteLineRequest>,
    pub buyer: BuyerRequest,
    /// Up to 5 coupon codes, applied in order, each to what the ones before it left.
    #[schema(max_items = 5, value_type = Option<Vec<CouponCodeSchema>>)]
    pub discount_codes: Option<Vec<String>>,
    /// The date of supply, `YYYY-MM-DD`, which decides the rates in force; today where
    /// the seller is, if left out.
    #[schema(format = Date)]
    pub tax_point: Option<String>,
    /// UK: `line_half_up` (the default: each line's VAT rounded half up to the penny) or
    /// `invoice_round_down` (the concession for VAT-exclusive sales to businesses).
    #[schema(pattern = "^(line_half_up|invoice_round_down)$")]
    pub vat_rounding: Option<String>,
}

/// One tax on a line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaxBody {
    /// `vat`, `cgst`, `sgst` or `igst`.
    pub kind: String,
    /// The supply's rate, in basis points.
    pub rate_bps: u32,
    /// The part of the rate this tax levies: CGST and SGST half each (5000), VAT and
    /// IGST all of it (10000).
    pub share_bps: u32,
    pub amount: i64,
}

/// A quoted line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuoteLineBody {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    /// India: the product's HSN or SAC code, as the tax invoice prints it.
    pub hsn_code: Option<String>,
    pub quantity: u32,
    pub unit_amount: i64,
    pub tax_inclusive: bool,
    /// `standard`, `reduced`, `zero_rated`, `exempt`, `gst`, `gst_export` or
    /// `not_registered`.
    pub category: String,
    /// The line's rate, in basis points; `null` for an exempt or untaxed line.
    pub rate_bps: Option<u32>,
    /// `unit_amount × quantity`.
    pub gross_amount: i64,
    pub discount_amount: i64,
    /// The taxable value: after discounts and without tax.
    pub net_amount: i64,
    pub taxes: Vec<TaxBody>,
    pub tax_amount: i64,
    pub total_amount: i64,
}

/// The sale's totals at one rate, as an invoice prints them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RateGroupBody {
    pub category: String,
    pub rate_bps: Option<u32>,
    pub net_amount: i64,
    pub taxes: Vec<TaxBody>,
    pub tax_amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaceOfSupplyBody {
    /// The GST state code (`97` for an export).
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleBody {
    /// What was applied: `uk_vat`, `gst_intra_state`, `gst_inter_state`, … .
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuoteBuyerBody {
    pub r#type: String,
    pub country: String,
    pub state_code: Option<String>,
    pub gstin: Option<String>,
    pub sez: bool,
}

/// Lines priced and taxed for a buyer, in integer minor units of `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuoteBody {
    pub id: QuoteId,
    pub currency: Currency,
    /// The date of supply the rates were taken at.
    #[schema(format = Date)]
    pub tax_point: String,
    pub buyer: QuoteBuyerBody,
    /// India: where the supply is taxed.
    pub place_of_supply: Option<PlaceOfSupplyBody>,
    /// `line_half_up` or `invoice_round_down`.
    pub vat_rounding: String,
    /// The coupon codes applied, in order; their amounts are in the lines' `discount_amount`.
    pub discount_codes: Vec<String>,
    pub lines: Vec<QuoteLineBody>,
    pub gross_total: i64,
    pub discount_total: i64,
    pub net_total: i64,
    pub tax_total: i64,
    pub total: i64,
    pub breakdown: Vec<RateGroupBody>,
    /// Every rule the engine applied, so a reviewer can see why each figure is what it is.
    pub rules: Vec<RuleBody>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A coupon code, as the request schema says it.
pub struct CouponCodeSchema;

impl utoipa::PartialSchema for CouponCodeSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$"))
            .into()
    }
}

impl utoipa::ToSchema for CouponCodeSchema {}

fn pricing_error(error: &PricingError) -> ApiError {
    let detail = format!("{}.", error);
    if error.is_rule() {
        ApiError::rule(error.field(), detail)
    } else {
        ApiError::invalid(error.field(), detail)
    }
}

/// The seller as the engine knows it.
fn seller_of(profile: &BusinessProfile) -> Result<Seller, ApiError> {
    Ok(match (profile.country, &profile.tax_registration) {
        (Country::GB, registration) => Seller::Uk { vat_registered: registration.is_some() },
        (Country::IN, Some(TaxRegistration::Gst(gstin))) => Seller::India {
            gstin_state: Some(StateCode::parse(gstin.state_code()).map_err(|error| ApiError::internal(&error))?),
        },
        (Country::IN, _) => Seller::India { gstin_state: None },
    })
}

/// The buyer, checked: a GSTIN and a state code belong to India and must agree.
pub(crate) fn buyer_of(request: &BuyerRequest, prefix: &str) -> Result<(Buyer, QuoteBuyerBody), ApiError> {
    let field = |name: &str| format!("{prefix}.{name}");
    let kind = match request.r#type.as_str() {
        "business" => BuyerKind::Business,
        "consumer" => BuyerKind::Consumer,
        _ => return Err(ApiError::invalid(field("type"), format!("{} is business or consumer.", field("type")))),
    };
    let country = request.country.as_str();
    if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(ApiError::invalid(
            field("country"),
            format!("{} is an ISO 3166-1 alpha-2 code, such as GB or IN.", field("country")),
        ));
    }
    let in_india = country == "IN";
    let gstin = request
        .gstin
        .as_deref()
        .map(|text| {
            Gstin::parse(text).map_err(|_| {
                ApiError::rule(
                    field("gstin"),
                    format!("{} is not a valid GSTIN (its check character).", field("gstin")),
                )
            })
        })
        .transpose()?;
    let state = request
        .state_code
        .as_deref()
        .map(|text| StateCode::parse(text).map_err(|error| ApiError::invalid(field("state_code"), format!("{error}."))))
        .transpose()?;
    let sez = request.sez.unwrap_or(false);
    if !in_india {
        for (name, present) in [("gstin", gstin.is_some()), ("state_code", state.is_some()), ("sez", sez)] {
            if present {
                let (name, country) = (field(name), field("country"));
                return Err(ApiError::rule(name.clone(), format!("{name} is for a buyer in India ({country} IN).")));
            }
        }
    }
    let gstin_state = gstin
        .as_ref()
        .map(|gstin| {
            StateCode::parse(gstin.state_code())
                .map_err(|_| ApiError::rule(field("gstin"), format!("{} names no state.", field("gstin"))))
        })
        .transpose()?;
    if gstin.is_some() && kind != BuyerKind::Business {
        return Err(ApiError::rule(
            field("gstin"),
            format!("a buyer with a GSTIN is a registered business: {} business.", field("type")),
        ));
    }
    if let (Some(state), Some(gstin_state)) = (state, gstin_state) {
        if state != gstin_state {
            return Err(ApiError::rule(
                field("state_code"),
                format!("{} {} is not the GSTIN's state {}.", field("state_code"), state.code(), gstin_state.code()),
            ));
        }
    }
    let state = state.or(gstin_state);
    let body = QuoteBuyerBody {
        r#type: request.r#type.clone(),
        country: country.to_string(),
        state_code: state.map(StateCode::code),
        gstin: gstin.as_ref().map(|gstin| gstin.as_str().to_string()),
        sez,
    };
    Ok((Buyer { kind, in_india, state, sez }, body))
}

fn tax_point_of(text: Option<&str>, country: Country, now: OffsetDateTime) -> Result<Date, ApiError> {
    let today = match country {
        Country::GB => till_pricing::calendar::uk_date(now),
        Country::IN => till_pricing::calendar::india_date(now),
    };
    let Some(text) = text else {
        return Ok(today);
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date =
        Date::parse(text, format).map_err(|_| ApiError::invalid("tax_point", "tax_point is a date, YYYY-MM-DD."))?;
    let earliest = time::macros::date!(2017 - 07 - 01);
    let latest = today.checked_add(TAX_POINT_AHEAD_MAX).unwrap_or(today);
    if date < earliest || date > latest {
        return Err(ApiError::rule(
            "tax_point",
            format!("tax_point is from 2017-07-01 (the start of GST) to {latest}, a year ahead."),
        ));
    }
    Ok(date)
}

fn discount_of(
    request: Option<&LineDiscountRequest>,
    index: usize,
    currency: Currency,
) -> Result<Option<Discount>, ApiError> {
    let Some(request) = request else {
        return Ok(None);
    };
    match (request.percent_bps, request.amount) {
        (Some(bps), None) => {
            let rate = u32::try_from(bps).ok().and_then(|bps| RateBps::new(bps).ok()).ok_or_else(|| {
                ApiError::invalid(format!("lines[{index}].discount.percent_bps"), "percent_bps is 0 to 10000.")
            })?;
            Ok(Some(Discount::Percent(rate)))
        }
        (None, Some(amount)) => {
            if amount < 0 {
                return Err(ApiError::invalid(format!("lines[{index}].discount.amount"), "amount is not negative."));
            }
            Ok(Some(Discount::Amount(Money::from_minor(amount, currency))))
        }
        _ => Err(ApiError::rule(
            format!("lines[{index}].discount"),
            "A discount is exactly one of percent_bps and amount.",
        )),
    }
}

/// The coupons of `codes`, checked for this quote: each must be the business's, active,
/// within its window, not used up, and (a fixed amount) in the quote's currency. A code
/// wrong in itself is a 400; a real one that does not apply now, a 422.
async fn order_discounts(
    tx: &mut Tx,
    business: till_kit::BusinessId,
    codes: Option<&[String]>,
    currency: Currency,
    now: OffsetDateTime,
) -> Result<Vec<(OrderDiscount, uuid::Uuid)>, ApiError> {
    let Some(codes) = codes.filter(|codes| !codes.is_empty()) else {
        return Ok(Vec::new());
    };
    if codes.len() > till_pricing::quote::ORDER_DISCOUNTS_MAX {
        return Err(pricing_error(&PricingError::TooManyDiscounts));
    }
    let mut parsed = Vec::with_capacity(codes.len());
    for (index, code) in codes.iter().enumerate() {
        let field = format!("discount_codes[{index}]");
        let code =
            crate::coupons::parse_code(code).ok_or_else(|| ApiError::invalid(field.clone(), "Not a coupon code."))?;
        if parsed.contains(&code) {
            return Err(ApiError::rule(field, format!("{code} is given twice.")));
        }
        parsed.push(code);
    }
    let rows = store::coupons_by_code(tx, business, &parsed).await?;
    parsed
        .iter()
        .enumerate()
        .map(|(index, code)| {
            let field = format!("discount_codes[{index}]");
            let row = rows
                .iter()
                .find(|row| &row.code == code)
                .ok_or_else(|| ApiError::rule(field.clone(), format!("No coupon has the code {code}.")))?;
            let discount = crate::coupons::applicable(row, currency, now).map_err(|why| ApiError::rule(field, why))?;
            Ok((discount, row.id))
        })
        .collect()
}

/// A stored product's treatment, as the engine takes it.
fn treatment_of(row: &ProductRow) -> Result<Treatment, ApiError> {
    let corrupt = |what: &str| ApiError::internal(&format!("product {} is stored with {what}", row.id));
    match (row.tax_treatment.as_str(), &row.hsn_code, row.gst_rate_bps) {
        ("gst", Some(hsn), Some(rate)) => {
            let hsn = till_pricing::HsnCode::parse(hsn).map_err(|_| corrupt("a bad HSN code"))?;
            let rate = u32::try_from(rate)
                .ok()
                .and_then(|rate| till_pricing::GstRate::parse(rate).ok())
                .ok_or_else(|| corrupt("a bad GST rate"))?;
            Ok(Treatment::Gst { hsn, rate })
        }
        (text, None, None) => UkTreatment::parse(text).map(Treatment::Uk).map_err(|_| corrupt("a bad treatment")),
        _ => Err(corrupt("a treatment without its fields")),
    }
}

fn tax_body(tax: &TaxAmount) -> TaxBody {
    TaxBody {
        kind: tax.kind.as_str().to_string(),
        rate_bps: tax.rate.bps(),
        share_bps: tax.share_bps,
        amount: tax.amount.minor(),
    }
}

/// Price and tax lines of the catalog for a buyer.
#[utoipa::path(post, path = "/v1/quotes", tag = "commerce",
    request_body = CreateQuoteRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = QuoteBody, description = "Priced, taxed and stored as given, valid for 30 minutes (`expires_at`)."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "A field is wrong in itself: a quantity out of range, a malformed id, code or date. `param` names it (`lines[2].quantity`)."),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "resource_missing: a line's product_id names no product of this business; `param` names the line."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a discount above its line, amounts too large to add up, a product with no price in the currency or inactive, a rate not in force at the tax point, a registered seller quoting outside its home currency, round-down for a consumer, a GSTIN whose check fails or that disagrees with the state code, a coupon that does not apply now."),
    ),
    security(("bearer" = [])))]
async fn create_quote(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateQuoteRequest>,
) -> Result<Response, ApiError> {
    let pricing = Pricing {
        currency: &request.currency,
        lines: &request.lines,
        buyer: &request.buyer,
        buyer_field: "buyer",
        discount_codes: request.discount_codes.as_deref(),
        tax_point: request.tax_point.as_deref(),
        vat_rounding: request.vat_rounding.as_deref(),
    };
    let priced = price(&mut tx, principal.business_id, &pricing).await?;
    Ok((StatusCode::CREATED, axum::Json(priced.body)).into_response())
}

/// What a quote is asked for, by the quote route or a checkout.
pub(crate) struct Pricing<'a> {
    pub currency: &'a str,
    pub lines: &'a [QuoteLineRequest],
    pub buyer: &'a BuyerRequest,
    /// What the request calls the buyer (`buyer`, a checkout's `customer`), for `param`.
    pub buyer_field: &'static str,
    pub discount_codes: Option<&'a [String]>,
    pub tax_point: Option<&'a str>,
    pub vat_rounding: Option<&'a str>,
}

/// A stored quote, with what an order made from it needs besides.
pub(crate) struct Priced {
    pub body: QuoteBody,
    /// The coupons applied, in order.
    pub coupon_ids: Vec<uuid::Uuid>,
    /// Each line's SKU if its product tracks inventory (the stock an order reserves).
    pub tracked: Vec<Option<String>>,
}

/// Prices and taxes `pricing` for `business` and stores the quote, in `tx`.
pub(crate) async fn price(
    tx: &mut Tx,
    business: till_kit::BusinessId,
    pricing: &Pricing<'_>,
) -> Result<Priced, ApiError> {
    let currency =
        Currency::parse(pricing.currency).map_err(|error| ApiError::invalid("currency", error.to_string()))?;
    if pricing.lines.is_empty() || pricing.lines.len() > till_pricing::quote::LINES_MAX {
        return Err(pricing_error(&if pricing.lines.is_empty() {
            PricingError::NoLines
        } else {
            PricingError::TooManyLines
        }));
    }
    let (buyer, buyer_body) = buyer_of(pricing.buyer, pricing.buyer_field)?;
    let vat_rounding = match pricing.vat_rounding {
        None | Some("line_half_up") => VatRounding::LineHalfUp,
        Some("invoice_round_down") => VatRounding::InvoiceRoundDown,
        Some(_) => {
            return Err(ApiError::invalid("vat_rounding", "vat_rounding is line_half_up or invoice_round_down."))
        }
    };
    let mut ids = Vec::with_capacity(pricing.lines.len());
    for (index, line) in pricing.lines.iter().enumerate() {
        let id = ProductId::parse(&line.product_id).map_err(|_| {
            ApiError::invalid(format!("lines[{index}].product_id"), "product_id is a product's id, prod_….")
        })?;
        ids.push(id.as_uuid());
    }
    let profile = crate::products::seller(tx, business).await?;
    let seller = seller_of(&profile)?;
    let now = OffsetDateTime::now_utc();
    let tax_point = tax_point_of(pricing.tax_point, profile.country, now)?;

    let products: HashMap<uuid::Uuid, ProductRow> =
        store::find_products(tx, &ids).await?.into_iter().map(|row| (row.id, row)).collect();
    let prices: Vec<PriceRow> = store::prices_of(tx, &ids).await?;
    let mut inputs = Vec::with_capacity(pricing.lines.len());
    let mut rows = Vec::with_capacity(pricing.lines.len());
    for (index, (line, id)) in pricing.lines.iter().zip(&ids).enumerate() {
        let field = format!("lines[{index}].product_id");
        // An id that names no product of this business, as anywhere else: 404, naming the line.
        let product = products.get(id).ok_or_else(|| {
            ApiError::new(till_http::ErrorCode::ResourceMissing, "No such product.").with_param(field.clone())
        })?;
        if !product.active {
            return Err(ApiError::rule(field, "The product is inactive and cannot be sold."));
        }
        let price = prices
            .iter()
            .find(|price| price.product_id == *id && price.currency == currency.code())
            .ok_or_else(|| ApiError::rule(field.clone(), format!("The product has no price in {currency}.")))?;
        let quantity = u32::try_from(line.quantity)
            .ok()
            .filter(|quantity| (1..=till_pricing::quote::QUANTITY_MAX).contains(quantity))
            .ok_or_else(|| pricing_error(&PricingError::Quantity { line: index }))?;
        inputs.push(LineInput {
            unit_amount: Money::from_minor(price.unit_amount, currency),
            tax_inclusive: price.tax_inclusive,
            quantity,
            treatment: treatment_of(product)?,
            discount: discount_of(line.discount.as_ref(), index, currency)?,
        });
        rows.push(product);
    }
    let applied = order_discounts(tx, business, pricing.discount_codes, currency, now).await?;
    let codes: Vec<String> = applied.iter().map(|(discount, _)| discount.code.clone()).collect();
    let coupon_ids: Vec<uuid::Uuid> = applied.iter().map(|(_, id)| *id).collect();
    let order_discounts = applied.into_iter().map(|(discount, _)| discount).collect();
    let input =
        till_pricing::QuoteInput { currency, seller, buyer, tax_point, lines: inputs, order_discounts, vat_rounding };
    let quote = till_pricing::quote(&input).map_err(|error| pricing_error(&error))?;
    let id = QuoteId::generate();
    let body = quote_body(id, &quote, &rows, buyer_body, codes, tax_point, now)?;
    let json = serde_json::to_value(&body).map_err(|error| ApiError::internal(&error))?;
    store::insert_quote(
        tx,
        &store::NewQuote {
            id: id.as_uuid(),
            business,
            currency: currency.code(),
            total: quote.total.minor(),
            tax_point,
            body: &json,
            expires_at: body.expires_at,
        },
    )
    .await?;
    let tracked = rows.iter().map(|row| row.track_inventory.then(|| row.sku.clone())).collect();
    Ok(Priced { body, coupon_ids, tracked })
}

fn quote_body(
    id: QuoteId,
    quote: &Quote,
    products: &[&ProductRow],
    buyer: QuoteBuyerBody,
    discount_codes: Vec<String>,
    tax_point: Date,
    now: OffsetDateTime,
) -> Result<QuoteBody, ApiError> {
    let lines = quote
        .lines
        .iter()
        .zip(products)
        .map(|(line, product)| QuoteLineBody {
            product_id: ProductId::from_uuid(product.id),
            sku: product.sku.clone(),
            name: product.name.clone(),
            hsn_code: product.hsn_code.clone(),
            quantity: line.quantity,
            unit_amount: line.unit_amount.minor(),
            tax_inclusive: line.tax_inclusive,
            category: line.category.as_str().to_string(),
            rate_bps: line.rate.map(RateBps::bps),
            gross_amount: line.gross_amount.minor(),
            discount_amount: line.discount_amount.minor(),
            net_amount: line.net_amount.minor(),
            taxes: line.taxes.iter().map(tax_body).collect(),
            tax_amount: line.tax_amount.minor(),
            total_amount: line.total_amount.minor(),
        })
        .collect();
    let breakdown = quote
        .breakdown
        .iter()
        .map(|group| RateGroupBody {
            category: group.category.as_str().to_string(),
            rate_bps: group.rate.map(RateBps::bps),
            net_amount: group.net_amount.minor(),
            taxes: group.taxes.iter().map(tax_body).collect(),
            tax_amount: group.tax_amount.minor(),
        })
        .collect();
    // Stored to the second, so that the body read back is the body given.
    let now = now.replace_nanosecond(0).map_err(|error| ApiError::internal(&error))?;
    Ok(QuoteBody {
        id,
        currency: quote.currency,
        tax_point: tax_point.to_string(),
        buyer,
        place_of_supply: quote
            .place_of_supply
            .map(|state| PlaceOfSupplyBody { code: state.code(), name: state.name().to_string() }),
        vat_rounding: quote.vat_rounding.as_str().to_string(),
        discount_codes,
        lines,
        gross_total: quote.gross_total.minor(),
        discount_total: quote.discount_total.minor(),
        net_total: quote.net_total.minor(),
        tax_total: quote.tax_total.minor(),
        total: quote.total.minor(),
        breakdown,
        rules: quote
            .rules
            .iter()
            .map(|rule| RuleBody { code: rule.code.to_string(), detail: rule.detail.clone() })
            .collect(),
        expires_at: now.checked_add(QUOTE_LIFETIME).unwrap_or(now),
        created_at: now,
    })
}

/// Retrieve a quote as it was given.
#[utoipa::path(get, path = "/v1/quotes/{id}", tag = "commerce", params(("id" = QuoteId, Path)),
    responses((status = 200, body = QuoteBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_quote(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<QuoteId>,
) -> Result<axum::Json<QuoteBody>, ApiError> {
    let body = store::find_quote(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("quote"))?;
    Ok(axum::Json(serde_json::from_value(body).map_err(|error| ApiError::internal(&error))?))
}
