//! The events backbone's embedded bus: what the services publish, in order per resource,
//! moved from their outboxes to the event log exactly once, even with several relays and
//! relays that die mid-move.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;
use till_testkit::{problem, spawn_app, TestApp};

use crate::bus_helpers::{create_effects_table, effects, record_effect};
use crate::ledger_helpers::*;

/// Polls the events API until `count` events of the business are visible.
async fn events(app: &TestApp, credential: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: Value = app.get("/v1/events?limit=100", credential).await.json().await.expect("json");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= count {
            return data;
        }
        assert!(Instant::now() < deadline, "only {} of {count} events arrived: {page}", data.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ledger_and_key_changes_publish_events_in_order_per_resource() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice, shop) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let funding = app.post("/v1/transfers", k, &key(), &transfer_body(&bank, &alice, 1_000)).await;
    let funding_request = funding.headers()["request-id"].to_str().expect("ascii").to_string();
    let funding: Value = funding.json().await.expect("json");
    let held = hold(&app, k, &alice, &shop, 300, None).await;
    app.post(&format!("/v1/transfers/{held}/post"), k, &key(), &json!({"amount": 200})).await;
    let voided = hold(&app, k, &alice, &shop, 50, None).await;
    app.post(&format!("/v1/transfers/{voided}/void"), k, &key(), &json!({})).await;
    let payment = posted(&app, k, &alice, &shop, 100).await;
    let reversal: Value =
        app.post(&format!("/v1/transfers/{payment}/reverse"), k, &key(), &json!({})).await.json().await.expect("json");
    let response = app
        .request(reqwest::Method::PATCH, &format!("/v1/accounts/{shop}"), k)
        .json(&json!({"name": "Shop settlement"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 200);

    // The owner key, 3 accounts and an update, the funding, hold + post, hold + void,
    // the payment, and its reversal (created) + the payment's reversed.
    let all = events(&app, k, 13).await;
    assert_eq!(all.len(), 13);
    let mut by_resource: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for event in all.iter().rev() {
        by_resource
            .entry(event["resource_id"].as_str().expect("resource").to_string())
            .or_default()
            .push((event["sequence"].as_i64().expect("sequence"), event["type"].as_str().expect("type").to_string()));
        assert_eq!(event["business_id"], business.id.as_str());
        assert_eq!(event["version"], 1);
        assert!(event["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
    }
    let types = |resource: &str| by_resource.get(resource).cloned().unwrap_or_default();
    assert_eq!(types(&held), vec![(1, "transfer.created".into()), (2, "transfer.posted".into())]);
    assert_eq!(types(&voided), vec![(1, "transfer.created".into()), (2, "transfer.voided".into())]);
    assert_eq!(types(&payment), vec![(1, "transfer.created".into()), (2, "transfer.reversed".into())]);
    assert_eq!(types(reversal["id"].as_str().expect("id")), vec![(1, "transfer.created".into())]);
    assert_eq!(types(&shop), vec![(1, "account.created".into()), (2, "account.updated".into())]);
    let owner_keys = by_resource
        .iter()
        .filter(|(id, list)| id.starts_with("key_") && list == &&vec![(1, "api_key.created".to_string())])
        .count();
    assert_eq!(owner_keys, 1);

    let funding_event = all.iter().find(|event| event["resource_id"] == funding["id"]).expect("funding event");
    assert_eq!(funding_event["request_id"], funding_request.as_str(), "events carry the request id");
    assert_eq!(funding_event["data"]["amount"], 1_000, "data is the resource");
    let posted_event = all.iter().find(|e| e["resource_id"] == held.as_str() && e["sequence"] == 2).expect("posted");
    assert_eq!(posted_event["data"]["posted_amount"], 200);

    let one = app.get(&format!("/v1/events/{}", funding_event["id"].as_str().expect("id")), k).await;
    assert_eq!(one.status().as_u16(), 200);
    let filtered: Value = app.get("/v1/events?type=transfer.voided", k).await.json().await.expect("json");
    assert_eq!(filtered["data"].as_array().expect("data").len(), 1);
    let resource: Value = app.get(&format!("/v1/events?resource_id={held}"), k).await.json().await.expect("json");
    let sequences: Vec<i64> =
        resource["data"].as_array().expect("data").iter().filter_map(|e| e["sequence"].as_i64()).collect();
    assert_eq!(sequences, vec![1, 2], "one resource's events in sequence order");
    let bad = app.get("/v1/events?type=transfer.exploded", k).await;
    assert_eq!(problem(bad).await["param"], "type");

    // Another business sees none of it.
    let other = app.create_business("IN").await;
    let theirs = events(&app, &other.owner_key, 1).await;
    assert!(theirs.iter().all(|event| event["business_id"] == other.id.as_str()));
    let foreign = app.get(&format!("/v1/events/{}", funding_event["id"].as_str().expect("id")), &other.owner_key).await;
    assert_eq!(foreign.status().as_u16(), 404);
}

async fn post_hold(app: &TestApp, credential: &str, held: &str) -> u16 {
    app.post(&format!("/v1/transfers/{held}/post"), credential, &key(), &json!({})).await.status().as_u16()
}

async fn moved_in_order(app: &TestApp) -> (i64, i64) {
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events.log").fetch_one(&app.owner_pool).await.expect("count");
    // Per resource, positions must follow sequences: no later event before an earlier one.
    let disorder: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT sequence, lag(sequence) OVER (PARTITION BY resource_id ORDER BY position) AS previous
               FROM events.log) s
          WHERE previous IS NOT NULL AND sequence <> previous + 1",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("order");
    (total, disorder)
}

/// Drains every outbox until nothing waits. Another relay (the server's own, or one that
/// died and whose connection PostgreSQL has not noticed yet) may hold an outbox for a
/// moment, and then a drain moves nothing; so drain until empty, within a deadline.
async fn drain_all(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for outbox in till_events::relay::outboxes(&app.pool).await.expect("outboxes") {
            till_events::relay::drain(&app.pool, &outbox).await.expect("drain");
        }
        if outbox_waiting(app).await == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the outboxes never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox_waiting(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT (SELECT count(*) FROM ledger.outbox) + (SELECT count(*) FROM access.outbox)")
        .fetch_one(&app.owner_pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn concurrent_relays_publish_each_event_once_and_in_order() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice, shop) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    posted(&app, k, &bank, &alice, 1_000_000).await;
    let produce = async {
        for _ in 0..20 {
            let holds: Vec<String> = join_all((0..5).map(|_| hold(&app, k, &alice, &shop, 10, None))).await;
            join_all(holds.iter().map(|held| post_hold(&app, k, held))).await;
        }
    };
    let relays = async {
        for _ in 0..40 {
            let drains = (0..4).map(|_| till_events::relay::drain(&app.pool, "ledger.outbox"));
            for outcome in join_all(drains).await {
                outcome.expect("drain");
            }
        }
    };
    tokio::join!(produce, relays);
    drain_all(&app).await;
    let (total, disorder) = moved_in_order(&app).await;
    // 1 key + 3 accounts + funding + 100 holds x (created, posted).
    assert_eq!(total, 205);
    assert_eq!(disorder, 0);
    assert_eq!(outbox_waiting(&app).await, 0);
}

#[tokio::test]
async fn a_relay_that_dies_mid_move_loses_nothing_and_duplicates_nothing() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    let mut produced = 3; // the owner key and two accounts
    for round in 0..25 {
        posted(&app, k, &bank, &alice, 10).await;
        produced += 1;
        // A relay that moves events and then dies before committing: its connection
        // drops mid-transaction, PostgreSQL rolls the move back, and the events are
        // still in the outbox for the next relay.
        let mut doomed = sqlx::PgConnection::connect_with(&app.database.options).await.expect("connect");
        sqlx::query("SET ROLE till_app").execute(&mut doomed).await.expect("role");
        sqlx::query("BEGIN").execute(&mut doomed).await.expect("begin");
        let _moved: i32 = sqlx::query_scalar("SELECT events.relay('ledger.outbox', 1000)")
            .fetch_one(&mut doomed)
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        drop(doomed);
    }
    drain_all(&app).await;
    let (total, disorder) = moved_in_order(&app).await;
    assert_eq!((total, disorder), (produced, 0), "nothing lost, nothing twice, in order");
    let (waiting, _) = till_events::relay::backlog(&app.pool, "ledger.outbox").await.expect("backlog");
    assert_eq!(waiting, 0);
}

#[test]
fn the_catalogue_documents_every_event_type() {
    let catalogue =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/EVENTS.md")).expect("docs/EVENTS.md");
    for event_type in till_outbox::EventType::ALL {
        let row = format!(
            "| `{}` | {} | `{}` | {} |",
            event_type.name(),
            event_type.version(),
            event_type.data_schema(),
            event_type.read_role().as_str()
        );
        assert!(catalogue.contains(&row), "docs/EVENTS.md lacks the row {row}");
    }
}

#[tokio::test]
async fn event_data_schemas_are_in_the_openapi_document() {
    let app = spawn_app().await;
    for event_type in till_outbox::EventType::ALL {
        assert!(
            app.openapi["components"]["schemas"][event_type.data_schema()].is_object(),
            "{}",
            event_type.data_schema()
        );
    }
    assert!(app.openapi["components"]["schemas"]["EventBody"].is_object());
}

/// Every event delivered three times, shuffled, many at once: each effect happens once.
#[tokio::test]
async fn a_consumer_applies_each_event_once_however_often_it_arrives() {
    use till_events::consumer::{advance, handle_once, poll, Handled};
    let app = spawn_app().await;
    create_effects_table(&app).await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    for _ in 0..20 {
        posted(&app, k, &bank, &alice, 5).await;
    }
    drain_all(&app).await;
    let events = poll(&app.pool, "test-consumer", 1_000).await.expect("poll");
    assert_eq!(events.len(), 23, "the owner key, two accounts, twenty transfers");

    let mut copies: Vec<&till_events::consumer::LoggedEvent> = events.iter().chain(&events).chain(&events).collect();
    // A deterministic shuffle (an LCG), so a failure can be reproduced.
    let mut state = 0x2545_f491_u64;
    for index in (1..copies.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        copies.swap(index, (state >> 33) as usize % (index + 1));
    }
    let outcomes = join_all(copies.iter().map(|event| async {
        let body = event.body();
        handle_once(&app.pool, "test-consumer", &body, &record_effect).await
    }))
    .await;
    let applied = outcomes.iter().filter(|outcome| matches!(outcome, Ok(Handled::Applied))).count();
    let duplicates = outcomes.iter().filter(|outcome| matches!(outcome, Ok(Handled::Duplicate))).count();
    assert_eq!((applied, duplicates), (23, 46), "{outcomes:?}");
    assert_eq!(effects(&app).await, (23, 23), "each effect exactly once");

    let last = events.last().expect("events").position;
    advance(&app.pool, "test-consumer", last).await.expect("advance");
    advance(&app.pool, "test-consumer", 1).await.expect("a stale advance");
    assert!(poll(&app.pool, "test-consumer", 1_000).await.expect("poll").is_empty(), "the cursor never moves back");
}

/// A subscriber on the embedded bus gets the types it asked for, once each, in order per
/// resource, and its cursor moves past the rest.
#[tokio::test]
async fn a_subscriber_on_the_embedded_bus_gets_what_it_asked_for() {
    use till_events::bus::{subscribe, Bus, Subscription};
    let app = spawn_app().await;
    create_effects_table(&app).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let subscription = Subscription::new("transfers-only", &["transfer.*"]).expect("subscription");
    let consumer = tokio::spawn(subscribe(
        app.pool.clone(),
        Bus::Embedded,
        subscription,
        std::sync::Arc::new(record_effect),
        stopped,
    ));
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice, shop) =
        (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    posted(&app, k, &bank, &alice, 1_000).await;
    for _ in 0..10 {
        let held = hold(&app, k, &alice, &shop, 10, None).await;
        post_hold(&app, k, &held).await;
    }
    // 1 funding + 10 holds created + 10 posted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while effects(&app).await.1 < 21 {
        assert!(Instant::now() < deadline, "only {:?} effects", effects(&app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(effects(&app).await, (21, 21), "transfers once each, nothing else");
    assert_eq!(crate::bus_helpers::effects_out_of_order(&app).await, 0);
    let _ = stop.send(true);
    consumer.await.expect("the consumer stops");
    let lag: i64 = sqlx::query_scalar("SELECT behind FROM events.consumer_lag() WHERE consumer = 'transfers-only'")
        .fetch_one(&app.pool)
        .await
        .expect("lag");
    assert_eq!(lag, 0, "the cursor moved past the events it did not want");
}

/// A handler that fails on the embedded bus: the events before the failing one are
/// applied (the failed batch is redone one by one), the cursor stops at the failing
/// event, nothing after it runs out of order, and once the handler works everything is
/// applied exactly once.
#[tokio::test]
async fn a_failing_handler_on_the_embedded_bus_holds_the_cursor_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use till_events::bus::{consume_available, Handler, Subscription};
    use till_events::consumer::Effect;
    use till_outbox::envelope::EventBody;

    /// Fails every transfer but the first while broken.
    struct FailAfterFirstTransfer {
        broken: AtomicBool,
        first: std::sync::Mutex<Option<String>>,
    }
    impl Handler for FailAfterFirstTransfer {
        fn handle<'c>(&'c self, connection: &'c mut sqlx::PgConnection, event: &'c EventBody) -> Effect<'c> {
            if event.event_type == "transfer.created" && self.broken.load(Ordering::SeqCst) {
                let mut first = self.first.lock().expect("lock");
                match first.as_deref() {
                    None => *first = Some(event.resource_id.clone()),
                    Some(resource) if resource != event.resource_id => {
                        return Box::pin(async { Err("a later transfer fails".into()) });
                    }
                    Some(_) => {}
                }
            }
            record_effect(connection, event)
        }
    }

    let app = spawn_app().await;
    create_effects_table(&app).await;
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    for _ in 0..4 {
        posted(&app, k, &bank, &alice, 5).await;
    }
    drain_all(&app).await;
    let subscription = Subscription::new("holds-cursor", &["#"]).expect("subscription");
    let handler = FailAfterFirstTransfer { broken: AtomicBool::new(true), first: std::sync::Mutex::new(None) };

    let failed = consume_available(&app.pool, &subscription, &handler).await;
    assert!(failed.is_err(), "the failure is reported");
    // The key, two accounts and the first transfer; nothing after the failing event.
    assert_eq!(effects(&app).await, (4, 4));
    let behind: i64 = sqlx::query_scalar("SELECT behind FROM events.consumer_lag() WHERE consumer = 'holds-cursor'")
        .fetch_one(&app.pool)
        .await
        .expect("lag");
    assert_eq!(behind, 3, "the cursor stops before the failing event");

    handler.broken.store(false, Ordering::SeqCst);
    consume_available(&app.pool, &subscription, &handler).await.expect("the rest");
    assert_eq!(effects(&app).await, (7, 7), "every event once");
    assert_eq!(crate::bus_helpers::effects_out_of_order(&app).await, 0);
}

/// The relay drains whatever outboxes the migrations registered: a new service's outbox
/// needs no list in the code to join.
#[tokio::test]
async fn an_outbox_a_migration_registers_is_relayed_without_a_list_in_the_code() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let business_id = uuid::Uuid::parse_str(business.id.trim_start_matches("biz_")).expect("uuid");
    // What a new service's migration does.
    sqlx::query("CREATE SCHEMA widgets").execute(&app.owner_pool).await.expect("schema");
    sqlx::query("GRANT USAGE ON SCHEMA widgets TO till_app").execute(&app.owner_pool).await.expect("grant");
    sqlx::query("SELECT events.create_outbox('widgets')").execute(&app.owner_pool).await.expect("outbox");
    let registered = till_events::relay::outboxes(&app.pool).await.expect("outboxes");
    assert!(registered.contains(&"widgets.outbox".to_string()), "{registered:?}");
    let event = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO widgets.outbox (id, type, version, business_id, resource_id, sequence, occurred_at, data)
         VALUES ($1, 'account.created', 1, $2, 'wid_1', 1, now(), '{}')",
    )
    .bind(event)
    .bind(business_id)
    .execute(&app.owner_pool)
    .await
    .expect("an event in the new outbox");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logged: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events.log WHERE id = $1)")
            .bind(event)
            .fetch_one(&app.owner_pool)
            .await
            .expect("log");
        if logged {
            break;
        }
        assert!(Instant::now() < deadline, "the new outbox's event was never relayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The services' registrations and the database agree: every outbox a migration
/// registered belongs to a listed service (none is orphaned when a service goes), every
/// outbox a service declares is registered (its events are relayed), and no two services
/// share a name or a schema.
#[tokio::test]
async fn the_registered_outboxes_are_exactly_the_services_outboxes() {
    let app = spawn_app().await;
    let registered: std::collections::BTreeSet<String> =
        till_events::relay::outboxes(&app.pool).await.expect("outboxes").into_iter().collect();
    let declared: std::collections::BTreeSet<String> =
        till_server::SERVICES.iter().filter_map(|service| service.outbox).map(str::to_string).collect();
    assert_eq!(registered, declared);
    let names: std::collections::BTreeSet<_> = till_server::SERVICES.iter().map(|service| service.name).collect();
    let schemas: std::collections::BTreeSet<_> =
        till_server::SERVICES.iter().map(|service| service.migrations.schema).collect();
    assert_eq!(names.len(), till_server::SERVICES.len(), "service names are unique");
    assert_eq!(schemas.len(), till_server::SERVICES.len(), "each service has its own schema");
    for service in till_server::SERVICES {
        if let Some(outbox) = service.outbox {
            assert_eq!(
                outbox,
                format!("{}.outbox", service.migrations.schema),
                "{} publishes from its own schema",
                service.name
            );
        }
    }
}
