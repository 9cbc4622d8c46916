//! A workspace's card: the top-level message its thread hangs under, edited each time a
//! notification joins the thread to show what happened last, and when.

use super::{collapse_whitespace, mrkdwn, MAX_HEADER_TEXT};
use crate::coder::Notification;
use slack_morphism::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

/// The card for `workspace` (owned by `owner`) after `latest`, which arrived `at`.
pub fn card(
    workspace: &str,
    owner: &str,
    latest: &Notification,
    at: SystemTime,
) -> SlackMessageContent {
    let name = collapse_whitespace(workspace, MAX_HEADER_TEXT);
    let owner = collapse_whitespace(owner, MAX_HEADER_TEXT);
    let what = latest_of(latest);
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    // Slack shows the time in each reader's own time zone; the fallback is UTC.
    let when = format!(
        "<!date^{secs}^{{date_short_pretty}} at {{time}}|{}>",
        utc(secs)
    );
    let heading = format!(
        "*Workspace {}* · {}",
        mrkdwn::escape(&name),
        mrkdwn::escape(&owner)
    );
    let latest_line = format!("Latest: {} · {when}", mrkdwn::escape(&what));
    // Each part is cut to a header's length, so the whole is short.
    let text = mrkdwn::escape(&format!("Workspace {name} ({owner}): {what}"));
    SlackMessageContent::new().with_text(text).with_blocks(vec![
        SlackBlock::Section(SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(
            SlackBlockMarkDownText::new(heading),
        ))),
        SlackBlock::Context(SlackContextBlock::new(vec![
            SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(latest_line)),
        ])),
    ])
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
        let card = card(
            "dev",
            "bobby",
            &notification("Workspace \"dev\" deleted"),
            at,
        );
        let json = serde_json::to_value(&card).expect("JSON");
        assert_eq!(json["blocks"][0]["text"]["text"], "*Workspace dev* · bobby");
        assert_eq!(
            json["blocks"][1]["elements"][0]["text"],
            "Latest: Workspace \"dev\" deleted · <!date^1795000000^{date_short_pretty} at {time}|2026-11-18 11:06 UTC>"
        );
        assert_eq!(
            json["text"],
            "Workspace dev (bobby): Workspace \"dev\" deleted"
        );
    }

    #[test]
    fn hostile_names_are_escaped() {
        let card = card("<!channel>", "a&b", &notification("*x* <@U1>"), UNIX_EPOCH);
        let json = serde_json::to_value(&card).expect("JSON").to_string();
        assert!(
            !json.contains("<!channel>") && !json.contains("<@U1>"),
            "{json}"
        );
        assert!(json.contains("1970-01-01 00:00 UTC"), "{json}");
    }
}
