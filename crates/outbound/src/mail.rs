//! E-mail over SMTP, as an outside party like any other: a circuit breaker, bounded
//! concurrency, a connect and a per-message timeout, and the server's reply checked
//! before anything acts on it. `lettre` speaks SMTP (with rustls for `smtps://` and
//! STARTTLS; pooled connections).
//!
//! A send is one attempt. SMTP has no idempotency key, so this kit never sends a message
//! twice by itself: the caller (the notifications service) keeps the message queued and
//! decides when to try again, with the same `Message-ID`, so that a receiver can tell a
//! second copy from a second message.
//!
//! What each failure means for the message:
//! - [`MailError::Unavailable`]: the breaker is open or every place stayed taken;
//!   nothing was sent.
//! - [`MailError::Unreachable`]: no connection could be made; nothing was sent.
//! - [`MailError::Refused`]: the server answered the message with a 4xx (`transient`:
//!   try later) or a 5xx (permanent: it will never take it); it did not take it.
//! - [`MailError::InDoubt`]: the connection broke or timed out after the message may
//!   have been handed over; the server may or may not have taken it.
//! - [`MailError::Invalid`]: the message could not be built (a caller's bug); nothing was
//!   sent.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use till_kit::Secret;
use tokio::sync::Semaphore;

use crate::breaker::{Admission, Breaker, BreakerConfig, BreakerState, Clock, Outcome, SystemClock};
use crate::error::Names;

/// One SMTP server (a relay such as a provider's submission endpoint).
#[derive(Debug, Clone)]
pub struct MailerConfig {
    pub names: Names,
    /// `smtp://host:port` (plain, for a relay on loopback), `smtp://…?tls=required`
    /// (STARTTLS), `smtps://host:465`; credentials as `user:password@`. Secret: it may
    /// carry a password.
    pub url: Secret<String>,
    /// Connecting, and each SMTP command's reply, at most.
    pub attempt_timeout: Duration,
    /// Messages in flight at once (and pooled connections).
    pub concurrency_max: u32,
    /// How long a send waits for a place before it gives up (nothing sent).
    pub place_wait: Duration,
    pub breaker: BreakerConfig,
}

impl MailerConfig {
    pub fn new(names: Names, url: Secret<String>) -> MailerConfig {
        MailerConfig {
            names,
            url,
            attempt_timeout: Duration::from_secs(10),
            concurrency_max: 4,
            place_wait: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
        }
    }
}

/// A message to send: addresses already validated by the caller's domain types.
#[derive(Debug, Clone)]
pub struct Email {
    pub from_name: Option<String>,
    pub from_address: String,
    pub reply_to: Option<String>,
    pub to: String,
    pub subject: String,
    pub text: String,
    /// With it, the message is `multipart/alternative` with both parts.
    pub html: Option<String>,
    /// `<…@…>`, the same on every attempt to send this message.
    pub message_id: String,
}

/// The server took the message: its reply (`250 …`), for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub reply: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{} is unavailable ({why}); nothing was sent", names.dependency)]
    Unavailable { names: Names, why: &'static str, retry_after: Duration },
    #[error("could not connect to {}: {cause}", names.dependency)]
    Unreachable { names: Names, cause: String },
    #[error("{} refused the message ({code}): {reply}", names.dependency)]
    Refused { names: Names, transient: bool, code: String, reply: String },
    #[error("{} may or may not have taken the message: {cause}", names.dependency)]
    InDoubt { names: Names, cause: String },
    #[error("the message could not be built: {0}")]
    Invalid(String),
}

/// An SMTP server, ready to take messages. Clones share its breaker, places and pool.
#[derive(Clone)]
pub struct Mailer {
    names: Names,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    breaker: Breaker,
    places: Arc<Semaphore>,
    place_wait: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the transport: its URL may carry a password.
        formatter.debug_struct("Mailer").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(config: MailerConfig) -> Result<Mailer, String> {
        Mailer::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: MailerConfig, clock: Arc<dyn Clock>) -> Result<Mailer, String> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(config.url.expose_secret())
            // The error names what is wrong with the URL, never the URL (its password).
            .map_err(|error| format!("the SMTP URL is not one Till can use: {}", till_kit::errors::chain(&error)))?;
        let transport = builder
            .timeout(Some(config.attempt_timeout))
            .pool_config(PoolConfig::new().max_size(config.concurrency_max.max(1)))
            .build();
        Ok(Mailer {
            names: config.names,
            transport,
            breaker: Breaker::new(config.breaker, clock),
            places: Arc::new(Semaphore::new(usize::try_from(config.concurrency_max.max(1)).unwrap_or(1))),
            place_wait: config.place_wait,
        })
    }

    pub fn names(&self) -> Names {
        self.names
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Whether the breaker would let a message through now (without taking a trial).
    pub fn admits(&self) -> bool {
        !matches!(self.breaker.state(), BreakerState::Open { .. })
    }

    /// Sends `email` once.
    pub async fn send(&self, email: &Email) -> Result<Accepted, MailError> {
        let names = self.names;
        let message = build(email).map_err(MailError::Invalid)?;
        let Ok(Ok(_place)) = tokio::time::timeout(self.place_wait, self.places.acquire()).await else {
            return Err(MailError::Unavailable {
                names,
                why: "every place for a message stayed taken",
                retry_after: Duration::from_secs(1),
            });
        };
        let admission = self.breaker.admit();
        if let Admission::Refused { retry_after } = admission {
            return Err(MailError::Unavailable { names, why: "its circuit breaker is open", retry_after });
        }
        match self.transport.send(message).await {
            Ok(response) if response.is_positive() => {
                self.breaker.record(admission, Outcome::Success);
                let reply = format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "));
                Ok(Accepted { reply })
            }
            Ok(response) => {
                // lettre answers errors for negative replies; a reply that is neither is
                // not one to act on as a success.
                self.breaker.record(admission, Outcome::Failure);
                Err(MailError::InDoubt { names, cause: format!("an unexpected reply {}", response.code()) })
            }
            Err(error) => {
                let failure = classify(names, &error);
                let outcome = match &failure {
                    // A 5xx is about this message (a recipient the server will not take),
                    // not the server failing.
                    MailError::Refused { transient: false, .. } => Outcome::Neutral,
                    _ => Outcome::Failure,
                };
                self.breaker.record(admission, outcome);
                // Not logged here: a server's reply may quote the recipient's address, and
                // the caller, who knows it, logs the failure masked.
                Err(failure)
            }
        }
    }
}

fn classify(names: Names, error: &lettre::transport::smtp::Error) -> MailError {
    if let Some(code) = error.status() {
        let reply = till_kit::errors::chain(error);
        return MailError::Refused { names, transient: error.is_transient(), code: code.to_string(), reply };
    }
    let cause = till_kit::errors::chain(error);
    if connection_refused(error) {
        MailError::Unreachable { names, cause }
    } else {
        MailError::InDoubt { names, cause }
    }
}

/// Whether the error is a connection that was never made: nothing reached the server.
/// Read from the I/O error's kind underneath, not from messages.
fn connection_refused(error: &lettre::transport::smtp::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            );
        }
        source = cause.source();
    }
    false
}

/// The message as lettre builds it: headers encoded by lettre (a value with a line break
/// cannot become a second header), both parts when there is HTML.
fn build(email: &Email) -> Result<Message, String> {
    let address = |text: &str, field: &str| -> Result<lettre::Address, String> {
        text.parse().map_err(|error| format!("{field}: {error}"))
    };
    if [&email.subject, &email.to, &email.from_address].iter().any(|value| value.contains(['\r', '\n'])) {
        return Err(String::from("a header would contain a line break"));
    }
    let from = Mailbox::new(email.from_name.clone(), address(&email.from_address, "from")?);
    let mut builder = Message::builder()
        .from(from)
        .to(Mailbox::new(None, address(&email.to, "to")?))
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .date_now();
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(Mailbox::new(None, address(reply_to, "reply_to")?));
    }
    let built = match &email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(email.text.clone(), html.clone())),
        None => builder.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(email.text.clone())),
    };
    built.map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            from_name: Some(String::from("Acme Ltd")),
            from_address: String::from("receipts@till.example"),
            reply_to: None,
            to: String::from("ada@example.com"),
            subject: String::from("Your receipt"),
            text: String::from("Thank you"),
            html: Some(String::from("<p>Thank you</p>")),
            message_id: String::from("<ntf_1@till.example>"),
        }
    }

    #[test]
    fn a_line_break_in_a_header_is_refused_before_anything_is_sent() {
        for broken in ["Hi\r\nBcc: eve@example.com", "Hi\nX: y"] {
            let mut email = email();
            email.subject = broken.to_string();
            assert!(build(&email).is_err(), "{broken:?}");
        }
        let mut email = email();
        email.to = String::from("ada@example.com\r\nBcc: eve@example.com");
        assert!(build(&email).is_err());
    }

    /// The notifications sender asks `admits()` before it sends anything: an SMTP outage
    /// long enough to open the breaker must not stop e-mail for good once it is over.
    #[tokio::test]
    async fn a_breaker_opened_by_an_outage_lets_a_trial_through_once_its_time_is_up() {
        // A bound socket that never listens: connections to it are refused, and its port
        // stays taken for the whole test.
        let closed = tokio::net::TcpSocket::new_v4().expect("socket");
        closed.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let port = closed.local_addr().expect("address").port();
        let names = Names { dependency: "SMTP", unavailable: "u", reply_invalid: "r", timeout: "t" };
        let mut config = MailerConfig::new(names, Secret::new(format!("smtp://127.0.0.1:{port}")));
        config.breaker.minimum_calls = 3;
        config.breaker.open_for = Duration::from_secs(30);
        let clock = crate::breaker::ManualClock::default();
        let mailer = Mailer::with_clock(config, Arc::new(clock.clone())).expect("mailer");
        for _ in 0..3 {
            assert!(matches!(mailer.send(&email()).await, Err(MailError::Unreachable { .. })));
        }
        assert!(!mailer.admits(), "{:?}", mailer.breaker_state());
        assert!(matches!(mailer.send(&email()).await, Err(MailError::Unavailable { .. })));
        clock.advance(Duration::from_secs(30));
        assert!(mailer.admits(), "{:?}", mailer.breaker_state());
        // The trial still meets the outage, and the breaker opens again.
        assert!(matches!(mailer.send(&email()).await, Err(MailError::Unreachable { .. })));
        assert!(!mailer.admits(), "{:?}", mailer.breaker_state());
    }

    #[test]
    fn a_message_with_html_has_both_parts_and_its_message_id() {
        let formatted = String::from_utf8(build(&email()).expect("builds").formatted()).expect("utf-8");
        assert!(formatted.contains("Message-ID: <ntf_1@till.example>"), "{formatted}");
        assert!(formatted.contains("multipart/alternative"), "{formatted}");
        assert!(formatted.contains("text/plain") && formatted.contains("text/html"), "{formatted}");
    }
}
