//! Security headers on every response: `X-Content-Type-Options: nosniff` everywhere; on
//! the API, `Cache-Control: no-store` (a response may carry a secret or personal data, and
//! no shared cache should keep any) and a Content-Security-Policy that lets a JSON body
//! load nothing; on the docs page, a policy that allows only its own bundled files, and
//! no framing (clickjacking).

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// What the Swagger UI page needs: its own scripts and styles (it sets inline styles),
/// its own icons (some as data URIs), and requests to this origin for "Try it out".
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";
/// A JSON body runs nothing and is framed by nobody.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

pub const DOCS_PATH: &str = "/docs";

pub async fn middleware(request: Request, next: Next) -> Response {
    let docs = request.uri().path() == DOCS_PATH || request.uri().path().starts_with("/docs/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if docs {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_POLICY));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    } else {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_POLICY));
        headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}
