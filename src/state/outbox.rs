//! The outbox: notifications Slack could not take yet, kept until it can (store and
//! forward). A notification goes in with its claim's done mark, in one transaction; senders
//! take each recipient's first under a lease (on PostgreSQL passing over rows another
//! replica's sender holds), and take it out once delivered or given up.

use super::sql::{statement, Done, Row, Statement};
use super::{
    from_unix_ms, lease_ms, schema, sql, unix_ms, MsgKey, Shown, Store, StoreError, Synced, Token,
};
use std::time::{Duration, SystemTime};

/// A notification for the outbox: its claim, who it is for and what Coder sent.
pub struct ToQueue<'a> {
    pub key: &'a MsgKey,
    /// The `msg_id` as Coder sent it (the body may lack it: then it came as a header).
    pub msg_id: &'a str,
    pub token: &'a Token,
    /// The recipient's e-mail address: each person's notifications leave in arrival order.
    pub recipient: &'a str,
    /// The webhook's body as Coder sent it.
    pub body: &'a [u8],
    pub template: &'a str,
    /// Why it waits (Slack's error; never the notification's content).
    pub reason: &'a str,
    /// When an attempt whose outcome is unknown began, if one did.
    pub unsettled_since: Option<SystemTime>,
    /// The outbox takes no more once it holds this many.
    pub max_depth: u64,
}

/// What queueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// In the outbox, with its claim marked handled.
    Yes,
    /// The outbox holds `depth` notifications already: none was added, the claim still held.
    Full { depth: u64 },
    /// The claim is no longer this delivery's (its lease ended and another took it over).
    ClaimLost,
}

/// A notification a sender took from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its place in arrival order: what the sender gives back.
    pub seq: i64,
    /// As Coder sent it.
    pub msg_id: String,
    pub body: Vec<u8>,
    pub template: String,
    /// When Coder first sent it.
    pub sent_at: SystemTime,
    /// How long ago that was, by the database's clock.
    pub age: Duration,
    /// Tries so far, this one included.
    pub tries: i64,
    /// When an attempt whose outcome is unknown began: the conversation is read back first.
    pub unsettled_since: Option<SystemTime>,
    /// Why the last try failed.
    pub reason: String,
}

/// How many notifications wait, and how long the oldest has waited since Coder sent it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxState {
    pub depth: u64,
    pub oldest: Option<Duration>,
}

impl Store {
    /// Puts a claimed notification in the outbox and marks its `msg_id` handled, both or
    /// neither: from the answer on, a killed process loses nothing, and Coder's retries are
    /// duplicates.
    pub async fn queue(&self, item: &ToQueue<'_>) -> Result<Queued, StoreError> {
        const OPERATION: &str = "put a notification in the outbox";
        let key = item.key.bytes();
        let max_depth = i64::try_from(item.max_depth).unwrap_or(i64::MAX);
        let unsettled = item.unsettled_since.map(unix_ms);
        let statements = vec![
            statement(
                schema::QUEUE_CLAIM,
                [
                    key.clone().into(),
                    item.token.0.as_str().into(),
                    max_depth.into(),
                ],
            ),
            statement(
                schema::QUEUE,
                [
                    item.msg_id.into(),
                    item.recipient.to_lowercase().into(),
                    item.body.to_vec().into(),
                    item.template.into(),
                    key.into(),
                    item.reason.into(),
                    unsettled.into(),
                ],
            )
            .if_previous_found(),
            statement(schema::OUTBOX_DEPTH, []).unless_previous_found(),
        ];
        // On disk before the answer, even on SQLite: Coder is told the notification is
        // taken and never sends it again, so a power cut must not undo this.
        let done = self
            .run_atomically(OPERATION, Synced::Yes, statements)
            .await?;
        if done.get(1).and_then(Done::first).is_some() {
            return Ok(Queued::Yes);
        }
        let depth = match done.get(2).and_then(Done::first) {
            Some(row) => self.columns(OPERATION, row.int(0))?,
            None => 0,
        };
        Ok(match depth.unsigned_abs() >= item.max_depth {
            true => Queued::Full {
                depth: depth.unsigned_abs(),
            },
            false => Queued::ClaimLost,
        })
    }

    /// Whether anything waits for `recipient` (an e-mail address).
    pub async fn queued_for(&self, recipient: &str) -> Result<bool, StoreError> {
        let done = self
            .execute(
                "look for a person's notifications in the outbox",
                sql::Commit::Relaxed,
                schema::QUEUED_FOR,
                [recipient.to_lowercase().into()],
            )
            .await?;
        Ok(done.first().is_some())
    }

    /// Takes up to `limit` notifications whose try is due for the sender holding `token`,
    /// for `lease`: each recipient's first in arrival order, none another sender holds.
    pub async fn take_queued(
        &self,
        token: &Token,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Taken>, StoreError> {
        const OPERATION: &str = "take notifications from the outbox";
        let params = [
            token.0.as_str().into(),
            lease_ms(lease).into(),
            i64::from(limit).into(),
        ];
        let done = self
            .execute(OPERATION, sql::Commit::Durable, schema::TAKE, params)
            .await?;
        let mut taken: Vec<Taken> = done
            .rows
            .iter()
            .map(|row| self.columns(OPERATION, taken_of(row)))
            .collect::<Result<_, _>>()?;
        // RETURNING gives no order: arrival order is the sender's.
        taken.sort_by_key(|t| t.seq);
        Ok(taken)
    }

    /// Takes a notification out of the outbox for good (delivered, or given up), with what
    /// its message showed (see [`Store::finish_delivery`]).
    pub async fn unqueue(&self, seq: i64, token: &Token, shown: &Shown) -> Result<(), StoreError> {
        let mut statements: Vec<Statement> = vec![statement(
            schema::UNQUEUE,
            [seq.into(), token.0.as_str().into()],
        )];
        statements.extend(self.shown_statements(shown));
        // Undone by a power cut, it is sent again and its read-back finds the post.
        let out = "take a notification out of the outbox";
        self.run_atomically(out, Synced::No, statements)
            .await
            .map(drop)
    }

    /// Gives a taken notification back after a failed try: due again `after` from now.
    pub async fn retry_queued(
        &self,
        seq: i64,
        token: &Token,
        after: Duration,
        reason: &str,
        unsettled_since: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let params = [
            lease_ms(after).into(),
            reason.into(),
            unsettled_since.map(unix_ms).into(),
            seq.into(),
            token.0.as_str().into(),
        ];
        self.execute(
            "give a notification back to the outbox",
            sql::Commit::Durable,
            schema::RETRY_QUEUED,
            params,
        )
        .await
        .map(drop)
    }

    /// How many wait, and how long the oldest has.
    pub async fn outbox_state(&self) -> Result<OutboxState, StoreError> {
        const OPERATION: &str = "read the outbox's depth";
        let done = self
            .execute(OPERATION, sql::Commit::Relaxed, schema::OUTBOX_STATE, [])
            .await?;
        let Some(row) = done.first() else {
            return Ok(OutboxState::default());
        };
        let (depth, oldest) = self.columns(OPERATION, (|| Ok((row.int(0)?, row.opt_int(1)?)))())?;
        Ok(OutboxState {
            depth: depth.unsigned_abs(),
            oldest: oldest.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        })
    }

    /// A sender's token: names this replica in the rows it holds.
    pub fn sender_token(&self) -> Token {
        Token::new(&self.replica)
    }
}

fn taken_of(row: &Row) -> Result<Taken, sql::ColumnError> {
    Ok(Taken {
        seq: row.int(0)?,
        msg_id: row.text(1)?,
        body: row.blob(2)?,
        template: row.text(3)?,
        sent_at: from_unix_ms(row.int(4)?),
        age: Duration::from_millis(row.int(5)?.max(0).unsigned_abs()),
        tries: row.int(6)?,
        unsettled_since: row.opt_int(7)?.map(from_unix_ms),
        reason: row.text(8)?,
    })
}
