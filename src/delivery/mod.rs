//! One notification's way to Slack: dedupe on `msg_id`, find the person, render, post, and
//! decide what Coder is told. Coder retries anything but a 2xx (5 attempts, 5 minutes apart),
//! so an answer is either final (2xx) or "try again" (503 with `Retry-After`).

mod card_edits;
mod offer;
mod thread;

use crate::coder::Notification;
use crate::coder_api::CoderApi;
pub use crate::config::Threads;
use crate::render::{self, RenderOptions};
use crate::retry::Retry;
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackApi, SlackError, METADATA_EVENT_TYPE};
use crate::state::{Claim, MsgKey, Store, StoreError, ThreadKey, Token};
use crate::telemetry::Metrics;
use moka::future::Cache;
use serde::Serialize;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thread::{Failed, Place, Snooze};
use tokio::sync::Semaphore;
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
}

/// Retry-After suggested when Slack gave none; Coder waits 5 minutes between attempts anyway.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The first wait of the backoff between failed calls is drawn under `retry_base`; never longer than this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(8);

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
    /// How long a card's first change waits for more before one edit shows the latest.
    pub card_edit_delay: Duration,
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
            card_edit_delay: config.tuning.card_edit_delay,
        }
    }
}

/// Where notifications go.
enum Destination {
    DryRun,
    Slack {
        api: Arc<SlackApi>,
        directory: Arc<Directory>,
    },
}

/// Read-back starts this long before the first attempt, for clock skew between us and Slack.
const READ_BACK_MARGIN: Duration = Duration::from_secs(120);

/// A claimed copy waits for the delivery holding its `msg_id` by looking again after this
/// (doubling up to [`MAX_BUSY_POLL`]).
const BUSY_POLL: Duration = Duration::from_millis(50);
const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

pub struct Delivery {
    destination: Destination,
    /// Edits of workspaces' cards, coalesced in bursts (Slack only).
    card_edits: Option<Arc<card_edits::CardEdits>>,
    /// Coder's API, for the buttons that act (`CODER_TOKEN`, with Socket Mode for clicks).
    coder: Option<Arc<CoderApi>>,
    /// Handled `msg_id`s (claims, leases) and what outlives the process.
    store: Store,
    /// Slack user → DM channel, in front of the store's copy.
    dm_channels: Cache<String, Arc<str>>,
    /// Whether the log already said that reading a DM back is not possible.
    read_back_unavailable: AtomicBool,
    permits: Semaphore,
    policy: Policy,
    metrics: Metrics,
    /// Once cancelled, deliveries stop retrying: a call in flight finishes, no new wait starts.
    shutdown: CancellationToken,
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
        store: Store,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_destination(
            Destination::Slack { api, directory },
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
        let card_edits = match &destination {
            Destination::Slack { api, .. } => Some(card_edits::CardEdits::new(
                policy.card_edit_delay,
                api.clone(),
                store.clone(),
                metrics.clone(),
                shutdown.clone(),
            )),
            Destination::DryRun => None,
        };
        Delivery {
            destination,
            card_edits,
            coder: None,
            store,
            dm_channels: Cache::new(10_000),
            read_back_unavailable: AtomicBool::new(false),
            permits: Semaphore::new(policy.max_concurrent),
            policy,
            metrics,
            shutdown,
        }
    }

    /// Offers buttons that act on the workspace through `coder`.
    pub fn with_coder(mut self, coder: Arc<CoderApi>) -> Self {
        self.coder = Some(coder);
        self
    }

    /// Delivers once per `msg_id`: the id is claimed in the store first; a copy that finds
    /// it held waits for the holder's outcome; a failure gives the claim up, so Coder's retry
    /// tries again (reading the DM back first when a post's outcome is unknown).
    pub async fn deliver(&self, notification: &Notification) -> Result<Answer, RetryLater> {
        let deadline = Instant::now() + self.policy.budget;
        let key = MsgKey::of(&notification.msg_id);
        let Some((token, unsettled_since)) = self.claim(&key, deadline).await? else {
            return Ok(Answer::Duplicate);
        };
        let attempt = Attempt {
            unsettled_since: Mutex::new(unsettled_since),
        };
        let outcome = self.deliver_once(notification, deadline, &attempt).await;
        let settled = match &outcome {
            Ok(_) => self.store.finish(&key, &token).await,
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
    /// with when the first attempt began if an earlier one ended without outcome. A claim
    /// held by another delivery is waited for until `deadline`.
    async fn claim(
        &self,
        key: &MsgKey,
        deadline: Instant,
    ) -> Result<Option<(Token, Option<SystemTime>)>, RetryLater> {
        let mut poll = BUSY_POLL;
        loop {
            let claim = self.store.claim(key, self.policy.lease).await;
            match claim.map_err(|e| self.store_failed(&e))? {
                Claim::Fresh(token) => return Ok(Some((token, None))),
                Claim::TakenOver {
                    token,
                    first_claimed,
                } => return Ok(Some((token, Some(first_claimed)))),
                Claim::Done => return Ok(None),
                Claim::Busy { lease_ends } => {
                    let wait = tokio::time::sleep(poll);
                    if Instant::now() + poll > deadline || self.shutdown.is_cancelled() {
                        let left = lease_ends.duration_since(SystemTime::now());
                        return Err(RetryLater {
                            reason: "another delivery of this msg_id is in flight".into(),
                            retry_after: left.unwrap_or_default().max(Duration::from_secs(1)),
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
        }
    }

    fn note_store_error(&self, e: &StoreError) {
        self.metrics.store_errors.inc();
        tracing::error!(error = %e, "the store failed");
    }

    async fn deliver_once(
        &self,
        notification: &Notification,
        deadline: Instant,
        attempt: &Attempt,
    ) -> Result<Outcome, RetryLater> {
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| RetryLater {
                reason: "too many deliveries in flight".into(),
                retry_after: DEFAULT_RETRY_AFTER,
            })?;
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
            Destination::Slack { api, directory } => {
                let to = Recipient {
                    api,
                    notification,
                    deadline,
                    attempt,
                };
                self.deliver_to_slack(directory, &to).await
            }
        }
    }

    async fn deliver_to_slack(
        &self,
        directory: &Directory,
        to: &Recipient<'_>,
    ) -> Result<Outcome, RetryLater> {
        let notification = to.notification;
        let user = self
            .retry(to.deadline)
            .run(SlackError::verdict, || {
                within(
                    to.deadline,
                    "users.lookupByEmail",
                    directory.resolve(&notification.user_email),
                )
            })
            .await
            .map_err(|e| retry_later(&e))?;
        let Some(user) = user else {
            let reason = "users_not_found: no active Slack user has this e-mail address";
            return self.undeliverable(to, reason).await;
        };
        let workspace = self.workspace_key(notification, &user);
        let note = match &workspace {
            Some(key) => match self.snooze_check(key).await? {
                Snooze::On => return Ok(Outcome::Snoozed),
                Snooze::Ended(note) => note,
            },
            None => None,
        };
        let offer = self.offer_for(notification).await;
        let rendered = render::render_offering(
            notification,
            &self.policy.render,
            note.as_deref(),
            offer.as_ref(),
        );
        log_skipped(notification, &rendered.skipped_actions);
        let thread = workspace.filter(|_| self.policy.threads == Threads::Workspace);
        let mut placed = self
            .post_placed(to, &user, thread.as_ref(), &rendered.content)
            .await;
        if let (Err(Failed::Slack(gone)), Some(_)) = (&placed, &thread) {
            if gone.is_gone() {
                // The card or its thread was deleted: start a new one, once.
                placed = self
                    .post_placed(to, &user, thread.as_ref(), &rendered.content)
                    .await;
            }
        }
        match placed {
            Ok((place, posted, refusal)) => {
                if let (Ok(_), Some(key), Some(card)) = (&posted, &thread, &place.thread) {
                    if !place.card_is_new {
                        self.update_card(key, card, notification).await;
                    }
                    self.record_latest(key, notification).await;
                }
                self.outcome(to, posted, refusal).await
            }
            Err(Failed::Slack(e)) => {
                self.outcome(
                    to,
                    Err(e),
                    "Slack will not deliver this message to the user",
                )
                .await
            }
            Err(Failed::Later(later)) => Err(later),
        }
    }

    /// Posts `content` where it belongs (the workspace's thread, else the DM), as plain
    /// text when Slack refuses the blocks; with the place, and what a refusal means.
    async fn post_placed(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        thread: Option<&ThreadKey>,
        content: &SlackMessageContent,
    ) -> Result<(Place, Result<(String, String), SlackError>, &'static str), Failed> {
        let place = match thread {
            Some(key) => self.thread_place(to, user, key).await?,
            None => Place::dm(user),
        };
        let notification = to.notification;
        let request = place.request(content.clone(), notification);
        let (posted, refusal) = match self.post_exactly_once(to, user, &place, &request).await {
            // The bridge's fault, not the person's: they get the same notification as
            // plain text rather than being called unreachable.
            Err(refused) if refused.class() == ErrorClass::BadMessage => {
                self.note_refused_message(notification, &refused);
                let plain = render::plain_text(notification, &self.policy.render);
                let request = place.request(plain, notification);
                let posted = self.post_exactly_once(to, user, &place, &request).await;
                (posted, "Slack refused this message, even as plain text")
            }
            posted => (posted, "Slack will not deliver this message to the user"),
        };
        if let (Err(e), Some(key), Some(card)) = (&posted, thread, &place.thread) {
            if e.is_gone() {
                self.forget_thread(key, card).await;
                return Err(Failed::Slack(e.clone()));
            }
        }
        Ok((place, posted, refusal))
    }

    fn note_refused_message(&self, notification: &Notification, refused: &SlackError) {
        self.metrics.plain_text_fallbacks.inc();
        tracing::error!(
            msg_id = %notification.msg_id,
            template = %notification.notification_name,
            error = %refused,
            "Slack refused the message the bridge built for this template; sending it as plain text (please report the template name)"
        );
    }

    /// What a post to the person means for Coder: delivered; undeliverable when Slack
    /// will not take it (`refusal` says why); or try again later.
    async fn outcome(
        &self,
        to: &Recipient<'_>,
        posted: Result<(String, String), SlackError>,
        refusal: &str,
    ) -> Result<Outcome, RetryLater> {
        match posted {
            Ok((channel, ts)) => Ok(Outcome::Delivered { channel, ts }),
            Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadMessage) => {
                let reason = format!("{}: {refusal}", e.code());
                self.undeliverable(to, &reason).await
            }
            Err(e) => Err(retry_later(&e)),
        }
    }

    /// Posts `request` to `user`'s DM, retrying within the deadline. When an earlier
    /// attempt's outcome is unknown (its answer was lost, here or in an earlier webhook with
    /// this `msg_id`), the DM is read back first so the message is not posted twice.
    async fn post_exactly_once(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        place: &Place,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        let mut retry = self.retry(to.deadline);
        loop {
            let error = match self.post_attempt(to, user, place, request).await {
                Ok(posted) => {
                    self.learn_dm_channel(user, &posted.0).await;
                    return Ok(posted);
                }
                Err(e) => e,
            };
            if !retry.wait(error.verdict()).await {
                return Err(error);
            }
        }
    }

    async fn post_attempt(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        place: &Place,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        if let Some(first_attempt) = to.attempt.unsettled_since() {
            let thread_ts = place.thread.as_ref().map(|t| t.card_ts.as_str());
            if let Some(found) = self.read_back(to, user, thread_ts, first_attempt).await? {
                return Ok(found);
            }
        }
        let started = SystemTime::now();
        match within(
            to.deadline,
            "chat.postMessage",
            to.api.post_message(request),
        )
        .await
        {
            Ok(posted) => Ok(posted),
            Err(e) if e.outcome_unknown() => {
                to.attempt.note_unsettled(started);
                tracing::warn!(msg_id = %to.notification.msg_id, error = %e, "the outcome of a post is unknown; the DM is read back before posting again");
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The message with this notification's `msg_id` in `user`'s DM, posted since shortly
    /// before `first_attempt`. `Ok(None)` when it is not there, or when the bot token lacks
    /// the scopes to look (then the message is posted again, as without read-back).
    async fn read_back(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        thread_ts: Option<&str>,
        first_attempt: SystemTime,
    ) -> Result<Option<(String, String)>, SlackError> {
        let msg_id = &to.notification.msg_id;
        let found = async {
            let dm = self.dm_channel(to, user).await?;
            let oldest = slack_ts(first_attempt - READ_BACK_MARGIN);
            let ts = within(
                to.deadline,
                "conversations.history",
                to.api.find_notification(&dm, thread_ts, &oldest, msg_id),
            )
            .await?;
            Ok::<_, SlackError>(ts.map(|ts| (dm, ts)))
        }
        .await;
        match found {
            Ok(Some(posted)) => {
                tracing::info!(%msg_id, "the post whose outcome was unknown is in the DM; not posting again");
                Ok(Some(posted))
            }
            Ok(None) => Ok(None),
            Err(e) if e.lacks_scope() => {
                if !self.read_back_unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read DMs back (add the bot scopes im:write and im:history): a post whose answer is lost is posted again, so the person may see it twice");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `user`'s DM channel with the bot: remembered (here or in the store) from an earlier
    /// post's answer, else opened (`conversations.open` gives the existing one).
    async fn dm_channel(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
    ) -> Result<String, SlackError> {
        if let Some(channel) = self.dm_channels.get(&user.0).await {
            return Ok(channel.to_string());
        }
        match self.store.dm_channel(&user.0).await {
            Ok(Some(channel)) => {
                self.dm_channels
                    .insert(user.0.clone(), channel.as_str().into())
                    .await;
                return Ok(channel);
            }
            Ok(None) => {}
            Err(e) => self.note_store_error(&e),
        }
        let channel = within(to.deadline, "conversations.open", to.api.open_dm(user)).await?;
        self.learn_dm_channel(user, &channel).await;
        Ok(channel)
    }

    /// Remembers `user`'s DM channel from an answer (once per process and channel: the
    /// store is written only when it is new).
    async fn learn_dm_channel(&self, user: &SlackUserId, channel: &str) {
        // Posts to a user ID are answered with the DM's ID; anything else is not a DM.
        if !channel.starts_with('D') {
            return;
        }
        if self.dm_channels.get(&user.0).await.as_deref() == Some(channel) {
            return;
        }
        self.dm_channels
            .insert(user.0.clone(), channel.into())
            .await;
        if let Err(e) = self.store.learn_dm_channel(&user.0, channel).await {
            self.note_store_error(&e);
        }
    }

    /// The person cannot be reached: say so, and post to the fallback channel when there is one.
    async fn undeliverable(&self, to: &Recipient<'_>, reason: &str) -> Result<Outcome, RetryLater> {
        let notification = to.notification;
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, reason, "notification is undeliverable");
        let Some(channel) = &self.policy.fallback_channel else {
            return Ok(Outcome::Undeliverable {
                reason: reason.to_owned(),
                fallback_channel: None,
            });
        };
        let note = format!(
            "Intended for {}, who could not be reached in Slack ({}).",
            notification.user_email,
            reason.split(':').next().unwrap_or(reason)
        );
        let rendered = render::render(notification, &self.policy.render, Some(&note));
        let request = post_request(
            SlackChannelId(channel.clone()),
            rendered.content,
            notification,
        );
        match self.post_retrying(to, &request).await {
            Ok(_) => Ok(Outcome::Undeliverable {
                reason: reason.to_owned(),
                fallback_channel: Some(channel.clone()),
            }),
            Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadMessage) => {
                tracing::error!(error = %e, "cannot post to FALLBACK_CHANNEL {channel}: invite the app to it or fix the setting");
                Ok(Outcome::Undeliverable {
                    reason: format!("{reason}; FALLBACK_CHANNEL failed too: {}", e.code()),
                    fallback_channel: None,
                })
            }
            Err(e) => Err(retry_later(&e)),
        }
    }

    /// chat.postMessage, retried as the delivery's policy says (no read-back: for posts
    /// other than the notification itself to its person).
    async fn post_retrying(
        &self,
        to: &Recipient<'_>,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        self.retry(to.deadline)
            .run(SlackError::verdict, || {
                within(
                    to.deadline,
                    "chat.postMessage",
                    to.api.post_message(request),
                )
            })
            .await
    }

    /// The retry policy of every Slack call a delivery makes: backoff from `retry_base`,
    /// no wait past the delivery's deadline, none after shutdown began.
    fn retry(&self, deadline: Instant) -> Retry {
        Retry::new(self.policy.retry_base, MAX_RETRY_WAIT)
            .deadline(deadline)
            .until(self.shutdown.clone())
    }
}

/// One delivery's way to one person, and the time it has.
struct Recipient<'a> {
    api: &'a SlackApi,
    notification: &'a Notification,
    deadline: Instant,
    attempt: &'a Attempt,
}

/// What one delivery learns as it goes.
struct Attempt {
    /// When the first post whose outcome is unknown began (in this delivery, or in an
    /// earlier one whose claim this took over): from then on the DM is read back first.
    unsettled_since: Mutex<Option<SystemTime>>,
}

impl Attempt {
    fn unsettled_since(&self) -> Option<SystemTime> {
        *self
            .unsettled_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The earliest such post bounds the read-back.
    fn note_unsettled(&self, started: SystemTime) {
        let mut since = self
            .unsettled_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        since.get_or_insert(started);
    }
}

/// chat.postMessage arguments for a notification: the rendered content, with the `msg_id`
/// in the message's metadata so the message can be found again.
pub fn post_request(
    channel: SlackChannelId,
    content: SlackMessageContent,
    notification: &Notification,
) -> SlackApiChatPostMessageRequest {
    let payload = HashMap::from([("msg_id".to_owned(), notification.msg_id.clone())]);
    let metadata =
        SlackMessageMetadata::new(METADATA_EVENT_TYPE.to_owned()).with_event_payload(payload);
    render::post_message_request(channel, content.with_metadata(metadata))
}

/// A Slack call bounded by `deadline` as well as by the client's own call timeout: the
/// webhook's answer never waits for a call started just before the budget ran out.
async fn within<T>(
    deadline: Instant,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, SlackError>>,
) -> Result<T, SlackError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(SlackError::Transport {
                method,
                detail: "no answer before DELIVERY_TIMEOUT ran out".into(),
            })
        })
}

/// A Slack timestamp (`seconds.micros`) for a moment.
fn slack_ts(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}.{:06}",
        since_epoch.as_secs(),
        since_epoch.subsec_micros()
    )
}

fn log_skipped(notification: &Notification, skipped: &[render::SkippedAction]) {
    for s in skipped {
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, action = s.index, reason = s.reason, "button left out");
    }
}

/// A Slack failure that retrying later may fix; configuration errors are logged with the fix.
fn retry_later(error: &SlackError) -> RetryLater {
    let retry_after = match error.class() {
        ErrorClass::RateLimited(Some(after)) => after,
        _ => DEFAULT_RETRY_AFTER,
    };
    match error.remedy() {
        Some(remedy) if error.class() == ErrorClass::Configuration => {
            tracing::error!(error = %error, "Slack refused the call: {remedy}");
        }
        _ => tracing::warn!(error = %error, "Slack call failed"),
    }
    RetryLater {
        reason: format!("slack: {error}"),
        retry_after,
    }
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
            card_edit_delay: Duration::ZERO,
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
            let answer = delivery.deliver(&notification(&uuid(n))).await;
            assert_eq!(answer, Ok(Answer::Fresh(Outcome::DryRun)));
        }
        // Nothing is forgotten for want of room: the store holds the whole window.
        for n in 0..1_000 {
            let answer = delivery.deliver(&notification(&uuid(n))).await;
            assert_eq!(answer, Ok(Answer::Duplicate), "id {n}");
        }
        // The same UUID in capitals is the same id.
        let upper = uuid(7).to_uppercase();
        assert_eq!(
            delivery.deliver(&notification(&upper)).await,
            Ok(Answer::Duplicate)
        );
    }

    #[tokio::test]
    async fn copies_at_the_same_instant_are_delivered_once() {
        let delivery = dry_run().await;
        let copies = (0..8).map(|_| notification(&uuid(42))).collect::<Vec<_>>();
        let answers =
            futures_util::future::join_all(copies.iter().map(|n| delivery.deliver(n))).await;
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
