//! Salesforce's REST API through the outbound kit (no maintained Rust client exists):
//! an access token from the OAuth 2.0 client-credentials flow, kept and refreshed when
//! the org answers 401, and upserts by external id sent 25 at a time through the
//! Composite resource, whose answer is always 200 with a status per subrequest — each is
//! read, and the reply is checked to answer exactly the subrequests sent.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use till_kit::Secret;
use till_outbound::{
    Credentials, Dependency, DependencyConfig, HeaderName, InvalidReply, Method, Names, OutboundError, OutboundRequest,
    Url,
};

pub const SALESFORCE: Names = Names {
    dependency: "salesforce",
    unavailable: "salesforce_unavailable",
    reply_invalid: "salesforce_reply_invalid",
    timeout: "salesforce_timeout",
};

/// The most subrequests one Composite request may carry.
pub const COMPOSITE_MAX: usize = 25;

/// The org and the connected app Till signs in as.
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    /// The org's My Domain URL (`https://acme.my.salesforce.com/`): the client-credentials
    /// flow and the REST API are both there.
    pub instance_url: Url,
    pub client_id: String,
    pub client_secret: Secret<String>,
    /// `v60.0`.
    pub api_version: String,
}

/// One upsert: `PATCH /sobjects/{sobject}/{field}/{value}` with `fields`.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub sobject: String,
    pub external_field: String,
    pub external_id: String,
    /// A JSON object, as text.
    pub fields: String,
}

/// What the org answered one upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The org refused the record (a validation rule, a duplicate, a missing related
    /// record): it will not take it as it is. `code` is Salesforce's `errorCode`.
    Refused {
        code: String,
        message: String,
    },
    /// The session ended meanwhile: send it again with a new token.
    SessionExpired,
    /// The org failed, or is over its limits: try again later.
    Failed {
        status: u16,
        code: String,
    },
}

/// What a Composite call came to, as a whole.
#[derive(Debug)]
pub enum Batch {
    /// One outcome per upsert, in order.
    Answered(Vec<Outcome>),
    /// The org refused the token (401): the caller refreshes it and sends the batch again.
    SessionExpired,
    /// The org is over its API limits (403 `REQUEST_LIMIT_EXCEEDED`, or 429): nothing was done.
    Limited,
}

#[derive(Clone)]
pub struct Salesforce {
    dependency: Dependency,
    settings: SalesforceSettings,
    token: Arc<Mutex<Option<Secret<String>>>>,
}

impl std::fmt::Debug for Salesforce {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Salesforce")
            .field("instance_url", &self.settings.instance_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompositeRequest<'a> {
    all_or_none: bool,
    composite_request: Vec<Subrequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Subrequest<'a> {
    method: &'static str,
    url: String,
    reference_id: String,
    body: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompositeReply {
    composite_response: Vec<Subresponse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subresponse {
    body: serde_json::Value,
    http_status_code: u16,
    reference_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorItem {
    error_code: String,
    message: String,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    token_type: String,
}

impl Salesforce {
    pub fn new(settings: SalesforceSettings) -> Result<Salesforce, String> {
        let mut config = DependencyConfig::new(SALESFORCE, settings.instance_url.clone(), Credentials::None);
        config.attempt_timeout = std::time::Duration::from_secs(20);
        config.concurrency_max = 4;
        let dependency = Dependency::new(config).map_err(|error| format!("the Salesforce client: {error}"))?;
        Ok(Salesforce { dependency, settings, token: Arc::new(Mutex::new(None)) })
    }

    pub fn admits(&self) -> bool {
        !matches!(self.dependency.breaker_state(), till_outbound::breaker::BreakerState::Open { .. })
    }

    /// Forgets the token: the next call gets a new one.
    pub fn expire_token(&self) {
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The token, asked for when there is none.
    async fn token(&self) -> Result<Secret<String>, OutboundError> {
        if let Some(token) = self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(token);
        }
        let request = OutboundRequest::new(Method::POST, "services/oauth2/token").form(&[
            ("grant_type", String::from("client_credentials")),
            ("client_id", self.settings.client_id.clone()),
            ("client_secret", self.settings.client_secret.expose_secret().clone()),
        ]);
        let token = self
            .dependency
            .call(&request, |reply| {
                if reply.status != till_outbound::StatusCode::OK {
                    return Err(InvalidReply::new(
                        "status",
                        format!("HTTP {} to the token request", reply.status.as_u16()),
                    ));
                }
                let token: TokenReply = reply.json()?;
                if !token.token_type.eq_ignore_ascii_case("bearer") || token.access_token.is_empty() {
                    return Err(InvalidReply::new("access_token", "is not a bearer token"));
                }
                Ok(Secret::new(token.access_token))
            })
            .await?;
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    /// Sends `upserts` (at most [`COMPOSITE_MAX`]) in one Composite request, each on its own
    /// (`allOrNone: false`: one refused record does not roll back the others).
    pub async fn upsert_all(&self, upserts: &[Upsert]) -> Result<Batch, OutboundError> {
        let bodies: Vec<Box<RawValue>> = upserts
            .iter()
            .map(|upsert| RawValue::from_string(upsert.fields.clone()))
            .collect::<Result<_, _>>()
            .map_err(|error| OutboundError::Request {
                names: SALESFORCE,
                cause: format!("a change's fields: {error}"),
            })?;
        let version = &self.settings.api_version;
        let subrequests = upserts
            .iter()
            .zip(&bodies)
            .enumerate()
            .map(|(index, (upsert, body))| {
                let value: String = form_urlencoded::byte_serialize(upsert.external_id.as_bytes()).collect();
                Subrequest {
                    method: "PATCH",
                    url: format!(
                        "/services/data/{version}/sobjects/{}/{}/{value}",
                        upsert.sobject, upsert.external_field
                    ),
                    reference_id: format!("change{index}"),
                    body,
                }
            })
            .collect();
        let composite = CompositeRequest { all_or_none: false, composite_request: subrequests };
        let token = self.token().await?;
        let mut request = OutboundRequest::new(Method::POST, format!("services/data/{version}/composite"))
            .json(&composite)
            .map_err(|error| OutboundError::Request { names: SALESFORCE, cause: error.to_string() })?;
        let bearer = format!("Bearer {}", token.expose_secret());
        let header = bearer.parse().map_err(|_| OutboundError::Request {
            names: SALESFORCE,
            cause: String::from("the token is not a header value"),
        })?;
        request.headers.insert(HeaderName::from_static("authorization"), header);
        self.dependency.call(&request, |reply| batch_of(reply, upserts.len())).await
    }
}

fn first_error(body: &serde_json::Value) -> (String, String) {
    let errors: Vec<ErrorItem> = serde_json::from_value(body.clone()).unwrap_or_default();
    match errors.into_iter().next() {
        Some(error) => (error.error_code, error.message),
        None => (String::from("UNKNOWN"), String::from("no error was given")),
    }
}

/// The Composite reply: one subresponse per subrequest, by reference id, each read.
fn batch_of(reply: &till_outbound::Reply, sent: usize) -> Result<Batch, InvalidReply> {
    let status = reply.status.as_u16();
    if status == 401 {
        return Ok(Batch::SessionExpired);
    }
    if status == 403 || status == 429 {
        let body: serde_json::Value = reply.json().unwrap_or_default();
        let (code, _) = first_error(&body);
        if code == "REQUEST_LIMIT_EXCEEDED" || status == 429 {
            return Ok(Batch::Limited);
        }
    }
    if status != 200 {
        return Err(InvalidReply::new("status", format!("HTTP {status} to a Composite request")));
    }
    let reply: CompositeReply = reply.json()?;
    if reply.composite_response.len() != sent {
        return Err(InvalidReply::new(
            "compositeResponse",
            format!("{} answers to {sent} subrequests", reply.composite_response.len()),
        ));
    }
    let mut outcomes = Vec::with_capacity(sent);
    for (index, answer) in reply.composite_response.iter().enumerate() {
        if answer.reference_id != format!("change{index}") {
            return Err(InvalidReply::new("compositeResponse.referenceId", "not the subrequests' order"));
        }
        let outcome = match answer.http_status_code {
            200 | 201 | 204 => {
                // A 2xx upsert says success; anything else is not one to act on.
                if answer.body.get("success").is_some_and(|success| success != true) {
                    return Err(InvalidReply::new("compositeResponse.body.success", "a 2xx that is not a success"));
                }
                Outcome::Done
            }
            401 => Outcome::SessionExpired,
            code @ (400 | 404 | 409) => {
                let (error_code, message) = first_error(&answer.body);
                if error_code == "PROCESSING_HALTED" {
                    Outcome::Failed { status: code, code: error_code }
                } else {
                    Outcome::Refused { code: error_code, message }
                }
            }
            code => Outcome::Failed { status: code, code: first_error(&answer.body).0 },
        };
        outcomes.push(outcome);
    }
    Ok(Batch::Answered(outcomes))
}
