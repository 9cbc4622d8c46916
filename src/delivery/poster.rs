//! The one way the bridge posts a message for a notification, exactly once: the message
//! carries the `msg_id` (and which part of the notification it is) in its metadata; the post
//! is retried within the delivery's deadline; and once any post's outcome is unknown (its
//! answer lost at an edge proxy, or slower than the call timeout, here or in an earlier
//! delivery of this `msg_id`), the conversation is read back before posting again
//! (`conversations.history` for a top-level post, `conversations.replies` in a thread).
//! Cards, replies, top-level DMs and fallback posts all go through [`Poster::post`].

use crate::coder::Notification;
use crate::retry::Retry;
use crate::slack::{SlackApi, SlackError, METADATA_EVENT_TYPE, NOTIFICATION_PART};
use crate::state::{Looked, Shown, Store, Thread, ThreadKey};
use crate::telemetry::Metrics;
use moka::future::Cache;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Read-back starts this long before the first attempt, for clock skew between us and Slack.
const READ_BACK_MARGIN: Duration = Duration::from_secs(120);
/// The first wait of the backoff between failed calls is drawn under `retry_base`; never longer than this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(8);

/// Where a message went: the conversation Slack names (`D…` for a DM) and its `ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// Which of a notification's messages a post is: the notification itself, or the card of
/// its workspace's thread (made for it, so found apart from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Notification,
    Card,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Notification => NOTIFICATION_PART,
            Part::Card => "card",
        }
    }
}

/// One message to post for a notification.
pub struct Post<'a> {
    pub notification: &'a Notification,
    pub part: Part,
    /// A Slack user ID (`U…`: the app's DM with them), or a conversation ID.
    pub channel: SlackChannelId,
    /// In the thread under this card, and shown in the conversation too when `broadcast`.
    pub thread: Option<(&'a str, bool)>,
}

impl Post<'_> {
    /// `chat.postMessage` arguments: `content` here, with the `msg_id` (and the part, for
    /// a card) in the message's metadata so it can be found again.
    pub fn request(&self, content: SlackMessageContent) -> SlackApiChatPostMessageRequest {
        let mut payload = HashMap::from([("msg_id".to_owned(), self.notification.msg_id.clone())]);
        // A notification's own message says nothing more (as before parts were named).
        if self.part != Part::Notification {
            payload.insert("part".to_owned(), self.part.as_str().to_owned());
        }
        let metadata =
            SlackMessageMetadata::new(METADATA_EVENT_TYPE.to_owned()).with_event_payload(payload);
        let request = crate::render::post_message_request(
            self.channel.clone(),
            content.with_metadata(metadata),
        );
        match self.thread {
            Some((card_ts, broadcast)) => request
                .with_thread_ts(SlackTs(card_ts.to_owned()))
                .with_reply_broadcast(broadcast),
            None => request,
        }
    }
}

/// What one delivery learns as it goes: whether a post's outcome is unknown, what the claim
/// read about the workspace, and what its message showed (recorded with its done mark).
#[derive(Default)]
pub struct Attempt {
    /// When the first post whose outcome is unknown began (in this delivery, or in an
    /// earlier one whose claim this took over): from then on every post reads back first.
    unsettled_since: Mutex<Option<SystemTime>>,
    /// What the claim read about the workspace (its snooze, its thread), used once.
    looked: Mutex<Option<Looked>>,
    /// What the message showed: an ended snooze's count, the card's latest.
    shown: Mutex<Shown>,
    /// The card to edit once the done mark records what it shows (not one made for this
    /// notification: that shows it already).
    card_to_edit: Mutex<Option<ThreadKey>>,
    /// When Coder sent the notification, for one that waited in the outbox: its message
    /// and its card say so.
    waited_since: Option<SystemTime>,
}

/// A lock on a delivery's own state; a panic elsewhere in it leaves nothing half-done here.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Attempt {
    /// An attempt that follows one whose outcome is unknown since `since`.
    pub fn after(since: Option<SystemTime>) -> Self {
        Attempt {
            unsettled_since: Mutex::new(since),
            ..Attempt::default()
        }
    }

    /// An attempt at a notification Coder sent at `sent_at` that waited in the outbox.
    pub fn from_outbox(since: Option<SystemTime>, sent_at: SystemTime) -> Self {
        Attempt {
            waited_since: Some(sent_at),
            ..Attempt::after(since)
        }
    }

    /// With what the claim read about the workspace.
    pub fn with_looked(self, looked: Option<Looked>) -> Self {
        *lock(&self.looked) = looked;
        self
    }

    /// Whether the claim found `key`'s workspace snoozed; `None` when it did not look.
    pub fn looked_snoozed(&self, key: &ThreadKey) -> Option<bool> {
        let looked = lock(&self.looked);
        looked.as_ref().filter(|l| l.key == *key).map(|l| l.snoozed)
    }

    /// The thread the claim found for `key`, once: a card found gone is looked up again.
    pub fn take_looked_thread(&self, key: &ThreadKey) -> Option<Thread> {
        let mut looked = lock(&self.looked);
        looked.as_mut().filter(|l| l.key == *key)?.thread.take()
    }

    /// When Coder sent a notification that waited in the outbox.
    pub fn waited_since(&self) -> Option<SystemTime> {
        self.waited_since
    }

    /// When what this notification tells happened, as its card shows it: when Coder sent it.
    pub fn happened_at(&self) -> SystemTime {
        self.waited_since.unwrap_or_else(SystemTime::now)
    }

    pub fn show_snooze(&self, key: &ThreadKey) {
        lock(&self.shown).snooze_ended = Some(key.clone());
    }

    /// The message is the latest on `key`'s card, which is edited to say so unless it was
    /// made for this notification (`card_is_new`).
    pub fn show_on_card(&self, key: &ThreadKey, latest: String, card_is_new: bool) {
        lock(&self.shown).on_card = Some((key.clone(), latest, self.happened_at()));
        if !card_is_new {
            *lock(&self.card_to_edit) = Some(key.clone());
        }
    }

    /// What the message showed, for the done mark.
    pub fn shown(&self) -> Shown {
        lock(&self.shown).clone()
    }

    /// The card to edit once the done mark is recorded.
    pub fn card_to_edit(&self) -> Option<ThreadKey> {
        lock(&self.card_to_edit).clone()
    }

    pub fn unsettled_since(&self) -> Option<SystemTime> {
        *lock(&self.unsettled_since)
    }

    /// The earliest such post bounds the read-back.
    pub fn note_unsettled(&self, started: SystemTime) {
        lock(&self.unsettled_since).get_or_insert(started);
    }
}

/// Posts exactly once; knows each person's DM channel (for reading a DM back).
pub struct Poster {
    api: Arc<SlackApi>,
    /// The DM channels learned, in front of the store's copy.
    store: Store,
    dm_channels: Cache<String, Arc<str>>,
    /// Whether the log already said that reading a conversation back is not possible.
    read_back_unavailable: AtomicBool,
    retry_base: Duration,
    metrics: Metrics,
    /// Once cancelled, posts stop retrying: a call in flight finishes, no new wait starts.
    shutdown: CancellationToken,
}

impl Poster {
    pub fn new(
        api: Arc<SlackApi>,
        store: Store,
        retry_base: Duration,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Poster {
            api,
            store,
            dm_channels: Cache::new(10_000),
            read_back_unavailable: AtomicBool::new(false),
            retry_base,
            metrics,
            shutdown,
        }
    }

    /// Posts `request` (made by `post.request`) once, retrying within `deadline`; when this
    /// or an earlier attempt's outcome is unknown, the conversation is read back first.
    pub async fn post(
        &self,
        post: &Post<'_>,
        request: &SlackApiChatPostMessageRequest,
        attempt: &Attempt,
        deadline: Instant,
    ) -> Result<Posted, SlackError> {
        let mut retry = self.retry(deadline);
        loop {
            let error = match self.post_attempt(post, request, attempt, deadline).await {
                Ok(posted) => {
                    self.learn_dm_channel(&post.channel, &posted.channel).await;
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
        post: &Post<'_>,
        request: &SlackApiChatPostMessageRequest,
        attempt: &Attempt,
        deadline: Instant,
    ) -> Result<Posted, SlackError> {
        if let Some(first_attempt) = attempt.unsettled_since() {
            if let Some(found) = self.read_back(post, first_attempt, deadline).await? {
                return Ok(found);
            }
        }
        let started = SystemTime::now();
        match within(deadline, "chat.postMessage", self.api.post_message(request)).await {
            Ok((channel, ts)) => Ok(Posted { channel, ts }),
            Err(e) if e.outcome_unknown() => {
                attempt.note_unsettled(started);
                tracing::warn!(msg_id = %post.notification.msg_id, part = post.part.as_str(), error = %e, "the outcome of a post is unknown; the conversation is read back before posting again");
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The message for `post` in its conversation, posted since shortly before
    /// `first_attempt`. `Ok(None)` when it is not there, or when the bot token lacks the
    /// scopes to look (then the message is posted again, as without read-back).
    async fn read_back(
        &self,
        post: &Post<'_>,
        first_attempt: SystemTime,
        deadline: Instant,
    ) -> Result<Option<Posted>, SlackError> {
        let msg_id = &post.notification.msg_id;
        let found = async {
            let channel = self.conversation(&post.channel, deadline).await?;
            let oldest = slack_ts(first_attempt - READ_BACK_MARGIN);
            let thread_ts = post.thread.map(|(ts, _)| ts);
            let part = post.part.as_str();
            let find = self
                .api
                .find_notification(&channel, thread_ts, &oldest, msg_id, part);
            let method = match thread_ts {
                Some(_) => "conversations.replies",
                None => "conversations.history",
            };
            let ts = within(deadline, method, find).await?;
            Ok::<_, SlackError>(ts.map(|ts| Posted { channel, ts }))
        }
        .await;
        match found {
            Ok(Some(posted)) => {
                tracing::info!(%msg_id, part = post.part.as_str(), "the post whose outcome was unknown is there; not posting again");
                Ok(Some(posted))
            }
            Ok(None) => Ok(None),
            Err(e) if e.lacks_scope() => {
                if !self.read_back_unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read conversations back (add the bot scopes im:write and im:history): a post whose answer is lost is posted again, so the person may see it twice");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The conversation a post to `channel` lands in: a user ID's DM channel, remembered
    /// (here or in the store) from an earlier answer, else opened; any other ID as it is.
    async fn conversation(
        &self,
        channel: &SlackChannelId,
        deadline: Instant,
    ) -> Result<String, SlackError> {
        if !channel.0.starts_with('U') && !channel.0.starts_with('W') {
            return Ok(channel.0.clone());
        }
        let user = &channel.0;
        if let Some(dm) = self.dm_channels.get(user).await {
            return Ok(dm.to_string());
        }
        match self.store.dm_channel(user).await {
            Ok(Some(dm)) => {
                self.dm_channels
                    .insert(user.clone(), dm.as_str().into())
                    .await;
                return Ok(dm);
            }
            Ok(None) => {}
            Err(e) => self.note_store_error(&e),
        }
        let user_id = SlackUserId(user.clone());
        let dm = within(deadline, "conversations.open", self.api.open_dm(&user_id)).await?;
        self.learn_dm_channel(channel, &dm).await;
        Ok(dm)
    }

    /// Remembers a user's DM channel from a post's answer (once per process and channel:
    /// the store is written only when it is new).
    async fn learn_dm_channel(&self, posted_to: &SlackChannelId, answered: &str) {
        // Posts to a user ID are answered with the DM's ID; anything else is not a DM.
        let user = &posted_to.0;
        if !answered.starts_with('D') || !(user.starts_with('U') || user.starts_with('W')) {
            return;
        }
        if self.dm_channels.get(user).await.as_deref() == Some(answered) {
            return;
        }
        self.dm_channels.insert(user.clone(), answered.into()).await;
        if let Err(e) = self.store.learn_dm_channel(user, answered).await {
            self.note_store_error(&e);
        }
    }

    fn note_store_error(&self, e: &crate::state::StoreError) {
        super::note_store_error(&self.metrics, e);
    }

    /// The retry policy of every Slack call a delivery makes: backoff from `retry_base`,
    /// no wait past the delivery's deadline, none after shutdown began.
    pub fn retry(&self, deadline: Instant) -> Retry {
        Retry::new(self.retry_base, MAX_RETRY_WAIT)
            .deadline(deadline)
            .until(self.shutdown.clone())
    }
}

/// A Slack call bounded by `deadline` as well as by the client's own call timeout: the
/// webhook's answer never waits for a call started just before the budget ran out. Once
/// the deadline has passed no call starts at all: the delivery's claim has a lease that
/// ends a margin after the deadline, and a holder paused past it (its lease over, the id
/// perhaps taken over by another replica reading the DM back) must not post then.
pub async fn within<T>(
    deadline: Instant,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, SlackError>>,
) -> Result<T, SlackError> {
    let out_of_time = || {
        Err(SlackError::Transport {
            method,
            detail: "no answer before DELIVERY_TIMEOUT ran out".into(),
        })
    };
    // `timeout_at` would poll the call once even past its deadline, which may send it.
    if Instant::now() >= deadline {
        return out_of_time();
    }
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| out_of_time())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn no_slack_call_starts_once_the_deadline_has_passed() {
        let started = AtomicBool::new(false);
        let call = async {
            started.store(true, Ordering::SeqCst);
            Ok::<_, SlackError>(())
        };
        let passed = Instant::now() - std::time::Duration::from_millis(1);
        let result = within(passed, "chat.postMessage", call).await;
        assert!(result.is_err());
        assert!(!started.load(Ordering::SeqCst), "the post was started");
        // Before the deadline, it runs.
        let later = Instant::now() + std::time::Duration::from_secs(5);
        assert!(within(later, "chat.postMessage", async { Ok(()) })
            .await
            .is_ok());
    }
}
