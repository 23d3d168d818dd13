//! Webhooks a provider sends about its objects, to the endpoint it was given
//! ([`crate::Options::webhooks`], or `POST /_sim/webhooks`), with the faults armed for
//! the operation `webhook:{event type}` (`webhook:payment_intent.succeeded`), or else
//! for `webhook` (any event):
//! - `webhook_drop`: never sent;
//! - `webhook_duplicate`: sent twice;
//! - `webhook_delay`: sent after `delay_ms` (default 2 s), while later ones go ahead;
//! - `webhook_reorder`: held back and sent right after the next one.
//!
//! The provider signs each body with its own scheme (Stripe's `Stripe-Signature`,
//! Razorpay's `X-Razorpay-Signature`). Each is sent once (a failed send is logged, not
//! retried): a receiver that misses one has the provider's API to ask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::{FaultKind, Faults};

/// Where a provider sends its webhooks, and the secret it signs them with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub provider: String,
    pub url: String,
    pub secret: String,
}

/// One webhook, signed, ready to send.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

const DELAY_DEFAULT: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Webhooks {
    targets: Arc<Mutex<HashMap<String, Target>>>,
    /// A webhook held back by `webhook_reorder`, per provider.
    held: Arc<Mutex<HashMap<String, Webhook>>>,
    client: Arc<std::sync::OnceLock<reqwest::Client>>,
}

impl Webhooks {
    pub fn set(&self, target: Target) {
        lock(&self.targets).insert(target.provider.clone(), target);
    }

    /// The secret `provider` signs with, if it has somewhere to send.
    pub fn secret(&self, provider: &str) -> Option<String> {
        lock(&self.targets).get(provider).map(|target| target.secret.clone())
    }

    /// Sends `webhook` (an event of `kind`) from `provider` in the background, as the
    /// armed fault says.
    pub fn send(&self, faults: &Faults, provider: &str, kind: &str, webhook: Webhook) {
        let Some(target) = lock(&self.targets).get(provider).cloned() else { return };
        self.send_to(faults, provider, kind, &target.url, webhook);
    }

    /// Sends `webhook` to `url` (a callback URL the request named, as Twilio's
    /// `StatusCallback`), with the faults of [`Webhooks::send`].
    pub fn send_to(&self, faults: &Faults, provider: &str, kind: &str, url: &str, webhook: Webhook) {
        let url = url.to_string();
        let fault = faults.take(provider, &format!("webhook:{kind}")).or_else(|| faults.take(provider, "webhook"));
        let kind = fault.as_ref().map(|fault| fault.fault);
        let delay = fault.as_ref().and_then(|fault| fault.delay_ms).map_or(DELAY_DEFAULT, Duration::from_millis);
        let mut batch: Vec<(Webhook, Duration)> = match kind {
            Some(FaultKind::WebhookDrop) => Vec::new(),
            Some(FaultKind::WebhookDuplicate) => vec![(webhook.clone(), Duration::ZERO), (webhook, Duration::ZERO)],
            Some(FaultKind::WebhookDelay) => vec![(webhook, delay)],
            Some(FaultKind::WebhookReorder) => {
                lock(&self.held).insert(provider.to_string(), webhook);
                return;
            }
            _ => vec![(webhook, Duration::ZERO)],
        };
        // One held back goes right after this one: the two arrive in the wrong order.
        if let Some(held) = lock(&self.held).remove(provider) {
            batch.push((held, Duration::from_millis(50)));
        }
        let client = self.client.get_or_init(reqwest::Client::new).clone();
        tokio::spawn(async move {
            for (webhook, delay) in batch {
                let client = client.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut request = client.post(&url).timeout(Duration::from_secs(10)).body(webhook.body);
                    for (name, value) in webhook.headers {
                        request = request.header(name, value);
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {}
                        Ok(response) => tracing::warn!(%url, status = %response.status(), "a webhook was refused"),
                        Err(error) => tracing::warn!(%url, %error, "a webhook could not be sent"),
                    }
                });
                // Each next one leaves a little after the last, so order is what it says.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
