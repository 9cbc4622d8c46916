//! The store: what must outlive the process and be shared by replicas. One interface,
//! [`Store`], with an SQLite file (the default: nothing to install) or PostgreSQL (several
//! replicas on one database) behind it. The schema is versioned and migrated at start-up.
//!
//! Every operation is written once (`claims`, `threads`) over a backend-neutral layer
//! (`sql`: statements with typed parameters and rows, run in one round trip); each backend
//! (`sqlite`, `postgres`) only runs statements, opens and migrates. What it keeps: which
//! `msg_id`s are handled (claimed with a lease before the post, marked done after; see
//! [`Claim`]), each person's DM channel, each workspace's thread and card, and snoozes.

mod claims;
mod collapses;
mod location;
mod outbox;
mod postgres;
mod schema;
mod sql;
mod sqlite;
use sqlite::Synced;
mod threads;

pub use collapses::{CollapseClaim, Event};
pub use location::Location;
pub use outbox::{OutboxState, Queued, Taken, ToQueue};
pub use schema::Plan;

/// The schema version this build migrates a database to.
pub const SCHEMA_VERSION: i64 = schema::LATEST;

use sql::{statement, Commit, Done, Statement, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `msg_id` as the store keys it: Coder's are UUIDs, kept as their 16 bytes; anything
/// else (a hand-made test message) as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MsgKey {
    Uuid(u128),
    Other(Arc<str>),
}

impl MsgKey {
    pub fn of(msg_id: &str) -> Self {
        match uuid::Uuid::try_parse(msg_id) {
            Ok(id) => MsgKey::Uuid(id.as_u128()),
            Err(_) => MsgKey::Other(msg_id.into()),
        }
    }

    /// The key's bytes in the `handled` table. The two kinds cannot collide: a text key
    /// of 16 bytes would need to be a UUID's raw bytes, which no text `msg_id` parses to.
    fn bytes(&self) -> Vec<u8> {
        match self {
            MsgKey::Uuid(id) => id.to_be_bytes().to_vec(),
            MsgKey::Other(text) => text.as_bytes().to_vec(),
        }
    }
}

/// What claiming a `msg_id` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours, and nobody tried it before.
    Fresh(Token),
    /// Ours, taken over from an earlier attempt that ended without an outcome (its replica
    /// died, or its post's answer was lost): the DM may hold the message already, so it is
    /// read back (since `first_claimed`) before posting.
    TakenOver {
        token: Token,
        first_claimed: SystemTime,
    },
    /// Handled already (delivered, undeliverable or dry run) within the dedupe window.
    Done,
    /// Another delivery holds it until its lease ends.
    Busy { lease_ends: SystemTime },
}

/// Proof of a claim: only its holder can mark the `msg_id` done or give it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    fn new(replica: &str) -> Self {
        Token(format!("{replica}/{:016x}", fastrand::u64(..)))
    }
}

/// A workspace's thread in one person's DM: whose DM, whose workspace, which workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadKey {
    /// The recipient's Slack user ID.
    pub slack_user: String,
    /// The workspace owner's Coder username.
    pub owner: String,
    pub workspace: String,
}

/// A thread's card: the top-level message its replies hang under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub channel: String,
    pub card_ts: String,
}

/// A workspace's card as it should look now (see [`Store::card`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardView {
    pub thread: Thread,
    /// What happened last, and when.
    pub latest: Option<(String, SystemTime)>,
    /// The snooze in force, if any.
    pub snoozed_until: Option<SystemTime>,
}

/// What claiming a thread found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadClaim {
    /// The thread exists.
    Found(Thread),
    /// None yet: this delivery makes its card, then [`Store::set_thread`].
    Ours(Token),
    /// Another delivery is making its card.
    Busy,
}

/// What a person's App Home shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Home {
    /// Snoozes in force, soonest end first.
    pub snoozes: Vec<Snoozed>,
    /// Workspaces with a thread in their DM, most recent first.
    pub workspaces: Vec<Known>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snoozed {
    pub owner: String,
    pub workspace: String,
    pub until: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub owner: String,
    pub workspace: String,
    /// What its card shows last, and when it happened.
    pub latest: Option<(String, SystemTime)>,
}

/// What a claim read besides, in its round trip, about the workspace its notification is
/// about (see [`Store::claim_looking`]): most deliveries need nothing more before posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Looked {
    pub key: ThreadKey,
    /// Whether the workspace has a snooze (on, or ended with a count still to show); when
    /// not, [`Store::meet_snooze`] has nothing to do.
    pub snoozed: bool,
    /// Its thread's card, when it has one.
    pub thread: Option<Thread>,
}

/// What a delivered notification's message showed, recorded with its done mark in one round
/// trip ([`Store::finish_delivery`], [`Store::unqueue`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    /// The workspace whose ended snooze's count it told: that snooze is forgotten.
    pub snooze_ended: Option<ThreadKey>,
    /// The workspace whose card now shows it: what it says, and when that happened.
    pub on_card: Option<(ThreadKey, String, SystemTime)>,
}

/// What a notification about a workspace meets: see [`Store::meet_snooze`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoozeMet {
    None,
    /// Held back; the snooze lasts until then.
    On(SystemTime),
    /// A snooze that ended and held notifications back: how many. It stays recorded until
    /// the notification that says so is posted ([`Store::finish_delivery`]).
    Ended(u64),
}

/// What one pruning forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Handled `msg_id`s and clicks.
    pub ids: u64,
    pub snoozes: u64,
    pub threads: u64,
    /// Collapsed events whose window ended.
    pub events: u64,
}

/// A database's schema as found, before anything is done to it (see [`Store::inspect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub version: i64,
    /// The oldest schema version a bridge must know to use it, once recorded.
    pub oldest_reader: Option<i64>,
    /// The server is a read-only standby, or the file or its folder cannot be written.
    pub read_only: bool,
}

/// What `serve` would do with a store, found without writing to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub backend: &'static str,
    /// `None`: no database file yet (`serve` creates it).
    pub found: Option<Found>,
    /// What this bridge would do with it, or why it cannot use it.
    pub plan: Result<schema::Plan, String>,
}

/// What `check` and `/readyz` report about the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub backend: &'static str,
    pub schema_version: i64,
}

/// The store failed: which operation, on which database, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store ({database}) failed to {operation}: {cause}")]
pub struct StoreError {
    /// `DATABASE_URL` without its password.
    pub database: Arc<str>,
    pub operation: &'static str,
    pub cause: String,
}

/// How the store is shared: cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// `DATABASE_URL` without its password, for errors.
    database: Arc<str>,
    /// Names this process in claim tokens, so a row shows which replica holds it.
    replica: Arc<str>,
    /// Milliseconds this replica's clock is taken to be ahead (0; tests play a skewed host).
    clock_ahead_ms: i64,
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl Store {
    /// Opens (creating when missing) and migrates the store at `location`.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        Store::open_knowing(location, SCHEMA_VERSION).await
    }

    /// Opens the store as a bridge that knows schema version `known` would (this build
    /// knows [`SCHEMA_VERSION`]; tests play an older build).
    async fn open_knowing(location: &Location, known: i64) -> Result<Store, StoreError> {
        let backend = match location {
            Location::Sqlite(_) | Location::SqliteMemory => {
                Backend::Sqlite(sqlite::Sqlite::open(location, known).await?)
            }
            Location::Postgres { .. } => {
                Backend::Postgres(postgres::Postgres::open(location, known).await?)
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
            database: location.shown().into(),
            replica: replica_name().into(),
            clock_ahead_ms: 0,
        })
    }

    /// The same store as a replica whose clock is `ahead_ms` milliseconds ahead of the
    /// others' (behind when negative): for tests of what clock skew may not change.
    #[doc(hidden)]
    pub fn with_clock_ahead_ms(mut self, ahead_ms: i64) -> Store {
        self.clock_ahead_ms = ahead_ms;
        self
    }

    /// This replica's time, in Unix milliseconds.
    fn now_ms(&self) -> i64 {
        unix_ms(SystemTime::now()).saturating_add(self.clock_ahead_ms)
    }

    /// What `serve` would do with the store at `location`, found without creating,
    /// migrating or writing anything (`check`).
    pub async fn inspect(location: &Location) -> Result<Inspection, StoreError> {
        let shown: Arc<str> = location.shown().into();
        let (backend, found) = match location {
            Location::SqliteMemory => ("sqlite", None),
            Location::Sqlite(path) => {
                let path = path.clone();
                let found = tokio::task::spawn_blocking(move || sqlite::inspect(&path))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|found| found);
                let found = found.map_err(|cause| StoreError {
                    database: shown.clone(),
                    operation: "read its schema",
                    cause,
                })?;
                ("sqlite", found)
            }
            Location::Postgres { .. } => (
                "postgres",
                Some(postgres::Postgres::inspect(location).await?),
            ),
        };
        let plan = match found {
            Some(found) => schema::plan(found.version, found.oldest_reader, SCHEMA_VERSION),
            None => Ok(schema::Plan::Migrate),
        };
        Ok(Inspection {
            backend,
            found,
            plan,
        })
    }

    /// A private in-memory store: for a dry run, `send-test` and tests.
    pub async fn in_memory() -> Result<Store, StoreError> {
        Store::open(&Location::SqliteMemory).await
    }

    /// Whether the store answers and can write, with its schema version: on PostgreSQL
    /// through each of its connection pools, since each serves its own operations.
    pub async fn health(&self) -> Result<Health, StoreError> {
        const OPERATION: &str = "answer a health check";
        // A write that changes nothing still needs a writable database (and, on SQLite,
        // the write lock); on PostgreSQL it fails on a read-only server or without privileges.
        // A row added and removed changes a page, which SQLite must append to its WAL: on a
        // full disk that fails, as every claim does.
        let check = |commit| {
            self.run(
                OPERATION,
                commit,
                vec![
                    statement(schema::HEALTH_WRITE, [Vec::new().into()]),
                    statement(schema::HEALTH_ROW_ADD, []),
                    statement(schema::HEALTH_ROW_REMOVE, []),
                    statement(schema::VERSION, []),
                ],
            )
        };
        let done = match &*self.backend {
            Backend::Sqlite(_) => check(Commit::Durable).await?,
            Backend::Postgres(_) => {
                let relaxed = check(Commit::Relaxed);
                futures_util::future::try_join(check(Commit::Durable), relaxed)
                    .await?
                    .0
            }
        };
        let version = done.get(3).and_then(Done::first).map(|row| row.int(0));
        let schema_version = match version {
            Some(version) => self.columns(OPERATION, version)?,
            None => 0,
        };
        Ok(Health {
            backend: match &*self.backend {
                Backend::Sqlite(_) => "sqlite",
                Backend::Postgres(_) => "postgres",
            },
            schema_version,
        })
    }

    /// A PostgreSQL setting as each connection pool's connections see it (durable, then
    /// relaxed); nothing on SQLite. For tests of the settings made after connecting.
    #[doc(hidden)]
    pub async fn setting_on_each_pool(&self, name: &str) -> Result<Vec<String>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(db) => db.setting_on_each_pool(name).await.map(Vec::from),
        }
    }

    /// Runs `statements` in order, in one round trip to the backend.
    async fn run(
        &self,
        operation: &'static str,
        commit: Commit,
        statements: Vec<Statement>,
    ) -> Result<Vec<Done>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.run(operation, (false, Synced::No), statements).await,
            Backend::Postgres(db) => db.run(operation, commit, false, statements).await,
        }
    }

    /// Runs `statements` in order, all or none, durably; when `synced`, on disk before the
    /// answer on SQLite too (see `sqlite`'s note; PostgreSQL's durable commits always are).
    async fn run_atomically(
        &self,
        operation: &'static str,
        synced: Synced,
        statements: Vec<Statement>,
    ) -> Result<Vec<Done>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.run(operation, (true, synced), statements).await,
            Backend::Postgres(db) => db.run(operation, Commit::Durable, true, statements).await,
        }
    }

    /// Runs one statement.
    async fn execute<const N: usize>(
        &self,
        operation: &'static str,
        commit: Commit,
        sql: impl Into<sql::Sql>,
        params: [Value; N],
    ) -> Result<Done, StoreError> {
        let mut done = self
            .run(operation, commit, vec![statement(sql, params)])
            .await?;
        Ok(done.pop().unwrap_or_default())
    }

    /// A row's columns, or the store's error naming what was not as the schema says.
    fn columns<T>(
        &self,
        operation: &'static str,
        read: Result<T, sql::ColumnError>,
    ) -> Result<T, StoreError> {
        read.map_err(|e| StoreError {
            database: self.database.clone(),
            operation,
            cause: format!("unexpected row: {}", e.0),
        })
    }

    /// Prunes what is older than `retention` every `every` until `shutdown`.
    pub fn spawn_pruner(
        self,
        retention: Duration,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match self.prune(retention).await {
                    Ok(pruned) if pruned == Pruned::default() => {}
                    Ok(pruned) => tracing::debug!(
                        ids = pruned.ids,
                        snoozes = pruned.snoozes,
                        threads = pruned.threads,
                        "forgot what is older than RETENTION"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot prune the store; retrying later"),
                }
            }
        })
    }
}

/// This process among replicas: host name and process id, as logs and the rows show it.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(char::is_ascii_graphic)
        .take(64)
        .collect();
    match host.is_empty() {
        true => format!("pid{}", std::process::id()),
        false => format!("{host}:{}", std::process::id()),
    }
}

/// A workspace's key as the first three parameters of the thread and snooze statements.
fn key_params(key: &ThreadKey) -> [Value; 3] {
    [
        key.slack_user.as_str().into(),
        key.owner.as_str().into(),
        key.workspace.as_str().into(),
    ]
}

/// A workspace's key, then one more parameter (`$4`).
fn key_and(key: &ThreadKey, fourth: Value) -> [Value; 4] {
    let [user, owner, workspace] = key_params(key);
    [user, owner, workspace, fourth]
}

/// A `schema::THREAD` row's card: none while its card is being made.
fn thread_of(row: &sql::Row) -> Result<Option<Thread>, sql::ColumnError> {
    let (channel, card_ts) = (row.opt_text(0)?, row.opt_text(1)?);
    Ok(channel
        .zip(card_ts)
        .map(|(channel, card_ts)| Thread { channel, card_ts }))
}

/// What a card shows last and when, when both are known.
fn latest_of(latest: Option<String>, at: Option<i64>) -> Option<(String, SystemTime)> {
    latest.zip(at.map(from_unix_ms))
}

/// A lease's length in milliseconds, as the statements take it.
fn lease_ms(lease: Duration) -> i64 {
    lease.as_millis().try_into().unwrap_or(i64::MAX)
}

fn unix_ms(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_millis().try_into().unwrap_or(i64::MAX)
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests;
