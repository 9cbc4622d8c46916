//! A notification's way to its person in Slack: find them, meet their snooze, render (with
//! the button that acts, when there is one), post where it belongs (the workspace's thread
//! or the DM) through the exactly-once poster, and turn the outcome into Coder's answer.

use super::poster::{Part, Post, Posted};
use super::thread::{Failed, Place, Snooze};
use super::{Delivery, Outcome, Recipient, RetryLater, Threads, Trouble, DEFAULT_RETRY_AFTER};
use crate::coder::Notification;
use crate::kinds::{self, Secret};
use crate::render;
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackError};
use crate::state::ThreadKey;
use slack_morphism::prelude::*;

impl Delivery {
    /// Delivers `to`'s notification where it goes: a route's channel (`ROUTES_FILE`), else
    /// (and also, with `dm = true`) the person's DM.
    pub(super) async fn deliver_to_slack(
        &self,
        directory: &Directory,
        to: &Recipient<'_>,
    ) -> Result<Outcome, RetryLater> {
        let routes = self.policy.routes.as_deref();
        let route = routes.and_then(|routes| routes.route_for(to.notification));
        match route.and_then(|route| Some((route, route.channel.id()?))) {
            Some((route, channel)) => self.deliver_routed(directory, to, route, channel).await,
            None => self.deliver_to_person(directory, to).await,
        }
    }

    /// Delivers `to`'s notification to the person: their workspace's thread or their DM.
    pub(super) async fn deliver_to_person(
        &self,
        directory: &Directory,
        to: &Recipient<'_>,
    ) -> Result<Outcome, RetryLater> {
        let notification = to.notification;
        let user = to
            .poster
            .retry(to.deadline)
            .run(SlackError::verdict, || {
                super::poster::within(
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
            Some(key) => match self.snooze_check(key, to.attempt).await? {
                Snooze::On => return Ok(Outcome::Snoozed),
                Snooze::Ended(Some(note)) => {
                    to.attempt.show_snooze(key);
                    Some(note)
                }
                Snooze::Ended(None) => None,
            },
            None => None,
        };
        let offer = self.offer_for(notification).await;
        let note = late_note(to.attempt.waited_since(), note);
        let rendered = render::render_offering(
            notification,
            &self.policy.render,
            note.as_deref(),
            offer.as_ref(),
        );
        log_skipped(notification, &rendered.skipped_actions);
        let thread = workspace.filter(|_| self.policy.threads == Threads::Workspace);
        self.place_and_post(to, &user, thread.as_ref(), &rendered.content)
            .await
    }

    /// Posts where the notification belongs, starting a new thread once when its card is
    /// gone from Slack, then shows it on the card and says what Coder is told.
    async fn place_and_post(
        &self,
        to: &Recipient<'_>,
        user: &SlackUserId,
        thread: Option<&ThreadKey>,
        content: &SlackMessageContent,
    ) -> Result<Outcome, RetryLater> {
        let mut placed = self.post_placed(to, user, thread, content).await;
        if let (Err(Failed::Slack(gone)), Some(_)) = (&placed, thread) {
            if gone.is_gone() {
                // The card or its thread was deleted: start a new one, once.
                placed = self.post_placed(to, user, thread, content).await;
            }
        }
        match placed {
            Ok((place, posted, refusal)) => {
                if let (Ok(_), Some(key), Some(_)) = (&posted, thread, &place.thread) {
                    self.show_on_card(key, to, place.card_is_new);
                }
                self.outcome(to, posted, refusal).await
            }
            Err(Failed::Slack(e)) => {
                let refusal = "Slack will not deliver this message to the user";
                self.outcome(to, Err(e), refusal).await
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
    ) -> Result<(Place, Result<Posted, SlackError>, &'static str), Failed> {
        let place = match thread {
            Some(key) => self.thread_place(to, user, key).await?,
            None => Place::dm(user),
        };
        let post = place.post(to.notification);
        let (posted, refusal) = match self.post_or_plain_text(to, &post, content.clone()).await {
            (posted, true) => (posted, "Slack refused this message, even as plain text"),
            (posted, false) => (posted, "Slack will not deliver this message to the user"),
        };
        if let (Err(e), Some(key), Some(card)) = (&posted, thread, &place.thread) {
            if e.is_gone() {
                self.forget_thread(key, card).await;
                return Err(Failed::Slack(e.clone()));
            }
        }
        Ok((place, posted, refusal))
    }

    /// Posts `content` as `post`; when Slack refuses the message as built (the bridge's
    /// fault, not the reader's), the same notification as plain text rather than nothing.
    /// With whether it came to plain text.
    pub(super) async fn post_or_plain_text(
        &self,
        to: &Recipient<'_>,
        post: &Post<'_>,
        content: SlackMessageContent,
    ) -> (Result<Posted, SlackError>, bool) {
        match to.post(post, content).await {
            Err(refused) if refused.class() == ErrorClass::BadMessage => {
                self.note_refused_message(to.notification, &refused);
                let plain = render::plain_text(to.notification, &self.policy.render);
                (to.post(post, plain).await, true)
            }
            posted => (posted, false),
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
        posted: Result<Posted, SlackError>,
        refusal: &str,
    ) -> Result<Outcome, RetryLater> {
        match posted {
            Ok(Posted { channel, ts }) => Ok(Outcome::Delivered { channel, ts }),
            Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadMessage) => {
                let reason = format!("{}: {refusal}", e.code());
                self.undeliverable(to, &reason).await
            }
            Err(e) => Err(retry_later(&e)),
        }
    }

    /// The person cannot be reached: say so, and post to the fallback channel when there is one.
    async fn undeliverable(&self, to: &Recipient<'_>, reason: &str) -> Result<Outcome, RetryLater> {
        let notification = to.notification;
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, reason, "notification is undeliverable");
        let code = reason.split(':').next().unwrap_or(reason);
        let note = format!(
            "Intended for {}, who could not be reached in Slack ({code}).",
            notification.user_email,
        );
        self.to_fallback(to, reason, code, &note).await
    }

    /// Posts a notification that cannot reach its person to `FALLBACK_CHANNEL`, when set,
    /// with `note` saying why (`code`, in short, when it carries a secret and only a note
    /// goes); `reason` is what Coder is told.
    pub(super) async fn to_fallback(
        &self,
        to: &Recipient<'_>,
        reason: &str,
        code: &str,
        note: &str,
    ) -> Result<Outcome, RetryLater> {
        let notification = to.notification;
        let Some(channel) = &self.policy.fallback_channel else {
            return Ok(Outcome::Undeliverable {
                reason: reason.to_owned(),
                fallback_channel: None,
            });
        };
        let content = match kinds::secret_of(notification) {
            // Anyone in the channel could use the code or the link: a note, no more.
            Some(secret) => secret_withheld(notification, secret, code),
            None => {
                render::render_for_channel(notification, &self.policy.render, Some(note)).content
            }
        };
        let post = Post {
            notification,
            part: Part::Notification,
            channel: SlackChannelId(channel.clone()),
            thread: None,
        };
        match to.post(&post, content).await {
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
}

/// What a shared channel is told of a notification that carries a secret and could not
/// reach its recipient: that it could not, for whom and why; never the notification itself.
fn secret_withheld(notification: &Notification, secret: Secret, code: &str) -> SlackMessageContent {
    let address = render::mrkdwn::escape(&notification.user_email);
    let text = match secret {
        Secret::OneTimePasscode => format!(
            "A one-time passcode for {address} could not be delivered in Slack ({code}). \
             It is not shown here: the code and its link let whoever has them reset the password."
        ),
        Secret::Labelled => format!(
            "A notification for {address} ({}) could not be delivered in Slack ({code}). \
             It carries a secret, so it is not shown here.",
            render::mrkdwn::escape(&notification.notification_name)
        ),
    };
    SlackMessageContent::new().with_text(text)
}

/// The note a notification that waited in the outbox carries (when Coder sent it), before
/// any other.
fn late_note(waited_since: Option<std::time::SystemTime>, note: Option<String>) -> Option<String> {
    let Some(sent_at) = waited_since else {
        return note;
    };
    let late = format!(
        "Sent by Coder at {}; it waited in the bridge's outbox while Slack was unavailable.",
        render::utc_time(sent_at)
    );
    Some(match note {
        Some(note) => format!("{late} {note}"),
        None => late,
    })
}

fn log_skipped(notification: &Notification, skipped: &[render::SkippedAction]) {
    for s in skipped {
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, action = s.index, reason = s.reason, "button left out");
    }
}

/// A Slack failure that retrying later may fix; configuration errors are logged with the fix.
pub(super) fn retry_later(error: &SlackError) -> RetryLater {
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
    let trouble = match error.class() {
        ErrorClass::RateLimited(_) => Trouble::Busy,
        _ => Trouble::SlackDown,
    };
    RetryLater {
        reason: format!("slack: {error}"),
        retry_after,
        trouble: Some(trouble),
    }
}
