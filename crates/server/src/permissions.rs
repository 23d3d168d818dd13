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
        row(Method::GET, "/v1/business", Access::Role(Role::Viewer)),
        row(Method::GET, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::POST, "/v1/api_keys", Access::Role(Role::Admin)),
        row(Method::DELETE, "/v1/api_keys/{id}", Access::Role(Role::Admin)),
    ]
}

pub fn permission_table(extra: Vec<RoutePermission>) -> PermissionTable {
    let mut rows = table();
    rows.extend(extra);
    PermissionTable::new(rows)
}
