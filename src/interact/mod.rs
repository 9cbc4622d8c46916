//! What clicks and the App Home do. The `snooze` control on a workspace's messages holds back
//! that workspace's notifications for the person until it ends, and posts a note (in the
//! thread clicked in) with an `unsnooze` button, which ends it. Only the DM's recipient can
//! act: anyone else gets an ephemeral note and nothing changes. Opening the app's Home tab
//! (`app_home_opened`) publishes the person's snoozes (with `unsnooze`) and workspaces. This
//! runs after Socket Mode acked the envelope, so Slack never waits for it, and each envelope
//! reaches it once. The buttons that act on the workspace in Coder are in [`acting`], and what a
//! click on one is held to when it comes in [`at_click`].

mod acting;
mod at_click;
mod home;

use crate::cards::CardEdits;
use crate::coder_api::CoderApi;
use crate::config::Threads;
use crate::render::{self, SNOOZES};
use crate::slack::SlackApi;
use crate::socket_mode::envelope::Envelope;
use crate::socket_mode::{DefaultHandler, EnvelopeHandler};
use crate::state::{Store, ThreadKey};
use crate::telemetry::Metrics;
use futures_util::future::BoxFuture;
use serde_json::Value;
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Handles clicks on the bridge's messages; counts and logs every envelope as before.
pub struct Interact {
    api: Arc<SlackApi>,
    store: Store,
    /// The one path that edits workspaces' cards.
    cards: Arc<CardEdits>,
    counter: DefaultHandler,
    metrics: Metrics,
    /// The workspace's page when Coder refuses an act.
    coder_url: Option<url::Url>,
    /// The one path that publishes people's App Homes.
    homes: home::HomePublisher,
    /// Coder's API, for the buttons that act (`CODER_TOKEN`).
    coder: Option<Arc<CoderApi>>,
}

/// One click on a snooze control or an unsnooze button.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Click {
    user: String,
    /// The DM clicked in; `None` on the App Home (the clicker's own).
    channel: Option<String>,
    message_ts: String,
    /// The thread clicked in (the message's own ts when it is top-level).
    thread_ts: String,
    owner: String,
    workspace: String,
    /// `Some(how long)` for a snooze, `None` for unsnooze.
    snooze_for: Option<Duration>,
}

impl Interact {
    pub fn new(
        api: Arc<SlackApi>,
        store: Store,
        cards: Arc<CardEdits>,
        metrics: Metrics,
        coder_url: Option<url::Url>,
    ) -> Self {
        Interact {
            homes: home::HomePublisher::new(api.clone(), store.clone(), coder_url.clone()),
            api,
            store,
            cards,
            counter: DefaultHandler::new(metrics.clone()),
            metrics,
            coder_url,
            coder: None,
        }
    }

    /// How notifications arrive (`THREADS`), for the App Home.
    pub fn with_threads(mut self, threads: Threads) -> Self {
        self.homes.threads = threads;
        self
    }

    /// Carries out clicks on the buttons that act on Coder through `coder`.
    pub fn with_coder(mut self, coder: Arc<CoderApi>) -> Self {
        // Every action and outcome shows from the start, at 0.
        for act in crate::act::Act::ALL {
            for outcome in acting::OUTCOMES {
                let labels = crate::telemetry::CoderActionLabels {
                    action: act.name(),
                    outcome,
                };
                let _ = self.metrics.coder_actions.get_or_create(&labels);
            }
        }
        self.coder = Some(coder);
        self
    }

    async fn act(&self, click: Click) {
        let Some(channel) = click.channel.clone() else {
            // On the App Home, which is the clicker's own: only unsnooze is offered there.
            if click.snooze_for.is_none() {
                self.unsnooze_from_home(&click).await;
            }
            return;
        };
        if !self.is_recipient(&click.user, &channel).await {
            let note = "Only the person these notifications are for can snooze them.";
            let thread = Some(click.thread_ts.as_str());
            let posted = self.api.post_ephemeral(&channel, &click.user, thread, note);
            if let Err(e) = posted.await {
                tracing::debug!(error = %e, "the note to someone else's click was not shown");
            }
            tracing::info!(user = %click.user, "a click on someone else's notifications changed nothing");
            return;
        }
        let key = ThreadKey {
            slack_user: click.user.clone(),
            owner: click.owner.clone(),
            workspace: click.workspace.clone(),
        };
        let done = match click.snooze_for {
            Some(length) => self.snooze(&click, &channel, &key, length).await,
            None => self.unsnooze(&click, &channel, &key).await,
        };
        match done {
            // The card shows the snooze (or its end), rendered from the store.
            Ok(()) => self.cards.refresh(&key).await,
            Err(e) => {
                tracing::warn!(user = %click.user, workspace = %click.workspace, error = %e, "a click could not be carried out")
            }
        }
    }

    /// Whether the clicker is the person the DM is with: their DM channel is the one the
    /// click came from.
    async fn is_recipient(&self, user: &str, clicked_in: &str) -> bool {
        if let Ok(Some(channel)) = self.store.dm_channel(user).await {
            return channel == clicked_in;
        }
        match self.api.open_dm(&SlackUserId(user.to_owned())).await {
            Ok(channel) => {
                let _ = self.store.learn_dm_channel(user, &channel).await;
                channel == clicked_in
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whose DM a click came from; nothing changed");
                false
            }
        }
    }

    async fn snooze(
        &self,
        click: &Click,
        channel: &str,
        key: &ThreadKey,
        length: Duration,
    ) -> Result<(), String> {
        let until = SystemTime::now() + length;
        self.store
            .snooze(key, until)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(user = %click.user, workspace = %key.workspace, until = %render::utc_time(until), "workspace snoozed");
        let note = snoozed_note(key, until);
        let request = SlackApiChatPostMessageRequest::new(SlackChannelId(channel.to_owned()), note)
            .with_thread_ts(SlackTs(click.thread_ts.clone()));
        self.api
            .post_message(&request)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Ends the snooze. The note the click came from says so; the card (when the click was
    /// on it) is never replaced by the note: it shows the snooze's end itself, and a note
    /// that cannot be edited becomes an ephemeral one.
    async fn unsnooze(&self, click: &Click, channel: &str, key: &ThreadKey) -> Result<(), String> {
        self.store.unsnooze(key).await.map_err(|e| e.to_string())?;
        tracing::info!(user = %click.user, workspace = %key.workspace, "workspace unsnoozed");
        let text = format!(
            "Notifications about {} are on again.",
            render::mrkdwn::escape(&key.workspace)
        );
        let on_card = match self.store.card(key).await {
            Ok(view) => view.is_some_and(|v| v.thread.card_ts == click.message_ts),
            // Unknown: leave the clicked message alone rather than risk the card.
            Err(_) => true,
        };
        let edited = match on_card {
            true => Err("the click was on the card".to_owned()),
            false => {
                let content = SlackMessageContent::new().with_text(text.clone());
                let update = self.api.update_message(channel, &click.message_ts, content);
                update.await.map_err(|e| e.to_string())
            }
        };
        if edited.is_err() {
            let thread = Some(click.thread_ts.as_str());
            let note = self.api.post_ephemeral(channel, &click.user, thread, &text);
            if let Err(e) = note.await {
                tracing::debug!(error = %e, "the note that notifications are on again was not shown");
            }
        }
        Ok(())
    }
}

impl Interact {
    /// Ends a snooze from the App Home, and shows the Home again without it.
    async fn unsnooze_from_home(&self, click: &Click) {
        let key = ThreadKey {
            slack_user: click.user.clone(),
            owner: click.owner.clone(),
            workspace: click.workspace.clone(),
        };
        match self.store.unsnooze(&key).await {
            Ok(_) => {
                tracing::info!(user = %click.user, workspace = %key.workspace, "workspace unsnoozed from the App Home");
                self.cards.refresh(&key).await;
            }
            Err(e) => tracing::warn!(error = %e, "a click could not be carried out"),
        }
        self.homes.publish(&click.user).await;
    }
}

/// The user whose Home tab was opened, from an `app_home_opened` event.
fn home_opened(envelope: &Envelope) -> Option<&str> {
    let event = envelope.payload.get("event")?;
    let home = event.get("type")?.as_str()? == "app_home_opened"
        && event.get("tab").and_then(Value::as_str).unwrap_or("home") == "home";
    home.then(|| event.get("user")?.as_str()).flatten()
}

impl EnvelopeHandler for Interact {
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.counter.record(&envelope);
            if envelope.kind == "events_api" {
                if let Some(user) = home_opened(&envelope) {
                    self.homes.publish(user).await;
                }
                return;
            }
            let is_click =
                envelope.kind == "interactive" && envelope.payload_type() == Some("block_actions");
            if !is_click {
                return;
            }
            if let Some(click) = acting::ActClick::parse(&envelope.payload) {
                self.act_on_coder(click).await;
            } else if let Some(click) = Click::parse(&envelope.payload) {
                self.act(click).await;
            }
        })
    }
}

impl Click {
    /// A snooze or unsnooze click from a `block_actions` payload; `None` for anything else.
    fn parse(payload: &Value) -> Option<Click> {
        let text = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str);
        let action = payload.get("actions")?.as_array()?.first()?;
        let (snooze_for, target) = match action.get("action_id")?.as_str()? {
            "snooze" => {
                let value = action.pointer("/selected_option/value")?.as_str()?;
                let (code, target) = value.split_once(':')?;
                let (_, _, secs) = SNOOZES.iter().find(|(c, _, _)| *c == code)?;
                (Some(Duration::from_secs(*secs)), target)
            }
            "unsnooze" => (None, action.get("value")?.as_str()?),
            _ => return None,
        };
        let (owner, workspace) = target.split_once('/')?;
        let from_home = text("/container/type") == Some("view");
        let message_ts = text("/container/message_ts").unwrap_or_default().to_owned();
        let channel = text("/container/channel_id").or(text("/channel/id"));
        if !from_home && (channel.is_none() || message_ts.is_empty()) {
            return None;
        }
        Some(Click {
            user: text("/user/id")?.to_owned(),
            channel: (!from_home).then(|| channel.map(str::to_owned)).flatten(),
            thread_ts: text("/container/thread_ts")
                .unwrap_or(&message_ts)
                .to_owned(),
            message_ts,
            owner: owner.to_owned(),
            workspace: workspace.to_owned(),
            snooze_for,
        })
    }
}

/// The note a snooze posts: until when, and the `unsnooze` button.
fn snoozed_note(key: &ThreadKey, until: SystemTime) -> SlackMessageContent {
    let workspace = render::mrkdwn::escape(&key.workspace);
    let text = format!(
        "Notifications about *{workspace}* are snoozed until {}.",
        render::when(until)
    );
    let button = SlackBlockButtonElement::new(pt!("Unsnooze"))
        .with_action_id(SlackActionId("unsnooze".into()))
        .with_value(format!("{}/{}", key.owner, key.workspace));
    SlackMessageContent::new()
        .with_text(text.clone())
        .with_blocks(vec![
            SlackBlock::Section(SlackSectionBlock::new().with_text(md!(text))),
            SlackBlock::Actions(SlackActionsBlock::new(vec![button.into()])),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snooze_and_unsnooze_clicks_are_parsed_and_others_are_not() {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": "UBOBBY"},
            "container": {"type": "message", "channel_id": "DBOBBY", "message_ts": "2.0", "thread_ts": "1.0"},
            "actions": [{"action_id": "snooze", "type": "overflow", "selected_option": {"value": "1d:bobby/dev"}}],
        });
        let click = Click::parse(&payload).expect("a snooze");
        assert_eq!(click.snooze_for, Some(Duration::from_secs(86_400)));
        assert_eq!(
            (click.owner.as_str(), click.workspace.as_str()),
            ("bobby", "dev")
        );
        assert_eq!(
            (click.channel.as_deref(), click.thread_ts.as_str()),
            (Some("DBOBBY"), "1.0")
        );

        let mut unsnooze = payload.clone();
        unsnooze["actions"] = json!([{"action_id": "unsnooze", "value": "bobby/dev"}]);
        unsnooze["container"] = json!({"channel_id": "DBOBBY", "message_ts": "3.0"});
        let click = Click::parse(&unsnooze).expect("an unsnooze");
        assert_eq!((click.snooze_for, click.thread_ts.as_str()), (None, "3.0"));

        for actions in [
            json!([{"action_id": "coder_action_0"}]),
            json!([{"action_id": "snooze", "selected_option": {"value": "9y:bobby/dev"}}]),
            json!([{"action_id": "snooze", "selected_option": {"value": "1h:no-slash"}}]),
            json!("nope"),
        ] {
            let mut other = payload.clone();
            other["actions"] = actions;
            assert_eq!(Click::parse(&other), None);
        }
    }
}
