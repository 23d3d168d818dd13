//! The invariant checker. Each invariant is one SQL statement, so each sees one
//! consistent snapshot even while batches commit around it.

use serde::Serialize;
use sqlx::PgConnection;
use till_kit::BusinessId;
use time::OffsetDateTime;
use utoipa::ToSchema;

const VIOLATIONS_MAX: i64 = 100;
/// How long past its expiry an open hold may wait for the sweeper before it is a violation.
const EXPIRY_GRACE_SECONDS: i64 = 60;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvariantResult {
    #[schema(example = "balanced")]
    pub name: String,
    pub description: String,
    pub ok: bool,
    /// Up to 100 offending rows.
    pub violations: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckReport {
    pub business_id: BusinessId,
    pub ok: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    pub invariants: Vec<InvariantResult>,
}

const INVARIANTS: [(&str, &str, &str); 7] = [
    (
        "balanced",
        "Per currency, the sum of debits equals the sum of credits, posted and pending.",
        "SELECT jsonb_build_object('currency', currency,
                    'debits_posted', sum(debits_posted), 'credits_posted', sum(credits_posted),
                    'debits_pending', sum(debits_pending), 'credits_pending', sum(credits_pending))
           FROM ledger.accounts WHERE business_id = $1
          GROUP BY currency
         HAVING sum(debits_posted) <> sum(credits_posted) OR sum(debits_pending) <> sum(credits_pending)
          LIMIT $2",
    ),
    (
        "totals_match_transfers",
        "Every account's stored totals equal the sums of its transfers and hold resolutions.",
        "WITH moves AS (
             SELECT t.debit_account_id AS account_id, 'debit' AS side,
                    CASE WHEN NOT t.pending THEN t.amount WHEN r.kind = 'posted' THEN r.posted_amount ELSE 0 END AS posted,
                    CASE WHEN t.pending AND r.transfer_id IS NULL THEN t.amount ELSE 0 END AS pending
               FROM ledger.transfers t LEFT JOIN ledger.hold_resolutions r ON r.transfer_id = t.id
              WHERE t.business_id = $1
             UNION ALL
             SELECT t.credit_account_id, 'credit',
                    CASE WHEN NOT t.pending THEN t.amount WHEN r.kind = 'posted' THEN r.posted_amount ELSE 0 END,
                    CASE WHEN t.pending AND r.transfer_id IS NULL THEN t.amount ELSE 0 END
               FROM ledger.transfers t LEFT JOIN ledger.hold_resolutions r ON r.transfer_id = t.id
              WHERE t.business_id = $1
         ), sums AS (
             SELECT account_id,
                    coalesce(sum(posted) FILTER (WHERE side = 'debit'), 0) AS dp,
                    coalesce(sum(posted) FILTER (WHERE side = 'credit'), 0) AS cp,
                    coalesce(sum(pending) FILTER (WHERE side = 'debit'), 0) AS dpe,
                    coalesce(sum(pending) FILTER (WHERE side = 'credit'), 0) AS cpe
               FROM moves GROUP BY account_id
         )
         SELECT jsonb_build_object('account_id', a.id,
                    'stored', jsonb_build_array(a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending),
                    'from_transfers', jsonb_build_array(coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpe, 0), coalesce(s.cpe, 0)))
           FROM ledger.accounts a LEFT JOIN sums s ON s.account_id = a.id
          WHERE a.business_id = $1
            AND (a.debits_posted <> coalesce(s.dp, 0) OR a.credits_posted <> coalesce(s.cp, 0)
                 OR a.debits_pending <> coalesce(s.dpe, 0) OR a.credits_pending <> coalesce(s.cpe, 0))
          LIMIT $2",
    ),
    (
        "totals_match_entries",
        "Every account's stored totals equal the sums of its entries, and its last entry's running totals.",
        "WITH sums AS (
             SELECT account_id,
                    coalesce(sum(posted_delta) FILTER (WHERE side = 'debit'), 0) AS dp,
                    coalesce(sum(posted_delta) FILTER (WHERE side = 'credit'), 0) AS cp,
                    coalesce(sum(pending_delta) FILTER (WHERE side = 'debit'), 0) AS dpe,
                    coalesce(sum(pending_delta) FILTER (WHERE side = 'credit'), 0) AS cpe
               FROM ledger.entries WHERE business_id = $1 GROUP BY account_id
         ), last AS (
             SELECT DISTINCT ON (account_id) account_id, debits_posted, credits_posted, debits_pending, credits_pending
               FROM ledger.entries WHERE business_id = $1
              ORDER BY account_id, created_at DESC, id DESC
         )
         SELECT jsonb_build_object('account_id', a.id,
                    'stored', jsonb_build_array(a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending),
                    'from_entries', jsonb_build_array(coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpe, 0), coalesce(s.cpe, 0)))
           FROM ledger.accounts a
           LEFT JOIN sums s ON s.account_id = a.id
           LEFT JOIN last l ON l.account_id = a.id
          WHERE a.business_id = $1
            AND (a.debits_posted <> coalesce(s.dp, 0) OR a.credits_posted <> coalesce(s.cp, 0)
                 OR a.debits_pending <> coalesce(s.dpe, 0) OR a.credits_pending <> coalesce(s.cpe, 0)
                 OR (l.account_id IS NOT NULL AND (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
                     IS DISTINCT FROM (l.debits_posted, l.credits_posted, l.debits_pending, l.credits_pending)))
          LIMIT $2",
    ),
    (
        "within_bounds",
        "No account's available balance is below its minimum, and no balance above its maximum.",
        "SELECT jsonb_build_object('account_id', id, 'min_balance', min_balance, 'max_balance', max_balance,
                    'balance', balance, 'available', available)
           FROM (SELECT id, min_balance, max_balance,
                        CASE normal_balance WHEN 'credit' THEN credits_posted::numeric - debits_posted
                                            ELSE debits_posted::numeric - credits_posted END AS balance,
                        CASE normal_balance WHEN 'credit' THEN credits_posted::numeric - debits_posted - debits_pending
                                            ELSE debits_posted::numeric - credits_posted - credits_pending END AS available
                   FROM ledger.accounts WHERE business_id = $1) a
          WHERE (min_balance IS NOT NULL AND available < min_balance)
             OR (max_balance IS NOT NULL AND balance > max_balance)
          LIMIT $2",
    ),
    (
        "holds_resolved_once",
        "Every hold is pending and unexpired, or was posted, voided or expired exactly once, for no more than it held.",
        "SELECT jsonb_build_object('transfer_id', t.id, 'problem', 'resolution of a transfer that is not a hold')
           FROM ledger.hold_resolutions r JOIN ledger.transfers t ON t.id = r.transfer_id
          WHERE r.business_id = $1 AND (NOT t.pending OR r.posted_amount > t.amount)
         UNION ALL
         SELECT jsonb_build_object('transfer_id', t.id, 'problem', 'still pending well past its expiry')
           FROM ledger.transfers t
          WHERE t.business_id = $1 AND t.pending AND t.expires_at < now() - $3::bigint * interval '1 second'
            AND NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions r WHERE r.transfer_id = t.id)
          LIMIT $2",
    ),
    (
        // The sweeper finds overdue holds only through this queue (kept by triggers; see
        // 20261124000001_open_holds.sql): a hold missing from it would never expire.
        "expiry_queue_matches",
        "The expiry sweeper's queue holds exactly the open holds that have an expiry, each with its expiry.",
        "SELECT jsonb_build_object('transfer_id', t.id, 'problem', 'open hold missing from the expiry queue')
           FROM ledger.transfers t
          WHERE t.business_id = $1 AND t.pending AND t.expires_at IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions r WHERE r.transfer_id = t.id)
            AND NOT EXISTS (SELECT 1 FROM ledger.open_holds h WHERE h.transfer_id = t.id)
         UNION ALL
         SELECT jsonb_build_object('transfer_id', h.transfer_id,
                    'problem', CASE WHEN t.id IS NULL THEN 'queued transfer not found in this business'
                                    WHEN r.transfer_id IS NOT NULL THEN 'resolved hold still queued'
                                    WHEN NOT t.pending THEN 'queued transfer is not a hold'
                                    ELSE 'queued with another expiry' END)
           FROM ledger.open_holds h
           LEFT JOIN ledger.transfers t ON t.id = h.transfer_id AND t.business_id = h.business_id
           LEFT JOIN ledger.hold_resolutions r ON r.transfer_id = h.transfer_id
          WHERE h.business_id = $1
            AND (t.id IS NULL OR r.transfer_id IS NOT NULL OR NOT t.pending OR t.expires_at IS DISTINCT FROM h.expires_at)
          LIMIT $2",
    ),
    (
        // Transfers and entries carry no foreign keys (the engine writes them only for
        // accounts it loaded; see 20261122000004_transfer_accounts_unchecked.sql), so
        // this is where a broken reference would show.
        "references_valid",
        "Every transfer's accounts, and every entry's account and transfer, exist in the same business and currency.",
        "SELECT jsonb_build_object('transfer_id', t.id, 'side', s.side, 'account_id', s.account_id,
                    'problem', CASE WHEN a.id IS NULL THEN 'account not found in this business'
                                    ELSE 'account in another currency' END)
           FROM ledger.transfers t
          CROSS JOIN LATERAL (VALUES ('debit', t.debit_account_id), ('credit', t.credit_account_id)) AS s(side, account_id)
           LEFT JOIN ledger.accounts a ON a.id = s.account_id AND a.business_id = t.business_id
          WHERE t.business_id = $1 AND (a.id IS NULL OR a.currency <> t.currency)
         UNION ALL
         SELECT jsonb_build_object('entry_id', e.id, 'account_id', e.account_id, 'transfer_id', e.transfer_id,
                    'problem', CASE WHEN a.id IS NULL THEN 'account not found in this business'
                                    WHEN t.id IS NULL THEN 'transfer not found in this business'
                                    ELSE 'account is not a side of the transfer' END)
           FROM ledger.entries e
           LEFT JOIN ledger.accounts a ON a.id = e.account_id AND a.business_id = e.business_id
           LEFT JOIN ledger.transfers t ON t.id = e.transfer_id AND t.business_id = e.business_id
          WHERE e.business_id = $1
            AND (a.id IS NULL OR t.id IS NULL
                 OR e.account_id <> CASE e.side WHEN 'debit' THEN t.debit_account_id ELSE t.credit_account_id END)
          LIMIT $2",
    ),
];

/// Runs every invariant for `business`.
pub async fn run(connection: &mut PgConnection, business: BusinessId) -> Result<CheckReport, sqlx::Error> {
    let mut invariants = Vec::with_capacity(INVARIANTS.len());
    for (name, description, query) in INVARIANTS {
        let mut statement =
            sqlx::query_scalar::<_, serde_json::Value>(query).bind(business.as_uuid()).bind(VIOLATIONS_MAX);
        if name == "holds_resolved_once" {
            statement = statement.bind(EXPIRY_GRACE_SECONDS);
        }
        let violations = statement.fetch_all(&mut *connection).await?;
        invariants.push(InvariantResult {
            name: name.to_string(),
            description: description.to_string(),
            ok: violations.is_empty(),
            violations,
        });
    }
    Ok(CheckReport {
        business_id: business,
        ok: invariants.iter().all(|invariant| invariant.ok),
        checked_at: OffsetDateTime::now_utc(),
        invariants,
    })
}

/// Every business that has ledger accounts (for `till ledger check`).
pub async fn businesses(connection: &mut PgConnection) -> Result<Vec<BusinessId>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT DISTINCT business_id FROM ledger.accounts ORDER BY business_id")
            .fetch_all(connection)
            .await?;
    Ok(ids.into_iter().map(BusinessId::from_uuid).collect())
}
