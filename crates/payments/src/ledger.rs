//! The payments service's money in the ledger, posted in process (`till_ledger::posting`)
//! in the same transaction as the intent's own change and its event.
//!
//! Accounts, per business and currency (opened on first use, in the transaction that
//! first needs them):
//! - `receivable:{gateway}` (debit-normal): what the gateway (`stripe`, `razorpay`) owes
//!   the business;
//! - `merchant_pending` (credit-normal): captured money not yet settled;
//! - `refund_capacity` (debit-normal): the source of each intent's refundable amount;
//! - `merchant_available` (credit-normal): settled money, the merchant's to pay out;
//! - `settled:{gateway}` (debit-normal): what the gateway has paid out to the platform's
//!   bank for the business;
//!
//! and per intent, `refundable` (credit-normal, floor 0), opened at capture.
//!
//! What by construction means here:
//! - an authorisation (manual capture) is a ledger *hold* from the receivable to the
//!   merchant's pending account: it moves no balance, only shows as pending incoming. A
//!   capture posts the hold, in part or in full; the ledger refuses a post above the
//!   hold and a second post of the same hold, so over-capture and double capture cannot
//!   be posted whatever the code above does. A hold expires by itself after the card's
//!   authorisation window (7 days), as the gateway's authorisation does.
//! - a capture also moves the captured amount from `refund_capacity` into the intent's
//!   `refundable` account, whose floor is 0: a refund takes from it, so refunds beyond
//!   what was captured are refused by the ledger's bounds.
//! - the gateway's fee moves from the merchant's pending account back to the
//!   receivable: the gateway keeps it out of what it settles.
//! - a settlement moves the net of its matched lines from pending to available, and from
//!   the receivable to settled: so the receivable and pending balances are always the
//!   net of what is captured and not yet settled.
//!
//! Every command carries a posting key derived from the intent and the step
//! (`pi_…:capture`), so a step retried after a crash posts once.

use sqlx::PgConnection;
use till_http::ApiError;
use till_kit::{BusinessId, Currency, HumanText, Metadata, Money};
use till_ledger::domain::{Command, HoldExpiry, NewTransfer, Outcome, Side};
use till_ledger::posting::{self, OpenAccount, PostingKey};
use till_ledger::{AccountId, TransferId};
use uuid::Uuid;

use crate::gateway::GatewayKind;
use crate::store;

/// How long an authorisation is held: a card-not-present customer-initiated
/// authorisation is valid 7 days at every major scheme (providers.md §1.1).
pub const AUTHORISATION_SECONDS: i64 = 7 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy)]
enum Role {
    Receivable(GatewayKind),
    MerchantPending,
    RefundCapacity,
    MerchantAvailable,
    Settled(GatewayKind),
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Receivable(GatewayKind::Stripe) => "receivable:stripe",
            Role::Receivable(GatewayKind::Razorpay) => "receivable:razorpay",
            Role::MerchantPending => "merchant_pending",
            Role::RefundCapacity => "refund_capacity",
            Role::MerchantAvailable => "merchant_available",
            Role::Settled(GatewayKind::Stripe) => "settled:stripe",
            Role::Settled(GatewayKind::Razorpay) => "settled:razorpay",
        }
    }

    fn name(self, currency: Currency) -> String {
        let what = match self {
            Role::Receivable(gateway) => format!("Owed by {}", gateway.title()),
            Role::MerchantPending => String::from("Payments pending settlement"),
            Role::RefundCapacity => String::from("Refund capacity"),
            Role::MerchantAvailable => String::from("Payments available"),
            Role::Settled(gateway) => format!("Paid out by {}", gateway.title()),
        };
        format!("{what} ({})", currency.code())
    }

    fn normal_balance(self) -> Side {
        match self {
            Role::Receivable(_) | Role::RefundCapacity | Role::Settled(_) => Side::Debit,
            Role::MerchantPending | Role::MerchantAvailable => Side::Credit,
        }
    }
}

fn internal(cause: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&cause)
}

fn text(value: &str) -> Result<HumanText, ApiError> {
    HumanText::parse(value, 200).map_err(|refusal| internal(format_args!("{value:?}: {refusal}")))
}

fn metadata(intent: &str, kind: &str) -> Result<Metadata, ApiError> {
    let map = [("payment_intent".to_string(), intent.to_string()), ("kind".to_string(), kind.to_string())];
    Metadata::parse(map.into_iter().collect()).map_err(internal)
}

/// The business's account for `role` in `currency`, opened in this transaction if it is
/// the first time.
async fn account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    role: Role,
    request_id: Option<&str>,
) -> Result<AccountId, ApiError> {
    let candidate = AccountId::generate();
    let (id, opened_here) =
        store::claim_ledger_account(connection, business, currency, role.key(), candidate.as_uuid()).await?;
    if opened_here {
        let spec = OpenAccount {
            id: candidate,
            name: text(&role.name(currency))?,
            currency,
            normal_balance: role.normal_balance(),
            min_balance: None,
            max_balance: None,
            metadata: Metadata::default(),
        };
        posting::open_account(connection, business, &spec, request_id).await?.map_err(internal)?;
    }
    Ok(AccountId::from_uuid(id))
}

/// The business's available balance in `currency` (`merchant_available`): settled
/// money, the merchant's to pay out. Opened in this transaction if it is the first time.
/// The payouts service draws on it through this function alone.
pub async fn available_account(
    connection: &mut PgConnection,
    business: BusinessId,
    currency: Currency,
    request_id: Option<&str>,
) -> Result<AccountId, ApiError> {
    account(connection, business, currency, Role::MerchantAvailable, request_id).await
}

/// Applies one command under its key; a refusal is returned for the caller to judge.
async fn apply(
    connection: &mut PgConnection,
    business: BusinessId,
    key: String,
    command: Command,
    request_id: Option<&str>,
) -> Result<Result<Outcome, till_ledger::domain::Refusal>, ApiError> {
    let key = PostingKey::new(key).map_err(internal)?;
    Ok(posting::apply_in(connection, business, Some(&key), &command, request_id).await?)
}

/// Applies one command whose outcome the caller does not need: applied, or refused.
async fn applied(
    connection: &mut PgConnection,
    business: BusinessId,
    key: String,
    command: Command,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    Ok(apply(connection, business, key, command, request_id)
        .await?
        .map(|_| ())
        .map_err(|refusal| Refused(refusal.to_string())))
}

fn transfer(
    debit: AccountId,
    credit: AccountId,
    amount: Money,
    hold: Option<HoldExpiry>,
    description: &str,
    metadata: Metadata,
) -> Result<NewTransfer, ApiError> {
    Ok(NewTransfer {
        id: TransferId::generate(),
        debit_account: debit,
        credit_account: credit,
        amount,
        hold,
        description: Some(text(description)?),
        metadata,
    })
}

/// Why the ledger refused a step the gateway already took: the intent needs review.
#[derive(Debug)]
pub struct Refused(pub String);

/// An authorisation: the hold from the receivable to the merchant's pending account.
pub async fn authorise(
    connection: &mut PgConnection,
    business: BusinessId,
    gateway: GatewayKind,
    intent: &str,
    amount: Money,
    request_id: Option<&str>,
) -> Result<Result<Uuid, Refused>, ApiError> {
    let receivable = account(connection, business, amount.currency(), Role::Receivable(gateway), request_id).await?;
    let pending = account(connection, business, amount.currency(), Role::MerchantPending, request_id).await?;
    let hold = transfer(
        receivable,
        pending,
        amount,
        Some(HoldExpiry::After { seconds: AUTHORISATION_SECONDS }),
        &format!("Authorisation of {intent}"),
        metadata(intent, "authorisation")?,
    )?;
    match apply(connection, business, format!("{intent}:authorise"), Command::Transfer(hold), request_id).await? {
        Ok(Outcome::Transfer(transfer)) => Ok(Ok(transfer.id.as_uuid())),
        Ok(Outcome::Batch(_)) => Err(internal("a transfer answered as a batch")),
        Err(refusal) => Ok(Err(Refused(refusal.to_string()))),
    }
}

/// A capture of `amount`: the authorisation's hold posted (manual capture) or the money
/// moved at once (automatic), and the amount made refundable. Returns the intent's
/// refundable account.
pub async fn capture(
    connection: &mut PgConnection,
    business: BusinessId,
    gateway: GatewayKind,
    intent: &str,
    hold: Option<Uuid>,
    amount: Money,
    request_id: Option<&str>,
) -> Result<Result<Uuid, Refused>, ApiError> {
    let currency = amount.currency();
    let moved = match hold {
        Some(hold) => Command::post(TransferId::from_uuid(hold), Some(amount)),
        None => {
            let receivable = account(connection, business, currency, Role::Receivable(gateway), request_id).await?;
            let pending = account(connection, business, currency, Role::MerchantPending, request_id).await?;
            Command::Transfer(transfer(
                receivable,
                pending,
                amount,
                None,
                &format!("Capture of {intent}"),
                metadata(intent, "capture")?,
            )?)
        }
    };
    if let Err(refusal) = apply(connection, business, format!("{intent}:capture"), moved, request_id).await? {
        return Ok(Err(Refused(refusal.to_string())));
    }
    let capacity = account(connection, business, currency, Role::RefundCapacity, request_id).await?;
    let refundable = AccountId::generate();
    let spec = OpenAccount {
        id: refundable,
        name: text(&format!("Refundable on {intent}"))?,
        currency,
        normal_balance: Side::Credit,
        // Refunds take from here: never below zero, so never more than was captured.
        min_balance: Some(Money::zero(currency)),
        max_balance: None,
        metadata: metadata(intent, "refundable")?,
    };
    posting::open_account(connection, business, &spec, request_id).await?.map_err(internal)?;
    let made_refundable = transfer(
        capacity,
        refundable,
        amount,
        None,
        &format!("Refundable on {intent}"),
        metadata(intent, "capacity")?,
    )?;
    let key = format!("{intent}:refundable");
    if let Err(refusal) = apply(connection, business, key, Command::Transfer(made_refundable), request_id).await? {
        return Ok(Err(Refused(refusal.to_string())));
    }
    Ok(Ok(refundable.as_uuid()))
}

/// The gateway's fee on a capture, out of the merchant's pending money.
pub async fn fee(
    connection: &mut PgConnection,
    business: BusinessId,
    gateway: GatewayKind,
    intent: &str,
    fee: Money,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    if fee.is_zero() {
        return Ok(Ok(()));
    }
    let receivable = account(connection, business, fee.currency(), Role::Receivable(gateway), request_id).await?;
    let pending = account(connection, business, fee.currency(), Role::MerchantPending, request_id).await?;
    let charged = transfer(
        pending,
        receivable,
        fee,
        None,
        &format!("{} fee on {intent}", gateway.title()),
        metadata(intent, "fee")?,
    )?;
    applied(connection, business, format!("{intent}:fee"), Command::Transfer(charged), request_id).await
}

/// Releases an authorisation (a cancel): the hold is voided.
pub async fn release(
    connection: &mut PgConnection,
    business: BusinessId,
    intent: &str,
    hold: Uuid,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    let command = Command::Void { hold: TransferId::from_uuid(hold) };
    applied(connection, business, format!("{intent}:release"), command, request_id).await
}

/// Reserves `amount` of the intent's refundable account for a refund, before the gateway
/// is asked: the account's floor of 0 refuses a refund beyond what was captured (less
/// what earlier refunds reserved), however many run at once.
pub async fn reserve_refund(
    connection: &mut PgConnection,
    business: BusinessId,
    refund: &str,
    intent: &str,
    refundable: Uuid,
    amount: Money,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    let capacity = account(connection, business, amount.currency(), Role::RefundCapacity, request_id).await?;
    let reserved = transfer(
        AccountId::from_uuid(refundable),
        capacity,
        amount,
        None,
        &format!("Refund {refund} of {intent}"),
        metadata(intent, "refund_reserved")?,
    )?;
    applied(connection, business, format!("{refund}:reserve"), Command::Transfer(reserved), request_id).await
}

/// Gives a reservation back to the intent's refundable account (the gateway refused).
pub async fn release_refund(
    connection: &mut PgConnection,
    business: BusinessId,
    refund: &str,
    intent: &str,
    refundable: Uuid,
    amount: Money,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    let capacity = account(connection, business, amount.currency(), Role::RefundCapacity, request_id).await?;
    let released = transfer(
        capacity,
        AccountId::from_uuid(refundable),
        amount,
        None,
        &format!("Refund {refund} of {intent} refused"),
        metadata(intent, "refund_released")?,
    )?;
    applied(connection, business, format!("{refund}:release"), Command::Transfer(released), request_id).await
}

/// A refund the gateway made: the money leaves the merchant's pending balance, and the
/// gateway owes that much less.
pub async fn refund_money(
    connection: &mut PgConnection,
    business: BusinessId,
    gateway: GatewayKind,
    refund: &str,
    intent: &str,
    amount: Money,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    let receivable = account(connection, business, amount.currency(), Role::Receivable(gateway), request_id).await?;
    let pending = account(connection, business, amount.currency(), Role::MerchantPending, request_id).await?;
    let refunded = transfer(
        pending,
        receivable,
        amount,
        None,
        &format!("Refund {refund} of {intent}"),
        metadata(intent, "refund")?,
    )?;
    applied(connection, business, format!("{refund}:money"), Command::Transfer(refunded), request_id).await
}

/// A settlement of `net` (the matched lines' charges less fees and refunds; negative when
/// refunds outweigh charges): from pending to available, and from the receivable to
/// settled. `key` names the business's settlement, so it posts once.
pub async fn settle(
    connection: &mut PgConnection,
    business: BusinessId,
    gateway: GatewayKind,
    settlement: &str,
    net: Money,
    request_id: Option<&str>,
) -> Result<Result<(), Refused>, ApiError> {
    if net.is_zero() {
        return Ok(Ok(()));
    }
    let currency = net.currency();
    let pending = account(connection, business, currency, Role::MerchantPending, request_id).await?;
    let available = account(connection, business, currency, Role::MerchantAvailable, request_id).await?;
    let receivable = account(connection, business, currency, Role::Receivable(gateway), request_id).await?;
    let settled = account(connection, business, currency, Role::Settled(gateway), request_id).await?;
    let magnitude =
        Money::from_minor(net.minor().checked_abs().ok_or_else(|| internal("a net of i64::MIN"))?, currency);
    let (from, to, paid_from, paid_to) = if net.minor() > 0 {
        (pending, available, settled, receivable)
    } else {
        (available, pending, receivable, settled)
    };
    let info = || -> Result<Metadata, ApiError> {
        let map = [("settlement".to_string(), settlement.to_string()), ("kind".to_string(), "settlement".to_string())];
        Metadata::parse(map.into_iter().collect()).map_err(internal)
    };
    let made_available = transfer(from, to, magnitude, None, &format!("Settlement {settlement}"), info()?)?;
    let paid = transfer(paid_from, paid_to, magnitude, None, &format!("Paid out in {settlement}"), info()?)?;
    // One batch: its four accounts are locked in one statement, in the ledger's order, as
    // a capture's two are. As two transfers, the first held the pending account while the
    // second waited for the receivable, which a capture held while it waited for the
    // pending account: PostgreSQL broke the deadlock after a second, under load
    // (`till bench payments`).
    let command = Command::Batch(vec![made_available, paid]);
    applied(connection, business, format!("{settlement}:settle"), command, request_id).await
}

/// The merchant's balance in one currency: settled (available) and not yet (pending).
#[derive(Debug, Clone, Copy)]
pub struct Balance {
    pub currency: Currency,
    pub available: i64,
    pub pending: i64,
}

/// The merchant's balances, per currency the business has taken payments in, read from
/// the ledger in the caller's transaction.
pub async fn balances(connection: &mut PgConnection, business: BusinessId) -> Result<Vec<Balance>, ApiError> {
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT currency, role, account_id FROM payments.ledger_accounts
          WHERE business_id = $1 AND role IN ('merchant_pending', 'merchant_available') ORDER BY currency, role",
    )
    .bind(business.as_uuid())
    .fetch_all(&mut *connection)
    .await?;
    let mut balances: Vec<Balance> = Vec::new();
    for (code, role, account) in rows {
        let currency = Currency::parse(&code).map_err(internal)?;
        let amount = posting::available(connection, business, AccountId::from_uuid(account))
            .await
            .map_err(internal)?
            .ok_or_else(|| internal(format_args!("the ledger has no account {account} of payments")))?;
        if balances.last().is_none_or(|balance| balance.currency != currency) {
            balances.push(Balance { currency, available: 0, pending: 0 });
        }
        if let Some(balance) = balances.last_mut() {
            if role == "merchant_available" {
                balance.available = amount;
            } else {
                balance.pending = amount;
            }
        }
    }
    Ok(balances)
}
