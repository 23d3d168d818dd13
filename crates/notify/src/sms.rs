//! SMS through Twilio's Programmable Messaging API (the Message resource, 2010-04-01):
//! the adapter that sends, through the outbound kit, and the status callback Twilio
//! POSTs as a message is sent, delivered or not, verified by its `X-Twilio-Signature`.
//!
//! Twilio takes no idempotency key for a new message, so the kit retries a create only
//! when nothing reached Twilio (no connection, a 429); a timeout after sending is in
//! doubt, and the sender decides (a second copy, counted `in_doubt`, as for e-mail).
//! The reply is checked before it is acted on: a `sid` of Twilio's form (`SM` and 32
//! hex digits), a status Twilio has, the number it was sent to.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use till_kit::Secret;
use till_outbound::{
    Credentials, Dependency, DependencyConfig, InvalidReply, Method, Names, OutboundError, OutboundRequest, Url,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::PhoneNumber;

pub const STATUS_PATH: &str = "/v1/providers/sms/status";

pub const TWILIO: Names = Names {
    dependency: "twilio",
    unavailable: "twilio_unavailable",
    reply_invalid: "twilio_reply_invalid",
    timeout: "twilio_timeout",
};

/// Where SMS goes: a Twilio account (or the simulator's).
#[derive(Debug, Clone)]
pub struct SmsSettings {
    /// `https://api.twilio.com/` (the simulator: `http://…/sms/`).
    pub base_url: Url,
    /// `AC…`.
    pub account_sid: String,
    pub auth_token: Secret<String>,
    /// The sender: an E.164 number on the account, or a Messaging Service (`MG…`).
    pub from: String,
    /// Where Twilio sends status callbacks: this Till's `/v1/providers/sms/status`, as
    /// Twilio will request it (the signature covers the exact URL).
    pub status_callback: Url,
}

/// What Twilio answered a create with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It took the message: its `sid`.
    Accepted { sid: String },
    /// It refused it (a 4xx with Twilio's error code): a 400 is about the message (it
    /// will never be sent); a 401, 403 or 404 about Till's account.
    Refused { status: u16, code: i64, message: String },
}

#[derive(Clone)]
pub struct Twilio {
    dependency: Dependency,
    settings: SmsSettings,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Twilio").field("account_sid", &self.settings.account_sid).finish_non_exhaustive()
    }
}

impl Twilio {
    pub fn new(settings: SmsSettings) -> Result<Twilio, String> {
        let credentials =
            Credentials::Basic { user: settings.account_sid.clone(), password: settings.auth_token.clone() };
        let mut config = DependencyConfig::new(TWILIO, settings.base_url.clone(), credentials);
        config.attempt_timeout = std::time::Duration::from_secs(10);
        config.concurrency_max = 16;
        let dependency = Dependency::new(config).map_err(|error| format!("the Twilio client: {error}"))?;
        Ok(Twilio { dependency, settings })
    }

    pub fn admits(&self) -> bool {
        !matches!(self.dependency.breaker_state(), till_outbound::breaker::BreakerState::Open { .. })
    }

    pub fn settings(&self) -> &SmsSettings {
        &self.settings
    }

    /// Sends `text` to `to`.
    pub async fn send(&self, to: &PhoneNumber, text: &str) -> Result<Answer, OutboundError> {
        let sender = if self.settings.from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let path = format!("2010-04-01/Accounts/{}/Messages.json", self.settings.account_sid);
        let request = OutboundRequest::new(Method::POST, path).form(&[
            ("To", to.as_str().to_string()),
            (sender, self.settings.from.clone()),
            ("Body", text.to_string()),
            ("StatusCallback", self.settings.status_callback.to_string()),
        ]);
        self.dependency.call(&request, |reply| validate(reply, to)).await
    }

    /// A message this account sent to `to` with exactly `text` since `since`, if Twilio
    /// has one: what an earlier attempt whose reply was lost made. The sender asks before
    /// it sends a message again, and takes that message's SID instead of sending twice.
    pub async fn find_sent(
        &self,
        to: &PhoneNumber,
        text: &str,
        since: time::OffsetDateTime,
    ) -> Result<Option<String>, OutboundError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", to.as_str())
            .append_pair("PageSize", "50")
            .finish();
        let path = format!("2010-04-01/Accounts/{}/Messages.json?{query}", self.settings.account_sid);
        let request = OutboundRequest::new(Method::GET, path);
        // Twilio's dates are to the second; a clock a little off must not hide it.
        let since = since - time::Duration::seconds(60);
        self.dependency.call(&request, |reply| found(reply, to, text, since)).await
    }
}

#[derive(Deserialize)]
struct ListReply {
    messages: Vec<ListedMessage>,
}

#[derive(Deserialize)]
struct ListedMessage {
    sid: String,
    to: String,
    body: String,
    date_created: String,
}

fn found(
    reply: &till_outbound::Reply,
    to: &PhoneNumber,
    text: &str,
    since: time::OffsetDateTime,
) -> Result<Option<String>, InvalidReply> {
    if reply.status != till_outbound::StatusCode::OK {
        return Err(InvalidReply::new("status", format!("HTTP {} to a list", reply.status.as_u16())));
    }
    let list: ListReply = reply.json()?;
    for message in list.messages {
        let created =
            time::OffsetDateTime::parse(&message.date_created, &time::format_description::well_known::Rfc2822)
                .map_err(|_| InvalidReply::new("messages.date_created", "is not an RFC 2822 date"))?;
        if message.to == to.as_str() && message.body == text && created >= since && valid_sid(&message.sid) {
            return Ok(Some(message.sid));
        }
    }
    Ok(None)
}

fn valid_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("SM") && sid.bytes().skip(2).all(|byte| byte.is_ascii_hexdigit())
}

#[derive(Deserialize)]
struct MessageReply {
    sid: String,
    status: String,
    to: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    code: i64,
    message: String,
}

const STATUSES: [&str; 10] =
    ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read", "canceled"];

fn validate(reply: &till_outbound::Reply, to: &PhoneNumber) -> Result<Answer, InvalidReply> {
    if reply.status.is_client_error() {
        let error: ErrorReply = reply.json()?;
        return Ok(Answer::Refused { status: reply.status.as_u16(), code: error.code, message: error.message });
    }
    if reply.status != till_outbound::StatusCode::CREATED && reply.status != till_outbound::StatusCode::OK {
        return Err(InvalidReply::new("status", format!("HTTP {} to a create", reply.status.as_u16())));
    }
    let message: MessageReply = reply.json()?;
    if !valid_sid(&message.sid) {
        return Err(InvalidReply::new("sid", "is not a message SID (SM and 32 hex digits)"));
    }
    if !STATUSES.contains(&message.status.as_str()) {
        return Err(InvalidReply::new("status", format!("{:?} is not a status Twilio has", message.status)));
    }
    if message.to != to.as_str() {
        return Err(InvalidReply::new("to", "is not the number the message was sent to"));
    }
    Ok(Answer::Accepted { sid: message.sid })
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, the URL, then each
/// parameter's name and value, sorted by name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The status callback's route (without an SMS provider set, every callback is refused:
/// there is no auth token to check it with).
pub fn routes(twilio: Option<Twilio>, pool: sqlx::PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(status_callback)).with_state(Callback { twilio, pool })
}

#[derive(Clone)]
struct Callback {
    twilio: Option<Twilio>,
    pool: sqlx::PgPool,
}

/// Callback bodies larger than this are not Twilio's.
const CALLBACK_BYTES_MAX: usize = 16 * 1024;

/// Twilio's status callback for a message Till sent: verified by `X-Twilio-Signature`
/// over this URL and the form's parameters; a final status (`delivered`, `undelivered`,
/// `failed`) ends the notification, once — a repeated or late callback changes nothing,
/// and one that arrives before Till recorded the message is kept until it does.
#[utoipa::path(post, path = "/v1/providers/sms/status", tag = "notifications",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback: MessageSid, MessageStatus, ErrorCode, …"),
    params(("X-Twilio-Signature" = String, Header, description = "Twilio's signature of this URL and the parameters.")),
    responses((status = 204, description = "Taken (or already taken)."),
        (status = 400, body = till_http::Problem, content_type = "application/problem+json", description = "Not signed by the account's auth token, or not a status callback.")))]
async fn status_callback(State(callback): State<Callback>, headers: HeaderMap, body: Bytes) -> Response {
    let refuse = |detail: &str| {
        till_http::ApiError::new(till_http::ErrorCode::WebhookSignatureInvalid, detail.to_string()).into_response()
    };
    if body.len() > CALLBACK_BYTES_MAX {
        return refuse("The body is too large to be a status callback.");
    }
    let Some(signed) = headers.get("x-twilio-signature").and_then(|value| value.to_str().ok()) else {
        return refuse("X-Twilio-Signature is missing.");
    };
    let Some(twilio) = &callback.twilio else {
        return refuse("No SMS provider is set, so no callback can be verified.");
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let settings = twilio.settings();
    let expected = signature(settings.auth_token.expose_secret(), settings.status_callback.as_str(), &params);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signed.trim().as_bytes())) {
        return refuse("X-Twilio-Signature does not match this URL and body.");
    }
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    if param("AccountSid") != Some(settings.account_sid.as_str()) {
        return refuse("The callback is for another account.");
    }
    let (Some(sid), Some(status)) = (param("MessageSid"), param("MessageStatus")) else {
        return refuse("MessageSid and MessageStatus are required.");
    };
    let receipt = match status {
        "delivered" | "read" => Some(("delivered", None)),
        "undelivered" | "failed" => {
            let code = param("ErrorCode").filter(|code| code.len() <= 8 && code.bytes().all(|b| b.is_ascii_digit()));
            Some(("failed", Some(format!("Twilio: {status} (error {})", code.unwrap_or("unknown")))))
        }
        // Steps on the way (queued, sending, sent, …) end nothing.
        _ => None,
    };
    let Some((status, detail)) = receipt else { return StatusCode::NO_CONTENT.into_response() };
    if sid.len() > 64 {
        return refuse("MessageSid is not Twilio's.");
    }
    match crate::store::apply_receipt(&callback.pool, sid, status, detail.as_deref()).await {
        Ok(outcome) => {
            tracing::debug!(message_sid = sid, status, outcome, "an SMS status callback");
            StatusCode::NO_CONTENT.into_response()
        }
        // Twilio retries a callback that failed; nothing was applied.
        Err(error) => till_http::ApiError::database(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    /// The known answer Twilio's own SDKs test their request validators with.
    #[test]
    fn the_signature_is_twilios() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        assert_eq!(
            signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }
}
