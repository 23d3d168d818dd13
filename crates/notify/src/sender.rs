//! The sender: leases due notifications (the head of each recipient's queue, on the
//! channels whose provider is taking messages), sends each through the outbound kit,
//! and records what came of it. Woken when a notification is queued (`notify_queue`),
//! and every `poll_interval`.
//!
//! Nothing is dropped by an outage: a refused connection or an open breaker leaves the
//! notification queued without using an attempt, and the breaker keeps the sender from
//! leasing more for that channel until it lets trials through. Attempts are used by what
//! the provider answered (a 4xx to try later, a broken connection after the message may
//! have been handed over); after `attempts_max` the notification is `failed` with the
//! reason. A message that may have reached the server (Till stopped mid-send: its lease
//! ran out; or the connection broke after DATA) is sent again with the same Message-ID,
//! and `in_doubt` counts it: SMTP has no idempotency key, so this is the one place a
//! receiver can see a copy, and it can tell it by that id.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use till_kit::BusinessId;
use till_outbound::backoff::Backoff;
use till_outbound::mail::{Email, MailError, Mailer};
use till_outbound::OutboundError;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::domain::{Address, Channel, EmailAddress, PhoneNumber};
use crate::store::{self, NotificationRow, Outcome};
use crate::NotificationId;

pub const QUEUE_CHANNEL: &str = "notify_queue";
/// How often kept SMS receipts that no notification claimed are purged, and their age.
const PURGE_INTERVAL: Duration = Duration::from_secs(60 * 60);
const EARLY_RECEIPT_DAYS: i32 = 7;

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Attempts that reached a provider, before a notification is `failed`.
    pub attempts_max: i32,
    pub backoff: Backoff,
    /// How long a lease lasts: longer than a send can take (connect and reply timeouts).
    pub lease_seconds: i32,
    /// Sends in flight at once, per channel.
    pub sends_max: usize,
    pub poll_interval: Duration,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            attempts_max: 8,
            backoff: Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(15 * 60) },
            lease_seconds: 60,
            sends_max: 8,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The providers the sender sends through. `None` for a channel: nothing is sent on it
/// (its notifications stay queued).
#[derive(Clone)]
pub struct Providers {
    pub email: Option<(Mailer, EmailAddress)>,
    pub sms: Option<crate::sms::Twilio>,
}

impl Providers {
    /// The channels whose provider is configured and whose breaker is not open.
    fn taking(&self) -> Vec<&'static str> {
        let mut channels = Vec::new();
        if let Some((mailer, _)) = &self.email {
            if mailer.admits() {
                channels.push(Channel::Email.as_str());
            }
        }
        if let Some(twilio) = &self.sms {
            if twilio.admits() {
                channels.push(Channel::Sms.as_str());
            }
        }
        channels
    }
}

pub async fn run(pool: PgPool, providers: Providers, config: SenderConfig, mut shutdown: watch::Receiver<bool>) {
    if providers.email.is_none() {
        tracing::warn!("no SMTP server is set (TILL_SMTP_URL): e-mail notifications stay queued");
    }
    if providers.sms.is_none() {
        tracing::warn!("no SMS provider is set (TILL_TWILIO_BASE_URL): SMS notifications stay queued");
    }
    let mut listener = till_db::listen(&pool, QUEUE_CHANNEL).await;
    // Slots per channel: a slow SMTP server holds up only e-mail, never SMS.
    let slots: Vec<(&'static str, Arc<Semaphore>)> = [Channel::Email, Channel::Sms]
        .into_iter()
        .map(|channel| (channel.as_str(), Arc::new(Semaphore::new(config.sends_max.max(1)))))
        .collect();
    let mut sends = JoinSet::new();
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(PURGE_INTERVAL);
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
            _ = purge.tick() => {
                match store::purge_early_receipts(&pool, EARLY_RECEIPT_DAYS).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged SMS receipts no notification recorded"),
                    Err(error) => tracing::warn!(%error, "purging old SMS receipts failed; trying again later"),
                }
                continue;
            }
            outcome = notified => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "the notification queue's listener failed; polling only from now on");
                    listener = None;
                }
            }
            Some(ended) = sends.join_next(), if !sends.is_empty() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "a notification send task failed");
                }
            }
        }
        let taking = providers.taking();
        for (channel, slots) in slots.iter().filter(|(channel, _)| taking.contains(channel)) {
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let rows_max = i32::try_from(free).unwrap_or(i32::MAX);
            let leased = match store::lease_due(&pool, &[channel], rows_max, config.lease_seconds).await {
                Ok(leased) => leased,
                Err(error) => {
                    tracing::warn!(%error, channel, "leasing due notifications failed; retrying on the next tick");
                    continue;
                }
            };
            // At most `free` were leased, and only this loop takes this channel's slots.
            for (business, id) in leased {
                let Ok(permit) = Arc::clone(slots).try_acquire_owned() else { break };
                let (pool, providers, config) = (pool.clone(), providers.clone(), config.clone());
                sends.spawn(async move {
                    if let Err(error) = send_one(&pool, &providers, &config, BusinessId::from_uuid(business), id).await {
                        // The lease runs out and the notification is leased again.
                        tracing::warn!(%error, notification_id = %NotificationId::from_uuid(id), "a notification send could not be recorded");
                    }
                    drop(permit);
                });
            }
        }
    }
    // Shutdown: sends in flight finish and record (each is bounded by its timeouts).
    while let Some(ended) = sends.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a notification send task failed");
        }
    }
}

async fn send_one(
    pool: &PgPool,
    providers: &Providers,
    config: &SenderConfig,
    business: BusinessId,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    let mut transaction = till_db::begin_tenant(pool, business).await?;
    let row = store::notification(&mut transaction, id).await?;
    transaction.commit().await?;
    // Ended meanwhile (another instance took it over after this lease ran out, and
    // finished): nothing to send.
    let Some(row) = row.filter(|row| row.status == "queued") else { return Ok(()) };
    let retry_in = |attempt: i32| -> i64 {
        let attempt = u32::try_from(attempt).unwrap_or(0);
        i64::try_from(config.backoff.delay(attempt, rand::random(), None).as_millis()).unwrap_or(i64::MAX)
    };
    let last = row.attempts + 1 >= config.attempts_max;
    let (outcome, why, sms_id) = match (Channel::parse(&row.channel), &providers.email, &providers.sms) {
        (Ok(Channel::Email), Some((mailer, from)), _) => {
            let (outcome, why) = email_outcome(mailer.send(&email_of(&row, from)).await, last, retry_in(row.attempts));
            (outcome, why, None)
        }
        (Ok(Channel::Sms), _, Some(twilio)) => match PhoneNumber::parse(&row.recipient) {
            Ok(to) => send_sms(twilio, &row, &to, last, retry_in(row.attempts)).await,
            Err(why) => (Kind::Failed { in_doubt: false }, format!("the recipient {why}"), None),
        },
        // Leased only for a channel with a provider; a provider removed meanwhile (a
        // restart without it) leaves the notification queued.
        _ => (Kind::NotTried { retry_in_ms: 60_000 }, String::from("no provider is set for this channel"), None),
    };
    // A provider's refusal often quotes the address ("550 <ada@example.com>: no such
    // user"): what is stored (and shown to viewers) and logged names it masked.
    let why = match Address::parse(channel_of(&row), &row.recipient) {
        Ok(address) if !matches!(outcome, Kind::Sent) => why.replace(address.as_str(), &address.masked()),
        _ => why,
    };
    if !matches!(outcome, Kind::Sent) {
        tracing::info!(notification_id = %NotificationId::from_uuid(id), channel = row.channel, %why, "a notification was not sent");
    }
    let outcome = match outcome {
        Kind::Sent => Outcome::Sent { provider_id: &why },
        Kind::NotTried { retry_in_ms } => Outcome::NotTried { retry_in_ms, why: &why },
        Kind::Retry { retry_in_ms, in_doubt } => Outcome::Retry { retry_in_ms, why: &why, in_doubt },
        Kind::Failed { in_doubt } => Outcome::Failed { why: &why, in_doubt },
    };
    let mut transaction = till_db::begin_tenant(pool, business).await?;
    if let Some(sid) = &sms_id {
        // Under the lock a status callback for this message takes too: the callback
        // either sees `sent` committed, or left its receipt for the take below.
        store::lock_provider_id(&mut transaction, sid).await?;
    }
    if !store::record(&mut transaction, id, &outcome).await? {
        tracing::warn!(notification_id = %NotificationId::from_uuid(id), "a notification ended elsewhere while this instance sent it");
    }
    if let Some(sid) = &sms_id {
        store::take_early_receipt(&mut transaction, sid).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// What a send came to, before its words are borrowed into an [`Outcome`].
enum Kind {
    Sent,
    NotTried { retry_in_ms: i64 },
    Retry { retry_in_ms: i64, in_doubt: bool },
    Failed { in_doubt: bool },
}

fn channel_of(row: &NotificationRow) -> Channel {
    Channel::parse(&row.channel).unwrap_or(Channel::Email)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An SMTP send's outcome: `why` is the server's reply when it took the message.
fn email_outcome(
    sent: Result<till_outbound::mail::Accepted, MailError>,
    last: bool,
    retry_in_ms: i64,
) -> (Kind, String) {
    let error = match sent {
        Ok(accepted) => return (Kind::Sent, accepted.reply),
        Err(error) => error,
    };
    let why = error.to_string();
    let kind = match error {
        MailError::Unavailable { retry_after, .. } => Kind::NotTried { retry_in_ms: millis(retry_after) },
        MailError::Unreachable { .. } => Kind::NotTried { retry_in_ms: retry_in_ms.clamp(200, 5_000) },
        MailError::Refused { transient: false, .. } | MailError::Invalid(_) => Kind::Failed { in_doubt: false },
        MailError::Refused { transient: true, .. } if last => Kind::Failed { in_doubt: false },
        MailError::Refused { transient: true, .. } => Kind::Retry { retry_in_ms, in_doubt: false },
        MailError::InDoubt { .. } if last => Kind::Failed { in_doubt: true },
        MailError::InDoubt { .. } => Kind::Retry { retry_in_ms, in_doubt: true },
    };
    (kind, why)
}

/// Sends an SMS notification, unless an earlier attempt whose outcome was unknown did:
/// Twilio lists what it sent, and a message to this number with this text since the
/// notification was made is taken as this one's (Twilio has no idempotency key).
async fn send_sms(
    twilio: &crate::sms::Twilio,
    row: &NotificationRow,
    to: &PhoneNumber,
    last: bool,
    retry_in_ms: i64,
) -> (Kind, String, Option<String>) {
    let text = row.text_body.as_deref().unwrap_or_default();
    if row.in_doubt > 0 {
        match twilio.find_sent(to, text, row.created_at).await {
            Ok(Some(sid)) => return (Kind::Sent, sid.clone(), Some(sid)),
            Ok(None) => {}
            // Not knowing whether it went, it does not send it again yet.
            Err(error) => {
                let why = format!("asking Twilio what it sent: {error}");
                return (Kind::NotTried { retry_in_ms: retry_in_ms.max(1_000) }, why, None);
            }
        }
    }
    sms_outcome(twilio.send(to, text).await, last, retry_in_ms)
}

/// A Twilio create's outcome, and the message's SID when Twilio took it.
fn sms_outcome(
    sent: Result<crate::sms::Answer, OutboundError>,
    last: bool,
    retry_in_ms: i64,
) -> (Kind, String, Option<String>) {
    match sent {
        Ok(crate::sms::Answer::Accepted { sid }) => (Kind::Sent, sid.clone(), Some(sid)),
        // Twilio refused the account, not the message (credentials, a wrong account):
        // an operator's fix, so the message waits for it rather than fail.
        Ok(crate::sms::Answer::Refused { status: 401 | 403 | 404, code, message }) => {
            tracing::error!(code, %message, "Twilio refuses Till's account; SMS notifications wait (check TILL_TWILIO_*)");
            (
                Kind::NotTried { retry_in_ms: 60_000 },
                format!("Twilio refused the account (error {code}): {message}"),
                None,
            )
        }
        Ok(crate::sms::Answer::Refused { code, message, .. }) => {
            (Kind::Failed { in_doubt: false }, format!("Twilio refused it (error {code}): {message}"), None)
        }
        Err(error) => {
            let why = error.to_string();
            let kind = match &error {
                OutboundError::Unavailable { retry_after, .. } => Kind::NotTried { retry_in_ms: millis(*retry_after) },
                OutboundError::Connect { .. } => Kind::NotTried { retry_in_ms: retry_in_ms.clamp(200, 5_000) },
                // A 429 through every retry: Twilio looked at nothing.
                OutboundError::Failing { status: 429, retry_after, .. } => {
                    Kind::NotTried { retry_in_ms: retry_after.map_or(retry_in_ms, millis) }
                }
                OutboundError::Request { .. } => Kind::Failed { in_doubt: false },
                _ if last => Kind::Failed { in_doubt: error.may_have_acted() },
                _ => Kind::Retry { retry_in_ms, in_doubt: error.may_have_acted() },
            };
            (kind, why, None)
        }
    }
}

/// The message of an e-mail notification: rendered when it was made; its Message-ID is
/// the notification's id, the same on every attempt.
fn email_of(row: &NotificationRow, from: &EmailAddress) -> Email {
    let domain = from.as_str().split_once('@').map(|(_, domain)| domain).unwrap_or("till.invalid");
    Email {
        from_name: row.sender_name.clone(),
        from_address: from.as_str().to_string(),
        reply_to: row.reply_to.clone(),
        to: row.recipient.clone(),
        subject: row.subject.clone().unwrap_or_default(),
        text: row.text_body.clone().unwrap_or_default(),
        html: row.html_body.clone(),
        message_id: format!("<{}@{domain}>", NotificationId::from_uuid(row.id)),
    }
}
