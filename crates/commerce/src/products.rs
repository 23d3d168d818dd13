//! `/v1/products`: what a business sells, with its SKU, tax treatment and prices.
//!
//! The treatment is checked against the seller's country (a UK business charges VAT, an
//! Indian one GST) when the product is stored, so a quote never meets one its seller
//! cannot charge. A product that tracks inventory gets its stock row, at zero, in the
//! same transaction: the initial stock is an adjustment like any other.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_access::domain::Country;
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::schema::{Name200, Text1000};
use till_kit::{BusinessId, Currency, HumanText, Metadata};
use till_outbox::EventType;
use till_pricing::Treatment;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::{self, PriceFields, Refusal, Sku, TreatmentFields};
use crate::store::{self, PriceRow, ProductRow, StoredTreatment};
use crate::ProductId;

pub const PRODUCTS_PATH: &str = "/v1/products";

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(create_product, list_products)).routes(routes!(get_product, update_product))
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        if refusal.rule {
            ApiError::rule(refusal.field, refusal.message)
        } else {
            ApiError::invalid(refusal.field, refusal.message)
        }
    }
}

/// The seller's country, which decides the taxes its products carry.
pub(crate) async fn seller(
    tx: &mut sqlx::PgConnection,
    business: BusinessId,
) -> Result<till_access::business::BusinessProfile, ApiError> {
    till_access::business::profile(tx, business)
        .await
        .map_err(|error| ApiError::internal(&error))?
        .ok_or_else(|| ApiError::internal(&"the principal's business is not visible"))
}

/// A product's price in one currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceBody {
    pub currency: Currency,
    /// In minor units of `currency`, 0 to 100 000 000 000.
    pub unit_amount: i64,
    /// The amount includes the tax (a shelf price) or not (a trade price).
    pub tax_inclusive: bool,
}

/// Something a business sells.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "prod_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "name": "Cotton T-shirt", "description": null,
    "sku": "TSHIRT-M", "tax_treatment": "gst", "hsn_code": "61091000", "gst_rate_bps": 500,
    "prices": [{"currency": "INR", "unit_amount": 49900, "tax_inclusive": true}],
    "track_inventory": true, "active": true, "metadata": {}, "version": 1,
    "created_at": "2026-12-03T10:00:00Z", "updated_at": "2026-12-03T10:00:00Z"
}))]
pub struct ProductBody {
    pub id: ProductId,
    pub name: String,
    pub description: Option<String>,
    pub sku: String,
    /// UK: `standard` (20 %), `reduced` (5 %), `zero` (0 %) or `exempt`; India: `gst`.
    pub tax_treatment: String,
    /// India: the HSN (goods) or SAC (services) code, 4, 6 or 8 digits.
    pub hsn_code: Option<String>,
    /// India: the GST rate in basis points (1800 = 18 %).
    pub gst_rate_bps: Option<i32>,
    pub prices: Vec<PriceBody>,
    /// Its stock is counted (`/v1/inventory/{sku}`) and a sale cannot exceed it.
    pub track_inventory: bool,
    /// An inactive product cannot be quoted or sold.
    pub active: bool,
    pub metadata: BTreeMap<String, String>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ProductBody {
    pub fn of(row: &ProductRow, prices: &[PriceRow]) -> Result<ProductBody, ApiError> {
        let prices = prices
            .iter()
            .filter(|price| price.product_id == row.id)
            .map(|price| {
                let currency = Currency::parse(&price.currency).map_err(|error| ApiError::internal(&error))?;
                Ok(PriceBody { currency, unit_amount: price.unit_amount, tax_inclusive: price.tax_inclusive })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let metadata = serde_json::from_value(row.metadata.clone()).map_err(|error| ApiError::internal(&error))?;
        Ok(ProductBody {
            id: ProductId::from_uuid(row.id),
            name: row.name.clone(),
            description: row.description.clone(),
            sku: row.sku.clone(),
            tax_treatment: row.tax_treatment.clone(),
            hsn_code: row.hsn_code.clone(),
            gst_rate_bps: row.gst_rate_bps,
            prices,
            track_inventory: row.track_inventory,
            active: row.active,
            metadata,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    /// ISO 4217, upper case.
    #[schema(value_type = Currency)]
    pub currency: String,
    #[schema(minimum = 0, maximum = 100_000_000_000_i64)]
    pub unit_amount: i64,
    /// Whether `unit_amount` includes the tax; `false` if left out.
    #[serde(default)]
    pub tax_inclusive: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[schema(value_type = Name200)]
    pub name: String,
    #[schema(value_type = Option<Text1000>)]
    pub description: Option<String>,
    /// Unique per business: 1 to 64 letters, digits, `.`, `_` or `-`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub sku: String,
    #[schema(pattern = "^(standard|reduced|zero|exempt|gst)$")]
    pub tax_treatment: String,
    /// Required with `gst`: 4, 6 or 8 digits.
    #[schema(pattern = "^([0-9]{4}|[0-9]{6}|[0-9]{8})$")]
    pub hsn_code: Option<String>,
    /// Required with `gst`: 0, 25, 300, 500, 1800 or 4000 (and 1200 or 2800 for sales
    /// before 22 Sep 2025).
    #[schema(value_type = Option<crate::catalog::GstRateSchema>)]
    pub gst_rate_bps: Option<i64>,
    /// One to ten, one per currency.
    #[schema(min_items = 1, max_items = 10)]
    pub prices: Vec<PriceRequest>,
    /// `true` if left out.
    pub track_inventory: Option<bool>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

fn parse_name(name: &str) -> Result<HumanText, ApiError> {
    HumanText::name(name, catalog::NAME_CHARS_MAX).map_err(|refusal| ApiError::text("name", refusal))
}

fn parse_description(description: Option<&str>) -> Result<Option<HumanText>, ApiError> {
    description
        .map(|text| {
            HumanText::parse(text, catalog::DESCRIPTION_CHARS_MAX)
                .map_err(|refusal| ApiError::text("description", refusal))
        })
        .transpose()
}

fn parse_metadata(metadata: Option<BTreeMap<String, String>>) -> Result<serde_json::Value, ApiError> {
    let metadata = Metadata::parse(metadata.unwrap_or_default())
        .map_err(|error| ApiError::invalid("metadata", error.to_string()))?;
    serde_json::to_value(metadata.as_map()).map_err(|error| ApiError::internal(&error))
}

fn parse_prices(prices: &[PriceRequest]) -> Result<Vec<(String, i64, bool)>, ApiError> {
    let fields: Vec<PriceFields<'_>> = prices
        .iter()
        .map(|price| PriceFields {
            currency: &price.currency,
            unit_amount: price.unit_amount,
            tax_inclusive: price.tax_inclusive,
        })
        .collect();
    let prices = catalog::prices(&fields)?;
    Ok(prices
        .iter()
        .map(|price| (price.unit_amount.currency().code().to_string(), price.unit_amount.minor(), price.tax_inclusive))
        .collect())
}

/// A checked treatment in the columns that store it.
fn stored(treatment: &Treatment) -> StoredTreatment<'_> {
    match treatment {
        Treatment::Uk(uk) => StoredTreatment { tax_treatment: uk.as_str(), hsn_code: None, gst_rate_bps: None },
        Treatment::Gst { hsn, rate } => StoredTreatment {
            tax_treatment: "gst",
            hsn_code: Some(hsn.as_str()),
            // A rate is at most 10 000 basis points.
            gst_rate_bps: i32::try_from(rate.rate().bps()).ok(),
        },
    }
}

async fn body_of(tx: &mut Tx, row: &ProductRow) -> Result<ProductBody, ApiError> {
    let prices = store::prices_of(tx, &[row.id]).await?;
    ProductBody::of(row, &prices)
}

async fn announce(
    tx: &mut Tx,
    body: &ProductBody,
    event_type: EventType,
    business: uuid::Uuid,
) -> Result<(), ApiError> {
    Ok(store::announce(tx, business, body.id.to_string(), body.version, body.updated_at, event_type, body).await?)
}

/// Add a product to the catalog.
#[utoipa::path(post, path = "/v1/products", tag = "commerce",
    request_body = CreateProductRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = ProductBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: the business has a product with this SKU."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a treatment its seller's country does not charge, or a field it does not take."),
    ),
    security(("bearer" = [])))]
async fn create_product(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let name = parse_name(&request.name)?;
    let description = parse_description(request.description.as_deref())?;
    let sku = Sku::parse(&request.sku)?;
    let prices = parse_prices(&request.prices)?;
    let metadata = parse_metadata(request.metadata)?;
    let seller = seller(&mut tx, principal.business_id).await?;
    let treatment = catalog::treatment(
        seller.country,
        &TreatmentFields {
            tax_treatment: &request.tax_treatment,
            hsn_code: request.hsn_code.as_deref(),
            gst_rate_bps: request.gst_rate_bps,
        },
    )?;
    let id = ProductId::generate().as_uuid();
    let new = store::NewProduct {
        id,
        business: principal.business_id,
        name: name.as_str(),
        description: description.as_ref().map(HumanText::as_str),
        sku: sku.as_str(),
        treatment: stored(&treatment),
        track_inventory: request.track_inventory.unwrap_or(true),
        metadata,
    };
    let row = store::insert_product(&mut tx, &new).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::StateConflict, format!("A product with SKU {} exists already.", sku.as_str()))
            .with_param("sku")
    })?;
    store::set_prices(&mut tx, principal.business_id, id, &prices).await?;
    let body = body_of(&mut tx, &row).await?;
    announce(&mut tx, &body, EventType::ProductCreated, row.business_id).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Retrieve a product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "commerce", params(("id" = ProductId, Path)),
    responses((status = 200, body = ProductBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_product(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<ProductId>,
) -> Result<axum::Json<ProductBody>, ApiError> {
    let row = store::find_product(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("product"))?;
    Ok(axum::Json(body_of(&mut tx, &row).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last product of the previous page.
    pub starting_after: Option<String>,
    /// Only the product with this SKU (a list of at most one).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub sku: Option<String>,
}

/// List products, newest first; `?sku=` finds one by its SKU.
#[utoipa::path(get, path = "/v1/products", tag = "commerce", params(ProductListParams),
    responses((status = 200, body = Page<ProductBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_products(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ProductListParams>,
) -> Result<axum::Json<Page<ProductBody>>, ApiError> {
    let sku = params.sku.as_deref().map(Sku::parse).transpose()?;
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| ProductId::parse(text).ok())?;
    let rows = store::list_products(
        &mut tx,
        principal.business_id,
        sku.as_ref().map(Sku::as_str),
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let prices = store::prices_of(&mut tx, &ids).await?;
    let bodies = rows.iter().map(|row| ProductBody::of(row, &prices)).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

/// A change to a product: only the fields sent change. The SKU names its stock and
/// cannot change; `prices`, when sent, replaces them all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[schema(value_type = Option<Name200>)]
    pub name: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<Text1000>)]
    pub description: Option<Option<String>>,
    #[schema(pattern = "^(standard|reduced|zero|exempt|gst)$")]
    pub tax_treatment: Option<String>,
    #[schema(pattern = "^([0-9]{4}|[0-9]{6}|[0-9]{8})$")]
    pub hsn_code: Option<String>,
    #[schema(value_type = Option<crate::catalog::GstRateSchema>)]
    pub gst_rate_bps: Option<i64>,
    #[schema(min_items = 1, max_items = 10)]
    pub prices: Option<Vec<PriceRequest>>,
    pub active: Option<bool>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Update a product. Send `If-Match: <version>` to make sure nobody changed it since you
/// read it.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "commerce",
    params(("id" = ProductId, Path), ("If-Match" = Option<String>, Header, description = "The product's `version`.")),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, body = ProductBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn update_product(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<ProductId>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateProductRequest>,
) -> Result<axum::Json<ProductBody>, ApiError> {
    // The request is checked whole before the product's version is: a malformed request
    // is a 400 whatever the product's state.
    let name = request.name.as_deref().map(parse_name).transpose()?;
    let description = request.description.as_ref().map(|text| parse_description(text.as_deref())).transpose()?;
    let prices = request.prices.as_deref().map(parse_prices).transpose()?;
    let metadata = request.metadata.map(|map| parse_metadata(Some(map))).transpose()?;
    let row = store::lock_product(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("product"))?;
    till_http::update::check_if_match(&headers, row.version, "product")?;
    let seller = seller(&mut tx, principal.business_id).await?;
    // The treatment's fields are merged with what is stored, then checked together: an
    // Indian product may change its rate alone, and keeps its HSN code.
    let tax_treatment = request.tax_treatment.clone().unwrap_or_else(|| row.tax_treatment.clone());
    let (hsn_code, gst_rate_bps) = if tax_treatment == "gst" && seller.country == Country::IN {
        (
            request.hsn_code.as_deref().or(row.hsn_code.as_deref()),
            request.gst_rate_bps.or(row.gst_rate_bps.map(i64::from)),
        )
    } else {
        (request.hsn_code.as_deref(), request.gst_rate_bps)
    };
    let treatment =
        catalog::treatment(seller.country, &TreatmentFields { tax_treatment: &tax_treatment, hsn_code, gst_rate_bps })?;
    let metadata = metadata.unwrap_or_else(|| row.metadata.clone());
    let changes = store::ProductChanges {
        name: name.as_ref().map_or(row.name.as_str(), HumanText::as_str),
        description: match &description {
            Some(description) => description.as_ref().map(HumanText::as_str),
            None => row.description.as_deref(),
        },
        treatment: stored(&treatment),
        active: request.active.unwrap_or(row.active),
        metadata: &metadata,
    };
    let updated = store::update_product(&mut tx, id.as_uuid(), &changes).await?;
    if let Some(prices) = &prices {
        store::set_prices(&mut tx, principal.business_id, id.as_uuid(), prices).await?;
    }
    let body = body_of(&mut tx, &updated).await?;
    announce(&mut tx, &body, EventType::ProductUpdated, updated.business_id).await?;
    Ok(axum::Json(body))
}
