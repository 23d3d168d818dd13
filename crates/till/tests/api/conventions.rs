//! API.md's error conventions: every failure is a problem+json with a stable code.

use reqwest::Method;
use serde_json::json;
use till_testkit::{problem, spawn_app, spawn_app_with, test_config};

use crate::support;

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for path in ["/v1/nothing", "/v2/business", "/"] {
        let response = app.get(path, &business.owner_key).await;
        assert_eq!(response.status().as_u16(), 404, "{path}");
        assert_eq!(problem(response).await["code"], "route_not_found");
    }
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let response = app.request(Method::PUT, "/v1/business", &business.owner_key).send().await.expect("put");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(problem(response).await["code"], "method_not_allowed");
}

#[tokio::test]
async fn head_is_answered_like_get() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let response = app.request(Method::HEAD, "/v1/business", &business.owner_key).send().await.expect("head");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn wrong_content_type_is_a_415_problem() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let response = app
        .request(Method::POST, "/v1/api_keys", &business.owner_key)
        .header("Idempotency-Key", "k1")
        .header("Content-Type", "text/plain")
        .body(r#"{"name":"x","role":"viewer"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 415);
    assert_eq!(problem(response).await["code"], "unsupported_media_type");
}

#[tokio::test]
async fn body_over_the_limit_is_a_413_problem_and_nothing_is_written() {
    let mut config = test_config();
    config.body_bytes_max = 4096;
    let app = spawn_app_with(config, Default::default()).await;
    let business = app.create_business("GB").await;
    let keys_before = key_count(&app).await;
    let huge = json!({ "name": "x".repeat(10_000), "role": "viewer" });
    let response = app.post("/v1/api_keys", &business.owner_key, "big-1", &huge).await;
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(problem(response).await["code"], "body_too_large");
    // Chunked, with no Content-Length to check up front.
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let response = app
        .request(Method::POST, "/v1/api_keys", &business.owner_key)
        .header("Idempotency-Key", "big-2")
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(key_count(&app).await, keys_before);
}

async fn key_count(app: &till_testkit::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM access.api_keys").fetch_one(&app.owner_pool).await.expect("count")
}

#[tokio::test]
async fn unknown_and_invalid_fields_are_400_problems_naming_the_field() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    let keys_before = key_count(&app).await;

    let typo = app.post("/v1/api_keys", &business.owner_key, "u1", &json!({ "name": "x", "rol": "viewer" })).await;
    assert_eq!(typo.status().as_u16(), 400);
    let body = problem(typo).await;
    assert_eq!(body["code"], "unknown_field");
    assert!(body["detail"].as_str().unwrap_or_default().contains("rol"));

    let bad_enum = app.post("/v1/api_keys", &business.owner_key, "u2", &json!({ "name": "x", "role": "root" })).await;
    assert_eq!(bad_enum.status().as_u16(), 400);
    assert_eq!(problem(bad_enum).await["param"], "role");

    let wrong_type = app.post("/v1/api_keys", &business.owner_key, "u3", &json!({ "name": 7, "role": "viewer" })).await;
    assert_eq!(wrong_type.status().as_u16(), 400);
    assert_eq!(problem(wrong_type).await["param"], "name");

    let broken = app
        .request(Method::POST, "/v1/api_keys", &business.owner_key)
        .header("Idempotency-Key", "u4")
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(broken.status().as_u16(), 400);
    assert_eq!(problem(broken).await["code"], "invalid_json");

    let blank = app.post("/v1/api_keys", &business.owner_key, "u5", &json!({ "name": "  ", "role": "viewer" })).await;
    assert_eq!(blank.status().as_u16(), 400);
    assert_eq!(problem(blank).await["param"], "name");

    let unknown_query = app.get("/v1/api_keys?limt=5", &business.owner_key).await;
    assert_eq!(unknown_query.status().as_u16(), 400);
    assert_eq!(problem(unknown_query).await["code"], "unknown_field");

    assert_eq!(key_count(&app).await, keys_before, "no refused request wrote anything");
}

#[tokio::test]
async fn a_malformed_id_in_the_path_is_a_404() {
    let app = spawn_app().await;
    let business = app.create_business("GB").await;
    for id in ["nope", "biz_0193", &business.id, "key_ZZZZ"] {
        let response = app
            .request(Method::DELETE, &format!("/v1/api_keys/{id}"), &business.owner_key)
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status().as_u16(), 404, "{id}");
        assert_eq!(problem(response).await["code"], "resource_missing");
    }
}

#[tokio::test]
async fn a_panic_is_an_opaque_500_and_its_transaction_rolls_back() {
    let app = spawn_app_with(test_config(), support::extension(Default::default())).await;
    let business = app.create_business("GB").await;
    let response = app.post(support::PANIC_PATH, &business.owner_key, "panic-1", &json!({})).await;
    assert_eq!(response.status().as_u16(), 500);
    let body = problem(response).await;
    assert_eq!(body["code"], "internal_error");
    let text = body.to_string();
    assert!(!text.contains("XYZ-42") && !text.contains("panic"), "the body leaks nothing: {text}");
    assert_eq!(support::count_actions(&app.owner_pool, "test.before_panic").await, 0, "the write rolled back");
    // The server is still serving, and the key was not stored: a retry runs again. The
    // dropped transaction's rollback (which frees the key's lock) is sent when its
    // connection is next used, so a retry right away may briefly still see 409.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        let again = app.post(support::PANIC_PATH, &business.owner_key, "panic-1", &json!({})).await;
        if again.status().as_u16() != 409 || std::time::Instant::now() > deadline {
            break again;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(again.status().as_u16(), 500);
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.get("/v1/business", &business.owner_key).await.status().as_u16(), 200);
}

#[tokio::test]
async fn lists_page_newest_first_with_cursors() {
    let app = spawn_app().await;
    let business = app.create_business("IN").await;
    let mut created = Vec::new();
    for index in 0..5 {
        let response = app
            .post(
                "/v1/api_keys",
                &business.owner_key,
                &format!("k{index}"),
                &json!({"name": format!("key {index}"), "role": "viewer"}),
            )
            .await;
        let body: serde_json::Value = response.json().await.expect("json");
        created.push(body["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/api_keys?limit=2".to_string();
    loop {
        let page: serde_json::Value = app.get(&path, &business.owner_key).await.json().await.expect("page");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|key| key["id"].as_str().unwrap_or_default().to_string()));
        if page["has_more"] == json!(false) {
            assert!(page.get("next_cursor").is_none());
            break;
        }
        path = format!("/v1/api_keys?limit=2&starting_after={}", page["next_cursor"].as_str().expect("cursor"));
    }
    // The owner key plus five, newest first, each once.
    assert_eq!(seen.len(), 6);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(&seen[..5], newest_first.as_slice());
    for (query, param) in [("limit=0", "limit"), ("limit=101", "limit"), ("starting_after=bogus", "starting_after")] {
        let response = app.get(&format!("/v1/api_keys?{query}"), &business.owner_key).await;
        assert_eq!(response.status().as_u16(), 400, "{query}");
        assert_eq!(problem(response).await["param"], param);
    }
}

/// The document states what the shared layers answer and what they accept, on every
/// operation (the outside check is schemathesis in `.ci/contract`).
#[tokio::test]
async fn every_operation_documents_the_shared_statuses_and_constraints() {
    let app = till_testkit::spawn_app().await;
    let paths = app.openapi["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let label = format!("{} {path}", method.to_uppercase());
            let documented = |status: &str| operation["responses"].get(status).is_some();
            let secured = operation["security"].as_array().is_some_and(|schemes| !schemes.is_empty());
            if secured {
                for status in ["400", "401", "403", "429", "503"] {
                    assert!(documented(status), "{label} does not document {status}");
                }
            }
            if path.contains('{') {
                assert!(documented("404"), "{label} does not document 404");
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(documented(status), "{label} does not document {status}");
                }
            }
            let params = operation["parameters"].as_array().cloned().unwrap_or_default();
            // A provider's webhook is deduplicated by its own event id, not an Idempotency-Key.
            if method == "post" && !path.starts_with("/v1/providers/") {
                assert!(documented("409") && documented("422"), "{label}: the Idempotency-Key's 409 and 422");
                let key = params.iter().find(|param| param["name"] == "Idempotency-Key").expect("Idempotency-Key");
                assert_eq!(key["required"], true, "{label}");
                assert_eq!(key["schema"]["maxLength"], 255, "{label}");
                assert!(key["schema"]["pattern"].is_string(), "{label}");
            }
            for param in &params {
                match param["name"].as_str() {
                    Some("limit") => {
                        assert_eq!(
                            (param["schema"]["minimum"].clone(), param["schema"]["maximum"].clone()),
                            (json!(1), json!(100)),
                            "{label}"
                        );
                    }
                    Some("starting_after") => {
                        assert!(
                            param["schema"]["pattern"].as_str().is_some_and(|p| p.ends_with("_[0-9a-f]{32}$")),
                            "{label}"
                        );
                    }
                    _ => {}
                }
            }
            // Every problem response names the codes behind it, from the registry.
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if status.starts_with('4') && response["content"].get("application/problem+json").is_some() {
                    assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{label} {status}");
                }
            }
        }
    }
    assert!(operations >= 30, "{operations} operations");
    // Creating operations link to the operations on what they created (stateful checks).
    let links = &app.openapi["paths"]["/v1/accounts"]["post"]["responses"]["201"]["links"];
    assert!(links.get("get_account").is_some() && links.get("update_account").is_some(), "{links}");
}

/// Every code in the registry has a status of its class and a description; codes are
/// unique.
#[test]
fn the_error_registry_is_consistent() {
    let mut seen = std::collections::HashSet::new();
    for code in till_http::ErrorCode::ALL {
        assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        assert!(code.status().is_client_error() || code.status().is_server_error(), "{}", code.as_str());
        assert!(!code.description().is_empty() && !code.title().is_empty(), "{}", code.as_str());
        assert!(code.as_str().bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_'), "{}", code.as_str());
    }
}
