//! Problems for requests that match no route (404) or no method of a route (405), and
//! for panics (an opaque 500; the transaction of the request is dropped, so it rolls back).

use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::ErrorCode;

pub async fn route_not_found() -> Response {
    ApiError::new(ErrorCode::RouteNotFound, "No such route.").into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::new(ErrorCode::MethodNotAllowed, "This route does not support this method.").into_response()
}

/// For `tower_http::catch_panic`: the panic message is logged, never sent.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(&format_args!("handler panicked: {message}")).into_response()
}
