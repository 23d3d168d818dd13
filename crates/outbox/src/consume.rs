//! What a service needs to consume events, and nothing more: a [`Subscription`] (its
//! name and the event types it wants), a [`Handler`] (its effect, run in the transaction
//! that records the event in its inbox), and the [`Subscriber`] the events service
//! offers the services mounted after it, which runs the handler on whichever bus this
//! Till runs (the embedded log or RabbitMQ). A service so consumes events without
//! linking the events service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::PgConnection;
use tokio::sync::watch;

use crate::envelope::EventBody;

/// Why an effect failed; the bus retries the event.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The effect of handling one event, run in the event's business's transaction.
pub type Effect<'c> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'c>>;

/// What a consumer does with one event: its effect, run in the transaction that records
/// the event in the consumer's inbox (and in the event's business, so row-level security
/// applies as it does to requests).
pub trait Handler: Send + Sync + 'static {
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c>;
}

impl<F> Handler for F
where
    F: for<'c> Fn(&'c mut PgConnection, &'c EventBody) -> Effect<'c> + Send + Sync + 'static,
{
    fn handle<'c>(&'c self, connection: &'c mut PgConnection, event: &'c EventBody) -> Effect<'c> {
        self(connection, event)
    }
}

#[derive(Debug, Clone)]
pub struct Subscription {
    /// The consumer's name: its inbox, its cursor or queue. Lower case, digits, `-`.
    pub name: String,
    /// Event types or topic patterns (`*` one word, `#` any number of words).
    pub patterns: Vec<String>,
}

impl Subscription {
    pub fn new(name: &str, patterns: &[&str]) -> Result<Subscription, String> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !valid_name {
            return Err(format!("consumer name {name:?}: use 1–64 of a-z, 0-9 and -"));
        }
        if patterns.is_empty() {
            return Err(format!("consumer {name} subscribes to nothing"));
        }
        Ok(Subscription {
            name: name.to_string(),
            patterns: patterns.iter().map(|pattern| pattern.to_string()).collect(),
        })
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|pattern| topic_matches(pattern, event_type))
    }
}

/// RabbitMQ's topic matching: words split on `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((word, rest)) => match key.split_first() {
                Some((first, key_rest)) => (*word == "*" || word == first) && matches(rest, key_rest),
                None => false,
            },
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&pattern, &key)
}

type Run = Pin<Box<dyn Future<Output = ()> + Send>>;
type Start = dyn Fn(Subscription, Arc<dyn Handler>, watch::Receiver<bool>) -> Run + Send + Sync;

/// Runs a consumer on this Till's bus until shutdown: offered by the events service
/// (in the mount context) to the services mounted after it.
#[derive(Clone)]
pub struct Subscriber {
    run: Arc<Start>,
}

impl Subscriber {
    pub fn new<F, Fut>(run: F) -> Subscriber
    where
        F: Fn(Subscription, Arc<dyn Handler>, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Subscriber {
            run: Arc::new(move |subscription, handler, shutdown| Box::pin(run(subscription, handler, shutdown))),
        }
    }

    /// Delivers every event `subscription` wants to `handler`, at least once, until
    /// `shutdown` flips; the inbox makes the effect happen once.
    pub fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        (self.run)(subscription, handler, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        for (pattern, key, expected) in [
            ("transfer.posted", "transfer.posted", true),
            ("transfer.*", "transfer.posted", true),
            ("transfer.*", "account.created", false),
            ("*.created", "account.created", true),
            ("#", "webhook_endpoint.disabled", true),
            ("transfer.#", "transfer", true),
            ("#.created", "api_key.created", true),
            ("*", "transfer.posted", false),
            ("transfer.posted.*", "transfer.posted", false),
        ] {
            assert_eq!(topic_matches(pattern, key), expected, "{pattern} ~ {key}");
        }
    }
}
