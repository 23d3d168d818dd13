//! The permission table: every route and what its caller needs. The authorization
//! middleware reads it for tenant routes and refuses any tenant route missing from it;
//! a test checks that it and the OpenAPI document list exactly the same operations.

use axum::http::Method;
use till_http::auth::{Access, PermissionTable, Role, RoutePermission};

fn row(method: Method, path: &'static str, access: Access) -> RoutePermission {
    RoutePermission { method, path, access }
}

pub fn table() -> Vec<RoutePermission> {
    vec![
        row(Method::GET, "/healthz", Access::Public),
        row(Method::GET, "/readyz", Access::Public),
        row(Method::GET, "/v1/openapi.json", Access::Public),
        row(Method::POST, "/v1/platform/businesses", Access::Platform),
        row(Method::POST, "/v1/platform/token_revocations", Access::Platform),
        row(Method::GET, "/v1/business", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::POST, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::DELETE, "/v1/api_keys/{id}", Access::Role(Role::Admin)),
        // The ledger: viewers read, finance moves money, admins change accounts' limits.
        row(Method::GET, "/v1/accounts", Access::Role(Role::Viewer)),
        row(Method::POST, "/v1/accounts", Access::Role(Role::Finance)),
        row(Method::GET, "/v1/accounts/{id}", Access::Role(Role::Viewer)),
        row(Method::PATCH, "/v1/accounts/{id}", Access::Role(Role::Admin)),
        row(Method::GET, "/v1/accounts/{id}/entries", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/accounts/{id}/balance", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/transfers", Access::Role(Role::Viewer)),
        row(Method::POST, "/v1/transfers", Access::Role(Role::Finance)),
        row(Method::GET, "/v1/transfers/{id}", Access::Role(Role::Viewer)),
        row(Method::POST, "/v1/transfers/{id}/post", Access::Role(Role::Finance)),
        row(Method::POST, "/v1/transfers/{id}/void", Access::Role(Role::Finance)),
        row(Method::POST, "/v1/transfers/{id}/reverse", Access::Role(Role::Finance)),
        row(Method::POST, "/v1/transfers/batch", Access::Role(Role::Finance)),
        row(Method::GET, "/v1/ledger/check", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/events", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/events/{id}", Access::Role(Role::Viewer)),
        // Webhook endpoints: admins manage them (they receive the business's data).
        row(Method::GET, "/v1/webhook_endpoints", Access::Role(Role::Viewer)),
        row(Method::POST, "/v1/webhook_endpoints", Access::Role(Role::Admin)),
        row(Method::GET, "/v1/webhook_endpoints/{id}", Access::Role(Role::Viewer)),
        row(Method::PATCH, "/v1/webhook_endpoints/{id}", Access::Role(Role::Admin)),
        row(Method::DELETE, "/v1/webhook_endpoints/{id}", Access::Role(Role::Admin)),
        row(Method::POST, "/v1/webhook_endpoints/{id}/rotate_secret", Access::Role(Role::Admin)),
        row(Method::GET, "/v1/webhook_endpoints/{id}/deliveries", Access::Role(Role::Viewer)),
        row(Method::POST, "/v1/webhook_endpoints/{id}/replay", Access::Role(Role::Admin)),
    ]
}

pub fn permission_table(extra: Vec<RoutePermission>) -> PermissionTable {
    let mut rows = table();
    rows.extend(extra);
    PermissionTable::new(rows)
}
