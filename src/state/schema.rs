//! The schema, as numbered migrations. Version N is reached by applying the first N scripts
//! in order; a database records its version in `schema_version`. Each backend has its own
//! spelling of the same tables, one script per version each.

use super::sql::Sql;

/// `handled`: one row per `msg_id` claimed in the dedupe window.
/// - `owner`: the token of the claim that holds (or last held) it;
/// - `done`: 1 once handled; 0 while in flight or after an attempt ended without outcome;
/// - `attempts`: claims so far (more than 1: taken over, so the DM is read back first);
/// - `lease_expires`, `created_at`: Unix milliseconds; `created_at` is the first claim.
///
/// `dm_channels`: each Slack user's DM channel with the bot, learned from post answers.
///
/// `threads`: each (recipient, owner, workspace)'s thread in the recipient's DM: the card
/// (`channel`, `card_ts`), or, while `card_ts` is NULL, the claim (`maker`, `lease_expires`)
/// of the delivery posting the card, so two notifications at once make one card.
///
/// `threads.latest`, `threads.latest_at` (version 5): what the card shows, for the App Home.
///
/// `snoozes`: a person's snooze of one workspace (`until`, Unix ms; 0 once undone) and how
/// many notifications it `held_back`, reported with the first after it ends.
///
/// `collapses` (version 8): one event Coder sent to several people (a role broadcast)
/// that a route posts once to `channel`, keyed by the copies' `digest` (what they share):
/// the post (`ts`), or, while it is NULL, the claim (`maker`, `lease_expires`) of the
/// delivery posting it; copies arriving until `expires_at` (the collapse window) join it
/// (`copies`).
///
/// `outbox` (version 7): notifications Slack could not take yet, each as Coder sent it
/// (`body`, `msg_id`), kept for store and forward: `seq` is arrival order, `recipient` (the e-mail
/// address, lowercased) keeps each person's in that order, `sent_at` is when Coder first
/// sent it (the claim's `created_at`), `next_at` the earliest next try, `holder` and
/// `lease_expires` the sender trying it now, `unsettled_since` when an attempt whose outcome
/// is unknown began (the next reads the conversation back first).
pub const SQLITE: &[&str] = &[
    "CREATE TABLE handled (
        msg_id BLOB PRIMARY KEY,
        owner TEXT NOT NULL,
        done INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        lease_expires INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX handled_created_at ON handled (created_at);",
    "CREATE TABLE dm_channels (
        slack_user TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        learned_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    "CREATE TABLE threads (
        slack_user TEXT NOT NULL,
        owner TEXT NOT NULL,
        workspace TEXT NOT NULL,
        channel TEXT,
        card_ts TEXT,
        maker TEXT NOT NULL,
        lease_expires INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (slack_user, owner, workspace)
    ) WITHOUT ROWID;",
    "CREATE TABLE snoozes (
        slack_user TEXT NOT NULL,
        owner TEXT NOT NULL,
        workspace TEXT NOT NULL,
        until INTEGER NOT NULL,
        held_back INTEGER NOT NULL,
        PRIMARY KEY (slack_user, owner, workspace)
    ) WITHOUT ROWID;",
    "ALTER TABLE threads ADD COLUMN latest TEXT;
    ALTER TABLE threads ADD COLUMN latest_at BIGINT;",
    "ALTER TABLE schema_version ADD COLUMN oldest_reader BIGINT;",
    "CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        body BLOB NOT NULL,
        template TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        queued_at INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        tries INTEGER NOT NULL,
        reason TEXT NOT NULL,
        holder TEXT,
        lease_expires INTEGER NOT NULL,
        unsettled_since INTEGER
    );
    CREATE INDEX outbox_recipient ON outbox (recipient, seq);",
    "CREATE TABLE collapses (
        channel TEXT NOT NULL,
        digest BLOB NOT NULL,
        maker TEXT NOT NULL,
        lease_expires INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        ts TEXT,
        copies INTEGER NOT NULL,
        PRIMARY KEY (channel, digest)
    ) WITHOUT ROWID;",
];

pub const POSTGRES: &[&str] = &[
    "CREATE TABLE handled (
        msg_id BYTEA PRIMARY KEY,
        owner TEXT NOT NULL,
        done SMALLINT NOT NULL,
        attempts INTEGER NOT NULL,
        lease_expires BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX handled_created_at ON handled (created_at);",
    "CREATE TABLE dm_channels (
        slack_user TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        learned_at BIGINT NOT NULL
    );",
    "CREATE TABLE threads (
        slack_user TEXT NOT NULL,
        owner TEXT NOT NULL,
        workspace TEXT NOT NULL,
        channel TEXT,
        card_ts TEXT,
        maker TEXT NOT NULL,
        lease_expires BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (slack_user, owner, workspace)
    );",
    "CREATE TABLE snoozes (
        slack_user TEXT NOT NULL,
        owner TEXT NOT NULL,
        workspace TEXT NOT NULL,
        until BIGINT NOT NULL,
        held_back INTEGER NOT NULL,
        PRIMARY KEY (slack_user, owner, workspace)
    );",
    "ALTER TABLE threads ADD COLUMN latest TEXT;
    ALTER TABLE threads ADD COLUMN latest_at BIGINT;",
    "ALTER TABLE schema_version ADD COLUMN oldest_reader BIGINT;",
    "CREATE TABLE outbox (
        seq BIGSERIAL PRIMARY KEY,
        msg_id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        body BYTEA NOT NULL,
        template TEXT NOT NULL,
        sent_at BIGINT NOT NULL,
        queued_at BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        tries INTEGER NOT NULL,
        reason TEXT NOT NULL,
        holder TEXT,
        lease_expires BIGINT NOT NULL,
        unsettled_since BIGINT
    );
    CREATE INDEX outbox_recipient ON outbox (recipient, seq);",
    "CREATE TABLE collapses (
        channel TEXT NOT NULL,
        digest BYTEA NOT NULL,
        maker TEXT NOT NULL,
        lease_expires BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        ts TEXT,
        copies INTEGER NOT NULL,
        PRIMARY KEY (channel, digest)
    );",
];

/// The bridge's tables, as every version has them by now.
pub const TABLES: [&str; 7] = [
    "schema_version",
    "handled",
    "dm_channels",
    "threads",
    "snoozes",
    "outbox",
    "collapses",
];

/// Each version's oldest reader: the oldest schema version a bridge must know to use a
/// database at that version. Migrations only add (tables, nullable columns, indexes), so a
/// bridge that knows an earlier version still reads and writes all it knows, and a rolling
/// update or a rollback runs old and new replicas on one database; only a migration that
/// changed what an older bridge relies on would raise this.
const OLDEST_READER: &[i64] = &[1, 1, 1, 1, 1, 1, 1, 1];

/// From this version on, the database records its oldest reader (`schema_version.oldest_reader`).
pub const RECORDS_OLDEST_READER: i64 = 6;

/// The version this build migrates to.
pub const LATEST: i64 = SQLITE.len() as i64;

/// Creates the version table when missing (version 0: an empty database).
pub const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";

/// The oldest reader of a database migrated to `version`.
pub fn oldest_reader(version: i64) -> i64 {
    let applied = usize::try_from(version)
        .unwrap_or(0)
        .min(OLDEST_READER.len());
    OLDEST_READER[..applied].iter().copied().max().unwrap_or(1)
}

/// What a bridge that knows schema version `known` does with a database at `found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Older: migrate it to `known` (only adding).
    Migrate,
    /// At `known`: nothing to do.
    Current,
    /// Newer, from a bridge that upgraded it, but still readable by this one (it only added):
    /// used as it is, never migrated back.
    Newer,
}

/// The plan for a database at `found` whose recorded oldest reader is `oldest_reader`
/// (`None` before it was recorded), or why this bridge cannot use it.
pub fn plan(found: i64, oldest_reader: Option<i64>, known: i64) -> Result<Plan, String> {
    if found < known {
        return Ok(Plan::Migrate);
    }
    if found == known {
        return Ok(Plan::Current);
    }
    let needs = oldest_reader.unwrap_or(found);
    if needs <= known {
        return Ok(Plan::Newer);
    }
    Err(format!(
        "the database is at schema version {found}, which needs a bridge that knows version \
         {needs} or later; this one knows {known}: run the newer bridge that upgraded it, or \
         give this one a database of its own"
    ))
}

/// The version a database records (0: empty).
pub const VERSION: &str = "SELECT coalesce(max(version), 0) FROM schema_version";

/// Its oldest reader, from [`RECORDS_OLDEST_READER`] on.
pub const OLDEST_READER_OF: &str = "SELECT max(oldest_reader) FROM schema_version";

/// Records a migration's result: the version and its oldest reader.
pub const RECORD_VERSION: &str =
    "INSERT INTO schema_version (version, oldest_reader) VALUES ($1, $2)";

/// The same, for a bridge that knows no version recording the oldest reader (tests).
pub const RECORD_VERSION_ONLY: &str = "INSERT INTO schema_version (version) VALUES ($1)";

// Claims, shared by both backends (SQLite takes `$N` parameters as PostgreSQL does).

/// The time leases are decided by, in Unix milliseconds: on PostgreSQL the server's clock
/// (the start of the statement), which every replica shares, so a replica whose clock is
/// skewed can neither take a live claim over nor make one that others see as already
/// over; on SQLite, one file on one host, the host's.
macro_rules! now_ms {
    (sqlite) => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
    (postgres) => {
        "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
    };
}

/// A statement that reads the clock, written once: each `NOW` among its pieces of text is
/// [`now_ms`] as the backend spells it, and `SKIP_LOCKED` PostgreSQL's row-lock clause for
/// a queue's consumers (see [`Sql`]).
macro_rules! clocked {
    (@piece $backend:ident NOW) => {
        now_ms!($backend)
    };
    // Rows other replicas' senders hold are passed over, not waited for; SQLite has one
    // writer at a time, so nothing to pass over.
    (@piece sqlite SKIP_LOCKED) => {
        ""
    };
    (@piece postgres SKIP_LOCKED) => {
        " FOR UPDATE SKIP LOCKED"
    };
    (@piece $backend:ident $text:literal) => {
        $text
    };
    (@text $backend:ident $($piece:tt)*) => {
        concat!($(clocked!(@piece $backend $piece)),*)
    };
    ($($piece:tt)*) => {
        Sql {
            sqlite: clocked!(@text sqlite $($piece)*),
            postgres: clocked!(@text postgres $($piece)*),
        }
    };
}

/// Inserts a claim whose lease lasts `$3` ms, or takes over one that is not done and whose
/// lease ended; returns the row when the claim is ours.
pub const CLAIM: Sql = clocked!(
    "INSERT INTO handled (msg_id, owner, done, attempts, lease_expires, created_at)
    VALUES ($1, $2, 0, 1, " NOW " + $3, " NOW ")
    ON CONFLICT (msg_id) DO UPDATE
        SET owner = excluded.owner, lease_expires = excluded.lease_expires,
            attempts = handled.attempts + 1
        WHERE handled.done = 0 AND handled.lease_expires <= " NOW "
    RETURNING attempts, created_at"
);

/// What holds a `msg_id` that could not be claimed: whether it is done, and how many ms
/// its lease has left (by the same clock).
pub const HOLDER: Sql =
    clocked!("SELECT done, lease_expires - " NOW " FROM handled WHERE msg_id = $1");

/// Only the claim's holder marks it done: once taken over (its lease ended and another
/// claimed it), the owner is another. A holder whose lease ended while nobody took it over
/// still may: it posted, nobody else acted, and the row then says what happened (else a copy
/// would take it over only to find the post when it reads the DM back). What keeps a holder
/// from posting after its lease ended is the delivery's deadline, checked before each
/// Slack call: it ends a margin before the lease (measured on the database's clock from
/// the claim, which comes after the deadline was set).
pub const FINISH: &str = "UPDATE handled SET done = 1 WHERE msg_id = $1 AND owner = $2";

/// Nothing was posted: the claim goes, and the next copy starts fresh.
pub const RELEASE: &str = "DELETE FROM handled WHERE msg_id = $1 AND owner = $2 AND done = 0";

/// The outcome is unknown: the row stays with its lease ended, for a takeover that reads back.
pub const RELEASE_UNSETTLED: &str =
    "UPDATE handled SET lease_expires = 0 WHERE msg_id = $1 AND owner = $2 AND done = 0";

/// Bounded batches, so pruning a large backlog never holds the writer for long.
pub const PRUNE: &str = "DELETE FROM handled WHERE msg_id IN
    (SELECT msg_id FROM handled WHERE created_at < $1 LIMIT 5000)";
pub const PRUNE_BATCH: u64 = 5000;

/// Snoozes that ended before `$1` (undone ones have `until` 0), in bounded batches.
pub const PRUNE_SNOOZES: &str = "DELETE FROM snoozes WHERE (slack_user, owner, workspace) IN
    (SELECT slack_user, owner, workspace FROM snoozes WHERE until < $1 LIMIT 5000)";

/// Threads idle since before `$1` (nothing joined them, no card is being made): the next
/// notification about the workspace starts a new thread.
pub const PRUNE_THREADS: &str = "DELETE FROM threads WHERE (slack_user, owner, workspace) IN
    (SELECT slack_user, owner, workspace FROM threads
        WHERE coalesce(latest_at, updated_at) < $1
            AND (card_ts IS NOT NULL OR lease_expires < $1) LIMIT 5000)";

pub const DM_CHANNEL: &str = "SELECT channel FROM dm_channels WHERE slack_user = $1";

pub const LEARN_DM_CHANNEL: &str = "INSERT INTO dm_channels (slack_user, channel, learned_at)
    VALUES ($1, $2, $3)
    ON CONFLICT (slack_user) DO UPDATE SET channel = excluded.channel, learned_at = excluded.learned_at";

/// Claims the making of a thread's card for `$5` ms, or takes over a claim whose lease
/// ended without a card; returns the maker when the claim is ours.
pub const CLAIM_THREAD: Sql = clocked!(
    "INSERT INTO threads
        (slack_user, owner, workspace, channel, card_ts, maker, lease_expires, updated_at)
    VALUES ($1, $2, $3, NULL, NULL, $4, " NOW " + $5, " NOW ")
    ON CONFLICT (slack_user, owner, workspace) DO UPDATE
        SET maker = excluded.maker, lease_expires = excluded.lease_expires
        WHERE threads.card_ts IS NULL AND threads.lease_expires <= " NOW "
    RETURNING maker"
);

pub const THREAD: &str = "SELECT channel, card_ts FROM threads
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3";

pub const SET_THREAD: &str = "UPDATE threads SET channel = $1, card_ts = $2, updated_at = $3
    WHERE slack_user = $4 AND owner = $5 AND workspace = $6 AND maker = $7";

pub const RELEASE_THREAD: &str = "DELETE FROM threads
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND maker = $4 AND card_ts IS NULL";

/// Only that card: a newer one made meanwhile stays.
pub const FORGET_THREAD: &str = "DELETE FROM threads
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND card_ts = $4";

/// Snoozes a workspace until `$4` (a later snooze replaces the end; the count stays).
pub const SNOOZE: &str = "INSERT INTO snoozes (slack_user, owner, workspace, until, held_back)
    VALUES ($1, $2, $3, $4, 0)
    ON CONFLICT (slack_user, owner, workspace) DO UPDATE SET until = excluded.until";

/// Ends a snooze in force at `$4` then; the next notification reports what it held back,
/// and pruning forgets it once it ended longer ago than `RETENTION`.
/// (`$1` is the time: SQLite numbers `$N` parameters in order of first appearance.)
pub const UNSNOOZE: &str = "UPDATE snoozes SET until = $1
    WHERE slack_user = $2 AND owner = $3 AND workspace = $4 AND until > $1";

/// A snooze's end, if there is one. (`$4`, the time, is only there for the shape all
/// snooze statements share; SQLite numbers parameters in order of appearance, so none may
/// come before `$1`.)
pub const SNOOZE_UNTIL: &str = "SELECT until FROM snoozes
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND (until > $4 OR until <= $4)";

/// Counts one more held back, when a snooze is on at `$4`; returns its end.
pub const HOLD_BACK: &str = "UPDATE snoozes SET held_back = held_back + 1
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND until > $4
    RETURNING until";

/// How many a snooze that ended by `$4` held back (kept until a notification shows it).
pub const ENDED_HELD: &str = "SELECT held_back FROM snoozes
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND until <= $4";

/// A snooze in force at `$4`: its end.
pub const SNOOZED_UNTIL: &str = "SELECT until FROM snoozes
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND until > $4";

/// Removes a snooze that ended by `$4`; returns how many it held back.
pub const END_SNOOZE: &str = "DELETE FROM snoozes
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND until <= $4
    RETURNING held_back";

/// What a thread's card now shows.
pub const SET_LATEST: &str = "UPDATE threads SET latest = $1, latest_at = $2
    WHERE slack_user = $3 AND owner = $4 AND workspace = $5";

/// A thread's card and what it shows.
pub const CARD: &str = "SELECT channel, card_ts, latest, latest_at FROM threads
    WHERE slack_user = $1 AND owner = $2 AND workspace = $3 AND card_ts IS NOT NULL";

/// A write that changes nothing (`$1` is the empty key no `msg_id` has): the health check's
/// proof that claims may be written (on PostgreSQL: the privilege, a server not read-only).
pub const HEALTH_WRITE: &str = "DELETE FROM handled WHERE msg_id = $1";

/// The health check's row, added and at once removed again: a write that changes a page, so
/// SQLite must append it to its WAL (which fails on a full disk, as every claim then does).
/// A write that changes no byte, such as the `DELETE` above or `UPDATE … SET version =
/// version`, makes SQLite write nothing at all, and a full disk would go unnoticed. No version
/// is negative, so the row is never taken for one (`VERSION` reads the greatest).
pub const HEALTH_ROW_ADD: &str = "INSERT INTO schema_version (version) VALUES (-1)";
pub const HEALTH_ROW_REMOVE: &str = "DELETE FROM schema_version WHERE version = -1";

/// What a bridge that is alone on its SQLite file ends at start-up: the leases a killed
/// bridge left (a claim, a card being made, an outbox send, an event's post), each from the
/// schema version that has its table; the next taker reads back before posting.
pub const END_DEAD_LEASES: [(i64, &str); 4] = [
    (
        1,
        "UPDATE handled SET lease_expires = 0 WHERE done = 0 AND lease_expires > 0",
    ),
    (
        3,
        "UPDATE threads SET lease_expires = 0 WHERE card_ts IS NULL AND lease_expires > 0",
    ),
    (
        7,
        "UPDATE outbox SET lease_expires = 0 WHERE holder IS NOT NULL AND lease_expires > 0",
    ),
    (
        8,
        "UPDATE collapses SET lease_expires = 0 WHERE ts IS NULL AND lease_expires > 0",
    ),
];

// Store and forward (`outbox`).

/// Marks a claimed `msg_id` handled for the outbox to deliver, when its claim is still held
/// and the outbox has room for less than `$3` rows; returns the claim's first time. The
/// insert that follows runs only when this found its row, in the same transaction.
pub const QUEUE_CLAIM: &str = "UPDATE handled SET done = 1
    WHERE msg_id = $1 AND owner = $2 AND done = 0 AND (SELECT count(*) FROM outbox) < $3
    RETURNING created_at";

/// Puts a notification (`$1`: its `msg_id` as Coder sent it) in the outbox, due at once,
/// sent by Coder when its claim (`$5`: the `handled` key) was first made.
pub const QUEUE: Sql = clocked!(
    "INSERT INTO outbox (msg_id, recipient, body, template, sent_at, queued_at, next_at,
        tries, reason, holder, lease_expires, unsettled_since)
    VALUES ($1, $2, $3, $4, (SELECT created_at FROM handled WHERE msg_id = $5), " NOW ",
        " NOW ", 0, $6, NULL, 0, $7)
    RETURNING seq"
);

/// How many notifications wait (when a queue found no room).
pub const OUTBOX_DEPTH: &str = "SELECT count(*) FROM outbox";

/// Whether `$1` has anything waiting: what comes for them now waits behind it.
pub const QUEUED_FOR: &str = "SELECT 1 FROM outbox WHERE recipient = $1 LIMIT 1";

/// Takes up to `$3` notifications for sender `$1` for `$2` ms: each recipient's first in
/// arrival order, whose try is due and that no live sender holds. One a sender held when
/// its lease ended may have been posted: it is read back since it was queued.
pub const TAKE: Sql = clocked!(
    "UPDATE outbox SET holder = $1, lease_expires = " NOW " + $2, tries = tries + 1,
        unsettled_since = CASE WHEN holder IS NULL THEN unsettled_since
            ELSE coalesce(unsettled_since, queued_at) END
    WHERE seq IN (SELECT o.seq FROM outbox o
        WHERE o.next_at <= " NOW " AND o.lease_expires <= " NOW "
            AND NOT EXISTS (SELECT 1 FROM outbox e
                WHERE e.recipient = o.recipient AND e.seq < o.seq)
        ORDER BY o.seq LIMIT $3" SKIP_LOCKED ")
    RETURNING seq, msg_id, body, template, sent_at, " NOW " - sent_at, tries, unsettled_since,
        reason"
);

/// A notification the sender `$2` delivered (or gave up on): gone from the outbox.
pub const UNQUEUE: &str = "DELETE FROM outbox WHERE seq = $1 AND holder = $2";

/// A try that failed: free again from `$1` ms on, with why, and when an attempt whose
/// outcome is unknown began (the first such is kept).
pub const RETRY_QUEUED: Sql = clocked!(
    "UPDATE outbox SET holder = NULL, lease_expires = 0, next_at = " NOW " + $1,
        reason = $2, unsettled_since = coalesce(unsettled_since, $3)
    WHERE seq = $4 AND holder = $5"
);

/// How many wait, and how long the oldest has waited since Coder sent it (ms).
pub const OUTBOX_STATE: Sql = clocked!("SELECT count(*), " NOW " - min(sent_at) FROM outbox");

// Collapse of the copies of one event (`collapses`).

/// Claims the post of the event `$2` in channel `$1` for maker `$3` for `$4` ms, with a
/// window of `$5` ms: a new event, one whose window ended, or one whose maker's lease ended
/// without a post. Returns the maker when the claim is ours.
pub const CLAIM_COLLAPSE: Sql = clocked!(
    "INSERT INTO collapses (channel, digest, maker, lease_expires, expires_at, ts, copies)
    VALUES ($1, $2, $3, " NOW " + $4, " NOW " + $5, NULL, 1)
    ON CONFLICT (channel, digest) DO UPDATE
        SET maker = excluded.maker, lease_expires = excluded.lease_expires,
            expires_at = excluded.expires_at, ts = NULL, copies = 1
        WHERE collapses.expires_at <= " NOW "
            OR (collapses.ts IS NULL AND collapses.lease_expires <= " NOW ")
    RETURNING maker"
);

/// Joins a copy to the event's post, within its window: the post and the copies so far.
pub const JOIN_COLLAPSE: Sql = clocked!(
    "UPDATE collapses SET copies = copies + 1
    WHERE channel = $1 AND digest = $2 AND ts IS NOT NULL AND expires_at > " NOW "
    RETURNING ts, copies"
);

/// Records the event's post (its maker only).
pub const SET_COLLAPSE_POST: &str = "UPDATE collapses SET ts = $1
    WHERE channel = $2 AND digest = $3 AND maker = $4";

/// Gives up the making of an event's post that failed: the next copy tries.
pub const RELEASE_COLLAPSE: &str = "DELETE FROM collapses
    WHERE channel = $1 AND digest = $2 AND maker = $3 AND ts IS NULL";

/// Events whose window ended before `$1` (and that nobody is posting).
pub const PRUNE_COLLAPSES: &str = "DELETE FROM collapses WHERE (channel, digest) IN
    (SELECT channel, digest FROM collapses
        WHERE expires_at < $1 AND (ts IS NOT NULL OR lease_expires < $1) LIMIT 5000)";

/// A person's snoozes in force at `$2`, soonest end first.
pub const SNOOZES_OF: &str = "SELECT owner, workspace, until FROM snoozes
    WHERE slack_user = $1 AND until > $2 ORDER BY until LIMIT 40";

/// A person's workspaces with a thread, most recent first.
pub const THREADS_OF: &str = "SELECT owner, workspace, latest, latest_at FROM threads
    WHERE slack_user = $1 AND card_ts IS NOT NULL
    ORDER BY coalesce(latest_at, updated_at) DESC LIMIT 40";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_every_version() {
        assert_eq!(SQLITE.len(), POSTGRES.len());
        assert_eq!(OLDEST_READER.len(), SQLITE.len());
    }

    #[test]
    fn a_newer_schema_is_used_when_this_bridge_can_read_it_and_refused_when_not() {
        assert_eq!(plan(0, None, LATEST), Ok(Plan::Migrate));
        assert_eq!(plan(LATEST - 1, None, LATEST), Ok(Plan::Migrate));
        assert_eq!(plan(LATEST, Some(1), LATEST), Ok(Plan::Current));
        // A newer bridge only added: this one keeps working, and migrates nothing back.
        assert_eq!(plan(LATEST + 1, Some(1), LATEST), Ok(Plan::Newer));
        assert_eq!(plan(LATEST + 2, Some(LATEST), LATEST), Ok(Plan::Newer));
        // One that changed what this bridge relies on says so.
        let e = plan(LATEST + 1, Some(LATEST + 1), LATEST).unwrap_err();
        assert!(e.contains("needs a bridge that knows version"), "{e}");
        // Without a record, a newer database is taken to need its own version.
        assert!(plan(LATEST + 1, None, LATEST).is_err());
        assert_eq!(oldest_reader(LATEST), 1);
        assert_eq!(oldest_reader(0), 1);
    }
}
