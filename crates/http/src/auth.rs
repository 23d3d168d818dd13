//! Who is calling, and what their role lets them do.
//!
//! Authentication (API keys, JWTs, the platform token) lives with the access service;
//! it leaves a [`Principal`] (or [`Scope::Platform`]) in the request's extensions. This
//! module holds the roles and the single permission table check that every route passes.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use till_kit::{ApiKeyId, BusinessId};

use crate::problem::ApiError;

/// Roles, from least to most privileged. Each role can do everything the roles before it
/// can: a viewer reads, finance also moves money, an admin also manages API keys and
/// settings, an owner also manages owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Finance,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Finance, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Finance => "finance",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(ApiKeyId),
    /// A dashboard user's JWT; `subject` is its `sub` claim.
    User {
        subject: String,
    },
    /// Another Till service calling in process (`crate::internal`), for one business.
    Service(&'static str),
}

/// An authenticated caller acting for one business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub business_id: BusinessId,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    /// Whom an Idempotency-Key belongs to within the business: the credential itself, so
    /// that one principal can never be replayed another's response (docs/DECISIONS.md).
    /// A JWT subject is at most 255 characters (the verifier refuses longer ones).
    pub fn idempotency_principal(&self) -> String {
        match &self.credential {
            Credential::ApiKey(id) => format!("api_key:{id}"),
            Credential::User { subject } => format!("user:{subject}"),
            Credential::Service(name) => format!("service:{name}"),
        }
    }

    /// Who acted, as the audit log and the records of a service name them
    /// (`api_key:key_…`, `user:{subject}`).
    pub fn actor(&self) -> String {
        match &self.credential {
            Credential::ApiKey(id) => format!("api_key:{id}"),
            Credential::User { subject } => format!("user:{subject}"),
            Credential::Service(name) => format!("service:{name}"),
        }
    }

    /// The key the rate limiter counts against.
    pub fn rate_limit_key(&self) -> String {
        match &self.credential {
            Credential::ApiKey(id) => id.to_string(),
            Credential::User { subject } => format!("user:{}:{subject}", self.business_id),
            Credential::Service(name) => format!("service:{}:{name}", self.business_id),
        }
    }
}

/// Whose data a request's transaction may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Business(BusinessId),
    /// A platform operator (authenticated by the admin token).
    Platform,
}

impl Scope {
    /// The idempotency scope: keys of different businesses never meet.
    pub fn idempotency_scope(self) -> String {
        match self {
            Scope::Business(id) => id.as_uuid().to_string(),
            Scope::Platform => "platform".to_string(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal(&"a tenant handler ran without an authenticated principal"))
    }
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, the OpenAPI document, the docs page).
    Public,
    /// The platform admin token.
    Platform,
    /// An outside party (a gateway's webhooks): the handler verifies the party's own
    /// signature; no Till credentials.
    Provider,
    /// A principal of a business with at least this role.
    Role(Role),
}

/// One row of the permission table: a route (as axum matches it) and what it needs.
#[derive(Debug, Clone)]
pub struct RoutePermission {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// The permission table, shared by the middleware and the tests that check it covers
/// every route.
#[derive(Debug, Clone, Default)]
pub struct PermissionTable(Arc<Vec<RoutePermission>>);

impl PermissionTable {
    pub fn new(rows: Vec<RoutePermission>) -> PermissionTable {
        PermissionTable(Arc::new(rows))
    }

    /// What `method path` needs. HEAD is answered by the GET route, so it needs what GET needs.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<Access> {
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.0.iter().find(|row| row.method == method && row.path == path).map(|row| row.access)
    }

    pub fn rows(&self) -> &[RoutePermission] {
        &self.0
    }
}

/// Route-layer middleware for tenant routes, after authentication: the caller's role must
/// reach the route's entry in the table. A route missing from the table is refused (and
/// logged as the bug it is): access fails closed.
pub async fn authorize(State(table): State<PermissionTable>, request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let Some(path) = path else {
        return ApiError::internal(&"authorize ran outside a matched route").into_response();
    };
    let Some(principal) = request.extensions().get::<Principal>() else {
        return ApiError::internal(&"authorize ran before authentication").into_response();
    };
    match table.lookup(request.method(), &path) {
        Some(Access::Role(required)) if principal.role.allows(required) => next.run(request).await,
        Some(Access::Role(required)) => ApiError::forbidden(format!(
            "This needs the {} role or higher; the credentials have {}.",
            required.as_str(),
            principal.role.as_str()
        ))
        .into_response(),
        Some(Access::Public | Access::Platform | Access::Provider) | None => {
            ApiError::internal(&format_args!("{} {path} has no tenant entry in the permission table", request.method()))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::Owner.allows(Role::Admin));
        assert!(Role::Admin.allows(Role::Finance));
        assert!(Role::Finance.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Finance));
        assert!(!Role::Finance.allows(Role::Admin));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
