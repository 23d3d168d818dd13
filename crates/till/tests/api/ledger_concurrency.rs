//! The ledger under concurrency, through the HTTP API: overdraft races, holds resolved
//! by racing commands, and conservation of money under many concurrent clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use serde_json::{json, Value};
use till_testkit::{problem, spawn_app};

use crate::ledger_helpers::*;

/// An account with 100 and two concurrent debits of 60, 200 times: exactly one succeeds
/// every time, and the other is refused for funds.
#[tokio::test]
async fn overdraft_race_exactly_one_of_two_debits_succeeds() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    for trial in 0..200 {
        let payer = wallet(&app, k, "GBP").await;
        posted(&app, k, &bank, &payer, 100).await;
        let (a, b) = tokio::join!(transfer(&app, k, &payer, &shop, 60), transfer(&app, k, &payer, &shop, 60));
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 422], "trial {trial}");
        assert_eq!(balance(&app, k, &payer).await, 40, "trial {trial}");
    }
    assert_eq!(check(&app, k).await["ok"], true);
}

/// Ten concurrent debits of 15 against 100: exactly six succeed.
#[tokio::test]
async fn ten_concurrent_debits_of_fifteen_against_a_hundred() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    for trial in 0..20 {
        let payer = wallet(&app, k, "GBP").await;
        posted(&app, k, &bank, &payer, 100).await;
        let responses = join_all((0..10).map(|_| transfer(&app, k, &payer, &shop, 15))).await;
        let succeeded = responses.iter().filter(|response| response.status().as_u16() == 201).count();
        let refused = responses.iter().filter(|response| response.status().as_u16() == 422).count();
        assert_eq!((succeeded, refused), (6, 4), "trial {trial}");
        assert_eq!(balance(&app, k, &payer).await, 10);
    }
}

/// Post and void sent together on the same hold: exactly one wins, every time; and holds
/// that expire while post and void race the sweeper end exactly once too.
#[tokio::test]
async fn post_void_and_expire_racing_on_one_hold_resolve_it_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, payer, shop) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    posted(&app, k, &bank, &payer, 1_000_000).await;
    for trial in 0..40 {
        let held = hold(&app, k, &payer, &shop, 100, None).await;
        let (post, void) = tokio::join!(resolve(&app, k, &held, "post"), resolve(&app, k, &held, "void"));
        let mut statuses = [post, void];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "trial {trial}");
    }
    // Holds that expire in a second; post and void arrive around the expiry while the
    // sweeper runs.
    let mut holds = Vec::new();
    for _ in 0..10 {
        holds.push(hold(&app, k, &payer, &shop, 100, Some(1)).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let app_ref = &app;
    let races = holds
        .iter()
        .map(|held| async move { tokio::join!(resolve(app_ref, k, held, "post"), resolve(app_ref, k, held, "void")) });
    let outcomes = join_all(races).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    for (held, (post, void)) in holds.iter().zip(outcomes) {
        let body: Value = app.get(&format!("/v1/transfers/{held}"), k).await.json().await.expect("json");
        let winners = [post, void].iter().filter(|status| **status == 200).count();
        match body["status"].as_str() {
            Some("expired") => assert_eq!(winners, 0, "{held}: expired, so neither post nor void won"),
            Some("posted") => assert_eq!((post, void), (200, 409), "{held}"),
            Some("voided") => assert_eq!((post, void), (409, 200), "{held}"),
            other => panic!("{held} is still {other:?}"),
        }
    }
    let resolutions: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.hold_resolutions")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count");
    assert_eq!(resolutions, 50, "every hold ended exactly once");
    assert_eq!(check(&app, k).await["ok"], true);
}

async fn resolve(app: &till_testkit::TestApp, credential: &str, hold: &str, action: &str) -> u16 {
    let response = app.post(&format!("/v1/transfers/{hold}/{action}"), credential, &key(), &json!({})).await;
    response.status().as_u16()
}

/// Ten accounts, sixteen concurrent clients, thousands of random transfers (many refused
/// for funds), and readers summing all balances throughout: the sum never changes, no
/// request gets a 5xx, and the final balances equal a replay of the successful transfers.
#[tokio::test]
async fn money_is_conserved_under_concurrent_load() {
    const ACCOUNTS: usize = 10;
    const CLIENTS: usize = 16;
    const TRANSFERS_PER_CLIENT: usize = 150;
    const START: i64 = 1_000;
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = business.owner_key.clone();
    let bank = source(&app, &k, "GBP").await;
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = wallet(&app, &k, "GBP").await;
        posted(&app, &k, &bank, &account, START).await;
        accounts.push(account);
    }
    let total = START * ACCOUNTS as i64;
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (done, app_url, client, k, accounts) =
            (done.clone(), app.url("/v1/accounts?limit=100"), app.client.clone(), k.clone(), accounts.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) || reads == 0 {
                let page: Value =
                    client.get(&app_url).bearer_auth(&k).send().await.expect("read").json().await.expect("json");
                let sum: i64 = page["data"]
                    .as_array()
                    .expect("data")
                    .iter()
                    .filter(|account| accounts.iter().any(|id| account["id"] == id.as_str()))
                    .map(|account| account["balance"].as_i64().expect("balance"))
                    .sum();
                assert_eq!(sum, total, "a concurrent read saw money appear or vanish");
                reads += 1;
            }
            reads
        })
    };

    let clients = (0..CLIENTS).map(|client| {
        let (app, k, accounts) = (&app, &k, &accounts);
        async move {
            let mut moves = Vec::new();
            let mut seed = 0x9e37_79b9_u64.wrapping_mul(client as u64 + 1);
            let mut next = |bound: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % bound
            };
            for _ in 0..TRANSFERS_PER_CLIENT {
                let from = next(ACCOUNTS as u64) as usize;
                let to = (from + 1 + next(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let amount = 1 + next(400) as i64;
                let response = transfer(app, k, &accounts[from], &accounts[to], amount).await;
                let status = response.status().as_u16();
                assert!(status < 500, "a 5xx under load: {status}");
                match status {
                    201 => moves.push((from, to, amount)),
                    422 => {}
                    other => panic!("unexpected {other}"),
                }
            }
            moves
        }
    });
    let moves: Vec<(usize, usize, i64)> = join_all(clients).await.into_iter().flatten().collect();
    done.store(true, Ordering::SeqCst);
    let reads = reader.await.expect("reader");
    assert!(reads > 0);
    assert!(!moves.is_empty() && moves.len() < CLIENTS * TRANSFERS_PER_CLIENT, "some succeed and some are refused");

    let mut expected = [START; ACCOUNTS];
    for (from, to, amount) in &moves {
        expected[*from] -= amount;
        expected[*to] += amount;
    }
    for (index, account) in accounts.iter().enumerate() {
        assert_eq!(balance(&app, &k, account).await, expected[index], "account {index} equals the replay");
    }
    assert_eq!(check(&app, &k).await["ok"], true);
}

/// Each engine writer keeps the accounts it last committed and does not read them again;
/// it must never decide with one that changed behind it. Here the changes come from a
/// second Till instance (a credit) and from an account update (a freeze), each between
/// two transfers of the first instance's writer, which had the account in memory. Both
/// the refusal that would be stale (a debit refused for funds the account now has) and
/// the transfer that would be (a debit of a frozen account) are caught: this fails if
/// the write does not check the accounts' revisions.
#[tokio::test]
async fn a_writer_never_decides_with_an_account_changed_behind_it() {
    let first = spawn_app().await;
    let second = first.another_instance().await;
    let business = first.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&first, k, "GBP").await, wallet(&first, k, "GBP").await);

    for trial in 0..5 {
        let payer = wallet(&first, k, "GBP").await;
        let refused = transfer(&first, k, &payer, &shop, 50).await;
        assert_eq!(refused.status().as_u16(), 422, "trial {trial}: nothing to pay with yet");
        posted(&second, k, &bank, &payer, 100).await;
        let paid = transfer(&first, k, &payer, &shop, 50).await;
        assert_eq!(paid.status().as_u16(), 201, "trial {trial}: the credit made on the other instance counts");

        let frozen = first
            .request(reqwest::Method::PATCH, &format!("/v1/accounts/{payer}"), k)
            .json(&json!({"status": "frozen"}))
            .send()
            .await
            .expect("patch");
        assert_eq!(frozen.status().as_u16(), 200, "trial {trial}");
        let refused = transfer(&first, k, &payer, &shop, 10).await;
        assert_eq!(refused.status().as_u16(), 422, "trial {trial}: a frozen account pays nothing");
        let problem: Value = refused.json().await.expect("problem");
        assert_eq!(problem["code"], "account_not_active", "trial {trial}: {problem}");
        assert_eq!(balance(&second, k, &payer).await, 50, "trial {trial}");
    }
    let report = check(&first, k).await;
    assert_eq!(report["ok"], true, "{report}");
}

/// Two Till instances on one database, as behind a load balancer: nothing serialises
/// their engines but the accounts' row locks and the keys' primary key. Debits racing
/// across both stay within the balance, post and void racing across both resolve a hold
/// once, and one Idempotency-Key sent to both at once moves money once.
#[tokio::test]
async fn two_instances_racing_on_one_account_keep_every_invariant() {
    let first = spawn_app().await;
    let second = first.another_instance().await;
    let business = first.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&first, k, "GBP").await, wallet(&first, k, "GBP").await);
    let instances = [&first, &second];

    for trial in 0..20 {
        let payer = wallet(&first, k, "GBP").await;
        posted(&first, k, &bank, &payer, 100).await;
        let responses = join_all((0..10).map(|i| transfer(instances[i % 2], k, &payer, &shop, 15))).await;
        let statuses: Vec<u16> = responses.iter().map(|response| response.status().as_u16()).collect();
        let succeeded = statuses.iter().filter(|status| **status == 201).count();
        let refused = statuses.iter().filter(|status| **status == 422).count();
        assert_eq!((succeeded, refused), (6, 4), "trial {trial}: {statuses:?}");
        assert_eq!(balance(&second, k, &payer).await, 10, "trial {trial}");
    }

    let payer = wallet(&first, k, "GBP").await;
    posted(&first, k, &bank, &payer, 1_000_000).await;
    for trial in 0..20 {
        let held = hold(&first, k, &payer, &shop, 100, None).await;
        let (post, void) = tokio::join!(resolve(&first, k, &held, "post"), resolve(&second, k, &held, "void"));
        let mut statuses = [post, void];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "trial {trial}");
    }

    for trial in 0..20 {
        let idempotency_key = key();
        let body = json!({ "debit_account_id": payer, "credit_account_id": shop, "amount": 7, "currency": "GBP" });
        let before = transfer_count(&first).await;
        let (a, b) = tokio::join!(
            first.post("/v1/transfers", k, &idempotency_key, &body),
            second.post("/v1/transfers", k, &idempotency_key, &body)
        );
        let (a_status, b_status) = (a.status().as_u16(), b.status().as_u16());
        let (a_body, b_body) = (a.text().await.unwrap_or_default(), b.text().await.unwrap_or_default());
        // One applies it; the other replays the same response, or says it is in flight.
        match (a_status, b_status) {
            (201, 201) => assert_eq!(a_body, b_body, "trial {trial}: a replay is byte-identical"),
            (201, 409) | (409, 201) => {}
            other => panic!("trial {trial}: {other:?} {a_body} {b_body}"),
        }
        assert_eq!(transfer_count(&first).await, before + 1, "trial {trial}: moved once");
    }
    assert_eq!(check(&second, k).await["ok"], true);
}

/// The database ends Till's sessions every 40 ms while transfers flow (a restart or a
/// failover looks like this to Till). No request gets a 500; a 503 is the only failure,
/// and a retry with the same key settles it; every transfer is applied exactly once, and
/// the ledger stays whole.
#[tokio::test]
async fn sessions_ended_under_load_lose_nothing_and_never_answer_500() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let bank = source(&app, k, "GBP").await;
    let wallets = wallets(&app, k, 8).await;
    let before = transfer_count(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (pool, stop) = (app.owner_pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ended = 0_i64;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                ended += sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name = 'till'
                        AND backend_type = 'client backend') ended",
                )
                .fetch_one(&pool)
                .await
                .expect("ending sessions");
            }
            ended
        })
    };
    let (app_ref, bank_ref) = (&app, &bank);
    let clients = wallets.iter().map(|wallet| async move {
        let mut statuses = Vec::new();
        for _ in 0..25 {
            let (idempotency_key, body) = (key(), transfer_body(bank_ref, wallet, 10));
            loop {
                let status = app_ref.post("/v1/transfers", k, &idempotency_key, &body).await.status().as_u16();
                statuses.push(status);
                if status != 503 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        statuses
    });
    let statuses: Vec<u16> = join_all(clients).await.into_iter().flatten().collect();
    stop.store(true, Ordering::SeqCst);
    let ended = killer.await.expect("the session killer");
    assert!(ended > 0, "no session was ended, so nothing was tested");
    assert!(statuses.iter().all(|status| matches!(status, 201 | 503)), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 201).count(), 8 * 25);
    assert_each_paid_once(&app, k, &wallets, before).await;
}

async fn wallets(app: &till_testkit::TestApp, credential: &str, count: usize) -> Vec<String> {
    let mut wallets = Vec::with_capacity(count);
    for _ in 0..count {
        wallets.push(wallet(app, credential, "GBP").await);
    }
    wallets
}

/// Each of `wallets` received 25 transfers of 10, each applied exactly once, since the
/// business had `before` transfers; and the ledger is whole.
async fn assert_each_paid_once(app: &till_testkit::TestApp, credential: &str, wallets: &[String], before: i64) {
    let expected = i64::try_from(wallets.len() * 25).expect("a small count");
    assert_eq!(transfer_count(app).await, before + expected, "each transfer applied exactly once");
    for wallet in wallets {
        assert_eq!(balance(app, credential, wallet).await, 250);
    }
    assert_eq!(check(app, credential).await["ok"], true);
}

/// Sessions this test's database saw ended by `pg_terminate_backend` (each test has its
/// own database, so these are this test's).
async fn sessions_killed(app: &till_testkit::TestApp) -> i64 {
    sqlx::query_scalar("SELECT sessions_killed FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&app.owner_pool)
        .await
        .expect("pg_stat_database")
}

/// The session ends after the batch's write and before its COMMIT (a fail point in the
/// engine, armed for this business only). The request gets a 503, never a 500; nothing
/// of it is stored, so nothing moved; and the client's retry with the same key applies
/// it once, and a further retry replays it.
#[tokio::test]
async fn a_session_lost_before_commit_is_a_503_and_the_retry_applies_it_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let (idempotency_key, body) = (key(), transfer_body(&bank, &shop, 250));
    let before = (transfer_count(&app).await, sessions_killed(&app).await);

    fail::cfg("ledger::session_lost_before_commit", &format!("return({})", business.id)).expect("arming");
    let lost = app.post("/v1/transfers", k, &idempotency_key, &body).await;
    fail::remove("ledger::session_lost_before_commit");
    assert_eq!(lost.status().as_u16(), 503, "{:?}", lost.text().await);
    assert_eq!(sessions_killed(&app).await, before.1 + 1, "the fail point ended the batch's session");
    assert_eq!(transfer_count(&app).await, before.0, "nothing committed");
    assert_eq!(balance(&app, k, &shop).await, 0);

    let applied = app.post("/v1/transfers", k, &idempotency_key, &body).await;
    assert_eq!(applied.status().as_u16(), 201);
    assert!(applied.headers().get("idempotent-replayed").is_none(), "the first answer that committed");
    let replayed = app.post("/v1/transfers", k, &idempotency_key, &body).await;
    assert_eq!(replayed.status().as_u16(), 201);
    assert_eq!(replayed.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(transfer_count(&app).await, before.0 + 1, "applied exactly once");
    assert_eq!(balance(&app, k, &shop).await, 250);
    assert_eq!(check(&app, k).await["ok"], true);
}

/// Every attempt of a batch finds an account changed under it (a fail point in the
/// engine makes the write report so, for this business only, after writing): after its
/// retries the request gets a 503 saying to retry, never a 500; each attempt rolled back,
/// so nothing moved and nothing was stored under the key; and the client's retry with the
/// same key applies it once.
#[tokio::test]
async fn a_batch_stale_on_every_attempt_is_a_503_and_the_retry_applies_it_once() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, shop) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let (idempotency_key, body) = (key(), transfer_body(&bank, &shop, 250));
    let before = transfer_count(&app).await;

    fail::cfg("ledger::write_stale", &format!("return({})", business.id)).expect("arming");
    let stale = app.post("/v1/transfers", k, &idempotency_key, &body).await;
    fail::remove("ledger::write_stale");
    assert_eq!(stale.status().as_u16(), 503);
    assert_eq!(problem(stale).await["code"], "service_unavailable");
    assert_eq!(transfer_count(&app).await, before, "every attempt rolled back");
    assert_eq!(balance(&app, k, &shop).await, 0);

    let applied = app.post("/v1/transfers", k, &idempotency_key, &body).await;
    assert_eq!(applied.status().as_u16(), 201);
    assert!(applied.headers().get("idempotent-replayed").is_none(), "nothing was stored under the key");
    assert_eq!(transfer_count(&app).await, before + 1, "applied exactly once");
    assert_eq!(balance(&app, k, &shop).await, 250);
    assert_eq!(check(&app, k).await["ok"], true);
}

/// The writer's kept connection dies while it waits between two batches (a fail point
/// ends its session each time a batch would reuse it). The batch begins again on a fresh
/// connection: under a steady stream of transfers, every one succeeds, once.
#[tokio::test]
async fn a_kept_connection_that_died_between_batches_costs_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let bank = source(&app, k, "GBP").await;
    let wallets = wallets(&app, k, 8).await;
    let (before, killed_before) = (transfer_count(&app).await, sessions_killed(&app).await);

    fail::cfg("ledger::kept_connection_lost", &format!("return({})", business.id)).expect("arming");
    let (app_ref, bank_ref) = (&app, &bank);
    let clients = wallets.iter().map(|wallet| async move {
        let mut statuses = Vec::new();
        for _ in 0..25 {
            statuses.push(transfer(app_ref, k, bank_ref, wallet, 10).await.status().as_u16());
        }
        statuses
    });
    let statuses: Vec<u16> = join_all(clients).await.into_iter().flatten().collect();
    fail::remove("ledger::kept_connection_lost");

    assert!(sessions_killed(&app).await > killed_before, "no kept connection was reused, so nothing was tested");
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    assert_each_paid_once(&app, k, &wallets, before).await;
}
