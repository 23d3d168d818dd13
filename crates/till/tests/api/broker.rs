//! The RabbitMQ bus against a real broker: a private node per test binary (and one of
//! its own for the test that stops it), started by the harness.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use sqlx::PgConnection;
use till_events::broker::{self, BrokerConfig};
use till_events::bus::{subscribe, Bus, Handler, Subscription};
use till_events::consumer::Effect;
use till_kit::Secret;
use till_outbox::envelope::EventBody;
use till_testkit::broker::{shared_broker_url, BrokerNode};
use till_testkit::{spawn_app_with, test_config, TestApp};
use tokio::sync::watch;

use crate::bus_helpers::*;
use crate::ledger_helpers::*;

/// A configuration of its own for each test (exchange and consumer names are unique), so
/// tests sharing the node never see each other's events. Retries are quick.
fn broker_config(url: String) -> BrokerConfig {
    let mut config = BrokerConfig::new(Secret::new(url));
    config.exchange = format!("till.test.{}", uuid::Uuid::now_v7().simple());
    config.retry_delays = vec![Duration::from_millis(100), Duration::from_millis(300)];
    config
}

fn consumer_name() -> String {
    // The random end of a UUIDv7 (its start is the time, shared by names made together).
    format!("c-{}", uuid::Uuid::now_v7().simple().to_string().chars().skip(20).collect::<String>())
}

async fn app_on(config: &BrokerConfig) -> TestApp {
    let mut app_config = test_config();
    app_config.bus = Bus::RabbitMq(config.clone());
    let app = spawn_app_with(app_config, Default::default()).await;
    create_effects_table(&app).await;
    app
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("stops in time").expect("joins");
    }
}

fn start_consumer(app: &TestApp, config: &BrokerConfig, name: &str, handler: Arc<dyn Handler>) -> Running {
    let (stop, stopped) = watch::channel(false);
    let subscription = Subscription::new(name, &["#"]).expect("subscription");
    let task = tokio::spawn(subscribe(app.pool.clone(), Bus::RabbitMq(config.clone()), subscription, handler, stopped));
    Running { stop, task }
}

/// Declares the consumer's queues before anything is published (a queue receives only
/// what is published after it is bound).
async fn declare(config: &BrokerConfig, name: &str) {
    let connection = broker::connect(config, "test-declare").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    broker::declare_consumer(&channel, config, name, &["#".to_string()]).await.expect("declare");
    connection.close(200, "declared".into()).await.expect("close");
}

/// Publishes to the test's exchange as a producer would, and waits for the confirm.
async fn publish(
    channel: &lapin::Channel,
    config: &BrokerConfig,
    routing_key: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) {
    channel
        .basic_publish(
            config.exchange.as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

async fn publish_event(channel: &lapin::Channel, config: &BrokerConfig, event: &EventBody) {
    let body = serde_json::to_vec(event).expect("json");
    publish(channel, config, &event.event_type, &body, broker::event_properties(event, 1, None)).await;
}

async fn some_traffic(app: &TestApp, transfers: usize) {
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(app, k, "GBP").await, wallet(app, k, "GBP").await);
    join_all((0..transfers).map(|_| posted(app, k, &bank, &alice, 7))).await;
}

#[tokio::test]
async fn every_event_reaches_a_rabbitmq_consumer_once_and_in_order() {
    let config = broker_config(shared_broker_url().expect("broker"));
    let app = app_on(&config).await;
    let name = consumer_name();
    declare(&config, &name).await;
    let consumer = start_consumer(&app, &config, &name, Arc::new(record_effect));
    some_traffic(&app, 40).await;
    wait_for_every_effect(&app, Duration::from_secs(30)).await;
    assert_eq!(effects_out_of_order(&app).await, 0, "per-resource order");
    consumer.stop().await;
}

/// Each event published three times, shuffled: each effect happens once.
#[tokio::test]
async fn each_event_delivered_three_times_shuffled_is_applied_once() {
    let config = broker_config(shared_broker_url().expect("broker"));
    // The app's own publisher is not running (embedded bus); the test publishes.
    let app = till_testkit::spawn_app().await;
    create_effects_table(&app).await;
    some_traffic(&app, 20).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged_events(&app).await < 23 {
        assert!(Instant::now() < deadline, "events never reached the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = till_events::consumer::poll(&app.pool, "test-reader", 1_000).await.expect("log");
    let mut copies: Vec<EventBody> = logged.iter().chain(&logged).chain(&logged).map(|event| event.body()).collect();
    let mut state = 0x9e37_79b9_u64;
    for index in (1..copies.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        copies.swap(index, (state >> 33) as usize % (index + 1));
    }
    let name = consumer_name();
    declare(&config, &name).await;
    let connection = broker::connect(&config, "test-publisher").await.expect("connect");
    let channel = broker::confirm_channel(&connection).await.expect("channel");
    for event in &copies {
        publish_event(&channel, &config, event).await;
    }
    let consumer = start_consumer(&app, &config, &name, Arc::new(record_effect));
    wait_for_every_effect(&app, Duration::from_secs(30)).await;
    // Give the remaining copies time to arrive and be skipped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(effects(&app).await, (23, 23));
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM events.inbox WHERE consumer = $1")
        .bind(&name)
        .fetch_one(&app.owner_pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 23);
    consumer.stop().await;
}

/// The publisher dies at 25 different moments of a batch (mid-publish, mid-confirm,
/// before the cursor moves): nothing is lost, and the copies it published before dying
/// are skipped by the consumer.
#[tokio::test]
async fn a_publisher_that_dies_mid_batch_loses_nothing() {
    let mut config = broker_config(shared_broker_url().expect("broker"));
    config.publish_rows_max = 20;
    let app = till_testkit::spawn_app().await;
    create_effects_table(&app).await;
    let name = consumer_name();
    declare(&config, &name).await;
    let consumer = start_consumer(&app, &config, &name, Arc::new(record_effect));
    let connection = broker::connect(&config, "test-publisher").await.expect("connect");
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    // Rounds until 25 publishers have died before finishing (a fast machine finishes some
    // rounds within their time), each dying at a different moment of its batch.
    let (mut crashes, mut rounds) = (0, 0_u64);
    while crashes < 25 {
        assert!(rounds < 100, "only {crashes} publishers died in {rounds} rounds");
        join_all((0..4).map(|_| posted(&app, k, &bank, &alice, 3))).await;
        let channel = broker::confirm_channel(&connection).await.expect("channel");
        let publishing = broker::publisher::publish_all(&app.pool, &channel, &config);
        // Dropping the future is the crash: its transaction rolls back, its cursor stays.
        if tokio::time::timeout(Duration::from_micros(100 + (rounds % 25) * 150), publishing).await.is_err() {
            crashes += 1;
        }
        rounds += 1;
        drop(channel);
    }
    let produced = 3 + 4 * i64::try_from(rounds).expect("rounds");
    let channel = broker::confirm_channel(&connection).await.expect("channel");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        broker::publisher::publish_all(&app.pool, &channel, &config).await.expect("publish");
        let (_, distinct) = effects(&app).await;
        if distinct == logged_events(&app).await && distinct >= produced {
            break;
        }
        assert!(Instant::now() < deadline, "effects {:?} of {}", effects(&app).await, logged_events(&app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (total, distinct) = effects(&app).await;
    assert_eq!(total, distinct, "no effect twice");
    assert_eq!(distinct, produced, "1 key + 2 accounts + 4 transfers a round");
    consumer.stop().await;
}

/// A handler that fails: retried after each backoff, then dead-lettered with its error;
/// the CLI's replay sends it back, and once the handler works it is applied once.
#[tokio::test]
async fn a_failing_event_is_retried_with_backoff_then_dead_lettered_and_can_be_replayed() {
    let mut config = broker_config(shared_broker_url().expect("broker"));
    // Backoffs well apart from the moments between two tries of one delivery (below).
    config.retry_delays = vec![Duration::from_millis(500), Duration::from_millis(1_000)];
    let app = app_on(&config).await;
    let name = consumer_name();
    declare(&config, &name).await;
    let broken = Arc::new(AtomicBool::new(true));
    let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let handler = Arc::new(FailTransfersWhileBroken { broken: broken.clone(), attempts: attempts.clone() });
    let consumer = start_consumer(&app, &config, &name, handler);
    some_traffic(&app, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = broker::dead_letters::list(&config, &name, 10).await.expect("list");
        if !letters.is_empty() {
            break letters;
        }
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.event_type.as_deref(), Some("transfer.created"));
    assert_eq!(letter.attempts, 3, "the first delivery and two retries");
    assert!(letter.error.as_deref().unwrap_or_default().contains("the ledger consumer is broken"), "{letter:?}");
    // A failing event may be tried twice per delivery (in its batch, then alone), moments
    // apart: calls less than 250 ms apart are one attempt (a loaded CI machine has been
    // seen to take 55 ms between the two).
    let calls = attempts.lock().expect("attempts").clone();
    let mut times: Vec<Instant> = Vec::new();
    for call in calls {
        if times.last().is_none_or(|last| call - *last > Duration::from_millis(250)) {
            times.push(call);
        }
    }
    assert_eq!(times.len(), 3, "{times:?}");
    assert!(times[1] - times[0] >= Duration::from_millis(500), "the first backoff");
    assert!(times[2] - times[1] >= Duration::from_millis(1_000), "the second backoff");
    // The other events were not held up by the failing one.
    assert_eq!(effects(&app).await, (3, 3), "the key and the two accounts");
    // Listing leaves the letters where they are.
    assert_eq!(broker::dead_letters::list(&config, &name, 10).await.expect("list").len(), 1);

    broken.store(false, Ordering::SeqCst);
    let replayed = broker::dead_letters::replay(&config, &name, None).await.expect("replay");
    assert_eq!(replayed, vec![letter.id.clone()]);
    wait_for_every_effect(&app, Duration::from_secs(20)).await;
    assert!(broker::dead_letters::list(&config, &name, 10).await.expect("list").is_empty());
    consumer.stop().await;
}

struct FailTransfersWhileBroken {
    broken: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl Handler for FailTransfersWhileBroken {
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        if event.event_type == "transfer.created" && self.broken.load(Ordering::SeqCst) {
            self.attempts.lock().expect("attempts").push(Instant::now());
            return Box::pin(async { Err("the ledger consumer is broken".into()) });
        }
        record_effect(connection, event)
    }
}

struct CountCalls(Arc<AtomicU32>);

impl Handler for CountCalls {
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        self.0.fetch_add(1, Ordering::SeqCst);
        record_effect(connection, event)
    }
}

/// Bodies that are not events are dead-lettered at once (no retry can fix them), and the
/// consumer goes on.
#[tokio::test]
async fn a_message_that_is_not_an_event_is_dead_lettered_at_once() {
    let config = broker_config(shared_broker_url().expect("broker"));
    let app = app_on(&config).await;
    let name = consumer_name();
    declare(&config, &name).await;
    let calls = Arc::new(AtomicU32::new(0));
    let handler = Arc::new(CountCalls(calls.clone()));
    let consumer = start_consumer(&app, &config, &name, handler);
    let connection = broker::connect(&config, "test-hostile").await.expect("connect");
    let channel = broker::confirm_channel(&connection).await.expect("channel");
    let hostile: [&[u8]; 4] = [
        b"not json",
        br#"{"id": "evt_0", "type": "transfer.created"}"#,
        br#"{"id":"tr_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0","type":"transfer.created","version":1,"business_id":"biz_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0","resource_id":"tr_x","sequence":1,"occurred_at":"2026-11-22T10:00:00Z","request_id":null,"data":{}}"#,
        br#"{"id":"evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0","type":"transfer.created","version":0,"business_id":"biz_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0","resource_id":"tr_x","sequence":0,"occurred_at":"2026-11-22T10:00:00Z","request_id":null,"data":{}}"#,
    ];
    for body in hostile {
        publish(&channel, &config, "transfer.created", body, lapin::BasicProperties::default()).await;
    }
    some_traffic(&app, 2).await;
    wait_for_every_effect(&app, Duration::from_secs(20)).await;
    let letters = broker::dead_letters::list(&config, &name, 10).await.expect("list");
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert!(letters.iter().all(|letter| letter.event_type.is_none() && letter.error.is_some()), "{letters:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 5, "the handler saw only the real events");
    consumer.stop().await;
}

/// The broker goes away while producers keep writing: no request fails, and after it
/// returns every event is published and consumed.
#[tokio::test]
async fn producers_never_fail_while_the_broker_is_down() {
    let mut node = BrokerNode::start().await.expect("a broker of its own");
    let config = broker_config(node.url());
    let app = app_on(&config).await;
    let name = consumer_name();
    declare(&config, &name).await;
    let consumer = start_consumer(&app, &config, &name, Arc::new(record_effect));
    let business = app.create_business("GB").await;
    let k = &business.owner_key;
    let (bank, alice) = (source(&app, k, "GBP").await, wallet(&app, k, "GBP").await);
    for _ in 0..10 {
        posted(&app, k, &bank, &alice, 5).await;
    }
    wait_for_every_effect(&app, Duration::from_secs(30)).await;

    node.stop().await.expect("stop the broker");
    for _ in 0..30 {
        let response = transfer(&app, k, &bank, &alice, 5).await;
        assert_eq!(response.status().as_u16(), 201, "a producer failed while the broker was down");
    }
    let behind: i64 =
        sqlx::query_scalar("SELECT behind FROM events.consumer_lag() WHERE consumer = 'rabbitmq-publisher'")
            .fetch_one(&app.pool)
            .await
            .expect("lag");
    assert!(behind > 0, "the events wait in the log while the broker is away");

    node.restart().await.expect("restart the broker");
    for _ in 0..10 {
        posted(&app, k, &bank, &alice, 5).await;
    }
    wait_for_every_effect(&app, Duration::from_secs(60)).await;
    assert_eq!(effects(&app).await.1, 53, "1 key + 2 accounts + 50 transfers");
    assert_eq!(effects_out_of_order(&app).await, 0);
    consumer.stop().await;
}

/// A consumer whose database is out of reach does not burn the event's attempts: nothing
/// is retried or dead-lettered, and the message waits in the queue for the database.
#[tokio::test]
async fn a_database_outage_does_not_dead_letter_events() {
    let config = broker_config(shared_broker_url().expect("broker"));
    let app = till_testkit::spawn_app().await;
    let name = consumer_name();
    declare(&config, &name).await;
    // A pool for a database nobody listens for: every connection attempt is refused.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(app.database.options.clone().port(closed_port));
    let (stop, stopped) = watch::channel(false);
    let subscription = Subscription::new(&name, &["#"]).expect("subscription");
    let consumer = tokio::spawn(subscribe(
        unreachable,
        Bus::RabbitMq(config.clone()),
        subscription,
        Arc::new(record_effect),
        stopped,
    ));
    let event: EventBody = serde_json::from_value(serde_json::json!({
        "id": "evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "type": "transfer.created", "version": 1,
        "business_id": "biz_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "resource_id": "tr_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1",
        "sequence": 1, "occurred_at": "2026-11-22T10:00:00Z", "request_id": null, "data": {}
    }))
    .expect("event");
    let connection = broker::connect(&config, "test-outage").await.expect("connect");
    let channel = broker::confirm_channel(&connection).await.expect("channel");
    publish_event(&channel, &config, &event).await;
    // Longer than every retry delay together: had the outage counted, it would be dead.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), consumer).await.expect("stops").expect("joins");
    assert!(broker::dead_letters::list(&config, &name, 10).await.expect("list").is_empty(), "nothing dead-lettered");
    // The stopped consumer's unacknowledged delivery returns to the queue when the broker
    // has processed its channel's closing, which the consumer does not wait for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let got = channel
            .basic_get(broker::queue_name(&name).as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .expect("get");
        match got {
            Some(message) => break message,
            None if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("the event is not back in the consumer's queue"),
        }
    };
    assert_eq!(broker::attempt_of(&waiting.delivery.properties), 1, "no attempt was spent");
}
