//! `POST /v1/checkouts`: a cart becomes an order, in one transaction: the lines are
//! quoted for the customer, their stock reserved (all or none: 409 `out_of_stock` at
//! once), the coupons redeemed within their limits, and the order recorded `pending`
//! with its saga's first step due. The payment happens after that transaction, in the
//! saga ([`crate::saga`]), which the commit wakes.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_access::domain::Country;
use till_http::auth::Principal;
use till_http::extract::ApiJson;
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::{HumanText, Money};
use till_outbox::EventType;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::invoices::StoredCustomer;
use crate::quotes::{BuyerRequest, CouponCodeSchema, Pricing, QuoteLineRequest};
use crate::store;
use crate::{OrderId, ReservationId};

pub const CHECKOUTS_PATH: &str = "/v1/checkouts";
/// The most a payment intent takes (payments' bound), in minor units.
pub const TOTAL_MAX: i64 = 99_999_999;
/// Characters of an email address.
const EMAIL_CHARS_MAX: usize = 254;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(create_checkout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    #[schema(value_type = till_kit::schema::Name200)]
    pub name: String,
    /// Where the receipt goes.
    #[schema(
        max_length = 254,
        pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f]+$",
        example = "buyer@example.com"
    )]
    pub email: String,
    /// 1 to 6 lines, as the invoice prints them.
    #[schema(min_items = 1, max_items = 6, value_type = Vec<till_kit::schema::Name200>)]
    pub address: Vec<String>,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// India: the GST state code of the place of supply; taken from the GSTIN when left out.
    #[schema(pattern = "^(0[1-9]|[12][0-9]|3[0-8]|97|99)$")]
    pub state_code: Option<String>,
    /// India: a registered buyer's GSTIN.
    #[schema(pattern = "^[0-9]{2}[0-9A-Z]{13}$")]
    pub gstin: Option<String>,
    /// India: the buyer is in a Special Economic Zone (taxed as inter-state).
    pub sez: Option<bool>,
    /// `business` or `consumer`: `business` with a GSTIN, `consumer` otherwise, if left out.
    #[schema(pattern = "^(business|consumer)$")]
    pub r#type: Option<String>,
}

/// How the customer pays: a card payment method id (`pm_card_visa` in test mode) for
/// GBP, EUR and USD, or a UPI collect request (`{"type": "upi", "vpa": "success@razorpay"}`)
/// for INR.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CheckoutPaymentMethod {
    #[schema(value_type = CardMethodSchema)]
    Card(String),
    Upi(UpiRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpiRequest {
    #[serde(rename = "type")]
    #[schema(pattern = "^upi$")]
    pub kind: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{2,256}@[A-Za-z]{2,64}$")]
    pub vpa: String,
}

/// A card payment method id, as the schema says it.
pub struct CardMethodSchema;

impl utoipa::PartialSchema for CardMethodSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^pm_[A-Za-z0-9_]{1,100}$"))
            .into()
    }
}

impl utoipa::ToSchema for CardMethodSchema {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckoutRequest {
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<QuoteLineRequest>,
    pub customer: CustomerRequest,
    pub payment_method: CheckoutPaymentMethod,
    /// Up to 5 coupon codes, applied in order and redeemed by the order (given back if
    /// it is not paid).
    #[schema(max_items = 5, value_type = Option<Vec<CouponCodeSchema>>)]
    pub discount_codes: Option<Vec<String>>,
    /// The business's home currency (GBP in the UK, INR in India) if left out.
    #[schema(value_type = Option<till_kit::Currency>)]
    pub currency: Option<String>,
    /// How long the stock is held for the payment: 1 to 86 400 seconds, 900 if left out.
    /// If it runs out before the payment is authorised, the order is canceled.
    #[schema(minimum = 1, maximum = 86_400)]
    pub expires_in_seconds: Option<i64>,
}

fn email_of(text: &str) -> Result<String, ApiError> {
    // Exactly what the schema's pattern says (as payments checks a receipt address).
    let plain = text.chars().count() <= EMAIL_CHARS_MAX
        && !text.chars().any(|c| c.is_control() || c.is_whitespace() || ('\u{7f}'..='\u{9f}').contains(&c))
        && text
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if plain {
        Ok(text.to_string())
    } else {
        Err(ApiError::invalid("customer.email", "customer.email is an email address, name@domain."))
    }
}

/// The payment method, checked as payments checks it, and fitted to the currency.
fn payment_method_of(method: &CheckoutPaymentMethod, currency: &str) -> Result<serde_json::Value, ApiError> {
    match method {
        CheckoutPaymentMethod::Card(id) => {
            let valid = id.len() <= 103
                && id.strip_prefix("pm_").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
                });
            if !valid {
                return Err(ApiError::invalid("payment_method", "payment_method is a card payment method id, pm_…."));
            }
            if currency == "INR" {
                return Err(ApiError::rule("payment_method", "INR payments go through Razorpay, which takes UPI."));
            }
            Ok(serde_json::Value::String(id.clone()))
        }
        CheckoutPaymentMethod::Upi(upi) => {
            if upi.kind != "upi" {
                return Err(ApiError::invalid("payment_method.type", "payment_method.type is upi."));
            }
            let valid = upi.vpa.split_once('@').is_some_and(|(name, handle)| {
                (2..=256).contains(&name.len())
                    && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
                    && (2..=64).contains(&handle.len())
                    && handle.bytes().all(|byte| byte.is_ascii_alphabetic())
            });
            if !valid {
                return Err(ApiError::invalid(
                    "payment_method.vpa",
                    "payment_method.vpa is a UPI address, name@handle.",
                ));
            }
            if currency != "INR" {
                return Err(ApiError::rule(
                    "payment_method",
                    format!("{currency} payments go through Stripe, which takes cards."),
                ));
            }
            Ok(serde_json::json!({ "type": "upi", "vpa": upi.vpa }))
        }
    }
}

/// Check out a cart: quote it, reserve its stock, redeem its coupons and start the
/// payment (authorise, capture, then the invoice) — see the order's `steps`.
#[utoipa::path(post, path = "/v1/checkouts", tag = "commerce",
    request_body = CreateCheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = crate::orders::OrderBody, description = "An order, `pending`: its payment runs now; `GET /v1/orders/{id}` or the `order.paid` event tells how it ends."),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "A field is wrong in itself; `param` names it."),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "resource_missing: a line's product_id names no product of this business."),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "out_of_stock: a line's product has fewer units available; nothing was reserved, charged or redeemed."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: as for a quote; a total of 0 or above 99 999 999; a payment method the currency's gateway does not take; a coupon used up; no invoice settings yet."),
    ),
    security(("bearer" = [])))]
async fn create_checkout(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateCheckoutRequest>,
) -> Result<Response, ApiError> {
    let business = principal.business_id;
    let customer = &request.customer;
    let name = HumanText::name(&customer.name, 200).map_err(|refusal| ApiError::text("customer.name", refusal))?;
    let email = email_of(&customer.email)?;
    let address = crate::invoices::address_of(&customer.address, "customer.address")?;
    let kind = match customer.r#type.as_deref() {
        Some(kind @ ("business" | "consumer")) => kind,
        Some(_) => return Err(ApiError::invalid("customer.type", "customer.type is business or consumer.")),
        None if customer.gstin.is_some() => "business",
        None => "consumer",
    };
    let expires_in_seconds = crate::reservations::expires_in(request.expires_in_seconds)?;
    let buyer = BuyerRequest {
        r#type: kind.to_string(),
        country: customer.country.clone(),
        state_code: customer.state_code.clone(),
        gstin: customer.gstin.clone(),
        sez: customer.sez,
    };
    if store::find_settings(&mut tx, business).await?.is_none() {
        return Err(ApiError::new(
            till_http::ErrorCode::RuleViolated,
            "Set the business's invoice settings first (PUT /v1/invoice_settings): an invoice needs the supplier's address.",
        ));
    }
    let currency = match request.currency.as_deref() {
        Some(currency) => currency.to_string(),
        None => match crate::products::seller(&mut tx, business).await?.country {
            Country::GB => String::from("GBP"),
            Country::IN => String::from("INR"),
        },
    };
    let payment_method = payment_method_of(&request.payment_method, &currency)?;
    let pricing = Pricing {
        currency: &currency,
        lines: &request.lines,
        buyer: &buyer,
        buyer_field: "customer",
        discount_codes: request.discount_codes.as_deref(),
        tax_point: None,
        vat_rounding: None,
    };
    let priced = crate::quotes::price(&mut tx, business, &pricing).await?;
    let quote = &priced.body;
    if !(1..=TOTAL_MAX).contains(&quote.total) {
        return Err(ApiError::rule(
            "lines",
            format!(
                "A checkout's total is 1 to {TOTAL_MAX} minor units; this one is {}.",
                Money::from_minor(quote.total, quote.currency)
            ),
        ));
    }

    // The stock: every tracked SKU's quantities summed, held in SKU order.
    let mut wanted: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
    for (index, sku) in
        priced.tracked.iter().enumerate().filter_map(|(index, sku)| sku.as_deref().map(|sku| (index, sku)))
    {
        let quantity = i64::from(quote.lines[index].quantity);
        let entry = wanted.entry(sku).or_insert((0, index));
        entry.0 = entry.0.saturating_add(quantity);
        if entry.0 > crate::reservations::QUANTITY_MAX {
            return Err(ApiError::rule(
                format!("lines[{index}].quantity"),
                format!("a product's quantities add up to at most {}.", crate::reservations::QUANTITY_MAX),
            ));
        }
    }
    let order = OrderId::generate();
    let reservation = ReservationId::generate();
    let actor = principal.actor();
    let reference = order.to_string();
    let reserved = store::insert_reservation(
        &mut tx,
        &store::NewReservation {
            id: reservation.as_uuid(),
            business,
            reference: Some(&reference),
            expires_in_seconds,
            created_by: &actor,
        },
    )
    .await?;
    let customer_json = serde_json::to_value(StoredCustomer {
        name: name.into_string(),
        email,
        address,
        country: customer.country.clone(),
        state_code: quote.buyer.state_code.clone(),
        gstin: quote.buyer.gstin.clone(),
    })
    .map_err(|error| ApiError::internal(&error))?;
    let row = store::insert_order(
        &mut tx,
        &store::NewOrder {
            id: order.as_uuid(),
            business,
            currency: &currency,
            total: quote.total,
            quote_id: quote.id.as_uuid(),
            reservation_id: reservation.as_uuid(),
            customer: &customer_json,
            payment_method: &payment_method,
            coupon_ids: &priced.coupon_ids,
        },
    )
    .await?;
    let total = Money::from_minor(quote.total, quote.currency);
    store::add_order_step(&mut tx, &row, "quote", "succeeded", &format!("{} total {total}", quote.id)).await?;
    let reserved_detail = format!("{reservation}, {} SKU(s) held for {expires_in_seconds} s", wanted.len());
    store::add_order_step(&mut tx, &row, "reserve", "succeeded", &reserved_detail).await?;
    crate::orders::announce(&mut tx, &row, EventType::OrderCreated).await?;
    let body = crate::orders::body_of(&mut tx, &row).await?;

    // The contended rows last: a SKU's stock row and a coupon's are locked from their
    // UPDATE to the commit, and every checkout of that SKU or coupon waits for them, so
    // everything else of the order is written before. A line that does not fit (409) or a
    // coupon used up (422) rolls all of it back.
    let held: Vec<(&str, i64, String)> =
        wanted.iter().map(|(sku, (quantity, index))| (*sku, *quantity, format!("lines[{index}].quantity"))).collect();
    crate::reservations::hold(&mut tx, business, reservation, &held).await?;
    let redeemed = store::redeem_coupons(&mut tx, &priced.coupon_ids).await?;
    if let Some(index) = priced.coupon_ids.iter().position(|id| !redeemed.contains(id)) {
        return Err(ApiError::rule(format!("discount_codes[{index}]"), "The coupon has been used up."));
    }
    crate::reservations::announce_row(&mut tx, &reserved, EventType::ReservationCreated).await?;
    // Delivered when this transaction commits, so the saga never looks for an order it
    // cannot see yet.
    crate::saga::wake(&mut tx).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
