//! The store: what must outlive the process and be shared by replicas. One interface,
//! [`Store`], with an SQLite file (the default: nothing to install) or PostgreSQL (several
//! replicas on one database) behind it. The schema is versioned and migrated at start-up.
//!
//! What it keeps: which `msg_id`s are handled (claimed with a lease before the post, marked
//! done after; see [`Claim`]) and each person's DM channel.

mod location;
mod postgres;
mod schema;
mod sqlite;

pub use location::Location;

/// The schema version this build migrates a database to.
pub const SCHEMA_VERSION: i64 = schema::LATEST;

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What a notification about a workspace meets: see [`Store::meet_snooze`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoozeMet {
    None,
    /// Held back; the snooze lasts until then.
    On(SystemTime),
    /// A snooze that ended, and how many notifications it held back.
    Ended(u64),
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
    /// Names this process in claim tokens, so a row shows which replica holds it.
    replica: Arc<str>,
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// A card's row: channel, card_ts, latest, latest_at.
type CardRow = (String, String, Option<String>, Option<i64>);

/// A person's snoozes (owner, workspace, until) and workspaces (owner, workspace, latest,
/// latest_at), as rows.
type HomeRows = (
    Vec<(String, String, i64)>,
    Vec<(String, String, Option<String>, Option<i64>)>,
);

/// One backend's answer to `claim`: `Some((attempts, first_claimed_ms))` when the claim is
/// ours, else the row that is in the way (`done`, `lease_expires_ms`), if it still exists.
enum Claimed {
    Ours { attempts: i64, first_claimed: i64 },
    Held { done: bool, lease_expires: i64 },
    Vanished,
}

impl Store {
    /// Opens (creating when missing) and migrates the store at `location`.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        let backend = match location {
            Location::Sqlite(_) | Location::SqliteMemory => {
                Backend::Sqlite(sqlite::Sqlite::open(location).await?)
            }
            Location::Postgres { .. } => {
                Backend::Postgres(postgres::Postgres::open(location).await?)
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
            replica: replica_name().into(),
        })
    }

    /// A private in-memory store: for a dry run, `send-test` and tests.
    pub async fn in_memory() -> Result<Store, StoreError> {
        Store::open(&Location::SqliteMemory).await
    }

    /// Claims `key` for a delivery that may take until `lease` from now. A claim that finds
    /// the id done, or held under a live lease, says so instead.
    pub async fn claim(&self, key: &MsgKey, lease: Duration) -> Result<Claim, StoreError> {
        let token = Token::new(&self.replica);
        let now = unix_ms(SystemTime::now());
        let lease_expires = now.saturating_add(lease.as_millis().try_into().unwrap_or(i64::MAX));
        // A row that vanishes between the attempt and the look (given up by its holder,
        // or pruned) is claimed again; twice is plenty.
        for _ in 0..3 {
            let claimed = match &*self.backend {
                Backend::Sqlite(db) => db.claim(key.bytes(), &token, now, lease_expires).await,
                Backend::Postgres(db) => db.claim(key.bytes(), &token, now, lease_expires).await,
            }?;
            return Ok(match claimed {
                Claimed::Ours { attempts: 1, .. } => Claim::Fresh(token),
                Claimed::Ours { first_claimed, .. } => Claim::TakenOver {
                    token,
                    first_claimed: from_unix_ms(first_claimed),
                },
                Claimed::Held { done: true, .. } => Claim::Done,
                Claimed::Held { lease_expires, .. } => Claim::Busy {
                    lease_ends: from_unix_ms(lease_expires),
                },
                Claimed::Vanished => continue,
            });
        }
        Ok(Claim::Busy {
            lease_ends: SystemTime::now(),
        })
    }

    /// Marks a claimed `msg_id` handled: copies and retries are answered `duplicate`.
    pub async fn finish(&self, key: &MsgKey, token: &Token) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.finish(key.bytes(), token).await,
            Backend::Postgres(db) => db.finish(key.bytes(), token).await,
        }
    }

    /// Gives a claim up. `maybe_posted`: the outcome is unknown (a post's answer was lost),
    /// so the row stays, its lease ended, and whoever claims it next reads the DM back;
    /// otherwise nothing was posted and the row goes.
    pub async fn release(
        &self,
        key: &MsgKey,
        token: &Token,
        maybe_posted: bool,
    ) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.release(key.bytes(), token, maybe_posted).await,
            Backend::Postgres(db) => db.release(key.bytes(), token, maybe_posted).await,
        }
    }

    /// The DM channel (`D…`) learned for a Slack user, if any.
    pub async fn dm_channel(&self, user: &str) -> Result<Option<String>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.dm_channel(user).await,
            Backend::Postgres(db) => db.dm_channel(user).await,
        }
    }

    /// Remembers a Slack user's DM channel, from a post's answer.
    pub async fn learn_dm_channel(&self, user: &str, channel: &str) -> Result<(), StoreError> {
        let now = unix_ms(SystemTime::now());
        match &*self.backend {
            Backend::Sqlite(db) => db.learn_dm_channel(user, channel, now).await,
            Backend::Postgres(db) => db.learn_dm_channel(user, channel, now).await,
        }
    }

    /// The thread for `key`, or the right to make its card (see [`ThreadClaim`]).
    pub async fn claim_thread(
        &self,
        key: &ThreadKey,
        lease: Duration,
    ) -> Result<ThreadClaim, StoreError> {
        // Most notifications join a thread that exists: a read, no write.
        if let Some(thread) = self.thread(key).await? {
            return Ok(ThreadClaim::Found(thread));
        }
        let token = Token::new(&self.replica);
        let now = unix_ms(SystemTime::now());
        let lease_expires = now.saturating_add(lease.as_millis().try_into().unwrap_or(i64::MAX));
        let ours = match &*self.backend {
            Backend::Sqlite(db) => db.claim_thread(key, &token, lease_expires, now).await,
            Backend::Postgres(db) => db.claim_thread(key, &token, lease_expires, now).await,
        }?;
        if ours {
            return Ok(ThreadClaim::Ours(token));
        }
        let found = self.thread(key).await?;
        Ok(found.map_or(ThreadClaim::Busy, ThreadClaim::Found))
    }

    async fn thread(&self, key: &ThreadKey) -> Result<Option<Thread>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.thread(key).await,
            Backend::Postgres(db) => db.thread(key).await,
        }
    }

    /// Records the card the holder of `token` made for `key`.
    pub async fn set_thread(
        &self,
        key: &ThreadKey,
        token: &Token,
        thread: &Thread,
    ) -> Result<(), StoreError> {
        let now = unix_ms(SystemTime::now());
        match &*self.backend {
            Backend::Sqlite(db) => db.set_thread(key, token, thread, now).await,
            Backend::Postgres(db) => db.set_thread(key, token, thread, now).await,
        }
    }

    /// Gives up making `key`'s card (it could not be posted).
    pub async fn release_thread(&self, key: &ThreadKey, token: &Token) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.release_thread(key, token).await,
            Backend::Postgres(db) => db.release_thread(key, token).await,
        }
    }

    /// Forgets the card at `card_ts` (Slack no longer has it): the next notification about
    /// the workspace starts a new thread.
    pub async fn forget_thread(&self, key: &ThreadKey, card_ts: &str) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.forget_thread(key, card_ts).await,
            Backend::Postgres(db) => db.forget_thread(key, card_ts).await,
        }
    }

    /// Records what `key`'s card now shows (for the App Home).
    pub async fn set_latest(
        &self,
        key: &ThreadKey,
        latest: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let at = unix_ms(at);
        match &*self.backend {
            Backend::Sqlite(db) => db.set_latest(key, latest, at).await,
            Backend::Postgres(db) => db.set_latest(key, latest, at).await,
        }
    }

    /// `key`'s card, and what it shows last.
    pub async fn card(
        &self,
        key: &ThreadKey,
    ) -> Result<Option<(Thread, Option<(String, SystemTime)>)>, StoreError> {
        let row = match &*self.backend {
            Backend::Sqlite(db) => db.card(key).await,
            Backend::Postgres(db) => db.card(key).await,
        }?;
        Ok(row.map(|(channel, card_ts, latest, at)| {
            (
                Thread { channel, card_ts },
                latest.zip(at.map(from_unix_ms)),
            )
        }))
    }

    /// What `slack_user`'s App Home shows: their snoozes and workspaces.
    pub async fn home(&self, slack_user: &str) -> Result<Home, StoreError> {
        let now = unix_ms(SystemTime::now());
        let (snoozes, workspaces) = match &*self.backend {
            Backend::Sqlite(db) => db.home(slack_user, now).await,
            Backend::Postgres(db) => db.home(slack_user, now).await,
        }?;
        Ok(Home {
            snoozes: snoozes
                .into_iter()
                .map(|(owner, workspace, until)| Snoozed {
                    owner,
                    workspace,
                    until: from_unix_ms(until),
                })
                .collect(),
            workspaces: workspaces
                .into_iter()
                .map(|(owner, workspace, latest, at)| Known {
                    owner,
                    workspace,
                    latest: latest.zip(at.map(from_unix_ms)),
                })
                .collect(),
        })
    }

    /// Snoozes `key`'s workspace for its recipient until `until`.
    pub async fn snooze(&self, key: &ThreadKey, until: SystemTime) -> Result<(), StoreError> {
        self.key_execute(
            "snooze a workspace",
            schema::SNOOZE,
            key,
            Some(unix_ms(until)),
        )
        .await
        .map(drop)
    }

    /// Ends `key`'s snooze now; whether there was one.
    pub async fn unsnooze(&self, key: &ThreadKey) -> Result<bool, StoreError> {
        let changed = self
            .key_execute("end a snooze", schema::UNSNOOZE, key, None)
            .await?;
        Ok(changed > 0)
    }

    /// What a notification about `key`'s workspace meets: no snooze (one read, the common
    /// case), a snooze in force (counted as holding one more back), or one that ended (then
    /// removed, with how many it held back).
    pub async fn meet_snooze(&self, key: &ThreadKey) -> Result<SnoozeMet, StoreError> {
        let now = unix_ms(SystemTime::now());
        let until = self
            .key_query("check a snooze", schema::SNOOZE_UNTIL, key, now)
            .await?;
        let Some(until) = until else {
            return Ok(SnoozeMet::None);
        };
        // Re-checked by the writes themselves: a snooze may end or change meanwhile.
        if until > now {
            if let Some(until) = self.hold_back(key).await? {
                return Ok(SnoozeMet::On(until));
            }
        }
        Ok(match self.end_snooze(key).await? {
            Some(held) => SnoozeMet::Ended(held),
            None => SnoozeMet::None,
        })
    }

    /// When `key` is snoozed now: counts one more notification held back and says until when.
    pub async fn hold_back(&self, key: &ThreadKey) -> Result<Option<SystemTime>, StoreError> {
        let now = unix_ms(SystemTime::now());
        let until = self
            .key_query("check a snooze", schema::HOLD_BACK, key, now)
            .await?;
        Ok(until.map(from_unix_ms))
    }

    /// Removes `key`'s snooze if it has ended; how many notifications it held back.
    pub async fn end_snooze(&self, key: &ThreadKey) -> Result<Option<u64>, StoreError> {
        let now = unix_ms(SystemTime::now());
        let held = self
            .key_query("end a snooze", schema::END_SNOOZE, key, now)
            .await?;
        Ok(held.map(|n| n.max(0).unsigned_abs()))
    }

    async fn key_execute(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: Option<i64>,
    ) -> Result<u64, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.key_execute(operation, sql, key, at).await,
            Backend::Postgres(db) => db.key_execute(operation, sql, key, at).await,
        }
    }

    async fn key_query(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: i64,
    ) -> Result<Option<i64>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.key_query(operation, sql, key, at).await,
            Backend::Postgres(db) => db.key_query(operation, sql, key, at).await,
        }
    }

    /// Forgets handled ids first claimed before `window` ago; returns how many went.
    pub async fn prune(&self, window: Duration) -> Result<u64, StoreError> {
        let cutoff = unix_ms(SystemTime::now().checked_sub(window).unwrap_or(UNIX_EPOCH));
        let mut pruned = 0;
        // Bounded batches: a large backlog never holds the store for long.
        loop {
            let n = match &*self.backend {
                Backend::Sqlite(db) => db.prune_batch(cutoff).await,
                Backend::Postgres(db) => db.prune_batch(cutoff).await,
            }?;
            pruned += n;
            if n < schema::PRUNE_BATCH {
                return Ok(pruned);
            }
        }
    }

    /// Whether the store answers and can write, with its schema version.
    pub async fn health(&self) -> Result<Health, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.health().await,
            Backend::Postgres(db) => db.health().await,
        }
    }

    /// Prunes the dedupe window's expired ids every `every` until `shutdown`.
    pub fn spawn_pruner(
        self,
        window: Duration,
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
                match self.prune(window).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(pruned = n, "forgot msg_ids older than the dedupe window")
                    }
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

fn unix_ms(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_millis().try_into().unwrap_or(i64::MAX)
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests;
