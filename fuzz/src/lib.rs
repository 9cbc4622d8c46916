//! What both fuzz targets check: every notification that parses renders, with and without a
//! note, into a message that keeps every Block Kit limit (`render::check_limits`), holding at
//! most [`MAX_RENDER_HEAP`] of heap at once.

mod heap;

use coder_slack_bridge::coder::Notification;
use coder_slack_bridge::render::{self, RenderOptions};

/// Most heap one render may hold at once: what rendering a body of the 1 MiB webhook limit is
/// allowed (it needs about 20 MiB at worst); a fuzz input is 64 KiB at most and needs far less.
pub const MAX_RENDER_HEAP: usize = 30 << 20;

/// The note the delivery path adds when a message goes to the fallback channel.
pub const FALLBACK_NOTE: &str = "Intended for a@b.c";

pub fn options() -> RenderOptions {
    RenderOptions {
        coder_url: Some(url::Url::parse("http://test.com").expect("base URL")),
    }
}

/// Renders `n` with each note and panics, naming the violation, if a limit is broken or the
/// render held more than [`MAX_RENDER_HEAP`].
pub fn render_and_check(n: &Notification, options: &RenderOptions, notes: &[Option<&str>]) {
    for &note in notes {
        let (rendered, peak) = heap::peak_during(|| render::render(n, options, note));
        if peak > MAX_RENDER_HEAP {
            panic!(
                "render held {} KiB of heap at once (note {note:?}, max {} KiB)",
                peak >> 10,
                MAX_RENDER_HEAP >> 10
            );
        }
        if let Err(violation) = render::check_limits(&rendered.content) {
            let json = serde_json::to_string(&rendered.content).unwrap_or_default();
            panic!(
                "check_limits failed (note {note:?}): {violation}\nrendered: {}",
                truncate(&json, 4000)
            );
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Builds a webhook body around fields taken from `data`, so the fuzzer works on the texts the
/// renderer sees rather than on JSON syntax. `data` (lossily UTF-8) is split on NUL into:
/// body_markdown, title, body, title_markdown, notification_name, note, then label/url pairs.
/// A body_markdown of exactly "\u{1}" means absent (webhook 1.0).
pub struct Structured {
    pub body: Vec<u8>,
    pub note: Option<String>,
}

pub fn structured(data: &[u8]) -> Structured {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next().map(str::to_owned);
    let body_markdown = next().filter(|m| m != "\u{1}");
    let title = next().unwrap_or_default();
    let body = next().unwrap_or_default();
    let title_markdown = next();
    let notification_name = next().unwrap_or_default();
    let note = next().filter(|n| !n.is_empty());
    let mut actions = Vec::new();
    let mut labels = serde_json::Map::new();
    while let Some(label) = next() {
        let url = next().unwrap_or_default();
        labels.insert(format!("l{}", actions.len()), label.clone().into());
        actions.push(serde_json::json!({ "label": label, "url": url }));
    }
    let body = serde_json::json!({
        "_version": "1.1",
        "msg_id": "00000000-0000-0000-0000-000000000000",
        "payload": {
            "_version": "1.2",
            "notification_name": notification_name,
            "notification_template_id": "00000000-0000-0000-0000-000000000000",
            "user_email": "bobby@coder.com",
            "user_name": "Bobby",
            "user_username": "bobby",
            "actions": actions,
            "labels": labels,
            "data": null,
            "targets": null
        },
        "title": title,
        "title_markdown": title_markdown,
        "body": body,
        "body_markdown": body_markdown,
    });
    Structured {
        body: serde_json::to_vec(&body).expect("serializable"),
        note,
    }
}
