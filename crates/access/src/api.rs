//! HTTP handlers and bodies of the access service. Handlers read top to bottom: parse →
//! authorize (the route table and, for key roles, the caller's own role) → decide → write
//! in the request's transaction → respond.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use till_http::auth::{Principal, Role};
use till_http::extract::{ApiJson, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::secrets::shown_once;
use till_http::unit_of_work::Tx;
use till_http::{ApiError, Problem};
use till_kit::schema::{Name100, Name200, Text255};
use till_kit::{ApiKeyId, BusinessId, Currency};
use till_outbox::{Event, EventType};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authn::KeyCache;
use crate::domain::{AccessError, IssuedApiKey, KeyName, NewBusiness};
use crate::store::{self, ApiKeyRow, BusinessRow};

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> ApiError {
        let field = error.field();
        match error {
            AccessError::Invalid(..) => ApiError::invalid(field, error.to_string()),
            AccessError::Rule(..) => ApiError::rule(field, error.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaxRegistrationBody {
    /// `gb_vat` (UK VAT number) or `in_gst` (GSTIN).
    pub kind: String,
    #[schema(example = "GB999999973")]
    pub number: String,
}

/// A business: the tenant that owns every other resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusinessBody {
    pub id: BusinessId,
    #[schema(example = "Acme Trading Ltd")]
    pub legal_name: String,
    /// `GB` or `IN`.
    #[schema(example = "GB")]
    pub country: String,
    pub default_currency: Currency,
    pub tax_registration: Option<TaxRegistrationBody>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl TryFrom<BusinessRow> for BusinessBody {
    type Error = ApiError;
    fn try_from(row: BusinessRow) -> Result<BusinessBody, ApiError> {
        let default_currency = Currency::parse(&row.default_currency).map_err(|error| ApiError::internal(&error))?;
        let tax_registration = match (row.tax_registration_kind, row.tax_registration) {
            (Some(kind), Some(number)) => Some(TaxRegistrationBody { kind, number }),
            _ => None,
        };
        Ok(BusinessBody {
            id: BusinessId::from_uuid(row.id),
            legal_name: row.legal_name,
            country: row.country,
            default_currency,
            tax_registration,
            created_at: row.created_at,
        })
    }
}

/// An API key. The secret is never shown again after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub id: ApiKeyId,
    #[schema(example = "checkout server")]
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl TryFrom<ApiKeyRow> for ApiKeyBody {
    type Error = ApiError;
    fn try_from(row: ApiKeyRow) -> Result<ApiKeyBody, ApiError> {
        let role =
            Role::parse(&row.role).ok_or_else(|| ApiError::internal(&format_args!("stored role `{}`", row.role)))?;
        Ok(ApiKeyBody {
            id: ApiKeyId::from_uuid(row.id),
            name: row.name,
            role,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A newly created API key, with its secret: shown this once, stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKeyBody {
    #[serde(flatten)]
    pub key: ApiKeyBody,
    #[schema(example = "till_sk_AZNvDmwqfMKwpqTl89LBsP3q0k2e8y1QzXh0bS5f8mA9cYpLrTuVwXyZaBcDeFgH")]
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// For humans: what uses this key.
    #[schema(value_type = Name100, example = "checkout server")]
    pub name: String,
    /// At most the caller's own role.
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBusinessRequest {
    #[schema(value_type = Name200, example = "Acme Trading Ltd")]
    pub legal_name: String,
    /// `GB` or `IN`.
    #[schema(pattern = "^(GB|IN)$", example = "GB")]
    pub country: String,
    /// Defaults to the country's currency (GBP, INR).
    #[schema(value_type = Option<Currency>, example = "GBP")]
    pub default_currency: Option<String>,
    /// A UK VAT number for GB, a GSTIN for IN; its format and check digits are checked
    /// against the country (422 `rule_violated`, naming what is wrong).
    #[schema(max_length = 64, example = "GB999999973")]
    pub tax_registration: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBusinessBody {
    pub business: BusinessBody,
    /// The business's first API key, with the owner role.
    pub api_key: CreatedApiKeyBody,
}

/// The router of this service's routes, with their OpenAPI operations.
pub fn tenant_routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(get_business))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

pub fn platform_routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(create_business)).routes(routes!(revoke_tokens))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokensRequest {
    /// Revoke every dashboard token of this subject (`sub`) issued until now; tokens
    /// issued later (the user signs in again) work.
    /// Give exactly one of `subject` and `token_id` (422 `rule_violated` otherwise).
    #[schema(value_type = Option<Text255>, example = "user_42")]
    pub subject: Option<String>,
    /// Revoke the one token with this `jti`.
    #[schema(value_type = Option<Text255>)]
    pub token_id: Option<String>,
}

/// A revocation of dashboard tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRevocationBody {
    /// `subject` or `token`.
    pub kind: String,
    pub value: String,
    /// Tokens issued before this (for a subject) are refused.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// Revoke dashboard JWTs: one token by its `jti`, or every token of a subject issued until
/// now. Platform operators only. A revocation is kept as long as a token it refuses could
/// still be valid (the JWT lifetime limit), then purged.
#[utoipa::path(post, path = "/v1/platform/token_revocations", tag = "platform",
    request_body = RevokeTokensRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = TokenRevocationBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ),
    security(("platform_admin" = [])))]
async fn revoke_tokens(
    mut tx: Tx,
    ApiJson(request): ApiJson<RevokeTokensRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (kind, param, value) = match (request.subject, request.token_id) {
        (Some(subject), None) => ("subject", "subject", subject),
        (None, Some(token_id)) => ("token", "token_id", token_id),
        _ => return Err(ApiError::rule("subject", "Give either subject or token_id.")),
    };
    if value.is_empty() {
        return Err(ApiError::text(param, till_kit::TextError::Empty));
    }
    till_kit::text::check(&value, crate::jwt::TOKEN_ID_CHARS_MAX).map_err(|refusal| ApiError::text(param, refusal))?;
    let row = store::revoke_tokens(&mut tx, kind, &value).await?;
    let details = serde_json::json!({ "kind": kind, "value": value });
    store::record_security_event(&mut *tx, None, "tokens.revoked", "platform", details).await?;
    let body = TokenRevocationBody { kind: row.kind, value: row.value, revoked_at: row.revoked_at };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// The access service's outbox (see the events crate).
pub const OUTBOX: &str = "access.outbox";

/// An API key event, in the caller's transaction: created is 1, revoked is 2.
async fn record_key_event(
    connection: &mut sqlx::PgConnection,
    business: BusinessId,
    event_type: EventType,
    key: &ApiKeyBody,
) -> Result<(), ApiError> {
    let sequence = if event_type == EventType::ApiKeyRevoked { 2 } else { 1 };
    let occurred_at = key.revoked_at.unwrap_or(key.created_at);
    let data = serde_json::value::to_raw_value(key).map_err(|error| ApiError::internal(&error))?;
    let event = Event::new(
        event_type,
        business,
        key.id.to_string(),
        sequence,
        occurred_at,
        till_http::request_id::current(),
        data,
    );
    till_outbox::append::append(connection, OUTBOX, &[event]).await?;
    Ok(())
}

fn actor(principal: &Principal) -> String {
    principal.actor()
}

/// The caller's business.
#[utoipa::path(get, path = "/v1/business", tag = "access",
    responses(
        (status = 200, body = BusinessBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn get_business(principal: Principal, mut tx: Tx) -> Result<axum::Json<BusinessBody>, ApiError> {
    let row =
        store::find_business(&mut tx, principal.business_id).await?.ok_or_else(|| ApiError::not_found("business"))?;
    Ok(axum::Json(row.try_into()?))
}

/// Create an API key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/api_keys", tag = "access",
    request_body = CreateApiKeyRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = CreatedApiKeyBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The role is above the caller's own, or the caller cannot manage keys."),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "idempotency_key_in_use"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "idempotency_key_reused"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn create_api_key(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = KeyName::parse(&request.name)?;
    if !principal.role.allows(request.role) {
        return Err(ApiError::forbidden(format!(
            "A {} cannot create a key with the {} role.",
            principal.role.as_str(),
            request.role.as_str()
        ))
        .with_param("role"));
    }
    let issued = IssuedApiKey::generate();
    let actor = actor(&principal);
    let row = store::insert_api_key(&mut tx, principal.business_id, &issued, &name, request.role, &actor).await?;
    let details = serde_json::json!({ "api_key_id": issued.id.to_string(), "role": request.role.as_str() });
    store::record_audit(&mut tx, principal.business_id, "api_key.created", &actor, details).await?;
    let key: ApiKeyBody = row.try_into()?;
    record_key_event(&mut tx, principal.business_id, EventType::ApiKeyCreated, &key).await?;
    let body = CreatedApiKeyBody { key, secret: issued.token.into_exposed() };
    Ok(shown_once((StatusCode::CREATED, axum::Json(body))))
}

/// List the business's API keys, newest first, revoked ones included.
#[utoipa::path(get, path = "/v1/api_keys", tag = "access",
    params(ListParams),
    responses(
        (status = 200, body = Page<ApiKeyBody>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn list_api_keys(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<ApiKeyBody>>, ApiError> {
    let page = params.page(|text| ApiKeyId::parse(text).ok())?;
    let rows = store::list_api_keys(&mut tx, principal.business_id, page.starting_after, page.fetch_limit()).await?;
    let bodies = rows.into_iter().map(ApiKeyBody::try_from).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |key| key.id.to_string())))
}

/// Revoke an API key. Revoking a revoked key returns it unchanged.
#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "access",
    params(("id" = ApiKeyId, Path)),
    responses(
        (status = 200, body = ApiKeyBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn revoke_api_key(
    principal: Principal,
    mut tx: Tx,
    axum::Extension(keys): axum::Extension<KeyCache>,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<axum::Json<ApiKeyBody>, ApiError> {
    // Lock the key so that two concurrent revocations record one audit event.
    let existing =
        store::find_api_key(&mut tx, principal.business_id, id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    let existing_role = Role::parse(&existing.role).unwrap_or(Role::Owner);
    if !principal.role.allows(existing_role) {
        return Err(ApiError::forbidden(format!(
            "A {} cannot revoke a key with the {} role.",
            principal.role.as_str(),
            existing.role
        )));
    }
    if existing.revoked_at.is_some() {
        return Ok(axum::Json(existing.try_into()?));
    }
    let row = store::revoke_api_key(&mut tx, principal.business_id, id).await?;
    keys.forget(id);
    let details = serde_json::json!({ "api_key_id": id.to_string() });
    store::record_audit(&mut tx, principal.business_id, "api_key.revoked", &actor(&principal), details).await?;
    let key: ApiKeyBody = row.try_into()?;
    record_key_event(&mut tx, principal.business_id, EventType::ApiKeyRevoked, &key).await?;
    Ok(axum::Json(key))
}

/// Create a business and its first (owner) API key. Platform operators only.
#[utoipa::path(post, path = "/v1/platform/businesses", tag = "platform",
    request_body = CreateBusinessRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = CreatedBusinessBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("platform_admin" = [])))]
async fn create_business(
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateBusinessRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let business = NewBusiness::parse(
        &request.legal_name,
        &request.country,
        request.default_currency.as_deref(),
        request.tax_registration.as_deref(),
    )?;
    let created = create_business_with_owner_key(&mut tx, &business, "platform").await?;
    Ok(shown_once((StatusCode::CREATED, axum::Json(created))))
}

/// Creates a business and its first owner key in the caller's transaction (which must be
/// a platform transaction). Shared by the platform route and `till admin create-business`.
pub async fn create_business_with_owner_key(
    connection: &mut sqlx::PgConnection,
    business: &NewBusiness,
    actor: &str,
) -> Result<CreatedBusinessBody, ApiError> {
    let id = BusinessId::generate();
    till_db::tenant::enter_business(&mut *connection, id).await?;
    let row = store::insert_business(&mut *connection, id, business).await?;
    let issued = IssuedApiKey::generate();
    let name = KeyName::parse("owner key").map_err(ApiError::from)?;
    let key = store::insert_api_key(&mut *connection, id, &issued, &name, Role::Owner, actor).await?;
    let details = serde_json::json!({ "api_key_id": issued.id.to_string(), "role": "owner" });
    let created = serde_json::json!({ "country": business.country.code() });
    store::record_audit(&mut *connection, id, "business.created", actor, created).await?;
    store::record_audit(&mut *connection, id, "api_key.created", actor, details).await?;
    let key: ApiKeyBody = key.try_into()?;
    record_key_event(&mut *connection, id, EventType::ApiKeyCreated, &key).await?;
    Ok(CreatedBusinessBody {
        business: row.try_into()?,
        api_key: CreatedApiKeyBody { key, secret: issued.token.into_exposed() },
    })
}
