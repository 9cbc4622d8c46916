//! Where a notification goes in the person's DM: its workspace's thread, under a card made
//! once per (recipient, owner, workspace) and edited to show the latest notification, or the
//! DM itself. Urgent kinds in a thread are broadcast to the conversation too.

use super::poster::{Attempt, Part, Post};
use super::{Delivery, Recipient, RetryLater, BUSY_POLL, MAX_BUSY_POLL};
use crate::coder::Notification;
use crate::kinds::{self, Kind};
use crate::render;
use crate::slack::SlackError;
use crate::state::{SnoozeMet, Thread, ThreadClaim, ThreadKey, Token};
use slack_morphism::prelude::*;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Where one notification is posted.
pub(super) struct Place {
    channel: SlackChannelId,
    /// The workspace's thread, when it goes in one.
    pub thread: Option<Thread>,
    /// Shown in the conversation as well as in the thread.
    broadcast: bool,
    /// The card was made for this notification, so it shows it already.
    pub card_is_new: bool,
}

impl Place {
    /// The person's DM, top level (a post to a user ID goes to the app's DM with them).
    pub fn dm(user: &SlackUserId) -> Place {
        Place {
            channel: SlackChannelId(user.0.clone()),
            thread: None,
            broadcast: false,
            card_is_new: false,
        }
    }

    /// The notification's post here.
    pub fn post<'a>(&'a self, notification: &'a Notification) -> Post<'a> {
        Post {
            notification,
            part: Part::Notification,
            channel: self.channel.clone(),
            thread: self
                .thread
                .as_ref()
                .map(|t| (t.card_ts.as_str(), self.broadcast)),
        }
    }
}

/// A workspace's snooze, as a delivery finds it.
pub(super) enum Snooze {
    /// On: the notification is held back.
    On,
    /// Off; when one just ended, the note saying how many it held back.
    Ended(Option<String>),
}

/// Why a notification could not be placed.
pub(super) enum Failed {
    /// Slack refused or failed (its class decides the answer).
    Slack(SlackError),
    /// Try again later (the store failed, or another delivery is making the card).
    Later(RetryLater),
}

impl Delivery {
    /// The recipient's own workspace `notification` is about, for `user`: its thread (with
    /// `THREADS=workspace`) and its snooze are keyed on it. An admin's copy of an event about
    /// someone else's workspace has none: it goes top-level, and the thread stays the owner's.
    pub(super) fn workspace_key(
        &self,
        notification: &Notification,
        user: &SlackUserId,
    ) -> Option<ThreadKey> {
        let workspace = kinds::own_workspace_of(notification)?;
        Some(ThreadKey {
            slack_user: user.0.clone(),
            owner: workspace.owner.to_owned(),
            workspace: workspace.name.to_owned(),
        })
    }

    /// The workspace a delivery of `notification` will read the snooze and thread of, when
    /// its person is known without asking Slack: the claim reads them in its round trip.
    pub(super) async fn look_ahead(&self, notification: &Notification) -> Option<ThreadKey> {
        let directory = self.directory()?;
        kinds::own_workspace_of(notification)?;
        let user = directory.cached(&notification.user_email).await?;
        self.workspace_key(notification, &user)
    }

    /// The thread for `key`: found by the claim, known to the store, or its card posted now.
    pub(super) async fn thread_place(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        key: &ThreadKey,
    ) -> Result<Place, Failed> {
        let (thread, card_is_new) = match to.attempt.take_looked_thread(key) {
            Some(thread) => (thread, false),
            None => self.claim_thread(to, user, key).await?,
        };
        Ok(Place {
            channel: SlackChannelId(thread.channel.clone()),
            thread: Some(thread),
            broadcast: Kind::of(to.notification).is_some_and(|k| k.urgent),
            card_is_new,
        })
    }

    /// `key`'s thread as the store has it, or its card posted now (with `true`). A card
    /// another delivery is posting is waited for, so notifications at once share one thread.
    async fn claim_thread(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        key: &ThreadKey,
    ) -> Result<(Thread, bool), Failed> {
        let mut poll = BUSY_POLL;
        loop {
            let claim = self.store.claim_thread(key, self.policy.lease).await;
            return match claim.map_err(|e| Failed::Later(self.store_failed(&e)))? {
                ThreadClaim::Found(thread) => Ok((thread, false)),
                ThreadClaim::Ours(token) => {
                    Ok((self.make_card(to, user, key, &token).await?, true))
                }
                ThreadClaim::Busy if Instant::now() + poll <= to.deadline => {
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(MAX_BUSY_POLL);
                    continue;
                }
                ThreadClaim::Busy => Err(Failed::Later(RetryLater {
                    reason: "another delivery is starting this workspace's thread".into(),
                    retry_after: Duration::from_secs(5),
                    trouble: Some(super::Trouble::Busy),
                })),
            };
        }
    }

    /// Whether `key`'s recipient snoozed the workspace: counts a held-back notification, or
    /// ends a snooze that ran out and says what it held back.
    pub(super) async fn snooze_check(
        &self,
        key: &ThreadKey,
        attempt: &Attempt,
    ) -> Result<Snooze, RetryLater> {
        if attempt.looked_snoozed(key) == Some(false) {
            return Ok(Snooze::Ended(None)); // the claim found none: nothing to meet
        }
        let met = self.store.meet_snooze(key).await;
        let held = match met.map_err(|e| self.store_failed(&e))? {
            SnoozeMet::On(until) => {
                self.metrics.snoozed.inc();
                tracing::info!(workspace = %key.workspace, until = %crate::render::utc_time(until), "held back: the person snoozed this workspace");
                return Ok(Snooze::On);
            }
            SnoozeMet::Ended(held) => held,
            SnoozeMet::None => 0,
        };
        Ok(Snooze::Ended((held > 0).then(|| {
            let (noun, verb) = match held {
                1 => ("notification", "was"),
                _ => ("notifications", "were"),
            };
            format!("{held} {noun} about this workspace {verb} held back while it was snoozed.")
        })))
    }

    /// Posts the workspace's card (top level, exactly once: found again by its metadata if
    /// the answer is lost) and records it.
    async fn make_card(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        key: &ThreadKey,
        token: &Token,
    ) -> Result<Thread, Failed> {
        let post = Post {
            notification: to.notification,
            part: Part::Card,
            channel: SlackChannelId(user.0.clone()),
            thread: None,
        };
        let card = fresh_card(key, to.notification, to.attempt.happened_at());
        match to.post(&post, card).await {
            Ok(posted) => {
                let thread = Thread {
                    channel: posted.channel,
                    card_ts: posted.ts,
                };
                // Unrecorded, the card still serves this notification; the next one makes
                // a new card once this claim's lease ends.
                if let Err(e) = self.store.set_thread(key, token, &thread).await {
                    self.note_store_error(&e);
                }
                Ok(thread)
            }
            Err(e) => {
                if let Err(e) = self.store.release_thread(key, token).await {
                    self.note_store_error(&e);
                }
                Err(Failed::Slack(e))
            }
        }
    }

    /// Notes that the workspace's card now shows this notification: recorded with the done
    /// mark (for the card and the App Home), after which the card is edited to show it
    /// ([`Delivery::edit_card`]) unless it was made for this notification.
    pub(super) fn show_on_card(&self, key: &ThreadKey, to: &Recipient<'_>, card_is_new: bool) {
        let latest = render::latest_of(to.notification);
        to.attempt.show_on_card(key, latest, card_is_new);
    }

    /// Has the card `attempt` showed its notification on show it (soon: the one path that
    /// edits cards coalesces a burst, see `cards`), once the store records what it shows.
    pub(super) async fn edit_card(&self, attempt: &Attempt) {
        if let (Some(key), Some(cards)) = (attempt.card_to_edit(), self.cards()) {
            cards.refresh(&key).await;
        }
    }

    /// Forgets a card Slack no longer has: the next notification starts a new thread.
    pub(super) async fn forget_thread(&self, key: &ThreadKey, thread: &Thread) {
        tracing::info!(workspace = %key.workspace, "the workspace's card is gone from Slack; a new thread starts");
        if let Err(e) = self.store.forget_thread(key, &thread.card_ts).await {
            self.note_store_error(&e);
        }
    }
}

/// The card for `key` showing `notification`, which Coder sent `at` (a workspace being
/// posted to is not snoozed).
fn fresh_card(key: &ThreadKey, notification: &Notification, at: SystemTime) -> SlackMessageContent {
    render::card(&render::CardState {
        workspace: &key.workspace,
        owner: &key.owner,
        latest: &render::latest_of(notification),
        at,
        snoozed_until: None,
    })
}
