//! `/v1/reservations`: stock held for a checkout.
//!
//! A reservation holds every line or none: each SKU's units are taken by a conditional
//! UPDATE ([`store::reserve_line`]), in SKU order so that two reservations over the same
//! SKUs queue rather than deadlock, and the first line that does not fit refuses the
//! whole reservation (409 `out_of_stock`) and the unit of work rolls the rest back.
//! It ends once — committed (a sale), released, or expired by the sweeper — by an
//! UPDATE guarded on `status = 'active'` and on its expiry, so a commit racing the
//! sweeper is decided by the row lock, never twice.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, ErrorCode, Problem};
use till_kit::{BusinessId, HumanText};
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::Sku;
use crate::store::{self, Ending, ReservationLineRow, ReservationRow};
use crate::ReservationId;

pub const RESERVATIONS_PATH: &str = "/v1/reservations";
/// How long a reservation holds its stock unless the request says otherwise.
pub const DEFAULT_EXPIRES_IN_SECONDS: i32 = 15 * 60;
pub const EXPIRES_IN_SECONDS_MAX: i32 = 24 * 60 * 60;
pub const LINES_MAX: usize = 100;
pub const QUANTITY_MAX: i64 = 1_000_000;

pub fn routes() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_reservation, list_reservations))
        .routes(routes!(get_reservation))
        .routes(routes!(commit_reservation))
        .routes(routes!(release_reservation))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservationLineBody {
    pub sku: String,
    pub quantity: i64,
}

/// Stock held for a checkout.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "rsv_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "status": "active", "reference": "cart 42",
    "lines": [{"sku": "MUG-BLUE", "quantity": 2}], "expires_at": "2026-12-03T10:15:00Z", "ended_at": null, "pinned_at": null,
    "version": 1, "created_at": "2026-12-03T10:00:00Z", "updated_at": "2026-12-03T10:00:00Z"
}))]
pub struct ReservationBody {
    pub id: ReservationId,
    /// `active`, `committed` (sold), `released` or `expired`.
    pub status: String,
    pub reference: Option<String>,
    pub lines: Vec<ReservationLineBody>,
    /// When an active reservation gives its stock back by itself.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// When a checkout's payment was authorised against it: a pinned reservation no
    /// longer expires; it ends when its order is paid (committed) or fails (released).
    #[serde(with = "time::serde::rfc3339::option")]
    pub pinned_at: Option<OffsetDateTime>,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ReservationBody {
    pub fn of(row: &ReservationRow, lines: &[ReservationLineRow]) -> ReservationBody {
        ReservationBody {
            id: ReservationId::from_uuid(row.id),
            status: row.status.clone(),
            reference: row.reference.clone(),
            lines: lines
                .iter()
                .filter(|line| line.reservation_id == row.id)
                .map(|line| ReservationLineBody { sku: line.sku.clone(), quantity: line.quantity })
                .collect(),
            expires_at: row.expires_at,
            ended_at: row.ended_at,
            pinned_at: row.pinned_at,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationLineRequest {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub sku: String,
    /// 1 to 1 000 000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservationRequest {
    /// 1 to 100 lines; a SKU named twice is held once for the sum.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReservationLineRequest>,
    /// 1 to 86 400 seconds; 900 (15 minutes) if left out.
    #[schema(minimum = 1, maximum = 86_400)]
    pub expires_in_seconds: Option<i64>,
    /// The caller's own reference (a cart, an order): 1 to 200 characters.
    #[schema(value_type = Option<till_kit::schema::Name200>)]
    pub reference: Option<String>,
}

async fn body_of(tx: &mut Tx, row: &ReservationRow) -> Result<ReservationBody, ApiError> {
    let lines = store::reservation_lines(tx, row.id).await?;
    Ok(ReservationBody::of(row, &lines))
}

async fn announce(
    tx: &mut Tx,
    body: &ReservationBody,
    business: uuid::Uuid,
    event_type: EventType,
) -> Result<(), ApiError> {
    Ok(store::announce(tx, business, body.id.to_string(), body.version, body.updated_at, event_type, body).await?)
}

/// How long a hold lasts: `expires_in_seconds` as asked (1 to a day), or 15 minutes.
pub(crate) fn expires_in(seconds: Option<i64>) -> Result<i32, ApiError> {
    match seconds {
        None => Ok(DEFAULT_EXPIRES_IN_SECONDS),
        Some(seconds) => i32::try_from(seconds)
            .ok()
            .filter(|seconds| (1..=EXPIRES_IN_SECONDS_MAX).contains(seconds))
            .ok_or_else(|| {
                ApiError::invalid("expires_in_seconds", format!("expires_in_seconds is 1 to {EXPIRES_IN_SECONDS_MAX}."))
            }),
    }
}

/// The request's lines, checked and merged by SKU (in SKU order).
fn lines_of(request: &[ReservationLineRequest]) -> Result<BTreeMap<Sku, (i64, usize)>, ApiError> {
    if request.is_empty() || request.len() > LINES_MAX {
        return Err(ApiError::invalid("lines", format!("a reservation has 1 to {LINES_MAX} lines.")));
    }
    let mut lines: BTreeMap<Sku, (i64, usize)> = BTreeMap::new();
    for (index, line) in request.iter().enumerate() {
        let sku = Sku::parse(&line.sku)
            .map_err(|refusal| ApiError::invalid(format!("lines[{index}].sku"), refusal.message))?;
        if !(1..=QUANTITY_MAX).contains(&line.quantity) {
            return Err(ApiError::invalid(
                format!("lines[{index}].quantity"),
                format!("quantity is 1 to {QUANTITY_MAX}."),
            ));
        }
        let entry = lines.entry(sku).or_insert((0, index));
        entry.0 = entry.0.saturating_add(line.quantity);
        if entry.0 > QUANTITY_MAX {
            return Err(ApiError::rule(
                format!("lines[{index}].quantity"),
                format!("a SKU's quantities add up to at most {QUANTITY_MAX}."),
            ));
        }
    }
    Ok(lines)
}

/// Hold stock for a checkout: every line, or none (409 `out_of_stock`).
#[utoipa::path(post, path = "/v1/reservations", tag = "commerce",
    request_body = CreateReservationRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = ReservationBody),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "A line is wrong; `param` names it."),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "resource_missing: a line's SKU has no stock (no product with it tracks inventory); `param` names the line."),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "out_of_stock: a line's SKU has fewer units available; `param` names the line and nothing is held."),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "rule_violated: a SKU named on several lines whose quantities add up to more than 1 000 000."),
    ),
    security(("bearer" = [])))]
async fn create_reservation(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateReservationRequest>,
) -> Result<Response, ApiError> {
    let lines = lines_of(&request.lines)?;
    let expires_in_seconds = expires_in(request.expires_in_seconds)?;
    let reference = request
        .reference
        .as_deref()
        .map(|text| HumanText::name(text, 200).map_err(|refusal| ApiError::text("reference", refusal)))
        .transpose()?;
    let id = ReservationId::generate();
    let actor = principal.actor();
    let row = store::insert_reservation(
        &mut tx,
        &store::NewReservation {
            id: id.as_uuid(),
            business: principal.business_id,
            reference: reference.as_ref().map(HumanText::as_str),
            expires_in_seconds,
            created_by: &actor,
        },
    )
    .await?;
    let held: Vec<(&str, i64, String)> =
        lines.iter().map(|(sku, (quantity, index))| (sku.as_str(), *quantity, format!("lines[{index}].sku"))).collect();
    hold(&mut tx, principal.business_id, id, &held).await?;
    let body = body_of(&mut tx, &row).await?;
    announce(&mut tx, &body, row.business_id, EventType::ReservationCreated).await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Announces the reservation as it now is (its lines read in the caller's transaction):
/// the sweeper's expiries and the checkout's holds, commits and releases.
pub(crate) async fn announce_row(
    connection: &mut sqlx::PgConnection,
    row: &ReservationRow,
    event_type: EventType,
) -> Result<ReservationBody, till_outbox::AnnounceError> {
    let lines = store::reservation_lines(connection, row.id).await?;
    let body = ReservationBody::of(row, &lines);
    store::announce(connection, row.business_id, body.id.to_string(), body.version, body.updated_at, event_type, &body)
        .await?;
    Ok(body)
}

/// Holds each `(sku, quantity, param)` for the reservation, in the order given (SKU
/// order, so that reservations over the same SKUs queue rather than deadlock), or
/// refuses at the first that does not fit: 409 `out_of_stock`, or 404 for a SKU with no
/// stock, naming `param`. The caller's transaction rolls back what was held before it.
pub(crate) async fn hold(
    tx: &mut Tx,
    business: BusinessId,
    reservation: ReservationId,
    lines: &[(&str, i64, String)],
) -> Result<(), ApiError> {
    for (sku, quantity, param) in lines {
        if store::reserve_line(tx, business, reservation.as_uuid(), sku, *quantity).await?.is_some() {
            continue;
        }
        let stock = store::find_stock(tx, business, sku).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::ResourceMissing, format!("No product with SKU {sku} tracks inventory."))
                .with_param(param.clone())
        })?;
        let available = stock.on_hand.saturating_sub(stock.reserved);
        return Err(ApiError::new(
            ErrorCode::OutOfStock,
            format!("{sku} has {available} available; {quantity} were asked for. Nothing was reserved."),
        )
        .with_param(param.clone()));
    }
    Ok(())
}

/// Retrieve a reservation.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "commerce", params(("id" = ReservationId, Path)),
    responses((status = 200, body = ReservationBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_reservation(
    _principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<ReservationId>,
) -> Result<axum::Json<ReservationBody>, ApiError> {
    let row =
        store::find_reservation(&mut tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("reservation"))?;
    Ok(axum::Json(body_of(&mut tx, &row).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReservationListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last reservation of the previous page.
    pub starting_after: Option<String>,
    /// Only reservations in this status (`active` shows the stock held now).
    #[param(pattern = "^(active|committed|released|expired)$")]
    pub status: Option<String>,
}

/// List reservations, newest first.
#[utoipa::path(get, path = "/v1/reservations", tag = "commerce", params(ReservationListParams),
    responses((status = 200, body = Page<ReservationBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_reservations(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ReservationListParams>,
) -> Result<axum::Json<Page<ReservationBody>>, ApiError> {
    let status = match params.status.as_deref() {
        None => None,
        Some(status @ ("active" | "committed" | "released" | "expired")) => Some(status),
        Some(_) => {
            return Err(ApiError::invalid("status", "status is active, committed, released or expired."));
        }
    };
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|text| ReservationId::parse(text).ok())?;
    let rows = store::list_reservations(
        &mut tx,
        principal.business_id,
        status,
        page.starting_after.map(|id| id.as_uuid()),
        page.fetch_limit(),
    )
    .await?;
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let lines = store::lines_of_reservations(&mut tx, &ids).await?;
    let bodies: Vec<ReservationBody> = rows.iter().map(|row| ReservationBody::of(row, &lines)).collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |body| body.id.to_string())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndReservationRequest {}

/// Ends the reservation as `ending`, or refuses (409) one that has ended or expired: a
/// retry of the same request is answered by its Idempotency-Key, so a second request to
/// end it is a request of its own, and it would change nothing.
async fn end(
    tx: &mut Tx,
    principal: &Principal,
    id: ReservationId,
    ending: Ending,
) -> Result<ReservationBody, ApiError> {
    if let Some(row) = store::end_reservation(tx, id.as_uuid(), ending, &principal.actor()).await? {
        let body = body_of(tx, &row).await?;
        let event_type = match ending {
            Ending::Committed => EventType::ReservationCommitted,
            Ending::Released => EventType::ReservationReleased,
            Ending::Expired => EventType::ReservationExpired,
        };
        announce(tx, &body, row.business_id, event_type).await?;
        return Ok(body);
    }
    // Nothing ended it: it is not this business's, or it has ended or expired already.
    let current = store::find_reservation(tx, id.as_uuid()).await?.ok_or_else(|| ApiError::not_found("reservation"))?;
    let why = if current.status == "active" {
        String::from("The reservation has expired; its stock is being given back.")
    } else {
        format!("The reservation is {}.", current.status)
    };
    Err(ApiError::new(ErrorCode::StateConflict, why))
}

/// Commit a reservation: its units are sold (on hand and reserved both fall). Refused
/// (409) once it has expired, been released or committed.
#[utoipa::path(post, path = "/v1/reservations/{id}/commit", tag = "commerce", params(("id" = ReservationId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses((status = 200, body = ReservationBody), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: expired, released or committed already.")),
    security(("bearer" = [])))]
async fn commit_reservation(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<ReservationId>,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<EndReservationRequest>,
) -> Result<axum::Json<ReservationBody>, ApiError> {
    Ok(axum::Json(end(&mut tx, &principal, id, Ending::Committed).await?))
}

/// Release a reservation: its units are available again.
#[utoipa::path(post, path = "/v1/reservations/{id}/release", tag = "commerce", params(("id" = ReservationId, Path),
        ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses((status = 200, body = ReservationBody), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "state_conflict: committed already (an expired one has given its stock back).")),
    security(("bearer" = [])))]
async fn release_reservation(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<ReservationId>,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<EndReservationRequest>,
) -> Result<axum::Json<ReservationBody>, ApiError> {
    Ok(axum::Json(end(&mut tx, &principal, id, Ending::Released).await?))
}

/// How often the sweeper looks for expired reservations, and how many it takes at once.
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    pub interval: Duration,
    pub batch: i32,
}

impl Default for SweeperConfig {
    fn default() -> SweeperConfig {
        SweeperConfig { interval: Duration::from_millis(500), batch: 100 }
    }
}

/// The sweeper: expires each active reservation past its expiry, in a transaction of
/// its own business, giving its stock back with `reservation.expired`.
pub async fn sweep(pool: PgPool, config: SweeperConfig, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match sweep_once(&pool, config.batch).await {
            Ok(expired) if expired >= usize::try_from(config.batch).unwrap_or(usize::MAX) => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "a reservation sweep failed; it runs again"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(config.interval) => {}
        }
    }
}

/// One pass; returns how many reservations it expired.
pub async fn sweep_once(pool: &PgPool, batch: i32) -> Result<usize, sqlx::Error> {
    let mut expired = 0_usize;
    for (business, reservation) in store::expired_reservations(pool, batch).await? {
        let mut tx = till_db::begin_tenant(pool, BusinessId::from_uuid(business)).await?;
        // A commit or release that won the row first leaves nothing to expire.
        let Some(row) = store::end_reservation(&mut tx, reservation, Ending::Expired, "sweeper").await? else {
            continue;
        };
        announce_row(&mut tx, &row, EventType::ReservationExpired).await.map_err(|error| match error {
            till_outbox::AnnounceError::Database(error) => error,
            till_outbox::AnnounceError::Encode(error) => sqlx::Error::Protocol(error.to_string()),
        })?;
        tx.commit().await?;
        expired = expired.saturating_add(1);
    }
    Ok(expired)
}
