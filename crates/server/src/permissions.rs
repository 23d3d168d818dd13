//! The permission table: every route and what its caller needs (the server's own rows
//! here, each service's from its registration). The authorization
//! middleware reads it for tenant routes and refuses any tenant route missing from it;
//! a test checks that it and the OpenAPI document list exactly the same operations.

use axum::http::Method;
use till_http::auth::{Access, PermissionTable, RoutePermission};

fn row(method: Method, path: &'static str, access: Access) -> RoutePermission {
    RoutePermission { method, path, access }
}

/// The server's own rows, then every service's.
pub fn table() -> Vec<RoutePermission> {
    let mut rows = vec![
        row(Method::GET, "/healthz", Access::Public),
        row(Method::GET, "/readyz", Access::Public),
        row(Method::GET, "/v1/openapi.json", Access::Public),
    ];
    for service in crate::SERVICES {
        rows.extend((service.permissions)());
    }
    rows
}

/// The table the middleware reads: [`table`] and an embedder's rows.
pub fn permission_table(extra: Vec<RoutePermission>) -> PermissionTable {
    let mut rows = table();
    rows.extend(extra);
    PermissionTable::new(rows)
}
