//! The payouts schema's SQL: beneficiaries, payouts and their saga columns, events.

use sqlx::PgConnection;
use till_kit::BusinessId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::beneficiary::Destination;

pub const OUTBOX: &str = "payouts.outbox";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BeneficiaryRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub r#type: String,
    pub name: String,
    pub account_type: String,
    pub sort_code: Option<String>,
    pub account_number: Option<String>,
    pub ifsc: Option<String>,
    pub vpa: Option<String>,
    pub rail: String,
    pub verification: String,
    pub verification_code: Option<String>,
    pub verified_name: Option<String>,
    pub verified_at: OffsetDateTime,
    /// The rail's record of the payee (RazorpayX's `fa_…` fund account), if it keeps one.
    pub rail_account: Option<String>,
    pub status: String,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const BENEFICIARY_COLUMNS: &str = "id, business_id, type, name, account_type, sort_code, account_number, ifsc, vpa, \
     rail, verification, verification_code, verified_name, verified_at, rail_account, status, version, created_at, \
     updated_at";

impl BeneficiaryRow {
    /// Where it pays, as the domain knows it; `None` for a row the checks forbid.
    pub fn destination(&self) -> Option<Destination> {
        match (self.r#type.as_str(), &self.sort_code, &self.account_number, &self.ifsc, &self.vpa) {
            ("uk_account", Some(sort_code), Some(account_number), None, None) => {
                Some(Destination::UkAccount { sort_code: sort_code.clone(), account_number: account_number.clone() })
            }
            ("in_account", None, Some(account_number), Some(ifsc), None) => {
                Some(Destination::InAccount { ifsc: ifsc.clone(), account_number: account_number.clone() })
            }
            ("in_vpa", None, None, None, Some(vpa)) => Some(Destination::InVpa { vpa: vpa.clone() }),
            _ => None,
        }
    }
}

pub struct NewBeneficiaryRow<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub name: &'a str,
    pub account_type: &'a str,
    pub destination: &'a Destination,
    pub rail: &'a str,
    pub verification: &'a str,
    pub verification_code: Option<&'a str>,
    pub verified_name: Option<&'a str>,
    pub rail_account: Option<&'a str>,
}

pub async fn insert_beneficiary(
    connection: &mut PgConnection,
    new: &NewBeneficiaryRow<'_>,
) -> Result<BeneficiaryRow, sqlx::Error> {
    let (sort_code, account_number, ifsc, vpa) = match new.destination {
        Destination::UkAccount { sort_code, account_number } => (Some(sort_code), Some(account_number), None, None),
        Destination::InAccount { ifsc, account_number } => (None, Some(account_number), Some(ifsc), None),
        Destination::InVpa { vpa } => (None, None, None, Some(vpa)),
    };
    sqlx::query_as(&format!(
        "INSERT INTO payouts.beneficiaries (id, business_id, type, name, account_type, sort_code, account_number, ifsc,
             vpa, rail, verification, verification_code, verified_name, verified_at, rail_account)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now(), $14)
         RETURNING {BENEFICIARY_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.destination.kind())
    .bind(new.name)
    .bind(new.account_type)
    .bind(sort_code)
    .bind(account_number)
    .bind(ifsc)
    .bind(vpa)
    .bind(new.rail)
    .bind(new.verification)
    .bind(new.verification_code)
    .bind(new.verified_name)
    .bind(new.rail_account)
    .fetch_one(connection)
    .await
}

pub async fn find_beneficiary(connection: &mut PgConnection, id: Uuid) -> Result<Option<BeneficiaryRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {BENEFICIARY_COLUMNS} FROM payouts.beneficiaries WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

pub async fn list_beneficiaries(
    connection: &mut PgConnection,
    business: BusinessId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BeneficiaryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {BENEFICIARY_COLUMNS} FROM payouts.beneficiaries
          WHERE business_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(business.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// Disables an active beneficiary; `None` if it was disabled already.
pub async fn disable_beneficiary(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<BeneficiaryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE payouts.beneficiaries SET status = 'disabled', version = version + 1, updated_at = now()
          WHERE id = $1 AND status = 'active' RETURNING {BENEFICIARY_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    pub id: Uuid,
    pub business_id: Uuid,
    pub beneficiary_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub reference: String,
    pub description: Option<String>,
    pub status: String,
    pub status_detail: Option<String>,
    pub failure_reason: Option<String>,
    pub rail: String,
    pub rail_payout_id: Option<String>,
    pub rail_status: Option<String>,
    pub hold_id: Uuid,
    pub accepted_verification: Option<String>,
    pub created_by: String,
    pub attempts: i32,
    pub watch_until: Option<OffsetDateTime>,
    pub paid_at: Option<OffsetDateTime>,
    pub approved_by: Option<String>,
    pub approved_at: Option<OffsetDateTime>,
    pub policy_decision: String,
    pub next_step_at: Option<OffsetDateTime>,
    pub lease_until: Option<OffsetDateTime>,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const PAYOUT_COLUMNS: &str = "id, business_id, beneficiary_id, amount, currency, reference, description, status, \
     status_detail, failure_reason, rail, rail_payout_id, rail_status, hold_id, accepted_verification, created_by, \
     attempts, watch_until, paid_at, approved_by, approved_at, policy_decision, next_step_at, lease_until, version, \
     created_at, updated_at";

pub struct NewPayoutRow<'a> {
    pub id: Uuid,
    pub business: BusinessId,
    pub beneficiary: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub reference: &'a str,
    pub description: Option<&'a str>,
    pub rail: &'a str,
    pub hold: Uuid,
    pub accepted_verification: Option<&'a str>,
    pub created_by: &'a str,
    /// `processing` (queued for the rail), `requires_approval` or `scheduled`.
    pub status: &'a str,
    pub status_detail: Option<&'a str>,
    /// When the saga first takes it (`None` while it waits for approval).
    pub next_step_at: Option<OffsetDateTime>,
    pub policy_decision: &'a str,
}

/// A new payout.
pub async fn insert_payout(connection: &mut PgConnection, new: &NewPayoutRow<'_>) -> Result<PayoutRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO payouts.payouts (id, business_id, beneficiary_id, amount, currency, reference, description, status,
             status_detail, rail, hold_id, accepted_verification, created_by, next_step_at, policy_decision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $12, $13, $8, $9, $10, $11, $14, $15)
         RETURNING {PAYOUT_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.business.as_uuid())
    .bind(new.beneficiary)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.reference)
    .bind(new.description)
    .bind(new.rail)
    .bind(new.hold)
    .bind(new.accepted_verification)
    .bind(new.created_by)
    .bind(new.status)
    .bind(new.status_detail)
    .bind(new.next_step_at)
    .bind(new.policy_decision)
    .fetch_one(connection)
    .await
}

/// Moves a payout on outside the saga (approval, cancellation, the end of its
/// cooling-off): its new status, detail and when the saga next takes it.
pub async fn transition(
    connection: &mut PgConnection,
    id: Uuid,
    status: &str,
    status_detail: Option<&str>,
    next_step_at: Option<OffsetDateTime>,
    approved_by: Option<&str>,
) -> Result<PayoutRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE payouts.payouts
            SET status = $2, status_detail = $3, next_step_at = $4, lease_until = NULL,
                approved_by = coalesce($5, approved_by),
                approved_at = CASE WHEN $5::text IS NULL THEN approved_at ELSE now() END,
                version = version + 1, updated_at = now()
          WHERE id = $1
          RETURNING {PAYOUT_COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(status_detail)
    .bind(next_step_at)
    .bind(approved_by)
    .fetch_one(connection)
    .await
}

/// What the business paid out in `currency` today and this month (UTC), counting every
/// payout not failed or canceled, toward the velocity limits: at most 31 rows of
/// `payouts.velocity`, kept by [`count_velocity`].
pub async fn spent(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: &str,
) -> Result<crate::policy::Spent, sqlx::Error> {
    let (today, this_month): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(amount) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::bigint,
                coalesce(sum(amount), 0)::bigint
           FROM payouts.velocity
          WHERE business_id = $1 AND currency = $2
            AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date",
    )
    .bind(business.as_uuid())
    .bind(currency)
    .fetch_one(connection)
    .await?;
    Ok(crate::policy::Spent { today, this_month })
}

/// Adds `delta` (minor units; negative when a payout fails or is canceled) to what the
/// business paid out in `currency` on the UTC day of `created_at`, in the payout's own
/// transaction.
pub async fn count_velocity(
    connection: &mut PgConnection,
    business: Uuid,
    currency: &str,
    created_at: OffsetDateTime,
    delta: i64,
) -> Result<(), sqlx::Error> {
    // A decrease finds the day's row its payout's creation made; an increase may make
    // it (an insert of a negative amount would fail the table's check before the
    // conflict is seen).
    let sql = if delta < 0 {
        "UPDATE payouts.velocity SET amount = amount + $4
          WHERE business_id = $1 AND currency = $2 AND day = ($3 AT TIME ZONE 'UTC')::date"
    } else {
        "INSERT INTO payouts.velocity (business_id, currency, day, amount)
         VALUES ($1, $2, ($3 AT TIME ZONE 'UTC')::date, $4)
         ON CONFLICT (business_id, currency, day) DO UPDATE SET amount = payouts.velocity.amount + EXCLUDED.amount"
    };
    sqlx::query(sql).bind(business).bind(currency).bind(created_at).bind(delta).execute(connection).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub limits: serde_json::Value,
    pub cooling_off_seconds: i32,
    pub version: i32,
    pub updated_at: OffsetDateTime,
}

pub async fn find_policy(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT limits, cooling_off_seconds, version, updated_at FROM payouts.policies WHERE business_id = $1",
    )
    .bind(business.as_uuid())
    .fetch_optional(connection)
    .await
}

pub async fn save_policy(
    connection: &mut PgConnection,
    business: BusinessId,
    limits: &serde_json::Value,
    cooling_off_seconds: i32,
) -> Result<PolicyRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payouts.policies (business_id, limits, cooling_off_seconds) VALUES ($1, $2, $3)
         ON CONFLICT (business_id) DO UPDATE
            SET limits = EXCLUDED.limits, cooling_off_seconds = EXCLUDED.cooling_off_seconds,
                version = payouts.policies.version + 1, updated_at = now()
         RETURNING limits, cooling_off_seconds, version, updated_at",
    )
    .bind(business.as_uuid())
    .bind(limits)
    .bind(cooling_off_seconds)
    .fetch_one(connection)
    .await
}

pub async fn find_payout(connection: &mut PgConnection, id: Uuid) -> Result<Option<PayoutRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PAYOUT_COLUMNS} FROM payouts.payouts WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The payout, locked until the transaction ends: the saga's steps and any other writer
/// of its status take this lock first.
pub async fn lock_payout(connection: &mut PgConnection, id: Uuid) -> Result<Option<PayoutRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PAYOUT_COLUMNS} FROM payouts.payouts WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(connection)
        .await
}

pub async fn list_payouts(
    connection: &mut PgConnection,
    business: BusinessId,
    status: Option<&str>,
    beneficiary: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<PayoutRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts.payouts
          WHERE business_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR beneficiary_id = $3)
            AND ($4::uuid IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5"
    ))
    .bind(business.as_uuid())
    .bind(status)
    .bind(beneficiary)
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// What a saga step writes: the payout's new state and when it is next due (`None`:
/// never again, it is final and no longer watched). The lease is let go.
pub struct Step<'a> {
    pub status: &'a str,
    pub status_detail: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub rail_payout_id: Option<&'a str>,
    pub rail_status: Option<&'a str>,
    pub next_step_at: Option<OffsetDateTime>,
    pub attempts: i32,
    pub watch_until: Option<OffsetDateTime>,
    pub paid_at: Option<OffsetDateTime>,
    /// Whether the status changed (the version moves, an event follows).
    pub transition: bool,
}

pub async fn write_step(connection: &mut PgConnection, id: Uuid, step: &Step<'_>) -> Result<PayoutRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE payouts.payouts
            SET status = $2, status_detail = $3, failure_reason = $4, rail_payout_id = $5, rail_status = $6,
                -- A webhook came while this step held the lease: ask again now.
                next_step_at = CASE WHEN hinted AND $7 IS NOT NULL THEN now() ELSE $7 END, hinted = false,
                attempts = $8, watch_until = $9, paid_at = $10, lease_until = NULL,
                version = version + CASE WHEN $11 THEN 1 ELSE 0 END,
                updated_at = CASE WHEN $11 THEN now() ELSE updated_at END
          WHERE id = $1
          RETURNING {PAYOUT_COLUMNS}"
    ))
    .bind(id)
    .bind(step.status)
    .bind(step.status_detail)
    .bind(step.failure_reason)
    .bind(step.rail_payout_id)
    .bind(step.rail_status)
    .bind(step.next_step_at)
    .bind(step.attempts)
    .bind(step.watch_until)
    .bind(step.paid_at)
    .bind(step.transition)
    .fetch_one(connection)
    .await
}

/// A leased payout and what its step needs to call the rail.
pub struct Due {
    pub business: BusinessId,
    pub payout: PayoutRow,
    /// `None` only for a row the schema's foreign key forbids.
    pub beneficiary: Option<BeneficiaryRow>,
}

/// Leases up to `rows_max` due payouts of every business for `lease_seconds` and reads
/// each with its beneficiary, all in one transaction: the lease is cross-tenant by
/// necessity (see `payouts.lease_due` in the migration), and the reads are each
/// business's own, under its tenant (row-level security applies), one pair of queries
/// per business rather than a transaction per payout (`till bench payouts --profile`).
pub async fn lease_due(pool: &sqlx::PgPool, rows_max: i32, lease_seconds: i32) -> Result<Vec<Due>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let leased: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT business_id, payout_id FROM payouts.lease_due($1, $2)")
        .bind(rows_max)
        .bind(lease_seconds)
        .fetch_all(&mut *tx)
        .await?;
    let mut by_business: std::collections::BTreeMap<Uuid, Vec<Uuid>> = std::collections::BTreeMap::new();
    for (business, payout) in leased {
        by_business.entry(business).or_default().push(payout);
    }
    let mut due = Vec::new();
    for (business, ids) in by_business {
        let business = BusinessId::from_uuid(business);
        till_db::tenant::set_tenant(&mut tx, business).await?;
        let payouts: Vec<PayoutRow> =
            sqlx::query_as(&format!("SELECT {PAYOUT_COLUMNS} FROM payouts.payouts WHERE id = ANY($1)"))
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let wanted: Vec<Uuid> = payouts.iter().map(|payout| payout.beneficiary_id).collect();
        let beneficiaries: Vec<BeneficiaryRow> =
            sqlx::query_as(&format!("SELECT {BENEFICIARY_COLUMNS} FROM payouts.beneficiaries WHERE id = ANY($1)"))
                .bind(&wanted)
                .fetch_all(&mut *tx)
                .await?;
        for payout in payouts {
            let beneficiary = beneficiaries.iter().find(|row| row.id == payout.beneficiary_id).cloned();
            due.push(Due { business, payout, beneficiary });
        }
    }
    tx.commit().await?;
    Ok(due)
}

/// Nothing is due for the payout: not taken again, and its lease let go.
pub async fn idle(connection: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payouts.payouts SET next_step_at = NULL, lease_until = NULL WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Appends an event about a beneficiary or a payout to the payouts outbox.
pub async fn announce(
    connection: &mut PgConnection,
    business: Uuid,
    resource_id: String,
    version: i32,
    at: OffsetDateTime,
    event_type: till_outbox::EventType,
    data: &impl serde::Serialize,
) -> Result<(), till_outbox::AnnounceError> {
    let business = BusinessId::from_uuid(business);
    till_outbox::announce(connection, OUTBOX, business, resource_id, i64::from(version), at, event_type, data).await
}
