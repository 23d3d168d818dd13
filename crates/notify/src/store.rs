//! The notifications schema's SQL, and nothing else. Every function takes the caller's
//! connection (a transaction under the business's tenant, so row-level security scopes
//! it), except the sender's lease, which works across businesses through
//! `notify.lease_due`.

use sqlx::PgConnection;
use till_kit::BusinessId;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingsRow {
    pub business_id: Uuid,
    pub sender_name: Option<String>,
    pub reply_to: Option<String>,
    pub finance_email: Option<String>,
    pub finance_phone: Option<String>,
    pub rules: serde_json::Value,
    pub version: i32,
    pub updated_at: OffsetDateTime,
}

pub async fn settings(connection: &mut PgConnection, business: BusinessId) -> Result<Option<SettingsRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM notify.settings WHERE business_id = $1")
        .bind(business.as_uuid())
        .fetch_optional(connection)
        .await
}

/// The settings row locked, so that two writes of the settings queue and the second's
/// `If-Match` sees the first's version.
pub async fn lock_settings(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<Option<SettingsRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM notify.settings WHERE business_id = $1 FOR UPDATE")
        .bind(business.as_uuid())
        .fetch_optional(connection)
        .await
}

pub struct NewSettings<'a> {
    pub business: BusinessId,
    pub sender_name: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub finance_email: Option<&'a str>,
    pub finance_phone: Option<&'a str>,
    pub rules: serde_json::Value,
}

pub async fn put_settings(
    connection: &mut PgConnection,
    settings: &NewSettings<'_>,
) -> Result<SettingsRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO notify.settings (business_id, sender_name, reply_to, finance_email, finance_phone, rules)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (business_id) DO UPDATE
            SET sender_name = EXCLUDED.sender_name, reply_to = EXCLUDED.reply_to,
                finance_email = EXCLUDED.finance_email, finance_phone = EXCLUDED.finance_phone,
                rules = EXCLUDED.rules, version = notify.settings.version + 1, updated_at = now()
         RETURNING *",
    )
    .bind(settings.business.as_uuid())
    .bind(settings.sender_name)
    .bind(settings.reply_to)
    .bind(settings.finance_email)
    .bind(settings.finance_phone)
    .bind(&settings.rules)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub name: String,
    pub event_type: String,
    pub channel: String,
    pub subject: Option<String>,
    pub text_body: String,
    pub html_body: Option<String>,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub struct NewTemplate<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub name: &'a str,
    pub event_type: &'a str,
    pub channel: &'a str,
    pub subject: Option<&'a str>,
    pub text_body: &'a str,
    pub html_body: Option<&'a str>,
}

pub async fn insert_template(
    connection: &mut PgConnection,
    template: &NewTemplate<'_>,
) -> Result<TemplateRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO notify.templates (id, business_id, name, event_type, channel, subject, text_body, html_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(template.id)
    .bind(template.business.as_uuid())
    .bind(template.name)
    .bind(template.event_type)
    .bind(template.channel)
    .bind(template.subject)
    .bind(template.text_body)
    .bind(template.html_body)
    .fetch_one(connection)
    .await
}

pub async fn template(connection: &mut PgConnection, id: Uuid, lock: bool) -> Result<Option<TemplateRow>, sqlx::Error> {
    let sql = if lock {
        "SELECT * FROM notify.templates WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM notify.templates WHERE id = $1"
    };
    sqlx::query_as(sql).bind(id).fetch_optional(connection).await
}

pub async fn update_template(
    connection: &mut PgConnection,
    template: &NewTemplate<'_>,
) -> Result<TemplateRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE notify.templates
            SET name = $2, subject = $3, text_body = $4, html_body = $5, version = version + 1, updated_at = now()
          WHERE id = $1 RETURNING *",
    )
    .bind(template.id)
    .bind(template.name)
    .bind(template.subject)
    .bind(template.text_body)
    .bind(template.html_body)
    .fetch_one(connection)
    .await
}

pub async fn list_templates(
    connection: &mut PgConnection,
    starting_after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM notify.templates WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
        .bind(starting_after)
        .bind(limit)
        .fetch_all(connection)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub resource_id: String,
    pub rule: String,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub sender_name: Option<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attempts: i32,
    pub in_doubt: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub lease_until: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
}

pub struct NewNotification<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub resource_id: &'a str,
    pub rule: &'a str,
    pub channel: &'a str,
    pub recipient: &'a str,
    /// `queued`, or an end it starts in (`suppressed`, `failed`), with its reason.
    pub status: &'a str,
    pub sender_name: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub text_body: Option<&'a str>,
    pub html_body: Option<&'a str>,
    pub last_error: Option<&'a str>,
}

/// Inserts the notification unless this event, rule and recipient have one already;
/// true if it inserted.
pub async fn insert_notification(
    connection: &mut PgConnection,
    new: &NewNotification<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notify.notifications
            (id, business_id, event_id, event_type, resource_id, rule, channel, recipient, status,
             sender_name, reply_to, subject, text_body, html_body, last_error, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                 CASE WHEN $9 = 'queued' THEN now() END)
         ON CONFLICT (business_id, event_id, rule, recipient) DO NOTHING",
    )
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.event_id)
    .bind(new.event_type)
    .bind(new.resource_id)
    .bind(new.rule)
    .bind(new.channel)
    .bind(new.recipient)
    .bind(new.status)
    .bind(new.sender_name)
    .bind(new.reply_to)
    .bind(new.subject)
    .bind(new.text_body)
    .bind(new.html_body)
    .bind(new.last_error)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn notification(connection: &mut PgConnection, id: Uuid) -> Result<Option<NotificationRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM notify.notifications WHERE id = $1").bind(id).fetch_optional(connection).await
}

pub struct NotificationFilter<'a> {
    pub status: Option<&'a str>,
    pub event_id: Option<Uuid>,
    pub starting_after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list_notifications(
    connection: &mut PgConnection,
    filter: &NotificationFilter<'_>,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM notify.notifications
          WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR event_id = $2)
            AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(filter.status)
    .bind(filter.event_id)
    .bind(filter.starting_after)
    .bind(filter.limit)
    .fetch_all(connection)
    .await
}

/// Leases up to `rows_max` due notifications on `channels` (see `notify.lease_due`).
pub async fn lease_due(
    pool: &sqlx::PgPool,
    channels: &[&str],
    rows_max: i32,
    lease_seconds: i32,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, notification_id FROM notify.lease_due($1, $2, $3)")
        .bind(channels)
        .bind(rows_max)
        .bind(lease_seconds)
        .fetch_all(pool)
        .await
}

/// What one send came to, as the sender records it.
pub enum Outcome<'a> {
    /// The provider took it.
    Sent { provider_id: &'a str },
    /// Nothing reached the provider: try again at the time given, no attempt used.
    NotTried { retry_in_ms: i64, why: &'a str },
    /// An attempt that did not end it: try again then. `in_doubt`: the provider may
    /// have taken it.
    Retry { retry_in_ms: i64, why: &'a str, in_doubt: bool },
    /// The end: it will not be sent.
    Failed { why: &'a str, in_doubt: bool },
}

/// Records `outcome` for a notification this sender leased; false if it was not queued
/// any more (another instance ended it after this one's lease ran out).
pub async fn record(connection: &mut PgConnection, id: Uuid, outcome: &Outcome<'_>) -> Result<bool, sqlx::Error> {
    let query = match outcome {
        Outcome::Sent { provider_id } => sqlx::query(
            "UPDATE notify.notifications
                SET status = 'sent', provider_id = $2, attempts = attempts + 1, sent_at = now(),
                    next_attempt_at = NULL, lease_until = NULL, updated_at = now()
              WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(*provider_id),
        Outcome::NotTried { retry_in_ms, why } => sqlx::query(
            "UPDATE notify.notifications
                SET next_attempt_at = now() + $2 * interval '1 millisecond',
                    lease_until = NULL, last_error = $3, updated_at = now()
              WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(*retry_in_ms)
        .bind(*why),
        Outcome::Retry { retry_in_ms, why, in_doubt } => sqlx::query(
            "UPDATE notify.notifications
                SET attempts = attempts + 1, in_doubt = in_doubt + $4::integer,
                    next_attempt_at = now() + $2 * interval '1 millisecond',
                    lease_until = NULL, last_error = $3, updated_at = now()
              WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(*retry_in_ms)
        .bind(*why)
        .bind(i32::from(*in_doubt)),
        Outcome::Failed { why, in_doubt } => sqlx::query(
            "UPDATE notify.notifications
                SET status = 'failed', attempts = attempts + 1, in_doubt = in_doubt + $3::integer,
                    next_attempt_at = NULL, lease_until = NULL, last_error = $2, updated_at = now()
              WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(*why)
        .bind(i32::from(*in_doubt)),
    };
    Ok(query.execute(connection).await?.rows_affected() == 1)
}

/// Applies an SMS provider's final receipt (see `notify.apply_receipt`): `applied`,
/// `ended` (the notification had ended before) or `kept` (none has the id yet).
pub async fn apply_receipt(
    pool: &sqlx::PgPool,
    provider_id: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT notify.apply_receipt($1, $2, $3)")
        .bind(provider_id)
        .bind(status)
        .bind(detail)
        .fetch_one(pool)
        .await
}

/// Serialises the sender's record of an SMS with the receipts for its provider id.
pub async fn lock_provider_id(connection: &mut PgConnection, provider_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT notify.lock_provider_id($1)").bind(provider_id).execute(connection).await?;
    Ok(())
}

/// Applies a receipt that arrived before the sender recorded its SMS as sent.
pub async fn take_early_receipt(connection: &mut PgConnection, provider_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT notify.take_early_receipt($1)").bind(provider_id).execute(connection).await?;
    Ok(())
}

/// Deletes kept receipts older than `days` days; how many.
pub async fn purge_early_receipts(pool: &sqlx::PgPool, days: i32) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT notify.purge_early_receipts(make_interval(days => $1))").bind(days).fetch_one(pool).await
}
