//! Text from Coder is untrusted: a workspace name, a template's body or a button label can
//! carry characters that Slack shows misleadingly (a bidirectional override reverses a name
//! on screen) or that no notification needs (terminal colours from a build log, control
//! characters). [`clean`] removes them; `coder` applies it to every text field as it parses a
//! notification, so nothing downstream (render, cards, the store, the App Home) sees them.

use std::borrow::Cow;

const ESC: char = '\u{1b}';
/// C1's single-character forms of ESC `[` and ESC `]`.
const C1_CSI: char = '\u{9b}';
const C1_OSC: char = '\u{9d}';
/// C1's string terminator (ESC `\` in 7 bits).
const C1_ST: char = '\u{9c}';
const BEL: char = '\u{07}';

/// `text` without control characters (C0 but newline and tab, DEL, C1), ANSI escape
/// sequences (each removed whole: `ESC [ 1;31 m`, `ESC ] … BEL`, `ESC ( B`), or the marks,
/// embeddings, overrides and isolates of bidirectional text. Borrowed when there is nothing
/// to remove, which is almost always.
pub fn clean(text: &str) -> Cow<'_, str> {
    if is_clean(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ESC => skip_escape(&mut chars),
            C1_CSI => skip_csi(&mut chars),
            C1_OSC => skip_string(&mut chars),
            c if is_removed(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether [`clean`] would leave `text` as it is.
pub fn is_clean(text: &str) -> bool {
    // Most text is ASCII, where only the C0 controls (but newline and tab) and DEL are
    // removed: a byte scan, without decoding characters.
    if text.is_ascii() {
        return !text
            .bytes()
            .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f);
    }
    !text.chars().any(is_removed)
}

/// [`clean`], owned.
pub fn cleaned(text: String) -> String {
    match clean(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cleaned) => cleaned,
    }
}

/// Whether `c` is dropped wherever it stands: a control character but newline and tab, or a
/// bidirectional mark (LRM, RLM, ALM), embedding, override or isolate.
fn is_removed(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After an ESC: the rest of its sequence, as a terminal would read it.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        // OSC (a title, a hyperlink), DCS, SOS, PM, APC: a string up to its terminator.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_string(chars);
        }
        // Any other: intermediates (`(`, `#`, …), then one final character (`ESC ( B`, `ESC c`).
        _ => {
            while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
            chars.next_if(|c| ('0'..='~').contains(c));
        }
    }
}

/// A control sequence's parameters and intermediates, then its final character
/// (`1;31` `m`). A sequence broken off by anything else ends there; that character stays.
fn skip_csi(chars: &mut Chars<'_>) {
    while chars.next_if(|c| (' '..='?').contains(c)).is_some() {}
    chars.next_if(|c| ('@'..='~').contains(c));
}

/// A control string, up to and with its terminator (BEL, ESC `\`, or C1's ST); an
/// unterminated one ends at the line's end, so a stray introducer cannot hide the rest.
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.peek().copied() {
        match c {
            '\n' => return,
            BEL | C1_ST => {
                chars.next();
                return;
            }
            ESC => {
                chars.next();
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {
                chars.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_slack_would_show_misleadingly_is_removed() {
        let cases = [
            // Nothing to remove: the same text, borrowed.
            ("bobby-workspace", "bobby-workspace"),
            ("Line one\n\tindented", "Line one\n\tindented"),
            ("naïve café – 日本語 👍", "naïve café – 日本語 👍"),
            // C0 controls but newline and tab; DEL; C1.
            ("a\u{0}b\u{7}c\u{8}d\re\u{1f}f", "abcdef"),
            ("crlf\r\nline", "crlf\nline"),
            ("del\u{7f}ete", "delete"),
            ("c1\u{80}\u{85}\u{9f}end", "c1end"),
            // ANSI escape sequences, removed whole.
            ("\u{1b}[31merror\u{1b}[0m: failed", "error: failed"),
            ("\u{1b}[1;38;5;196mred\u{1b}[m", "red"),
            ("\u{1b}[2K\u{1b}[1Aup", "up"),
            ("\u{9b}32mgreen\u{9b}0m", "green"),
            ("\u{1b}]0;title\u{7}text", "text"),
            (
                "\u{1b}]8;;http://evil.example\u{1b}\\click\u{1b}]8;;\u{1b}\\",
                "click",
            ),
            ("\u{9d}8;;http://x\u{9c}link", "link"),
            ("\u{1b}(Bplain\u{1b}c", "plain"),
            ("\u{1b}]unterminated\nnext line", "\nnext line"),
            ("trailing\u{1b}", "trailing"),
            ("\u{1b}[", ""),
            ("\u{1b}[31", ""),
            ("\u{1b}[31\u{e9}t\u{e9}", "\u{e9}t\u{e9}"),
            // Bidirectional marks, embeddings, overrides and isolates.
            ("dev\u{202e}live\u{202c}", "devlive"),
            ("\u{202a}a\u{202b}b\u{202d}c\u{202c}", "abc"),
            ("\u{2066}x\u{2067}y\u{2068}z\u{2069}", "xyz"),
            ("a\u{200e}b\u{200f}c\u{61c}d", "abcd"),
            // The rest of Unicode's invisible formatting is not a reordering: kept.
            ("zero\u{200b}width", "zero\u{200b}width"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "{input:?}");
            assert_eq!(cleaned(input.to_owned()), expected, "{input:?}");
        }
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_rule_for_every_ascii_char() {
        for c in (0..0x80u8).map(char::from) {
            let text = format!("a{c}b");
            assert_eq!(is_clean(&text), !is_removed(c), "{c:?}");
        }
    }

    #[test]
    fn cleaning_is_idempotent_on_every_char() {
        let every: String = (0..=0x3000u32).filter_map(char::from_u32).collect();
        let once = clean(&every).into_owned();
        assert!(!once.chars().any(is_removed));
        assert_eq!(clean(&once), once);
    }
}
