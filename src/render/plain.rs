//! The plain-text form of a notification: title, body and links as one mrkdwn `text`, no
//! blocks. It is what the bridge sends when Slack refuses the Block Kit message it built, so
//! the person still gets the notification while the template is fixed.

use super::mrkdwn::{cut_escaped, escape, escape_within};
use super::{action_url, header_title, RenderOptions, MAX_FALLBACK_TEXT};
use crate::coder::Notification;
use slack_morphism::prelude::SlackMessageContent;

/// The whole text stays far below Slack's 40,000-character cut, links included.
const MAX_PLAIN_TEXT: usize = 12_000;

/// Title (bold), the plain-text body, then one `<url|label>` line per usable action.
pub fn plain_text(notification: &Notification, options: &RenderOptions) -> SlackMessageContent {
    let (title, _) = header_title(notification);
    let mut text = format!("*{}*", escape(&title));
    let body = notification.body.trim();
    if !body.is_empty() {
        text.push('\n');
        // Only what can be sent is escaped: a 1 MiB body costs no more than a short one.
        text.push_str(&escape_within(body, MAX_FALLBACK_TEXT).0);
    }
    let mut text = cut_escaped(&text, MAX_FALLBACK_TEXT);
    for action in &notification.actions {
        let Ok(url) = action_url(&action.url, options.coder_url.as_ref()) else {
            continue;
        };
        let line = format!(
            "\n<{}|{}>",
            link_target(url.as_str()),
            escape(action.label.trim())
        );
        if text.chars().count() + line.chars().count() > MAX_PLAIN_TEXT {
            break;
        }
        text.push_str(&line);
    }
    SlackMessageContent::new().with_text(text)
}

/// A URL as the target of a mrkdwn link: `|` and `>` would end it early, `&` must be an entity.
fn link_target(url: &str) -> String {
    url.replace('&', "&amp;")
        .replace('|', "%7C")
        .replace('>', "%3E")
        .replace('<', "%3C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::Action;

    fn notification() -> Notification {
        let body = serde_json::json!({
            "msg_id": "m",
            "payload": {"notification_name": "N", "user_email": "a@b.c", "actions": []},
            "title": "Workspace <b> & co",
            "body": "Line one\nLine <two>",
        });
        let mut n = Notification::parse(body.to_string().as_bytes(), None).expect("valid");
        n.actions = vec![
            Action {
                label: "View".into(),
                url: "/workspaces?a=1&b=x|y".into(),
            },
            Action {
                label: "Bad".into(),
                url: "javascript:alert(1)".into(),
            },
        ];
        n
    }

    #[test]
    fn title_body_and_links_escaped_without_blocks() {
        let options = RenderOptions {
            snooze: false,
            coder_url: Some("https://coder.example.com".parse().expect("url")),
        };
        let content = plain_text(&notification(), &options);
        assert_eq!(content.blocks, None);
        assert_eq!(
            content.text.as_deref(),
            Some(
                "*Workspace &lt;b&gt; &amp; co*\nLine one\nLine &lt;two&gt;\n\
                 <https://coder.example.com/workspaces?a=1&amp;b=x%7Cy|View>"
            )
        );
    }

    #[test]
    fn stays_bounded_with_many_long_links() {
        let mut n = notification();
        n.body = "b".repeat(100_000);
        n.actions = (0..100)
            .map(|i| Action {
                label: format!("L{i}"),
                url: format!("https://x.example/{}", "p".repeat(2900)),
            })
            .collect();
        let content = plain_text(&n, &RenderOptions::default());
        let text = content.text.unwrap_or_default();
        assert!(text.chars().count() <= MAX_PLAIN_TEXT, "{}", text.len());
        assert!(text.contains("|L0>"));
    }
}
