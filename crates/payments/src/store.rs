//! The payments schema's SQL: intents and the ledger accounts this service opened.

use sqlx::PgConnection;
use till_kit::{BusinessId, Currency, Metadata, Money};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::IntentStatus;
use crate::gateway::CaptureMethod;

pub const OUTBOX: &str = "payments.outbox";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntentRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub capture_method: String,
    pub status: String,
    pub gateway: String,
    pub gateway_intent_id: Option<String>,
    pub payment_method: Option<String>,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub fee: Option<i64>,
    pub last_payment_error: Option<serde_json::Value>,
    pub review_reason: Option<String>,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    pub customer_email: Option<String>,
    pub authorisation_hold: Option<Uuid>,
    pub refundable_account: Option<Uuid>,
    pub gateway_charge_id: Option<String>,
    pub settled_at: Option<OffsetDateTime>,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A row the database holds that breaks the schema's own rules: a bug, never input.
#[derive(Debug, thiserror::Error)]
#[error("corrupt payments row: {0}")]
pub struct CorruptRow(pub String);

impl IntentRow {
    pub fn currency(&self) -> Result<Currency, CorruptRow> {
        Currency::parse(&self.currency).map_err(|error| CorruptRow(error.to_string()))
    }

    pub fn money(&self) -> Result<Money, CorruptRow> {
        Ok(Money::from_minor(self.amount, self.currency()?))
    }

    pub fn status(&self) -> Result<IntentStatus, CorruptRow> {
        IntentStatus::parse(&self.status).ok_or_else(|| CorruptRow(format!("status {:?}", self.status)))
    }

    pub fn capture_method(&self) -> Result<CaptureMethod, CorruptRow> {
        match self.capture_method.as_str() {
            "automatic" => Ok(CaptureMethod::Automatic),
            "manual" => Ok(CaptureMethod::Manual),
            other => Err(CorruptRow(format!("capture_method {other:?}"))),
        }
    }
}

pub struct NewIntent<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub amount: Money,
    pub capture_method: CaptureMethod,
    pub status: IntentStatus,
    pub gateway: crate::gateway::GatewayKind,
    pub payment_method: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: &'a Metadata,
    pub customer_email: Option<&'a str>,
}

pub async fn insert_intent(connection: &mut PgConnection, new: &NewIntent<'_>) -> Result<IntentRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payments.intents (id, business_id, amount, currency, capture_method, status, gateway,
                                       payment_method, description, metadata, customer_email)
         VALUES ($1, $2, $3, $4, $5, $6, $11, $7, $8, $9, $10)
         RETURNING *",
    )
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.amount.minor())
    .bind(new.amount.currency().code())
    .bind(new.capture_method.as_str())
    .bind(new.status.as_str())
    .bind(new.payment_method)
    .bind(new.description)
    .bind(sqlx::types::Json(new.metadata))
    .bind(new.customer_email)
    .bind(new.gateway.as_str())
    .fetch_one(connection)
    .await
}

pub async fn find_intent(connection: &mut PgConnection, id: Uuid) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM payments.intents WHERE id = $1").bind(id).fetch_optional(connection).await
}

/// Moves the intent from one of `from` to `to` (with the payment method, when given), in
/// one statement under the row's lock: of two requests racing for the same step, one
/// moves it and the other finds it moved. `None`: it was not in any of `from`.
///
/// The version does not move: a step in flight is not an event. The step's outcome
/// ([`record`]) moves it, so each event's sequence follows the last without a gap.
pub async fn start_step(
    connection: &mut PgConnection,
    id: Uuid,
    from: &[IntentStatus],
    to: IntentStatus,
    payment_method: Option<&str>,
) -> Result<Option<IntentRow>, sqlx::Error> {
    let from: Vec<&str> = from.iter().map(|status| status.as_str()).collect();
    sqlx::query_as(
        "UPDATE payments.intents
            SET status = $3, payment_method = coalesce($4, payment_method), updated_at = now()
          WHERE id = $1 AND status = ANY ($2)
         RETURNING *",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(payment_method)
    .fetch_optional(connection)
    .await
}

/// Puts an intent back in the status a step started from, when the gateway refused the
/// step and nothing changed: like [`start_step`], not an event, so the version stays.
pub async fn restore(connection: &mut PgConnection, id: Uuid, status: IntentStatus) -> Result<IntentRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE payments.intents SET status = $2, updated_at = now() WHERE id = $1 AND status = 'processing' RETURNING *",
    )
    .bind(id)
    .bind(status.as_str())
    .fetch_one(connection)
    .await
}

/// What a gateway's answer changes on an intent.
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    pub status: Option<IntentStatus>,
    pub gateway_intent_id: Option<&'a str>,
    pub amount_capturable: Option<i64>,
    pub amount_received: Option<i64>,
    pub fee: Option<i64>,
    /// `Some(None)` clears it.
    pub last_payment_error: Option<Option<serde_json::Value>>,
    pub review_reason: Option<&'a str>,
    pub authorisation_hold: Option<Uuid>,
    pub refundable_account: Option<Uuid>,
    pub gateway_charge_id: Option<&'a str>,
}

/// Applies `outcome`; the version moves when the status does (each status change is an
/// event whose sequence is the new version).
pub async fn record(connection: &mut PgConnection, id: Uuid, outcome: &Outcome<'_>) -> Result<IntentRow, sqlx::Error> {
    let (clear_error, error) = match &outcome.last_payment_error {
        Some(None) => (true, None),
        Some(Some(error)) => (false, Some(sqlx::types::Json(error.clone()))),
        None => (false, None),
    };
    sqlx::query_as(
        "UPDATE payments.intents
            SET status = coalesce($2, status),
                gateway_intent_id = coalesce($3, gateway_intent_id),
                amount_capturable = coalesce($4, amount_capturable),
                amount_received = coalesce($5, amount_received),
                fee = coalesce($6, fee),
                last_payment_error = CASE WHEN $7 THEN NULL ELSE coalesce($8, last_payment_error) END,
                review_reason = coalesce($9, review_reason),
                authorisation_hold = coalesce($10, authorisation_hold),
                refundable_account = coalesce($11, refundable_account),
                gateway_charge_id = coalesce($12, gateway_charge_id),
                version = version + CASE WHEN $2 IS NOT NULL AND $2 <> status THEN 1 ELSE 0 END,
                updated_at = now()
          WHERE id = $1
         RETURNING *",
    )
    .bind(id)
    .bind(outcome.status.map(IntentStatus::as_str))
    .bind(outcome.gateway_intent_id)
    .bind(outcome.amount_capturable)
    .bind(outcome.amount_received)
    .bind(outcome.fee)
    .bind(clear_error)
    .bind(error)
    .bind(outcome.review_reason)
    .bind(outcome.authorisation_hold)
    .bind(outcome.refundable_account)
    .bind(outcome.gateway_charge_id)
    .fetch_one(connection)
    .await
}

/// The ledger account this service keeps for `role` in `currency`, if it opened one;
/// `claim` records `account` for it when none is recorded (the caller then opens it in
/// the same transaction). Of two transactions claiming at once, the second waits for the
/// first and finds its account.
pub async fn claim_ledger_account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    role: &str,
    account: Uuid,
) -> Result<(Uuid, bool), sqlx::Error> {
    // Read first: after its first use an account is always there, and one statement is
    // cheaper than an insert that conflicts and a read after it (`--profile` of
    // `till bench payouts`: three of these per payout).
    let existing = find_ledger_account(connection, business, currency, role).await?;
    if let Some(account) = existing {
        return Ok((account, false));
    }
    // The first use, or two first uses at once: the insert decides which one opens it.
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO payments.ledger_accounts (business_id, currency, role, account_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (business_id, currency, role) DO NOTHING RETURNING account_id",
    )
    .bind(business.as_uuid())
    .bind(currency.code())
    .bind(role)
    .bind(account)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(account) = claimed {
        return Ok((account, true));
    }
    // Another transaction claimed it first and has committed (the insert waited for it).
    let existing = find_ledger_account(connection, business, currency, role).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok((existing, false))
}

async fn find_ledger_account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    role: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT account_id FROM payments.ledger_accounts WHERE business_id = $1 AND currency = $2 AND role = $3",
    )
    .bind(business.as_uuid())
    .bind(currency.code())
    .bind(role)
    .fetch_optional(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub intent_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub reason: Option<String>,
    pub gateway_refund_id: Option<String>,
    pub failure_reason: Option<String>,
    pub settled_at: Option<OffsetDateTime>,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub async fn insert_refund(
    connection: &mut PgConnection,
    id: Uuid,
    business: BusinessId,
    intent: Uuid,
    amount: Money,
    reason: Option<&str>,
) -> Result<RefundRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payments.refunds (id, business_id, intent_id, amount, currency, status, reason)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6) RETURNING *",
    )
    .bind(id)
    .bind(business.as_uuid())
    .bind(intent)
    .bind(amount.minor())
    .bind(amount.currency().code())
    .bind(reason)
    .fetch_one(connection)
    .await
}

pub async fn find_refund(connection: &mut PgConnection, id: Uuid) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM payments.refunds WHERE id = $1").bind(id).fetch_optional(connection).await
}

/// Ends a pending refund: `succeeded` (with the gateway's id), `failed` or
/// `requires_review` (with why). Only a pending refund moves: `None` otherwise.
pub async fn end_refund(
    connection: &mut PgConnection,
    id: Uuid,
    status: &str,
    gateway_refund_id: Option<&str>,
    failure_reason: Option<&str>,
) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE payments.refunds
            SET status = $2, gateway_refund_id = coalesce($3, gateway_refund_id), failure_reason = $4,
                version = version + 1, updated_at = now()
          WHERE id = $1 AND status = 'pending'
         RETURNING *",
    )
    .bind(id)
    .bind(status)
    .bind(gateway_refund_id)
    .bind(failure_reason)
    .fetch_optional(connection)
    .await
}

/// Adds a succeeded refund to its intent's refunded amount (the schema bounds it by what
/// was received).
/// Locks the intent's row for the rest of the transaction.
pub async fn lock_intent(connection: &mut PgConnection, intent: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM payments.intents WHERE id = $1 FOR UPDATE").bind(intent).execute(connection).await?;
    Ok(())
}

pub async fn add_refunded(connection: &mut PgConnection, intent: Uuid, amount: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments.intents SET amount_refunded = amount_refunded + $2, updated_at = now() WHERE id = $1")
        .bind(intent)
        .bind(amount)
        .execute(connection)
        .await?;
    Ok(())
}

/// Writes the event of a payments resource (an intent, a refund) to this service's
/// outbox, in the caller's transaction: `data` is the resource as the API shows it, and
/// the sequence its version.
pub async fn announce(
    connection: &mut PgConnection,
    business: Uuid,
    resource_id: String,
    version: i32,
    at: OffsetDateTime,
    event_type: till_outbox::EventType,
    data: &impl serde::Serialize,
) -> Result<(), AnnounceError> {
    let business = BusinessId::from_uuid(business);
    till_outbox::announce(connection, OUTBOX, business, resource_id, i64::from(version), at, event_type, data).await
}

pub use till_outbox::AnnounceError;

/// A page of the business's intents, newest first, optionally of one status.
pub async fn list_intents(
    connection: &mut PgConnection,
    business: BusinessId,
    status: Option<IntentStatus>,
    starting_after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM payments.intents
          WHERE business_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(business.as_uuid())
    .bind(status.map(IntentStatus::as_str))
    .bind(starting_after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// A page of the business's refunds, newest first, optionally of one intent.
pub async fn list_refunds(
    connection: &mut PgConnection,
    business: BusinessId,
    intent: Option<Uuid>,
    starting_after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RefundRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM payments.refunds
          WHERE business_id = $1 AND ($2::uuid IS NULL OR intent_id = $2) AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(business.as_uuid())
    .bind(intent)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(connection)
    .await
}
