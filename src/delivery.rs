//! One notification's way to Slack: dedupe on `msg_id`, find the person, render, post, and
//! decide what Coder is told. Coder retries anything but a 2xx (5 attempts, 5 minutes apart),
//! so an answer is either final (2xx) or "try again" (503 with `Retry-After`).

use crate::coder::Notification;
use crate::render::{self, RenderOptions};
use crate::retry::Retry;
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackApi, SlackError, METADATA_EVENT_TYPE};
use crate::telemetry::Metrics;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use serde::Serialize;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    pub dedupe_ttl: Duration,
    pub dedupe_capacity: u64,
}

impl Policy {
    /// The delivery settings a validated configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Policy {
            render: RenderOptions {
                coder_url: config.coder_url.clone(),
            },
            fallback_channel: config.fallback_channel.clone(),
            budget: config.delivery_timeout,
            retry_base: config.tuning.retry_base_delay,
            max_concurrent: config.tuning.max_concurrent_deliveries,
            dedupe_ttl: config.tuning.dedupe_ttl,
            dedupe_capacity: config.tuning.dedupe_capacity,
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

/// What the dedupe store keeps per `msg_id`: that it was handled, nothing more.
#[derive(Debug, Clone, Copy)]
struct Handled;

/// A `msg_id` as a cache key: Coder's are UUIDs, kept as their 16 bytes; anything else
/// (a hand-made test message) as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MsgKey {
    Uuid(u128),
    Other(Arc<str>),
}

impl MsgKey {
    fn of(msg_id: &str) -> Self {
        match uuid::Uuid::try_parse(msg_id) {
            Ok(id) => MsgKey::Uuid(id.as_u128()),
            Err(_) => MsgKey::Other(msg_id.into()),
        }
    }
}

/// How long a post whose outcome is unknown is remembered, so that Coder's retries read
/// the DM back first: Coder's five attempts span about 25 minutes.
const UNSETTLED_TTL: Duration = Duration::from_secs(3600);
/// Read-back starts this long before the first attempt, for clock skew between us and Slack.
const READ_BACK_MARGIN: Duration = Duration::from_secs(120);

pub struct Delivery {
    destination: Destination,
    /// `msg_id`s handled in the dedupe window (delivered, undeliverable or dry run).
    handled: Cache<MsgKey, Handled>,
    /// Posts whose outcome is unknown (the answer was lost), with when the first started.
    unsettled: Cache<MsgKey, SystemTime>,
    /// Whether the log already said that reading a DM back is not possible.
    read_back_unavailable: AtomicBool,
    permits: Semaphore,
    policy: Policy,
    metrics: Metrics,
    /// Once cancelled, deliveries stop retrying: a call in flight finishes, no new wait starts.
    shutdown: CancellationToken,
}

impl Delivery {
    pub fn dry_run(policy: Policy, metrics: Metrics, shutdown: CancellationToken) -> Self {
        Self::with_destination(Destination::DryRun, policy, metrics, shutdown)
    }

    pub fn slack(
        api: Arc<SlackApi>,
        directory: Arc<Directory>,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_destination(
            Destination::Slack { api, directory },
            policy,
            metrics,
            shutdown,
        )
    }

    fn with_destination(
        destination: Destination,
        policy: Policy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Delivery {
            destination,
            // Least recently used out first: a frequency-based admission policy could
            // refuse to remember a new id, and a forgotten id is a double post.
            handled: Cache::builder()
                .max_capacity(policy.dedupe_capacity)
                .time_to_live(policy.dedupe_ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            unsettled: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(UNSETTLED_TTL)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            read_back_unavailable: AtomicBool::new(false),
            permits: Semaphore::new(policy.max_concurrent),
            policy,
            metrics,
            shutdown,
        }
    }

    /// Delivers once per `msg_id`: a copy that arrives while the first is in flight waits
    /// for its outcome; a failure is not remembered, so Coder's retry tries again.
    pub async fn deliver(&self, notification: &Notification) -> Result<Answer, RetryLater> {
        // Only that the id was handled is remembered; the full outcome goes to the request
        // that did the work.
        let mut fresh = None;
        let entry = self
            .handled
            .entry(MsgKey::of(&notification.msg_id))
            .or_try_insert_with(async {
                let outcome = self.deliver_once(notification).await?;
                fresh = Some(outcome);
                Ok::<_, RetryLater>(Handled)
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok(match fresh {
            Some(outcome) if entry.is_fresh() => Answer::Fresh(outcome),
            _ => Answer::Duplicate,
        })
    }

    async fn deliver_once(&self, notification: &Notification) -> Result<Outcome, RetryLater> {
        let deadline = Instant::now() + self.policy.budget;
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
        let rendered = render::render(notification, &self.policy.render, None);
        log_skipped(notification, &rendered.skipped_actions);
        let channel = SlackChannelId(user.0.clone());
        let blocks = post_request(channel.clone(), rendered.content, notification);
        match self.post_exactly_once(to, &user, &blocks).await {
            // The bridge's fault, not the person's: they get the same notification as
            // plain text rather than being called unreachable.
            Err(refused) if refused.class() == ErrorClass::BadMessage => {
                self.note_refused_message(notification, &refused);
                let content = render::plain_text(notification, &self.policy.render);
                let plain = post_request(channel, content, notification);
                let posted = self.post_exactly_once(to, &user, &plain).await;
                self.outcome(to, posted, "Slack refused this message, even as plain text")
                    .await
            }
            posted => {
                self.outcome(
                    to,
                    posted,
                    "Slack will not deliver this message to the user",
                )
                .await
            }
        }
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
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        let key = MsgKey::of(&to.notification.msg_id);
        let mut retry = self.retry(to.deadline);
        loop {
            let error = match self.post_attempt(to, user, &key, request).await {
                Ok(posted) => return Ok(posted),
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
        key: &MsgKey,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        // The entry is not removed once settled: the msg_id is then handled, so no copy
        // posts again, and the entry expires on its own.
        if let Some(first_attempt) = self.unsettled.get(key).await {
            if let Some(found) = self.read_back(to, user, first_attempt).await? {
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
                // The earliest attempt bounds the read-back.
                self.unsettled.get_with_by_ref(key, async { started }).await;
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
        first_attempt: SystemTime,
    ) -> Result<Option<(String, String)>, SlackError> {
        let msg_id = &to.notification.msg_id;
        let found = async {
            let dm = within(to.deadline, "conversations.open", to.api.open_dm(user)).await?;
            let oldest = slack_ts(first_attempt - READ_BACK_MARGIN);
            let ts = within(
                to.deadline,
                "conversations.history",
                to.api.find_notification(&dm, &oldest, msg_id),
            )
            .await?;
            Ok::<_, SlackError>(ts.map(|ts| (dm, ts)))
        }
        .await;
        match found {
            Ok(Some(posted)) => {
                tracing::info!(%msg_id, "the post whose answer was lost is in the DM; not posting again");
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
        let posted = self
            .retry(to.deadline)
            .run(SlackError::verdict, || {
                within(
                    to.deadline,
                    "chat.postMessage",
                    to.api.post_message(&request),
                )
            })
            .await;
        match posted {
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

    fn dry_run(capacity: u64) -> Delivery {
        let policy = Policy {
            render: RenderOptions::default(),
            fallback_channel: None,
            budget: Duration::from_secs(5),
            retry_base: Duration::from_millis(10),
            max_concurrent: 4,
            dedupe_ttl: Duration::from_secs(3600),
            dedupe_capacity: capacity,
        };
        Delivery::dry_run(policy, Metrics::new(), CancellationToken::new())
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
    async fn the_newest_ids_are_always_remembered_when_the_store_is_full() {
        let delivery = dry_run(100);
        for n in 0..1_000 {
            let answer = delivery.deliver(&notification(&uuid(n))).await;
            assert_eq!(answer, Ok(Answer::Fresh(Outcome::DryRun)));
        }
        delivery.handled.run_pending_tasks().await;
        assert!(delivery.handled.entry_count() <= 100);
        // Least recently used out first: a new id is never refused a place (an admission
        // policy that did so would let Coder's retry of it post twice).
        for n in 950..1_000 {
            let answer = delivery.deliver(&notification(&uuid(n))).await;
            assert_eq!(answer, Ok(Answer::Duplicate), "id {n}");
        }
    }

    #[test]
    fn uuids_are_keyed_on_their_bytes_and_other_ids_on_their_text() {
        let id = "0b6e5bd4-8fd4-4c38-a6d5-0d5c8a4f4a43";
        assert_eq!(MsgKey::of(id), MsgKey::of(&id.to_uppercase()));
        assert!(matches!(MsgKey::of(id), MsgKey::Uuid(_)));
        assert_eq!(
            MsgKey::of("send-test-1"),
            MsgKey::Other("send-test-1".into())
        );
        assert_ne!(MsgKey::of("send-test-1"), MsgKey::of("send-test-2"));
        assert_eq!(std::mem::size_of::<u128>(), 16);
    }
}
