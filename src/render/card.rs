//! A workspace's card: the top-level message its thread hangs under, edited each time a
//! notification joins the thread to show what happened last, and when.

use super::{collapse_whitespace, mrkdwn, MAX_HEADER_TEXT};
use crate::coder::Notification;
use slack_morphism::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a card shows.
#[derive(Debug, Clone, Copy)]
pub struct CardState<'a> {
    pub workspace: &'a str,
    /// The owner's Coder username.
    pub owner: &'a str,
    /// What happened last (see [`latest_of`]), and when.
    pub latest: &'a str,
    pub at: SystemTime,
    /// While the recipient has the workspace snoozed: until when.
    pub snoozed_until: Option<SystemTime>,
}

/// The card for a workspace: whose it is, what happened last and when, and a snooze in
/// force (with `unsnooze`).
pub fn card(state: &CardState<'_>) -> SlackMessageContent {
    let name = collapse_whitespace(state.workspace, MAX_HEADER_TEXT);
    let owner = collapse_whitespace(state.owner, MAX_HEADER_TEXT);
    let what = collapse_whitespace(state.latest, MAX_HEADER_TEXT);
    let heading = format!(
        "*Workspace {}* · {}",
        mrkdwn::escape(&name),
        mrkdwn::escape(&owner)
    );
    let latest_line = format!("Latest: {} · {}", mrkdwn::escape(&what), when(state.at));
    // Each part is cut to a header's length, so the whole is short.
    let text = mrkdwn::escape(&format!("Workspace {name} ({owner}): {what}"));
    let mut blocks = vec![
        SlackBlock::Section(SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(
            SlackBlockMarkDownText::new(heading),
        ))),
        context(latest_line),
    ];
    if let Some(until) = state.snoozed_until {
        blocks.push(context(format!(
            "Snoozed until {}: notifications about it are held back.",
            when(until)
        )));
        let unsnooze = SlackBlockButtonElement::new(pt!("Unsnooze"))
            .with_action_id(SlackActionId("unsnooze".into()))
            .with_value(format!("{}/{}", state.owner, state.workspace));
        blocks.push(SlackBlock::Actions(SlackActionsBlock::new(vec![
            unsnooze.into()
        ])));
    }
    SlackMessageContent::new()
        .with_text(text)
        .with_blocks(blocks)
}

fn context(text: String) -> SlackBlock {
    SlackBlock::Context(SlackContextBlock::new(vec![
        SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(text)),
    ]))
}

/// A moment in the reader's own time zone (the fallback, for clients that cannot, is UTC).
pub fn when(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    format!(
        "<!date^{secs}^{{date_short_pretty}} at {{time}}|{}>",
        utc(secs)
    )
}

/// What a card says happened last: the notification's title (or its kind's name).
pub fn latest_of(notification: &Notification) -> String {
    let what = collapse_whitespace(&notification.title, MAX_HEADER_TEXT);
    match what.is_empty() {
        true => collapse_whitespace(&notification.notification_name, MAX_HEADER_TEXT),
        false => what,
    }
}

/// A moment as `2026-11-27 10:04 UTC`.
pub fn utc_time(at: SystemTime) -> String {
    utc(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

/// `2026-11-27 10:04 UTC`, for readers whose Slack cannot format dates.
fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let (hour, minute) = (secs % 86_400 / 3600, secs % 3600 / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn notification(title: &str) -> Notification {
        let body = serde_json::json!({
            "msg_id": "m",
            "payload": {"notification_name": "Workspace Deleted", "user_email": "a@b.c"},
            "title": title,
            "body": "",
        });
        Notification::parse(body.to_string().as_bytes(), None).expect("valid")
    }

    #[test]
    fn the_card_names_the_workspace_its_owner_and_what_happened_last() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let latest = latest_of(&notification("Workspace \"dev\" deleted"));
        let state = CardState {
            workspace: "dev",
            owner: "bobby",
            latest: &latest,
            at,
            snoozed_until: None,
        };
        let json = serde_json::to_value(card(&state)).expect("JSON");
        assert_eq!(json["blocks"].as_array().map(Vec::len), Some(2));
        assert_eq!(json["blocks"][0]["text"]["text"], "*Workspace dev* · bobby");
        assert_eq!(
            json["blocks"][1]["elements"][0]["text"],
            "Latest: Workspace \"dev\" deleted · <!date^1795000000^{date_short_pretty} at {time}|2026-11-18 11:06 UTC>"
        );
        assert_eq!(
            json["text"],
            "Workspace dev (bobby): Workspace \"dev\" deleted"
        );
        // Snoozed: until when, and unsnooze.
        let snoozed = CardState {
            snoozed_until: Some(at + Duration::from_secs(3600)),
            ..state
        };
        let json = serde_json::to_value(card(&snoozed)).expect("JSON");
        assert_eq!(
            json["blocks"][2]["elements"][0]["text"],
            "Snoozed until <!date^1795003600^{date_short_pretty} at {time}|2026-11-18 12:06 UTC>: notifications about it are held back."
        );
        assert_eq!(json["blocks"][3]["elements"][0]["action_id"], "unsnooze");
        assert_eq!(json["blocks"][3]["elements"][0]["value"], "bobby/dev");
    }

    #[test]
    fn hostile_names_are_escaped() {
        let latest = latest_of(&notification("*x* <@U1>"));
        let card = card(&CardState {
            workspace: "<!channel>",
            owner: "a&b",
            latest: &latest,
            at: UNIX_EPOCH,
            snoozed_until: None,
        });
        let json = serde_json::to_value(&card).expect("JSON").to_string();
        assert!(
            !json.contains("<!channel>") && !json.contains("<@U1>"),
            "{json}"
        );
        assert!(json.contains("1970-01-01 00:00 UTC"), "{json}");
    }
}
