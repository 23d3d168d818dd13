//! The permission table and the role matrix.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;
use till_http::auth::{Access, Role};
use till_testkit::{problem, spawn_app};

/// Every operation in the OpenAPI document (which utoipa-axum builds from the same
/// registrations as the router) has exactly one entry in the permission table, and every
/// entry names a real operation. A new route without an entry fails here.
#[tokio::test]
async fn every_route_has_exactly_one_permission_entry() {
    let app = spawn_app().await;
    let mut documented = BTreeSet::new();
    for (path, item) in app.openapi["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let table = till_server::permissions::table();
    let mut listed = BTreeSet::new();
    for row in &table {
        assert!(
            listed.insert((row.method.to_string(), row.path.to_string())),
            "{} {} is listed twice",
            row.method,
            row.path
        );
    }
    let missing: Vec<_> = documented.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(missing.is_empty(), "routes with no permission entry: {missing:?}");
    assert!(stale.is_empty(), "permission entries for no route: {stale:?}");
}

/// Each role against each tenant route: 403 exactly when the role is below the route's.
#[tokio::test]
async fn role_matrix() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let mut keys = vec![(Role::Owner, business.owner_key.clone())];
    for role in [Role::Admin, Role::Finance, Role::Viewer] {
        keys.push((role, app.create_key(&business, role.as_str()).await));
    }
    for row in till_server::permissions::table() {
        let Access::Role(required) = row.access else { continue };
        let path = row.path.replace("{id}", "key_00000000000000000000000000000000");
        for (role, key) in &keys {
            let mut request = app.request(row.method.clone(), &path, key);
            if row.method == Method::POST {
                request = request.header("Idempotency-Key", format!("matrix-{role:?}-{path}")).json(&json!({
                    "name": "matrix", "role": "viewer"
                }));
            }
            let status = request.send().await.expect("request").status().as_u16();
            if role.allows(required) {
                assert!(status != 401 && status != 403, "{role:?} {} {path}: {status}", row.method);
            } else {
                assert_eq!(status, 403, "{role:?} {} {path}", row.method);
            }
        }
    }
}

#[tokio::test]
async fn a_key_cannot_mint_a_more_powerful_key_or_revoke_one() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let admin = app.create_key(&business, "admin").await;
    let response = app.post("/v1/api_keys", &admin, "esc-1", &json!({"name": "up", "role": "owner"})).await;
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(problem(response).await["param"], "role");
    let response = app.post("/v1/api_keys", &admin, "esc-2", &json!({"name": "peer", "role": "admin"})).await;
    assert_eq!(response.status().as_u16(), 201);
    let keys: serde_json::Value = app.get("/v1/api_keys", &admin).await.json().await.expect("list");
    let owner_id = keys["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|key| key["role"] == "owner")
        .and_then(|key| key["id"].as_str())
        .expect("owner key")
        .to_string();
    let response =
        app.request(Method::DELETE, &format!("/v1/api_keys/{owner_id}"), &admin).send().await.expect("delete");
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(app.get("/v1/business", &business.owner_key).await.status().as_u16(), 200, "the owner key still works");
}
