//! Coder notification → Slack message (Block Kit). Pure functions; see `mrkdwn` for Markdown.
//!
//! The message is: a header (the title), an optional note (context), the body as mrkdwn
//! sections, and the notification's actions as link buttons. Every Block Kit limit is kept;
//! [`check_limits`] verifies them on any rendered message.
//!
//! Rendering costs time and memory linear in the notification and bounded by what a message
//! can carry: only the head of the body is converted ([`BODY_LIMITS`]; the rest could not be
//! sent), and nothing is scanned more than a bounded number of times.

mod card;
#[cfg(test)]
mod heap_meter;
mod home;
mod limits;
pub mod mrkdwn;
mod parser_guard;
mod plain;
#[cfg(test)]
mod resource_tests;
mod split;

pub use card::{card, latest_of, utc_time, when, CardState};
pub use home::home_view;
#[cfg(test)]
mod tests;

pub use limits::check_limits;
pub use plain::plain_text;
use split::split_sections;

use crate::act::Offer;
use crate::coder::Notification;
use mrkdwn::{byte_index_of_char, cut_escaped, entity_safe, escape, escape_within};
use slack_morphism::prelude::*;
use std::collections::HashSet;

/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Longest header text (plain text chars).
pub const MAX_HEADER_TEXT: usize = 150;
/// Longest section / context text (chars, as sent).
pub const MAX_SECTION_TEXT: usize = 3000;
/// Most elements in one actions block.
pub const MAX_ACTIONS_PER_BLOCK: usize = 25;
/// Longest button text (chars).
pub const MAX_BUTTON_TEXT: usize = 75;
/// Longest button URL (chars, as serialized).
pub const MAX_BUTTON_URL: usize = 3000;
/// Longest action_id / block_id.
pub const MAX_ID: usize = 255;
/// Longest top-level `text` (chars).
pub const MAX_FALLBACK_TEXT: usize = 3000;
/// Most elements in one context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Most body text produced (mrkdwn or escaped plain chars): twice what the sections of one
/// message hold, so the cut falls in text the message drops anyway.
pub const MAX_BODY_TEXT: usize = 2 * MAX_BLOCKS * MAX_SECTION_TEXT;
/// Most body Markdown parsed (bytes). Markdown renders to about as much text as it is made
/// of, so a longer body would not fit in a message (47 sections ≈ 140 000 chars) anyway; its
/// parse tree, up to ~60 bytes per byte of Markdown, is most of the memory a render needs.
pub const MAX_BODY_MARKDOWN: usize = 160 * 1024;
/// What of a body's Markdown is converted.
pub const BODY_LIMITS: mrkdwn::Limits = mrkdwn::Limits {
    markdown_bytes: MAX_BODY_MARKDOWN,
    mrkdwn_chars: MAX_BODY_TEXT,
};

/// Most buttons built: one more than fit beside the header alone, so that fitting the blocks
/// still sees there are too many. Actions past it are skipped without building a button.
const MAX_BUTTONS_KEPT: usize = (MAX_BLOCKS - 1) * MAX_ACTIONS_PER_BLOCK + 1;

const SHORTENED_NOTE: &str = "_Message shortened: open Coder for the full text._";
const DEFAULT_TITLE: &str = "Coder notification";
const DEFAULT_BUTTON: &str = "Open";

const SKIP_RELATIVE: &str = "relative URL and CODER_URL is not set";
const SKIP_SCHEME: &str = "not an http(s) URL";
const SKIP_LONG: &str = "URL longer than 3000 characters";
const SKIP_INVALID: &str = "invalid URL";
const SKIP_TOO_MANY: &str = "too many actions to fit in one message";

/// How to render.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Coder's access URL, for relative action URLs.
    pub coder_url: Option<url::Url>,
    /// Whether messages about a workspace offer the snooze control (clicks arrive over
    /// Socket Mode, so only with an app-level token).
    pub snooze: bool,
}

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Top-level `text` + `blocks`.
    pub content: SlackMessageContent,
    /// Buttons left out, for logging.
    pub skipped_actions: Vec<SkippedAction>,
    /// True when something was cut to fit.
    pub shortened: bool,
}

/// An action left out of the message. Never holds the URL: it can carry secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedAction {
    pub index: usize,
    pub reason: &'static str,
}

/// The body as mrkdwn section texts, and whether the body was cut before it was split.
struct Body {
    sections: Vec<String>,
    cut: bool,
}

/// The notification's actions as link buttons (with their action's index), the actions left
/// out, and whether a label was cut.
struct Buttons {
    buttons: Vec<(usize, SlackBlockButtonElement)>,
    skipped: Vec<SkippedAction>,
    label_cut: bool,
}

/// Renders a notification as a Slack message. `note` is an optional plain-text line shown
/// under the header (e.g. why the message went to a fallback channel).
pub fn render(
    notification: &Notification,
    options: &RenderOptions,
    note: Option<&str>,
) -> Rendered {
    render_offering(notification, options, note, None)
}

/// [`render`], with a button that acts on the workspace in Coder beside the snooze control.
pub fn render_offering(
    notification: &Notification,
    options: &RenderOptions,
    note: Option<&str>,
    offer: Option<&Offer>,
) -> Rendered {
    render_for(notification, options, note, offer, Reader::Recipient)
}

/// [`render`] for a channel (`FALLBACK_CHANNEL`), where anyone may click: Coder's own link
/// buttons only. The snooze control, the buttons that act and the link that turns this kind
/// off are the recipient's (the link would act on whoever clicks it), so they are left out.
pub fn render_for_channel(
    notification: &Notification,
    options: &RenderOptions,
    note: Option<&str>,
) -> Rendered {
    render_for(notification, options, note, None, Reader::Channel)
}

/// Who reads a message: its recipient, in their DM, or everyone in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Recipient,
    Channel,
}

fn render_for(
    notification: &Notification,
    options: &RenderOptions,
    note: Option<&str>,
    offer: Option<&Offer>,
    reader: Reader,
) -> Rendered {
    let (title, title_cut) = header_title(notification);
    let note_block = note_block(note);
    let mut body = body_sections(notification);
    let mut buttons = buttons(notification, options);
    let personal = reader == Reader::Recipient;
    let preferences = personal
        .then(|| preferences_block(notification, options))
        .flatten();
    let snooze = personal
        .then(|| controls_block(notification, options, offer))
        .flatten();
    let fixed_blocks = 1
        + usize::from(note_block.is_some())
        + usize::from(preferences.is_some())
        + usize::from(snooze.is_some());
    let shortened_note = fit_blocks(fixed_blocks, &mut body, &mut buttons);

    let mut blocks = vec![SlackBlock::Header(SlackHeaderBlock::new(
        title.clone().into(),
    ))];
    blocks.extend(note_block);
    blocks.extend(body.sections.into_iter().map(|text| {
        SlackBlock::Section(
            SlackSectionBlock::new()
                .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))),
        )
    }));
    if shortened_note {
        blocks.push(context_block(SHORTENED_NOTE.to_owned()));
    }
    let elements: Vec<SlackActionBlockElement> = buttons
        .buttons
        .into_iter()
        .map(|(_, b)| SlackActionBlockElement::Button(b))
        .collect();
    for chunk in elements.chunks(MAX_ACTIONS_PER_BLOCK) {
        blocks.push(SlackBlock::Actions(SlackActionsBlock::new(chunk.to_vec())));
    }
    blocks.extend(snooze);
    blocks.extend(preferences);

    Rendered {
        content: SlackMessageContent::new()
            .with_text(fallback_text(&title, notification))
            .with_blocks(blocks),
        skipped_actions: buttons.skipped,
        shortened: title_cut || buttons.label_cut || shortened_note,
    }
}

/// How long a snooze lasts, by the value its option carries.
pub const SNOOZES: [(&str, &str, u64); 3] = [
    ("1h", "Snooze this workspace for 1 hour", 3600),
    ("1d", "Snooze this workspace for 1 day", 86_400),
    ("1w", "Snooze this workspace for 1 week", 7 * 86_400),
];
/// Slack's limit on an overflow option's value.
const MAX_OPTION_VALUE: usize = 75;

/// The controls of a message about a workspace, in one row: the button that acts on it in
/// Coder when there is one, and the snooze control.
fn controls_block(
    n: &Notification,
    options: &RenderOptions,
    offer: Option<&Offer>,
) -> Option<SlackBlock> {
    let mut elements: Vec<SlackActionBlockElement> =
        offer.and_then(offer_button).into_iter().collect();
    elements.extend(snooze_control(n, options));
    (!elements.is_empty()).then(|| SlackBlock::Actions(SlackActionsBlock::new(elements)))
}

/// The button of an act; its value carries the workspace (see [`crate::act::ActTarget`]).
fn offer_button(offer: &Offer) -> Option<SlackActionBlockElement> {
    let button = SlackBlockButtonElement::new(pt!(offer.act.label()))
        .with_action_id(SlackActionId(offer.act.action_id().into()))
        .with_value(offer.target.to_value()?)
        .with_style(SlackBlockButtonStyle::Primary);
    Some(button.into())
}

/// The snooze control (`action_id` `snooze`) on a message about a workspace: each option's
/// value is `DURATION:OWNER/WORKSPACE`, which is all a click needs.
fn snooze_control(n: &Notification, options: &RenderOptions) -> Option<SlackActionBlockElement> {
    if !options.snooze {
        return None;
    }
    // Only on the recipient's own workspace: an admin cannot snooze someone else's.
    let workspace = crate::kinds::own_workspace_of(n)?;
    let target = format!("{}/{}", workspace.owner, workspace.name);
    let choices: Vec<_> = SNOOZES
        .iter()
        .map(|(code, label, _)| SlackBlockChoiceItem::new(pt!(*label), format!("{code}:{target}")))
        .collect();
    if choices.iter().any(|c| c.value.len() > MAX_OPTION_VALUE) {
        return None;
    }
    let overflow =
        SlackBlockOverflowElement::new(choices).with_action_id(SlackActionId("snooze".into()));
    Some(overflow.into())
}

/// A link to Coder's own preference page, set to turn this kind of notification off (what
/// Coder's e-mails link to; it acts with the person's own Coder session). Only with
/// `CODER_URL` and a real template ID (Coder's test fixtures zero it).
fn preferences_block(n: &Notification, options: &RenderOptions) -> Option<SlackBlock> {
    let id = uuid::Uuid::try_parse(n.template_id.as_deref()?.trim()).ok()?;
    if id.is_nil() {
        return None;
    }
    let mut url = options
        .coder_url
        .as_ref()?
        .join("/settings/notifications")
        .ok()?;
    url.set_query(Some(&format!("disabled={}", id.hyphenated())));
    Some(context_block(format!(
        "<{url}|Turn these notifications off in Coder>"
    )))
}

/// chat.postMessage arguments for a rendered message: channel set, link and media unfurling
/// off, no username/icon.
pub fn post_message_request(
    channel: SlackChannelId,
    content: SlackMessageContent,
) -> SlackApiChatPostMessageRequest {
    SlackApiChatPostMessageRequest::new(channel, content)
        .with_unfurl_links(false)
        .with_unfurl_media(false)
}

fn context_block(mrkdwn: String) -> SlackBlock {
    SlackBlock::Context(SlackContextBlock::new(vec![
        SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(mrkdwn)),
    ]))
}

/// The note as a context block, unless it is blank.
fn note_block(note: Option<&str>) -> Option<SlackBlock> {
    let note = note.map(str::trim).filter(|n| !n.is_empty())?;
    Some(context_block(cut_escaped(&escape(note), MAX_SECTION_TEXT)))
}

/// Cuts body sections and buttons so the message keeps to [`MAX_BLOCKS`] with the shortened
/// note. Returns whether the note is due: the body was cut, or the blocks did not all fit.
fn fit_blocks(fixed_blocks: usize, body: &mut Body, buttons: &mut Buttons) -> bool {
    let action_blocks = |n: usize| n.div_ceil(MAX_ACTIONS_PER_BLOCK);
    let needed = fixed_blocks + body.sections.len() + action_blocks(buttons.buttons.len());
    if !body.cut && needed <= MAX_BLOCKS {
        return false;
    }
    // Room for the shortened note and at least one body section.
    let reserved = fixed_blocks + 1 + usize::from(!body.sections.is_empty());
    let max_buttons = (MAX_BLOCKS - reserved) * MAX_ACTIONS_PER_BLOCK;
    if buttons.buttons.len() > max_buttons {
        for (index, _) in buttons.buttons.drain(max_buttons..) {
            buttons.skipped.push(SkippedAction {
                index,
                reason: SKIP_TOO_MANY,
            });
        }
        buttons.skipped.sort_by_key(|s| s.index);
    }
    let room = MAX_BLOCKS - fixed_blocks - 1 - action_blocks(buttons.buttons.len());
    body.sections.truncate(room);
    true
}

/// The header title (plain text, ≤150 chars) and whether it was cut.
fn header_title(n: &Notification) -> (String, bool) {
    let mut title = collapse_whitespace(&n.title, MAX_HEADER_TEXT);
    if title.is_empty() {
        title = collapse_whitespace(&n.notification_name, MAX_HEADER_TEXT);
    }
    if title.is_empty() {
        title = DEFAULT_TITLE.to_owned();
    }
    cut_words(&title, MAX_HEADER_TEXT)
}

/// Each action as a link button, or the reason it is left out.
fn buttons(n: &Notification, options: &RenderOptions) -> Buttons {
    let mut buttons = Buttons {
        buttons: Vec::new(),
        skipped: Vec::new(),
        label_cut: false,
    };
    for (index, action) in n.actions.iter().enumerate() {
        match action_url(&action.url, options.coder_url.as_ref()) {
            Ok(_) if buttons.buttons.len() == MAX_BUTTONS_KEPT => {
                buttons.skipped.push(SkippedAction {
                    index,
                    reason: SKIP_TOO_MANY,
                })
            }
            Ok(url) => {
                let (label, cut) = button_label(&action.label);
                buttons.label_cut |= cut;
                buttons.buttons.push((
                    index,
                    SlackBlockButtonElement::new(label.into())
                        .with_action_id(SlackActionId(format!("coder_action_{index}")))
                        .with_url(url),
                ));
            }
            Err(reason) => buttons.skipped.push(SkippedAction { index, reason }),
        }
    }
    buttons
}

fn button_label(label: &str) -> (String, bool) {
    let label = collapse_whitespace(label, MAX_BUTTON_TEXT);
    if label.is_empty() {
        return (DEFAULT_BUTTON.to_owned(), false);
    }
    cut_words(&label, MAX_BUTTON_TEXT)
}

/// `s` with whitespace runs collapsed to single spaces and trimmed, as far as `max + 1` chars:
/// enough for [`cut_words`] to cut it as it would the whole.
fn collapse_whitespace(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in s.split_whitespace() {
        if chars > max {
            break;
        }
        if chars > 0 {
            out.push(' ');
            chars += 1;
        }
        let take = (max + 1).saturating_sub(chars);
        out.extend(word.chars().take(take));
        chars += word.chars().take(take).count();
    }
    out
}

/// Cuts plain text to at most `max` chars, at a word boundary when one is near, ending with
/// `…`. Returns whether it was cut.
fn cut_words(s: &str, max: usize) -> (String, bool) {
    if s.chars().count() <= max {
        return (s.to_owned(), false);
    }
    let end = byte_index_of_char(s, max - 1);
    let head = &s[..end];
    let cut = match head.rfind(char::is_whitespace) {
        Some(sp) if head[..sp].chars().count() >= max / 2 => &head[..sp],
        _ => head,
    };
    (format!("{}…", cut.trim_end()), true)
}

/// The body as mrkdwn sections: converted Markdown when present, else the escaped plain body;
/// either only its head (see [`BODY_LIMITS`]).
fn body_sections(n: &Notification) -> Body {
    let (text, cut) = body_mrkdwn(n);
    Body {
        sections: split_sections(&text, MAX_SECTION_TEXT),
        cut,
    }
}

/// The body as mrkdwn, and whether it was cut short.
fn body_mrkdwn(n: &Notification) -> (String, bool) {
    if let Some(md) = n.body_markdown.as_deref().filter(|m| !m.trim().is_empty()) {
        let converted = mrkdwn::convert_within(md, BODY_LIMITS);
        if !converted.text.trim().is_empty() {
            return (converted.text, converted.cut);
        }
    }
    escape_within(n.body.trim(), MAX_BODY_TEXT)
}

/// The top-level `text`: title, newline, start of the body; escaped, ≤3000 chars.
fn fallback_text(title: &str, n: &Notification) -> String {
    let body = if n.body.trim().is_empty() {
        n.body_markdown.as_deref().unwrap_or("").trim()
    } else {
        n.body.trim()
    };
    let mut text = escape(title);
    if !body.is_empty() {
        text.push('\n');
        // Only the start can show. Escaped, it is kept a whole entity (≤ 5 chars) past the
        // limit, so a longer body is still cut, and cut at the same place, as if whole.
        text.push_str(&escape_within(body, MAX_FALLBACK_TEXT + 5).0);
    }
    cut_escaped(&text, MAX_FALLBACK_TEXT)
}

/// Resolves an action URL to an absolute http(s) URL, or the reason it is skipped.
fn action_url(raw: &str, base: Option<&url::Url>) -> Result<url::Url, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(SKIP_INVALID);
    }
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => match base {
            Some(base) => base.join(raw).map_err(|_| SKIP_INVALID)?,
            None => return Err(SKIP_RELATIVE),
        },
        Err(_) => return Err(SKIP_INVALID),
    };
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(SKIP_SCHEME);
    }
    if url.as_str().chars().count() > MAX_BUTTON_URL {
        return Err(SKIP_LONG);
    }
    Ok(url)
}
