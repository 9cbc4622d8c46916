//! One notification's way to Slack: dedupe on `msg_id` (here: claim, settle), find the person,
//! render and place it (`route`, `thread`, `offer`), post through the one exactly-once poster
//! (`poster`), and decide what Coder is told. Coder retries anything but a 2xx (5 attempts,
//! 5 minutes apart), so an answer is either final (2xx) or "try again" (503 with `Retry-After`).

mod offer;
mod outbox;
mod poster;
mod route;
mod routed;
mod sender;
mod thread;

use crate::cards::CardEdits;
use crate::coder::Notification;
use crate::coder_api::CoderApi;
pub use crate::config::Threads;
use crate::render::{self, RenderOptions};
use crate::slack::directory::Directory;
use crate::slack::SlackApi;
use crate::state::{Claim, Looked, MsgKey, Store, StoreError, ThreadKey, Token};
use crate::telemetry::Metrics;
pub use outbox::{Outbox, OutboxReport};
pub use poster::Posted;
use poster::{Attempt, Part, Post, Poster};
use serde::Serialize;
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The final result of delivering one `msg_id`; remembered for retries and copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Delivered {
        channel: String,
        ts: String,
    },
    /// Retrying cannot help (the person is not in Slack, or Slack refuses the message).
    Undeliverable {
        reason: String,
        /// Where the notification went instead, when `FALLBACK_CHANNEL` is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback_channel: Option<String>,
    },
    DryRun,
    /// The person snoozed this workspace's notifications in Slack; held back.
    Snoozed,
    /// Slack cannot take it now: it waits in the outbox (store and forward).
    Queued,
    /// A copy of an event a route posted to its channel already (`ROUTES_FILE`'s collapse):
    /// nothing was posted for it.
    Collapsed {
        channel: String,
        ts: String,
    },
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This request delivered it (or found it undeliverable).
    Fresh(Outcome),
    /// Another request with the same `msg_id` already did.
    Duplicate,
}

/// Slack failed or rate-limited past the budget: Coder should try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RetryLater {
    pub reason: String,
    pub retry_after: Duration,
    /// What kept it from Slack, when waiting can cure it (store and forward waits it out);
    /// `None` for what the outbox cannot help with (the store failing, a copy in flight).
    pub trouble: Option<Trouble>,
}

/// What kept a notification from Slack that waiting can cure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// Slack is down or slow, or refuses the bot token: every delivery meets it.
    SlackDown,
    /// This delivery had to wait its turn: a rate limit past the budget, too many at once,
    /// or earlier notifications for the same person waiting in the outbox.
    Busy,
}

impl RetryLater {
    /// Waiting behind the outbox: `reason` says why.
    fn waiting(reason: String) -> Self {
        RetryLater {
            reason,
            retry_after: DEFAULT_RETRY_AFTER,
            trouble: Some(Trouble::Busy),
        }
    }
}

/// Retry-After suggested when Slack gave none; Coder waits 5 minutes between attempts anyway.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How deliveries behave: what a validated configuration asks of them.
pub struct Policy {
    pub render: RenderOptions,
    pub fallback_channel: Option<String>,
    pub budget: Duration,
    pub retry_base: Duration,
    pub max_concurrent: usize,
    /// How long a claim holds a `msg_id` before another replica may take it over: longer
    /// than any delivery runs (its budget, plus time for the store's own calls).
    pub lease: Duration,
    /// Whether notifications about a workspace gather in its thread (`THREADS`).
    pub threads: Threads,
    /// Which notifications go to a channel (`ROUTES_FILE`, names resolved).
    pub routes: Option<Arc<crate::routes::Routes>>,
}

impl Policy {
    /// The delivery settings a validated configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Policy {
            render: RenderOptions {
                snooze: config.slack_app_token.is_some(),
                coder_url: config.coder_url.clone(),
            },
            fallback_channel: config.fallback_channel.clone(),
            budget: config.delivery_timeout,
            retry_base: config.tuning.retry_base_delay,
            max_concurrent: config.tuning.max_concurrent_deliveries,
            lease: config.delivery_timeout + config.tuning.lease_margin,
            threads: config.threads,
            routes: config.routes.clone(),
        }
    }
}

/// Where notifications go.
enum Destination {
    DryRun,
    Slack {
        poster: Arc<Poster>,
        directory: Arc<Directory>,
        /// The one path that edits workspaces' cards.
        cards: Arc<CardEdits>,
    },
}

/// A claimed copy waits for the delivery holding its `msg_id` by looking again after this
/// (doubling up to [`MAX_BUSY_POLL`]).
const BUSY_POLL: Duration = Duration::from_millis(50);
const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

pub struct Delivery {
    destination: Destination,
    /// Coder's API, for the buttons that act (`CODER_TOKEN`, with Socket Mode for clicks).
    coder: Option<Arc<CoderApi>>,
    /// Handled `msg_id`s (claims, leases) and what outlives the process.
    store: Store,
    permits: Semaphore,
    policy: Policy,
    metrics: Metrics,
    /// Once cancelled, deliveries stop retrying: a call in flight finishes, no new wait starts.
    shutdown: CancellationToken,
    /// Store and forward (`QUEUE_MAX_AGE`), when on.
    outbox: Option<Arc<Outbox>>,
}

impl Delivery {
    pub fn dry_run(
        store: Store,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_destination(Destination::DryRun, store, policy, metrics, shutdown)
    }

    pub fn slack(
        api: Arc<SlackApi>,
        directory: Arc<Directory>,
        cards: Arc<CardEdits>,
        store: Store,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        let poster = Arc::new(Poster::new(
            api,
            store.clone(),
            policy.retry_base,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self::with_destination(
            Destination::Slack {
                poster,
                directory,
                cards,
            },
            store,
            policy,
            metrics,
            shutdown,
        )
    }

    fn with_destination(
        destination: Destination,
        store: Store,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Delivery {
            destination,
            coder: None,
            store,
            permits: Semaphore::new(policy.max_concurrent),
            policy,
            metrics,
            shutdown,
            outbox: None,
        }
    }

    /// Keeps what Slack cannot take now in the outbox (store and forward), for the sender
    /// ([`Delivery::drain_outbox`]) to deliver.
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The outbox, when store and forward is on.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.as_ref()
    }

    /// The one path that edits workspaces' cards (Slack only).
    fn cards(&self) -> Option<&Arc<CardEdits>> {
        match &self.destination {
            Destination::Slack { cards, .. } => Some(cards),
            Destination::DryRun => None,
        }
    }

    /// Who is who in Slack (Slack only).
    fn directory(&self) -> Option<&Directory> {
        match &self.destination {
            Destination::Slack { directory, .. } => Some(directory),
            Destination::DryRun => None,
        }
    }

    /// Offers buttons that act on the workspace through `coder`.
    pub fn with_coder(mut self, coder: Arc<CoderApi>) -> Self {
        self.coder = Some(coder);
        self
    }

    /// Delivers once per `msg_id` (`body` is the webhook as Coder sent it): the id is
    /// claimed in the store first; a copy that finds it held waits for the holder's outcome.
    /// What Slack cannot take now waits in the outbox when store and forward is on; else
    /// the claim is given up, so Coder's retry tries again (reading the DM back first when
    /// a post's outcome is unknown).
    pub async fn deliver(
        &self,
        notification: &Notification,
        body: &[u8],
    ) -> Result<Answer, RetryLater> {
        let deadline = Instant::now() + self.policy.budget;
        let key = MsgKey::of(&notification.msg_id);
        let look = self.look_ahead(notification).await;
        let Some((token, unsettled_since, looked)) =
            self.claim(&key, look.as_ref(), deadline).await?
        else {
            return Ok(Answer::Duplicate);
        };
        let attempt = Attempt::after(unsettled_since).with_looked(looked);
        // With the outbox to fall back on, Slack gets a few seconds, not the whole budget.
        let slack_deadline = match &self.outbox {
            Some(outbox) => deadline.min(Instant::now() + outbox.timing.direct_budget),
            None => deadline,
        };
        let outcome = match self.must_wait(notification).await {
            Some(wait) => Err(wait),
            None => {
                self.deliver_once(notification, slack_deadline, &attempt)
                    .await
            }
        };
        let outcome = match outcome {
            Err(later) if later.trouble.is_some() && self.outbox.is_some() => {
                let unsettled = attempt.unsettled_since();
                let claim = (&key, &token);
                self.queue(claim, notification, body, unsettled, later)
                    .await
            }
            outcome => outcome,
        };
        let settled = match &outcome {
            Ok(Outcome::Queued) => Ok(()),
            Ok(_) => {
                if let Some(outbox) = &self.outbox {
                    outbox.slack_answered();
                }
                let shown = attempt.shown();
                let finished = self.store.finish_delivery(&key, &token, &shown).await;
                self.edit_card(&attempt).await;
                finished
            }
            Err(_) => {
                let maybe_posted = attempt.unsettled_since().is_some();
                self.store.release(&key, &token, maybe_posted).await
            }
        };
        if let Err(e) = settled {
            // The answer stands; the claim's lease ends on its own, and a copy then reads
            // the DM back before posting.
            self.note_store_error(&e);
        }
        outcome.map(Answer::Fresh)
    }

    /// Claims `key`: `None` when it is handled already (a duplicate); otherwise the claim,
    /// with when the first attempt began if an earlier one ended without outcome, and what
    /// it read about `look`'s workspace. A claim held by another delivery is waited for
    /// until `deadline`.
    async fn claim(
        &self,
        key: &MsgKey,
        look: Option<&ThreadKey>,
        deadline: Instant,
    ) -> Result<Option<(Token, Option<SystemTime>, Option<Looked>)>, RetryLater> {
        let mut poll = BUSY_POLL;
        loop {
            let claim = self.store.claim_looking(key, self.policy.lease, look).await;
            let (claim, looked) = claim.map_err(|e| self.store_failed(&e))?;
            match claim {
                Claim::Fresh(token) => return Ok(Some((token, None, looked))),
                Claim::TakenOver {
                    token,
                    first_claimed,
                } => return Ok(Some((token, Some(first_claimed), looked))),
                Claim::Done => return Ok(None),
                Claim::Busy { lease_ends } => {
                    let wait = tokio::time::sleep(poll);
                    if Instant::now() + poll > deadline || self.shutdown.is_cancelled() {
                        let left = lease_ends.duration_since(SystemTime::now());
                        return Err(RetryLater {
                            reason: "another delivery of this msg_id is in flight".into(),
                            retry_after: left.unwrap_or_default().max(Duration::from_secs(1)),
                            trouble: None,
                        });
                    }
                    tokio::select! {
                        _ = wait => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                    poll = (poll * 2).min(MAX_BUSY_POLL);
                }
            }
        }
    }

    fn store_failed(&self, e: &StoreError) -> RetryLater {
        self.note_store_error(e);
        RetryLater {
            reason: format!("store: {e}"),
            retry_after: DEFAULT_RETRY_AFTER,
            trouble: None,
        }
    }

    fn note_store_error(&self, e: &StoreError) {
        note_store_error(&self.metrics, e);
    }

    async fn deliver_once(
        &self,
        notification: &Notification,
        deadline: Instant,
        attempt: &Attempt,
    ) -> Result<Outcome, RetryLater> {
        let _permit = self.permit(deadline).await?;
        match &self.destination {
            Destination::DryRun => {
                let rendered = render::render(notification, &self.policy.render, None);
                // The message itself can carry secrets (one-time passcodes), so only its
                // shape is logged; `preview` prints it in full.
                tracing::info!(
                    msg_id = %notification.msg_id,
                    template = %notification.notification_name,
                    blocks = rendered.content.blocks.as_ref().map_or(0, Vec::len),
                    skipped_buttons = rendered.skipped_actions.len(),
                    "dry run: rendered, not sent (use `preview` to see the message)"
                );
                Ok(Outcome::DryRun)
            }
            Destination::Slack {
                poster, directory, ..
            } => {
                let to = Recipient {
                    poster,
                    notification,
                    deadline,
                    attempt,
                };
                self.deliver_to_slack(directory, &to).await
            }
        }
    }
}

impl Delivery {
    /// A turn among the deliveries talking to Slack at once (webhooks and the outbox's
    /// sender alike), waited for until `deadline`.
    async fn permit(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, RetryLater> {
        tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| RetryLater::waiting("too many deliveries in flight".into()))
    }
}

/// A store failure that a delivery carries on past: counted and logged.
fn note_store_error(metrics: &Metrics, e: &StoreError) {
    metrics.store_errors.inc();
    tracing::error!(error = %e, "the store failed");
}

/// One delivery's way to one person, and the time it has.
struct Recipient<'a> {
    poster: &'a Poster,
    notification: &'a Notification,
    deadline: Instant,
    attempt: &'a Attempt,
}

impl Recipient<'_> {
    /// Posts `content` as `part` of the notification, exactly once.
    async fn post(
        &self,
        post: &Post<'_>,
        content: SlackMessageContent,
    ) -> Result<Posted, crate::slack::SlackError> {
        let request = post.request(content);
        self.poster
            .post(post, &request, self.attempt, self.deadline)
            .await
    }
}

/// chat.postMessage arguments for a notification at the top level of `channel`: the
/// rendered content, with the `msg_id` in the message's metadata so it can be found again
/// (what `preview` prints).
pub fn post_request(
    channel: SlackChannelId,
    content: SlackMessageContent,
    notification: &Notification,
) -> SlackApiChatPostMessageRequest {
    let post = Post {
        notification,
        part: Part::Notification,
        channel,
        thread: None,
    };
    post.request(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn dry_run() -> Delivery {
        let policy = Policy {
            render: RenderOptions::default(),
            fallback_channel: None,
            budget: Duration::from_secs(5),
            retry_base: Duration::from_millis(10),
            max_concurrent: 4,
            lease: Duration::from_secs(10),
            threads: Threads::Off,
            routes: None,
        };
        let store = Store::in_memory().await.expect("an in-memory store");
        Delivery::dry_run(store, policy, Metrics::new(), CancellationToken::new())
    }

    fn notification(msg_id: &str) -> Notification {
        let body = serde_json::json!({
            "msg_id": msg_id,
            "payload": {"notification_name": "N", "user_email": "a@example.com"},
            "title": "T",
            "body": "B",
        });
        Notification::parse(body.to_string().as_bytes(), None).expect("valid")
    }

    fn uuid(n: u128) -> String {
        uuid::Uuid::from_u128(n).to_string()
    }

    #[tokio::test]
    async fn every_id_is_handled_once_and_copies_are_duplicates() {
        let delivery = dry_run().await;
        for n in 0..1_000 {
            let answer = delivery.deliver(&notification(&uuid(n)), b"").await;
            assert_eq!(answer, Ok(Answer::Fresh(Outcome::DryRun)));
        }
        // Nothing is forgotten for want of room: the store holds the whole window.
        for n in 0..1_000 {
            let answer = delivery.deliver(&notification(&uuid(n)), b"").await;
            assert_eq!(answer, Ok(Answer::Duplicate), "id {n}");
        }
        // The same UUID in capitals is the same id.
        let upper = uuid(7).to_uppercase();
        assert_eq!(
            delivery.deliver(&notification(&upper), b"").await,
            Ok(Answer::Duplicate)
        );
    }

    #[tokio::test]
    async fn copies_at_the_same_instant_are_delivered_once() {
        let delivery = dry_run().await;
        let copies = (0..8).map(|_| notification(&uuid(42))).collect::<Vec<_>>();
        let answers =
            futures_util::future::join_all(copies.iter().map(|n| delivery.deliver(n, b""))).await;
        let fresh = answers
            .iter()
            .filter(|a| matches!(a, Ok(Answer::Fresh(_))))
            .count();
        let duplicates = answers
            .iter()
            .filter(|a| **a == Ok(Answer::Duplicate))
            .count();
        assert_eq!((fresh, duplicates), (1, 7), "{answers:?}");
    }
}
