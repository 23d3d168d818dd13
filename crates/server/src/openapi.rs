//! The OpenAPI 3.1 document: generated from the handlers' annotations, so it cannot drift
//! from the routes (utoipa-axum registers each route and its operation together).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Till API",
        description = "Till's REST API. Conventions: money is integer minor units with an ISO 4217 currency; \
ids are prefixed strings; errors are RFC 9457 problem+json with a stable `code`; every POST takes an \
`Idempotency-Key`; lists use cursor pagination; every response carries `Request-Id`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(
        till_http::Problem,
        till_http::auth::Role,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health and readiness."),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`till_sk_…`) or a dashboard user's JWT."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "platform_admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The platform admin token (TILL_ADMIN_TOKEN)."))
                    .build(),
            ),
        );
        let codes: String = till_http::ErrorCode::ALL
            .iter()
            .map(|code| format!("\n| `{}` | {} | {} |", code.as_str(), code.status().as_u16(), code.description()))
            .chain(till_http::problem::DependencyFailure::ALL.iter().map(|failure| {
                format!("\n| `<dependency>_…` | {} | {} |", failure.status().as_u16(), failure.description())
            }))
            .collect();
        let description = openapi.info.description.get_or_insert_with(String::new);
        description.push_str(&format!("\n\n## Error codes\n\n| code | status | meaning |\n|---|---|---|{codes}"));
    }
}
