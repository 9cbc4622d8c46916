//! Rendering is bounded by what a message can carry, not by the input: adversarial bodies up to
//! the 1 MiB webhook limit render within every Block Kit limit, holding a bounded amount of
//! heap (counted by `heap_meter`) and producing bounded output. No wall-clock timings: the
//! machine running the tests is shared; memory and sizes are deterministic.

use super::heap_meter::peak_heap;
use super::mrkdwn::{convert_within, Limits, MAX_LIST_INDENT};
use super::tests::section_texts;
use super::*;

/// The webhook body limit (`http::MAX_BODY_BYTES`): the largest body a notification comes in.
const MIB: usize = 1 << 20;

/// Most heap one render of a 1 MiB notification may hold at once (allocated, not necessarily
/// touched). The parse tree of the body's head is most of it; before the bounds, the audit's
/// 31 KiB body alone needed 504 MB.
const MAX_RENDER_HEAP: usize = 24 << 20;

/// Widest line prefix a list can give: a quote mark, the outer columns and the innermost
/// marker (numbers up to 9 digits, as CommonMark allows for a list start, plus the items).
const MAX_PREFIX: usize = 2 + (MAX_LIST_INDENT - 1) * 12 + 12;

fn notification(body_markdown: Option<String>, body: String) -> Notification {
    Notification {
        labels: Default::default(),
        data: serde_json::Value::Null,
        msg_id: "m".into(),
        notification_name: "Worst case".into(),
        template_id: None,
        user_id: None,
        first_target: None,
        user_email: "a@b.c".into(),
        user_name: None,
        user_username: None,
        actions: Vec::new(),
        title: "Worst case".into(),
        body,
        title_markdown: None,
        body_markdown,
        kind: Default::default(),
    }
}

/// Renders `n` (with a note) and checks it: every Block Kit limit, and the heap it held.
fn render_checked(name: &str, n: &Notification) -> Rendered {
    let options = RenderOptions {
        snooze: false,
        coder_url: Some(url::Url::parse("https://coder.example.com").expect("url")),
    };
    let (r, peak) = peak_heap(|| render(n, &options, Some("Intended for a@b.c")));
    check_limits(&r.content).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        peak <= MAX_RENDER_HEAP,
        "{name}: held {} KiB at once",
        peak >> 10
    );
    r
}

/// Chars of the line's prefix: quote mark, list markers and indentation.
fn prefix_width(line: &str) -> usize {
    line.chars()
        .take_while(|c| matches!(c, ' ' | '>' | '•' | '.') || c.is_ascii_digit())
        .count()
}

/// The audit's input: nested list markers, then continuation lines at the innermost level.
fn nested_list(depth: usize, lines: usize) -> String {
    format!("{}a\n{}", "- ".repeat(depth), "b\n".repeat(lines))
}

#[test]
fn audit_nested_list_renders_at_the_indentation_cap() {
    // The audit's 31 KiB body, and 1 MiB with the markers within the parsed head.
    for (depth, lines) in [(8000, 8000), (MIB / 16, 3 * MIB / 8)] {
        let md = nested_list(depth, lines);
        let r = render_checked("nested list", &notification(Some(md.clone()), "b".into()));
        assert!(r.shortened);
        assert_eq!(r.content.blocks.as_ref().map(Vec::len), Some(MAX_BLOCKS));
        let sections = section_texts(&r);
        let first = sections[0].lines().next().unwrap_or_default();
        assert_eq!(first, format!("{}• a", "•   ".repeat(MAX_LIST_INDENT - 1)));
        for line in sections.iter().flat_map(|s| s.lines()) {
            assert!(prefix_width(line) <= MAX_PREFIX, "{line:?}");
        }
        // Converting stops at MAX_BODY_TEXT chars: the 31 KiB body fits (its 8000 lines at
        // the cap), the 1 MiB one does not.
        let converted = convert_within(&md, BODY_LIMITS);
        assert!(converted.text.chars().count() <= MAX_BODY_TEXT);
        assert_eq!(converted.cut, depth > 8000);
    }
    // Scaled as is to 1 MiB, its markers alone fill the parsed head: nothing else is read.
    let md = nested_list(MIB / 4, MIB / 4);
    let r = render_checked("nested list", &notification(Some(md), "b".into()));
    assert!(r.shortened);
}

/// 1 MiB bodies, each built to hit one super-linear path of a Markdown parser or converter:
/// nesting of blocks and inlines.
fn nested_markdown() -> Vec<(&'static str, String)> {
    let quarter = MIB / 4;
    vec![
        ("nested lists, \\r line ends", {
            format!("{}a\r{}", "- ".repeat(MIB / 16), "b\r".repeat(3 * MIB / 8))
        }),
        ("nested ordered lists", {
            format!(
                "{}a\n{}",
                "1. ".repeat(MIB / 24),
                "b\n".repeat(7 * MIB / 16)
            )
        }),
        ("nested quotes", {
            format!("{}a\n{}", "> ".repeat(MIB / 16), "b\n".repeat(3 * MIB / 8))
        }),
        ("quote marks", ">".repeat(MIB)),
        ("indented lists", {
            (0..1000)
                .map(|i| format!("{}- a\n", "  ".repeat(i)))
                .collect()
        }),
        ("open brackets", "[".repeat(MIB)),
        ("nested brackets", {
            format!("{}a{}", "[".repeat(MIB / 2), "]".repeat(MIB / 2))
        }),
        ("nested images", {
            format!(
                "{}{}",
                "![x".repeat(MIB / 8),
                "](http://x.co)".repeat(MIB / 28)
            )
        }),
        ("link openers", "[a](<b".repeat(MIB / 6)),
        ("nested emphasis", {
            format!(
                "{}b{}",
                "*a **a ".repeat(MIB / 14),
                " a** a*".repeat(MIB / 14)
            )
        }),
        ("emphasis across lines", {
            format!(
                "{}{}{}",
                "**~~_".repeat(MIB / 20),
                "a\n".repeat(quarter),
                "_~~**".repeat(MIB / 20)
            )
        }),
    ]
}

/// 1 MiB bodies built to hit super-linear paths: long lines, many lines, tables, escaping.
fn wide_markdown() -> Vec<(&'static str, String)> {
    vec![
        (
            "backtick runs",
            (1..1400).map(|i| format!("e{}", "`".repeat(i))).collect(),
        ),
        ("one line", "a".repeat(MIB)),
        ("one line of spaces", format!("a{}b", " ".repeat(MIB))),
        ("ampersands", "&".repeat(MIB)),
        ("less-than signs", "<".repeat(MIB)),
        ("tiny paragraphs", "a\n\n".repeat(MIB / 3)),
        (
            "blank code lines",
            format!("```\n{}x\n```\n", "\n".repeat(MIB)),
        ),
        ("wide table", {
            format!(
                "{}\n{}\n{}",
                "|a".repeat(2000),
                "|-".repeat(2000),
                "x\n".repeat(MIB / 2)
            )
        }),
        ("padded tables", {
            let table = format!(
                "{}\n{}\n{}\n",
                "|a".repeat(512),
                "|-".repeat(512),
                "x\n".repeat(512)
            );
            table.repeat(MIB / table.len())
        }),
        ("table cells", format!("|a|\n|-|\n{}", "|".repeat(MIB))),
        (
            "long link label",
            format!("[{}](http://x.com/)", "l ".repeat(MIB / 2)),
        ),
        ("hard breaks", "a\\\n".repeat(MIB / 3)),
        ("html lines", format!("<div>\n{}", "<b>\n".repeat(MIB / 4))),
    ]
}

/// Renders each body within bounds; list prefixes stay within the cap.
fn render_all_checked(cases: Vec<(&'static str, String)>) {
    for (name, md) in cases {
        let r = render_checked(name, &notification(Some(md), "b".into()));
        let sections = section_texts(&r);
        assert!(!sections.is_empty(), "{name}");
        for line in sections.iter().flat_map(|s| s.lines()) {
            assert!(
                prefix_width(line) <= MAX_PREFIX || !line.contains('•'),
                "{name}: {line:?}"
            );
        }
    }
}

#[test]
fn deeply_nested_bodies_render_within_bounds() {
    render_all_checked(nested_markdown());
}

#[test]
fn long_and_wide_bodies_render_within_bounds() {
    render_all_checked(wide_markdown());
}

#[test]
fn huge_plain_body_title_and_actions_render_within_bounds() {
    let r = render_checked("plain body", &notification(None, "&".repeat(MIB)));
    assert!(r.shortened);
    assert!(section_texts(&r)[0].starts_with("&amp;&amp;"));

    let mut n = notification(None, "b".into());
    n.title = "t ".repeat(MIB / 2);
    let r = render_checked("title", &n);
    assert!(r.shortened);

    let mut n = notification(None, "b".into());
    n.actions = (0..MIB / 24)
        .map(|i| crate::coder::Action {
            label: "Go ".repeat(i % 50),
            url: format!("https://x.com/{i}"),
        })
        .collect();
    let r = render_checked("actions", &n);
    // Header, note, one section and the shortened note leave 46 actions blocks.
    assert_eq!(
        r.skipped_actions.len(),
        n.actions.len() - 46 * MAX_ACTIONS_PER_BLOCK
    );
}

#[test]
fn conversion_stops_once_the_output_is_full() {
    let md = "Some *text* and a [link](https://x.com/a).\n\n".repeat(20_000);
    let limits = Limits {
        markdown_bytes: 20_000,
        mrkdwn_chars: 10_000,
    };
    let (converted, peak) = peak_heap(|| convert_within(&md, limits));
    assert!(converted.cut);
    let len = converted.text.chars().count();
    assert!((9_000..=10_000).contains(&len), "{len}");
    // Only the head of 20 000 bytes is parsed, not the 900 KB: the heap shows it.
    assert!(peak < 1 << 20, "{peak}");
    // A text that fits is whole, and not cut.
    let whole = convert_within("a\n\nb", limits);
    assert_eq!((whole.text.as_str(), whole.cut), ("a\n\nb", false));
}

#[test]
fn a_long_line_is_split_into_full_sections() {
    let line = "word ".repeat(MIB / 5);
    let sections = split_sections(&line, MAX_SECTION_TEXT);
    assert_eq!(sections.concat(), line);
    assert!(sections
        .iter()
        .all(|s| (MAX_SECTION_TEXT / 2..=MAX_SECTION_TEXT).contains(&s.chars().count())));
}

/// The unbounded formulas the bounded helpers replace, for comparison.
fn fallback_text_whole(title: &str, body: &str) -> String {
    let mut text = escape(title);
    if !body.is_empty() {
        text.push('\n');
        text.push_str(&escape(body));
    }
    cut_escaped(&text, MAX_FALLBACK_TEXT)
}

fn title_whole(title: &str) -> (String, bool) {
    let collapsed = title.split_whitespace().collect::<Vec<_>>().join(" ");
    cut_words(&collapsed, MAX_HEADER_TEXT)
}

#[test]
fn bounded_helpers_match_the_whole_text_formulas() {
    let mut rng = fastrand::Rng::with_seed(11);
    let pieces = ["a", "&", "<", "ü", " ", "  \n ", "word", "\t"];
    for _ in 0..400 {
        let len = [10, 140, 160, 2990, 3010, 9000][rng.usize(..6)];
        let mut text = String::new();
        while text.chars().count() < len {
            text.push_str(pieces[rng.usize(..pieces.len())]);
        }
        for title in ["T", "Title <x>"] {
            let mut n = notification(None, text.clone());
            n.title = title.into();
            assert_eq!(
                fallback_text(title, &n),
                fallback_text_whole(title, text.trim()),
                "{text:?}"
            );
        }
        let mut n = notification(None, "b".into());
        n.title = text.clone();
        let expected = title_whole(&text);
        if !expected.0.is_empty() {
            assert_eq!(header_title(&n), expected, "{text:?}");
        }
    }
}
