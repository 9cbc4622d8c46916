//! Handled `msg_id`s: claimed with a lease before a post, marked done after, given up
//! (settled or not) on failure, pruned after the dedupe window; and each person's DM channel.

use super::sql::{statement, Commit, Done, Row};
use super::{
    from_unix_ms, key_and, lease_ms, schema, sql, Claim, MsgKey, Pruned, Store, StoreError,
    ThreadKey, Token,
};
use std::time::{Duration, SystemTime};

impl Store {
    /// Claims `key` for a delivery that may take until `lease` from now. A claim that finds
    /// the id done, or held under a live lease, says so instead.
    pub async fn claim(&self, key: &MsgKey, lease: Duration) -> Result<Claim, StoreError> {
        const OPERATION: &str = "claim a msg_id";
        let token = Token::new(&self.replica);
        // Measured by the database's clock (see `schema::CLAIM`), not this replica's.
        let lease_ms = lease_ms(lease);
        // A row that vanishes between the attempt and the look (given up by its holder,
        // or pruned) is claimed again; twice is plenty.
        for _ in 0..3 {
            // The claim and, should it lose, the row in its way: one round trip.
            let done = self
                .run(
                    OPERATION,
                    Commit::Durable,
                    vec![
                        statement(
                            schema::CLAIM,
                            [key.bytes().into(), token.0.as_str().into(), lease_ms.into()],
                        ),
                        statement(schema::HOLDER, [key.bytes().into()]).unless_previous_found(),
                    ],
                )
                .await?;
            let read =
                |row: &Row| -> Result<_, sql::ColumnError> { Ok((row.int(0)?, row.int(1)?)) };
            let claimed = done.first().and_then(Done::first);
            let holder = done.get(1).and_then(Done::first);
            return match (claimed, holder) {
                (Some(row), _) => {
                    let (attempts, first_claimed) = self.columns(OPERATION, read(row))?;
                    Ok(match attempts {
                        1 => Claim::Fresh(token),
                        _ => Claim::TakenOver {
                            token,
                            first_claimed: from_unix_ms(first_claimed),
                        },
                    })
                }
                (None, Some(row)) => {
                    let (done, lease_left_ms) = self.columns(OPERATION, read(row))?;
                    let lease_left = Duration::from_millis(lease_left_ms.max(0).unsigned_abs());
                    Ok(match done {
                        0 => Claim::Busy {
                            lease_ends: SystemTime::now() + lease_left,
                        },
                        _ => Claim::Done,
                    })
                }
                (None, None) => continue,
            };
        }
        Ok(Claim::Busy {
            lease_ends: SystemTime::now(),
        })
    }

    /// Marks a delivered `msg_id` handled and, when its message said what `snooze_shown`'s
    /// ended snooze held back, forgets that snooze: both in one round trip, so the count is
    /// gone only once a message shows it.
    pub async fn finish_delivery(
        &self,
        key: &MsgKey,
        token: &Token,
        snooze_shown: Option<&ThreadKey>,
    ) -> Result<(), StoreError> {
        let mut statements = vec![statement(
            schema::FINISH,
            [key.bytes().into(), token.0.as_str().into()],
        )];
        if let Some(shown) = snooze_shown {
            let now = self.now_ms();
            statements.push(statement(schema::END_SNOOZE, key_and(shown, now.into())));
        }
        self.run("mark a msg_id handled", Commit::Relaxed, statements)
            .await
            .map(drop)
    }

    /// Marks a claimed `msg_id` handled: copies and retries are answered `duplicate`.
    pub async fn finish(&self, key: &MsgKey, token: &Token) -> Result<(), StoreError> {
        let params = [key.bytes().into(), token.0.as_str().into()];
        self.execute(
            "mark a msg_id handled",
            Commit::Relaxed,
            schema::FINISH,
            params,
        )
        .await
        .map(drop)
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
        let sql = match maybe_posted {
            true => schema::RELEASE_UNSETTLED,
            false => schema::RELEASE,
        };
        let params = [key.bytes().into(), token.0.as_str().into()];
        self.execute("give up a claim", Commit::Relaxed, sql, params)
            .await
            .map(drop)
    }

    /// The DM channel (`D…`) learned for a Slack user, if any.
    pub async fn dm_channel(&self, user: &str) -> Result<Option<String>, StoreError> {
        const OPERATION: &str = "read a DM channel";
        let done = self
            .execute(
                OPERATION,
                Commit::Relaxed,
                schema::DM_CHANNEL,
                [user.into()],
            )
            .await?;
        match done.first() {
            Some(row) => self.columns(OPERATION, row.text(0)).map(Some),
            None => Ok(None),
        }
    }

    /// Remembers a Slack user's DM channel, from a post's answer.
    pub async fn learn_dm_channel(&self, user: &str, channel: &str) -> Result<(), StoreError> {
        let now = self.now_ms();
        let params = [user.into(), channel.into(), now.into()];
        self.execute(
            "remember a DM channel",
            Commit::Relaxed,
            schema::LEARN_DM_CHANNEL,
            params,
        )
        .await
        .map(drop)
    }

    /// Forgets what is older than `window` (`RETENTION`): handled ids (and clicks) first
    /// claimed before it, snoozes that ended before it, and threads idle since before it.
    pub async fn prune(&self, window: Duration) -> Result<Pruned, StoreError> {
        let cutoff = self
            .now_ms()
            .saturating_sub(window.as_millis().try_into().unwrap_or(i64::MAX));
        Ok(Pruned {
            ids: self
                .prune_all("prune old msg_ids", schema::PRUNE, cutoff)
                .await?,
            snoozes: self
                .prune_all("prune ended snoozes", schema::PRUNE_SNOOZES, cutoff)
                .await?,
            threads: self
                .prune_all("prune idle threads", schema::PRUNE_THREADS, cutoff)
                .await?,
            events: self
                .prune_all("prune ended events", schema::PRUNE_COLLAPSES, self.now_ms())
                .await?,
        })
    }

    /// Runs a pruning statement until it deletes less than a batch: a large backlog never
    /// holds the store (and the deliveries queued behind it) for long.
    async fn prune_all(
        &self,
        operation: &'static str,
        sql: &'static str,
        cutoff: i64,
    ) -> Result<u64, StoreError> {
        let mut pruned = 0;
        loop {
            let done = self
                .execute(operation, Commit::Relaxed, sql, [cutoff.into()])
                .await?;
            pruned += done.changed;
            if done.changed < schema::PRUNE_BATCH {
                return Ok(pruned);
            }
            // Let what waits for the store go first.
            tokio::task::yield_now().await;
        }
    }
}
