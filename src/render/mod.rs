//! Coder notification → Slack message (Block Kit). Pure functions; see `mrkdwn` for Markdown.
//!
//! The message is: a header (the title), an optional note (context), the body as mrkdwn
//! sections, and the notification's actions as link buttons. Every Block Kit limit is kept;
//! [`check_limits`] verifies them on any rendered message.
//!
//! Rendering costs time and memory linear in the notification and bounded by what a message
//! can carry: only the head of the body is converted ([`BODY_LIMITS`]; the rest could not be
//! sent), and nothing is scanned more than a bounded number of times.

#[cfg(test)]
mod heap_meter;
pub mod mrkdwn;
mod parser_guard;
mod plain;
#[cfg(test)]
mod resource_tests;

pub use plain::plain_text;

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
    let (title, title_cut) = header_title(notification);
    let note_block = note_block(note);
    let mut body = body_sections(notification);
    let mut buttons = buttons(notification, options);
    let fixed_blocks = 1 + usize::from(note_block.is_some());
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

    Rendered {
        content: SlackMessageContent::new()
            .with_text(fallback_text(&title, notification))
            .with_blocks(blocks),
        skipped_actions: buttons.skipped,
        shortened: title_cut || buttons.label_cut || shortened_note,
    }
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

/// Splits mrkdwn into pieces of at most `max` chars: at paragraph boundaries when possible,
/// else at line boundaries, else hard cuts (not inside entities, preferably not inside links).
/// A code fence split between pieces is closed and reopened.
fn split_sections(text: &str, max: usize) -> Vec<String> {
    const FENCE_ROOM: usize = 8;
    let budget = max - FENCE_ROOM;
    let mut packer = Packer {
        chunks: Vec::new(),
        cur: String::new(),
        cur_len: 0,
        budget,
    };
    for para in text.split("\n\n") {
        let len = para.chars().count();
        if packer.fits("\n\n", len) {
            packer.append("\n\n", para, len);
        } else if len <= budget {
            packer.flush();
            packer.append("", para, len);
        } else {
            for (i, line) in para.split('\n').enumerate() {
                packer.push_line(if i == 0 { "\n\n" } else { "\n" }, line);
            }
        }
    }
    packer.flush();

    // Close and reopen code fences cut between pieces.
    let mut out = Vec::new();
    let mut open = false;
    for chunk in packer.chunks {
        let mut piece = String::new();
        if open {
            piece.push_str("```\n");
        }
        for line in chunk.lines() {
            if line.trim_start_matches([' ', '>']).trim_end() == "```" {
                open = !open;
            }
        }
        piece.push_str(&chunk);
        if open {
            piece.push_str("\n```");
        }
        if !piece.trim().is_empty() {
            out.push(piece);
        }
    }
    out
}

struct Packer {
    chunks: Vec<String>,
    cur: String,
    cur_len: usize,
    budget: usize,
}

impl Packer {
    fn fits(&self, sep: &str, len: usize) -> bool {
        let sep_len = if self.cur.is_empty() { 0 } else { sep.len() };
        self.cur_len + sep_len + len <= self.budget
    }

    fn append(&mut self, sep: &str, piece: &str, len: usize) {
        if !self.cur.is_empty() {
            self.cur.push_str(sep);
            self.cur_len += sep.len();
        }
        self.cur.push_str(piece);
        self.cur_len += len;
    }

    fn flush(&mut self) {
        let chunk = std::mem::take(&mut self.cur);
        self.cur_len = 0;
        let chunk = chunk.trim_end_matches('\n');
        if !chunk.trim().is_empty() {
            self.chunks.push(chunk.to_owned());
        }
    }

    fn push_line(&mut self, sep: &str, line: &str) {
        let len = line.chars().count();
        if self.fits(sep, len) {
            self.append(sep, line, len);
            return;
        }
        self.flush();
        let mut rest = line;
        // Counted down, not recounted: a long line is cut thousands of times.
        let mut rest_len = len;
        while rest_len > self.budget {
            let (head, tail) = rest.split_at(hard_cut(rest, self.budget));
            self.chunks.push(head.to_owned());
            rest_len -= head.chars().count();
            rest = tail;
        }
        self.append("", rest, rest_len);
    }
}

/// Byte index at which to cut `s` so the head has at most `max` chars: preferably at a space,
/// never inside an entity, preferably not inside a `<…>` link. Always > 0.
fn hard_cut(s: &str, max: usize) -> usize {
    let limit = byte_index_of_char(s, max);
    let mut end = limit;
    if let Some(sp) = s[..end].rfind(' ') {
        if s[..sp].chars().count() >= max / 2 {
            end = sp + 1;
        }
    }
    if let Some(lt) = s[..end].rfind('<') {
        if !s[lt..end].contains('>') {
            if lt > 0 {
                end = lt;
            } else if let Some(gt) = s[..limit].find('>') {
                // The piece starts with a link: keep it whole (links are far shorter than a
                // section, so its end is within the limit).
                end = gt + 1;
            }
        }
    }
    let safe = entity_safe(s, end);
    if safe > 0 {
        end = safe;
    }
    if end == 0 {
        end = entity_safe(s, limit).max(1);
        while !s.is_char_boundary(end) {
            end += 1;
        }
    }
    end
}

/// Checks every Block Kit limit this renderer promises on a rendered message, and that no
/// mrkdwn text holds Slack syntax it did not build (`<!…>`, `<@…>`, `<#…>`, non-http links).
/// Returns a description of the first violation.
pub fn check_limits(content: &SlackMessageContent) -> Result<(), String> {
    let json = serde_json::to_value(content).map_err(|e| format!("not serializable: {e}"))?;
    check_top_level_text(&json)?;
    let blocks = json
        .get("blocks")
        .and_then(|b| b.as_array())
        .ok_or("blocks are missing")?;
    if blocks.len() > MAX_BLOCKS {
        return Err(format!("{} blocks (max {MAX_BLOCKS})", blocks.len()));
    }
    let mut ids = Ids::default();
    for (i, block) in blocks.iter().enumerate() {
        check_block(i, block, &mut ids)?;
    }
    Ok(())
}

/// The block and action IDs seen so far: each must be unique in the message.
#[derive(Default)]
struct Ids {
    blocks: HashSet<String>,
    actions: HashSet<String>,
}

fn check_top_level_text(json: &serde_json::Value) -> Result<(), String> {
    let text = json
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or("top-level text is missing")?;
    if text.trim().is_empty() {
        return Err("top-level text is empty".into());
    }
    if text.chars().count() > MAX_FALLBACK_TEXT {
        return Err(format!(
            "top-level text has {} chars (max {MAX_FALLBACK_TEXT})",
            text.chars().count()
        ));
    }
    check_mrkdwn("top-level text", text)
}

fn check_block(i: usize, block: &serde_json::Value, ids: &mut Ids) -> Result<(), String> {
    let kind = block.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let at = format!("block {i} ({kind})");
    if let Some(id) = block.get("block_id") {
        let id = id
            .as_str()
            .ok_or(format!("{at}: block_id is not a string"))?;
        check_len(&at, "block_id", id, MAX_ID)?;
        if !ids.blocks.insert(id.to_owned()) {
            return Err(format!("{at}: duplicate block_id {id:?}"));
        }
    }
    match kind {
        "header" => {
            let t = text_object(block.get("text"), &at, "text")?;
            if t.0 != "plain_text" {
                return Err(format!("{at}: header text is not plain_text"));
            }
            check_len(&at, "text", t.1, MAX_HEADER_TEXT)
        }
        "section" => {
            let t = text_object(block.get("text"), &at, "text")?;
            check_len(&at, "text", t.1, MAX_SECTION_TEXT)?;
            if t.0 == "mrkdwn" {
                check_mrkdwn(&at, t.1)?;
            }
            Ok(())
        }
        "context" => check_context(&at, block),
        "actions" => check_actions(&at, block, &mut ids.actions),
        other => Err(format!("{at}: unexpected block type {other:?}")),
    }
}

fn check_context(at: &str, block: &serde_json::Value) -> Result<(), String> {
    let elements = block
        .get("elements")
        .and_then(|e| e.as_array())
        .ok_or(format!("{at}: elements missing"))?;
    if elements.is_empty() || elements.len() > MAX_CONTEXT_ELEMENTS {
        return Err(format!("{at}: {} elements", elements.len()));
    }
    for el in elements {
        let t = text_object(Some(el), at, "element")?;
        check_len(at, "element text", t.1, MAX_SECTION_TEXT)?;
        if t.0 == "mrkdwn" {
            check_mrkdwn(at, t.1)?;
        }
    }
    Ok(())
}

fn check_actions(
    at: &str,
    block: &serde_json::Value,
    action_ids: &mut HashSet<String>,
) -> Result<(), String> {
    let elements = block
        .get("elements")
        .and_then(|e| e.as_array())
        .ok_or(format!("{at}: elements missing"))?;
    if elements.is_empty() || elements.len() > MAX_ACTIONS_PER_BLOCK {
        return Err(format!(
            "{at}: {} elements (max {MAX_ACTIONS_PER_BLOCK})",
            elements.len()
        ));
    }
    for (j, el) in elements.iter().enumerate() {
        let at = format!("{at} element {j}");
        let t = text_object(el.get("text"), &at, "text")?;
        check_len(&at, "button text", t.1, MAX_BUTTON_TEXT)?;
        if let Some(url) = el.get("url") {
            let url = url.as_str().ok_or(format!("{at}: url is not a string"))?;
            check_len(&at, "url", url, MAX_BUTTON_URL)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{at}: url is not http(s)"));
            }
        }
        if let Some(id) = el.get("action_id") {
            let id = id.as_str().ok_or(format!("{at}: action_id not a string"))?;
            check_len(&at, "action_id", id, MAX_ID)?;
            if !action_ids.insert(id.to_owned()) {
                return Err(format!("{at}: duplicate action_id {id:?}"));
            }
        }
    }
    Ok(())
}

fn text_object<'a>(
    value: Option<&'a serde_json::Value>,
    at: &str,
    what: &str,
) -> Result<(&'a str, &'a str), String> {
    let value = value.ok_or(format!("{at}: {what} missing"))?;
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let text = value
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or(format!("{at}: {what} has no text"))?;
    Ok((kind, text))
}

fn check_len(at: &str, what: &str, s: &str, max: usize) -> Result<(), String> {
    let n = s.chars().count();
    if n == 0 || s.trim().is_empty() {
        return Err(format!("{at}: {what} is empty"));
    }
    if n > max {
        return Err(format!("{at}: {what} has {n} chars (max {max})"));
    }
    Ok(())
}

/// Every `<` must open an http(s)/mailto link closed on the same line, without `<!`, `<@`, `<#`.
fn check_mrkdwn(at: &str, text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let after = &rest[lt + 1..];
        if !(after.starts_with("http://")
            || after.starts_with("https://")
            || after.starts_with("mailto:"))
        {
            return Err(format!("{at}: `<` that does not open a link"));
        }
        let close = after.find('>').ok_or(format!("{at}: unclosed link"))?;
        let inner = &after[..close];
        if inner.contains('<') || inner.contains('\n') {
            return Err(format!("{at}: malformed link"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(title: &str, body: &str, body_markdown: Option<&str>) -> Notification {
        Notification {
            msg_id: "m".into(),
            notification_name: "Test Notification".into(),
            template_id: None,
            user_email: "a@b.c".into(),
            user_name: None,
            user_username: None,
            actions: Vec::new(),
            title: title.into(),
            body: body.into(),
            title_markdown: None,
            body_markdown: body_markdown.map(str::to_owned),
        }
    }

    fn with_actions(mut n: Notification, actions: &[(&str, &str)]) -> Notification {
        n.actions = actions
            .iter()
            .map(|(label, url)| crate::coder::Action {
                label: (*label).into(),
                url: (*url).into(),
            })
            .collect();
        n
    }

    fn opts(base: Option<&str>) -> RenderOptions {
        RenderOptions {
            coder_url: base.map(|b| url::Url::parse(b).expect("url")),
        }
    }

    fn blocks(r: &Rendered) -> &Vec<SlackBlock> {
        r.content.blocks.as_ref().expect("blocks")
    }

    fn header_text(r: &Rendered) -> String {
        let json = serde_json::to_value(&blocks(r)[0]).expect("json");
        json["text"]["text"].as_str().expect("text").to_owned()
    }

    fn section_texts(r: &Rendered) -> Vec<String> {
        blocks(r)
            .iter()
            .filter_map(|b| match b {
                SlackBlock::Section(s) => match &s.text {
                    Some(SlackBlockText::MarkDown(m)) => Some(m.text.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn buttons(r: &Rendered) -> Vec<SlackBlockButtonElement> {
        blocks(r)
            .iter()
            .filter_map(|b| match b {
                SlackBlock::Actions(a) => Some(a.elements.clone()),
                _ => None,
            })
            .flatten()
            .filter_map(|e| match e {
                SlackActionBlockElement::Button(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn check(r: &Rendered) {
        check_limits(&r.content).unwrap_or_else(|e| panic!("limit violated: {e}"));
    }

    #[test]
    fn simple_message() {
        let n = with_actions(
            notification("Hello", "plain", Some("**bold** <x>")),
            &[("View", "https://coder.example.com/w")],
        );
        let r = render(&n, &RenderOptions::default(), None);
        check(&r);
        assert!(!r.shortened);
        assert!(r.skipped_actions.is_empty());
        assert_eq!(header_text(&r), "Hello");
        assert_eq!(section_texts(&r), vec!["*bold* &lt;x&gt;".to_owned()]);
        let b = buttons(&r);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].action_id.as_ref().map(|a| a.0.as_str()),
            Some("coder_action_0")
        );
        assert_eq!(
            b[0].url.as_ref().map(|u| u.as_str()),
            Some("https://coder.example.com/w")
        );
        assert_eq!(r.content.text.as_deref(), Some("Hello\nplain"));
    }

    #[test]
    fn plain_body_is_escaped_when_no_markdown() {
        for md in [None, Some(""), Some("  \n ")] {
            let n = notification("T", "<!channel> & <@U123> <http://evil|click> &lt;", md);
            let r = render(&n, &RenderOptions::default(), None);
            check(&r);
            assert_eq!(
                section_texts(&r),
                vec![
                    "&lt;!channel&gt; &amp; &lt;@U123&gt; &lt;http://evil|click&gt; &amp;lt;"
                        .to_owned()
                ]
            );
            let text = r.content.text.clone().unwrap_or_default();
            assert!(!text.contains("<!") && !text.contains("<@") && text.contains("&amp;lt;"));
        }
    }

    #[test]
    fn blank_body_has_no_sections() {
        let r = render(
            &notification("T", "  ", Some("")),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        assert_eq!(blocks(&r).len(), 1);
        assert_eq!(r.content.text.as_deref(), Some("T"));
    }

    #[test]
    fn title_fallbacks_and_newlines() {
        let r = render(
            &notification("  ", "b", None),
            &RenderOptions::default(),
            None,
        );
        assert_eq!(header_text(&r), "Test Notification");
        let mut n = notification("", "b", None);
        n.notification_name = " ".into();
        let r = render(&n, &RenderOptions::default(), None);
        assert_eq!(header_text(&r), "Coder notification");
        let r = render(
            &notification("a\nb\r\nc", "", None),
            &RenderOptions::default(),
            None,
        );
        assert_eq!(header_text(&r), "a b c");
        // Plain text header: not escaped; the fallback text is.
        let r = render(
            &notification("<!here> & co", "", None),
            &RenderOptions::default(),
            None,
        );
        assert_eq!(header_text(&r), "<!here> & co");
        assert_eq!(r.content.text.as_deref(), Some("&lt;!here&gt; &amp; co"));
    }

    #[test]
    fn long_title_is_cut_at_a_word() {
        let title = "word ".repeat(60);
        let r = render(
            &notification(&title, "b", None),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        let h = header_text(&r);
        assert!(h.chars().count() <= 150);
        assert!(h.ends_with("word…"), "{h}");
        assert!(r.shortened);
        let r = render(
            &notification(&"x".repeat(400), "", None),
            &RenderOptions::default(),
            None,
        );
        let h = header_text(&r);
        assert_eq!(h.chars().count(), 150);
        assert!(h.ends_with('…'));
    }

    #[test]
    fn note_follows_header_escaped() {
        let r = render(
            &notification("T", "b", None),
            &RenderOptions::default(),
            Some("Intended for <bobby@coder.com> & co"),
        );
        check(&r);
        let json = serde_json::to_value(&blocks(&r)[1]).expect("json");
        assert_eq!(json["type"], "context");
        assert_eq!(json["elements"][0]["type"], "mrkdwn");
        assert_eq!(
            json["elements"][0]["text"],
            "Intended for &lt;bobby@coder.com&gt; &amp; co"
        );
        assert!(matches!(blocks(&r)[2], SlackBlock::Section(_)));
    }

    #[test]
    fn long_body_splits_into_sections_without_loss() {
        let para = "Lorem ipsum dolor sit amet & <stuff>, consectetur adipiscing elit.";
        let body: Vec<String> = (0..600).map(|i| format!("{i} {para}")).collect();
        let body = body.join("\n\n");
        let r = render(
            &notification("T", &body, None),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        assert!(!r.shortened);
        let sections = section_texts(&r);
        assert!(
            sections.len() > 10 && sections.len() < 48,
            "{}",
            sections.len()
        );
        for s in &sections {
            assert!(s.chars().count() <= 3000);
            assert!(!s.starts_with('\n') && !s.ends_with('\n'));
        }
        assert_eq!(sections.join("\n\n"), escape(&body));
        let text = r.content.text.clone().unwrap_or_default();
        assert!(text.chars().count() <= 3000 && text.ends_with('…'));
    }

    #[test]
    fn single_long_line_is_hard_cut() {
        let body = "a".repeat(10_000);
        let r = render(
            &notification("T", &body, None),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        let sections = section_texts(&r);
        assert_eq!(sections.len(), 4);
        assert_eq!(sections.concat(), body);
        // Entities are never split.
        let body = "&".repeat(3000);
        let r = render(
            &notification("T", &body, None),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        for s in section_texts(&r) {
            assert!(s.starts_with("&amp;") && s.ends_with("&amp;"));
        }
        assert_eq!(section_texts(&r).concat(), escape(&body));
    }

    #[test]
    fn hard_cuts_avoid_links() {
        let link = "<http://x.com/aaaa|label>";
        let line = format!("{}{}", "b".repeat(2980), link);
        let cut = hard_cut(&line, 2992);
        assert_eq!(&line[cut..], link);
        let line = format!("{} {}", "b".repeat(2000), "c".repeat(2000));
        assert_eq!(hard_cut(&line, 2992), 2001);
    }

    #[test]
    fn a_long_line_starting_with_a_link_is_not_cut_inside_it() {
        // Found while fuzzing: the cut preferred the space inside the link's label.
        let markdown = format!(
            "[a b](http://e.com/{}){}",
            "x".repeat(1900),
            "z".repeat(1100)
        );
        let n = Notification::parse(
            serde_json::json!({"msg_id": "m", "payload": {"user_email": "a@b.c"}, "title": "T", "body_markdown": markdown})
                .to_string()
                .as_bytes(),
            None,
        )
        .expect("parses");
        let rendered = render(&n, &RenderOptions::default(), None);
        check_limits(&rendered.content).expect("within limits, no link cut in half");
    }

    #[test]
    fn split_code_fences_are_closed_and_reopened() {
        let code: Vec<String> = (0..400).map(|i| format!("line {i} of code")).collect();
        let md = format!("intro\n\n```\n{}\n```\n\nafter", code.join("\n"));
        let r = render(
            &notification("T", "", Some(&md)),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        let sections = section_texts(&r);
        assert!(sections.len() >= 2);
        for s in &sections {
            let fences = s.lines().filter(|l| l.trim() == "```").count();
            assert_eq!(fences % 2, 0, "unbalanced fences in {s}");
        }
    }

    #[test]
    fn huge_body_is_shortened_to_50_blocks() {
        let body: Vec<String> = (0..100)
            .map(|i| format!("{i} {}", "z".repeat(2900)))
            .collect();
        let n = with_actions(
            notification("T", &body.join("\n\n"), None),
            &[("A", "https://x.com/a")],
        );
        let r = render(&n, &RenderOptions::default(), Some("note"));
        check(&r);
        assert!(r.shortened);
        let b = blocks(&r);
        assert_eq!(b.len(), 50);
        assert!(matches!(b[0], SlackBlock::Header(_)));
        assert!(matches!(b[1], SlackBlock::Context(_)));
        assert!(matches!(b[49], SlackBlock::Actions(_)));
        let json = serde_json::to_value(&b[48]).expect("json");
        assert_eq!(json["elements"][0]["text"], SHORTENED_NOTE);
        assert_eq!(buttons(&r).len(), 1);
    }

    #[test]
    fn buttons_labels_and_ids() {
        let long = "L".repeat(200);
        let n = with_actions(
            notification("T", "b", None),
            &[
                ("", "https://x.com/1"),
                (&long, "https://x.com/2"),
                ("  ok  ", "http://x.com/3"),
            ],
        );
        let r = render(&n, &RenderOptions::default(), None);
        check(&r);
        let b = buttons(&r);
        let json = serde_json::to_value(&b).expect("json");
        assert_eq!(json[0]["text"]["text"], "Open");
        let l = json[1]["text"]["text"].as_str().expect("label");
        assert_eq!(l.chars().count(), 75);
        assert!(l.ends_with('…'));
        assert_eq!(json[2]["text"]["text"], "ok");
        assert!(r.shortened);
    }

    #[test]
    fn sixty_actions_make_three_blocks() {
        let urls: Vec<String> = (0..60).map(|i| format!("https://x.com/{i}")).collect();
        let actions: Vec<(&str, &str)> = urls.iter().map(|u| ("Go", u.as_str())).collect();
        let r = render(
            &with_actions(notification("T", "b", None), &actions),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        let actions_blocks: Vec<usize> = blocks(&r)
            .iter()
            .filter_map(|b| match b {
                SlackBlock::Actions(a) => Some(a.elements.len()),
                _ => None,
            })
            .collect();
        assert_eq!(actions_blocks, vec![25, 25, 10]);
        let ids: HashSet<String> = buttons(&r)
            .iter()
            .filter_map(|b| b.action_id.as_ref().map(|a| a.0.clone()))
            .collect();
        assert_eq!(ids.len(), 60);
        assert!(ids.contains("coder_action_59"));
        assert!(!r.shortened);
    }

    #[test]
    fn too_many_actions_are_capped() {
        let urls: Vec<String> = (0..1300).map(|i| format!("https://x.com/{i}")).collect();
        let actions: Vec<(&str, &str)> = urls.iter().map(|u| ("Go", u.as_str())).collect();
        let r = render(
            &with_actions(notification("T", "b", None), &actions),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        assert!(r.shortened);
        assert_eq!(blocks(&r).len(), 50);
        assert_eq!(section_texts(&r), vec!["b".to_owned()]);
        assert_eq!(buttons(&r).len() + r.skipped_actions.len(), 1300);
        assert!(r.skipped_actions.iter().all(|s| s.reason == SKIP_TOO_MANY));
    }

    #[test]
    fn action_urls() {
        let long = format!("https://x.com/{}", "a".repeat(4000));
        let n = with_actions(
            notification("T", "b", None),
            &[
                ("rel", "/changelog/2.30"),
                ("js", "javascript:alert(1)"),
                ("long", &long),
                ("bad", "http://[::1"),
                ("ok", "https://x.com/ok"),
                ("ftp", "ftp://x.com/f"),
                ("rel2", "changelog"),
            ],
        );
        let r = render(&n, &RenderOptions::default(), None);
        check(&r);
        assert_eq!(
            r.skipped_actions,
            vec![
                SkippedAction {
                    index: 0,
                    reason: SKIP_RELATIVE
                },
                SkippedAction {
                    index: 1,
                    reason: SKIP_SCHEME
                },
                SkippedAction {
                    index: 2,
                    reason: SKIP_LONG
                },
                SkippedAction {
                    index: 3,
                    reason: SKIP_INVALID
                },
                SkippedAction {
                    index: 5,
                    reason: SKIP_SCHEME
                },
                SkippedAction {
                    index: 6,
                    reason: SKIP_RELATIVE
                },
            ]
        );
        let b = buttons(&r);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].action_id.as_ref().map(|a| a.0.as_str()),
            Some("coder_action_4")
        );

        let r = render(&n, &opts(Some("https://coder.example.com")), None);
        check(&r);
        let urls: Vec<String> = buttons(&r)
            .iter()
            .filter_map(|b| b.url.as_ref().map(|u| u.to_string()))
            .collect();
        assert_eq!(
            urls,
            vec![
                "https://coder.example.com/changelog/2.30",
                "https://x.com/ok",
                "https://coder.example.com/changelog"
            ]
        );
        let debug = format!("{:?}", r.skipped_actions);
        assert!(!debug.contains("javascript"));
    }

    #[test]
    fn top_level_text_is_bounded() {
        let body = "<b> & ".repeat(2000);
        let r = render(
            &notification("Title", &body, None),
            &RenderOptions::default(),
            None,
        );
        check(&r);
        let text = r.content.text.clone().unwrap_or_default();
        assert!(text.chars().count() <= 3000);
        assert!(text.starts_with("Title\n&lt;b&gt; &amp; "));
        assert!(text.ends_with('…'));
        // Markdown is the fallback when the plain body is empty.
        let r = render(
            &notification("T", "", Some("**x**")),
            &RenderOptions::default(),
            None,
        );
        assert_eq!(r.content.text.as_deref(), Some("T\n**x**"));
    }

    #[test]
    fn post_message_request_settings() {
        let r = render(
            &notification("T", "b", None),
            &RenderOptions::default(),
            None,
        );
        let req = post_message_request(SlackChannelId("D123".into()), r.content.clone());
        assert_eq!(req.channel.0, "D123");
        assert_eq!(req.unfurl_links, Some(false));
        assert_eq!(req.unfurl_media, Some(false));
        assert_eq!(req.username, None);
        assert_eq!(req.icon_emoji, None);
        assert_eq!(req.icon_url, None);
        assert_eq!(req.content, r.content);
    }

    #[test]
    fn check_limits_reports_violations() {
        let bad = SlackMessageContent::new()
            .with_text("t".into())
            .with_blocks(vec![SlackBlock::Section(
                SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(
                    SlackBlockMarkDownText::new("<!channel>".into()),
                )),
            )]);
        assert!(check_limits(&bad).is_err());
        let bad = SlackMessageContent::new()
            .with_text("t".into())
            .with_blocks(vec![SlackBlock::Header(SlackHeaderBlock::new(
                "h".repeat(151).into(),
            ))]);
        assert!(check_limits(&bad).unwrap_err().contains("151"));
        let bad = SlackMessageContent::new().with_blocks(vec![]);
        assert!(check_limits(&bad).is_err());
    }

    #[test]
    fn random_hostile_markdown_stays_within_limits() {
        const PIECES: &[&str] = &[
            "<!channel>",
            "<@U1>",
            "<#C1>",
            "<http://evil|x>",
            "[x](http://a.com/|b)",
            "[l](javascript:x)",
            "<https://x.com/a>",
            "<a@b.c>",
            "![i](https://x.com/i.png)",
            "**",
            "__",
            "_",
            "*",
            "~~",
            "`",
            "```\n",
            "\n",
            "\n\n",
            "- ",
            "1. ",
            "> ",
            "    ",
            "# ",
            "&",
            "&lt;",
            "&amp;",
            "\\",
            "|",
            "<",
            ">",
            "[",
            "]",
            "(",
            ")",
            "<div>",
            "---\n",
            "| a | b |\n|---|---|\n",
            "word ",
            "ünï ",
            "🙂",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300 {
            let mut md = String::new();
            let target = if round % 10 == 0 { 20_000 } else { 400 };
            while md.len() < target {
                if rng.u8(..) < 8 {
                    md.push_str(&"y".repeat(rng.usize(100..4000)));
                } else {
                    md.push_str(PIECES[rng.usize(..PIECES.len())]);
                }
            }
            let title: String = md.chars().take(300).collect();
            let n = notification(&title, &md, Some(&md));
            let r = render(&n, &RenderOptions::default(), Some(&md));
            check_limits(&r.content).unwrap_or_else(|e| panic!("{e}\ninput: {md:?}"));
        }
    }

    fn load_samples() -> Vec<(String, Notification)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/coder-webhook-samples");
        let mut samples = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("samples folder") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == "README.md" {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            let n = Notification::parse(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            samples.push((name, n));
        }
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        samples
    }

    #[test]
    fn every_sample_renders_within_limits() {
        let samples = load_samples();
        assert_eq!(samples.len(), 68);
        for base in [None, Some("https://coder.example.com")] {
            for (name, n) in &samples {
                let r = render(n, &opts(base), Some("Intended for bobby@coder.com"));
                check_limits(&r.content).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!r.shortened, "{name}");
                let json = serde_json::to_value(&r.content).expect("json");
                let blocks = json["blocks"].as_array().expect("blocks");
                assert!(blocks.len() <= 50, "{name}");
                assert_eq!(blocks[0]["type"], "header", "{name}");
                if base.is_some() {
                    assert!(
                        r.skipped_actions.is_empty(),
                        "{name}: {:?}",
                        r.skipped_actions
                    );
                }
            }
        }
    }

    fn sample(name: &str) -> Notification {
        load_samples()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, n)| n)
            .expect("sample")
    }

    #[test]
    fn sample_builds_failed_report() {
        let r = render(
            &sample("TemplateWorkspaceBuildsFailedReport.json.golden"),
            &RenderOptions::default(),
            None,
        );
        let body = section_texts(&r).join("\n\n");
        assert!(
            body.contains("• *Bobby First Template* failed to build 4/55 times\n"),
            "{body}"
        );
        assert!(body.contains(
            "\n    • <http://test.com/@mtojek/workspace-1/builds/1234|mtojek / workspace-1 / #1234>\n"
        ));
        assert!(body.contains("\n\n*Report:*\n\n*Bobby First Template*\n\n• *bobby-template-version-1* failed 3 times:\n"));
        assert!(!body.contains("\n\n\n"));
        let b = buttons(&r);
        assert_eq!(b.len(), 1);
        assert!(b[0]
            .url
            .as_ref()
            .map(|u| u.as_str())
            .unwrap_or("")
            .starts_with("http://test.com/workspaces?filter=template%3A"));
    }

    #[test]
    fn sample_changelog_relative_url() {
        let n = sample("TemplateChangelog.json.golden");
        let r = render(&n, &RenderOptions::default(), None);
        assert_eq!(
            r.skipped_actions,
            vec![SkippedAction {
                index: 0,
                reason: SKIP_RELATIVE
            }]
        );
        assert!(buttons(&r).is_empty());
        let r = render(&n, &opts(Some("https://coder.example.com/")), None);
        assert!(r.skipped_actions.is_empty());
        assert_eq!(
            buttons(&r)[0].url.as_ref().map(|u| u.as_str()),
            Some("https://coder.example.com/changelog/2.30")
        );
        assert_eq!(header_text(&r), "2.30");
    }

    #[test]
    fn sample_otp_and_out_of_disk() {
        let r = render(
            &sample("TemplateUserRequestedOneTimePasscode.json.golden"),
            &RenderOptions::default(),
            None,
        );
        let body = section_texts(&r).join("\n\n");
        assert_eq!(
            body,
            "Use the link below to reset your password.\n\n\
             If you did not make this request, you can ignore this message."
        );
        let r = render(
            &sample("TemplateUserRequestedOneTimePasscode.golden.json"),
            &RenderOptions::default(),
            None,
        );
        let body = section_texts(&r).join("\n\n");
        assert!(
            body.contains("\n\n*fad9020b-6562-4cdb-87f1-0486f1bea415*\n\n"),
            "{body}"
        );
        let r = render(
            &sample("TemplateWorkspaceOutOfDisk_MultipleVolumes.json.golden"),
            &RenderOptions::default(),
            None,
        );
        assert_eq!(
            section_texts(&r),
            vec![
                "The following volumes are nearly full in workspace *bobby-workspace*\n\n\
                  • *`/home/coder`* is over 90% full\n\
                  • *`/dev/coder`* is over 80% full\n\
                  • *`/etc/coder`* is over 95% full"
                    .to_owned()
            ]
        );
        let r = render(
            &sample("TemplateWorkspaceResourceReplaced.json.golden"),
            &RenderOptions::default(),
            None,
        );
        let body = section_texts(&r).join("\n\n");
        assert!(body.contains("• _docker_container[0]_"), "{body}");
    }
}
