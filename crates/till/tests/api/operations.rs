//! Health, readiness, the OpenAPI document, the docs page and Request-Id.

use till_testkit::spawn_app;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn readiness_fails_with_a_problem_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.pool.close().await;
    let ready = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let body = till_testkit::problem(ready).await;
    assert_eq!(body["code"], "service_unavailable");
}

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v1/openapi.json")).send().await.expect("openapi");
    assert_eq!(response.status().as_u16(), 200);
    let document: serde_json::Value = response.json().await.expect("json");
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")));
    for path in ["/v1/business", "/v1/api_keys", "/v1/api_keys/{id}", "/v1/platform/businesses", "/healthz", "/readyz"]
    {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    let description = document["info"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("idempotency_key_reused"), "error codes are documented");
}

/// The docs page and everything it loads come from this server: no CDN, no external URL.
#[tokio::test]
async fn docs_page_is_served_with_no_external_url() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/docs/")).send().await.expect("docs");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "it is the interactive docs page");
    let mut loaded = vec!["/docs/".to_string()];
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            let target = piece.split('"').next().unwrap_or_default();
            assert!(!target.contains("//"), "the page loads {target} from elsewhere");
            loaded.push(format!("/docs/{}", target.trim_start_matches("./")));
        }
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "no absolute URL in the page");
    for path in &loaded {
        let response = app.client.get(app.url(path)).send().await.expect("asset");
        assert_eq!(response.status().as_u16(), 200, "{path} is served locally");
    }
    let initializer = app.client.get(app.url("/docs/swagger-initializer.js")).send().await.expect("initializer");
    let script = initializer.text().await.expect("script");
    assert!(script.contains("/v1/openapi.json"), "the page loads our own document");
    assert!(!script.contains("https://") && !script.contains("http://"), "the initializer names no external URL");
}

#[tokio::test]
async fn request_id_is_echoed_when_safe_and_replaced_otherwise() {
    let app = spawn_app().await;
    let echoed = app.client.get(app.url("/healthz")).header("Request-Id", "client-abc.123").send().await.expect("get");
    assert_eq!(echoed.headers()["request-id"], "client-abc.123");
    let hostile = app.client.get(app.url("/healthz")).header("Request-Id", "<script>alert(1)</script>").send().await;
    let hostile = hostile.expect("get");
    let replaced = hostile.headers()["request-id"].to_str().expect("ascii");
    assert!(replaced.starts_with("req_") && !replaced.contains('<'));
    let missing = app.client.get(app.url("/nowhere")).send().await.expect("get");
    let header = missing.headers()["request-id"].to_str().expect("ascii").to_string();
    let body = till_testkit::problem(missing).await;
    assert_eq!(body["request_id"], header, "the problem quotes the response's Request-Id");
}
