//! The payouts service's money in the ledger, posted in process (`till_ledger::posting`)
//! in the same transaction as the payout's own change and its event.
//!
//! A payout draws on the merchant's available balance (`merchant_available`, the
//! payments service's account, reached through `till_payments::ledger`). Its accounts,
//! per business and currency: `paid_out:{rail}` (credit-normal), what has left through
//! the rail.
//!
//! - Creating a payout places a *hold* from the available balance to `paid_out:{rail}`,
//!   in the payout row's transaction: the money is reserved (it no longer counts as
//!   available) but has not left. The available balance has no floor in the ledger (a
//!   gateway's negative settlement may take it below zero), so the hold is placed only
//!   after reading the balance under the account's row lock, which every ledger command
//!   on that account also takes: concurrent payouts queue on the lock, and none can
//!   reserve what another already has. It never expires by itself: only the rail's
//!   final status may end it.
//! - `paid` posts the hold; `failed` and `canceled` void it; `returned` reverses the
//!   posted hold (a new transfer back; the original is never changed).
//! - Every command carries a posting key derived from the payout and the step
//!   (`po_…:post`), so a step retried after a crash posts once.
//! - The available account's row is locked first by every step, then the command locks
//!   both accounts: one order, so a payout's creation and another's posting cannot
//!   deadlock on the two rows.

use sqlx::PgConnection;
use till_http::ApiError;
use till_kit::{BusinessId, Currency, HumanText, Metadata, Money};
use till_ledger::domain::{Command, HoldExpiry, NewTransfer, Outcome, Side};
use till_ledger::posting::{self, OpenAccount, PostingKey};
use till_ledger::{AccountId, TransferId};

use crate::rail::RailKind;

fn internal(cause: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&cause)
}

fn role(rail: RailKind) -> &'static str {
    match rail {
        RailKind::Fps => "paid_out:fps",
        RailKind::RazorpayX => "paid_out:razorpayx",
    }
}

async fn find_paid_out_account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    rail: RailKind,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT account_id FROM payouts.ledger_accounts WHERE business_id = $1 AND currency = $2 AND role = $3",
    )
    .bind(business.as_uuid())
    .bind(currency.code())
    .bind(role(rail))
    .fetch_optional(connection)
    .await
}

/// The business's `paid_out:{rail}` account in `currency`, opened in this transaction if
/// it is the first time.
async fn paid_out_account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    rail: RailKind,
    request_id: Option<&str>,
) -> Result<AccountId, ApiError> {
    // Read first: after the first payout the account is there (see
    // `till_payments::store::claim_ledger_account`).
    let existing = find_paid_out_account(connection, business, currency, rail).await?;
    if let Some(existing) = existing {
        return Ok(AccountId::from_uuid(existing));
    }
    let candidate = AccountId::generate();
    let claimed: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO payouts.ledger_accounts (business_id, currency, role, account_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (business_id, currency, role) DO NOTHING RETURNING account_id",
    )
    .bind(business.as_uuid())
    .bind(currency.code())
    .bind(role(rail))
    .bind(candidate.as_uuid())
    .fetch_optional(&mut *connection)
    .await?;
    if claimed.is_none() {
        // Another transaction opened it first, and has committed (the insert waited).
        let existing = find_paid_out_account(connection, business, currency, rail)
            .await?
            .ok_or_else(|| internal("a paid-out account claimed but not found"))?;
        return Ok(AccountId::from_uuid(existing));
    }
    let name = format!("Paid out through {} ({})", rail.title(), currency.code());
    let spec = OpenAccount {
        id: candidate,
        name: HumanText::parse(&name, 200).map_err(internal)?,
        currency,
        normal_balance: Side::Credit,
        min_balance: None,
        max_balance: None,
        metadata: Metadata::default(),
    };
    posting::open_account(connection, business, &spec, request_id).await?.map_err(internal)?;
    Ok(candidate)
}

fn metadata(payout: &str, kind: &str) -> Result<Metadata, ApiError> {
    let map = [("payout".to_string(), payout.to_string()), ("kind".to_string(), kind.to_string())];
    Metadata::parse(map.into_iter().collect()).map_err(internal)
}

/// The available balance's account, locked for the rest of the transaction.
async fn lock_available(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    request_id: Option<&str>,
) -> Result<(AccountId, i64), ApiError> {
    let account = till_payments::ledger::available_account(connection, business, currency, request_id).await?;
    let available = posting::available_locked(connection, business, account)
        .await?
        .ok_or_else(|| internal("the merchant's available account is missing"))?;
    Ok((account, available))
}

/// The available balance, locked for the rest of the transaction that read it.
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    account: AccountId,
    available: i64,
}

/// Locks the available balance in `currency` for the rest of the transaction: what a
/// payout's creation does before its policy reads the day's and the month's payouts.
/// The hold is placed under this same lock ([`hold`]).
pub async fn lock_balance(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    request_id: Option<&str>,
) -> Result<Locked, ApiError> {
    let (account, available) = lock_available(connection, business, currency, request_id).await?;
    Ok(Locked { account, available })
}

async fn apply(
    connection: &mut PgConnection,
    business: BusinessId,
    key: String,
    command: Command,
    request_id: Option<&str>,
) -> Result<Result<Outcome, String>, ApiError> {
    let key = PostingKey::new(key).map_err(internal)?;
    Ok(posting::apply_in(connection, business, Some(&key), &command, request_id)
        .await?
        .map_err(|refusal| refusal.to_string()))
}

/// There is not enough available to pay out: what there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insufficient {
    pub available: i64,
}

/// Reserves `amount` for `payout` with a hold of id `hold`, from the available balance
/// that `locked` read and still holds locked in this transaction (nothing has moved it
/// since: every ledger command on it waits for the lock).
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
pub async fn hold(
    connection: &mut PgConnection,
    business: BusinessId,
    locked: Locked,
    payout: &str,
    hold: TransferId,
    amount: Money,
    rail: RailKind,
    request_id: Option<&str>,
) -> Result<Result<(), Insufficient>, ApiError> {
    let currency = amount.currency();
    let Locked { account: available_account, available } = locked;
    if available < amount.minor() {
        return Ok(Err(Insufficient { available }));
    }
    let paid_out = paid_out_account(connection, business, currency, rail, request_id).await?;
    let transfer = NewTransfer {
        id: hold,
        debit_account: available_account,
        credit_account: paid_out,
        amount,
        hold: Some(HoldExpiry::Never),
        description: Some(HumanText::parse(&format!("Payout {payout}"), 200).map_err(internal)?),
        metadata: metadata(payout, "payout")?,
    };
    match apply(connection, business, format!("{payout}:hold"), Command::Transfer(transfer), request_id).await? {
        Ok(_) => Ok(Ok(())),
        // Checked under the lock just above: a refusal now is a bug, not a shortfall.
        Err(refusal) => Err(internal(format_args!("the ledger refused a payout's hold: {refusal}"))),
    }
}

/// How a payout's hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Paid: the hold is posted.
    Post,
    /// Failed or canceled: the hold is voided.
    Void,
    /// Returned after it was paid: the posted hold is reversed.
    Reverse,
}

impl Ending {
    fn step(self) -> &'static str {
        match self {
            Ending::Post => "post",
            Ending::Void => "void",
            Ending::Reverse => "reverse",
        }
    }
}

/// Ends `payout`'s hold as `ending` says. A refusal (the hold already ended another way)
/// is a bug in the caller's state machine, and an error.
pub async fn end(
    connection: &mut PgConnection,
    business: BusinessId,
    payout: &str,
    hold: TransferId,
    currency: Currency,
    ending: Ending,
    request_id: Option<&str>,
) -> Result<(), ApiError> {
    lock_available(connection, business, currency, request_id).await?;
    let command = match ending {
        Ending::Post => Command::post(hold, None),
        Ending::Void => Command::Void { hold },
        Ending::Reverse => Command::Reverse {
            transfer: hold,
            reversal: TransferId::generate(),
            description: Some(HumanText::parse(&format!("Return of payout {payout}"), 200).map_err(internal)?),
            metadata: metadata(payout, "return")?,
        },
    };
    match apply(connection, business, format!("{payout}:{}", ending.step()), command, request_id).await? {
        Ok(_) => Ok(()),
        Err(refusal) => {
            Err(internal(format_args!("the ledger refused to {} payout {payout}'s hold: {refusal}", ending.step())))
        }
    }
}
