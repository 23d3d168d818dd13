//! The ledger's SQL: the only module that knows the `ledger` schema. Functions take the
//! caller's connection, inside its transaction; every query filters by business (RLS is
//! the backstop). Batch writes use `UNNEST` so that a batch of any size is one statement
//! per table.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Row};
use till_http::unit_of_work::{self, ResponseRecord, StoredResponse, StoredRow};
use till_kit::{BusinessId, Currency, Metadata, Money};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Account, AccountStatus, Resolution, ResolutionKind, Side, Totals, Transfer, Writes};
use crate::{AccountId, EntryId, TransferId};

/// The ledger's outbox (see the events crate).
pub const OUTBOX: &str = "ledger.outbox";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub name: String,
    pub currency: String,
    pub normal_balance: String,
    pub min_balance: Option<i64>,
    pub max_balance: Option<i64>,
    pub status: String,
    pub metadata: serde_json::Value,
    pub version: i32,
    /// Bumped by every change to the row (see the migration that added it).
    pub revision: i64,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A stored value that the schema's constraints should have made impossible.
#[derive(Debug, thiserror::Error)]
#[error("corrupt ledger row: {0}")]
pub struct CorruptRow(pub String);

pub fn metadata_from(value: serde_json::Value) -> Result<Metadata, CorruptRow> {
    let map: BTreeMap<String, String> = serde_json::from_value(value).map_err(|error| CorruptRow(error.to_string()))?;
    Metadata::parse(map).map_err(|error| CorruptRow(error.to_string()))
}

/// Metadata as a JSON object (built directly: it is string keys and string values, so
/// there is no failure to fall back from).
pub fn metadata_json(metadata: &Metadata) -> serde_json::Value {
    let object = metadata.as_map().iter().map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())));
    serde_json::Value::Object(object.collect())
}

impl AccountRow {
    pub fn account(&self) -> Result<Account, CorruptRow> {
        Ok(Account {
            id: AccountId::from_uuid(self.id),
            currency: Currency::parse(&self.currency).map_err(|error| CorruptRow(error.to_string()))?,
            normal_balance: Side::parse(&self.normal_balance).ok_or_else(|| CorruptRow(self.normal_balance.clone()))?,
            min_balance: self.min_balance,
            max_balance: self.max_balance,
            status: AccountStatus::parse(&self.status).ok_or_else(|| CorruptRow(self.status.clone()))?,
            totals: Totals {
                debits_posted: self.debits_posted,
                credits_posted: self.credits_posted,
                debits_pending: self.debits_pending,
                credits_pending: self.credits_pending,
            },
        })
    }
}

const ACCOUNT_COLUMNS: &str =
    "id, name, currency, normal_balance, min_balance, max_balance, status, metadata, version, revision, \
     debits_posted, credits_posted, debits_pending, credits_pending, created_at, updated_at";

pub struct NewAccount<'a> {
    pub id: AccountId,
    pub name: &'a str,
    pub currency: Currency,
    pub normal_balance: Side,
    pub min_balance: Option<i64>,
    pub max_balance: Option<i64>,
    pub metadata: &'a Metadata,
}

pub async fn insert_account(
    connection: &mut PgConnection,
    business: BusinessId,
    account: &NewAccount<'_>,
) -> Result<AccountRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO ledger.accounts (id, business_id, name, currency, normal_balance, min_balance, max_balance, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(account.id.as_uuid())
    .bind(business.as_uuid())
    .bind(account.name)
    .bind(account.currency.code())
    .bind(account.normal_balance.as_str())
    .bind(account.min_balance)
    .bind(account.max_balance)
    .bind(metadata_json(account.metadata))
    .fetch_one(connection)
    .await
}

pub async fn find_account(
    connection: &mut PgConnection,
    business: BusinessId,
    id: AccountId,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM ledger.accounts WHERE business_id = $1 AND id = $2"))
        .bind(business.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(connection)
        .await
}

/// The business's accounts among `ids`, in one query.
pub async fn find_accounts(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[Uuid],
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM ledger.accounts WHERE business_id = $1 AND id = ANY ($2)"))
        .bind(business.as_uuid())
        .bind(ids)
        .fetch_all(connection)
        .await
}

pub async fn list_accounts(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Option<Currency>,
    status: Option<AccountStatus>,
    starting_after: Option<AccountId>,
    limit: i64,
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM ledger.accounts
          WHERE business_id = $1
            AND ($2::text IS NULL OR currency = $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::uuid IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5"
    ))
    .bind(business.as_uuid())
    .bind(currency.map(Currency::code))
    .bind(status.map(AccountStatus::as_str))
    .bind(starting_after.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// Begins an engine batch's transaction (with `Connection::begin_with`) in one round
/// trip: `BEGIN`, then scope it to the business (for row-level security) and make its
/// statements use their cached generic plans. Every lookup in a batch is one index probe
/// per id (see `accounts_sql`), which a generic plan does as well as a custom one, but
/// PostgreSQL kept re-planning the idempotency-key lookup for every batch
/// (pg_stat_statements under `till bench ledger`: 177 us of planning per batch, for
/// 87 us of execution).
///
/// A simple-query string takes no parameters; the only value in it is the business id,
/// a UUID formatted here (hex digits and dashes: nothing to quote).
pub fn begin_batch(business: BusinessId) -> String {
    let id = business.as_uuid().hyphenated();
    format!(
        "BEGIN; SELECT set_config('till.business_id', '{id}', true), set_config('till.scope', '{id}', true), \
         set_config('plan_cache_mode', 'force_generic_plan', true)"
    )
}

/// Scopes a transaction someone else began to `business` (row-level security) for the
/// rest of its life, and reads the database's clock, the ledger's only clock.
pub async fn scope_transaction(
    connection: &mut PgConnection,
    business: BusinessId,
) -> Result<OffsetDateTime, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT clock_timestamp() FROM (SELECT set_config('till.business_id', $1, true), \
         set_config('till.scope', $1, true)) AS scoped",
    )
    .bind(business.as_uuid().to_string())
    .fetch_one(connection)
    .await
}

/// Overdue holds of every business, for the sweeper (cross-business by necessity: see
/// `ledger.overdue_holds` in the migration).
pub async fn overdue_holds(pool: &sqlx::PgPool, rows_max: i32) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT business_id, transfer_id FROM ledger.overdue_holds($1)").bind(rows_max).fetch_all(pool).await
}

pub struct AccountChanges<'a> {
    pub name: &'a str,
    pub metadata: &'a Metadata,
    pub status: AccountStatus,
    pub min_balance: Option<i64>,
    pub max_balance: Option<i64>,
}

pub async fn update_account(
    connection: &mut PgConnection,
    business: BusinessId,
    id: AccountId,
    changes: &AccountChanges<'_>,
) -> Result<AccountRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE ledger.accounts
            SET name = $3, metadata = $4, status = $5, min_balance = $6, max_balance = $7,
                version = version + 1, revision = revision + 1, updated_at = now()
          WHERE business_id = $1 AND id = $2
          RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(business.as_uuid())
    .bind(id.as_uuid())
    .bind(changes.name)
    .bind(metadata_json(changes.metadata))
    .bind(changes.status.as_str())
    .bind(changes.min_balance)
    .bind(changes.max_balance)
    .fetch_one(connection)
    .await
}

/// The business's accounts among `ids`, locked (`FOR UPDATE`) until the transaction ends,
/// with the time at which the last lock was granted. Ids of other businesses are simply
/// not found.
///
/// These row locks serialise writers of an account when the engine cannot go by its
/// revisions (a batch's retry), and account updates (`PATCH`), also across Till
/// instances. `ids` must be sorted and distinct: rows are locked in that order (the
/// nested loop follows the array), so two batches never wait for each other in a cycle.
pub async fn lock_accounts(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[Uuid],
) -> Result<(Vec<AccountRow>, Option<OffsetDateTime>), sqlx::Error> {
    select_accounts(connection, &LOCK_ACCOUNTS_SQL, business, ids).await
}

/// The business's accounts among `ids`, as committed now, without locks, with the time
/// at which the last was read: the engine checks their revisions when it writes.
pub async fn read_accounts(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[Uuid],
) -> Result<(Vec<AccountRow>, Option<OffsetDateTime>), sqlx::Error> {
    select_accounts(connection, &READ_ACCOUNTS_SQL, business, ids).await
}

async fn select_accounts(
    connection: &mut PgConnection,
    sql: &str,
    business: BusinessId,
    ids: &[Uuid],
) -> Result<(Vec<AccountRow>, Option<OffsetDateTime>), sqlx::Error> {
    if ids.is_empty() {
        return Ok((Vec::new(), None));
    }
    let rows: Vec<ReadAccountRow> =
        sqlx::query_as(sql).bind(business.as_uuid()).bind(ids).fetch_all(connection).await?;
    let read_at = rows.iter().map(|row| row.read_at).max();
    Ok((rows.into_iter().map(|row| row.account).collect(), read_at))
}

/// One primary-key lookup per id, whatever the statistics say: `id = ANY($2)` let the
/// cached generic plan scan every account of the business (measured: 2 ms for 30 ids
/// among 10 000), and a semi-join on stale statistics did the same. `LIMIT 1` keeps the
/// lateral subquery from being flattened into a join the planner could reorder.
fn accounts_sql(lock: &str) -> String {
    format!(
        "SELECT a.*, clock_timestamp() AS read_at
           FROM unnest($2::uuid[]) WITH ORDINALITY AS wanted(id, n)
          CROSS JOIN LATERAL (SELECT {ACCOUNT_COLUMNS} FROM ledger.accounts
                               WHERE business_id = $1 AND id = wanted.id LIMIT 1 {lock}) a
          ORDER BY wanted.n"
    )
}

static LOCK_ACCOUNTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| accounts_sql("FOR UPDATE"));
static READ_ACCOUNTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| accounts_sql(""));

#[derive(sqlx::FromRow)]
struct ReadAccountRow {
    #[sqlx(flatten)]
    account: AccountRow,
    read_at: OffsetDateTime,
}

/// The start of an engine batch, in one round trip: the database's clock now, and the
/// responses stored under `keys` in `scope` (the HTTP crate's lookup,
/// [`unit_of_work::find_stored_sql`]). The statement returns one row even when no key is
/// found, for the clock.
pub async fn start_batch(
    connection: &mut PgConnection,
    scope: &str,
    wanted: &[(String, String)],
) -> Result<(OffsetDateTime, Vec<((String, String), StoredResponse)>), sqlx::Error> {
    let (principals, keys): (Vec<&str>, Vec<&str>) =
        wanted.iter().map(|(principal, key)| (principal.as_str(), key.as_str())).unzip();
    let rows: Vec<StartRow> =
        sqlx::query_as(&START_BATCH_SQL).bind(scope).bind(principals).bind(keys).fetch_all(connection).await?;
    let now = rows.first().map(|row| row.now).ok_or(sqlx::Error::RowNotFound)?;
    let stored = rows
        .into_iter()
        .filter_map(|row| {
            Some(
                StoredRow {
                    principal: row.principal?,
                    key: row.key?,
                    unattributed: row.unattributed?,
                    principal_role: row.principal_role,
                    fingerprint: row.fingerprint?,
                    response_status: row.response_status?,
                    response_headers: row.response_headers?,
                    response_body: row.response_body?,
                }
                .into_pair(),
            )
        })
        .collect();
    Ok((now, stored))
}

static START_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT clock_timestamp() AS now, stored.* FROM (VALUES (0)) AS one(n) LEFT JOIN ({}) stored ON true",
        unit_of_work::find_stored_sql(1, 2, 3)
    )
});

#[derive(sqlx::FromRow)]
struct StartRow {
    now: OffsetDateTime,
    principal: Option<String>,
    key: Option<String>,
    unattributed: Option<bool>,
    principal_role: Option<String>,
    fingerprint: Option<Vec<u8>>,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
}

/// One account, locked until the transaction ends (see [`lock_accounts`]).
pub async fn lock_account(
    connection: &mut PgConnection,
    business: BusinessId,
    id: AccountId,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM ledger.accounts WHERE business_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(business.as_uuid())
    .bind(id.as_uuid())
    .fetch_optional(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferRow {
    pub id: Uuid,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub pending: bool,
    pub expires_at: Option<OffsetDateTime>,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    pub reverses_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub resolution_kind: Option<String>,
    pub posted_amount: Option<i64>,
    pub resolved_at: Option<OffsetDateTime>,
    pub reversed_by_id: Option<Uuid>,
}

impl TransferRow {
    pub fn transfer(self) -> Result<Transfer, CorruptRow> {
        let currency = Currency::parse(&self.currency).map_err(|error| CorruptRow(error.to_string()))?;
        let resolution = match (self.resolution_kind, self.posted_amount, self.resolved_at) {
            (Some(kind), Some(posted_amount), Some(resolved_at)) => Some(Resolution {
                kind: ResolutionKind::parse(&kind).ok_or(CorruptRow(kind))?,
                posted: Money::from_minor(posted_amount, currency),
                resolved_at,
            }),
            _ => None,
        };
        Ok(Transfer {
            id: TransferId::from_uuid(self.id),
            debit_account: AccountId::from_uuid(self.debit_account_id),
            credit_account: AccountId::from_uuid(self.credit_account_id),
            amount: Money::from_minor(self.amount, currency),
            pending: self.pending,
            expires_at: self.expires_at,
            description: self.description,
            metadata: metadata_from(self.metadata)?,
            reverses: self.reverses_id.map(TransferId::from_uuid),
            created_at: self.created_at,
            resolution,
            reversed_by: self.reversed_by_id.map(TransferId::from_uuid),
        })
    }
}

const TRANSFER_SELECT: &str = "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.currency, t.pending,
            t.expires_at, t.description, t.metadata, t.reverses_id, t.created_at,
            r.kind AS resolution_kind, r.posted_amount, r.resolved_at, rev.id AS reversed_by_id
       FROM ledger.transfers t
       LEFT JOIN ledger.hold_resolutions r ON r.transfer_id = t.id
       LEFT JOIN ledger.transfers rev ON rev.reverses_id = t.id";

pub async fn load_transfers(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[Uuid],
) -> Result<Vec<TransferRow>, sqlx::Error> {
    // One lookup per id, as in `load_accounts`.
    sqlx::query_as(&format!(
        "SELECT found.* FROM (SELECT DISTINCT unnest($2::uuid[])) AS wanted(id)
           CROSS JOIN LATERAL ({TRANSFER_SELECT} WHERE t.business_id = $1 AND t.id = wanted.id LIMIT 1) found"
    ))
    .bind(business.as_uuid())
    .bind(ids)
    .fetch_all(connection)
    .await
}

pub async fn list_transfers(
    connection: &mut PgConnection,
    business: BusinessId,
    account: Option<AccountId>,
    starting_after: Option<TransferId>,
    limit: i64,
) -> Result<Vec<TransferRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{TRANSFER_SELECT}
          WHERE t.business_id = $1
            AND ($2::uuid IS NULL OR t.debit_account_id = $2 OR t.credit_account_id = $2)
            AND ($3::uuid IS NULL OR t.id < $3)
          ORDER BY t.id DESC LIMIT $4"
    ))
    .bind(business.as_uuid())
    .bind(account.map(|id| id.as_uuid()))
    .bind(starting_after.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// An account a batch decided with: its state after the batch, the revision the batch
/// read it at, and whether the batch changed it.
pub struct Consulted<'a> {
    pub account: &'a Account,
    pub revision: i64,
    pub changed: bool,
}

/// Whether [`write()`] wrote the batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Written,
    /// An account had changed since the batch read it (another Till instance, an account
    /// update): the statement wrote rows, and the caller must roll back and decide again.
    Stale,
}

/// Writes what a batch recorded, the accounts' new totals, the batch's events and its
/// stored responses, in one statement: a data-modifying CTE per table, each fed by
/// `UNNEST` of column arrays (empty arrays insert nothing). The outbox and response parts
/// are the outbox and HTTP kits' own SQL ([`till_outbox::append::append_sql`],
/// [`unit_of_work::record_responses_sql`]), spliced in to save two round trips per batch.
///
/// Every consulted account is checked at the revision the batch read it at: a changed
/// one is updated only if its revision is still that one (the update waits for a
/// concurrent writer of the row, then checks the revision it committed), and an
/// unchanged one (a refusal was decided with it) must still be at it. If any is not, the
/// answer is [`Written::Stale`].
pub async fn write(
    connection: &mut PgConnection,
    business: BusinessId,
    writes: &Writes,
    accounts: &[Consulted<'_>],
    events: &[till_outbox::Event],
    responses: &[ResponseRecord<'_>],
) -> Result<Written, sqlx::Error> {
    if writes.transfers.is_empty()
        && writes.resolutions.is_empty()
        && writes.entries.is_empty()
        && accounts.is_empty()
        && events.is_empty()
        && responses.is_empty()
    {
        return Ok(Written::Written);
    }
    let (t, r, e) = (&writes.transfers, &writes.resolutions, &writes.entries);
    let (changed, unchanged): (Vec<&Consulted<'_>>, Vec<&Consulted<'_>>) =
        accounts.iter().partition(|consulted| consulted.changed);
    let query = sqlx::query(&WRITE_SQL)
        .bind(business.as_uuid())
        .bind(t.iter().map(|x| x.id.as_uuid()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.debit_account.as_uuid()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.credit_account.as_uuid()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.amount.minor()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.currency().code()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.pending).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.expires_at).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.description.clone()).collect::<Vec<_>>())
        .bind(t.iter().map(|x| metadata_json(&x.metadata)).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.reverses.map(|id| id.as_uuid())).collect::<Vec<_>>())
        .bind(t.iter().map(|x| x.created_at).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.hold.as_uuid()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.resolution.kind.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.resolution.posted.minor()).collect::<Vec<_>>())
        .bind(r.iter().map(|x| x.resolution.resolved_at).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.id.as_uuid()).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.account.as_uuid()).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.transfer.as_uuid()).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.side.as_str()).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.kind).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.posted_delta).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.pending_delta).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.totals_after.debits_posted).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.totals_after.credits_posted).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.totals_after.debits_pending).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.totals_after.credits_pending).collect::<Vec<_>>())
        .bind(e.iter().map(|x| x.created_at).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.account.id.as_uuid()).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.account.totals.debits_posted).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.account.totals.credits_posted).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.account.totals.debits_pending).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.account.totals.credits_pending).collect::<Vec<_>>())
        .bind(changed.iter().map(|a| a.revision).collect::<Vec<_>>())
        .bind(unchanged.iter().map(|a| a.account.id.as_uuid()).collect::<Vec<_>>())
        .bind(unchanged.iter().map(|a| a.revision).collect::<Vec<_>>());
    let query = till_outbox::append::bind_append(query, events);
    let row = unit_of_work::bind_responses(query, responses).fetch_one(connection).await?;
    let (updated, current): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let all_current =
        usize::try_from(updated).ok() == Some(changed.len()) && usize::try_from(current).ok() == Some(unchanged.len());
    Ok(if all_current { Written::Written } else { Written::Stale })
}

/// Parameters of the ledger's own part of [`write()`]; the events' and responses' follow.
const WRITE_PARAMETERS: usize = 36;

static WRITE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH new_transfers AS (
             INSERT INTO ledger.transfers (id, business_id, debit_account_id, credit_account_id, amount, currency,
                                           pending, expires_at, description, metadata, reverses_id, created_at)
             SELECT u.id, $1, u.debit, u.credit, u.amount, u.currency, u.pending, u.expires_at, u.description,
                    u.metadata, u.reverses, u.created_at
               FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::int8[], $6::text[], $7::bool[], $8::timestamptz[],
                           $9::text[], $10::jsonb[], $11::uuid[], $12::timestamptz[])
                    AS u(id, debit, credit, amount, currency, pending, expires_at, description, metadata, reverses, created_at)
         ), new_resolutions AS (
             INSERT INTO ledger.hold_resolutions (transfer_id, business_id, kind, posted_amount, resolved_at)
             SELECT u.id, $1, u.kind, u.posted, u.at
               FROM UNNEST($13::uuid[], $14::text[], $15::int8[], $16::timestamptz[]) AS u(id, kind, posted, at)
         ), new_entries AS (
             INSERT INTO ledger.entries (id, business_id, account_id, transfer_id, side, kind, posted_delta, pending_delta,
                                         debits_posted, credits_posted, debits_pending, credits_pending, created_at)
             SELECT u.id, $1, u.account, u.transfer, u.side, u.kind, u.posted_delta, u.pending_delta,
                    u.dp, u.cp, u.dpe, u.cpe, u.at
               FROM UNNEST($17::uuid[], $18::uuid[], $19::uuid[], $20::text[], $21::text[], $22::int8[], $23::int8[],
                           $24::int8[], $25::int8[], $26::int8[], $27::int8[], $28::timestamptz[])
                    AS u(id, account, transfer, side, kind, posted_delta, pending_delta, dp, cp, dpe, cpe, at)
         ), new_totals AS (
             UPDATE ledger.accounts a
                SET debits_posted = u.dp, credits_posted = u.cp, debits_pending = u.dpe, credits_pending = u.cpe,
                    revision = u.revision + 1, updated_at = now()
               FROM UNNEST($29::uuid[], $30::int8[], $31::int8[], $32::int8[], $33::int8[], $34::int8[])
                    AS u(id, dp, cp, dpe, cpe, revision)
              WHERE a.business_id = $1 AND a.id = u.id AND a.revision = u.revision
             RETURNING 1
         ), still_current AS (
             SELECT 1 FROM UNNEST($35::uuid[], $36::int8[]) AS u(id, revision)
              CROSS JOIN LATERAL (SELECT 1 FROM ledger.accounts a
                                   WHERE a.business_id = $1 AND a.id = u.id AND a.revision = u.revision LIMIT 1) a
         ), new_events AS (
             {events}
         ), new_responses AS (
             {responses}
         )
         SELECT (SELECT count(*) FROM new_totals), (SELECT count(*) FROM still_current)",
        events = till_outbox::append::append_sql(OUTBOX, WRITE_PARAMETERS + 1),
        responses = unit_of_work::record_responses_sql(WRITE_PARAMETERS + 1 + till_outbox::append::APPEND_PARAMETERS),
    )
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub side: String,
    pub kind: String,
    pub posted_delta: i64,
    pub pending_delta: i64,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub created_at: OffsetDateTime,
}

impl EntryRow {
    pub fn totals(&self) -> Totals {
        Totals {
            debits_posted: self.debits_posted,
            credits_posted: self.credits_posted,
            debits_pending: self.debits_pending,
            credits_pending: self.credits_pending,
        }
    }

    pub fn entry_id(&self) -> EntryId {
        EntryId::from_uuid(self.id)
    }
}

const ENTRY_COLUMNS: &str = "id, account_id, transfer_id, side, kind, posted_delta, pending_delta, \
     debits_posted, credits_posted, debits_pending, credits_pending, created_at";

pub async fn list_entries(
    connection: &mut PgConnection,
    business: BusinessId,
    account: AccountId,
    starting_after: Option<EntryId>,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger.entries
          WHERE business_id = $1 AND account_id = $2
            AND ($3::uuid IS NULL
                 OR (created_at, id) < (SELECT c.created_at, c.id FROM ledger.entries c WHERE c.id = $3 AND c.account_id = $2))
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(business.as_uuid())
    .bind(account.as_uuid())
    .bind(starting_after.map(|id| id.as_uuid()))
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// The account's last entry at or before `as_of` (None: no movement by then).
pub async fn entry_as_of(
    connection: &mut PgConnection,
    business: BusinessId,
    account: AccountId,
    as_of: OffsetDateTime,
) -> Result<Option<EntryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger.entries
          WHERE business_id = $1 AND account_id = $2 AND created_at <= $3
          ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(business.as_uuid())
    .bind(account.as_uuid())
    .bind(as_of)
    .fetch_optional(connection)
    .await
}

/// A service's posting key, as stored: what rebuilds the outcome it was given.
#[derive(Debug, sqlx::FromRow)]
pub struct PostingKeyRow {
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub transfer_ids: Vec<Uuid>,
}

/// The stored posting keys among `keys` (none when `keys` is empty, without a round trip).
pub async fn find_posting_keys(
    connection: &mut PgConnection,
    business: BusinessId,
    keys: &[&str],
) -> Result<Vec<PostingKeyRow>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT key, fingerprint, transfer_ids FROM ledger.posting_keys WHERE business_id = $1 AND key = ANY($2)",
    )
    .bind(business.as_uuid())
    .bind(keys)
    .fetch_all(connection)
    .await
}

/// Records the posting keys of applied commands. A key another instance stored since the
/// lookup fails the insert (unique violation), and the batch is decided again: it then
/// replays.
pub async fn insert_posting_keys(
    connection: &mut PgConnection,
    business: BusinessId,
    rows: &[PostingKeyRow],
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // A uuid[][] cannot hold rows of different lengths, so the ids travel as one flat
    // array with each key's count.
    let counts: Vec<i32> = rows.iter().map(|row| i32::try_from(row.transfer_ids.len()).unwrap_or(i32::MAX)).collect();
    let flat: Vec<Uuid> = rows.iter().flat_map(|row| row.transfer_ids.iter().copied()).collect();
    sqlx::query(
        "INSERT INTO ledger.posting_keys (business_id, key, fingerprint, transfer_ids, created_at)
         SELECT $1, k.key, k.fingerprint,
                (SELECT array_agg(f.id ORDER BY f.n) FROM UNNEST($5::uuid[]) WITH ORDINALITY AS f(id, n)
                  WHERE f.n > k.start AND f.n <= k.start + k.count),
                $6
           FROM (SELECT u.key, u.fingerprint, u.count,
                        coalesce(sum(u.count) OVER (ORDER BY u.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                          AS start
                   FROM UNNEST($2::text[], $3::bytea[], $4::int4[]) WITH ORDINALITY AS u(key, fingerprint, count, n)) k",
    )
    .bind(business.as_uuid())
    .bind(rows.iter().map(|row| row.key.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.fingerprint.as_slice()).collect::<Vec<_>>())
    .bind(counts)
    .bind(flat)
    .bind(at)
    .execute(connection)
    .await?;
    Ok(())
}
