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
        amount: Money::from_minor(amount, Currency::GBP),
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
        book.apply(&Command::Post { hold: hold.id, amount: Some(81), currency: None }),
        Err(Refusal::AmountExceedsHold { held: 80 })
    );
    let posted = book.apply(&Command::Post { hold: hold.id, amount: Some(30), currency: None }).expect("post");
    let Outcome::Transfer(posted) = posted else { panic!("one transfer") };
    assert_eq!(
        (posted.status(), posted.posted_amount()),
        (TransferStatus::Posted, Money::from_minor(30, posted.currency()))
    );
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
        book.apply(&Command::Post { hold: hold.id, amount: None, currency: None }),
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
    euros.amount = Money::from_minor(euros.amount.minor(), Currency::EUR);
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
        .map(|transfer| transfer.amount.minor())
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
                Op::Post { hold, amount } if !created.is_empty() => Command::Post { hold: created[hold % created.len()], amount, currency: None },
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

/// Commands a careless or hostile service could build in process, where no HTTP parser
/// stands in front of the book: any amount, any currency, ids already used, texts past
/// their limits, accounts frozen or closed.
#[derive(Debug, Clone)]
enum Hostile {
    Transfer { from: usize, to: usize, amount: i64, inr: bool, reuse: Option<usize>, hold: bool, long: bool },
    Batch(Vec<(usize, usize, i64, Option<usize>)>),
    Post { hold: usize, amount: Option<i64>, inr: bool },
    Void { hold: usize },
    Reverse { transfer: usize, reuse: Option<usize> },
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let amount = prop_oneof![any::<i64>(), -3..300_i64, Just(AMOUNT_MAX), Just(AMOUNT_MAX + 1), Just(i64::MIN)];
    let reuse = proptest::option::weighted(0.2, 0..40_usize);
    prop_oneof![
        4 => (0..6_usize, 0..6_usize, amount.clone(), proptest::bool::weighted(0.1), reuse.clone(), any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(from, to, amount, inr, reuse, hold, long)| Hostile::Transfer { from, to, amount, inr, reuse, hold, long }),
        1 => proptest::collection::vec((0..6_usize, 0..6_usize, amount.clone(), reuse.clone()), 0..5).prop_map(Hostile::Batch),
        2 => (0..40_usize, proptest::option::of(amount), proptest::bool::weighted(0.1))
            .prop_map(|(hold, amount, inr)| Hostile::Post { hold, amount, inr }),
        1 => (0..40_usize).prop_map(|hold| Hostile::Void { hold }),
        1 => (0..40_usize, reuse).prop_map(|(transfer, reuse)| Hostile::Reverse { transfer, reuse }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hostile_commands_are_refused_alone_and_break_nothing(ops in proptest::collection::vec(hostile(), 1..60)) {
        let mut accounts = vec![account(Side::Debit, None, None), account(Side::Credit, Some(0), None)];
        accounts.push(account(Side::Credit, Some(-100), Some(500)));
        accounts.push(account(Side::Debit, None, Some(i64::MAX)));
        let mut frozen = account(Side::Credit, None, None);
        frozen.status = AccountStatus::Frozen;
        let mut closed = account(Side::Debit, None, None);
        closed.status = AccountStatus::Closed;
        accounts.extend([frozen, closed]);
        let ids: Vec<AccountId> = accounts.iter().map(|account| account.id).collect();
        let mut book = Book::new(accounts, Vec::new(), now());
        let mut created: Vec<TransferId> = Vec::new();
        let pick = |created: &[TransferId], index: Option<usize>| match index {
            Some(index) if !created.is_empty() => created[index % created.len()],
            _ => TransferId::generate(),
        };
        let long = HumanText::parse(&"é".repeat(DESCRIPTION_CHARS_MAX + 1), usize::MAX).ok();
        for op in ops {
            let leg = |from: usize, to: usize, amount: i64, id: TransferId| NewTransfer { id, ..transfer(ids[from], ids[to], amount) };
            let command = match op {
                Hostile::Transfer { from, to, amount, inr, reuse, hold, long: too_long } => {
                    let mut new = leg(from, to, amount, pick(&created, reuse));
                    if inr {
                        new.amount = Money::from_minor(amount, Currency::INR);
                    }
                    new.hold = hold.then_some(HoldExpiry::Never);
                    if too_long {
                        new.description = long.clone();
                    }
                    Command::Transfer(new)
                }
                Hostile::Batch(legs) => Command::Batch(
                    legs.into_iter().map(|(from, to, amount, reuse)| leg(from, to, amount, pick(&created, reuse))).collect(),
                ),
                Hostile::Post { hold, amount, inr } => Command::Post {
                    hold: pick(&created, Some(hold)),
                    amount,
                    currency: Some(if inr { Currency::INR } else { Currency::GBP }),
                },
                Hostile::Void { hold } => Command::Void { hold: pick(&created, Some(hold)) },
                Hostile::Reverse { transfer, reuse } => Command::Reverse {
                    transfer: pick(&created, Some(transfer)),
                    reversal: pick(&created, reuse),
                    description: None,
                    metadata: Metadata::default(),
                },
            };
            let (accounts_before, transfers_before) = (book.accounts.clone(), book.transfers.clone());
            let written_before = (book.writes.transfers.len(), book.writes.resolutions.len(), book.writes.entries.len());
            match book.apply(&command) {
                Ok(Outcome::Transfer(transfer)) => {
                    prop_assert!((1..=AMOUNT_MAX).contains(&transfer.amount.minor()));
                    created.push(transfer.id);
                }
                Ok(Outcome::Batch(transfers)) => {
                    prop_assert!(!transfers.is_empty());
                    created.extend(transfers.iter().map(|transfer| transfer.id));
                }
                Err(_) => {
                    prop_assert_eq!(&book.accounts, &accounts_before, "a refusal changes no account");
                    prop_assert_eq!(&book.transfers, &transfers_before, "nor any transfer");
                    let written = (book.writes.transfers.len(), book.writes.resolutions.len(), book.writes.entries.len());
                    prop_assert_eq!(written, written_before, "nor writes anything");
                }
            }
            assert_invariants(&book, &ids)?;
            let mut seen = std::collections::HashSet::new();
            prop_assert!(book.writes.transfers.iter().all(|transfer| seen.insert(transfer.id)), "an id used twice");
            let within = |transfer: &Transfer| {
                transfer.description.as_ref().is_none_or(|text| text.chars().count() <= DESCRIPTION_CHARS_MAX)
            };
            prop_assert!(book.writes.transfers.iter().all(within), "a description past its limit");
            for id in &ids[4..] {
                prop_assert_eq!(book.accounts[id].totals, Totals::default(), "a frozen or closed account took money");
            }
        }
    }

    #[test]
    fn account_rules_hold_for_any_change(
        min in proptest::option::of(prop_oneof![any::<i64>(), -1_000..1_000_i64]),
        max in proptest::option::of(prop_oneof![any::<i64>(), -1_000..1_000_i64]),
        status in prop_oneof![Just(None), Just(Some(AccountStatus::Active)), Just(Some(AccountStatus::Frozen)), Just(Some(AccountStatus::Closed))],
        balance in 0..500_i64,
        holding in any::<bool>(),
        closed in any::<bool>(),
    ) {
        if let Ok(opened) = Account::open(AccountId::generate(), Currency::GBP, Side::Credit, min, max) {
            prop_assert!(opened.check_bounds().is_ok());
            prop_assert_eq!(opened.status, AccountStatus::Active);
        }
        let mut account = account(Side::Credit, None, None);
        account.totals.credits_posted = balance;
        if holding {
            account.totals.debits_pending = 1;
        }
        if closed {
            account.status = AccountStatus::Closed;
        }
        let change = AccountChange { status, min_balance: Some(min), max_balance: Some(max) };
        match account.changed(&change) {
            Ok(changed) => {
                prop_assert!(changed.check_bounds().is_ok(), "no committed state is out of bounds");
                prop_assert!(!(closed && changed.status != AccountStatus::Closed), "a closed account reopened");
                if changed.status == AccountStatus::Closed && !closed {
                    prop_assert!(balance == 0 && !holding, "only an empty account closes");
                }
                prop_assert_eq!(changed.totals, account.totals);
            }
            Err(AccountRefusal::Reopen) => prop_assert!(closed),
            Err(AccountRefusal::NotEmpty) => prop_assert!(balance != 0 || holding),
            Err(_) => {}
        }
    }
}

#[test]
fn a_batch_past_its_limit_is_refused_whole() {
    let (mut book, source, wallet) = funded_wallet(10_000);
    let legs = (0..=BATCH_TRANSFERS_MAX).map(|_| transfer(source, wallet, 1)).collect();
    let before = book.accounts.clone();
    assert_eq!(book.apply(&Command::Batch(legs)), Err(Refusal::BatchSizeOutOfRange));
    assert_eq!(book.accounts, before);
}
