//! A token bucket per API key (or per dashboard user), in memory.
//!
//! Each instance of Till limits on its own, so behind N instances a key gets up to N times
//! the rate; that is the usual trade for not putting a shared store on every request.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};

use crate::auth::Principal;
use crate::problem::ApiError;
use crate::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Clone)]
pub struct RateLimiter {
    buckets: Arc<Governor<String, DefaultKeyedStateStore<String>, DefaultClock>>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        let quota = Quota::per_second(config.requests_per_second).allow_burst(config.burst);
        RateLimiter { buckets: Arc::new(Governor::keyed(quota)), clock: DefaultClock::default() }
    }

    /// Takes a token for `key`, or says how many whole seconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.buckets.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Round up so a client that waits exactly Retry-After gets a token.
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Drops buckets that are full again, so memory stays bounded by active keys.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
    }
}

/// Route-layer middleware, after authentication.
pub async fn middleware(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Principal>() else {
        return ApiError::internal(&"rate limiting ran before authentication").into_response();
    };
    let key = principal.rate_limit_key();
    limit(&limiter, &key, request, next).await
}

/// Route-layer middleware for platform routes, after the admin token is checked: the
/// platform credential has a bucket of its own.
pub async fn platform_middleware(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    limit(&limiter, "platform", request, next).await
}

/// The rate limit of the routes outside parties call (gateways' webhooks): a bucket of
/// their own, so a flood of forged webhooks cannot starve the platform's requests.
pub async fn provider_middleware(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    limit(&limiter, "providers", request, next).await
}

async fn limit(limiter: &RateLimiter, key: &str, request: Request, next: Next) -> Response {
    match limiter.check(key) {
        Ok(()) => next.run(request).await,
        Err(wait_seconds) => {
            let mut error = ApiError::new(
                ErrorCode::RateLimited,
                "This API key is over its request rate; retry after the number of seconds in Retry-After.",
            );
            error.retry_after_seconds = Some(wait_seconds.max(1));
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refuses_with_a_wait() {
        let one = NonZeroU32::MIN;
        let limiter =
            RateLimiter::new(RateLimitConfig { requests_per_second: one, burst: NonZeroU32::new(3).unwrap_or(one) });
        assert_eq!(limiter.check("k"), Ok(()));
        assert_eq!(limiter.check("k"), Ok(()));
        assert_eq!(limiter.check("k"), Ok(()));
        assert!(matches!(limiter.check("k"), Err(seconds) if seconds >= 1));
        assert_eq!(limiter.check("other"), Ok(()), "buckets are per key");
    }
}
