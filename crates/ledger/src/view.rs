//! The ledger's API bodies, and how domain values and refusals become them. Shared by the
//! handlers and by the engine, which renders each response in the transaction that
//! stores it for idempotent replay.

use axum::http::StatusCode;
use serde::Serialize;
use till_http::ApiError;
use till_http::ErrorCode;
use till_kit::{Currency, Metadata};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::domain::{Account, Command, HoldExpiry, NewTransfer, Outcome, Refusal, Transfer, TransferStatus};
use crate::{AccountId, EntryId, TransferId};

/// A ledger account with its balances (minor units of `currency`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountBody {
    pub id: AccountId,
    #[schema(example = "Merchant settlement")]
    pub name: String,
    pub currency: Currency,
    /// `debit` or `credit`: the direction in which the balance grows.
    #[schema(example = "credit")]
    pub normal_balance: String,
    /// Lower bound of `available` (null: unbounded). An overdraft of 500.00 is -50000.
    pub min_balance: Option<i64>,
    /// Upper bound of `balance` (null: unbounded).
    pub max_balance: Option<i64>,
    /// `active`, `frozen` or `closed`.
    #[schema(example = "active")]
    pub status: String,
    pub metadata: Metadata,
    /// For `If-Match` on updates.
    pub version: i32,
    /// Posted, in the normal direction.
    pub balance: i64,
    /// Pending in the normal direction: incoming minus outgoing holds.
    pub pending: i64,
    /// `balance` minus outgoing holds: what can be spent now.
    pub available: i64,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub struct AccountExtras {
    pub name: String,
    pub metadata: Metadata,
    pub version: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Narrows a derived balance; the engine never commits a state where this fails.
pub(crate) fn narrow(value: i128) -> Result<i64, ApiError> {
    i64::try_from(value).map_err(|_| ApiError::internal(&"a stored balance does not fit in i64"))
}

impl AccountBody {
    pub fn new(account: &Account, extras: AccountExtras) -> Result<AccountBody, ApiError> {
        let balances = account.balances();
        Ok(AccountBody {
            id: account.id,
            name: extras.name,
            currency: account.currency,
            normal_balance: account.normal_balance.as_str().to_string(),
            min_balance: account.min_balance,
            max_balance: account.max_balance,
            status: account.status.as_str().to_string(),
            metadata: extras.metadata,
            version: extras.version,
            balance: narrow(balances.balance)?,
            pending: narrow(balances.pending_incoming - balances.pending_outgoing)?,
            available: narrow(balances.available)?,
            debits_posted: account.totals.debits_posted,
            credits_posted: account.totals.credits_posted,
            debits_pending: account.totals.debits_pending,
            credits_pending: account.totals.credits_pending,
            created_at: extras.created_at,
            updated_at: extras.updated_at,
        })
    }
}

/// A transfer: posted, or a hold (pending until posted, voided or expired).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransferBody {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// Minor units of `currency`; for a hold, the amount held.
    pub amount: i64,
    pub currency: Currency,
    /// `pending`, `posted`, `voided` or `expired`.
    #[schema(example = "posted")]
    pub status: String,
    /// Whether it was created as a hold.
    pub pending: bool,
    /// What actually moved: `amount` for a posted transfer, the posted part of a hold.
    pub posted_amount: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When a hold was posted, voided or expired.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// The transfer this one reverses.
    pub reverses: Option<TransferId>,
    /// The reversal of this transfer.
    pub reversed_by: Option<TransferId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Transfer> for TransferBody {
    fn from(transfer: &Transfer) -> TransferBody {
        let status = match transfer.status() {
            TransferStatus::Pending => "pending",
            TransferStatus::Posted => "posted",
            TransferStatus::Voided => "voided",
            TransferStatus::Expired => "expired",
        };
        TransferBody {
            id: transfer.id,
            debit_account_id: transfer.debit_account,
            credit_account_id: transfer.credit_account,
            amount: transfer.amount.minor(),
            currency: transfer.currency(),
            status: status.to_string(),
            pending: transfer.pending,
            posted_amount: transfer.posted_amount().minor(),
            expires_at: transfer.expires_at,
            resolved_at: transfer.resolution.map(|resolution| resolution.resolved_at),
            description: transfer.description.clone(),
            metadata: transfer.metadata.clone(),
            reverses: transfer.reverses,
            reversed_by: transfer.reversed_by,
            created_at: transfer.created_at,
        }
    }
}

/// The transfers of an applied batch, in request order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchBody {
    pub data: Vec<TransferBody>,
}

/// One movement on an account, with the account's totals after it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryBody {
    pub id: EntryId,
    pub account_id: AccountId,
    pub transfer_id: TransferId,
    /// `debit` or `credit`.
    pub side: String,
    /// `posted`, `hold`, `post`, `void` or `expire`.
    pub kind: String,
    /// Change of this side's posted total.
    pub posted_delta: i64,
    /// Change of this side's pending total (negative when a hold ends).
    pub pending_delta: i64,
    /// The account's posted balance after this entry, in its normal direction.
    pub balance_after: i64,
    pub available_after: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An account's balances at a moment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalanceBody {
    pub account_id: AccountId,
    pub currency: Currency,
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
    pub balance: i64,
    pub pending: i64,
    pub available: i64,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

impl BalanceBody {
    /// `account`'s balances with the totals it had at `as_of`.
    pub fn new(account: &Account, as_of: OffsetDateTime) -> Result<BalanceBody, ApiError> {
        let balances = account.balances();
        Ok(BalanceBody {
            account_id: account.id,
            currency: account.currency,
            as_of,
            balance: narrow(balances.balance)?,
            pending: narrow(balances.pending_incoming - balances.pending_outgoing)?,
            available: narrow(balances.available)?,
            debits_posted: account.totals.debits_posted,
            credits_posted: account.totals.credits_posted,
            debits_pending: account.totals.debits_pending,
            credits_pending: account.totals.credits_pending,
        })
    }
}

/// The problem for a refused `command`, naming the request field at fault: which of a
/// transfer's accounts (`debit_account_id` or `credit_account_id`), and in a batch which
/// transfer (`transfers[2].credit_account_id`). A refusal about an account of an existing
/// transfer (posting a hold whose account was frozen) names no field: the request has
/// none for it.
pub fn refusal_error(command: &Command, refusal: &Refusal) -> ApiError {
    match (command, refusal) {
        (Command::Batch(transfers), Refusal::InBatch { index, refusal: inner }) => {
            let inner_error = transfer_refusal_error(transfers.get(*index), inner);
            let field = inner_error.param.clone().unwrap_or_else(|| "amount".to_string());
            ApiError { param: Some(format!("transfers[{index}].{field}")), detail: refusal.to_string(), ..inner_error }
        }
        (Command::Transfer(new), refusal) => transfer_refusal_error(Some(new), refusal),
        (_, refusal) => transfer_refusal_error(None, refusal),
    }
}

/// The field of `new` that names `account`.
fn account_param(new: Option<&NewTransfer>, account: AccountId) -> Option<&'static str> {
    let new = new?;
    if new.debit_account == account {
        Some("debit_account_id")
    } else if new.credit_account == account {
        Some("credit_account_id")
    } else {
        None
    }
}

fn transfer_refusal_error(new: Option<&NewTransfer>, refusal: &Refusal) -> ApiError {
    let detail = refusal.to_string();
    let with_account = |error: ApiError, account: AccountId| match account_param(new, account) {
        Some(param) => error.with_param(param),
        None => error,
    };
    match refusal {
        Refusal::AccountNotFound { account } => {
            with_account(ApiError::new(ErrorCode::ResourceMissing, detail), *account)
        }
        Refusal::SameAccount => ApiError::rule("credit_account_id", detail),
        Refusal::CurrencyMismatch { .. } => ApiError::new(ErrorCode::CurrencyMismatch, detail).with_param("currency"),
        Refusal::AccountNotActive { account, .. } => {
            with_account(ApiError::new(ErrorCode::AccountNotActive, detail), *account)
        }
        Refusal::InsufficientFunds { .. } => ApiError::new(ErrorCode::InsufficientFunds, detail).with_param("amount"),
        Refusal::BalanceLimitExceeded { .. } => {
            ApiError::new(ErrorCode::BalanceLimitExceeded, detail).with_param("amount")
        }
        Refusal::TransferNotFound { .. } => ApiError::new(ErrorCode::ResourceMissing, detail),
        Refusal::NotAHold { .. } => ApiError::new(ErrorCode::TransferNotPending, detail),
        Refusal::HoldResolved { .. } => ApiError::new(ErrorCode::HoldAlreadyResolved, detail),
        Refusal::HoldExpired { .. } => ApiError::new(ErrorCode::HoldExpired, detail),
        Refusal::HoldNotExpired { .. } => ApiError::new(ErrorCode::HoldNotExpired, detail),
        Refusal::AmountExceedsHold { .. } => ApiError::new(ErrorCode::AmountExceedsHold, detail).with_param("amount"),
        Refusal::NotReversible { .. } => ApiError::new(ErrorCode::TransferNotReversible, detail),
        Refusal::HoldExpiryOutOfRange => {
            let param = match new.and_then(|new| new.hold) {
                Some(HoldExpiry::After { .. }) => "timeout_seconds",
                _ => "expires_at",
            };
            ApiError::rule(param, detail)
        }
        // The HTTP parser refuses these with the field's own message first; from the
        // domain they still name the field rather than becoming a 500.
        Refusal::AmountOutOfRange => ApiError::invalid("amount", detail),
        Refusal::AmountCurrencyMismatch { .. } => {
            ApiError::new(ErrorCode::CurrencyMismatch, detail).with_param("currency")
        }
        Refusal::TransferIdInUse { .. } => ApiError::new(ErrorCode::TransferIdInUse, detail),
        Refusal::DescriptionTooLong => ApiError::invalid("description", detail),
        Refusal::BatchSizeOutOfRange => ApiError::invalid("transfers", detail),
        // A batch inside a batch does not exist; answered as the inner refusal.
        Refusal::InBatch { refusal, .. } => transfer_refusal_error(None, refusal),
    }
}

/// The HTTP response for a command's outcome: 201 with the transfer (or the batch) when
/// a transfer was created, 200 when a hold was posted or voided, the refusal's problem
/// otherwise.
pub fn render(
    command: &Command,
    outcome: &Result<Outcome, Refusal>,
    request_id: &str,
) -> (StatusCode, &'static str, Vec<u8>) {
    let json = |status, value: serde_json::Result<Vec<u8>>| match value {
        Ok(body) => (status, "application/json", body),
        Err(error) => problem(&ApiError::internal(&error), request_id),
    };
    match outcome {
        Ok(Outcome::Transfer(transfer)) => {
            let status = if transfer.resolution.is_some() { StatusCode::OK } else { StatusCode::CREATED };
            json(status, serde_json::to_vec(&TransferBody::from(transfer)))
        }
        Ok(Outcome::Batch(transfers)) => {
            let body = BatchBody { data: transfers.iter().map(TransferBody::from).collect() };
            json(StatusCode::CREATED, serde_json::to_vec(&body))
        }
        Err(refusal) => problem(&refusal_error(command, refusal), request_id),
    }
}

fn problem(error: &ApiError, request_id: &str) -> (StatusCode, &'static str, Vec<u8>) {
    let body = serde_json::to_vec(&error.problem_for(request_id.to_string())).unwrap_or_default();
    (error.status, till_http::problem::PROBLEM_CONTENT_TYPE, body)
}
