//! `GET /v1/events` and `GET /v1/events/{id}`: the business's own events, newest first,
//! of the types the caller's role may read (`EventType::read_role`).

use serde::Deserialize;
use till_http::auth::Principal;
use till_http::extract::{ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::BusinessId;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use till_outbox::envelope::{EventBody, EventType};
use till_outbox::EventId;

pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(list_events)).routes(routes!(get_event))
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    #[sqlx(rename = "type")]
    event_type: String,
    version: i32,
    business_id: Uuid,
    resource_id: String,
    sequence: i64,
    occurred_at: OffsetDateTime,
    request_id: Option<String>,
    data: serde_json::Value,
}

impl From<EventRow> for EventBody {
    fn from(row: EventRow) -> EventBody {
        EventBody {
            id: EventId::from_uuid(row.id),
            event_type: row.event_type,
            version: row.version,
            business_id: BusinessId::from_uuid(row.business_id),
            resource_id: row.resource_id,
            sequence: row.sequence,
            occurred_at: row.occurred_at,
            request_id: row.request_id,
            data: row.data,
        }
    }
}

/// A resource id is a prefix, `_` and 32 hex digits; this leaves room for longer ones.
const RESOURCE_ID_CHARS_MAX: usize = 64;

const EVENT_COLUMNS: &str = "id, type, version, business_id, resource_id, sequence, occurred_at, request_id, data";

/// An event type's name (docs/EVENTS.md).
pub struct EventTypeOnly;

impl utoipa::PartialSchema for EventTypeOnly {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(EventType::ALL.iter().map(|event_type| event_type.name())))
            .into()
    }
}

impl utoipa::ToSchema for EventTypeOnly {}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
    /// Only events of this type (e.g. `transfer.created`).
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<EventTypeOnly>)]
    pub event_type: Option<String>,
    /// Only events about this resource (e.g. `tr_…`), oldest first when given.
    #[param(pattern = "^[A-Za-z0-9_]{1,64}$")]
    pub resource_id: Option<String>,
}

/// The names of the event types the caller's role may read: an event of another type is
/// as invisible as another business's (`GET /v1/events/{id}` answers 404).
fn readable(principal: &Principal) -> Vec<&'static str> {
    EventType::readable_by(principal.role).into_iter().map(EventType::name).collect()
}

/// The business's events, newest first (or one resource's, in sequence order). Only the
/// types the caller's role may read (API-key events need an admin).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventListParams),
    responses((status = 200, body = Page<EventBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_events(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<EventListParams>,
) -> Result<axum::Json<Page<EventBody>>, ApiError> {
    let page =
        ListParams { limit: params.limit, starting_after: params.starting_after }.page(|t| EventId::parse(t).ok())?;
    let event_type = params
        .event_type
        .as_deref()
        .map(|name| {
            EventType::parse(name).ok_or_else(|| ApiError::invalid("type", "Not an event type of docs/EVENTS.md."))
        })
        .transpose()?;
    if let Some(resource_id) = params.resource_id.as_deref() {
        let id_shaped = (1..=RESOURCE_ID_CHARS_MAX).contains(&resource_id.len())
            && resource_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !id_shaped {
            return Err(ApiError::invalid("resource_id", "resource_id must be a resource id, such as tr_…."));
        }
    }
    // One resource's events read in sequence order; otherwise newest first.
    // The log's position is the order of publication (ids made by SQL are not
    // time-ordered), so "newest first" is position descending.
    let order = if params.resource_id.is_some() { "sequence ASC" } else { "position DESC" };
    let cursor = if params.resource_id.is_some() {
        "($3::uuid IS NULL OR sequence > (SELECT c.sequence FROM events.log c WHERE c.id = $3))"
    } else {
        "($3::uuid IS NULL OR position < (SELECT c.position FROM events.log c WHERE c.id = $3))"
    };
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events.log
          WHERE business_id = $1 AND ($2::text IS NULL OR type = $2) AND ($5::text IS NULL OR resource_id = $5)
            AND type = ANY($6) AND {cursor}
          ORDER BY {order} LIMIT $4"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(event_type.map(EventType::name))
    .bind(page.starting_after.map(|id| id.as_uuid()))
    .bind(page.fetch_limit())
    .bind(params.resource_id)
    .bind(readable(&principal))
    .fetch_all(&mut *tx)
    .await?;
    let bodies: Vec<EventBody> = rows.into_iter().map(EventBody::from).collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |event| event.id.to_string())))
}

/// One event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = EventId, Path)),
    responses((status = 200, body = EventBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_event(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<EventId>,
) -> Result<axum::Json<EventBody>, ApiError> {
    let row: Option<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events.log WHERE business_id = $1 AND id = $2 AND type = ANY($3)"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(readable(&principal))
    .fetch_optional(&mut *tx)
    .await?;
    Ok(axum::Json(row.ok_or_else(|| ApiError::not_found("event"))?.into()))
}
