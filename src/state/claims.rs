//! Handled `msg_id`s: claimed with a lease before a post, marked done after, given up
//! (settled or not) on failure, pruned after the dedupe window; and each person's DM channel.

use super::sql::{statement, Commit, Done, Row};
use super::{
    from_unix_ms, key_and, key_params, lease_ms, schema, sql, unix_ms, Claim, Looked, MsgKey,
    Pruned, Shown, Store, StoreError, ThreadKey, Token,
};
use std::time::{Duration, SystemTime};

impl Store {
    /// Claims `key` for a delivery that may take until `lease` from now. A claim that finds
    /// the id done, or held under a live lease, says so instead.
    pub async fn claim(&self, key: &MsgKey, lease: Duration) -> Result<Claim, StoreError> {
        let (claim, _) = self.claim_looking(key, lease, None).await?;
        Ok(claim)
    }

    /// [`Store::claim`], reading in the same round trip what a delivery to `look`'s
    /// workspace needs before it posts: its snooze and its thread.
    pub async fn claim_looking(
        &self,
        key: &MsgKey,
        lease: Duration,
        look: Option<&ThreadKey>,
    ) -> Result<(Claim, Option<Looked>), StoreError> {
        const OPERATION: &str = "claim a msg_id";
        let token = Token::new(&self.replica);
        // Measured by the database's clock (see `schema::CLAIM`), not this replica's.
        let lease_ms = lease_ms(lease);
        // A row that vanishes between the attempt and the look (given up by its holder,
        // or pruned) is claimed again; twice is plenty.
        for _ in 0..3 {
            // The reads, the claim and, should it lose, the row in its way: one round trip
            // (the reads go first, so PostgreSQL gets them pipelined with the claim).
            let mut statements = Vec::with_capacity(4);
            if let Some(look) = look {
                let now = self.now_ms();
                statements.push(statement(schema::SNOOZE_UNTIL, key_and(look, now.into())));
                statements.push(statement(schema::THREAD, key_params(look)));
            }
            let reads = statements.len();
            statements.push(statement(
                schema::CLAIM,
                [key.bytes().into(), token.0.as_str().into(), lease_ms.into()],
            ));
            statements
                .push(statement(schema::HOLDER, [key.bytes().into()]).unless_previous_found());
            let done = self.run(OPERATION, Commit::Durable, statements).await?;
            let looked = match look {
                Some(look) => Some(self.looked(look, done.first(), done.get(1))?),
                None => None,
            };
            let read =
                |row: &Row| -> Result<_, sql::ColumnError> { Ok((row.int(0)?, row.int(1)?)) };
            let claimed = done.get(reads).and_then(Done::first);
            let holder = done.get(reads + 1).and_then(Done::first);
            let claim = match (claimed, holder) {
                (Some(row), _) => {
                    let (attempts, first_claimed) = self.columns(OPERATION, read(row))?;
                    match attempts {
                        1 => Claim::Fresh(token),
                        _ => Claim::TakenOver {
                            token,
                            first_claimed: from_unix_ms(first_claimed),
                        },
                    }
                }
                (None, Some(row)) => {
                    let (done, lease_left_ms) = self.columns(OPERATION, read(row))?;
                    let lease_left = Duration::from_millis(lease_left_ms.max(0).unsigned_abs());
                    match done {
                        0 => Claim::Busy {
                            lease_ends: SystemTime::now() + lease_left,
                        },
                        _ => Claim::Done,
                    }
                }
                (None, None) => continue,
            };
            return Ok((claim, looked));
        }
        let busy = Claim::Busy {
            lease_ends: SystemTime::now(),
        };
        Ok((busy, None))
    }

    /// What the claim's reads found about `look`'s workspace.
    fn looked(
        &self,
        look: &ThreadKey,
        snooze: Option<&Done>,
        thread: Option<&Done>,
    ) -> Result<Looked, StoreError> {
        let thread = match thread.and_then(Done::first) {
            Some(row) => self.columns("read a thread", super::thread_of(row))?,
            None => None,
        };
        Ok(Looked {
            key: look.clone(),
            snoozed: snooze.and_then(Done::first).is_some(),
            thread,
        })
    }

    /// Marks a delivered `msg_id` handled and records what its message showed (see
    /// [`Shown`]): all in one round trip, so an ended snooze's count is gone only once a
    /// message shows it.
    pub async fn finish_delivery(
        &self,
        key: &MsgKey,
        token: &Token,
        shown: &Shown,
    ) -> Result<(), StoreError> {
        let mut statements = vec![statement(
            schema::FINISH,
            [key.bytes().into(), token.0.as_str().into()],
        )];
        statements.extend(self.shown_statements(shown));
        self.run("mark a msg_id handled", Commit::Relaxed, statements)
            .await
            .map(drop)
    }

    /// What records `shown`: the ended snooze forgotten, the card's latest set.
    pub(super) fn shown_statements(&self, shown: &Shown) -> Vec<super::sql::Statement> {
        let mut statements = Vec::new();
        if let Some(ended) = &shown.snooze_ended {
            let now = self.now_ms();
            statements.push(statement(schema::END_SNOOZE, key_and(ended, now.into())));
        }
        if let Some((key, latest, at)) = &shown.on_card {
            let [user, owner, workspace] = key_params(key);
            let params = [
                latest.as_str().into(),
                unix_ms(*at).into(),
                user,
                owner,
                workspace,
            ];
            statements.push(statement(schema::SET_LATEST, params));
        }
        statements
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
