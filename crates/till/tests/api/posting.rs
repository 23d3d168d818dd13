//! The ledger as other services call it (`till_ledger::posting`): typed commands through
//! the engine and inside a caller's own transaction, on the same accounts at once.

use futures::future::join_all;
use sqlx::PgPool;
use till_kit::{BusinessId, Currency, Metadata, Money};
use till_ledger::domain::{Command, HoldExpiry, NewTransfer, Outcome, Refusal};
use till_ledger::engine::Engine;
use till_ledger::posting::{apply_in, Ledger, LedgerError, PostingKey};
use till_ledger::{AccountId, TransferId};
use till_testkit::{spawn_app, TestApp, TestBusiness};

use crate::ledger_helpers::{balance, check, key, source, transfer_body, transfer_count, wallet};

fn business_id(business: &TestBusiness) -> BusinessId {
    BusinessId::parse(&business.id).expect("business id")
}

fn account_id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

fn gbp(minor: i64) -> Money {
    Money::from_minor(minor, Currency::GBP)
}

fn transfer(debit: AccountId, credit: AccountId, amount: Money) -> NewTransfer {
    NewTransfer {
        id: TransferId::generate(),
        debit_account: debit,
        credit_account: credit,
        amount,
        hold: None,
        description: None,
        metadata: Metadata::default(),
    }
}

fn posting_key(text: &str) -> PostingKey {
    PostingKey::new(text).expect("posting key")
}

/// A table that stands for a service's own state (a payment row), which must commit with
/// its postings or not at all.
async fn payments_table(app: &TestApp) {
    sqlx::query("CREATE TABLE public.test_payments (id text PRIMARY KEY, amount bigint NOT NULL)")
        .execute(&app.owner_pool)
        .await
        .expect("payments table");
    sqlx::query("GRANT SELECT, INSERT ON public.test_payments TO till_app")
        .execute(&app.owner_pool)
        .await
        .expect("grant");
}

/// A payment recorded with its capture, in one transaction of the caller's.
async fn capture(
    pool: &PgPool,
    business: BusinessId,
    payment: &str,
    command: &Command,
    commit: bool,
) -> Result<Result<Outcome, Refusal>, LedgerError> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO public.test_payments (id, amount) VALUES ($1, 1) ON CONFLICT DO NOTHING")
        .bind(payment)
        .execute(&mut *tx)
        .await
        .expect("payment row");
    let key = posting_key(&format!("{payment}:capture"));
    let decision = apply_in(&mut tx, business, Some(&key), command, None).await;
    if commit && decision.is_ok() {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
    decision
}

fn transferred(decision: Result<Result<Outcome, Refusal>, LedgerError>) -> till_ledger::domain::Transfer {
    match decision {
        Ok(Ok(Outcome::Transfer(transfer))) => transfer,
        other => panic!("expected a transfer, got {other:?}"),
    }
}

#[tokio::test]
async fn postings_in_a_callers_transaction_commit_with_its_state_or_not_at_all() {
    let app = spawn_app().await;
    payments_table(&app).await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let id = business_id(&business);
    let before = transfer_count(&app).await;

    let mut committed = 0;
    let mut first = None;
    for index in 1..=10_i64 {
        let command = Command::Transfer(transfer(account_id(&bank), account_id(&alice), gbp(index)));
        let commit = index % 2 == 0;
        let done = transferred(capture(&app.pool, id, &format!("pay_{index}"), &command, commit).await);
        assert_eq!(done.amount, gbp(index));
        if commit {
            committed += index;
            first.get_or_insert((command, done.id));
        }
    }
    assert_eq!(balance(&app, k, &alice).await, committed, "only the committed captures moved money");
    assert_eq!(transfer_count(&app).await, before + 5);
    let payments: Vec<String> = sqlx::query_scalar("SELECT id FROM public.test_payments ORDER BY id")
        .fetch_all(&app.owner_pool)
        .await
        .expect("payments");
    assert_eq!(payments, ["pay_10", "pay_2", "pay_4", "pay_6", "pay_8"], "the rolled-back payments left nothing");
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.posting_keys").fetch_one(&app.owner_pool).await.expect("keys");
    assert_eq!(keys, 5, "a key is stored exactly when its effect is");

    // A retry of a committed capture replays it: the same transfer, no new money, in
    // the caller's transaction or through the engine alike.
    let (command, original) = first.expect("a committed capture");
    let again = transferred(capture(&app.pool, id, "pay_2", &command, true).await);
    assert_eq!(again.id, original);
    let ledger = Ledger::new(Engine::new(app.pool.clone()).expect("engine"));
    let through_engine = ledger.submit(id, Some(posting_key("pay_2:capture")), command.clone(), None).await;
    assert_eq!(transferred(through_engine).id, original);
    assert_eq!(balance(&app, k, &alice).await, committed);

    // The same key for another command is refused, and moves nothing.
    let other = Command::Transfer(transfer(account_id(&bank), account_id(&alice), gbp(999)));
    assert!(matches!(capture(&app.pool, id, "pay_2", &other, true).await, Err(LedgerError::KeyReused(_))));
    let reused = ledger.submit(id, Some(posting_key("pay_2:capture")), other, None).await;
    assert!(matches!(reused, Err(LedgerError::KeyReused(_))), "{reused:?}");
    assert_eq!(balance(&app, k, &alice).await, committed);
    assert_eq!(check(&app, k).await["ok"], true);
}

#[tokio::test]
async fn the_engine_and_callers_transactions_move_one_account_at_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice, sink) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, source(&app, k, "GBP").await);
    let id = business_id(&business);
    // A second engine on the same database, as another Till instance's would be.
    let ledger = Ledger::new(Engine::new(app.pool.clone()).expect("engine"));
    let (bank_id, alice_id, sink_id) = (account_id(&bank), account_id(&alice), account_id(&sink));
    const EACH: usize = 120;

    // Into alice through the server's engine (HTTP, from its cache) and through the
    // second engine; out of alice in callers' own transactions, refused when she is empty.
    let http = join_all((0..EACH).map(|_| {
        let (app, bank, alice) = (&app, &bank, &alice);
        async move { app.post("/v1/transfers", k, &key(), &transfer_body(bank, alice, 3)).await.status().as_u16() }
    }));
    let engine = join_all((0..EACH).map(|index| {
        let ledger = ledger.clone();
        async move {
            let command = Command::Transfer(transfer(bank_id, alice_id, gbp(2)));
            ledger.submit(id, Some(posting_key(&format!("in_{index}"))), command, None).await
        }
    }));
    let own = join_all((0..EACH).map(|index| {
        let pool = app.pool.clone();
        async move {
            loop {
                let mut tx = pool.begin().await.expect("begin");
                let command = Command::Transfer(transfer(alice_id, sink_id, gbp(4)));
                let key = posting_key(&format!("out_{index}"));
                match apply_in(&mut tx, id, Some(&key), &command, None).await {
                    Ok(decision) => {
                        tx.commit().await.expect("commit");
                        return decision;
                    }
                    // A deadlock is the database's to break; the caller retries its key.
                    Err(LedgerError::Database(error)) if error.to_string().contains("deadlock") => continue,
                    Err(error) => panic!("a posting in a caller's transaction failed: {error}"),
                }
            }
        }
    }));
    let (http, engine, own) = tokio::join!(http, engine, own);

    assert!(http.iter().all(|&status| status == 201), "{http:?}");
    assert!(engine.iter().all(|decision| matches!(decision, Ok(Ok(Outcome::Transfer(_))))), "{engine:?}");
    let mut out = 0;
    for decision in &own {
        match decision {
            Ok(_) => out += 1,
            Err(Refusal::InsufficientFunds { account }) => assert_eq!(*account, alice_id),
            Err(other) => panic!("unexpected refusal {other}"),
        }
    }
    let expected = i64::try_from(EACH).expect("small") * (3 + 2) - out * 4;
    assert_eq!(balance(&app, k, &alice).await, expected, "{out} moved out of alice");
    assert_eq!(balance(&app, k, &sink).await, -out * 4);
    let report = check(&app, k).await;
    assert_eq!(report["ok"], true, "{report}");
}

fn arm(business: &TestBusiness, point: &str) {
    fail::cfg(point, &format!("return({})", business.id)).expect("arming");
}

#[tokio::test]
async fn one_hostile_service_command_refuses_only_itself_in_its_batch() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (account_id(&source(&app, k, "GBP").await), account_id(&wallet(&app, k, "GBP").await));
    let id = business_id(&business);
    let ledger = Ledger::new(Engine::new(app.pool.clone()).expect("engine"));
    let used = match ledger.submit(id, None, Command::Transfer(transfer(bank, alice, gbp(50))), None).await {
        Ok(Ok(Outcome::Transfer(transfer))) => transfer,
        other => panic!("{other:?}"),
    };
    let hold = match ledger
        .submit(
            id,
            None,
            Command::Transfer(NewTransfer { hold: Some(HoldExpiry::Never), ..transfer(bank, alice, gbp(20)) }),
            None,
        )
        .await
    {
        Ok(Ok(Outcome::Transfer(transfer))) => transfer.id,
        other => panic!("{other:?}"),
    };
    let before = transfer_count(&app).await;
    let twin = TransferId::generate();
    let hostile: Vec<(Command, Option<Refusal>)> = vec![
        (Command::Transfer(transfer(bank, alice, gbp(0))), Some(Refusal::AmountOutOfRange)),
        (Command::Transfer(transfer(bank, alice, gbp(-5))), Some(Refusal::AmountOutOfRange)),
        (Command::Transfer(transfer(bank, alice, gbp(i64::MAX))), Some(Refusal::AmountOutOfRange)),
        (
            Command::Transfer(NewTransfer { id: used.id, ..transfer(bank, alice, gbp(1)) }),
            Some(Refusal::TransferIdInUse { transfer: used.id }),
        ),
        (Command::Transfer(NewTransfer { id: twin, ..transfer(bank, alice, gbp(1)) }), None),
        (
            Command::Transfer(NewTransfer { id: twin, ..transfer(bank, alice, gbp(1)) }),
            Some(Refusal::TransferIdInUse { transfer: twin }),
        ),
        (Command::post(hold, Some(gbp(0))), Some(Refusal::AmountOutOfRange)),
        (Command::post(hold, Some(gbp(21))), Some(Refusal::AmountExceedsHold { held: 20 })),
        (
            Command::post(hold, Some(Money::from_minor(5, Currency::INR))),
            Some(Refusal::AmountCurrencyMismatch { amount: Currency::INR, hold: Currency::GBP }),
        ),
        (Command::Batch(Vec::new()), Some(Refusal::BatchSizeOutOfRange)),
        // 50 in, and at most 9 more from the twin and the good ones (a hold into alice
        // counts only once posted).
        (Command::Transfer(transfer(alice, bank, gbp(60))), Some(Refusal::InsufficientFunds { account: alice })),
    ];
    let good = (0..8).map(|_| (Command::Transfer(transfer(bank, alice, gbp(1))), None));
    let commands: Vec<(Command, Option<Refusal>)> = hostile.into_iter().chain(good).collect();
    // Held back, the writer takes everything sent together as one batch.
    arm(&business, "ledger::gather_batch");
    let decisions = join_all(commands.iter().map(|(command, _)| {
        let ledger = ledger.clone();
        async move { ledger.submit(id, None, command.clone(), None).await }
    }))
    .await;
    fail::remove("ledger::gather_batch");
    for ((command, expected), decision) in commands.iter().zip(decisions) {
        match (expected, decision) {
            (None, Ok(Ok(_))) => {}
            (Some(refusal), Ok(Err(got))) => assert_eq!(&got, refusal, "{command:?}"),
            (expected, got) => panic!("{command:?}: expected {expected:?}, got {got:?}"),
        }
    }
    assert_eq!(transfer_count(&app).await, before + 9, "the twin's first and the eight good transfers");
    assert_eq!(check(&app, k).await["ok"], true);
}

#[tokio::test]
async fn a_service_opens_accounts_in_its_own_transaction_under_the_domains_rules() {
    use till_ledger::domain::{AccountRefusal, Side};
    use till_ledger::posting::{open_account, OpenAccount};

    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let id = business_id(&business);
    let spec = |min_balance: Option<Money>| OpenAccount {
        id: AccountId::generate(),
        name: till_kit::HumanText::name("Merchant settlement", 200).expect("name"),
        currency: Currency::GBP,
        normal_balance: Side::Credit,
        min_balance,
        max_balance: None,
        metadata: Metadata::default(),
    };
    let mut tx = app.pool.begin().await.expect("begin");
    let refused = open_account(&mut tx, id, &spec(Some(Money::from_minor(0, Currency::INR))), None).await;
    assert!(matches!(refused, Ok(Err(AccountRefusal::BoundCurrencyMismatch { bound: "min_balance" }))), "{refused:?}");
    let refused = open_account(&mut tx, id, &spec(Some(gbp(1))), None).await;
    assert!(matches!(refused, Ok(Err(AccountRefusal::MinAboveZero))), "{refused:?}");
    let rolled_back = spec(Some(gbp(0)));
    open_account(&mut tx, id, &rolled_back, None).await.expect("opening").expect("opened");
    tx.rollback().await.expect("rollback");
    let missing = app.get(&format!("/v1/accounts/{}", rolled_back.id), &business.owner_key).await;
    assert_eq!(missing.status().as_u16(), 404, "a rolled-back account is not there");

    let mut tx = app.pool.begin().await.expect("begin");
    let kept = spec(None);
    let body = open_account(&mut tx, id, &kept, Some("req_test")).await.expect("opening").expect("opened");
    tx.commit().await.expect("commit");
    assert_eq!(body.id, kept.id);
    assert_eq!(body.min_balance, None);
    let shown = crate::ledger_helpers::account(&app, &business.owner_key, &kept.id.to_string()).await;
    assert_eq!(shown["name"], "Merchant settlement");
    assert_eq!(shown["status"], "active");
}
