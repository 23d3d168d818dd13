//! The ledger's rules, as a pure state machine.
//!
//! A [`Book`] holds the accounts and transfers that a batch of commands touches. Each
//! [`Command`] is applied atomically: it either changes the book (and records the rows to
//! write) or is refused with a [`Refusal`] and changes nothing. The engine loads a book,
//! applies a batch of commands, writes what the book recorded, and commits; property
//! tests apply random command sequences and check the invariants after every step.
//!
//! Vocabulary (docs/GLOSSARY.md): a *transfer* debits one account and credits another by
//! the same amount; a *hold* is a pending transfer that reserves funds until it is
//! *posted* (in full or in part), *voided* or *expired*; a *reversal* is a new posted
//! transfer in the opposite direction; an *entry* is one movement on one account.
//!
//! Balances are kept as four totals per account (TigerBeetle's model). An account's
//! `balance` is its posted total in its normal direction. Pending amounts that would
//! reduce the balance count against `available` at once; pending amounts that would
//! increase it count only once posted. `min_balance` bounds `available` from below and
//! `max_balance` bounds `balance` from above, and no committed state breaks either.

// Money and balances: every operation is checked, and no `as` cast can truncate.
#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::collections::HashMap;

use till_kit::{Currency, HumanText, Metadata, Money};
use time::OffsetDateTime;

use crate::{AccountId, EntryId, TransferId};

/// The largest amount of one transfer, in minor units (10^15: ten trillion pounds). Keeps
/// every total far from i64 overflow for any realistic history.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;
/// The longest a hold may last before it expires.
pub const HOLD_SECONDS_MAX: i64 = 30 * 24 * 60 * 60;
/// The most transfers in one atomic batch.
pub const BATCH_TRANSFERS_MAX: usize = 1_000;
/// Characters in a transfer's description.
pub const DESCRIPTION_CHARS_MAX: usize = 500;
/// Characters in an account's name.
pub const ACCOUNT_NAME_CHARS_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Side> {
        match text {
            "debit" => Some(Side::Debit),
            "credit" => Some(Side::Credit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "frozen" => Some(AccountStatus::Frozen),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// The four running totals of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub normal_balance: Side,
    /// Lower bound of `available` (None: unbounded). 0 means no overdraft.
    pub min_balance: Option<i64>,
    /// Upper bound of `balance` (None: unbounded).
    pub max_balance: Option<i64>,
    pub status: AccountStatus,
    pub totals: Totals,
}

/// Balances derived from the totals, in the account's normal direction. Computed in
/// i128 so that no intermediate can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balances {
    pub balance: i128,
    /// Pending amounts that will reduce the balance if posted.
    pub pending_outgoing: i128,
    /// Pending amounts that will increase the balance if posted.
    pub pending_incoming: i128,
    pub available: i128,
}

impl Account {
    pub fn balances(&self) -> Balances {
        let t = self.totals;
        let (increase_posted, decrease_posted, increase_pending, decrease_pending) = match self.normal_balance {
            Side::Credit => (t.credits_posted, t.debits_posted, t.credits_pending, t.debits_pending),
            Side::Debit => (t.debits_posted, t.credits_posted, t.debits_pending, t.credits_pending),
        };
        // Differences of i64 values in i128 never saturate: these are exact.
        let balance = i128::from(increase_posted).saturating_sub(i128::from(decrease_posted));
        let pending_outgoing = i128::from(decrease_pending);
        Balances {
            balance,
            pending_outgoing,
            pending_incoming: i128::from(increase_pending),
            available: balance.saturating_sub(pending_outgoing),
        }
    }

    /// Whether the account's state respects its bounds, and which refusal if not.
    pub fn check_bounds(&self) -> Result<(), Refusal> {
        let balances = self.balances();
        let representable = |value: i128| i64::try_from(value).is_ok();
        if !representable(balances.balance) || !representable(balances.available) {
            return Err(Refusal::BalanceLimitExceeded { account: self.id });
        }
        if let Some(min) = self.min_balance {
            if balances.available < i128::from(min) {
                return Err(Refusal::InsufficientFunds { account: self.id });
            }
        }
        if let Some(max) = self.max_balance {
            if balances.balance > i128::from(max) {
                return Err(Refusal::BalanceLimitExceeded { account: self.id });
            }
        }
        Ok(())
    }
}

/// The largest size of an account's bound (10^18 minor units): beyond any balance a
/// history of `AMOUNT_MAX` transfers can reach, and still an i64.
pub const BOUND_MAX: i64 = 1_000_000_000_000_000_000;

/// Why an account cannot be opened, or changed, as asked. The same rules hold for every
/// caller; the HTTP layer only names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountRefusal {
    #[error("An account's name has 1 to {ACCOUNT_NAME_CHARS_MAX} characters")]
    NameLength,
    #[error("{bound} is at most {BOUND_MAX} either side of zero")]
    BoundOutOfRange { bound: &'static str },
    #[error("{bound} must be in the account's currency")]
    BoundCurrencyMismatch { bound: &'static str },
    #[error("max_balance must not be below min_balance")]
    BoundsInverted,
    #[error("min_balance must not be positive: a new account has balance 0")]
    MinAboveZero,
    #[error("max_balance must not be negative: a new account has balance 0")]
    MaxBelowZero,
    #[error("A closed account cannot be reopened")]
    Reopen,
    #[error("Only an account with a zero balance and no open holds can be closed")]
    NotEmpty,
    #[error("The account's current balances break the new bounds: {0}")]
    BoundsViolated(Refusal),
}

/// A change to an account's status or bounds (`Some(None)` lifts a bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountChange {
    pub status: Option<AccountStatus>,
    pub min_balance: Option<Option<i64>>,
    pub max_balance: Option<Option<i64>>,
}

/// An account's name: 1 to `ACCOUNT_NAME_CHARS_MAX` characters.
pub fn check_account_name(name: &HumanText) -> Result<(), AccountRefusal> {
    let chars = name.as_str().chars().count();
    if chars == 0 || chars > ACCOUNT_NAME_CHARS_MAX {
        return Err(AccountRefusal::NameLength);
    }
    Ok(())
}

fn check_bound(value: Option<i64>, bound: &'static str) -> Result<(), AccountRefusal> {
    match value {
        Some(value) if value.unsigned_abs() > BOUND_MAX.unsigned_abs() => {
            Err(AccountRefusal::BoundOutOfRange { bound })
        }
        _ => Ok(()),
    }
}

fn check_order(min_balance: Option<i64>, max_balance: Option<i64>) -> Result<(), AccountRefusal> {
    match (min_balance, max_balance) {
        (Some(min), Some(max)) if min > max => Err(AccountRefusal::BoundsInverted),
        _ => Ok(()),
    }
}

impl Account {
    /// A new, empty, active account with these bounds, if they admit its zero balance.
    pub fn open(
        id: AccountId,
        currency: Currency,
        normal_balance: Side,
        min_balance: Option<i64>,
        max_balance: Option<i64>,
    ) -> Result<Account, AccountRefusal> {
        check_bound(min_balance, "min_balance")?;
        check_bound(max_balance, "max_balance")?;
        if min_balance.is_some_and(|min| min > 0) {
            return Err(AccountRefusal::MinAboveZero);
        }
        if max_balance.is_some_and(|max| max < 0) {
            return Err(AccountRefusal::MaxBelowZero);
        }
        check_order(min_balance, max_balance)?;
        Ok(Account {
            id,
            currency,
            normal_balance,
            min_balance,
            max_balance,
            status: AccountStatus::Active,
            totals: Totals::default(),
        })
    }

    /// The account after `change`: a closed account stays closed, only an empty one (no
    /// balance, no open holds) closes, and new bounds must hold for its balances now.
    pub fn changed(&self, change: &AccountChange) -> Result<Account, AccountRefusal> {
        let mut account = self.clone();
        if let Some(status) = change.status {
            if self.status == AccountStatus::Closed && status != AccountStatus::Closed {
                return Err(AccountRefusal::Reopen);
            }
            let holds_open = self.totals.debits_pending != 0 || self.totals.credits_pending != 0;
            if status == AccountStatus::Closed
                && self.status != AccountStatus::Closed
                && (self.balances().balance != 0 || holds_open)
            {
                return Err(AccountRefusal::NotEmpty);
            }
            account.status = status;
        }
        if let Some(min) = change.min_balance {
            check_bound(min, "min_balance")?;
            account.min_balance = min;
        }
        if let Some(max) = change.max_balance {
            check_bound(max, "max_balance")?;
            account.max_balance = max;
        }
        check_order(account.min_balance, account.max_balance)?;
        account.check_bounds().map_err(AccountRefusal::BoundsViolated)?;
        Ok(account)
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionKind {
    Posted,
    Voided,
    Expired,
}

impl ResolutionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionKind::Posted => "posted",
            ResolutionKind::Voided => "voided",
            ResolutionKind::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<ResolutionKind> {
        match text {
            "posted" => Some(ResolutionKind::Posted),
            "voided" => Some(ResolutionKind::Voided),
            "expired" => Some(ResolutionKind::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub kind: ResolutionKind,
    /// The amount posted (zero unless `Posted`), in the hold's currency.
    pub posted: Money,
    pub resolved_at: OffsetDateTime,
}

/// A transfer as the ledger knows it, with what happened to it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    /// From 1 to [`AMOUNT_MAX`] minor units; its currency is both accounts'.
    pub amount: Money,
    pub pending: bool,
    pub expires_at: Option<OffsetDateTime>,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// The transfer this one reverses.
    pub reverses: Option<TransferId>,
    pub created_at: OffsetDateTime,
    /// For a hold: how it ended, once it has.
    pub resolution: Option<Resolution>,
    /// The reversal of this transfer, once reversed.
    pub reversed_by: Option<TransferId>,
}

/// What a transfer is now, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl Transfer {
    pub fn status(&self) -> TransferStatus {
        match (self.pending, self.resolution.map(|resolution| resolution.kind)) {
            (false, _) => TransferStatus::Posted,
            (true, None) => TransferStatus::Pending,
            (true, Some(ResolutionKind::Posted)) => TransferStatus::Posted,
            (true, Some(ResolutionKind::Voided)) => TransferStatus::Voided,
            (true, Some(ResolutionKind::Expired)) => TransferStatus::Expired,
        }
    }

    /// The amount that actually moved (posted), so far.
    pub fn posted_amount(&self) -> Money {
        match (self.pending, self.resolution) {
            (false, _) => self.amount,
            (true, Some(resolution)) => resolution.posted,
            (true, None) => Money::zero(self.amount.currency()),
        }
    }

    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.pending && self.resolution.is_none() && self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

/// When a hold ends by itself. Both timed forms are judged against the ledger's clock
/// (the database's, read by the batch), never a caller's: `timeout_seconds` counted from
/// one clock and "overdue" judged by another would let a hold expire early or late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldExpiry {
    /// It lasts until posted or voided.
    Never,
    /// This many seconds (1 to `HOLD_SECONDS_MAX`) after the hold is made.
    After { seconds: i64 },
    /// At this moment: after the hold is made, within `HOLD_SECONDS_MAX`.
    At(OffsetDateTime),
}

/// A transfer requested by a client or a service. The book refuses one whose amount is
/// not 1 to `AMOUNT_MAX`, whose id is in use or whose description is too long, whoever
/// built it: the HTTP parser checks the same rules only to name the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    /// In the accounts' currency.
    pub amount: Money,
    /// `Some` for a hold, with when it expires by itself.
    pub hold: Option<HoldExpiry>,
    pub description: Option<HumanText>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Transfer(NewTransfer),
    /// All or nothing.
    Batch(Vec<NewTransfer>),
    /// Post a hold, in full (`None`) or in part: 1 up to the hold's amount, in minor units
    /// of the hold's currency, which `currency` (when given) must be. Services build it
    /// from a `Money` (`crate::posting`); HTTP's `amount` has no currency of its own.
    Post {
        hold: TransferId,
        amount: Option<i64>,
        currency: Option<Currency>,
    },
    Void {
        hold: TransferId,
    },
    /// Expire an overdue hold (the sweeper's command).
    Expire {
        hold: TransferId,
    },
    Reverse {
        transfer: TransferId,
        reversal: TransferId,
        description: Option<HumanText>,
        metadata: Metadata,
    },
}

impl Command {
    /// Accounts the command may touch, to load (and lock) before applying it.
    pub fn accounts(&self, transfers: &HashMap<TransferId, Transfer>) -> Vec<AccountId> {
        let of_transfer = |id: &TransferId| {
            transfers.get(id).map(|transfer| vec![transfer.debit_account, transfer.credit_account]).unwrap_or_default()
        };
        match self {
            Command::Transfer(new) => vec![new.debit_account, new.credit_account],
            Command::Batch(news) => news.iter().flat_map(|new| [new.debit_account, new.credit_account]).collect(),
            Command::Post { hold, .. } | Command::Void { hold } | Command::Expire { hold } => of_transfer(hold),
            Command::Reverse { transfer, .. } => of_transfer(transfer),
        }
    }

    /// Ids of the transfers the command would create, which must be unused.
    pub fn new_transfers(&self) -> Vec<TransferId> {
        match self {
            Command::Transfer(new) => vec![new.id],
            Command::Batch(news) => news.iter().map(|new| new.id).collect(),
            Command::Reverse { reversal, .. } => vec![*reversal],
            Command::Post { .. } | Command::Void { .. } | Command::Expire { .. } => Vec::new(),
        }
    }

    /// Existing transfers the command needs.
    pub fn transfers(&self) -> Vec<TransferId> {
        match self {
            Command::Transfer(_) | Command::Batch(_) => Vec::new(),
            Command::Post { hold, .. } | Command::Void { hold } | Command::Expire { hold } => vec![*hold],
            Command::Reverse { transfer, .. } => vec![*transfer],
        }
    }
}

/// Why a command was refused. Nothing of a refused command is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no such account {account}")]
    AccountNotFound { account: AccountId },
    #[error("a transfer needs two different accounts")]
    SameAccount,
    #[error("the transfer is in {transfer} but account {account} holds {account_currency}")]
    CurrencyMismatch { account: AccountId, transfer: Currency, account_currency: Currency },
    #[error("account {account} is {status}")]
    AccountNotActive { account: AccountId, status: &'static str },
    #[error("account {account} does not have enough available funds")]
    InsufficientFunds { account: AccountId },
    #[error("the transfer would take account {account} past its maximum balance")]
    BalanceLimitExceeded { account: AccountId },
    #[error("no such transfer {transfer}")]
    TransferNotFound { transfer: TransferId },
    #[error("transfer {transfer} is not a hold")]
    NotAHold { transfer: TransferId },
    #[error("hold {transfer} is already {status}")]
    HoldResolved { transfer: TransferId, status: &'static str },
    #[error("hold {transfer} has expired")]
    HoldExpired { transfer: TransferId },
    #[error("hold {transfer} has not expired yet")]
    HoldNotExpired { transfer: TransferId },
    #[error("the amount to post is more than the hold's {held}")]
    AmountExceedsHold { held: i64 },
    #[error("transfer {transfer} cannot be reversed: {why}")]
    NotReversible { transfer: TransferId, why: &'static str },
    #[error("a hold expires 1 second to 30 days after it is made")]
    HoldExpiryOutOfRange,
    #[error("an amount is a whole number of minor units from 1 to {AMOUNT_MAX}")]
    AmountOutOfRange,
    #[error("the amount is in {amount} but the hold is in {hold}")]
    AmountCurrencyMismatch { amount: Currency, hold: Currency },
    #[error("transfer id {transfer} is already in use")]
    TransferIdInUse { transfer: TransferId },
    #[error("a description has at most {DESCRIPTION_CHARS_MAX} characters")]
    DescriptionTooLong,
    #[error("a batch has 1 to {BATCH_TRANSFERS_MAX} transfers")]
    BatchSizeOutOfRange,
    #[error("transfer {index} of the batch: {refusal}")]
    InBatch { index: usize, refusal: Box<Refusal> },
}

/// One row of a hold's resolution, to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionRecord {
    pub hold: TransferId,
    pub resolution: Resolution,
}

/// One movement on one account, with the account's totals after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub account: AccountId,
    pub transfer: TransferId,
    pub side: Side,
    /// `posted` (a posted transfer), `hold`, `post`, `void` or `expire`.
    pub kind: &'static str,
    /// Change to the posted total of `side` (never negative).
    pub posted_delta: i64,
    /// Change to the pending total of `side` (negative when a hold ends).
    pub pending_delta: i64,
    pub totals_after: Totals,
    pub created_at: OffsetDateTime,
}

/// What the command did, for the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Transfer(Transfer),
    Batch(Vec<Transfer>),
}

/// Rows recorded by applied commands, to be written by the engine.
#[derive(Debug, Default)]
pub struct Writes {
    pub transfers: Vec<Transfer>,
    pub resolutions: Vec<ResolutionRecord>,
    pub entries: Vec<Entry>,
}

/// The accounts and transfers a batch touches, and what it has done to them.
#[derive(Debug)]
pub struct Book {
    pub accounts: HashMap<AccountId, Account>,
    pub transfers: HashMap<TransferId, Transfer>,
    pub writes: Writes,
    now: OffsetDateTime,
}

impl Book {
    pub fn new(accounts: Vec<Account>, transfers: Vec<Transfer>, now: OffsetDateTime) -> Book {
        Book {
            accounts: accounts.into_iter().map(|account| (account.id, account)).collect(),
            transfers: transfers.into_iter().map(|transfer| (transfer.id, transfer)).collect(),
            writes: Writes::default(),
            now,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.now
    }

    /// Applies `command` atomically: on refusal the book is exactly as before.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, Refusal> {
        let touched: Vec<AccountId> = command.accounts(&self.transfers);
        let saved_accounts: Vec<Account> = touched.iter().filter_map(|id| self.accounts.get(id).cloned()).collect();
        let saved_transfers: Vec<Transfer> =
            command.transfers().iter().filter_map(|id| self.transfers.get(id).cloned()).collect();
        let marks = (self.writes.transfers.len(), self.writes.resolutions.len(), self.writes.entries.len());
        let outcome = self.apply_unguarded(command);
        if outcome.is_err() {
            for account in saved_accounts {
                self.accounts.insert(account.id, account);
            }
            // New transfers of the refused command were inserted into `transfers` too.
            for written in &self.writes.transfers[marks.0..] {
                self.transfers.remove(&written.id);
            }
            for transfer in saved_transfers {
                self.transfers.insert(transfer.id, transfer);
            }
            self.writes.transfers.truncate(marks.0);
            self.writes.resolutions.truncate(marks.1);
            self.writes.entries.truncate(marks.2);
        }
        outcome
    }

    fn apply_unguarded(&mut self, command: &Command) -> Result<Outcome, Refusal> {
        match command {
            Command::Transfer(new) => self.create(new).map(Outcome::Transfer),
            Command::Batch(news) => {
                if news.is_empty() || news.len() > BATCH_TRANSFERS_MAX {
                    return Err(Refusal::BatchSizeOutOfRange);
                }
                let mut created = Vec::with_capacity(news.len());
                for (index, new) in news.iter().enumerate() {
                    let transfer =
                        self.create(new).map_err(|refusal| Refusal::InBatch { index, refusal: Box::new(refusal) })?;
                    created.push(transfer);
                }
                Ok(Outcome::Batch(created))
            }
            Command::Post { hold, amount, currency } => {
                self.resolve(*hold, ResolutionKind::Posted, (*amount, *currency)).map(Outcome::Transfer)
            }
            Command::Void { hold } => self.resolve(*hold, ResolutionKind::Voided, (None, None)).map(Outcome::Transfer),
            Command::Expire { hold } => {
                self.resolve(*hold, ResolutionKind::Expired, (None, None)).map(Outcome::Transfer)
            }
            Command::Reverse { transfer, reversal, description, metadata } => {
                self.reverse(*transfer, *reversal, description.clone(), metadata.clone()).map(Outcome::Transfer)
            }
        }
    }

    fn usable_account(&self, id: AccountId, currency: Currency) -> Result<&Account, Refusal> {
        let account = self.accounts.get(&id).ok_or(Refusal::AccountNotFound { account: id })?;
        if account.status != AccountStatus::Active {
            return Err(Refusal::AccountNotActive { account: id, status: account.status.as_str() });
        }
        if account.currency != currency {
            return Err(Refusal::CurrencyMismatch {
                account: id,
                transfer: currency,
                account_currency: account.currency,
            });
        }
        Ok(account)
    }

    /// Adds deltas to one side of an account, checked, and records the entry.
    fn move_side(
        &mut self,
        account: AccountId,
        transfer: TransferId,
        side: Side,
        kind: &'static str,
        posted_delta: i64,
        pending_delta: i64,
    ) -> Result<(), Refusal> {
        let entry_account = self.accounts.get_mut(&account).ok_or(Refusal::AccountNotFound { account })?;
        let overflow = Refusal::BalanceLimitExceeded { account };
        let totals = &mut entry_account.totals;
        let (posted, pending) = match side {
            Side::Debit => (&mut totals.debits_posted, &mut totals.debits_pending),
            Side::Credit => (&mut totals.credits_posted, &mut totals.credits_pending),
        };
        *posted = posted.checked_add(posted_delta).ok_or_else(|| overflow.clone())?;
        *pending = pending.checked_add(pending_delta).ok_or(overflow)?;
        let totals_after = *totals;
        self.writes.entries.push(Entry {
            id: EntryId::generate(),
            account,
            transfer,
            side,
            kind,
            posted_delta,
            pending_delta,
            totals_after,
            created_at: self.now,
        });
        Ok(())
    }

    fn check(&self, ids: [AccountId; 2]) -> Result<(), Refusal> {
        for id in ids {
            self.accounts.get(&id).ok_or(Refusal::AccountNotFound { account: id })?.check_bounds()?;
        }
        Ok(())
    }

    fn create(&mut self, new: &NewTransfer) -> Result<Transfer, Refusal> {
        let (amount, currency) = (new.amount.minor(), new.amount.currency());
        if !(1..=AMOUNT_MAX).contains(&amount) {
            return Err(Refusal::AmountOutOfRange);
        }
        // The engine loads every transfer whose id a command claims, so one in use is in
        // the book (as is one an earlier command of the batch created).
        if self.transfers.contains_key(&new.id) {
            return Err(Refusal::TransferIdInUse { transfer: new.id });
        }
        if new.description.as_ref().is_some_and(|text| text.as_str().chars().count() > DESCRIPTION_CHARS_MAX) {
            return Err(Refusal::DescriptionTooLong);
        }
        if new.debit_account == new.credit_account {
            return Err(Refusal::SameAccount);
        }
        self.usable_account(new.debit_account, currency)?;
        self.usable_account(new.credit_account, currency)?;
        let after = |seconds: i64| self.now.checked_add(time::Duration::seconds(seconds));
        let latest = after(HOLD_SECONDS_MAX).ok_or(Refusal::HoldExpiryOutOfRange)?;
        let expires_at = match new.hold {
            None | Some(HoldExpiry::Never) => None,
            Some(HoldExpiry::After { seconds }) if (1..=HOLD_SECONDS_MAX).contains(&seconds) => {
                Some(after(seconds).ok_or(Refusal::HoldExpiryOutOfRange)?)
            }
            Some(HoldExpiry::At(at)) if at > self.now && at <= latest => Some(at),
            Some(HoldExpiry::After { .. } | HoldExpiry::At(_)) => return Err(Refusal::HoldExpiryOutOfRange),
        };
        let (kind, posted, pending) = if new.hold.is_some() { ("hold", 0, amount) } else { ("posted", amount, 0) };
        self.move_side(new.debit_account, new.id, Side::Debit, kind, posted, pending)?;
        self.move_side(new.credit_account, new.id, Side::Credit, kind, posted, pending)?;
        self.check([new.debit_account, new.credit_account])?;
        let transfer = Transfer {
            id: new.id,
            debit_account: new.debit_account,
            credit_account: new.credit_account,
            amount: new.amount,
            pending: new.hold.is_some(),
            expires_at,
            description: new.description.as_ref().map(|text| text.as_str().to_string()),
            metadata: new.metadata.clone(),
            reverses: None,
            created_at: self.now,
            resolution: None,
            reversed_by: None,
        };
        self.writes.transfers.push(transfer.clone());
        self.transfers.insert(transfer.id, transfer.clone());
        Ok(transfer)
    }

    fn resolve(
        &mut self,
        id: TransferId,
        kind: ResolutionKind,
        (amount, currency): (Option<i64>, Option<Currency>),
    ) -> Result<Transfer, Refusal> {
        let hold = self.transfers.get(&id).cloned().ok_or(Refusal::TransferNotFound { transfer: id })?;
        if !hold.pending {
            return Err(Refusal::NotAHold { transfer: id });
        }
        if let Some(resolution) = hold.resolution {
            return Err(Refusal::HoldResolved { transfer: id, status: resolution.kind.as_str() });
        }
        let overdue = hold.is_overdue(self.now);
        match kind {
            ResolutionKind::Expired if !overdue => return Err(Refusal::HoldNotExpired { transfer: id }),
            ResolutionKind::Posted | ResolutionKind::Voided if overdue => {
                return Err(Refusal::HoldExpired { transfer: id });
            }
            _ => {}
        }
        let (held, currency_held) = (hold.amount.minor(), hold.currency());
        if let Some(currency) = currency.filter(|&currency| currency != currency_held) {
            return Err(Refusal::AmountCurrencyMismatch { amount: currency, hold: currency_held });
        }
        let posted_amount = match (kind, amount) {
            (ResolutionKind::Posted, None) => held,
            (ResolutionKind::Posted, Some(amount)) if amount < 1 => return Err(Refusal::AmountOutOfRange),
            (ResolutionKind::Posted, Some(amount)) if amount > held => {
                return Err(Refusal::AmountExceedsHold { held });
            }
            (ResolutionKind::Posted, Some(amount)) => amount,
            _ => 0,
        };
        // Posting needs the accounts usable now; voiding and expiring release funds and
        // are allowed whatever the accounts' status, so a frozen account's holds can end.
        if kind == ResolutionKind::Posted {
            self.usable_account(hold.debit_account, currency_held)?;
            self.usable_account(hold.credit_account, currency_held)?;
        }
        let entry_kind = match kind {
            ResolutionKind::Posted => "post",
            ResolutionKind::Voided => "void",
            ResolutionKind::Expired => "expire",
        };
        // A hold's amount is positive, so its negation is exact.
        let released = held.saturating_neg();
        self.move_side(hold.debit_account, id, Side::Debit, entry_kind, posted_amount, released)?;
        self.move_side(hold.credit_account, id, Side::Credit, entry_kind, posted_amount, released)?;
        self.check([hold.debit_account, hold.credit_account])?;
        let resolution =
            Resolution { kind, posted: Money::from_minor(posted_amount, currency_held), resolved_at: self.now };
        self.writes.resolutions.push(ResolutionRecord { hold: id, resolution });
        let resolved = Transfer { resolution: Some(resolution), ..hold };
        self.transfers.insert(id, resolved.clone());
        Ok(resolved)
    }

    fn reverse(
        &mut self,
        id: TransferId,
        reversal: TransferId,
        description: Option<HumanText>,
        metadata: Metadata,
    ) -> Result<Transfer, Refusal> {
        let original = self.transfers.get(&id).cloned().ok_or(Refusal::TransferNotFound { transfer: id })?;
        if original.reversed_by.is_some() {
            return Err(Refusal::NotReversible { transfer: id, why: "it is already reversed" });
        }
        if original.reverses.is_some() {
            return Err(Refusal::NotReversible { transfer: id, why: "it is itself a reversal" });
        }
        let amount = original.posted_amount();
        if original.status() != TransferStatus::Posted || amount.is_zero() {
            return Err(Refusal::NotReversible { transfer: id, why: "only posted money can be reversed" });
        }
        let new = NewTransfer {
            id: reversal,
            debit_account: original.credit_account,
            credit_account: original.debit_account,
            amount,
            hold: None,
            description: description
                .or_else(|| HumanText::parse(&format!("Reversal of {id}"), DESCRIPTION_CHARS_MAX).ok()),
            metadata,
        };
        let mut created = self.create(&new)?;
        created.reverses = Some(id);
        if let Some(written) = self.writes.transfers.last_mut() {
            written.reverses = Some(id);
        }
        self.transfers.insert(created.id, created.clone());
        let reversed = Transfer { reversed_by: Some(reversal), ..original };
        self.transfers.insert(id, reversed);
        Ok(created)
    }
}

#[cfg(test)]
mod tests;
