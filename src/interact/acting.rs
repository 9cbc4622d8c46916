//! Clicks on the buttons that act on Coder: extend, start, keep. The clicker must be the DM's
//! recipient; the message must be recent, the Coder account active and the workspace still
//! its own at the click ([`super::at_click`]); otherwise an ephemeral note says why and Coder
//! is not acted on. A click is recorded as in flight before Coder is called and as done once
//! its outcome is shown, so an envelope Slack delivers again (to this replica or another) is
//! never carried out twice, and one that finds a click its process died in the middle of says
//! the outcome is unknown instead of staying silent. The outcome edits the clicked message; a
//! refusal is an ephemeral note with Coder's message and a link to the workspace in the
//! dashboard.

use super::at_click::{self, Stop};
use super::Interact;
use crate::act::{Act, ActTarget};
use crate::coder_api::{Acted, CoderApi, CoderError};
use crate::render;
use crate::render::mrkdwn::escape;
use crate::state::{Claim, MsgKey, ThreadKey, Token};
use crate::telemetry::CoderActionLabels;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// What a click can come to, as `coder_actions_total{outcome}` says it.
pub(super) const OUTCOMES: [&str; 11] = [
    "done",
    "unchanged",
    "already_later",
    "refused",
    "token_refused",
    "failed",
    "unreachable",
    "not_allowed",
    "expired",
    "repeated",
    "unknown",
];

/// How long past Coder's own timeouts a click may stay in flight before a redelivery of its
/// envelope takes it for one whose process died: the Slack calls around them.
const CLICK_LEASE_MARGIN: Duration = Duration::from_secs(60);

/// What claiming a click in the store found.
enum Claimed {
    /// New: carry it out, then mark it done with the token (`None` when the store cannot
    /// say; see [`Interact::claim_click`]).
    Ours(Option<Token>),
    /// Begun by a process that died before it was done: Coder may or may not have acted.
    LeftInFlight(Token),
    /// Being carried out, or carried out already.
    Repeated,
}

/// One click on an act's button.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ActClick {
    act: Act,
    target: ActTarget,
    user: String,
    channel: String,
    message_ts: String,
    /// The thread clicked in, for notes.
    thread_ts: Option<String>,
    /// Slack's time of this click: the same in every delivery of its envelope.
    action_ts: String,
    /// The clicked message's `text` and `blocks` as Slack sent them, to edit.
    text: String,
    blocks: Option<Value>,
}

impl ActClick {
    /// An act's click from a `block_actions` payload; `None` for anything else.
    pub(super) fn parse(payload: &Value) -> Option<ActClick> {
        let text = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str);
        let action = payload.get("actions")?.as_array()?.first()?;
        let act = Act::from_action_id(action.get("action_id")?.as_str()?)?;
        let target = ActTarget::parse(action.get("value")?.as_str()?)?;
        let message_ts = text("/container/message_ts")?.to_owned();
        Some(ActClick {
            act,
            target,
            user: text("/user/id")?.to_owned(),
            channel: text("/container/channel_id")
                .or(text("/channel/id"))?
                .to_owned(),
            thread_ts: text("/container/thread_ts").map(str::to_owned),
            action_ts: action
                .get("action_ts")
                .and_then(Value::as_str)
                .unwrap_or(&message_ts)
                .to_owned(),
            message_ts,
            text: text("/message/text").unwrap_or_default().to_owned(),
            blocks: payload.pointer("/message/blocks").cloned(),
        })
    }

    fn workspace(&self) -> String {
        format!("{}/{}", self.target.owner, self.target.name)
    }

    /// The click's key in the store (`click:USER:ACTION_TS:ACTION`): the same in every
    /// delivery of its envelope, and new for every click.
    fn key(&self) -> MsgKey {
        let key = format!(
            "click:{}:{}:{}",
            self.user,
            self.action_ts,
            self.act.action_id()
        );
        MsgKey::Other(key.into())
    }
}

impl Interact {
    pub(super) async fn act_on_coder(&self, click: ActClick) {
        let Some(coder) = self.coder.clone() else {
            let note = "This button needs CODER_TOKEN, which the bridge no longer has: open the workspace in Coder instead.";
            return self.note(&click, note).await;
        };
        let key = click.key();
        let token = match self.claim_click(&key, &coder).await {
            Claimed::Ours(token) => token,
            Claimed::LeftInFlight(token) => {
                self.outcome_unknown(&click).await;
                return self.mark_done(&key, Some(token)).await;
            }
            Claimed::Repeated => {
                self.count(&click, "repeated");
                tracing::debug!(user = %click.user, action = click.act.name(), "a click delivered again is being or was carried out already");
                return;
            }
        };
        self.carry_out(&coder, &click).await;
        self.mark_done(&key, token).await;
    }

    /// A new click: who clicked, what holds in Coder now, then the act; the outcome shown.
    async fn carry_out(&self, coder: &CoderApi, click: &ActClick) {
        if !self.is_recipient(&click.user, &click.channel).await {
            self.count(click, "not_allowed");
            tracing::info!(slack_user = %click.user, workspace = %click.workspace(), action = click.act.name(), outcome = "not_allowed", "a click on someone else's workspace; Coder was not called");
            let note = format!(
                "Only {} can {} this workspace from here.",
                escape(&click.target.owner),
                click.act.name()
            );
            return self.note(click, &note).await;
        }
        let checked = match at_click::expired(&click.message_ts, SystemTime::now()) {
            true => Err(Stop::Expired),
            false => at_click::may_act(coder, click.act, &click.target).await,
        };
        match checked {
            Ok(()) => self.act_now(coder, click).await,
            Err(stop) => self.stopped(click, stop).await,
        }
    }

    /// The one call that acts, and its outcome counted, logged and shown.
    async fn act_now(&self, coder: &CoderApi, click: &ActClick) {
        let result = coder.act(click.act, &click.target, &click.user).await;
        let outcome = match &result {
            Ok(Acted::Done) => "done",
            Ok(Acted::Unchanged) => "unchanged",
            Err(e) => e.outcome(),
        };
        self.count(click, outcome);
        match &result {
            Ok(_) => {
                tracing::info!(slack_user = %click.user, coder_user = %click.target.owner, workspace = %click.workspace(), action = click.act.name(), outcome, "acted on Coder")
            }
            Err(e) => {
                tracing::warn!(slack_user = %click.user, coder_user = %click.target.owner, workspace = %click.workspace(), action = click.act.name(), outcome, error = %e, "Coder did not act")
            }
        }
        match result {
            Ok(acted) => {
                let said = outcome_text(click, acted, SystemTime::now());
                self.show_outcome(click, &said).await;
                self.show_on_card(click, acted).await;
            }
            Err(e) => self.note(click, &self.refusal_note(click, &e)).await,
        }
    }

    /// A click that does not act: counted, logged, and the person told why (an extend that
    /// is not needed shows, as an outcome, until when the workspace runs).
    async fn stopped(&self, click: &ActClick, stop: Stop) {
        let outcome = stop.outcome();
        self.count(click, outcome);
        match &stop {
            Stop::Coder(e) => {
                tracing::warn!(slack_user = %click.user, coder_user = %click.target.owner, workspace = %click.workspace(), action = click.act.name(), outcome, error = %e, "cannot read from Coder whether a click may act; Coder was not acted on")
            }
            _ => {
                tracing::info!(slack_user = %click.user, coder_user = %click.target.owner, workspace = %click.workspace(), action = click.act.name(), outcome, why = %stop_reason(&stop), "a click did not act on Coder")
            }
        }
        match stop {
            Stop::AlreadyUntil(until) => self.show_outcome(click, &already_text(until)).await,
            other => self.note(click, &self.stop_note(click, &other)).await,
        }
    }

    /// A click whose process died while carrying it out: Coder may or may not have acted,
    /// so it is not tried again, and the person is sent to Coder to see.
    async fn outcome_unknown(&self, click: &ActClick) {
        self.count(click, "unknown");
        tracing::warn!(slack_user = %click.user, coder_user = %click.target.owner, workspace = %click.workspace(), action = click.act.name(), outcome = "unknown", "a click was left in flight by a bridge that stopped; not carried out again");
        let note = format!(
            "Whether *{}* was {} is unknown: the bridge stopped while carrying out this click, and it is not tried again.",
            escape(&click.target.name),
            past_tense(click.act)
        );
        self.note(click, &self.with_link(note, &click.target)).await;
    }

    /// Keeps the workspace's card current: it says what the click did, as it says what the
    /// latest notification was.
    async fn show_on_card(&self, click: &ActClick, acted: Acted) {
        let key = ThreadKey {
            slack_user: click.user.clone(),
            owner: click.target.owner.clone(),
            workspace: click.target.name.clone(),
        };
        let latest = outcome_latest(click, acted);
        if let Err(e) = self
            .store
            .set_latest(&key, &latest, SystemTime::now())
            .await
        {
            return tracing::warn!(error = %e, "the workspace's card could not be brought up to date");
        }
        // Rendered from the store, so a snooze in force stays shown: acting does not end one.
        self.cards.refresh(&key).await;
    }

    /// Records the click as in flight, for as long as its calls can take: Slack delivers an
    /// envelope again when its ack was lost, to this replica or another. When the store
    /// cannot say, the click goes ahead: Socket Mode already drops an envelope this process
    /// has seen, and the acts are safe to repeat (extend asks for one fixed deadline, and none
    /// earlier than the workspace's; keep is a no-op once kept; Coder refuses a start while a
    /// build runs).
    async fn claim_click(&self, key: &MsgKey, coder: &CoderApi) -> Claimed {
        let lease = coder.click_budget() + CLICK_LEASE_MARGIN;
        match self.store.claim(key, lease).await {
            Ok(Claim::Fresh(token)) => Claimed::Ours(Some(token)),
            Ok(Claim::TakenOver { token, .. }) => Claimed::LeftInFlight(token),
            Ok(Claim::Busy { .. } | Claim::Done) => Claimed::Repeated,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether a click was carried out already; going ahead");
                Claimed::Ours(None)
            }
        }
    }

    /// Marks the click carried out, for the dedupe window: its outcome is known and shown.
    async fn mark_done(&self, key: &MsgKey, token: Option<Token>) {
        let Some(token) = token else { return };
        if let Err(e) = self.store.finish(key, &token).await {
            tracing::warn!(error = %e, "a click could not be marked carried out");
        }
    }

    fn count(&self, click: &ActClick, outcome: &'static str) {
        let labels = CoderActionLabels {
            action: click.act.name(),
            outcome,
        };
        self.metrics.coder_actions.get_or_create(&labels).inc();
    }

    /// Edits the clicked message: the button gives way to what it did (`said`).
    async fn show_outcome(&self, click: &ActClick, said: &str) {
        let edited = click
            .blocks
            .as_ref()
            .and_then(|blocks| settled_blocks(blocks, click.act.action_id(), said));
        let Some(blocks) = edited else {
            return self.note(click, said).await;
        };
        let text = match click.text.is_empty() {
            true => said,
            false => &click.text,
        };
        let update =
            self.api
                .update_message_blocks(&click.channel, &click.message_ts, text, &blocks);
        if let Err(e) = update.await {
            tracing::warn!(error = %e, "the message could not be edited to show what the click did");
            self.note(click, said).await;
        }
    }

    /// Why nothing was done, in words for the person, with a link to do it in Coder.
    fn refusal_note(&self, click: &ActClick, error: &CoderError) -> String {
        let workspace = escape(&click.target.name);
        let what = match error {
            CoderError::Refused { message, .. } => {
                format!("Coder did not {} *{workspace}*: {}", click.act.name(), escape(message))
            }
            CoderError::TokenRefused { .. } => format!(
                "Nothing was done to *{workspace}*: Coder refused the bridge's token. Ask your Coder administrator to run `coder-slack-bridge check`."
            ),
            CoderError::Failed { message, .. } => format!(
                "Coder failed to {} *{workspace}* ({}); it may not have happened.",
                click.act.name(),
                escape(message)
            ),
            CoderError::Unreachable(_) => format!(
                "Coder did not answer, so *{workspace}* may not have been {}.",
                past_tense(click.act)
            ),
        };
        self.with_link(what, &click.target)
    }

    /// Why a click did not act, in words for the person; not for [`Stop::AlreadyUntil`],
    /// which is shown as an outcome.
    fn stop_note(&self, click: &ActClick, stop: &Stop) -> String {
        let workspace = escape(&click.target.name);
        let nothing = format!("Nothing was done to *{workspace}*:");
        let what = match stop {
            Stop::Expired => format!(
                "This message is over {} days old, so its button no longer acts on *{workspace}*.",
                at_click::MAX_AGE.as_secs() / 86_400
            ),
            Stop::Inactive(status) if status == "suspended" => {
                format!("{nothing} your Coder account is suspended.")
            }
            Stop::Inactive(status) if status == "dormant" => format!(
                "{nothing} your Coder account is dormant. Sign in to Coder to make it active, then click again."
            ),
            Stop::Inactive(status) => {
                format!("{nothing} your Coder account is {}, not active.", escape(status))
            }
            Stop::Gone => format!("{nothing} Coder no longer knows your account."),
            Stop::NotOwner => format!(
                "{nothing} it is no longer {}'s workspace in Coder.",
                escape(&click.target.owner)
            ),
            Stop::Coder(e @ (CoderError::Refused { .. } | CoderError::TokenRefused { .. })) => {
                return self.refusal_note(click, e)
            }
            Stop::Coder(CoderError::Failed { message, .. }) => format!(
                "{nothing} Coder failed to say whether it may be {} ({}).",
                past_tense(click.act),
                escape(message)
            ),
            Stop::Coder(_) => format!(
                "{nothing} Coder did not answer whether it may be {}.",
                past_tense(click.act)
            ),
            Stop::AlreadyUntil(until) => return already_text(*until),
        };
        match stop {
            Stop::Inactive(_) | Stop::Gone => what,
            _ => self.with_link(what, &click.target),
        }
    }

    /// `text`, then a link to the workspace in the dashboard when there is one.
    fn with_link(&self, text: String, target: &ActTarget) -> String {
        match self.dashboard_link(target) {
            Some(link) => format!("{text} <{link}|Open {} in Coder>", escape(&target.name)),
            None => text,
        }
    }

    /// `{CODER_URL}/@owner/workspace`, the workspace's page in the dashboard.
    fn dashboard_link(&self, target: &ActTarget) -> Option<url::Url> {
        let mut url = self.coder_url.clone()?;
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .push(&format!("@{}", target.owner))
            .push(&target.name);
        Some(url)
    }

    /// An ephemeral note to the clicker, where they clicked.
    async fn note(&self, click: &ActClick, text: &str) {
        let thread = click.thread_ts.as_deref();
        let posted = self
            .api
            .post_ephemeral(&click.channel, &click.user, thread, text);
        if let Err(e) = posted.await {
            tracing::warn!(error = %e, "a note about a click could not be shown");
        }
    }
}

fn past_tense(act: Act) -> &'static str {
    match act {
        Act::Extend => "extended",
        Act::Start => "started",
        Act::Keep => "kept",
    }
}

/// Why a click did not act, for the log.
fn stop_reason(stop: &Stop) -> String {
    match stop {
        Stop::Expired => "the message is over 7 days old".to_owned(),
        Stop::Inactive(status) => format!("the Coder account is {status}"),
        Stop::Gone => "Coder does not know the Coder user (deleted; or the token may not read users: a scoped token needs user:read)".to_owned(),
        Stop::NotOwner => "the workspace is no longer the Coder user's".to_owned(),
        Stop::AlreadyUntil(until) => format!("the workspace already runs until {until}, at or past the deadline asked for"),
        Stop::Coder(e) => e.to_string(),
    }
}

/// What the message says when the workspace already runs until `until`, at or past the
/// deadline the button asks for (mrkdwn).
fn already_text(until: DateTime<Utc>) -> String {
    let until = SystemTime::from(until);
    format!(
        ":white_check_mark: Already running until {}, so nothing was extended.",
        render::when(until)
    )
}

/// What the workspace's card says happened last, once the act is done (plain text).
fn outcome_latest(click: &ActClick, acted: Acted) -> String {
    match (click.act, acted) {
        (Act::Extend, _) => match click.target.deadline.and_then(|s| u64::try_from(s).ok()) {
            Some(secs) => format!(
                "Extended until {}",
                render::utc_time(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            ),
            None => "Extended".to_owned(),
        },
        (Act::Start, _) => "Start requested".to_owned(),
        (Act::Keep, _) => "Kept: active again".to_owned(),
    }
}

/// What the message says once the act is done (mrkdwn).
fn outcome_text(click: &ActClick, acted: Acted, now: SystemTime) -> String {
    let workspace = escape(&click.target.name);
    match (click.act, acted) {
        (Act::Extend, _) => {
            let until = click
                .target
                .deadline
                .and_then(|secs| u64::try_from(secs).ok())
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap_or(now);
            format!(
                ":white_check_mark: Extended until {} by you.",
                render::when(until)
            )
        }
        (Act::Start, _) => format!(
            ":white_check_mark: Start requested by you {}: Coder is building *{workspace}*.",
            render::when(now)
        ),
        (Act::Keep, Acted::Done) => format!(
            ":white_check_mark: Kept by you: *{workspace}* is active again and will not be deleted."
        ),
        (Act::Keep, Acted::Unchanged) => {
            format!(":white_check_mark: Kept: *{workspace}* was not dormant any more.")
        }
    }
}

/// `blocks` with the button `action_id` taken out and `said` in its place (a context line);
/// an actions block left empty goes. `None` when `blocks` is not a list of blocks.
fn settled_blocks(blocks: &Value, action_id: &str, said: &str) -> Option<Value> {
    let mut out = Vec::new();
    let mut placed = false;
    for block in blocks.as_array()? {
        let elements = block.get("elements").and_then(Value::as_array);
        let is_ours = |e: &Value| e.get("action_id").and_then(Value::as_str) == Some(action_id);
        match elements {
            Some(elements)
                if block.get("type") == Some(&json!("actions")) && elements.iter().any(is_ours) =>
            {
                let rest: Vec<Value> = elements.iter().filter(|e| !is_ours(e)).cloned().collect();
                out.push(
                    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": said}]}),
                );
                placed = true;
                if !rest.is_empty() {
                    let mut kept = block.clone();
                    kept["elements"] = Value::Array(rest);
                    out.push(kept);
                }
            }
            _ => out.push(block.clone()),
        }
    }
    if !placed {
        out.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": said}]}));
    }
    Some(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(action_id: &str, value: &str) -> Value {
        json!({
            "type": "block_actions",
            "user": {"id": "UBOBBY"},
            "container": {"type": "message", "channel_id": "DBOBBY", "message_ts": "2.0", "thread_ts": "1.0"},
            "message": {"text": "Your workspace will stop soon", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "stop soon"}},
                {"type": "actions", "elements": [
                    {"type": "button", "action_id": action_id, "value": value},
                    {"type": "overflow", "action_id": "snooze"},
                ]},
            ]},
            "actions": [{"action_id": action_id, "value": value, "action_ts": "1710510000.123"}],
        })
    }

    fn target() -> ActTarget {
        ActTarget {
            workspace_id: uuid::Uuid::from_u128(1),
            user_id: uuid::Uuid::from_u128(2),
            owner: "bobby".into(),
            name: "dev".into(),
            deadline: Some(1_710_514_800),
        }
    }

    #[test]
    fn act_clicks_are_parsed_and_others_are_not() {
        let value = target().to_value().expect("fits");
        let click = ActClick::parse(&payload("extend_workspace", &value)).expect("a click");
        assert_eq!((click.act, click.target.clone()), (Act::Extend, target()));
        assert_eq!(
            (
                click.channel.as_str(),
                click.message_ts.as_str(),
                click.action_ts.as_str()
            ),
            ("DBOBBY", "2.0", "1710510000.123")
        );
        assert_eq!(ActClick::parse(&payload("snooze", &value)), None);
        assert_eq!(
            ActClick::parse(&payload("start_workspace", "bobby/dev")),
            None
        );
    }

    #[test]
    fn the_button_gives_way_to_the_outcome_and_the_rest_of_the_row_stays() {
        let value = target().to_value().expect("fits");
        let click = ActClick::parse(&payload("extend_workspace", &value)).expect("a click");
        let said = outcome_text(&click, Acted::Done, SystemTime::now());
        assert!(said.contains("2024-03-15 15:00 UTC"), "{said}");
        let blocks = settled_blocks(
            click.blocks.as_ref().expect("blocks"),
            "extend_workspace",
            &said,
        )
        .expect("blocks");
        let kinds: Vec<_> = blocks
            .as_array()
            .expect("list")
            .iter()
            .map(|b| b["type"].clone())
            .collect();
        assert_eq!(kinds, [json!("header"), json!("context"), json!("actions")]);
        assert_eq!(blocks[1]["elements"][0]["text"], json!(said));
        assert_eq!(
            blocks[2]["elements"],
            json!([{"type": "overflow", "action_id": "snooze"}])
        );
        assert_eq!(
            settled_blocks(&json!("nope"), "extend_workspace", &said),
            None
        );
    }
}
