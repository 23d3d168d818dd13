//! The ledger for the other services: typed commands in, typed outcomes out.
//!
//! A service (payments, payouts, checkout) moves money with the same [`Command`]s the
//! HTTP handlers build, and gets back `Result<Outcome, Refusal>`, never a status code or
//! JSON. Its idempotency key is a domain value, a [`PostingKey`] the service derives from
//! its own state (`"pi_…:capture"`), unique within the business. There are two ways to
//! run a command:
//!
//! - [`Ledger::submit`]: through the group-commit engine, in a batch's transaction of
//!   its own, for money that moves on its own (a fee sweep, a manual adjustment).
//! - [`apply_in`]: inside a transaction the caller already holds, so that the service's
//!   own row, its outbox event and the ledger's postings commit together or not at all
//!   (a payment marked captured exactly when its money moved).
//!
//! Why both are safe on the same accounts at once (docs/DECISIONS.md, "Posting in
//! process"): every change to an account bumps its revision. [`apply_in`] reads its
//! accounts locked (`FOR UPDATE`, in id order, as the engine's retry and `PATCH` do) and
//! writes them with the engine's own statement, so an engine batch that decided from its
//! cache finds the revision moved, rolls back and decides again with the locks; and an
//! engine batch that holds a row makes [`apply_in`]'s lock wait for its commit. The
//! locks are held until the caller commits: a caller keeps that transaction short and
//! never calls an outside party inside it (the unit of work's recovery points are for
//! that).
//!
//! A posting key is stored with the command's fingerprint and the ids of the transfers
//! its outcome names, in the transaction that applied it. A retry with the same key and
//! command gets the outcome again (its transfers as they are now); with another command,
//! [`LedgerError::KeyReused`]. A refused command stores nothing: a refusal changed
//! nothing, so deciding it again is safe, and a retry after the funds arrived may apply.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use till_http::ApiError;
use till_kit::{BusinessId, Currency, HumanText, Metadata, Money};
use till_outbox::{Event, EventType};

use crate::domain::{
    check_account_name, Account, AccountRefusal, Command, HoldExpiry, NewTransfer, Outcome, Refusal, Side, Transfer,
};
use crate::engine::{self, BatchError, Caller, Engine, Reply};
use crate::store::{self, CorruptRow, PostingKeyRow};
use crate::view::{AccountBody, AccountExtras};
use crate::{AccountId, TransferId};

/// Characters in a posting key.
pub const POSTING_KEY_CHARS_MAX: usize = 255;

/// A service's idempotency key for one ledger command: 1 to 255 printable ASCII
/// characters, unique within the business. Derive it from the service's own state (the
/// payment and the step), so that a retry after a crash uses the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PostingKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a posting key is 1 to {POSTING_KEY_CHARS_MAX} printable ASCII characters")]
pub struct InvalidPostingKey;

impl PostingKey {
    pub fn new(text: impl Into<String>) -> Result<PostingKey, InvalidPostingKey> {
        let text = text.into();
        let printable = text.bytes().all(|byte| (0x20..=0x7e).contains(&byte));
        if text.is_empty() || text.len() > POSTING_KEY_CHARS_MAX || !printable {
            return Err(InvalidPostingKey);
        }
        Ok(PostingKey(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PostingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What the ledger decided: applied, with what it did, or refused, changing nothing.
pub type Decision = Result<Outcome, Refusal>;

/// Why a command has no decision. Only [`LedgerError::KeyReused`] is final; after any
/// other, the effect did not happen, or (a failed commit) retrying with the same key
/// settles whether it did.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("posting key {0} was used before for a different command")]
    KeyReused(PostingKey),
    #[error("a command with posting key {0} is still running; retry it")]
    KeyInFlight(PostingKey),
    /// The engine could not run the batch (the database is down, accounts kept changing).
    #[error("the ledger could not run the command: {}", .0.detail)]
    Unavailable(ApiError),
    /// In the caller's transaction: the statement failed, and the transaction with it.
    #[error("the ledger's statement failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    #[error("encoding an event: {0}")]
    Encode(serde_json::Error),
    /// Cannot happen under the locks [`apply_in`] takes; a bug if it does.
    #[error("an account changed under a locked read")]
    Stale,
}

impl From<BatchError> for LedgerError {
    fn from(error: BatchError) -> LedgerError {
        match error {
            BatchError::Begin(error) | BatchError::Database(error) | BatchError::Commit(error) => {
                LedgerError::Database(error)
            }
            BatchError::Corrupt(error) => LedgerError::Corrupt(error),
            BatchError::Encode(error) => LedgerError::Encode(error),
            BatchError::Stale => LedgerError::Stale,
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> ApiError {
        match error {
            LedgerError::KeyReused(_) => till_http::unit_of_work::key_reused(),
            LedgerError::KeyInFlight(_) => till_http::unit_of_work::key_in_use(),
            LedgerError::Unavailable(error) => error,
            LedgerError::Database(error) => ApiError::database(error),
            other => ApiError::internal(&other),
        }
    }
}

impl Command {
    /// Post a hold in full (`None`) or in part: the amount's currency must be the hold's.
    pub fn post(hold: TransferId, amount: Option<Money>) -> Command {
        Command::Post { hold, amount: amount.map(Money::minor), currency: amount.map(Money::currency) }
    }
}

/// The ledger as other services call it. Clones share the engine.
#[derive(Clone)]
pub struct Ledger {
    engine: Engine,
}

impl Ledger {
    pub fn new(engine: Engine) -> Ledger {
        Ledger { engine }
    }

    /// Runs `command` through the group-commit engine, in a transaction of its own.
    pub async fn submit(
        &self,
        business: BusinessId,
        key: Option<PostingKey>,
        command: Command,
        request_id: Option<String>,
    ) -> Result<Decision, LedgerError> {
        let echo = key.clone();
        match self.engine.submit(business, command, Caller::Service { key, request_id }).await {
            Reply::Decided(decision) => Ok(decision),
            Reply::KeyReused => Err(LedgerError::KeyReused(echo.unwrap_or_else(|| PostingKey(String::from("?"))))),
            Reply::Error(error) if error.code == till_http::ErrorCode::IdempotencyKeyInUse => {
                Err(LedgerError::KeyInFlight(echo.unwrap_or_else(|| PostingKey(String::from("?")))))
            }
            Reply::Error(error) => Err(LedgerError::Unavailable(error)),
            Reply::Fresh { .. } | Reply::Replay(_) => {
                Err(LedgerError::Unavailable(ApiError::internal(&"the engine answered a service as HTTP")))
            }
        }
    }
}

/// Runs `command` for `business` inside the caller's transaction (`connection` is in
/// one: this function neither begins nor commits). The transaction is scoped to the
/// business for the rest of its life. On `Err`, roll the transaction back.
pub async fn apply_in(
    connection: &mut PgConnection,
    business: BusinessId,
    key: Option<&PostingKey>,
    command: &Command,
    request_id: Option<&str>,
) -> Result<Decision, LedgerError> {
    let now = scope(connection, business).await?;
    if let Some(key) = key {
        let stored = store::find_posting_keys(connection, business, &[key.as_str()]).await?;
        if let Some(row) = stored.first() {
            let ids = row.transfer_ids.clone();
            let transfers: HashMap<_, _> = store::load_transfers(connection, business, &ids)
                .await?
                .into_iter()
                .map(|row| row.transfer().map(|transfer| (transfer.id.as_uuid(), transfer)))
                .collect::<Result<_, _>>()?;
            return match replayed(command, row, &transfers) {
                Replayed::Outcome(outcome) => Ok(Ok(outcome)),
                Replayed::Reused => Err(LedgerError::KeyReused(key.clone())),
                Replayed::Missing => {
                    Err(LedgerError::Corrupt(CorruptRow("a posting key names a missing transfer".into())))
                }
            };
        }
    }
    let claimed: Vec<uuid::Uuid> = command.new_transfers().iter().map(|id| id.as_uuid()).collect();
    let (mut book, revisions) = engine::load_locked(connection, business, command, &claimed, now).await?;
    let (decision, events) = engine::decide(&mut book, command, business, request_id)?;
    let (accounts, _) = engine::consulted(&book, &revisions);
    if store::write(connection, business, &book.writes, &accounts, &events, &[]).await? == store::Written::Stale {
        return Err(LedgerError::Stale);
    }
    if let (Some(key), Ok(outcome)) = (key, &decision) {
        store::insert_posting_keys(connection, business, &[key_row(key, command, outcome)], book.now()).await?;
    }
    Ok(decision)
}

/// An account to open. The rules are the domain's ([`Account::open`]): bounds in the
/// account's currency that admit its zero balance.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub id: AccountId,
    pub name: HumanText,
    pub currency: Currency,
    pub normal_balance: Side,
    /// Lower bound of `available` (`None`: unbounded; zero: no overdraft).
    pub min_balance: Option<Money>,
    /// Upper bound of `balance` (`None`: unbounded).
    pub max_balance: Option<Money>,
    pub metadata: Metadata,
}

/// Opens an account in the caller's transaction, with its `account.created` event.
pub async fn open_account(
    connection: &mut PgConnection,
    business: BusinessId,
    spec: &OpenAccount,
    request_id: Option<&str>,
) -> Result<Result<AccountBody, AccountRefusal>, LedgerError> {
    let bound = |bound: Option<Money>, name: &'static str| match bound {
        Some(money) if money.currency() != spec.currency => Err(AccountRefusal::BoundCurrencyMismatch { bound: name }),
        other => Ok(other.map(Money::minor)),
    };
    let opened = check_account_name(&spec.name)
        .and_then(|()| Ok((bound(spec.min_balance, "min_balance")?, bound(spec.max_balance, "max_balance")?)))
        .and_then(|(min, max)| Account::open(spec.id, spec.currency, spec.normal_balance, min, max));
    let account = match opened {
        Ok(account) => account,
        Err(refusal) => return Ok(Err(refusal)),
    };
    scope(connection, business).await?;
    let new = store::NewAccount {
        id: account.id,
        name: spec.name.as_str(),
        currency: account.currency,
        normal_balance: account.normal_balance,
        min_balance: account.min_balance,
        max_balance: account.max_balance,
        metadata: &spec.metadata,
    };
    let row = store::insert_account(connection, business, &new).await?;
    let body = account_body(row)?;
    account_event(connection, business, EventType::AccountCreated, &body, request_id).await?;
    Ok(Ok(body))
}

/// The business's transfers among `ids`, as the ledger knows them now (status, posted
/// amount, reversal), read in the caller's transaction; an id the business does not
/// have is left out. Services check their own records against these.
pub async fn transfers_of(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[TransferId],
) -> Result<HashMap<TransferId, crate::domain::Transfer>, LedgerError> {
    scope(connection, business).await?;
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let mut found = HashMap::with_capacity(ids.len());
    for row in store::load_transfers(connection, business, &ids).await? {
        let transfer = row.transfer()?;
        found.insert(transfer.id, transfer);
    }
    Ok(found)
}

/// An account's available balance, read under its row lock until the caller's
/// transaction ends (`None` if the business has no such account). Every ledger command
/// that touches the account takes the same lock, so a service can check the balance and
/// place a hold against it in one transaction without another writer slipping between:
/// payouts draw on the merchant's available balance this way, which has no floor of its
/// own because a gateway's negative settlement may take it below zero.
pub async fn available_locked(
    connection: &mut PgConnection,
    business: BusinessId,
    account: AccountId,
) -> Result<Option<i64>, LedgerError> {
    scope(connection, business).await?;
    let Some(row) = store::lock_account(connection, business, account).await? else { return Ok(None) };
    let available = row.account()?.balances().available;
    Ok(Some(i64::try_from(available).map_err(|_| CorruptRow("an available balance beyond i64".into()))?))
}

/// An account's available balance (balance less pending outgoing holds), read in the
/// caller's transaction; `None` if the business has no such account.
pub async fn available(
    connection: &mut PgConnection,
    business: BusinessId,
    account: AccountId,
) -> Result<Option<i64>, LedgerError> {
    scope(connection, business).await?;
    let Some(row) = store::find_account(connection, business, account).await? else { return Ok(None) };
    let available = row.account()?.balances().available;
    Ok(Some(i64::try_from(available).map_err(|_| CorruptRow("an available balance beyond i64".into()))?))
}

/// The posted balances of the business's accounts among `accounts`, in one query, read
/// in the caller's transaction (an account the business does not have is left out).
pub async fn balances_of(
    connection: &mut PgConnection,
    business: BusinessId,
    accounts: &[AccountId],
) -> Result<HashMap<AccountId, i64>, LedgerError> {
    scope(connection, business).await?;
    let ids: Vec<uuid::Uuid> = accounts.iter().map(|account| account.as_uuid()).collect();
    let mut balances = HashMap::with_capacity(ids.len());
    for row in store::find_accounts(connection, business, &ids).await? {
        let id = AccountId::from_uuid(row.id);
        let balance = row.account()?.balances().balance;
        let balance = i64::try_from(balance).map_err(|_| CorruptRow("a balance beyond i64".into()))?;
        balances.insert(id, balance);
    }
    Ok(balances)
}

/// An account as the API and its events show it.
pub(crate) fn account_body(row: store::AccountRow) -> Result<AccountBody, LedgerError> {
    let account = row.account()?;
    let extras = AccountExtras {
        name: row.name,
        metadata: store::metadata_from(row.metadata)?,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    AccountBody::new(&account, extras).map_err(|error| LedgerError::Corrupt(CorruptRow(error.detail)))
}

/// An account event, in the caller's transaction. The sequence is the account's
/// version: 1 when opened, then one more per update.
pub(crate) async fn account_event(
    connection: &mut PgConnection,
    business: BusinessId,
    event_type: EventType,
    body: &AccountBody,
    request_id: Option<&str>,
) -> Result<(), LedgerError> {
    let data = serde_json::value::to_raw_value(body).map_err(LedgerError::Encode)?;
    let sequence = i64::from(body.version);
    let event = Event::new(
        event_type,
        business,
        body.id.to_string(),
        sequence,
        body.updated_at,
        request_id.map(String::from),
        data,
    );
    till_outbox::append::append(connection, store::OUTBOX, &[event]).await?;
    Ok(())
}

/// Scopes the caller's transaction to `business` and reads the ledger's clock.
async fn scope(connection: &mut PgConnection, business: BusinessId) -> Result<time::OffsetDateTime, LedgerError> {
    Ok(store::scope_transaction(connection, business).await?)
}

/// The row that records `key` for an applied `command`.
pub(crate) fn key_row(key: &PostingKey, command: &Command, outcome: &Outcome) -> PostingKeyRow {
    let transfer_ids = match outcome {
        Outcome::Transfer(transfer) => vec![transfer.id.as_uuid()],
        Outcome::Batch(transfers) => transfers.iter().map(|transfer| transfer.id.as_uuid()).collect(),
    };
    PostingKeyRow { key: key.as_str().to_string(), fingerprint: fingerprint(command).to_vec(), transfer_ids }
}

// Made once per replayed key and matched at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Replayed {
    Outcome(Outcome),
    /// The key was stored for another command.
    Reused,
    /// A transfer the key names is not there (committed together, so a corrupt ledger).
    Missing,
}

/// The outcome a stored key gave `command`, rebuilt from its transfers as they are now.
pub(crate) fn replayed(command: &Command, row: &PostingKeyRow, transfers: &HashMap<uuid::Uuid, Transfer>) -> Replayed {
    if row.fingerprint.as_slice() != fingerprint(command).as_slice() {
        return Replayed::Reused;
    }
    let found: Option<Vec<Transfer>> = row.transfer_ids.iter().map(|id| transfers.get(id).cloned()).collect();
    match (command, found) {
        (_, None) => Replayed::Missing,
        (Command::Batch(_), Some(all)) => Replayed::Outcome(Outcome::Batch(all)),
        (_, Some(mut all)) if all.len() == 1 => Replayed::Outcome(Outcome::Transfer(all.remove(0))),
        (_, Some(_)) => Replayed::Missing,
    }
}

/// A digest of everything that makes `command` what it is, written out field by field in
/// a fixed form (never `Debug`, whose form may change between releases and would turn
/// every stored key into "reused"). Texts are length-prefixed, so no two commands share
/// a form.
pub(crate) fn fingerprint(command: &Command) -> [u8; 32] {
    let mut form = String::new();
    let text = |form: &mut String, value: &str| {
        form.push_str(&value.len().to_string());
        form.push(':');
        form.push_str(value);
        form.push('|');
    };
    let transfer = |form: &mut String, new: &NewTransfer| {
        for value in [
            new.id.to_string(),
            new.debit_account.to_string(),
            new.credit_account.to_string(),
            new.amount.minor().to_string(),
            new.amount.currency().code().to_string(),
            match new.hold {
                None => String::from("posted"),
                Some(HoldExpiry::Never) => String::from("hold"),
                Some(HoldExpiry::After { seconds }) => format!("hold-after-{seconds}"),
                Some(HoldExpiry::At(at)) => format!("hold-until-{}", at.unix_timestamp_nanos()),
            },
        ] {
            text(form, &value);
        }
        text(form, new.description.as_ref().map_or("\u{0}none", |description| description.as_str()));
        text(form, &store::metadata_json(&new.metadata).to_string());
    };
    match command {
        Command::Transfer(new) => {
            text(&mut form, "transfer");
            transfer(&mut form, new);
        }
        Command::Batch(news) => {
            text(&mut form, "batch");
            text(&mut form, &news.len().to_string());
            for new in news {
                transfer(&mut form, new);
            }
        }
        Command::Post { hold, amount, currency } => {
            text(&mut form, "post");
            text(&mut form, &hold.to_string());
            text(&mut form, &amount.map_or_else(|| String::from("all"), |amount| amount.to_string()));
            text(&mut form, currency.map_or("any", Currency::code));
        }
        Command::Void { hold } => {
            text(&mut form, "void");
            text(&mut form, &hold.to_string());
        }
        Command::Expire { hold } => {
            text(&mut form, "expire");
            text(&mut form, &hold.to_string());
        }
        Command::Reverse { transfer: original, reversal, description, metadata } => {
            text(&mut form, "reverse");
            text(&mut form, &original.to_string());
            text(&mut form, &reversal.to_string());
            text(&mut form, description.as_ref().map_or("\u{0}none", |description| description.as_str()));
            text(&mut form, &store::metadata_json(metadata).to_string());
        }
    }
    Sha256::digest(form.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(amount: i64) -> NewTransfer {
        NewTransfer {
            id: TransferId::generate(),
            debit_account: AccountId::generate(),
            credit_account: AccountId::generate(),
            amount: Money::from_minor(amount, Currency::GBP),
            hold: None,
            description: None,
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn a_posting_key_is_printable_ascii_of_bounded_length() {
        assert!(PostingKey::new("pi_01:capture").is_ok());
        assert_eq!(PostingKey::new(""), Err(InvalidPostingKey));
        assert_eq!(PostingKey::new("x".repeat(256)), Err(InvalidPostingKey));
        assert!(PostingKey::new("x".repeat(255)).is_ok());
        assert_eq!(PostingKey::new("caf\u{e9}"), Err(InvalidPostingKey));
        assert_eq!(PostingKey::new("a\nb"), Err(InvalidPostingKey));
    }

    #[test]
    fn a_fingerprint_tells_commands_apart_and_is_stable_for_one() {
        let one = transfer(100);
        let same = Command::Transfer(one.clone());
        assert_eq!(fingerprint(&same), fingerprint(&Command::Transfer(one.clone())));
        let more = Command::Transfer(NewTransfer { amount: Money::from_minor(101, Currency::GBP), ..one.clone() });
        assert_ne!(fingerprint(&same), fingerprint(&more));
        let other_currency =
            Command::Transfer(NewTransfer { amount: Money::from_minor(100, Currency::INR), ..one.clone() });
        assert_ne!(fingerprint(&same), fingerprint(&other_currency));
        let held = Command::Transfer(NewTransfer { hold: Some(HoldExpiry::Never), ..one.clone() });
        assert_ne!(fingerprint(&same), fingerprint(&held));
        // A batch of one is not the transfer alone.
        assert_ne!(fingerprint(&same), fingerprint(&Command::Batch(vec![one.clone()])));
        let hold = one.id;
        assert_ne!(fingerprint(&Command::post(hold, None)), fingerprint(&Command::Void { hold }));
        assert_ne!(
            fingerprint(&Command::post(hold, Some(Money::from_minor(5, Currency::GBP)))),
            fingerprint(&Command::post(hold, Some(Money::from_minor(5, Currency::INR)))),
        );
    }
}
