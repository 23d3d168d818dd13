//! Isolation between businesses: scoped queries first, row-level security as the backstop,
//! and another business's resource answers exactly like a missing one.

use reqwest::Method;
use serde_json::json;
use till_kit::BusinessId;
use till_testkit::{problem, spawn_app};

#[tokio::test]
async fn an_unscoped_query_in_a_tenant_transaction_sees_only_that_tenant() {
    let app = spawn_app().await;
    let first = app.create_business("GB").await;
    let second = app.create_business("IN").await;
    app.create_key(&second, "viewer").await;
    let first_id = BusinessId::parse(&first.id).expect("id");

    // As till_app, scoped to the first business, a query that "forgets" its filter.
    let mut transaction = till_db::begin_tenant(&app.pool, first_id).await.expect("begin");
    let businesses: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM access.businesses").fetch_all(&mut *transaction).await.expect("select");
    assert_eq!(businesses, vec![first_id.as_uuid()]);
    let foreign_keys: i64 = sqlx::query_scalar("SELECT count(*) FROM access.api_keys WHERE business_id <> $1")
        .bind(first_id.as_uuid())
        .fetch_one(&mut *transaction)
        .await
        .expect("count");
    assert_eq!(foreign_keys, 0);
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM access.audit_log WHERE business_id <> $1")
        .bind(first_id.as_uuid())
        .fetch_one(&mut *transaction)
        .await
        .expect("count");
    assert_eq!(audit, 0);
    let idempotency: i64 = sqlx::query_scalar("SELECT count(*) FROM api.idempotency_keys")
        .fetch_one(&mut *transaction)
        .await
        .expect("count");
    assert_eq!(idempotency, 0, "the platform's keys are not the tenant's");
    // Writing a row for another business is refused by the policy's WITH CHECK.
    let smuggled =
        sqlx::query("INSERT INTO access.audit_log (id, business_id, action, actor) VALUES ($1, $2, 'x', 'x')")
            .bind(uuid::Uuid::now_v7())
            .bind(BusinessId::parse(&second.id).expect("id").as_uuid())
            .execute(&mut *transaction)
            .await;
    assert!(smuggled.is_err(), "row-level security refuses another tenant's row");
    drop(transaction);

    // With no business set at all, nothing is visible.
    let mut unscoped = app.pool.begin().await.expect("begin");
    let visible: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.businesses").fetch_one(&mut *unscoped).await.expect("count");
    assert_eq!(visible, 0);
    // And the owner (who bypasses RLS) sees both: the rows are really there.
    let all: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.businesses").fetch_one(&app.owner_pool).await.expect("count");
    assert_eq!(all, 2);
}

#[tokio::test]
async fn the_app_role_cannot_switch_off_row_level_security() {
    let app = spawn_app().await;
    // A row that an unscoped query would see if row-level security could be switched off.
    app.create_business("GB").await;
    let mut connection = app.pool.acquire().await.expect("connection");
    let role: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *connection).await.expect("role");
    assert_eq!(role, "till_app");
    let disabled =
        sqlx::query("ALTER TABLE access.businesses DISABLE ROW LEVEL SECURITY").execute(&mut *connection).await;
    assert!(disabled.is_err());
    let bypass = sqlx::query("SET row_security = off").execute(&mut *connection).await;
    let still_filtered: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM access.businesses").fetch_one(&mut *connection).await;
    // Either the setting is refused, or queries that RLS would filter error out instead.
    assert!(bypass.is_err() || still_filtered.is_err() || still_filtered.ok() == Some(0));
}

#[tokio::test]
async fn another_businesss_resources_answer_404_never_403() {
    let app = spawn_app().await;
    let first = app.create_business("GB").await;
    let second = app.create_business("GB").await;
    let keys: serde_json::Value = app.get("/v1/api_keys", &second.owner_key).await.json().await.expect("list");
    let foreign_key = keys["data"][0]["id"].as_str().expect("id").to_string();
    let response = app
        .request(Method::DELETE, &format!("/v1/api_keys/{foreign_key}"), &first.owner_key)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 404);
    let foreign = problem(response).await;
    let missing = app
        .request(Method::DELETE, "/v1/api_keys/key_00000000000000000000000000000000", &first.owner_key)
        .send()
        .await
        .expect("delete");
    let missing = problem(missing).await;
    assert_eq!(
        (foreign["code"].clone(), foreign["detail"].clone()),
        (missing["code"].clone(), missing["detail"].clone())
    );
    assert_eq!(app.get("/v1/business", &second.owner_key).await.status().as_u16(), 200, "the key was not revoked");
    let own: serde_json::Value = app.get("/v1/business", &first.owner_key).await.json().await.expect("business");
    assert_eq!(own["id"], first.id.as_str(), "each key sees its own business");
    let listed: serde_json::Value = app.get("/v1/api_keys", &first.owner_key).await.json().await.expect("list");
    assert!(listed["data"].as_array().expect("data").iter().all(|key| key["id"] != foreign_key.as_str()));
}

#[tokio::test]
async fn businesses_are_validated_and_tax_registrations_checked() {
    let app = spawn_app().await;
    let cases = [
        (json!({"legal_name": "Acme", "country": "GB", "tax_registration": "GB999999973"}), 201, None),
        (json!({"legal_name": "Acme", "country": "IN", "tax_registration": "27AAPFU0939F1ZV"}), 201, None),
        (json!({"legal_name": "Acme", "country": "GB", "default_currency": "EUR"}), 201, None),
        (
            json!({"legal_name": "Acme", "country": "GB", "tax_registration": "GB999999974"}),
            422,
            Some("tax_registration"),
        ),
        (
            json!({"legal_name": "Acme", "country": "IN", "tax_registration": "27AAPFU0939F1ZW"}),
            422,
            Some("tax_registration"),
        ),
        (
            json!({"legal_name": "Acme", "country": "IN", "tax_registration": "GB999999973"}),
            422,
            Some("tax_registration"),
        ),
        (json!({"legal_name": "Acme", "country": "FR"}), 400, Some("country")),
        (json!({"legal_name": "", "country": "GB"}), 400, Some("legal_name")),
        (json!({"legal_name": "Acme", "country": "GB", "default_currency": "gbp"}), 400, Some("default_currency")),
        (json!({"legal_name": "Acme", "country": "GB", "vat": "x"}), 400, None),
    ];
    for (index, (body, status, param)) in cases.into_iter().enumerate() {
        let response = app.post("/v1/platform/businesses", &app.admin_token, &format!("biz-{index}"), &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        if let Some(param) = param {
            assert_eq!(problem(response).await["param"], param, "{body}");
        } else if status == 201 {
            let created: serde_json::Value = response.json().await.expect("json");
            assert!(created["api_key"]["secret"].as_str().is_some_and(|s| s.starts_with("till_sk_")));
            assert_eq!(created["api_key"]["role"], "owner");
        }
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM access.businesses").fetch_one(&app.owner_pool).await.expect("n");
    assert_eq!(count, 3, "refused businesses wrote nothing");
}

#[tokio::test]
async fn security_events_are_audited_and_the_log_is_append_only() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let viewer = app.create_key(&business, "viewer").await;
    assert!(viewer.starts_with("till_sk_"));
    let keys: serde_json::Value =
        app.get("/v1/api_keys?limit=1", &business.owner_key).await.json().await.expect("list");
    let id = keys["data"][0]["id"].as_str().expect("id").to_string();
    app.request(Method::DELETE, &format!("/v1/api_keys/{id}"), &business.owner_key).send().await.expect("revoke");
    // Revoking twice returns the key again but records one revocation.
    let again =
        app.request(Method::DELETE, &format!("/v1/api_keys/{id}"), &business.owner_key).send().await.expect("revoke");
    assert_eq!(again.status().as_u16(), 200);
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM access.audit_log ORDER BY id")
        .fetch_all(&app.owner_pool)
        .await
        .expect("actions");
    assert_eq!(actions, ["business.created", "api_key.created", "api_key.created", "api_key.revoked"]);
    for statement in
        ["UPDATE access.audit_log SET action = 'x'", "DELETE FROM access.audit_log", "TRUNCATE access.audit_log"]
    {
        assert!(sqlx::query(statement).execute(&app.owner_pool).await.is_err(), "even the owner cannot: {statement}");
        assert!(sqlx::query(statement).execute(&app.pool).await.is_err(), "the app cannot: {statement}");
    }
}
