//! The Block Kit limits this renderer promises, checked on any rendered message: by the tests,
//! the fuzz targets and `preview`'s users, never on the hot path.

use super::*;

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
