//! The access service's SQL: the only module that knows its tables. Functions take the
//! caller's connection (inside the request's transaction) rather than the pool, so a
//! handler's reads and writes commit or roll back together.
//!
//! Every query filters by business explicitly, although row-level security would hide
//! other businesses' rows anyway: the filter is the first layer, RLS the backstop.

use sqlx::{PgConnection, PgPool};
use till_http::auth::Role;
use till_kit::{ApiKeyId, AuditEventId, BusinessId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{IssuedApiKey, KeyName, NewBusiness};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BusinessRow {
    pub id: Uuid,
    pub legal_name: String,
    pub country: String,
    pub default_currency: String,
    pub tax_registration_kind: Option<String>,
    pub tax_registration: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub name: String,
    pub role: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

pub async fn insert_business(
    connection: &mut PgConnection,
    id: BusinessId,
    business: &NewBusiness,
) -> Result<BusinessRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO access.businesses (id, legal_name, country, default_currency, tax_registration_kind, tax_registration)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, legal_name, country, default_currency, tax_registration_kind, tax_registration, created_at",
    )
    .bind(id.as_uuid())
    .bind(business.legal_name.as_str())
    .bind(business.country.code())
    .bind(business.default_currency.code())
    .bind(business.tax_registration.as_ref().map(|registration| registration.kind()))
    .bind(business.tax_registration.as_ref().map(|registration| registration.as_str()))
    .fetch_one(connection)
    .await
}

pub async fn find_business(connection: &mut PgConnection, id: BusinessId) -> Result<Option<BusinessRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, legal_name, country, default_currency, tax_registration_kind, tax_registration, created_at
           FROM access.businesses WHERE id = $1",
    )
    .bind(id.as_uuid())
    .fetch_optional(connection)
    .await
}

const API_KEY_COLUMNS: &str = "id, business_id, name, role, created_at, last_used_at, revoked_at";

pub async fn insert_api_key(
    connection: &mut PgConnection,
    business: BusinessId,
    key: &IssuedApiKey,
    name: &KeyName,
    role: Role,
    created_by: &str,
) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO access.api_keys (id, business_id, name, role, secret_hash, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {API_KEY_COLUMNS}"
    ))
    .bind(key.id.as_uuid())
    .bind(business.as_uuid())
    .bind(name.as_str())
    .bind(role.as_str())
    .bind(key.secret_hash.as_slice())
    .bind(created_by)
    .fetch_one(connection)
    .await
}

/// Newest first, `limit` rows, strictly older than `starting_after` when given.
pub async fn list_api_keys(
    connection: &mut PgConnection,
    business: BusinessId,
    starting_after: Option<ApiKeyId>,
    limit: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {API_KEY_COLUMNS} FROM access.api_keys
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC
          LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(starting_after.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(connection)
    .await
}

pub async fn find_api_key(
    connection: &mut PgConnection,
    business: BusinessId,
    id: ApiKeyId,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {API_KEY_COLUMNS} FROM access.api_keys WHERE business_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(business.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(connection)
    .await
}

pub async fn revoke_api_key(
    connection: &mut PgConnection,
    business: BusinessId,
    id: ApiKeyId,
) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE access.api_keys SET revoked_at = now()
          WHERE business_id = $1 AND id = $2 AND revoked_at IS NULL
          RETURNING {API_KEY_COLUMNS}"
    ))
    .bind(business.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(connection)
    .await
}

pub async fn record_audit(
    connection: &mut PgConnection,
    business: BusinessId,
    action: &str,
    actor: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO access.audit_log (id, business_id, action, actor, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(AuditEventId::generate().as_uuid())
        .bind(business.as_uuid())
        .bind(action)
        .bind(actor)
        .bind(details)
        .execute(connection)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyCredentials {
    pub business_id: Uuid,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
    pub last_used_at: Option<OffsetDateTime>,
}

/// Cross-tenant by necessity: see `access.api_key_credentials` in the migration.
pub async fn key_credentials(pool: &PgPool, id: ApiKeyId) -> Result<Option<KeyCredentials>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, role, secret_hash, revoked, last_used_at FROM access.api_key_credentials($1)")
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await
}

/// Why a verified dashboard token may not act (its business is gone, it or its subject
/// was revoked), or `None`. Cross-tenant by necessity: see `access.token_refusal`.
pub async fn token_refusal(
    pool: &PgPool,
    business: BusinessId,
    subject: &str,
    token_id: Option<&str>,
    issued_at: OffsetDateTime,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT access.token_refusal($1, $2, $3, $4)")
        .bind(business.as_uuid())
        .bind(subject)
        .bind(token_id)
        .bind(issued_at)
        .fetch_one(pool)
        .await
}

/// A revocation, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevocationRow {
    pub kind: String,
    pub value: String,
    pub revoked_at: OffsetDateTime,
}

/// Revokes a token (`kind` 'token': the first revocation stands) or every token of a
/// subject issued until now (`kind` 'subject': a later revocation moves the moment on).
pub async fn revoke_tokens(
    connection: &mut PgConnection,
    kind: &str,
    value: &str,
) -> Result<RevocationRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO access.token_revocations (kind, value) VALUES ($1, $2)
         ON CONFLICT (kind, value) DO UPDATE
            SET revoked_at = CASE WHEN EXCLUDED.kind = 'subject' THEN now() ELSE access.token_revocations.revoked_at END
         RETURNING kind, value, revoked_at",
    )
    .bind(kind)
    .bind(value)
    .fetch_one(connection)
    .await
}

/// Deletes revocations older than any token they could still refuse (tokens live at
/// most `lifetime`); returns how many went.
pub async fn purge_revocations(pool: &PgPool, lifetime: std::time::Duration) -> Result<u64, sqlx::Error> {
    let older_than = format!("{} seconds", lifetime.as_secs());
    let purged = sqlx::query("DELETE FROM access.token_revocations WHERE revoked_at < now() - $1::interval")
        .bind(older_than)
        .execute(pool)
        .await?;
    Ok(purged.rows_affected())
}

pub async fn touch_api_key(pool: &PgPool, id: ApiKeyId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT access.touch_api_key($1)").bind(id.as_uuid()).execute(pool).await?;
    Ok(())
}

pub async fn record_security_event(
    pool: impl sqlx::PgExecutor<'_>,
    business: Option<BusinessId>,
    action: &str,
    actor: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT access.record_security_event($1, $2, $3, $4, $5)")
        .bind(AuditEventId::generate().as_uuid())
        .bind(business.map(|id| id.as_uuid()))
        .bind(action)
        .bind(actor)
        .bind(details)
        .execute(pool)
        .await?;
    Ok(())
}
