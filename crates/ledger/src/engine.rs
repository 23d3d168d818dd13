//! The group-commit engine: how ledger commands reach the database.
//!
//! One writer task per business (started on demand, ended when idle) takes commands from
//! a bounded queue. The writers run on threads of their own, with their own Tokio
//! runtime and connection pool (see [`Engine::new`]), so that the request handlers'
//! work never stands between a writer and PostgreSQL's reply. A writer takes everything
//! queued, up to a limit, as one batch and applies the batch in one transaction:
//!
//! 1. scope the transaction to the business (row-level security);
//! 2. read the database's clock and look up the batch's Idempotency-Keys (replay, or
//!    422 on reuse), in one statement;
//! 3. take the accounts the commands touch from the writer's cache of the accounts it
//!    last committed, reading only the others (without locks); a batch that names a
//!    transfer (post, void, expire, reverse) instead loads it, locks and reads its
//!    accounts, and loads it again;
//! 4. apply each command to the pure [`Book`], in arrival order; each one is atomic on
//!    its own and gets its own outcome (a refusal refuses only its command);
//! 5. write transfers, resolutions, entries, the accounts' new totals, the events and
//!    every rendered response (2xx and 4xx) under its key, in one statement that also
//!    checks every account the batch decided with is still at the revision it was read
//!    at, and commit.
//!
//! So a batch of N transfers costs four round trips and one commit when its accounts are
//! in the cache (five otherwise), and a hot account is one entry in memory per batch,
//! not a queue of requests.
//!
//! Every change to an account bumps its revision. Batches of one business on several
//! Till instances run at once, and account updates (`PATCH`) from any instance: the
//! batch's update of an account waits for a concurrent writer of that row and then
//! applies only if the revision is still the one the batch read, and an account that a
//! refusal was decided with must still be at it. If one is not, the batch rolls back and
//! runs again, this time reading every account locked (`FOR UPDATE`, in id order, as
//! `PATCH` does), so that it cannot lose again. Within one instance a business's batches
//! run one at a time (so the cache only ever reflects this writer's own commits and what
//! it read): two in flight were measured, and made batches half the size and commits
//! twice as many, which cost more CPU per transfer and doubled the p99 from commit to
//! event consumer (`till bench events`: 74–120 ms against 32 ms) for no steady gain in
//! `till bench ledger` on two cores. Measured again once revisions had replaced the
//! locks, neither deciding the next batch while one commits nor two batches committing
//! at once moved a goal (docs/DECISIONS.md, "One batch in flight per business, measured
//! again"). A duplicate Idempotency-Key queued while its first is in the running batch
//! waits for the next batch and replays; across instances, the key's primary key makes
//! the second insert fail, and the batch is retried (it then replays).
//!
//! Serialization failures, deadlocks and unique violations are retried here with
//! backoff; a batch that still fails answers every command with a 5xx and stores
//! nothing, so each retries cleanly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use till_http::unit_of_work::{self, IdempotencyContext, ResponseRecord, StoredResponse};
use till_http::ApiError;
use till_kit::BusinessId;
use till_outbox::{Event, EventType};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Account, Book, Command, Outcome, Refusal};
use crate::posting::{self, PostingKey};
use crate::store::{self, CorruptRow};
use crate::view::TransferBody;
use crate::AccountId;

/// Threads of the writers' runtime, whatever the machine (one serves a business's
/// writer at a time; several serve several businesses).
const WRITER_THREADS_MAX: usize = 8;
/// Commands waiting for one business's writer; beyond this, callers wait to enqueue.
const QUEUE_COMMANDS_MAX: usize = 10_000;
/// Commands in one batch (one transaction).
const BATCH_COMMANDS_MAX: usize = 2_000;
/// A writer with nothing to do for this long ends; the next command starts a new one.
const WRITER_IDLE: Duration = Duration::from_secs(30);
const RETRY_ATTEMPTS_MAX: u32 = 5;
const RETRY_BACKOFF_BASE_MS: u64 = 5;
/// Accounts one writer keeps in its cache (about 150 bytes each). A batch that would
/// take it past this starts it again with only that batch's accounts: a business using
/// more accounts than this reads some again, rather than the writer growing without end.
const ACCOUNTS_CACHED_MAX: usize = 50_000;

/// A command and what to do with its response.
struct Job {
    command: Command,
    caller: Caller,
    reply: oneshot::Sender<Reply>,
}

/// Turns a command's outcome into the HTTP response to store under its key and send.
/// The HTTP layer provides it ([`crate::view::render`]): the engine decides, it does not
/// render, but the rendered bytes must be stored in the batch's own transaction.
pub type Render = fn(&Command, &Result<Outcome, Refusal>, &str) -> (StatusCode, &'static str, Vec<u8>);

/// Who submitted a command, which says what its key is and what answer it wants.
pub enum Caller {
    /// An HTTP request: the response is rendered, and stored under its Idempotency-Key.
    Http { idempotency: Option<IdempotencyContext>, request_id: String, render: Render },
    /// A service in process ([`crate::posting::Ledger`]): a typed answer, its key a
    /// domain value. The command's transfer ids are the service's to choose, so the
    /// batch looks up the ones it claims.
    Service { key: Option<PostingKey>, request_id: Option<String> },
}

impl Caller {
    /// The key that makes the command idempotent, as (principal, key): an HTTP key is the
    /// credential's, a posting key the business's.
    fn key(&self) -> Option<(String, String)> {
        match self {
            Caller::Http { idempotency, .. } => {
                idempotency.as_ref().map(|context| (context.principal.clone(), context.key.clone()))
            }
            Caller::Service { key, .. } => key.as_ref().map(|key| (String::from("posting"), key.as_str().to_string())),
        }
    }

    fn request_id(&self) -> Option<&str> {
        match self {
            Caller::Http { request_id, .. } => Some(request_id.as_str()).filter(|id| !id.is_empty()),
            Caller::Service { request_id, .. } => request_id.as_deref(),
        }
    }
}

/// The answer to one command.
pub enum Reply {
    /// Applied or refused now; the response was stored under its key (if any).
    Fresh { status: StatusCode, content_type: &'static str, body: Vec<u8> },
    /// The key's stored response, to replay.
    Replay(StoredResponse),
    /// A service's command, decided now or replayed from its posting key.
    Decided(Result<Outcome, Refusal>),
    /// Not applied and not stored (key reuse, a duplicate in flight, a failed batch).
    Error(ApiError),
    /// A service's posting key was used before for another command.
    KeyReused,
}

/// The ledger's entry point for commands. Clones share the writers; the writers'
/// threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    /// The application's pool, for what runs outside the writers (the sweeper's listing).
    pool: PgPool,
    writers: Writers,
    _runtime: Arc<WriterRuntime>,
}

/// What the writer tasks share: their own pool and runtime, and the senders of the
/// running writers by business.
#[derive(Clone)]
struct Writers {
    pool: PgPool,
    runtime: tokio::runtime::Handle,
    senders: Arc<Mutex<HashMap<BusinessId, mpsc::Sender<Job>>>>,
}

/// Owns the writers' runtime; dropping it (with the last clone of the engine) shuts the
/// runtime down, which cancels any writer still waiting for work. `till up` drains its
/// requests and closes the engine first, so no batch is in flight then; one that were
/// would be abandoned with its connection: rolled back if its COMMIT had not reached
/// PostgreSQL, and otherwise of unknown outcome, which a retry with the same
/// Idempotency-Key settles (as for a COMMIT that fails, see `BatchError::Commit`).
struct WriterRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for WriterRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`, which would block, and may not block inside an async context.
            runtime.shutdown_background();
        }
    }
}

impl Engine {
    /// Starts the writers' runtime: threads of their own (half the machine's cores, at
    /// least one and at most `WRITER_THREADS_MAX`) and a pool of their own as large as
    /// `pool` (connections open only as writers need them).
    ///
    /// Why threads of their own: a batch is a chain of round trips to PostgreSQL, and on
    /// the request handlers' runtime each reply waited for a busy worker to poll for it
    /// (Tokio's workers look for I/O between tasks, and thousands of request tasks were
    /// queued): under `till bench ledger` those workers spent 24 % of the time runnable
    /// but not running, and the writer's PostgreSQL backend was idle about half the time,
    /// waiting for the next statement. On their own runtime, whose only tasks are the
    /// writers, a reply wakes its writer directly. Measured in docs/DECISIONS.md, "The
    /// ledger's writers run on threads of their own".
    pub fn new(pool: PgPool) -> std::io::Result<Engine> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores / 2).clamp(1, WRITER_THREADS_MAX))
            .thread_name("till-ledger")
            .enable_all()
            .build()?;
        let writer_pool = {
            // The pool's connections must belong to the writers' runtime, so it is made
            // in that runtime's context.
            let _context = runtime.enter();
            let options = (*pool.connect_options()).clone().application_name("till-ledger");
            till_db::pool::lazy_app_pool(options, pool.options().get_max_connections())
        };
        let writers = Writers {
            pool: writer_pool,
            runtime: runtime.handle().clone(),
            senders: Arc::new(Mutex::new(HashMap::new())),
        };
        Ok(Engine { pool, writers, _runtime: Arc::new(WriterRuntime { runtime: Some(runtime) }) })
    }

    /// Waits for the batches in flight to end and closes the writers' connections (at
    /// shutdown, once no request is left to submit anything).
    pub async fn close(&self) {
        self.writers.pool.close().await;
    }

    /// Runs `command` for `business` and waits for its reply.
    pub async fn submit(&self, business: BusinessId, command: Command, caller: Caller) -> Reply {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { command, caller, reply };
        // A writer may end (idle) between our lookup and our send; then start another.
        for _ in 0..2 {
            let sender = self.writers.sender(business);
            match sender.send(job).await {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or_else(|_| Reply::Error(ApiError::internal(&"the ledger writer dropped a command")));
                }
                Err(mpsc::error::SendError(returned)) => {
                    job = returned;
                    self.writers.forget(business, &sender);
                }
            }
        }
        Reply::Error(ApiError::unavailable(&"no ledger writer could take the command"))
    }
}

impl Writers {
    fn sender(&self, business: BusinessId) -> mpsc::Sender<Job> {
        let mut senders = self.senders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = senders.get(&business).filter(|sender| !sender.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE_COMMANDS_MAX);
        senders.insert(business, sender.clone());
        self.runtime.spawn(run_writer(self.clone(), business, receiver));
        sender
    }

    fn forget(&self, business: BusinessId, stale: &mpsc::Sender<Job>) {
        let mut senders = self.senders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if senders.get(&business).is_some_and(|current| current.same_channel(stale)) {
            senders.remove(&business);
        }
    }
}

async fn run_writer(writers: Writers, business: BusinessId, mut receiver: mpsc::Receiver<Job>) {
    // A connection that just committed a batch serves the next one without the pool's
    // liveness ping; it goes back to the pool whenever the queue runs empty, so an idle
    // business holds none.
    let mut kept: Option<PoolConnection<Postgres>> = None;
    let mut cache = AccountCache::default();
    loop {
        let waiting = match receiver.try_recv() {
            Ok(job) => Ok(Some(job)),
            Err(_) => {
                kept = None;
                tokio::time::timeout(WRITER_IDLE, receiver.recv()).await
            }
        };
        let first = match waiting {
            Ok(Some(job)) => job,
            Ok(None) | Err(_) => {
                // Close first so that senders fail fast and start a new writer, then drain
                // whatever arrived in between.
                receiver.close();
                let mut rest = Vec::new();
                while let Ok(job) = receiver.try_recv() {
                    rest.push(job);
                }
                if !rest.is_empty() {
                    process(&writers.pool, &mut kept, &mut cache, business, rest).await;
                }
                let mut senders = writers.senders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if senders.get(&business).is_some_and(mpsc::Sender::is_closed) {
                    senders.remove(&business);
                }
                return;
            }
        };
        if armed("ledger::gather_batch", business) {
            // Under test: let the queue fill, so that what is sent together is one batch.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut jobs = vec![first];
        while jobs.len() < BATCH_COMMANDS_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        process(&writers.pool, &mut kept, &mut cache, business, jobs).await;
    }
}

/// The accounts this writer last committed or read, at the revision it left them. A
/// batch starts from these instead of reading its accounts again, and its write checks
/// that each is still at that revision (see [`store::write`]); one that is not (another
/// Till instance or an account update changed it) sends the batch round again, reading
/// and locking every account. Only a business's writer uses its cache, and the writer
/// runs one batch at a time, so the cache never sees a batch it did not commit.
#[derive(Default)]
struct AccountCache {
    accounts: HashMap<AccountId, Known>,
}

#[derive(Clone)]
struct Known {
    account: Account,
    revision: i64,
}

impl AccountCache {
    /// After a commit: the batch's accounts as it left them.
    fn remember(&mut self, book: &Book, revisions: &HashMap<AccountId, i64>, changed: &HashSet<AccountId>) {
        let new = book.accounts.keys().filter(|id| !self.accounts.contains_key(id)).count();
        if self.accounts.len() + new > ACCOUNTS_CACHED_MAX {
            self.accounts.clear();
        }
        for account in book.accounts.values() {
            let Some(&read) = revisions.get(&account.id) else { continue };
            let revision = if changed.contains(&account.id) { read + 1 } else { read };
            self.accounts.insert(account.id, Known { account: account.clone(), revision });
        }
    }
}

/// The outcome of one job within a batch, before replying.
enum Decided {
    Fresh { status: StatusCode, content_type: &'static str, body: Vec<u8> },
    Replay(usize),
    Service(Result<Outcome, Refusal>),
    Error(ApiError),
    KeyReused,
}

/// Runs one batch to its end and replies to every job.
///
/// A batch that the database refuses because of one command's data (a value it cannot
/// store, a constraint the domain did not foresee) is split in halves and each half run
/// again, until the command at fault fails alone: no command can fail another. Each
/// split is a new transaction of its own; nothing of the refused attempt committed.
async fn process(
    pool: &PgPool,
    kept: &mut Option<PoolConnection<Postgres>>,
    cache: &mut AccountCache,
    business: BusinessId,
    jobs: Vec<Job>,
) {
    // A stack of the groups still to run; the first half of a split runs first, so
    // commands keep their arrival order.
    let mut groups = vec![jobs];
    while let Some(mut group) = groups.pop() {
        match run_batch(pool, kept, cache, business, &group).await {
            Err(failure) if failure.caused_by_data && group.len() > 1 => {
                tracing::warn!(
                    commands = group.len(),
                    "the database refused a ledger batch for its data; splitting it to isolate the command"
                );
                let second = group.split_off(group.len() / 2);
                groups.push(second);
                groups.push(group);
            }
            Err(failure) => {
                for job in group {
                    let _ = job.reply.send(Reply::Error(failure.error.clone()));
                }
            }
            Ok((decided, stored)) => reply(group, decided, stored),
        }
    }
}

fn reply(jobs: Vec<Job>, decided: Vec<Decided>, stored: Vec<StoredResponse>) {
    let mut stored: Vec<Option<StoredResponse>> = stored.into_iter().map(Some).collect();
    for (job, decided) in jobs.into_iter().zip(decided) {
        let reply = match decided {
            Decided::Fresh { status, content_type, body } => Reply::Fresh { status, content_type, body },
            Decided::Replay(index) => match stored.get_mut(index).and_then(Option::take) {
                Some(response) => Reply::Replay(response),
                None => Reply::Error(ApiError::internal(&"a replayed response was used twice")),
            },
            Decided::Service(decision) => Reply::Decided(decision),
            Decided::Error(error) => Reply::Error(error),
            Decided::KeyReused => Reply::KeyReused,
        };
        // The caller may have gone away (client disconnected); the effect stands.
        let _ = job.reply.send(reply);
    }
}

/// Why a batch failed as a whole, after its retries.
struct Failed {
    /// The answer every command of the batch gets.
    error: ApiError,
    /// The database refused the batch's data (SQLSTATE class 22 or 23): one command's
    /// value, not the batch's circumstances, so running its commands apart isolates it.
    caused_by_data: bool,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Failed {
        Failed { error, caused_by_data: false }
    }
}

/// A data exception (class 22) or an integrity violation (class 23) other than a unique
/// violation, which `is_retryable` handles as a race with another instance.
fn is_data_error(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
    code.is_some_and(|code| (code.starts_with("22") || code.starts_with("23")) && code != "23505")
}

/// Runs the batch, retrying what a concurrent writer can cause.
async fn run_batch(
    pool: &PgPool,
    kept: &mut Option<PoolConnection<Postgres>>,
    cache: &mut AccountCache,
    business: BusinessId,
    jobs: &[Job],
) -> Result<(Vec<Decided>, Vec<StoredResponse>), Failed> {
    // The same key twice in one batch: the first runs, the others are "in flight".
    let mut seen = HashSet::new();
    let duplicate: Vec<bool> = jobs.iter().map(|job| job.caller.key().is_some_and(|key| !seen.insert(key))).collect();
    let mut attempt = 0;
    let started = std::time::Instant::now();
    loop {
        let (mut connection, warm) = match kept.take() {
            Some(connection) => (connection, true),
            None => (pool.acquire().await.map_err(ApiError::database).map_err(Failed::from)?, false),
        };
        if warm {
            // Under test: the kept connection's session ends while it waits for the batch.
            inject_session_loss("ledger::kept_connection_lost", business, pool, &mut connection).await;
        }
        // The first attempt starts from the cache; a retry reads and locks every account,
        // so that it cannot find them changed again.
        let read = if attempt == 0 { Read::Cached } else { Read::Locked };
        let outcome = try_batch(pool, &mut connection, cache, read, business, jobs, &duplicate).await;
        if outcome.is_err() {
            // Whatever failed, the cache may no longer be what the database holds (a
            // COMMIT whose outcome is unknown): start the next attempt from the database.
            cache.accounts.clear();
        }
        match outcome {
            Ok(result) => {
                *kept = Some(connection);
                tracing::debug!(
                    commands = jobs.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    attempt,
                    "ledger batch committed"
                );
                return Ok(result);
            }
            // A kept connection that died while idle (the database restarted): nothing
            // was sent that could commit, so begin again on a fresh one.
            Err(BatchError::Begin(error)) if warm => {
                tracing::info!(%error, "a kept ledger connection failed to begin; opening another");
                connection.close().await.ok();
            }
            Err(BatchError::Stale) if attempt < RETRY_ATTEMPTS_MAX => {
                *kept = Some(connection);
                attempt += 1;
                tracing::debug!(attempt, "a ledger batch read an account another writer changed; deciding again");
            }
            Err(BatchError::Stale) => {
                *kept = Some(connection);
                return Err(ApiError::unavailable(&"the ledger's accounts kept changing under the batch").into());
            }
            // Before COMMIT, a lost connection (the database restarted, an operator
            // ended the session) left nothing behind: redo the batch on another one.
            Err(BatchError::Database(error))
                if (is_retryable(&error) || till_db::pool::connection_lost(&error)) && attempt < RETRY_ATTEMPTS_MAX =>
            {
                attempt += 1;
                let backoff = RETRY_BACKOFF_BASE_MS << attempt;
                tracing::info!(%error, attempt, "retrying a ledger batch");
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            Err(BatchError::Database(error)) => {
                let caused_by_data = is_data_error(&error);
                return Err(Failed { error: ApiError::database(error), caused_by_data });
            }
            Err(BatchError::Begin(error) | BatchError::Commit(error)) => return Err(ApiError::database(error).into()),
            Err(BatchError::Corrupt(error)) => return Err(ApiError::internal(&error).into()),
            Err(BatchError::Encode(error)) => return Err(ApiError::internal(&error).into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    /// The transaction could not begin: nothing was sent that could commit.
    #[error("beginning the batch: {0}")]
    Begin(sqlx::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The COMMIT failed: the batch may or may not have committed, so it is never redone
    /// here (each command's retry with its key settles it).
    #[error("committing the batch: {0}")]
    Commit(sqlx::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    /// An event could not be serialized (a bug: the bodies are plain data).
    #[error("encoding an event: {0}")]
    Encode(serde_json::Error),
    /// An account the batch decided with had changed since it was read: rolled back.
    #[error("an account changed under the batch")]
    Stale,
}

/// Where a batch's accounts come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The writer's cache, and a read without locks for the rest; the write checks them.
    Cached,
    /// A read of every account, locked (`FOR UPDATE`) until the batch ends.
    Locked,
}

/// Serialization failures and deadlocks, and unique violations. Another Till instance can
/// store the same Idempotency-Key after this batch looked it up; the batch's insert of it
/// then fails, and the retry replays what that instance stored. (Holds and reversals are
/// read again after their accounts' locks, so a second resolution is refused rather than
/// inserted.)
fn is_retryable(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned());
    matches!(code.as_deref(), Some("40001" | "40P01" | "23505"))
}

async fn try_batch(
    pool: &PgPool,
    connection: &mut PgConnection,
    cache: &mut AccountCache,
    read: Read,
    business: BusinessId,
    jobs: &[Job],
    duplicate: &[bool],
) -> Result<(Vec<Decided>, Vec<StoredResponse>), BatchError> {
    let mut steps = Steps::start();
    let mut transaction = connection.begin_with(store::begin_batch(business)).await.map_err(BatchError::Begin)?;
    steps.mark("begin");

    let mut decided: Vec<Option<Decided>> = duplicate
        .iter()
        .map(|&is_duplicate| is_duplicate.then(|| Decided::Error(unit_of_work::key_in_use())))
        .collect();
    let mut replays = Vec::new();
    let wanted: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|job| match &job.caller {
            Caller::Http { idempotency: Some(c), .. } => Some((c.principal.clone(), c.key.clone())),
            _ => None,
        })
        .collect();
    let scope = business.as_uuid().to_string();
    let (started_at, stored) = store::start_batch(&mut transaction, &scope, &wanted).await?;
    let mut stored: HashMap<(String, String), StoredResponse> = stored.into_iter().collect();
    replay_posting_keys(&mut transaction, business, jobs, &mut decided).await?;
    for (index, job) in jobs.iter().enumerate() {
        let Caller::Http { idempotency: Some(context), .. } = &job.caller else { continue };
        if decided[index].is_some() {
            continue;
        }
        if let Some(response) = stored.remove(&(context.principal.clone(), context.key.clone())) {
            decided[index] = Some(match response.admit(context) {
                Ok(response) => {
                    replays.push(response);
                    Decided::Replay(replays.len() - 1)
                }
                Err(refusal) => Decided::Error(refusal),
            });
        }
    }

    steps.mark("keys");
    let pending: Vec<usize> = (0..jobs.len()).filter(|&index| decided[index].is_none()).collect();
    let commands = pending.iter().map(|&index| &jobs[index].command);
    // Ids a service chose must be unused: the book refuses one it finds loaded.
    let claimed: Vec<uuid::Uuid> = pending
        .iter()
        .filter(|&&index| matches!(jobs[index].caller, Caller::Service { .. }))
        .flat_map(|&index| jobs[index].command.new_transfers())
        .map(|id| id.as_uuid())
        .collect();
    let (mut book, revisions) =
        load_book(&mut transaction, cache, read, business, commands, &claimed, started_at).await?;
    steps.mark("load");
    let mut records: Vec<(usize, StatusCode, &'static str, Vec<u8>)> = Vec::with_capacity(pending.len());
    let mut services: Vec<(usize, Result<Outcome, Refusal>)> = Vec::new();
    let mut posting_keys = Vec::new();
    let mut events = Vec::new();
    for &index in &pending {
        let job = &jobs[index];
        let (outcome, new_events) = decide(&mut book, &job.command, business, job.caller.request_id())?;
        events.extend(new_events);
        match &job.caller {
            Caller::Http { request_id, render, .. } => {
                let (status, content_type, body) = render(&job.command, &outcome, request_id);
                records.push((index, status, content_type, body));
            }
            Caller::Service { key, .. } => {
                if let (Some(key), Ok(applied)) = (key, &outcome) {
                    posting_keys.push(posting::key_row(key, &job.command, applied));
                }
                services.push((index, outcome));
            }
        }
    }

    let (accounts, touched) = consulted(&book, &revisions);
    let responses: Vec<ResponseRecord<'_>> = records
        .iter()
        .filter_map(|(index, status, content_type, body)| {
            let Caller::Http { idempotency, .. } = &jobs[*index].caller else { return None };
            idempotency.as_ref().map(|context| ResponseRecord { context, status: *status, content_type, body })
        })
        .collect();
    steps.mark("apply");
    if armed("ledger::refuse_poisoned_description", business)
        && book.writes.transfers.iter().any(|transfer| transfer.description.as_deref() == Some("poison"))
    {
        // Under test: the database refuses one command's value, as it once refused a NUL
        // in a description (SQLSTATE 22021), before the batch is written.
        sqlx::query("SELECT convert_from('\\x00'::bytea, 'UTF8')").execute(&mut *transaction).await?;
    }
    let mut written = store::write(&mut transaction, business, &book.writes, &accounts, &events, &responses).await?;
    if armed("ledger::write_stale", business) {
        // Under test: as if another writer had changed an account under every attempt.
        written = store::Written::Stale;
    }
    if written == store::Written::Stale {
        // Dropping the transaction rolls it back.
        return Err(BatchError::Stale);
    }
    store::insert_posting_keys(&mut transaction, business, &posting_keys, book.now()).await?;
    steps.mark("write");
    // Under test: the session ends after the write, before COMMIT reaches it.
    inject_session_loss("ledger::session_lost_before_commit", business, pool, &mut transaction).await;
    transaction.commit().await.map_err(BatchError::Commit)?;
    steps.mark("commit");
    cache.remember(&book, &revisions, &touched);
    tracing::debug!(commands = jobs.len(), steps = %steps, "ledger batch steps");

    for (index, status, content_type, body) in records {
        decided[index] = Some(Decided::Fresh { status, content_type, body });
    }
    for (index, outcome) in services {
        decided[index] = Some(Decided::Service(outcome));
    }
    let decided = decided
        .into_iter()
        .map(|decision| decision.unwrap_or_else(|| Decided::Error(ApiError::internal(&"a command was not decided"))))
        .collect();
    Ok((decided, replays))
}

/// The accounts the book decided with, at the revision each was read at, in id order (so
/// that the write's updates wait for rows in the same order as every other writer's
/// locks), and which of them it changed.
pub(crate) fn consulted<'b>(
    book: &'b Book,
    revisions: &HashMap<AccountId, i64>,
) -> (Vec<store::Consulted<'b>>, HashSet<AccountId>) {
    let touched: HashSet<_> = book.writes.entries.iter().map(|entry| entry.account).collect();
    let mut accounts: Vec<store::Consulted<'_>> = book
        .accounts
        .values()
        .filter_map(|account| {
            let revision = *revisions.get(&account.id)?;
            Some(store::Consulted { account, revision, changed: touched.contains(&account.id) })
        })
        .collect();
    accounts.sort_unstable_by_key(|consulted| consulted.account.id);
    (accounts, touched)
}

/// Loads what `command` needs with every account locked, for a caller's own
/// transaction ([`crate::posting::apply_in`]).
pub(crate) async fn load_locked(
    connection: &mut PgConnection,
    business: BusinessId,
    command: &Command,
    claimed: &[uuid::Uuid],
    now: time::OffsetDateTime,
) -> Result<(Book, HashMap<AccountId, i64>), BatchError> {
    load_book(connection, &AccountCache::default(), Read::Locked, business, std::iter::once(command), claimed, now)
        .await
}

/// Applies one command to the book and returns its outcome with the events of what it
/// wrote. The same step for a batch of the engine and for a service's own transaction.
pub(crate) fn decide(
    book: &mut Book,
    command: &Command,
    business: BusinessId,
    request_id: Option<&str>,
) -> Result<(Result<Outcome, Refusal>, Vec<Event>), BatchError> {
    let marks = (book.writes.transfers.len(), book.writes.resolutions.len());
    let outcome = book.apply(command);
    if let Err(Refusal::HoldExpired { transfer }) = &outcome {
        // The hold is overdue but the sweeper has not reached it: expire it now, in
        // this batch, so its funds are released with the refusal. The book just judged
        // it overdue, so the expiry cannot be refused; if it were, the sweeper's next
        // pass would expire it, and the refusal above stands either way.
        if let Err(refusal) = book.apply(&Command::Expire { hold: *transfer }) {
            tracing::error!(%refusal, hold = %transfer, "expiring an overdue hold in a batch was refused");
        }
    }
    let events = transfer_events(book, marks, business, request_id).map_err(BatchError::Encode)?;
    Ok((outcome, events))
}

/// Decides the service commands whose posting key is stored: a replay of the outcome it
/// was given (its transfers as they are now), or [`Decided::KeyReused`] if the key was
/// given to another command.
async fn replay_posting_keys(
    connection: &mut PgConnection,
    business: BusinessId,
    jobs: &[Job],
    decided: &mut [Option<Decided>],
) -> Result<(), BatchError> {
    let keyed: Vec<(usize, &PostingKey)> = jobs
        .iter()
        .enumerate()
        .filter(|(index, _)| decided[*index].is_none())
        .filter_map(|(index, job)| match &job.caller {
            Caller::Service { key: Some(key), .. } => Some((index, key)),
            _ => None,
        })
        .collect();
    let keys: Vec<&str> = keyed.iter().map(|(_, key)| key.as_str()).collect();
    let stored = store::find_posting_keys(connection, business, &keys).await?;
    if stored.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = stored.iter().flat_map(|row| row.transfer_ids.iter().copied()).collect();
    let transfers: HashMap<_, _> = load_transfers_by_id(connection, business, &ids)
        .await?
        .into_iter()
        .map(|transfer| (transfer.id.as_uuid(), transfer))
        .collect();
    for (index, key) in keyed {
        let Some(row) = stored.iter().find(|row| row.key == key.as_str()) else { continue };
        decided[index] = Some(match posting::replayed(&jobs[index].command, row, &transfers) {
            posting::Replayed::Outcome(outcome) => Decided::Service(Ok(outcome)),
            posting::Replayed::Reused => Decided::KeyReused,
            posting::Replayed::Missing => {
                Decided::Error(ApiError::internal(&"a posting key names a transfer that is not there"))
            }
        });
    }
    Ok(())
}

/// Loads the transfers the commands name and the accounts they touch, with the revision
/// each account was read at, and the book's clock.
///
/// - [`Read::Cached`] (only for batches that name no transfer, see below): accounts from
///   the cache, the others read without locks. The write checks every revision, so a
///   change by anyone else since sends the batch round again.
/// - [`Read::Locked`]: accounts read and locked in id order, then the transfers read
///   again: a hold or reversal committed by a batch that held these accounts' locks
///   before us is then seen (a transfer's accounts never change, so the first load names
///   the right ones).
///
/// An account's entries must be timed in the order its writers committed. The clock is
/// therefore the time of the last account read or lock when there was one; with every
/// account from the cache, `started_at` (read at the start of this batch) is later than
/// every commit the cache reflects, and the write refuses the batch if there was
/// another since.
async fn load_book<'a>(
    connection: &mut PgConnection,
    cache: &AccountCache,
    read: Read,
    business: BusinessId,
    commands: impl Iterator<Item = &'a Command> + Clone,
    claimed: &[uuid::Uuid],
    started_at: time::OffsetDateTime,
) -> Result<(Book, HashMap<AccountId, i64>), BatchError> {
    let transfer_ids: Vec<uuid::Uuid> = commands
        .clone()
        .flat_map(Command::transfers)
        .map(|id| id.as_uuid())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // A claimed id names no accounts and needs no lock: two batches that both insert it
    // meet at the transfers' primary key, and the one retried finds it.
    let in_use = load_transfers_by_id(connection, business, claimed).await?;
    // A command that names a transfer (post, void, expire, reverse) decides with the
    // transfer's state and its accounts' together, and only the locks make the two
    // consistent: read without them, a hold resolved elsewhere between the two reads looks
    // open beside accounts that no longer hold its funds, and resolving it again drives
    // a pending total negative (the two-instance test hit this: a CHECK violation, a 500).
    // Such batches take the locking read from the start; plain transfers need only the
    // accounts, which the revisions check.
    let read = if transfer_ids.is_empty() { read } else { Read::Locked };
    let mut transfers = load_transfers_by_id(connection, business, &transfer_ids).await?;
    let known: HashMap<_, _> = transfers.iter().map(|transfer| (transfer.id, transfer.clone())).collect();
    let account_ids: BTreeSet<AccountId> = commands.flat_map(|command| command.accounts(&known)).collect();
    let mut accounts = Vec::with_capacity(account_ids.len());
    let mut revisions = HashMap::with_capacity(account_ids.len());
    let mut to_read: Vec<uuid::Uuid> = Vec::with_capacity(account_ids.len());
    for id in &account_ids {
        match cache.accounts.get(id).filter(|_| read == Read::Cached) {
            Some(known) => {
                accounts.push(known.account.clone());
                revisions.insert(known.account.id, known.revision);
            }
            None => to_read.push(id.as_uuid()),
        }
    }
    let (rows, read_at) = match read {
        Read::Cached => store::read_accounts(connection, business, &to_read).await?,
        Read::Locked => store::lock_accounts(connection, business, &to_read).await?,
    };
    for row in &rows {
        let account = row.account()?;
        revisions.insert(account.id, row.revision);
        accounts.push(account);
    }
    if read == Read::Locked && !transfers.is_empty() {
        transfers = load_transfers_by_id(connection, business, &transfer_ids).await?;
    }
    transfers.extend(in_use);
    let now = read_at.unwrap_or(started_at);
    Ok((Book::new(accounts, transfers, now), revisions))
}

async fn load_transfers_by_id(
    connection: &mut PgConnection,
    business: BusinessId,
    ids: &[uuid::Uuid],
) -> Result<Vec<crate::domain::Transfer>, BatchError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(store::load_transfers(connection, business, ids)
        .await?
        .into_iter()
        .map(store::TransferRow::transfer)
        .collect::<Result<Vec<_>, _>>()?)
}

/// The events of what one command wrote (the book's writes from `marks` on). Sequences
/// follow from the transfer's life, so they need no counter: created is 1; a hold's end
/// is 2; a reversal of the original is 2 for a posted transfer, 3 for a posted hold.
fn transfer_events(
    book: &Book,
    marks: (usize, usize),
    business: BusinessId,
    request_id: Option<&str>,
) -> Result<Vec<Event>, serde_json::Error> {
    let request_id = request_id.map(str::to_string);
    let event = |event_type, transfer: &crate::domain::Transfer, sequence| {
        let data = serde_json::value::to_raw_value(&TransferBody::from(transfer))?;
        let resource_id = transfer.id.to_string();
        Ok(Event::new(event_type, business, resource_id, sequence, book.now(), request_id.clone(), data))
    };
    let mut events = Vec::new();
    for created in &book.writes.transfers[marks.0..] {
        events.push(event(EventType::TransferCreated, created, 1)?);
        if let Some(original) = created.reverses.and_then(|id| book.transfers.get(&id)) {
            events.push(event(EventType::TransferReversed, original, if original.pending { 3 } else { 2 })?);
        }
    }
    for resolution in &book.writes.resolutions[marks.1..] {
        let Some(hold) = book.transfers.get(&resolution.hold) else { continue };
        let event_type = match resolution.resolution.kind {
            crate::domain::ResolutionKind::Posted => EventType::TransferPosted,
            crate::domain::ResolutionKind::Voided => EventType::TransferVoided,
            crate::domain::ResolutionKind::Expired => EventType::TransferExpired,
        };
        events.push(event(event_type, hold, 2)?);
    }
    Ok(events)
}

/// Expires overdue holds of every business through their engines. Returns how many.
pub async fn expire_overdue_holds(engine: &Engine, rows_max: i32) -> Result<usize, sqlx::Error> {
    let overdue = store::overdue_holds(&engine.pool, rows_max).await?;
    let count = overdue.len();
    let submissions = overdue.into_iter().map(|(business, transfer)| {
        let engine = engine.clone();
        async move {
            let command = Command::Expire { hold: crate::TransferId::from_uuid(transfer) };
            let caller = Caller::Service { key: None, request_id: Some("sweeper".into()) };
            engine.submit(BusinessId::from_uuid(business), command, caller).await
        }
    });
    for reply in futures_join(submissions).await {
        match reply {
            Reply::Error(error) => tracing::warn!(%error, "expiring a hold failed; the next sweep retries"),
            // Resolved (or posted) since the listing: nothing to expire.
            Reply::Decided(Err(refusal)) => tracing::debug!(%refusal, "an overdue hold was no longer open"),
            _ => {}
        }
    }
    Ok(count)
}

async fn futures_join<F: std::future::Future<Output = Reply> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut replies = Vec::with_capacity(handles.len());
    for handle in handles {
        replies.push(handle.await.unwrap_or_else(|_| Reply::Error(ApiError::internal(&"an expiry task panicked"))));
    }
    replies
}

/// Fault injection for the integration tests (feature `failpoints`): if the fail point
/// `name` is armed for `business`, ends the database session of `connection` from
/// another connection of `pool` and waits until it has ended. A test arms a point with
/// `fail::cfg(name, "return(<business id>)")`, for its own business only, since other
/// tests run in the same process. Ending a session takes its login role or a superuser,
/// not the role requests run as, hence `SET LOCAL ROLE NONE` for the one transaction
/// that does it. A failure is only logged: the test that armed the fault sees that no
/// session ended. Without the feature this does nothing and holds none of that code.
#[cfg(feature = "failpoints")]
async fn inject_session_loss(name: &str, business: BusinessId, pool: &PgPool, connection: &mut PgConnection) {
    if !armed(name, business) {
        return;
    }
    let ended = async {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *connection).await?;
        let mut ending = pool.begin().await?;
        sqlx::query("SET LOCAL ROLE NONE").execute(&mut *ending).await?;
        let ended: bool =
            sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)").bind(pid).fetch_one(&mut *ending).await?;
        ending.commit().await?;
        Ok::<bool, sqlx::Error>(ended)
    };
    match ended.await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the injected fault did not end the session"),
        Err(error) => tracing::warn!(%error, "the injected fault failed"),
    }
}

#[cfg(not(feature = "failpoints"))]
async fn inject_session_loss(_name: &str, _business: BusinessId, _pool: &PgPool, _connection: &mut PgConnection) {}

/// Whether the fail point `name` is armed for `business` (feature `failpoints`; see
/// [`inject_session_loss`]). Without the feature, never.
#[cfg(feature = "failpoints")]
fn armed(name: &str, business: BusinessId) -> bool {
    let id = business.to_string();
    (|| {
        fail::fail_point!(name, |armed_for: Option<String>| armed_for.as_deref() == Some(id.as_str()));
        false
    })()
}

#[cfg(not(feature = "failpoints"))]
fn armed(_name: &str, _business: BusinessId) -> bool {
    false
}

/// Where a batch's time went, for the debug log (`RUST_LOG=till_ledger=debug`).
struct Steps {
    last: std::time::Instant,
    spent: Vec<(&'static str, u128)>,
}

impl Steps {
    fn start() -> Steps {
        Steps { last: std::time::Instant::now(), spent: Vec::with_capacity(8) }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.spent.push((step, now.duration_since(self.last).as_micros()));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (step, micros) in &self.spent {
            write!(formatter, "{step}={micros}us ")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use till_kit::{Currency, Metadata};
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{AccountStatus, NewTransfer, Side, Totals};
    use crate::TransferId;

    fn account() -> Account {
        Account {
            id: AccountId::generate(),
            currency: Currency::GBP,
            normal_balance: Side::Debit,
            min_balance: None,
            max_balance: None,
            status: AccountStatus::Active,
            totals: Totals::default(),
        }
    }

    fn book(accounts: &[Account]) -> Book {
        Book::new(accounts.to_vec(), Vec::new(), OffsetDateTime::UNIX_EPOCH)
    }

    fn read_at(accounts: &[Account], revision: i64) -> HashMap<AccountId, i64> {
        accounts.iter().map(|account| (account.id, revision)).collect()
    }

    #[test]
    fn the_cache_keeps_each_account_at_the_revision_the_batch_left_it() {
        let (source, wallet, consulted) = (account(), account(), account());
        let mut book = book(&[source.clone(), wallet.clone(), consulted.clone()]);
        let transfer = NewTransfer {
            id: TransferId::generate(),
            debit_account: source.id,
            credit_account: wallet.id,
            amount: till_kit::Money::from_minor(500, Currency::GBP),
            hold: None,
            description: None,
            metadata: Metadata::default(),
        };
        assert!(book.apply(&Command::Transfer(transfer)).is_ok());
        let changed: HashSet<AccountId> = [source.id, wallet.id].into();
        // The third account was consulted at revision 7; an account the batch holds
        // without a revision (never read) is not remembered.
        let mut revisions = read_at(&[source.clone(), wallet.clone()], 3);
        revisions.insert(consulted.id, 7);
        let unread = account();
        book.accounts.insert(unread.id, unread.clone());

        let mut cache = AccountCache::default();
        cache.remember(&book, &revisions, &changed);
        assert_eq!(cache.accounts.len(), 3);
        assert_eq!(cache.accounts[&source.id].revision, 4, "a changed account is one revision on");
        assert_eq!(cache.accounts[&wallet.id].account.totals.credits_posted, 500);
        assert_eq!(cache.accounts[&consulted.id].revision, 7, "an unchanged one stays where it was read");
        assert!(!cache.accounts.contains_key(&unread.id));
    }

    #[test]
    fn a_full_cache_starts_again_with_the_batch_and_counts_only_new_accounts() {
        let mut cache = AccountCache::default();
        let first: Vec<Account> = (0..ACCOUNTS_CACHED_MAX).map(|_| account()).collect();
        cache.remember(&book(&first), &read_at(&first, 0), &HashSet::new());
        assert_eq!(cache.accounts.len(), ACCOUNTS_CACHED_MAX);

        // A batch of accounts already cached does not grow it: nothing is dropped.
        let known = first[..10].to_vec();
        cache.remember(&book(&known), &read_at(&known, 1), &HashSet::new());
        assert_eq!(cache.accounts.len(), ACCOUNTS_CACHED_MAX);
        assert_eq!(cache.accounts[&known[0].id].revision, 1);

        // One new account past the cap: the cache starts again, with this batch's.
        let batch = vec![first[20].clone(), account()];
        cache.remember(&book(&batch), &read_at(&batch, 2), &HashSet::new());
        assert_eq!(cache.accounts.len(), 2);
        assert!(batch.iter().all(|account| cache.accounts[&account.id].revision == 2));
    }
}
