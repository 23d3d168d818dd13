//! The ledger's HTTP handlers. Reads run in the request's transaction; every command that
//! moves money goes to the [`Engine`], which applies it in a group-commit batch and
//! stores its response under the request's Idempotency-Key in the same transaction.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use till_http::auth::Principal;
use till_http::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use till_http::pagination::{ListParams, Page};
use till_http::unit_of_work::{IdempotencyContext, Tx};
use till_http::ErrorCode;
use till_http::{ApiError, Problem};
use till_kit::schema::{Name200, Text500};
use till_kit::{Currency, HumanText, Metadata, Money};
use till_outbox::EventType;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::check::{self, CheckReport};
use crate::domain::{
    AccountChange, AccountRefusal, AccountStatus, Command, HoldExpiry, NewTransfer, Side, ACCOUNT_NAME_CHARS_MAX,
    AMOUNT_MAX, BATCH_TRANSFERS_MAX, BOUND_MAX, DESCRIPTION_CHARS_MAX, HOLD_SECONDS_MAX,
};
use crate::engine::{Caller, Engine, Reply};
use crate::posting::{self, OpenAccount};
use crate::store::{self, AccountChanges, AccountRow};
use crate::view::{AccountBody, BalanceBody, BatchBody, EntryBody, TransferBody};
use crate::{AccountId, EntryId, TransferId};

/// POST routes whose effect and idempotent response the engine commits together.
pub const ENGINE_PATHS: [&str; 5] = [
    "/v1/transfers",
    "/v1/transfers/batch",
    "/v1/transfers/{id}/post",
    "/v1/transfers/{id}/void",
    "/v1/transfers/{id}/reverse",
];

pub fn routes<S: Clone + Send + Sync + 'static>(engine: Engine) -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, update_account))
        .routes(routes!(list_entries))
        .routes(routes!(balance))
        .routes(routes!(create_transfer, list_transfers))
        .routes(routes!(get_transfer))
        .routes(routes!(post_hold))
        .routes(routes!(void_hold))
        .routes(routes!(reverse_transfer))
        .routes(routes!(create_batch))
        .routes(routes!(check_ledger))
        .with_state(engine)
}

fn corrupt(error: store::CorruptRow) -> ApiError {
    ApiError::internal(&error)
}

fn account_body(row: AccountRow) -> Result<AccountBody, ApiError> {
    Ok(posting::account_body(row)?)
}

fn parse_name(name: &str) -> Result<HumanText, ApiError> {
    HumanText::name(name, ACCOUNT_NAME_CHARS_MAX).map_err(|refusal| ApiError::text("name", refusal))
}

fn parse_description(description: Option<&str>, param: &str) -> Result<Option<HumanText>, ApiError> {
    description
        .map(|text| HumanText::parse(text, DESCRIPTION_CHARS_MAX).map_err(|refusal| ApiError::text(param, refusal)))
        .transpose()
}

fn parse_metadata(metadata: Option<BTreeMap<String, String>>) -> Result<Metadata, ApiError> {
    Metadata::parse(metadata.unwrap_or_default()).map_err(|error| ApiError::invalid("metadata", error.to_string()))
}

fn parse_currency(code: &str, param: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).map_err(|error| ApiError::invalid(param, error.to_string()))
}

fn parse_status(text: Option<&str>) -> Result<Option<AccountStatus>, ApiError> {
    text.map(|text| {
        AccountStatus::parse(text)
            .ok_or_else(|| ApiError::invalid("status", "status must be active, frozen or closed."))
    })
    .transpose()
}

/// The problem for an account the domain will not open or change as asked.
fn account_refusal_error(refusal: AccountRefusal) -> ApiError {
    let detail = format!("{refusal}.");
    match refusal {
        AccountRefusal::NameLength => ApiError::invalid("name", detail),
        AccountRefusal::BoundOutOfRange { bound } | AccountRefusal::BoundCurrencyMismatch { bound } => {
            ApiError::invalid(bound, detail)
        }
        AccountRefusal::BoundsInverted => ApiError::rule("max_balance", detail),
        AccountRefusal::MaxBelowZero => ApiError::invalid("max_balance", detail),
        AccountRefusal::MinAboveZero => ApiError::invalid("min_balance", detail),
        AccountRefusal::Reopen => ApiError::new(ErrorCode::AccountClosed, detail).with_param("status"),
        AccountRefusal::NotEmpty => ApiError::new(ErrorCode::AccountNotEmpty, detail).with_param("status"),
        AccountRefusal::BoundsViolated(_) => ApiError::new(ErrorCode::BoundsViolated, detail).with_param("min_balance"),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    #[schema(value_type = Name200, example = "Merchant settlement")]
    pub name: String,
    #[schema(value_type = Currency, example = "GBP")]
    pub currency: String,
    /// `debit` (assets, expenses) or `credit` (liabilities, income, customer balances).
    #[schema(pattern = "^(debit|credit)$", example = "credit")]
    pub normal_balance: String,
    /// Lower bound of `available`, at most 0 (a new account's balance). Left out: 0 (no
    /// overdraft). `null`: unbounded.
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<i64>, minimum = -1_000_000_000_000_000_000_i64, maximum = 0, example = 0)]
    pub min_balance: Option<Option<i64>>,
    /// Upper bound of `balance`, at least 0. Left out or `null`: unbounded.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub max_balance: Option<i64>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Open an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "ledger",
    request_body = CreateAccountRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = AccountBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn create_account(
    principal: Principal,
    mut tx: Tx,
    ApiJson(request): ApiJson<CreateAccountRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&request.name)?;
    let currency = parse_currency(&request.currency, "currency")?;
    let normal_balance = Side::parse(&request.normal_balance)
        .ok_or_else(|| ApiError::invalid("normal_balance", "normal_balance must be debit or credit."))?;
    let money = |minor: Option<i64>| minor.map(|minor| Money::from_minor(minor, currency));
    let spec = OpenAccount {
        id: AccountId::generate(),
        name,
        currency,
        normal_balance,
        min_balance: money(request.min_balance.unwrap_or(Some(0))),
        max_balance: money(request.max_balance),
        metadata: parse_metadata(request.metadata)?,
    };
    let body =
        posting::open_account(&mut tx, principal.business_id, &spec, till_http::request_id::current().as_deref())
            .await?
            .map_err(account_refusal_error)?;
    Ok((StatusCode::CREATED, axum::Json(body)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountListParams {
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
    /// Only accounts in this currency.
    #[param(value_type = Option<Currency>)]
    pub currency: Option<String>,
    /// Only accounts with this status.
    #[param(pattern = "^(active|frozen|closed)$")]
    pub status: Option<String>,
}

/// List accounts, newest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "ledger", params(AccountListParams),
    responses((status = 200, body = Page<AccountBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_accounts(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<AccountListParams>,
) -> Result<axum::Json<Page<AccountBody>>, ApiError> {
    let page =
        ListParams { limit: params.limit, starting_after: params.starting_after }.page(|t| AccountId::parse(t).ok())?;
    let currency = params.currency.as_deref().map(|code| parse_currency(code, "currency")).transpose()?;
    let status = parse_status(params.status.as_deref())?;
    let rows =
        store::list_accounts(&mut tx, principal.business_id, currency, status, page.starting_after, page.fetch_limit())
            .await?;
    let bodies = rows.into_iter().map(account_body).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |account| account.id.to_string())))
}

/// An account with its balances.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "ledger", params(("id" = AccountId, Path)),
    responses((status = 200, body = AccountBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_account(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<AccountId>,
) -> Result<axum::Json<AccountBody>, ApiError> {
    let row =
        store::find_account(&mut tx, principal.business_id, id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(axum::Json(account_body(row)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountRequest {
    #[schema(value_type = Option<Name200>)]
    pub name: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `active`, `frozen` (no new transfers; holds can still end) or `closed` (final; the
    /// account must be empty).
    #[schema(pattern = "^(active|frozen|closed)$")]
    pub status: Option<String>,
    /// Must hold for the account's balances now (422 `bounds_violated`), and not be above
    /// `max_balance` (422 `rule_violated`).
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<i64>, minimum = -1_000_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_000_i64)]
    pub min_balance: Option<Option<i64>>,
    #[serde(default, deserialize_with = "till_http::update::present")]
    #[schema(value_type = Option<i64>, minimum = -1_000_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_000_i64)]
    pub max_balance: Option<Option<i64>>,
}

/// Update an account's name, metadata, status or bounds. Send `If-Match: <version>` to
/// make sure nobody changed it since you read it.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "ledger",
    params(("id" = AccountId, Path), ("If-Match" = Option<String>, Header, description = "The account's `version`.")),
    request_body = UpdateAccountRequest,
    responses(
        (status = 200, body = AccountBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn update_account(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<AccountId>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateAccountRequest>,
) -> Result<axum::Json<AccountBody>, ApiError> {
    // The request is checked whole before the account's version is: a malformed request
    // is a 400 whatever the account's state.
    let status = parse_status(request.status.as_deref())?;
    let name = request.name.as_deref().map(parse_name).transpose()?;
    let metadata = request.metadata.map(|map| parse_metadata(Some(map))).transpose()?;
    for (bound, value) in [("min_balance", request.min_balance), ("max_balance", request.max_balance)] {
        if value.flatten().is_some_and(|value| value.unsigned_abs() > BOUND_MAX.unsigned_abs()) {
            return Err(ApiError::invalid(bound, format!("{bound} is at most {BOUND_MAX} either side of zero.")));
        }
    }
    // Lock the account row, as every engine batch that touches it does: the bounds and
    // status cannot change under a batch, nor the balances under this check.
    let row =
        store::lock_account(&mut tx, principal.business_id, id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    till_http::update::check_if_match(&headers, row.version, "account")?;
    let account = row.account().map_err(corrupt)?;
    let name = match name {
        Some(name) => name.into_string(),
        None => row.name.clone(),
    };
    let metadata = match metadata {
        Some(metadata) => metadata,
        None => store::metadata_from(row.metadata.clone()).map_err(corrupt)?,
    };
    let change = AccountChange { status, min_balance: request.min_balance, max_balance: request.max_balance };
    let account = account.changed(&change).map_err(account_refusal_error)?;
    let changes = AccountChanges {
        name: &name,
        metadata: &metadata,
        status: account.status,
        min_balance: account.min_balance,
        max_balance: account.max_balance,
    };
    let row = store::update_account(&mut tx, principal.business_id, id, &changes).await?;
    let body = account_body(row)?;
    let request_id = till_http::request_id::current();
    posting::account_event(&mut tx, principal.business_id, EventType::AccountUpdated, &body, request_id.as_deref())
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntryListParams {
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

/// An account's entries (its statement), newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/entries", tag = "ledger", params(("id" = AccountId, Path), EntryListParams),
    responses((status = 200, body = Page<EntryBody>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_entries(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<EntryListParams>,
) -> Result<axum::Json<Page<EntryBody>>, ApiError> {
    let page =
        ListParams { limit: params.limit, starting_after: params.starting_after }.page(|t| EntryId::parse(t).ok())?;
    let row =
        store::find_account(&mut tx, principal.business_id, id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    let account = row.account().map_err(corrupt)?;
    let rows = store::list_entries(&mut tx, principal.business_id, id, page.starting_after, page.fetch_limit()).await?;
    let mut bodies = Vec::with_capacity(rows.len());
    for entry in rows {
        let after = crate::domain::Account { totals: entry.totals(), ..account.clone() }.balances();
        bodies.push(EntryBody {
            id: entry.entry_id(),
            account_id: id,
            transfer_id: TransferId::from_uuid(entry.transfer_id),
            side: entry.side.clone(),
            kind: entry.kind.clone(),
            posted_delta: entry.posted_delta,
            pending_delta: entry.pending_delta,
            balance_after: crate::view::narrow(after.balance)?,
            available_after: crate::view::narrow(after.available)?,
            created_at: entry.created_at,
        });
    }
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |entry| entry.id.to_string())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceParams {
    /// RFC 3339; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<String>,
}

/// An account's balances now, or at `as_of`.
#[utoipa::path(get, path = "/v1/accounts/{id}/balance", tag = "ledger", params(("id" = AccountId, Path), BalanceParams),
    responses((status = 200, body = BalanceBody), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn balance(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<BalanceParams>,
) -> Result<axum::Json<BalanceBody>, ApiError> {
    let as_of = match params.as_of.as_deref() {
        Some(text) => OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::invalid("as_of", "as_of must be an RFC 3339 timestamp."))?,
        None => OffsetDateTime::now_utc(),
    };
    let row =
        store::find_account(&mut tx, principal.business_id, id).await?.ok_or_else(|| ApiError::not_found("account"))?;
    let mut account = row.account().map_err(corrupt)?;
    account.totals = match store::entry_as_of(&mut tx, principal.business_id, id, as_of).await? {
        Some(entry) => entry.totals(),
        None => Default::default(),
    };
    Ok(axum::Json(BalanceBody::new(&account, as_of)?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransferRequest {
    #[schema(value_type = AccountId)]
    pub debit_account_id: String,
    /// Another account than `debit_account_id` (422 `rule_violated` otherwise).
    #[schema(value_type = AccountId)]
    pub credit_account_id: String,
    /// Minor units, 1 to 10^15.
    #[schema(example = 2500, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: i64,
    #[schema(value_type = Currency, example = "GBP")]
    pub currency: String,
    /// Create a hold: reserve the funds until posted, voided or expired.
    #[serde(default)]
    pub pending: bool,
    /// For a hold: expire after this many seconds (1 to 30 days). Only with `pending`,
    /// and not with `expires_at` (422 `rule_violated`).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub timeout_seconds: Option<i64>,
    /// For a hold: expire at this time (RFC 3339), instead of `timeout_seconds`: after
    /// now and within 30 days, by the ledger's clock (422 `rule_violated` otherwise).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(value_type = Option<Text500>)]
    pub description: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

fn parse_account_id(text: &str, param: &str) -> Result<AccountId, ApiError> {
    // A malformed id names no account: answered like a missing one.
    AccountId::parse(text).map_err(|_| ApiError::new(ErrorCode::ResourceMissing, "No such account.").with_param(param))
}

impl CreateTransferRequest {
    fn parse(self, prefix: &str) -> Result<NewTransfer, ApiError> {
        let field = |name: &str| format!("{prefix}{name}");
        let debit_account = parse_account_id(&self.debit_account_id, &field("debit_account_id"))?;
        let credit_account = parse_account_id(&self.credit_account_id, &field("credit_account_id"))?;
        if !(1..=AMOUNT_MAX).contains(&self.amount) {
            return Err(ApiError::invalid(
                field("amount"),
                format!("amount must be a whole number of minor units from 1 to {AMOUNT_MAX}."),
            ));
        }
        let currency = parse_currency(&self.currency, &field("currency"))?;
        if debit_account == credit_account {
            return Err(ApiError::rule(field("credit_account_id"), "A transfer needs two different accounts."));
        }
        // The expiry is checked against the ledger's clock when the hold is made (the
        // domain refuses one in the past or past 30 days); here only its form.
        let expiry = match (self.timeout_seconds, self.expires_at.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::rule(field("expires_at"), "Give timeout_seconds or expires_at, not both."))
            }
            (Some(seconds), None) if (1..=HOLD_SECONDS_MAX).contains(&seconds) => HoldExpiry::After { seconds },
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    field("timeout_seconds"),
                    "timeout_seconds must be 1 to 2592000 (30 days).",
                ))
            }
            (None, Some(text)) => HoldExpiry::At(
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| ApiError::invalid(field("expires_at"), "expires_at must be an RFC 3339 timestamp."))?,
            ),
            (None, None) => HoldExpiry::Never,
        };
        if !self.pending && expiry != HoldExpiry::Never {
            return Err(ApiError::rule(field("pending"), "Only a hold (pending: true) can expire."));
        }
        let description = parse_description(self.description.as_deref(), &field("description"))?;
        Ok(NewTransfer {
            id: TransferId::generate(),
            debit_account,
            credit_account,
            amount: Money::from_minor(self.amount, currency),
            hold: self.pending.then_some(expiry),
            description,
            metadata: parse_metadata(self.metadata).map_err(|e| ApiError { param: Some(field("metadata")), ..e })?,
        })
    }
}

/// Turns the engine's reply into the HTTP response.
fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Fresh { status, content_type, body } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Reply::Replay(stored) => stored.replay().unwrap_or_else(IntoResponse::into_response),
        Reply::Error(error) => error.into_response(),
        // Answers to services, never to a request the HTTP layer submitted.
        Reply::Decided(_) | Reply::KeyReused => {
            ApiError::internal(&"the engine answered a request as a service").into_response()
        }
    }
}

/// A request's caller: its key, its id, and how its outcome becomes a response.
fn http(idempotency: IdempotencyContext) -> Caller {
    Caller::Http { idempotency: Some(idempotency), request_id: request_id(), render: crate::view::render }
}

fn request_id() -> String {
    till_http::request_id::current().unwrap_or_default()
}

/// Move money: debit one account, credit another. With `pending: true`, a hold.
#[utoipa::path(post, path = "/v1/transfers", tag = "ledger",
    request_body = CreateTransferRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = TransferBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "An account does not exist (or is another business's)."),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "insufficient_funds, balance_limit_exceeded, currency_mismatch, account_not_active, idempotency_key_reused"),
    ),
    security(("bearer" = [])))]
async fn create_transfer(
    principal: Principal,
    State(engine): State<Engine>,
    idempotency: IdempotencyContext,
    ApiJson(request): ApiJson<CreateTransferRequest>,
) -> Result<Response, ApiError> {
    let new = request.parse("")?;
    Ok(respond(engine.submit(principal.business_id, Command::Transfer(new), http(idempotency)).await))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatchRequest {
    /// 1 to 1000 transfers, applied all or nothing, in order.
    #[schema(min_items = 1, max_items = 1000)]
    pub transfers: Vec<CreateTransferRequest>,
}

/// Apply up to 1000 transfers atomically: all of them, or none (the problem names the
/// failing index).
#[utoipa::path(post, path = "/v1/transfers/batch", tag = "ledger",
    request_body = CreateBatchRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 201, body = BatchBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn create_batch(
    principal: Principal,
    State(engine): State<Engine>,
    idempotency: IdempotencyContext,
    ApiJson(request): ApiJson<CreateBatchRequest>,
) -> Result<Response, ApiError> {
    if request.transfers.is_empty() || request.transfers.len() > BATCH_TRANSFERS_MAX {
        return Err(ApiError::invalid("transfers", format!("A batch has 1 to {BATCH_TRANSFERS_MAX} transfers.")));
    }
    let transfers = request
        .transfers
        .into_iter()
        .enumerate()
        .map(|(index, transfer)| transfer.parse(&format!("transfers[{index}].")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(respond(engine.submit(principal.business_id, Command::Batch(transfers), http(idempotency)).await))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransferListParams {
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
    /// Only transfers that debit or credit this account.
    #[param(value_type = Option<AccountId>)]
    pub account_id: Option<String>,
}

/// List transfers, newest first.
#[utoipa::path(get, path = "/v1/transfers", tag = "ledger", params(TransferListParams),
    responses((status = 200, body = Page<TransferBody>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_transfers(
    principal: Principal,
    mut tx: Tx,
    ApiQuery(params): ApiQuery<TransferListParams>,
) -> Result<axum::Json<Page<TransferBody>>, ApiError> {
    let page = ListParams { limit: params.limit, starting_after: params.starting_after }
        .page(|t| TransferId::parse(t).ok())?;
    let account = params
        .account_id
        .as_deref()
        .map(|text| {
            AccountId::parse(text).map_err(|_| ApiError::invalid("account_id", "account_id is not an account id."))
        })
        .transpose()?;
    let rows =
        store::list_transfers(&mut tx, principal.business_id, account, page.starting_after, page.fetch_limit()).await?;
    let bodies = rows
        .into_iter()
        .map(|row| row.transfer().map(|transfer| TransferBody::from(&transfer)).map_err(corrupt))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page::from_rows(bodies, page.limit, |transfer| transfer.id.to_string())))
}

/// A transfer, with its status.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "ledger", params(("id" = TransferId, Path)),
    responses((status = 200, body = TransferBody), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn get_transfer(
    principal: Principal,
    mut tx: Tx,
    ApiPath(id): ApiPath<TransferId>,
) -> Result<axum::Json<TransferBody>, ApiError> {
    let row = store::load_transfers(&mut tx, principal.business_id, &[id.as_uuid()]).await?.pop();
    let transfer = row.ok_or_else(|| ApiError::not_found("transfer"))?.transfer().map_err(corrupt)?;
    Ok(axum::Json(TransferBody::from(&transfer)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHoldRequest {
    /// Post only this much (at most the amount held); the rest is released. Default: all.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<i64>,
}

/// Post a hold, in full or in part.
#[utoipa::path(post, path = "/v1/transfers/{id}/post", tag = "ledger",
    params(("id" = TransferId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    request_body(content = Option<PostHoldRequest>, description = "Optional."),
    responses(
        (status = 200, body = TransferBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "hold_already_resolved, hold_expired, transfer_not_pending"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn post_hold(
    principal: Principal,
    State(engine): State<Engine>,
    ApiPath(id): ApiPath<TransferId>,
    idempotency: IdempotencyContext,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<PostHoldRequest>,
) -> Result<Response, ApiError> {
    if request.amount.is_some_and(|amount| !(1..=AMOUNT_MAX).contains(&amount)) {
        return Err(ApiError::invalid(
            "amount",
            format!("amount must be a whole number of minor units from 1 to {AMOUNT_MAX}."),
        ));
    }
    let command = Command::Post { hold: id, amount: request.amount, currency: None };
    Ok(respond(engine.submit(principal.business_id, command, http(idempotency)).await))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidHoldRequest {}

/// Void a hold: release the reserved funds.
#[utoipa::path(post, path = "/v1/transfers/{id}/void", tag = "ledger",
    params(("id" = TransferId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    responses(
        (status = 200, body = TransferBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
async fn void_hold(
    principal: Principal,
    State(engine): State<Engine>,
    ApiPath(id): ApiPath<TransferId>,
    idempotency: IdempotencyContext,
    ApiJsonOrEmpty(_request): ApiJsonOrEmpty<VoidHoldRequest>,
) -> Result<Response, ApiError> {
    Ok(respond(engine.submit(principal.business_id, Command::Void { hold: id }, http(idempotency)).await))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseTransferRequest {
    #[schema(value_type = Option<Text500>)]
    pub description: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Reverse a posted transfer: a new transfer moving the posted amount back.
#[utoipa::path(post, path = "/v1/transfers/{id}/reverse", tag = "ledger",
    params(("id" = TransferId, Path), ("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; makes the request safe to retry.")),
    request_body(content = Option<ReverseTransferRequest>, description = "Optional."),
    responses(
        (status = 201, body = TransferBody, description = "The reversal."),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "transfer_not_reversible"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "insufficient_funds: the money has moved on"),
    ),
    security(("bearer" = [])))]
async fn reverse_transfer(
    principal: Principal,
    State(engine): State<Engine>,
    ApiPath(id): ApiPath<TransferId>,
    idempotency: IdempotencyContext,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<ReverseTransferRequest>,
) -> Result<Response, ApiError> {
    let command = Command::Reverse {
        transfer: id,
        reversal: TransferId::generate(),
        description: parse_description(request.description.as_deref(), "description")?,
        metadata: parse_metadata(request.metadata)?,
    };
    Ok(respond(engine.submit(principal.business_id, command, http(idempotency)).await))
}

/// Run the invariant checker over the caller's ledger.
#[utoipa::path(get, path = "/v1/ledger/check", tag = "ledger",
    responses((status = 200, body = CheckReport)),
    security(("bearer" = [])))]
async fn check_ledger(principal: Principal, mut tx: Tx) -> Result<axum::Json<CheckReport>, ApiError> {
    Ok(axum::Json(check::run(&mut tx, principal.business_id).await?))
}
