//! What clicks do. The `snooze` control on a workspace's messages holds back that workspace's
//! notifications for the person until it ends, and posts a note (in the thread clicked in)
//! with an `unsnooze` button, which ends it. Only the DM's recipient can act: anyone else gets
//! an ephemeral note and nothing changes. This runs after Socket Mode acked the envelope, so
//! Slack never waits for it, and each envelope reaches it once.

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
    counter: DefaultHandler,
}

/// One click on a snooze control or an unsnooze button.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Click {
    user: String,
    channel: String,
    message_ts: String,
    /// The thread clicked in (the message's own ts when it is top-level).
    thread_ts: String,
    owner: String,
    workspace: String,
    /// `Some(how long)` for a snooze, `None` for unsnooze.
    snooze_for: Option<Duration>,
}

impl Interact {
    pub fn new(api: Arc<SlackApi>, store: Store, metrics: Metrics) -> Self {
        Interact {
            api,
            store,
            counter: DefaultHandler::new(metrics),
        }
    }

    async fn act(&self, click: Click) {
        if !self.is_recipient(&click).await {
            let note = "Only the person these notifications are for can snooze them.";
            if let Err(e) = self
                .api
                .post_ephemeral(&click.channel, &click.user, note)
                .await
            {
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
            Some(length) => self.snooze(&click, &key, length).await,
            None => self.unsnooze(&click, &key).await,
        };
        if let Err(e) = done {
            tracing::warn!(user = %click.user, workspace = %click.workspace, error = %e, "a click could not be carried out");
        }
    }

    /// Whether the clicker is the person the DM is with: their DM channel is the one the
    /// click came from.
    async fn is_recipient(&self, click: &Click) -> bool {
        if let Ok(Some(channel)) = self.store.dm_channel(&click.user).await {
            return channel == click.channel;
        }
        match self.api.open_dm(&SlackUserId(click.user.clone())).await {
            Ok(channel) => {
                let _ = self.store.learn_dm_channel(&click.user, &channel).await;
                channel == click.channel
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whose DM a click came from; nothing changed");
                false
            }
        }
    }

    async fn snooze(&self, click: &Click, key: &ThreadKey, length: Duration) -> Result<(), String> {
        let until = SystemTime::now() + length;
        self.store
            .snooze(key, until)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(user = %click.user, workspace = %key.workspace, until = %render::utc_time(until), "workspace snoozed");
        let note = snoozed_note(key, until);
        let request =
            SlackApiChatPostMessageRequest::new(SlackChannelId(click.channel.clone()), note)
                .with_thread_ts(SlackTs(click.thread_ts.clone()));
        self.api
            .post_message(&request)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn unsnooze(&self, click: &Click, key: &ThreadKey) -> Result<(), String> {
        self.store.unsnooze(key).await.map_err(|e| e.to_string())?;
        tracing::info!(user = %click.user, workspace = %key.workspace, "workspace unsnoozed");
        let text = format!(
            "Notifications about {} are on again.",
            render::mrkdwn::escape(&key.workspace)
        );
        let content = SlackMessageContent::new().with_text(text);
        self.api
            .update_message(&click.channel, &click.message_ts, content)
            .await
            .map_err(|e| e.to_string())
    }
}

impl EnvelopeHandler for Interact {
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.counter.record(&envelope);
            let is_click =
                envelope.kind == "interactive" && envelope.payload_type() == Some("block_actions");
            if let Some(click) = is_click.then(|| Click::parse(&envelope.payload)).flatten() {
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
        let message_ts = text("/container/message_ts")?.to_owned();
        Some(Click {
            user: text("/user/id")?.to_owned(),
            channel: text("/container/channel_id")
                .or(text("/channel/id"))?
                .to_owned(),
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
    let secs = until
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let workspace = render::mrkdwn::escape(&key.workspace);
    let text = format!(
        "Notifications about *{workspace}* are snoozed until <!date^{secs}^{{date_short_pretty}} at {{time}}|{}>.",
        render::utc_time(until)
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
            (click.channel.as_str(), click.thread_ts.as_str()),
            ("DBOBBY", "1.0")
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
