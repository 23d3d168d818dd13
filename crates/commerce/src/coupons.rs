//! `/v1/coupons`: order discounts behind a code, with a validity window and a limit on
//! redemptions. A quote applies the codes it is given ([`applicable`]); an order will
//! redeem them.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{Currency, Money};
use till_outbox::EventType;
use till_pricing::{Discount, OrderDiscount, RateBps};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::UNIT_AMOUNT_MAX;
use crate::store::{self, CouponRow};
use crate::CouponId;

pub const COUPONS_PATH: &str = "/v1/coupons";

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(create_coupon, list_coupons)).routes(routes!(get_coupon, update_coupon))
}

/// A code: 3 to 32 of upper-case letters, digits, `_` and `-`, starting with a letter or
/// digit. Codes are compared in upper case (a buyer's `summer10` is `SUMMER10`).
pub fn parse_code(text: &str) -> Option<String> {
    let code = text.to_ascii_uppercase();
    let bytes = code.as_bytes();
    let valid = (3..=32).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-'));
    valid.then_some(code)
}

/// An order discount behind a code.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "cpn_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "code": "SUMMER10", "percent_bps": 1000, "amount": null,
    "currency": null, "valid_from": null, "valid_until": "2027-09-01T00:00:00Z", "max_redemptions": 500,
    "redemptions": 0, "active": true, "version": 1, "created_at": "2026-12-03T10:00:00Z",
    "updated_at": "2026-12-03T10:00:00Z"
}))]
pub struct CouponBody {
    pub id: CouponId,
    pub code: String,
    /// A percentage off the order, in basis points; or else `amount`.
    pub percent_bps: Option<i32>,
    /// A fixed amount off the order, in minor units of `currency`.
    pub amount: Option<i64>,
    pub currency: Option<Currency>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_from: Option<OffsetDateTime>,
    /// Not valid from this moment on.
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_until: Option<OffsetDateTime>,
    /// How many orders may use it; `null` for no limit.
    pub max_redemptions: Option<i32>,
    pub redemptions: i32,
    pub active: bool,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl CouponBody {
    pub fn of(row: &CouponRow) -> Result<CouponBody, ApiError> {
        let currency = row
            .currency
            .as_deref()
            .map(|code| Currency::parse(code).map_err(|error| ApiError::internal(&error)))
            .transpose()?;
        Ok(CouponBody {
            id: CouponId::from_uuid(row.id),
            code: row.code.clone(),
            percent_bps: row.percent_bps,
            amount: row.amount,
            currency,
            valid_from: row.valid_from,
            valid_until: row.valid_until,
            max_redemptions: row.max_redemptions,
            redemptions: row.redemptions,
            active: row.active,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Whether the coupon applies to a quote in `currency` at `now`, as the engine's order
/// discount; or why not, for the caller to name the code.
pub fn applicable(row: &CouponRow, currency: Currency, now: OffsetDateTime) -> Result<OrderDiscount, String> {
    if !row.active {
        return Err(format!("{} is not active.", row.code));
    }
    if row.valid_from.is_some_and(|from| now < from) || row.valid_until.is_some_and(|until| now >= until) {
        return Err(format!("{} is not valid now.", row.code));
    }
    if row.max_redemptions.is_some_and(|max| row.redemptions >= max) {
        return Err(format!("{} has been used as many times as it may be.", row.code));
    }
    let discount = match (row.percent_bps, row.amount, row.currency.as_deref()) {
        (Some(bps), None, None) => Discount::Percent(
            u32::try_from(bps).ok().and_then(|bps| RateBps::new(bps).ok()).ok_or_else(|| String::from("a bad rate"))?,
        ),
        (None, Some(amount), Some(code)) if code == currency.code() => {
            Discount::Amount(Money::from_minor(amount, currency))
        }
        (None, Some(_), Some(code)) => return Err(format!("{} takes an amount off an order in {code}.", row.code)),
        _ => return Err(String::from("a coupon stored without its discount")),
    };
    Ok(OrderDiscount { code: row.code.clone(), discount })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCouponRequest {
    /// 3 to 32 letters, digits, `_` or `-`; stored upper case, unique per business.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")]
    pub code: String,
    /// A percentage off the order, 1 to 10000 basis points; or else `amount`.
    #[schema(minimum = 1, maximum = 10000)]
    pub percent_bps: Option<i64>,
    /// A fixed amount off the order, with its `currency`.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount: Option<i64>,
    #[schema(value_type = Option<Currency>)]
    pub currency: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// RFC 3339; after `valid_from`.
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_redemptions: Option<i64>,
}

fn parse_time(text: Option<&str>, field: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|text| {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            ApiError::invalid(field, format!("{field} is an RFC 3339 time, such as 2027-01-01T00:00:00Z."))
        })
    })
    .transpose()
}

fn parse_limit(limit: Option<i64>) -> Result<Option<i32>, ApiError> {
    limit
        .map(|limit| {
            i32::try_from(limit)
                .ok()
                .filter(|limit| (1..=1_000_000_000).contains(limit))
                .ok_or_else(|| ApiError::invalid("max_redemptions", "max_redemptions is 1 to 1000000000."))
        })
        .transpose()
}

async fn announce(tx: &mut Tx, body: &CouponBody, business: uuid::Uuid, event_type: EventType) -> Result<(), ApiError> {
    Ok(store::announce(tx, business, body.id.to_string(), body.version, body.updated_at, event_type, body).await?)
}

/// Create a coupon.
#[utoipa::path(post, path = "/v1/coupons", tag = "commerce",
    request_body = CreateCouponRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = CouponBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: the business has a coupon with this code."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: not exactly one of percent_bps and amount, an amount without its currency, or an end before the start."),
    ),
    security(("bearer" = [])))]
async fn create_coupon(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateCouponRequest>,
) -> Result<Response, ApiError> {
    let code = parse_code(&request.code).ok_or_else(|| {
        ApiError::invalid("code", "code is 3 to 32 letters, digits, '_' or '-', starting with a letter or digit.")
    })?;
    let (percent_bps, amount, currency) = match (request.percent_bps, request.amount, request.currency.as_deref()) {
        (Some(bps), None, None) => {
            let bps = i32::try_from(bps)
                .ok()
                .filter(|bps| (1..=10_000).contains(bps))
                .ok_or_else(|| ApiError::invalid("percent_bps", "percent_bps is 1 to 10000."))?;
            (Some(bps), None, None)
        }
        (None, Some(amount), Some(currency)) => {
            let currency =
                Currency::parse(currency).map_err(|error| ApiError::invalid("currency", error.to_string()))?;
            if !(1..=UNIT_AMOUNT_MAX).contains(&amount) {
                return Err(ApiError::invalid("amount", format!("amount is 1 to {UNIT_AMOUNT_MAX} minor units.")));
            }
            (None, Some(amount), Some(currency.code()))
        }
        (None, Some(_), None) => return Err(ApiError::rule("currency", "An amount off needs its currency.")),
        (None, None, Some(_)) => return Err(ApiError::rule("amount", "A currency goes with an amount off.")),
        _ => return Err(ApiError::rule("percent_bps", "A coupon is exactly one of percent_bps and amount.")),
    };
    let valid_from = parse_time(request.valid_from.as_deref(), "valid_from")?;
    let valid_until = parse_time(request.valid_until.as_deref(), "valid_until")?;
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        if from >= until {
            return Err(ApiError::rule("valid_until", "valid_until is after valid_from."));
        }
    }
    let max_redemptions = parse_limit(request.max_redemptions)?;
    let new = store::NewCoupon {
        id: CouponId::generate().as_uuid(),
        business: principal.business_id,
        code: &code,
        percent_bps,
        amount,
        currency,
        valid_from,
        valid_until,
        max_redemptions,
    };
    let row = store::insert_coupon(&mut tx, &new).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::StateConflict, format!("A coupon with code {code} exists already.")).with_param("code")
    })?;
    let body = CouponBody::of(&row)?;
    announce(&mut tx, &body, row.business_id, EventType::CouponCreated).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Retrieve a coupon.
#[utoipa::path(get, path = "/v1/coupons/{id}", tag = "commerce", params(("id" = CouponId, Path)),
    responses((status = 200, body = CouponBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_coupon(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<CouponId>,
) -> Result<axum::Json<CouponBody>, ApiError> {
    let row = store::find_coupon(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("coupon"))?;
    Ok(axum::Json(CouponBody::of(&row)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CouponListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last coupon of the previous page.
    pub starting_after: Option<String>,
}

/// List coupons, newest first.
#[utoipa::path(get, path = "/v1/coupons", tag = "commerce", params(CouponListParams),
    responses((status = 200, body = Page<CouponBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_coupons(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<CouponListParams>,
) -> Result<axum::Json<Page<CouponBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| CouponId::parse(text).ok())?;
    let rows = store::list_coupons(
        &mut tx,
        principal.business_id,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies = rows.iter().map(CouponBody::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// A change to a coupon: only the fields sent change. Its code and discount never do
/// (quotes and orders name them); make a new coupon instead.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCouponRequest {
    pub active: Option<bool>,
    /// `null` removes the end.
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<Option<String>>,
    /// `null` removes the limit; never below what was redeemed.
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub max_redemptions: Option<Option<i64>>,
}

/// Update a coupon. Send `If-Match: <version>` to make sure nobody changed it since you
/// read it.
#[utoipa::path(patch, path = "/v1/coupons/{id}", tag = "commerce",
    params(("id" = CouponId, Path), ("If-Match" = Option<String>, Header, description = "The coupon's `version`.")),
    request_body = UpdateCouponRequest,
    responses(
        (status = 200, body = CouponBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a limit below the redemptions made, or an end before the start."),
    ),
    security(("bearer" = [])))]
async fn update_coupon(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<CouponId>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateCouponRequest>,
) -> Result<axum::Json<CouponBody>, ApiError> {
    let valid_until =
        request.valid_until.as_ref().map(|text| parse_time(text.as_deref(), "valid_until")).transpose()?;
    let max_redemptions = request.max_redemptions.map(parse_limit).transpose()?;
    let row = store::find_coupon(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("coupon"))?;
    till_http::update::check_if_match(&headers, row.version, "coupon")?;
    let changes = store::CouponChanges {
        active: request.active.unwrap_or(row.active),
        valid_until: valid_until.unwrap_or(row.valid_until),
        max_redemptions: max_redemptions.unwrap_or(row.max_redemptions),
    };
    // The version is checked again by the row: a change since the read above is a 412.
    let Some(updated) = store::update_coupon(&mut tx, id.as_uuid(), row.version, &changes).await? else {
        let current = store::find_coupon(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("coupon"))?;
        if current.version != row.version {
            return Err(ApiError::new(
                ErrorCode::VersionMismatch,
                "The coupon changed meanwhile; re-read it and try again.",
            )
            .with_param("If-Match"));
        }
        if changes.max_redemptions.is_some_and(|max| current.redemptions > max) {
            return Err(ApiError::rule(
                "max_redemptions",
                format!("It has been redeemed {} times; the limit cannot be lower.", current.redemptions),
            ));
        }
        return Err(ApiError::rule("valid_until", "valid_until is after valid_from."));
    };
    let body = CouponBody::of(&updated)?;
    announce(&mut tx, &body, updated.business_id, EventType::CouponUpdated).await?;
    Ok(axum::Json(body))
}
