//! Collapse: the copies Coder sends each holder of a role (one event, one copy each) that a
//! route posts to a channel become one post. The first copy claims the event's post under a
//! lease (as a thread's card is claimed), posts and records it; copies arriving within the
//! window join it; a claim whose maker died or failed is taken by the next copy.

use super::sql::{statement, Commit, Done, Row};
use super::{lease_ms, schema, sql, Store, StoreError, Token};
use std::time::Duration;

/// What claiming an event's post found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollapseClaim {
    /// A new event (or one whose window ended): this copy posts it, then
    /// [`Store::set_collapse_post`].
    Ours(Token),
    /// Posted already, within its window: this copy joins it (`copies` so far, this one
    /// included).
    Joined { ts: String, copies: i64 },
    /// Another copy is posting it.
    Busy,
}

/// One event in one channel: the channel and the copies' digest.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub channel: &'a str,
    pub digest: &'a [u8],
}

impl Event<'_> {
    fn params(&self) -> [sql::Value; 2] {
        [self.channel.into(), self.digest.to_vec().into()]
    }
}

impl Store {
    /// Claims `event`'s post for `lease`, its window lasting `window` from now; or joins
    /// the post made within the window.
    pub async fn claim_collapse(
        &self,
        event: Event<'_>,
        window: Duration,
        lease: Duration,
    ) -> Result<CollapseClaim, StoreError> {
        const OPERATION: &str = "claim an event's post";
        let token = Token::new(&self.replica);
        let [channel, digest] = event.params();
        let claim = statement(
            schema::CLAIM_COLLAPSE,
            [
                channel.clone(),
                digest.clone(),
                token.0.as_str().into(),
                lease_ms(lease).into(),
                lease_ms(window).into(),
            ],
        );
        let join = statement(schema::JOIN_COLLAPSE, [channel, digest]).unless_previous_found();
        let done = self
            .run(OPERATION, Commit::Durable, vec![claim, join])
            .await?;
        if done.first().and_then(Done::first).is_some() {
            return Ok(CollapseClaim::Ours(token));
        }
        let read = |row: &Row| -> Result<_, sql::ColumnError> { Ok((row.text(0)?, row.int(1)?)) };
        match done.get(1).and_then(Done::first) {
            Some(row) => {
                let (ts, copies) = self.columns(OPERATION, read(row))?;
                Ok(CollapseClaim::Joined { ts, copies })
            }
            None => Ok(CollapseClaim::Busy),
        }
    }

    /// Records `event`'s post (`ts`), made by the holder of `token`.
    pub async fn set_collapse_post(
        &self,
        event: Event<'_>,
        token: &Token,
        ts: &str,
    ) -> Result<(), StoreError> {
        let [channel, digest] = event.params();
        let params = [ts.into(), channel, digest, token.0.as_str().into()];
        self.execute(
            "record an event's post",
            Commit::Durable,
            schema::SET_COLLAPSE_POST,
            params,
        )
        .await
        .map(drop)
    }

    /// Gives up the making of `event`'s post (it failed): the next copy tries.
    pub async fn release_collapse(
        &self,
        event: Event<'_>,
        token: &Token,
    ) -> Result<(), StoreError> {
        let [channel, digest] = event.params();
        let params = [channel, digest, token.0.as_str().into()];
        self.execute(
            "give up an event's post",
            Commit::Relaxed,
            schema::RELEASE_COLLAPSE,
            params,
        )
        .await
        .map(drop)
    }
}
