//! Consumers for the bus tests: an effect that records each event it handles in a table
//! of the test's database, so "applied once" can be counted.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use till_events::consumer::Effect;
use till_outbox::envelope::EventBody;
use till_testkit::TestApp;

/// `public.consumer_effects`: one row per effect, in the order the effects committed.
pub async fn create_effects_table(app: &TestApp) {
    sqlx::query(
        "CREATE TABLE public.consumer_effects (
             seq bigserial PRIMARY KEY, event_id uuid NOT NULL, business_id uuid NOT NULL,
             resource_id text NOT NULL, sequence bigint NOT NULL)",
    )
    .execute(&app.owner_pool)
    .await
    .expect("effect table");
    sqlx::query("GRANT INSERT, SELECT ON public.consumer_effects TO till_app")
        .execute(&app.owner_pool)
        .await
        .expect("grant");
    sqlx::query("GRANT USAGE ON SEQUENCE public.consumer_effects_seq_seq TO till_app")
        .execute(&app.owner_pool)
        .await
        .expect("grant");
}

pub fn record_effect<'c>(connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
    Box::pin(async move {
        sqlx::query(
            "INSERT INTO public.consumer_effects (event_id, business_id, resource_id, sequence) VALUES ($1, $2, $3, $4)",
        )
        .bind(event.id.as_uuid())
        .bind(event.business_id.as_uuid())
        .bind(&event.resource_id)
        .bind(event.sequence)
        .execute(connection)
        .await?;
        Ok(())
    })
}

/// (effects, distinct events among them).
pub async fn effects(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM public.consumer_effects")
        .fetch_one(&app.owner_pool)
        .await
        .expect("effects")
}

pub async fn logged_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events.log").fetch_one(&app.owner_pool).await.expect("log")
}

/// Effects whose resource's sequence went down in commit order (0 = per-resource order kept).
pub async fn effects_out_of_order(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT sequence < lag(sequence) OVER (PARTITION BY resource_id ORDER BY seq) AS back
           FROM public.consumer_effects) ordered WHERE back",
    )
    .fetch_one(&app.owner_pool)
    .await
    .expect("order")
}

/// Waits until every event in the log has had its effect; fails the test after `within`.
pub async fn wait_for_every_effect(app: &TestApp, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (total, distinct) = effects(app).await;
        let logged = logged_events(app).await;
        if distinct == logged && outbox_empty(app).await {
            assert_eq!(total, distinct, "an effect happened twice");
            return;
        }
        assert!(Instant::now() < deadline, "{distinct} of {logged} events had their effect (total {total})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox_empty(app: &TestApp) -> bool {
    let mut waiting = 0;
    for outbox in till_events::relay::outboxes(&app.pool).await.expect("outboxes") {
        waiting += till_events::relay::backlog(&app.pool, &outbox).await.expect("backlog").0;
    }
    waiting == 0
}
