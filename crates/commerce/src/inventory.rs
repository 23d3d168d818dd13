//! `/v1/inventory/{sku}`: a SKU's stock, and adjustments to it.
//!
//! `available` is `on_hand - reserved`, and the table's checks keep `reserved` within
//! `0 ..= on_hand`: the database itself refuses any change that would sell stock the
//! business does not have. An adjustment is one conditional UPDATE
//! ([`store::adjust_stock`]), so two concurrent ones cannot both pass a check that only
//! one of them should.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::HumanText;
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::{self, Sku};
use crate::store::{self, StockRow};
use crate::{MovementId, ProductId};

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_inventory))
        .routes(routes!(adjust_inventory))
        .routes(routes!(list_movements))
}

/// A SKU's stock.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "sku": "TSHIRT-M", "product_id": "prod_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0",
    "on_hand": 12, "reserved": 2, "available": 10, "version": 4, "updated_at": "2026-12-03T10:00:00Z"
}))]
pub struct InventoryBody {
    pub sku: String,
    pub product_id: ProductId,
    /// Units the business holds.
    pub on_hand: i64,
    /// Units held for checkouts in progress.
    pub reserved: i64,
    /// `on_hand - reserved`: what can still be sold. Never negative.
    pub available: i64,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl InventoryBody {
    pub fn of(row: &StockRow) -> InventoryBody {
        InventoryBody {
            sku: row.sku.clone(),
            product_id: ProductId::from_uuid(row.product_id),
            on_hand: row.on_hand,
            reserved: row.reserved,
            // The table's checks keep reserved within 0..=on_hand.
            available: row.on_hand.saturating_sub(row.reserved),
            version: row.version,
            updated_at: row.updated_at,
        }
    }
}

/// A path's SKU; one that is not a SKU names no stock (404), as an unknown one does.
fn sku_of(path: Result<Path<String>, PathRejection>) -> Result<Sku, ApiError> {
    let Path(text) = path.map_err(|_| ApiError::not_found("inventory"))?;
    Sku::parse(&text).map_err(|_| ApiError::not_found("inventory"))
}

/// A SKU's stock.
#[utoipa::path(get, path = "/v1/inventory/{sku}", tag = "commerce", params(("sku" = String, Path)),
    responses((status = 200, body = InventoryBody), (status = 404, body = Problem, content_type = "application/problem+json", description = "No product with this SKU tracks inventory.")),
    security(("bearer" = [])))]
async fn get_inventory(
    principal: Principal,
    mut tx: Tx,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<InventoryBody>, ApiError> {
    let sku = sku_of(path)?;
    let row = store::find_stock(&mut tx, principal.business_id, sku.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("inventory"))?;
    Ok(axum::Json(InventoryBody::of(&row)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Units added (received, found in a count) or, negative, removed (damaged, lost).
    /// At most 1 000 000 000 either way; 0 is refused (422).
    #[schema(minimum = -1_000_000_000_i64, maximum = 1_000_000_000_i64)]
    pub delta: i64,
    /// Why, for the stock's history: 1 to 200 characters.
    #[schema(value_type = till_kit::schema::Name200)]
    pub reason: String,
}

/// One change to a SKU's stock.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdjustmentBody {
    pub id: MovementId,
    pub sku: String,
    pub delta: i64,
    pub reason: String,
    /// The stock after it.
    pub inventory: InventoryBody,
}

/// Adjust a SKU's stock: the initial count, a delivery, a write-off. Refused (409
/// `insufficient_stock`) when it would leave less on hand than is reserved.
#[utoipa::path(post, path = "/v1/inventory/{sku}/adjustments", tag = "commerce", params(("sku" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    request_body = AdjustmentRequest,
    responses(
        (status = 201, body = AdjustmentBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No product with this SKU tracks inventory."),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "insufficient_stock: fewer units are on hand and unreserved than the delta removes."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a delta of 0, or stock that would exceed 1 000 000 000 000 units."),
    ),
    security(("bearer" = [])))]
async fn adjust_inventory(
    principal: Principal,
    mut tx: Tx,
    path: Result<Path<String>, PathRejection>,
    ApiJson(request): ApiJson<AdjustmentRequest>,
) -> Result<Response, ApiError> {
    let sku = sku_of(path)?;
    let delta = catalog::delta(request.delta)?;
    let reason = HumanText::name(&request.reason, catalog::REASON_CHARS_MAX)
        .map_err(|refusal| ApiError::text("reason", refusal))?;
    let movement = MovementId::generate();
    let adjusted = store::adjust_stock(
        &mut tx,
        principal.business_id,
        sku.as_str(),
        movement.as_uuid(),
        delta,
        reason.as_str(),
        &principal.actor(),
    )
    .await?;
    let Some(row) = adjusted else {
        // Refused by its condition, or no such stock: the row says which.
        let stock = store::find_stock(&mut tx, principal.business_id, sku.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("inventory"))?;
        if delta < 0 {
            let free = stock.on_hand.saturating_sub(stock.reserved);
            return Err(ApiError::new(
                ErrorCode::InsufficientStock,
                format!(
                    "{} units are on hand and {} reserved: at most {free} can be removed.",
                    stock.on_hand, stock.reserved
                ),
            )
            .with_param("delta"));
        }
        return Err(ApiError::rule("delta", format!("A SKU holds at most {} units.", store::ON_HAND_MAX)));
    };
    let body = AdjustmentBody {
        id: movement,
        sku: row.sku.clone(),
        delta,
        reason: reason.into_string(),
        inventory: InventoryBody::of(&row),
    };
    // The event is about the movement (sequence 1): a SKU is no id, and two businesses
    // may both sell `TSHIRT-M`. A consumer orders one SKU's changes by `inventory.version`.
    store::announce(
        &mut tx,
        row.business_id,
        movement.to_string(),
        1,
        row.updated_at,
        EventType::InventoryAdjusted,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// One change to a SKU's stock, as its history shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MovementBody {
    pub id: MovementId,
    pub sku: String,
    /// `adjustment`, `sale` (a committed reservation) or `restock`.
    pub kind: String,
    /// Units added (positive) or removed (negative).
    pub delta: i64,
    /// Units on hand after it.
    pub on_hand: i64,
    pub reason: Option<String>,
    /// Who made it: `api_key:key_…`, `user:…`.
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MovementListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last movement of the previous page.
    pub starting_after: Option<String>,
}

/// A SKU's stock history, last applied first: every adjustment and sale, with the stock after it.
#[utoipa::path(get, path = "/v1/inventory/{sku}/movements", tag = "commerce", params(("sku" = String, Path), MovementListParams),
    responses((status = 200, body = Page<MovementBody>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No product with this SKU tracks inventory.")),
    security(("bearer" = [])))]
async fn list_movements(
    principal: Principal,
    mut tx: Tx,
    path: Result<Path<String>, PathRejection>,
    ApiQuery(params): ApiQuery<MovementListParams>,
) -> Result<axum::Json<Page<MovementBody>>, ApiError> {
    let sku = sku_of(path)?;
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| MovementId::parse(text).ok())?;
    store::find_stock(&mut tx, principal.business_id, sku.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("inventory"))?;
    let rows = store::list_movements(
        &mut tx,
        principal.business_id,
        sku.as_str(),
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let bodies: Vec<MovementBody> = rows
        .into_iter()
        .map(|row| MovementBody {
            id: MovementId::from_uuid(row.id),
            sku: row.sku,
            kind: row.kind,
            delta: row.delta,
            on_hand: row.on_hand,
            reason: row.reason,
            created_by: row.created_by,
            created_at: row.created_at,
        })
        .collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}
