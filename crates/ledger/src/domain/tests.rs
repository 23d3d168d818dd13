// Tests compute expected balances with plain arithmetic on small numbers.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

//! Unit and property tests of the pure ledger.

use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use super::*;

fn account(normal: Side, min: Option<i64>, max: Option<i64>) -> Account {
    Account {
        id: AccountId::generate(),
        currency: Currency::GBP,
        normal_balance: normal,
        min_balance: min,
        max_balance: max,
        status: AccountStatus::Active,
        totals: Totals::default(),
    }
}

fn transfer(debit: AccountId, credit: AccountId, amount: i64) -> NewTransfer {
    NewTransfer {
        id: TransferId::generate(),
        debit_account: debit,
        credit_account: credit,
        amount,
        currency: Currency::GBP,
        hold: None,
        description: None,
        metadata: Metadata::default(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A funding source (debit-normal, unbounded) and a customer wallet (credit-normal, floor 0).
fn funded_wallet(balance: i64) -> (Book, AccountId, AccountId) {
    let source = account(Side::Debit, None, None);
    let wallet = account(Side::Credit, Some(0), None);
    let (source_id, wallet_id) = (source.id, wallet.id);
    let mut book = Book::new(vec![source, wallet], Vec::new(), now());
    book.apply(&Command::Transfer(transfer(source_id, wallet_id, balance))).expect("funding");
    (book, source_id, wallet_id)
}

#[test]
fn overdraft_is_refused_and_changes_nothing() {
    let (mut book, source, wallet) = funded_wallet(100);
    let before = book.accounts.clone();
    let refused = book.apply(&Command::Transfer(transfer(wallet, source, 101)));
    assert_eq!(refused, Err(Refusal::InsufficientFunds { account: wallet }));
    assert_eq!(book.accounts, before);
    assert!(book.apply(&Command::Transfer(transfer(wallet, source, 100))).is_ok());
    assert_eq!(book.accounts[&wallet].balances().balance, 0);
}

#[test]
fn overdraft_limit_is_a_negative_minimum() {
    let source = account(Side::Debit, None, None);
    let wallet = account(Side::Credit, Some(-50_000), None);
    let (s, w) = (source.id, wallet.id);
    let mut book = Book::new(vec![source, wallet], Vec::new(), now());
    assert!(book.apply(&Command::Transfer(transfer(w, s, 50_000))).is_ok());
    assert_eq!(book.accounts[&w].balances().balance, -50_000);
    assert_eq!(book.apply(&Command::Transfer(transfer(w, s, 1))), Err(Refusal::InsufficientFunds { account: w }));
}

#[test]
fn maximum_balance_is_enforced() {
    let source = account(Side::Debit, None, None);
    let capped = account(Side::Credit, Some(0), Some(1_000));
    let (s, c) = (source.id, capped.id);
    let mut book = Book::new(vec![source, capped], Vec::new(), now());
    assert!(book.apply(&Command::Transfer(transfer(s, c, 1_000))).is_ok());
    assert_eq!(book.apply(&Command::Transfer(transfer(s, c, 1))), Err(Refusal::BalanceLimitExceeded { account: c }));
}

#[test]
fn a_hold_reserves_then_posts_in_part_and_releases_the_rest() {
    let (mut book, source, wallet) = funded_wallet(100);
    let mut hold = transfer(wallet, source, 80);
    hold.hold = Some(HoldExpiry::Never);
    book.apply(&Command::Transfer(hold.clone())).expect("hold");
    let balances = book.accounts[&wallet].balances();
    assert_eq!((balances.balance, balances.available), (100, 20));
    assert_eq!(
        book.apply(&Command::Transfer(transfer(wallet, source, 21))),
        Err(Refusal::InsufficientFunds { account: wallet })
    );
    assert_eq!(
        book.apply(&Command::Post { hold: hold.id, amount: Some(81) }),
        Err(Refusal::AmountExceedsHold { held: 80 })
    );
    let posted = book.apply(&Command::Post { hold: hold.id, amount: Some(30) }).expect("post");
    let Outcome::Transfer(posted) = posted else { panic!("one transfer") };
    assert_eq!((posted.status(), posted.posted_amount()), (TransferStatus::Posted, 30));
    let balances = book.accounts[&wallet].balances();
    assert_eq!((balances.balance, balances.available), (70, 70));
    assert_eq!(
        book.apply(&Command::Void { hold: hold.id }),
        Err(Refusal::HoldResolved { transfer: hold.id, status: "posted" })
    );
}

#[test]
fn expiry_is_exclusive_with_post_and_void() {
    let (mut book, source, wallet) = funded_wallet(100);
    let mut hold = transfer(wallet, source, 60);
    hold.hold = Some(HoldExpiry::After { seconds: 30 });
    book.apply(&Command::Transfer(hold.clone())).expect("hold");
    assert_eq!(book.apply(&Command::Expire { hold: hold.id }), Err(Refusal::HoldNotExpired { transfer: hold.id }));
    book.now = now() + Duration::seconds(31);
    assert_eq!(
        book.apply(&Command::Post { hold: hold.id, amount: None }),
        Err(Refusal::HoldExpired { transfer: hold.id })
    );
    assert!(book.apply(&Command::Expire { hold: hold.id }).is_ok());
    assert_eq!(book.accounts[&wallet].balances().available, 100);
    assert_eq!(
        book.apply(&Command::Void { hold: hold.id }),
        Err(Refusal::HoldResolved { transfer: hold.id, status: "expired" })
    );
}

#[test]
fn a_reversal_moves_the_money_back_once() {
    let (mut book, source, wallet) = funded_wallet(100);
    let payment = transfer(wallet, source, 40);
    book.apply(&Command::Transfer(payment.clone())).expect("payment");
    let reverse = |book: &mut Book| {
        book.apply(&Command::Reverse {
            transfer: payment.id,
            reversal: TransferId::generate(),
            description: None,
            metadata: Metadata::default(),
        })
    };
    let Outcome::Transfer(reversal) = reverse(&mut book).expect("reversal") else { panic!("one transfer") };
    assert_eq!(reversal.reverses, Some(payment.id));
    assert_eq!(book.accounts[&wallet].balances().balance, 100);
    assert!(matches!(reverse(&mut book), Err(Refusal::NotReversible { .. })));
}

#[test]
fn a_batch_is_all_or_nothing_and_names_the_failing_index() {
    let (mut book, source, wallet) = funded_wallet(100);
    let before = book.accounts.clone();
    let entries_before = book.writes.entries.len();
    let batch = vec![transfer(wallet, source, 50), transfer(wallet, source, 40), transfer(wallet, source, 20)];
    let refused = book.apply(&Command::Batch(batch));
    assert_eq!(
        refused,
        Err(Refusal::InBatch { index: 2, refusal: Box::new(Refusal::InsufficientFunds { account: wallet }) })
    );
    assert_eq!(book.accounts, before);
    assert_eq!(book.writes.entries.len(), entries_before);
    assert_eq!(book.writes.transfers.len(), 1, "only the funding transfer");
}

#[test]
fn refusals_for_bad_accounts() {
    let (mut book, source, wallet) = funded_wallet(100);
    assert_eq!(book.apply(&Command::Transfer(transfer(wallet, wallet, 1))), Err(Refusal::SameAccount));
    let stranger = AccountId::generate();
    assert_eq!(
        book.apply(&Command::Transfer(transfer(stranger, source, 1))),
        Err(Refusal::AccountNotFound { account: stranger })
    );
    let mut euros = transfer(wallet, source, 1);
    euros.currency = Currency::EUR;
    assert!(matches!(book.apply(&Command::Transfer(euros)), Err(Refusal::CurrencyMismatch { .. })));
    book.accounts.get_mut(&wallet).expect("wallet").status = AccountStatus::Frozen;
    assert_eq!(
        book.apply(&Command::Transfer(transfer(wallet, source, 1))),
        Err(Refusal::AccountNotActive { account: wallet, status: "frozen" })
    );
}

/// Random operations against a handful of accounts.
#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, amount: i64, hold: bool, ttl: Option<i64> },
    Batch(Vec<(usize, usize, i64)>),
    Post { hold: usize, amount: Option<i64> },
    Void { hold: usize },
    Advance { seconds: i64 },
    Expire { hold: usize },
    Reverse { transfer: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5_usize, 0..5_usize, 1..200_i64, any::<bool>(), proptest::option::of(1..100_i64))
            .prop_map(|(from, to, amount, hold, ttl)| Op::Transfer { from, to, amount, hold, ttl }),
        1 => proptest::collection::vec((0..5_usize, 0..5_usize, 1..100_i64), 1..6).prop_map(Op::Batch),
        2 => (0..50_usize, proptest::option::of(1..200_i64)).prop_map(|(hold, amount)| Op::Post { hold, amount }),
        1 => (0..50_usize).prop_map(|hold| Op::Void { hold }),
        1 => (1..60_i64).prop_map(|seconds| Op::Advance { seconds }),
        1 => (0..50_usize).prop_map(|hold| Op::Expire { hold }),
        1 => (0..50_usize).prop_map(|transfer| Op::Reverse { transfer }),
    ]
}

fn assert_invariants(book: &Book, ids: &[AccountId]) -> Result<(), TestCaseError> {
    let mut sums = Totals::default();
    for id in ids {
        let account = &book.accounts[id];
        prop_assert!(account.check_bounds().is_ok(), "{account:?} is out of bounds");
        let t = account.totals;
        sums.debits_posted += t.debits_posted;
        sums.credits_posted += t.credits_posted;
        sums.debits_pending += t.debits_pending;
        sums.credits_pending += t.credits_pending;
        // The stored totals equal the sum of the account's entries.
        let mut from_entries = Totals::default();
        for entry in book.writes.entries.iter().filter(|entry| entry.account == *id) {
            match entry.side {
                Side::Debit => {
                    from_entries.debits_posted += entry.posted_delta;
                    from_entries.debits_pending += entry.pending_delta;
                }
                Side::Credit => {
                    from_entries.credits_posted += entry.posted_delta;
                    from_entries.credits_pending += entry.pending_delta;
                }
            }
        }
        prop_assert_eq!(from_entries, t);
        let last = book.writes.entries.iter().rev().find(|entry| entry.account == *id);
        prop_assert_eq!(last.map(|entry| entry.totals_after).unwrap_or_default(), t);
    }
    prop_assert_eq!(sums.debits_posted, sums.credits_posted);
    prop_assert_eq!(sums.debits_pending, sums.credits_pending);
    let open_holds: i64 = book
        .transfers
        .values()
        .filter(|transfer| transfer.status() == TransferStatus::Pending)
        .map(|transfer| transfer.amount)
        .sum();
    prop_assert_eq!(open_holds, sums.debits_pending);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_operations_keep_every_invariant(ops in proptest::collection::vec(op(), 1..80)) {
        let mut accounts = vec![account(Side::Debit, None, None)];
        accounts.push(account(Side::Credit, Some(0), None));
        accounts.push(account(Side::Credit, Some(-100), Some(500)));
        accounts.push(account(Side::Debit, Some(0), Some(1_000)));
        accounts.push(account(Side::Credit, None, Some(300)));
        let ids: Vec<AccountId> = accounts.iter().map(|account| account.id).collect();
        let mut book = Book::new(accounts, Vec::new(), now());
        let mut created: Vec<TransferId> = Vec::new();
        for op in ops {
            let before = book.accounts.clone();
            let command = match op {
                Op::Advance { seconds } => {
                    book.now += Duration::seconds(seconds);
                    continue;
                }
                Op::Transfer { from, to, amount, hold, ttl } => {
                    let mut new = transfer(ids[from], ids[to], amount);
                    if hold {
                        new.hold = Some(ttl.map_or(HoldExpiry::Never, |seconds| HoldExpiry::After { seconds }));
                    }
                    Command::Transfer(new)
                }
                Op::Batch(legs) => Command::Batch(legs.into_iter().map(|(from, to, amount)| transfer(ids[from], ids[to], amount)).collect()),
                Op::Post { hold, amount } if !created.is_empty() => Command::Post { hold: created[hold % created.len()], amount },
                Op::Void { hold } if !created.is_empty() => Command::Void { hold: created[hold % created.len()] },
                Op::Expire { hold } if !created.is_empty() => Command::Expire { hold: created[hold % created.len()] },
                Op::Reverse { transfer } if !created.is_empty() => Command::Reverse {
                    transfer: created[transfer % created.len()],
                    reversal: TransferId::generate(),
                    description: None,
                    metadata: Metadata::default(),
                },
                _ => continue,
            };
            match book.apply(&command) {
                Ok(Outcome::Transfer(transfer)) => created.push(transfer.id),
                Ok(Outcome::Batch(transfers)) => created.extend(transfers.iter().map(|transfer| transfer.id)),
                Err(_) => prop_assert_eq!(&book.accounts, &before, "a refusal changes nothing"),
            }
            assert_invariants(&book, &ids)?;
        }
    }
}

#[test]
fn a_hold_expiry_is_judged_by_the_ledgers_clock() {
    let (mut book, source, wallet) = funded_wallet(100);
    let hold = |expiry: HoldExpiry| {
        let mut new = transfer(wallet, source, 10);
        new.hold = Some(expiry);
        Command::Transfer(new)
    };
    for refused in [
        HoldExpiry::After { seconds: 0 },
        HoldExpiry::After { seconds: HOLD_SECONDS_MAX + 1 },
        HoldExpiry::At(book.now),
        HoldExpiry::At(book.now - Duration::seconds(1)),
        HoldExpiry::At(book.now + Duration::seconds(HOLD_SECONDS_MAX + 1)),
    ] {
        assert_eq!(book.apply(&hold(refused)), Err(Refusal::HoldExpiryOutOfRange), "{refused:?}");
    }
    let Ok(Outcome::Transfer(after)) = book.apply(&hold(HoldExpiry::After { seconds: 60 })) else { panic!("a hold") };
    assert_eq!(after.expires_at, Some(book.now + Duration::seconds(60)), "counted from the book's clock");
    let at = book.now + Duration::seconds(HOLD_SECONDS_MAX);
    let Ok(Outcome::Transfer(until)) = book.apply(&hold(HoldExpiry::At(at))) else { panic!("a hold") };
    assert_eq!(until.expires_at, Some(at));
    assert_eq!(book.accounts[&wallet].balances().available, 80, "the refusals reserved nothing");
}
