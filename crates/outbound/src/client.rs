//! One outside party (a dependency): its HTTP client, breaker, retry budget and limits,
//! and the call that puts them together.
//!
//! A call, attempt by attempt:
//! 1. the breaker admits it, or it fails at once (`Unavailable`, nothing sent);
//! 2. it takes one of the dependency's places (bounded concurrency), waiting at most the
//!    call's timeout;
//! 3. it is sent with the dependency's credentials, the request id and the caller's
//!    idempotency key, under connect and total timeouts, and the reply's body is read up
//!    to a size limit;
//! 4. the outcome is told to the breaker (a connection failure, a timeout, a 5xx, a 429
//!    or a reply that fails validation counts against the dependency; any other reply is
//!    the dependency working);
//! 5. a transient failure (no connection, a timeout, 5xx, 429) is retried only if the
//!    request is safe to retry — an idempotent method, or one that carries the party's
//!    idempotency key — while attempts and the retry budget last, after a full-jitter
//!    backoff that honours `Retry-After`;
//! 6. any other reply goes to the caller's validation, which turns it into a domain value
//!    or an `InvalidReply`; nothing else ever sees the raw reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use till_kit::Secret;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::breaker::{Admission, Breaker, BreakerConfig, BreakerState, Clock, Outcome, SystemClock};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::error::{InvalidReply, Names, OutboundError};

/// How a dependency proves who Till is.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer …` (Stripe's secret keys, most APIs).
    Bearer(Secret<String>),
    /// `Authorization: Basic …` (Razorpay's key id and secret).
    Basic {
        user: String,
        password: Secret<String>,
    },
}

/// Everything about one dependency. The defaults suit a payment gateway.
#[derive(Debug, Clone)]
pub struct DependencyConfig {
    pub names: Names,
    /// Requests go to this URL joined with the request's path.
    pub base_url: reqwest::Url,
    pub credentials: Credentials,
    /// The header that carries the party's idempotency key (Stripe: `Idempotency-Key`).
    pub idempotency_header: HeaderName,
    pub connect_timeout: Duration,
    /// From sending to the last byte of the reply, per attempt.
    pub attempt_timeout: Duration,
    /// Calls in flight at once.
    pub concurrency_max: usize,
    /// How long a call waits for a place when all are taken, before it gives up
    /// (`Unavailable`, nothing sent).
    pub place_wait: Duration,
    /// Attempts in all, the first included.
    pub attempts_max: u32,
    pub backoff: Backoff,
    pub budget: BudgetConfig,
    pub breaker: BreakerConfig,
    /// Bytes of a reply read at most; a longer reply is invalid.
    pub reply_bytes_max: usize,
}

impl DependencyConfig {
    pub fn new(names: Names, base_url: reqwest::Url, credentials: Credentials) -> DependencyConfig {
        DependencyConfig {
            names,
            base_url,
            credentials,
            idempotency_header: HeaderName::from_static("idempotency-key"),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(15),
            concurrency_max: 64,
            place_wait: Duration::from_secs(1),
            attempts_max: 3,
            backoff: Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(5) },
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            reply_bytes_max: 1024 * 1024,
        }
    }
}

/// One request to a dependency.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    /// Joined to the dependency's base URL (`v1/payment_intents`); may carry a query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<(HeaderValue, Bytes)>,
    /// The party's idempotency key for this effect: the same on every attempt, and on
    /// every retry of the caller's own request.
    pub idempotency_key: Option<String>,
}

impl OutboundRequest {
    pub fn new(method: Method, path: impl Into<String>) -> OutboundRequest {
        OutboundRequest { method, path: path.into(), headers: HeaderMap::new(), body: None, idempotency_key: None }
    }

    /// A form-encoded body (`application/x-www-form-urlencoded`, as Stripe takes).
    pub fn form(mut self, pairs: &[(&str, String)]) -> OutboundRequest {
        let body: String = pairs
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        self.body = Some((HeaderValue::from_static("application/x-www-form-urlencoded"), Bytes::from(body)));
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: &impl serde::Serialize) -> Result<OutboundRequest, serde_json::Error> {
        self.body = Some((HeaderValue::from_static("application/json"), Bytes::from(serde_json::to_vec(value)?)));
        Ok(self)
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> OutboundRequest {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Safe to send again: an idempotent method, or an idempotency key the party honours.
    pub fn retry_safe(&self) -> bool {
        self.idempotency_key.is_some()
            || matches!(self.method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS)
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => encoded.push(char::from(byte)),
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// A reply, before validation. Only a validation function sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON of type `T`, or an `InvalidReply` naming the field that did not fit.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, InvalidReply> {
        let deserializer = &mut serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let field = error.path().to_string();
            InvalidReply::new(if field == "." { "body".to_string() } else { field }, error.into_inner().to_string())
        })
    }
}

/// A dependency, ready to be called. Clones share its breaker, budget and places.
#[derive(Debug, Clone)]
pub struct Dependency {
    config: Arc<DependencyConfig>,
    client: reqwest::Client,
    breaker: Breaker,
    budget: RetryBudget,
    places: Arc<Semaphore>,
}

impl Dependency {
    pub fn new(config: DependencyConfig) -> Result<Dependency, reqwest::Error> {
        Dependency::with_clock(config, Arc::new(SystemClock))
    }

    /// With a clock of the caller's (tests move it by hand).
    pub fn with_clock(config: DependencyConfig, clock: Arc<dyn Clock>) -> Result<Dependency, reqwest::Error> {
        // Redirects are not followed (a provider's API answers where it is asked) and no
        // proxy from the environment is used; TLS is rustls (the workspace's reqwest).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.attempt_timeout)
            .user_agent("Till/1")
            .build()?;
        Ok(Dependency {
            breaker: Breaker::new(config.breaker, clock.clone()),
            budget: RetryBudget::new(config.budget, clock),
            places: Arc::new(Semaphore::new(config.concurrency_max.max(1))),
            config: Arc::new(config),
            client,
        })
    }

    pub fn names(&self) -> Names {
        self.config.names
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Sends `request` (retrying what is safe to retry) and hands the reply to `validate`,
    /// whose value is the call's result.
    pub async fn call<T>(
        &self,
        request: &OutboundRequest,
        validate: impl Fn(&Reply) -> Result<T, InvalidReply>,
    ) -> Result<T, OutboundError> {
        let names = self.config.names;
        self.budget.deposit();
        let mut attempt: u32 = 0;
        loop {
            // A place first, so that a call which never gets one leaves the breaker alone.
            let Ok(Ok(_place)) = tokio::time::timeout(self.config.place_wait, self.places.acquire()).await else {
                return Err(OutboundError::Unavailable {
                    names,
                    why: "every place for a call stayed taken",
                    retry_after: Duration::from_secs(1),
                });
            };
            let admission = self.breaker.admit();
            if let Admission::Refused { retry_after } = admission {
                return Err(OutboundError::Unavailable { names, why: "its circuit breaker is open", retry_after });
            }
            let started = Instant::now();
            let failure = match self.attempt(request).await {
                Ok(reply) if !is_transient(reply.status) => {
                    return match validate(&reply) {
                        Ok(value) => {
                            self.breaker.record(admission, Outcome::Success);
                            Ok(value)
                        }
                        Err(reason) => {
                            // A reply that cannot be trusted is the dependency misbehaving.
                            self.breaker.record(admission, Outcome::Failure);
                            self.log_failure(request, attempt, started, &format_args!("{reason}"));
                            Err(OutboundError::InvalidReply { names, reason })
                        }
                    };
                }
                Ok(reply) => Transient::Status { status: reply.status, retry_after: retry_after_of(&reply.headers) },
                Err(Attempted::TooLarge) => {
                    self.breaker.record(admission, Outcome::Failure);
                    let reason =
                        InvalidReply::new("body", format!("longer than {} bytes", self.config.reply_bytes_max));
                    return Err(OutboundError::InvalidReply { names, reason });
                }
                Err(Attempted::Request(cause)) => {
                    // The caller's mistake, not the dependency's: neutral for the breaker.
                    self.breaker.record(admission, Outcome::Neutral);
                    return Err(OutboundError::Request { names, cause });
                }
                Err(Attempted::Connect(cause)) => Transient::Connect(cause),
                Err(Attempted::NoAnswer(cause)) => Transient::NoAnswer(cause),
            };
            self.breaker.record(admission, Outcome::Failure);
            self.log_failure(request, attempt, started, &failure);
            let again = attempt + 1 < self.config.attempts_max
                && (failure.nothing_done() || request.retry_safe())
                && self.budget.withdraw();
            if !again {
                return Err(failure.into_error(names));
            }
            let delay = self.config.backoff.delay(attempt, rand::random(), failure.retry_after());
            drop(_place);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt: the request with credentials, request id and idempotency key, and
    /// the reply read up to the size limit.
    async fn attempt(&self, request: &OutboundRequest) -> Result<Reply, Attempted> {
        let url = self.config.base_url.join(&request.path).map_err(|error| Attempted::Request(error.to_string()))?;
        let mut builder = self.client.request(request.method.clone(), url).headers(request.headers.clone());
        builder = match &self.config.credentials {
            Credentials::None => builder,
            Credentials::Bearer(token) => builder.bearer_auth(token.expose_secret()),
            Credentials::Basic { user, password } => builder.basic_auth(user, Some(password.expose_secret())),
        };
        if let Some(request_id) = till_http::request_id::current() {
            builder = builder.header("request-id", request_id);
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header(self.config.idempotency_header.clone(), key);
        }
        if let Some((content_type, body)) = &request.body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type.clone()).body(body.clone());
        }
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len().saturating_add(chunk.len()) > self.config.reply_bytes_max {
                return Err(Attempted::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply { status, headers, body: Bytes::from(body) })
    }

    /// One line per failed attempt: the dependency, the method and the path without its
    /// query (which may carry identifiers), never headers or bodies (credentials, data).
    fn log_failure(&self, request: &OutboundRequest, attempt: u32, started: Instant, cause: &dyn std::fmt::Display) {
        let path = request.path.split('?').next().unwrap_or_default();
        tracing::info!(
            dependency = self.config.names.dependency,
            method = %request.method,
            path,
            attempt,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            %cause,
            "a call to an outside party failed"
        );
    }
}

/// What went wrong with one attempt.
enum Attempted {
    /// Could not connect (or complete TLS): nothing was sent.
    Connect(String),
    /// Sent, and then no (whole) answer: timed out, or the connection broke.
    NoAnswer(String),
    TooLarge,
    Request(String),
}

fn classify(error: reqwest::Error) -> Attempted {
    let cause = till_kit::errors::chain(&error);
    if error.is_connect() {
        Attempted::Connect(cause)
    } else if error.is_builder() {
        Attempted::Request(cause)
    } else {
        Attempted::NoAnswer(cause)
    }
}

/// A failed attempt that a retry might get past.
enum Transient {
    Connect(String),
    NoAnswer(String),
    Status { status: StatusCode, retry_after: Option<Duration> },
}

impl Transient {
    /// The party did nothing: no connection, or a 429 (it refused to look).
    fn nothing_done(&self) -> bool {
        matches!(self, Transient::Connect(_) | Transient::Status { status: StatusCode::TOO_MANY_REQUESTS, .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Transient::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn into_error(self, names: Names) -> OutboundError {
        match self {
            Transient::Connect(cause) => OutboundError::Connect { names, cause },
            Transient::NoAnswer(cause) => OutboundError::TimedOut { names, cause },
            Transient::Status { status, retry_after } => {
                OutboundError::Failing { names, status: status.as_u16(), retry_after }
            }
        }
    }
}

impl std::fmt::Display for Transient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transient::Connect(cause) => write!(formatter, "could not connect: {cause}"),
            Transient::NoAnswer(cause) => write!(formatter, "no answer: {cause}"),
            Transient::Status { status, .. } => write!(formatter, "HTTP {}", status.as_u16()),
        }
    }
}

/// 5xx and 429: the party is failing or overloaded, so the call may succeed later.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the parties Till calls,
/// and is ignored).
fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_everything_but_the_unreserved() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("metadata[order_id]"), "metadata%5Border_id%5D");
    }

    #[test]
    fn only_idempotent_or_keyed_requests_are_retry_safe() {
        assert!(OutboundRequest::new(Method::GET, "v1/x").retry_safe());
        assert!(!OutboundRequest::new(Method::POST, "v1/x").retry_safe());
        assert!(OutboundRequest::new(Method::POST, "v1/x").idempotency_key("k").retry_safe());
    }
}
