//! Webhook endpoints over HTTP: create (the signing secret is shown once), list, get,
//! update, delete, rotate the secret, list deliveries with their attempts, and replay.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::secrets::shown_once;
use till_http::unit_of_work::Tx;
use till_http::ErrorCode;
use till_http::{ApiError, Problem};
use till_kit::Keyring;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::guard::check_url;
use super::secrets;
use super::signing::generate_secret;
use super::{WebhookConfig, WebhookDeliveryId, WebhookEndpointId};
use till_outbox::envelope::EventType;
use till_outbox::EventId;

const GRACE_SECONDS_DEFAULT: i64 = 24 * 60 * 60;
const GRACE_SECONDS_MAX: i64 = 7 * 24 * 60 * 60;
const DESCRIPTION_CHARS_MAX: usize = 500;

#[derive(Clone)]
pub struct WebhookState {
    pub config: WebhookConfig,
    /// Seals signing secrets at rest (`super::secrets`).
    pub keyring: Arc<Keyring>,
}

pub fn routes<S: Clone + Send + Sync + 'static>(config: WebhookConfig, keyring: Arc<Keyring>) -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay))
        .with_state(WebhookState { config, keyring })
}

/// A merchant's webhook endpoint. Its signing secret is shown only when created or rotated.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookEndpointBody {
    pub id: WebhookEndpointId,
    #[schema(example = "https://shop.example.com/till/webhooks")]
    pub url: String,
    pub description: Option<String>,
    /// Event types to receive, or `["*"]` for all.
    pub enabled_events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub version: i32,
    /// Since when every delivery has failed, if they have.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointBody,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks). Shown once.
    pub secret: String,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    description: Option<String>,
    enabled_events: Vec<String>,
    status: String,
    version: i32,
    failing_since: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
}

impl From<EndpointRow> for WebhookEndpointBody {
    fn from(row: EndpointRow) -> WebhookEndpointBody {
        WebhookEndpointBody {
            id: WebhookEndpointId::from_uuid(row.id),
            url: row.url,
            description: row.description,
            enabled_events: row.enabled_events,
            status: row.status,
            version: row.version,
            failing_since: row.failing_since,
            created_at: row.created_at,
        }
    }
}

/// An event type's name, or `*` for all of them (docs/EVENTS.md).
pub struct EventTypeName;

impl utoipa::PartialSchema for EventTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = EventType::ALL.iter().map(|event_type| event_type.name()).chain(["*"]);
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for EventTypeName {}

/// `since` of a replay: an event id or an RFC 3339 time.
pub struct ReplaySince;

impl utoipa::PartialSchema for ReplaySince {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::OneOfBuilder::new()
            .item(<till_outbox::EventId as utoipa::PartialSchema>::schema())
            .item(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime))),
            )
            .into()
    }
}

impl ToSchema for ReplaySince {}

const ENDPOINT_COLUMNS: &str = "id, url, description, enabled_events, status, version, failing_since, created_at";

fn parse_url(url: &str, config: &WebhookConfig) -> Result<String, ApiError> {
    if url.chars().count() > super::guard::URL_CHARS_MAX {
        return Err(ApiError::invalid("url", format!("url is at most {} characters.", super::guard::URL_CHARS_MAX)));
    }
    check_url(url, config.allow_private_targets)
        .map(|url| url.to_string())
        // WHATWG URL parsing and the address rules cannot be written as a schema: the
        // document says `format: uri`, and a URL the guard refuses is a broken rule.
        .map_err(|refusal| ApiError::rule("url", refusal.to_string()))
}

fn parse_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid("enabled_events", "List at least one event type, or \"*\" for all."));
    }
    for name in events {
        if name != "*" && EventType::parse(name).is_none() {
            return Err(ApiError::invalid(
                "enabled_events",
                format!("`{name}` is not an event type of docs/EVENTS.md."),
            ));
        }
    }
    let mut unique = events.to_vec();
    unique.sort();
    unique.dedup();
    Ok(unique)
}

fn parse_description(description: Option<String>) -> Result<Option<String>, ApiError> {
    description
        .map(|text| {
            till_kit::HumanText::parse(&text, DESCRIPTION_CHARS_MAX)
                .map(till_kit::HumanText::into_string)
                .map_err(|refusal| ApiError::text("description", refusal))
        })
        .transpose()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// `https` only, no credentials, not a loopback, private or other internal address
    /// (422 `rule_violated`).
    #[schema(format = "uri", max_length = 2048, example = "https://shop.example.com/till/webhooks")]
    pub url: String,
    #[schema(value_type = Vec<EventTypeName>, min_items = 1, example = json!(["transfer.created", "transfer.posted"]))]
    pub enabled_events: Vec<String>,
    #[schema(value_type = Option<till_kit::schema::Text500>)]
    pub description: Option<String>,
}

/// Register a webhook endpoint. It receives the events that the caller's role may read.
/// A business has at most 16 endpoints (422 `webhook_endpoint_limit`).
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks",
    request_body = CreateEndpointRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses((status = 201, body = WebhookEndpointWithSecret), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "webhook_endpoint_limit")),
    security(("bearer" = [])))]
async fn create_endpoint(
    principal: Principal,
    State(state): State<WebhookState>,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateEndpointRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let url = parse_url(&request.url, &state.config)?;
    let events = parse_events(&request.enabled_events)?;
    let description = parse_description(request.description)?;
    // Counted under a lock of the business's endpoints, so two creations at once cannot
    // both see room for one more.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('webhook_endpoints' || chr(31) || $1::text, 0))")
        .bind(principal.business_id.as_uuid())
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks.endpoints WHERE business_id = $1")
        .bind(principal.business_id.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    let limit = state.config.endpoints_per_business_max;
    if existing >= i64::from(limit) {
        return Err(ApiError::new(
            ErrorCode::WebhookEndpointLimit,
            format!("A business has at most {limit} webhook endpoints; delete one first."),
        ));
    }
    let id = WebhookEndpointId::generate();
    let secret = generate_secret();
    let row: EndpointRow = sqlx::query_as(&format!(
        "INSERT INTO webhooks.endpoints (id, business_id, url, description, enabled_events, secret_sealed, reader_role)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(id.as_uuid())
    .bind(principal.business_id.as_uuid())
    .bind(url)
    .bind(description)
    .bind(events)
    .bind(secrets::seal(&state.keyring, id.as_uuid(), &secret))
    .bind(principal.role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    Ok(shown_once((StatusCode::CREATED, axum::Json(WebhookEndpointWithSecret { endpoint: row.into(), secret }))))
}

/// List webhook endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks", params(ListParams),
    responses((status = 200, body = Page<WebhookEndpointBody>)), security(("bearer" = [])))]
async fn list_endpoints(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<WebhookEndpointBody>>, ApiError> {
    let page = params.page(|t| WebhookEndpointId::parse(t).ok())?;
    let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhooks.endpoints
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(page.starting_after.map(|id| id.as_uuid()))
    .bind(page.fetch_limit())
    .fetch_all(&mut *tx)
    .await?;
    let bodies = rows.into_iter().map(WebhookEndpointBody::from).collect();
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |endpoint| endpoint.id.to_string())))
}

async fn find(tx: &mut Tx, principal: &Principal, id: WebhookEndpointId) -> Result<EndpointRow, ApiError> {
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhooks.endpoints WHERE business_id = $1 AND id = $2"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// A webhook endpoint.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", params(("id" = WebhookEndpointId, Path)),
    responses((status = 200, body = WebhookEndpointBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_endpoint(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
) -> Result<axum::Json<WebhookEndpointBody>, ApiError> {
    Ok(axum::Json(find(&mut tx, &principal, id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    #[schema(format = "uri", max_length = 2048)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<EventTypeName>>, min_items = 1)]
    pub enabled_events: Option<Vec<String>>,
    #[schema(value_type = Option<till_kit::schema::Text500>)]
    pub description: Option<String>,
    /// `enabled` or `disabled`. Enabling clears `failing_since`.
    #[schema(pattern = "^(enabled|disabled)$")]
    pub status: Option<String>,
}

/// Update a webhook endpoint.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", params(("id" = WebhookEndpointId, Path)),
    request_body = UpdateEndpointRequest,
    responses((status = 200, body = WebhookEndpointBody), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn update_endpoint(
    principal: Principal,
    State(state): State<WebhookState>,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
    ApiJson(request): ApiJson<UpdateEndpointRequest>,
) -> Result<axum::Json<WebhookEndpointBody>, ApiError> {
    let current = find(&mut tx, &principal, id).await?;
    let url = request.url.as_deref().map(|url| parse_url(url, &state.config)).transpose()?.unwrap_or(current.url);
    let events = request.enabled_events.as_deref().map(parse_events).transpose()?.unwrap_or(current.enabled_events);
    let description = match request.description {
        Some(text) => parse_description(Some(text))?,
        None => current.description,
    };
    let status = match request.status.as_deref() {
        None => current.status,
        Some(status @ ("enabled" | "disabled")) => status.to_string(),
        Some(_) => return Err(ApiError::invalid("status", "status must be enabled or disabled.")),
    };
    let row: EndpointRow = sqlx::query_as(&format!(
        "UPDATE webhooks.endpoints
            SET url = $3, enabled_events = $4, description = $5, status = $6, version = version + 1, updated_at = now(),
                failing_since = CASE WHEN $6 = 'enabled' THEN NULL ELSE failing_since END
          WHERE business_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(url)
    .bind(events)
    .bind(description)
    .bind(status)
    .fetch_one(&mut *tx)
    .await?;
    Ok(axum::Json(row.into()))
}

/// Delete a webhook endpoint and its delivery history.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", params(("id" = WebhookEndpointId, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn delete_endpoint(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
) -> Result<StatusCode, ApiError> {
    // Deliveries first, then the endpoint: the delivery worker locks a delivery and then
    // its endpoint (claiming it, recording an attempt), so deleting the endpoint first and
    // its deliveries by cascade would take the same two locks in the other order and could
    // deadlock with it. A delivery the fan-out adds between the two statements still goes
    // with the endpoint by cascade.
    sqlx::query("DELETE FROM webhooks.deliveries WHERE business_id = $1 AND endpoint_id = $2")
        .bind(principal.business_id.as_uuid())
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM webhooks.endpoints WHERE business_id = $1 AND id = $2")
        .bind(principal.business_id.as_uuid())
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// How long the old secret keeps signing beside the new one (default a day, at most 7).
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_seconds: Option<i64>,
}

/// Rotate the signing secret. The old one keeps signing alongside for the grace period.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "webhooks",
    params(("id" = WebhookEndpointId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    request_body(content = Option<RotateSecretRequest>, description = "Optional."),
    responses((status = 200, body = WebhookEndpointWithSecret), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn rotate_secret(
    principal: Principal,
    State(state): State<WebhookState>,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<RotateSecretRequest>,
) -> Result<Response, ApiError> {
    let grace = request.grace_seconds.unwrap_or(GRACE_SECONDS_DEFAULT);
    if !(0..=GRACE_SECONDS_MAX).contains(&grace) {
        return Err(ApiError::invalid("grace_seconds", "grace_seconds must be 0 to 604800 (7 days)."));
    }
    let secret = generate_secret();
    // The current secret, sealed or (in a row not yet resealed) plain, becomes the
    // previous one as it is: both are bound to this endpoint.
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "UPDATE webhooks.endpoints
            SET previous_secret = secret, previous_secret_sealed = secret_sealed,
                previous_expires_at = now() + $3 * interval '1 second', secret = NULL, secret_sealed = $4,
                version = version + 1, updated_at = now()
          WHERE business_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(grace)
    .bind(secrets::seal(&state.keyring, id.as_uuid(), &secret))
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(shown_once(axum::Json(WebhookEndpointWithSecret { endpoint: row.into(), secret })))
}

/// One delivery attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptBody {
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub attempted_at: String,
}

/// The delivery of one event to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    pub id: WebhookDeliveryId,
    pub event_id: EventId,
    pub resource_id: String,
    /// `pending`, `succeeded` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    /// 0 for the first delivery, then one more per replay.
    pub generation: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_status_code: Option<i32>,
    pub attempt_history: Vec<AttemptBody>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    event_id: Uuid,
    resource_id: String,
    status: String,
    attempts: i32,
    generation: i32,
    next_attempt_at: OffsetDateTime,
    last_status_code: Option<i32>,
    attempt_history: serde_json::Value,
    created_at: OffsetDateTime,
}

/// The endpoint's deliveries, newest first, with every attempt (status code, latency).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhooks", params(("id" = WebhookEndpointId, Path), ListParams),
    responses((status = 200, body = Page<DeliveryBody>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_deliveries(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<DeliveryBody>>, ApiError> {
    let page = params.page(|t| WebhookDeliveryId::parse(t).ok())?;
    find(&mut tx, &principal, id).await?;
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.event_id, d.resource_id, d.status, d.attempts, d.generation, d.next_attempt_at, d.last_status_code,
                coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'status_code', a.status_code,
                                   'latency_ms', a.latency_ms, 'error', a.error, 'attempted_at', a.attempted_at)
                                   ORDER BY a.attempt)
                            FROM webhooks.attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_history,
                d.created_at
           FROM webhooks.deliveries d
          WHERE d.business_id = $1 AND d.endpoint_id = $2
            AND ($3::uuid IS NULL
                 OR (d.created_at, d.id) < (SELECT c.created_at, c.id FROM webhooks.deliveries c WHERE c.id = $3))
          ORDER BY d.created_at DESC, d.id DESC LIMIT $4",
    )
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(page.starting_after.map(|id| id.as_uuid()))
    .bind(page.fetch_limit())
    .fetch_all(&mut *tx)
    .await?;
    let bodies = rows
        .into_iter()
        .map(|row| {
            // Built by the query above: a history that does not decode is a bug, not an
            // empty history.
            let attempt_history = serde_json::from_value(row.attempt_history)
                .map_err(|error| ApiError::internal(&format_args!("a delivery's attempt history: {error}")))?;
            Ok(DeliveryBody {
                id: WebhookDeliveryId::from_uuid(row.id),
                event_id: EventId::from_uuid(row.event_id),
                resource_id: row.resource_id,
                next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
                status: row.status,
                attempts: row.attempts,
                generation: row.generation,
                last_status_code: row.last_status_code,
                attempt_history,
                created_at: row.created_at,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |delivery| delivery.id.to_string())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// An event id (`evt_…`: replay the events after it) or an RFC 3339 time (replay the
    /// events from then on), within the last 30 days (422 `rule_violated` otherwise).
    #[schema(value_type = ReplaySince)]
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayBody {
    /// How many events will be delivered again, in order.
    pub replayed: i64,
}

/// Deliver again, in order, every event since an event or a time that the endpoint
/// subscribes to. `since` reaches back at most 30 days; an endpoint is replayed at most
/// once a minute and never while an earlier replay of it is still being delivered (429
/// with Retry-After, not stored under the Idempotency-Key); a replay that would leave
/// more than 10 000 deliveries waiting is refused (422 `replay_too_large`).
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/replay", tag = "webhooks",
    params(("id" = WebhookEndpointId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    request_body = ReplayRequest,
    responses((status = 200, body = ReplayBody), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "replay_too_large"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "replay_throttled")),
    security(("bearer" = [])))]
async fn replay(
    principal: Principal,
    State(state): State<WebhookState>,
    mut tx: Tx,
    ApiPath(id): ApiPath<WebhookEndpointId>,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<axum::Json<ReplayBody>, ApiError> {
    // The endpoint's row lock makes one replay of it decide at a time.
    let endpoint: Option<(OffsetDateTime, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT now(), last_replay_at FROM webhooks.endpoints WHERE business_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let (now, last_replay_at) = endpoint.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let config = &state.config;
    let oldest = now - config.replay_window;
    let (after_event, from_time) = if let Ok(event) = EventId::parse(&request.since) {
        let occurred_at: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT occurred_at FROM events.log WHERE business_id = $1 AND id = $2")
                .bind(principal.business_id.as_uuid())
                .bind(event.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        let occurred_at = occurred_at.ok_or_else(|| ApiError::rule("since", "No such event."))?;
        if occurred_at < oldest {
            return Err(too_far_back(config));
        }
        (Some(event.as_uuid()), None)
    } else {
        let at = OffsetDateTime::parse(&request.since, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::invalid("since", "since must be an event id (evt_…) or an RFC 3339 time."))?;
        if at < oldest {
            return Err(too_far_back(config));
        }
        (None, Some(at))
    };
    if let Some(wait) = last_replay_at.map(|last| last + config.replay_interval - now).filter(|wait| wait.is_positive())
    {
        return Err(throttled(
            format!("This endpoint was replayed less than {} seconds ago.", config.replay_interval.as_secs()),
            wait.whole_seconds() + 1,
        ));
    }
    let replaying: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhooks.deliveries
                         WHERE endpoint_id = $1 AND status = 'pending' AND generation > 0)",
    )
    .bind(id.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    if replaying {
        return Err(throttled(
            "An earlier replay of this endpoint is still being delivered.".to_string(),
            i64::try_from(config.replay_interval.as_secs()).unwrap_or(60),
        ));
    }
    let limit = i64::from(config.pending_deliveries_max);
    // Both counted only up to the limit, so a huge backlog costs no more than a full one.
    let (waiting, wanted): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM webhooks.deliveries
                                        WHERE endpoint_id = $2 AND status = 'pending' LIMIT $5) w),
                (SELECT count(*) FROM (SELECT 1 FROM events.log l JOIN webhooks.endpoints e
                                          ON e.business_id = l.business_id AND e.id = $2
                                        WHERE l.business_id = $1
                                          AND ('*' = ANY (e.enabled_events) OR l.type = ANY (e.enabled_events))
                                          AND ($3::uuid IS NULL OR l.position > (SELECT position FROM events.log WHERE id = $3))
                                          AND ($4::timestamptz IS NULL OR l.occurred_at >= $4)
                                        LIMIT $5 + 1) r)",
    )
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(after_event)
    .bind(from_time)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    if waiting + wanted > limit {
        return Err(ApiError::new(ErrorCode::ReplayTooLarge, format!("The replay would leave more than {limit} deliveries waiting for this endpoint; replay from a later point."),
        )
        .with_param("since"));
    }
    let (types, roles) = restricted_types();
    let replayed = sqlx::query(
        "INSERT INTO webhooks.deliveries (id, business_id, endpoint_id, event_id, event_position, resource_id, generation)
         SELECT gen_random_uuid(), l.business_id, e.id, l.id, l.position, l.resource_id,
                coalesce((SELECT max(d.generation) FROM webhooks.deliveries d WHERE d.endpoint_id = e.id AND d.event_id = l.id), 0) + 1
           FROM events.log l
           JOIN webhooks.endpoints e ON e.business_id = l.business_id AND e.id = $2
           LEFT JOIN unnest($5::text[], $6::text[]) AS r(type, role) ON r.type = l.type
          WHERE l.business_id = $1
            AND ('*' = ANY (e.enabled_events) OR l.type = ANY (e.enabled_events))
            AND webhooks.role_rank(e.reader_role) >= coalesce(webhooks.role_rank(r.role), 1)
            AND ($3::uuid IS NULL OR l.position > (SELECT position FROM events.log WHERE id = $3))
            AND ($4::timestamptz IS NULL OR l.occurred_at >= $4)
          ORDER BY l.position",
    )
    .bind(principal.business_id.as_uuid())
    .bind(id.as_uuid())
    .bind(after_event)
    .bind(from_time)
    .bind(types)
    .bind(roles)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE webhooks.endpoints SET last_replay_at = now() WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    Ok(axum::Json(ReplayBody { replayed: i64::try_from(replayed.rows_affected()).unwrap_or(i64::MAX) }))
}

fn too_far_back(config: &WebhookConfig) -> ApiError {
    ApiError::rule(
        "since",
        format!("since must be within the last {} days.", config.replay_window.as_secs() / (24 * 60 * 60)),
    )
}

fn throttled(detail: String, retry_after_seconds: i64) -> ApiError {
    let mut error = ApiError::new(ErrorCode::ReplayThrottled, detail);
    error.retry_after_seconds = Some(u64::try_from(retry_after_seconds.max(1)).unwrap_or(60));
    error
}

/// The event types a viewer may not read, and the role each needs (the fan-out's and a
/// replay's filter by the endpoint's reader role).
pub fn restricted_types() -> (Vec<&'static str>, Vec<&'static str>) {
    EventType::ALL
        .into_iter()
        .filter(|event_type| event_type.read_role() != till_http::auth::Role::Viewer)
        .map(|event_type| (event_type.name(), event_type.read_role().as_str()))
        .unzip()
}
