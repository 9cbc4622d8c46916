//! Each (recipient, owner, workspace)'s thread: its card claimed once, recorded, found,
//! forgotten when Slack lost it; what the card shows; the App Home's list; and snoozes.

use super::sql::{statement, Commit};
use super::{
    from_unix_ms, key_and, key_params, latest_of, lease_ms, schema, sql, unix_ms, CardView, Home,
    Known, SnoozeMet, Snoozed, Store, StoreError, Thread, ThreadClaim, ThreadKey, Token,
};
use std::time::{Duration, SystemTime};

impl Store {
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
        let [user, owner, workspace] = key_params(key);
        // Measured by the database's clock (see `schema::CLAIM_THREAD`).
        let params = [
            user,
            owner,
            workspace,
            token.0.as_str().into(),
            lease_ms(lease).into(),
        ];
        let claimed = self
            .execute(
                "claim a thread",
                Commit::Durable,
                schema::CLAIM_THREAD,
                params,
            )
            .await?;
        if claimed.first().is_some() {
            return Ok(ThreadClaim::Ours(token));
        }
        let found = self.thread(key).await?;
        Ok(found.map_or(ThreadClaim::Busy, ThreadClaim::Found))
    }

    async fn thread(&self, key: &ThreadKey) -> Result<Option<Thread>, StoreError> {
        const OPERATION: &str = "read a thread";
        let done = self
            .execute(OPERATION, Commit::Durable, schema::THREAD, key_params(key))
            .await?;
        match done.first() {
            Some(row) => self.columns(OPERATION, super::thread_of(row)),
            None => Ok(None),
        }
    }

    /// Records the card the holder of `token` made for `key`.
    pub async fn set_thread(
        &self,
        key: &ThreadKey,
        token: &Token,
        thread: &Thread,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let [user, owner, workspace] = key_params(key);
        let params = [
            thread.channel.as_str().into(),
            thread.card_ts.as_str().into(),
            now.into(),
            user,
            owner,
            workspace,
            token.0.as_str().into(),
        ];
        // Durable: a card lost in a server crash would be made again, as a second card.
        self.execute(
            "record a thread",
            Commit::Durable,
            schema::SET_THREAD,
            params,
        )
        .await
        .map(drop)
    }

    /// Gives up making `key`'s card (it could not be posted).
    pub async fn release_thread(&self, key: &ThreadKey, token: &Token) -> Result<(), StoreError> {
        let params = key_and(key, token.0.as_str().into());
        self.execute(
            "give up a thread",
            Commit::Relaxed,
            schema::RELEASE_THREAD,
            params,
        )
        .await
        .map(drop)
    }

    /// Forgets the card at `card_ts` (Slack no longer has it): the next notification about
    /// the workspace starts a new thread.
    pub async fn forget_thread(&self, key: &ThreadKey, card_ts: &str) -> Result<(), StoreError> {
        let params = key_and(key, card_ts.into());
        self.execute(
            "forget a thread",
            Commit::Relaxed,
            schema::FORGET_THREAD,
            params,
        )
        .await
        .map(drop)
    }

    /// Records what `key`'s card now shows (for the App Home).
    pub async fn set_latest(
        &self,
        key: &ThreadKey,
        latest: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let [user, owner, workspace] = key_params(key);
        let params = [latest.into(), unix_ms(at).into(), user, owner, workspace];
        self.execute(
            "record a card's latest",
            Commit::Relaxed,
            schema::SET_LATEST,
            params,
        )
        .await
        .map(drop)
    }

    /// `key`'s card as it should look now: what it shows last, and the snooze in force.
    pub async fn card(&self, key: &ThreadKey) -> Result<Option<CardView>, StoreError> {
        const OPERATION: &str = "read a card";
        let now = self.now_ms();
        let done = self
            .run(
                OPERATION,
                Commit::Relaxed,
                vec![
                    statement(schema::CARD, key_params(key)),
                    statement(schema::SNOOZED_UNTIL, key_and(key, now.into())),
                ],
            )
            .await?;
        let Some(row) = done.first().and_then(|d| d.first()) else {
            return Ok(None);
        };
        let snooze = done.get(1).and_then(|d| d.first());
        let read = || -> Result<_, sql::ColumnError> {
            Ok(CardView {
                thread: Thread {
                    channel: row.text(0)?,
                    card_ts: row.text(1)?,
                },
                latest: latest_of(row.opt_text(2)?, row.opt_int(3)?),
                snoozed_until: snooze.map(|r| r.int(0)).transpose()?.map(from_unix_ms),
            })
        };
        self.columns(OPERATION, read()).map(Some)
    }

    /// What `slack_user`'s App Home shows: their snoozes and workspaces.
    pub async fn home(&self, slack_user: &str) -> Result<Home, StoreError> {
        const OPERATION: &str = "read an App Home";
        let now = self.now_ms();
        let done = self
            .run(
                OPERATION,
                Commit::Relaxed,
                vec![
                    statement(schema::SNOOZES_OF, [slack_user.into(), now.into()]),
                    statement(schema::THREADS_OF, [slack_user.into()]),
                ],
            )
            .await?;
        let rows = |i: usize| done.get(i).map_or(&[][..], |d| d.rows.as_slice());
        let snoozes = rows(0).iter().map(|r| {
            Ok(Snoozed {
                owner: r.text(0)?,
                workspace: r.text(1)?,
                until: from_unix_ms(r.int(2)?),
            })
        });
        let workspaces = rows(1).iter().map(|r| {
            Ok(Known {
                owner: r.text(0)?,
                workspace: r.text(1)?,
                latest: latest_of(r.opt_text(2)?, r.opt_int(3)?),
            })
        });
        Ok(Home {
            snoozes: self.columns(OPERATION, snoozes.collect())?,
            workspaces: self.columns(OPERATION, workspaces.collect())?,
        })
    }

    /// Snoozes `key`'s workspace for its recipient until `until`.
    pub async fn snooze(&self, key: &ThreadKey, until: SystemTime) -> Result<(), StoreError> {
        let params = key_and(key, unix_ms(until).into());
        self.execute(
            "snooze a workspace",
            Commit::Durable,
            schema::SNOOZE,
            params,
        )
        .await
        .map(drop)
    }

    /// Ends `key`'s snooze now; whether one was in force.
    pub async fn unsnooze(&self, key: &ThreadKey) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let [user, owner, workspace] = key_params(key);
        let params = [now.into(), user, owner, workspace];
        let done = self
            .execute("end a snooze", Commit::Durable, schema::UNSNOOZE, params)
            .await?;
        Ok(done.changed > 0)
    }

    /// What a notification about `key`'s workspace meets: no snooze (one read, the common
    /// case), a snooze in force (counted as holding one more back), or one that ended (then
    /// removed, with how many it held back).
    pub async fn meet_snooze(&self, key: &ThreadKey) -> Result<SnoozeMet, StoreError> {
        let now = self.now_ms();
        let until = self
            .snooze_query("check a snooze", schema::SNOOZE_UNTIL, key, now)
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
        // Ended: what it held back stays recorded until a notification that says so is
        // posted (`Store::finish_delivery`), so a failed post and Coder's retry lose nothing.
        let now = self.now_ms();
        let held = self
            .snooze_query("check a snooze", schema::ENDED_HELD, key, now)
            .await?;
        match held {
            Some(held) if held > 0 => Ok(SnoozeMet::Ended(held.unsigned_abs())),
            _ => {
                self.end_snooze(key).await?;
                Ok(SnoozeMet::None)
            }
        }
    }

    /// When `key` is snoozed now: counts one more notification held back and says until when.
    pub async fn hold_back(&self, key: &ThreadKey) -> Result<Option<SystemTime>, StoreError> {
        let now = self.now_ms();
        let until = self
            .snooze_query("check a snooze", schema::HOLD_BACK, key, now)
            .await?;
        Ok(until.map(from_unix_ms))
    }

    /// Removes `key`'s snooze if it has ended; how many notifications it held back.
    pub async fn end_snooze(&self, key: &ThreadKey) -> Result<Option<u64>, StoreError> {
        let now = self.now_ms();
        let held = self
            .snooze_query("end a snooze", schema::END_SNOOZE, key, now)
            .await?;
        Ok(held.map(|n| n.max(0).unsigned_abs()))
    }

    /// Runs a snooze statement with a workspace's key and `at` (`$4`); its row's first column.
    async fn snooze_query(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let done = self
            .execute(operation, Commit::Durable, sql, key_and(key, at.into()))
            .await?;
        match done.first() {
            Some(row) => self.columns(operation, row.int(0)).map(Some),
            None => Ok(None),
        }
    }
}
