//! Keeps the Markdown parser's work linear in its input. pulldown-cmark 0.13 builds its whole
//! block tree up front and handles two shapes super-linearly; [`guard`] finds them with a
//! cheap upper bound on the parser's work and defuses them. Markdown that is not built to
//! blow up is passed through unchanged.
//!
//! Deep nesting: the parser walks every open container (block quote, list, list item) on
//! every line (`scan_containers` clears a flag on each). A line must restate its containers
//! (indentation, `>`) to stay inside them, which costs input too, except a paragraph's lazy
//! continuation lines: a few bytes each, at any depth. `"- " * 8000 + "a\n" + "b\n" * 8000`
//! (31 KiB) takes a second to parse; 1 MiB would take hours. Defused by cutting every line's
//! leading run of indentation and markers to [`MAX_RUN_COLUMNS`]: deeper levels then parse,
//! and render, at that depth.
//!
//! Padded tables: the parser adds the empty cells a short row lacks, up to 2^18 per table, so
//! a table of 512 columns with rows of one byte holds 256 nodes per byte: 190 KiB of such
//! tables take 780 MB. Defused by escaping the tables' delimiter rows (`\|---|`), which
//! leaves their text as plain paragraphs.

use std::borrow::Cow;

/// Widest leading run of indentation and markers kept in a text that nests too deep for the
/// parser: 8 levels of `- ` lists, or 16 of `>` quotes.
pub(crate) const MAX_RUN_COLUMNS: usize = 16;

/// Container steps allowed per byte of text before leading runs are cut. Ordinary Markdown
/// needs a few; deep but honest nesting (every line indented to its depth) stays below.
const STEPS_PER_BYTE: usize = 32;

/// Steps every line costs whatever its containers: its paragraph, table row and cell.
const STEPS_PER_LINE: usize = 4;

/// `markdown`, defused where the parser would take more than linear time or memory on it.
pub(crate) fn guard(markdown: &str) -> Cow<'_, str> {
    let nesting_capped = cap_deep_nesting(markdown);
    if let Cow::Owned(escaped) = escape_padded_tables(&nesting_capped) {
        return Cow::Owned(escaped);
    }
    nesting_capped
}

/// `markdown` as is when its nesting costs the parser linear time, else with every line's
/// leading run of indentation and container markers cut to [`MAX_RUN_COLUMNS`] columns.
fn cap_deep_nesting(markdown: &str) -> Cow<'_, str> {
    if container_steps(markdown) <= STEPS_PER_BYTE * markdown.len() + 4096 {
        return Cow::Borrowed(markdown);
    }
    let mut out = String::with_capacity(markdown.len());
    for line in lines(markdown) {
        let run = leading_run(line.as_bytes());
        let kept = prefix_within_columns(&line.as_bytes()[..run], MAX_RUN_COLUMNS);
        // The run is ASCII, so both cuts fall on char boundaries.
        out.push_str(&line[..kept]);
        out.push_str(&line[run..]);
    }
    Cow::Owned(out)
}

/// An upper bound on the container steps the parser takes on `markdown`: per line, the spine
/// entries (a list and its item, at most two per column of leading run) that can be open
/// while it is read, plus [`STEPS_PER_LINE`]. Containers are opened and kept open only by a
/// line's leading run; a blank line or a lazy line keeps what the line before had open.
fn container_steps(markdown: &str) -> usize {
    // Columns of leading run that can still hold containers open after the previous line.
    let mut open = 0usize;
    let mut previous_blank = true;
    let mut steps = 0usize;
    for line in lines(markdown) {
        let bytes = line.as_bytes();
        let before = open;
        let blank = is_blank(bytes);
        if !blank {
            let columns = columns(&bytes[..leading_run(bytes)]);
            // After a blank line no paragraph is open, so this line is not lazy: it holds only
            // what its own run matches or opens. Otherwise it may be a lazy continuation line.
            open = if previous_blank {
                columns
            } else {
                open.max(columns)
            };
        }
        previous_blank = blank;
        steps = steps.saturating_add(2 * before.max(open) + STEPS_PER_LINE);
    }
    steps
}

/// `markdown` as is when its tables make the parser add few empty cells, else with every
/// table delimiter row escaped, so no table is built.
fn escape_padded_tables(markdown: &str) -> Cow<'_, str> {
    if excess_padding(markdown) <= markdown.len() / 4 + 1024 {
        return Cow::Borrowed(markdown);
    }
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 16);
    for line in lines(markdown) {
        let start = container_prefix(line.as_bytes());
        if delimiter_columns(&line.as_bytes()[start..]).is_some() {
            // Starts with `|`, `:` or `-`: ASCII punctuation, which a backslash escapes.
            out.push_str(&line[..start]);
            out.push('\\');
            out.push_str(&line[start..]);
        } else {
            out.push_str(line);
        }
    }
    Cow::Owned(out)
}

/// An upper bound on the empty cells the parser adds to short table rows, beyond a quarter of
/// each row's length (which ordinary tables stay within). A row can belong to a table as wide
/// as the widest delimiter row since the last blank line, and holds at least one cell.
fn excess_padding(markdown: &str) -> usize {
    let mut widest = 0usize;
    let mut excess = 0usize;
    for line in lines(markdown) {
        let bytes = line.as_bytes();
        if is_blank(bytes) {
            widest = 0;
            continue;
        }
        if let Some(columns) = delimiter_columns(&bytes[container_prefix(bytes)..]) {
            widest = widest.max(columns);
            continue;
        }
        let padding = widest.saturating_sub(1);
        excess = excess.saturating_add(padding.saturating_sub(bytes.len() / 4));
    }
    excess
}

/// Columns of a table delimiter row (`|:--|--:|`): its `|`-separated parts holding a `-`.
/// None when the line cannot be one (a superset of what the parser takes for one).
fn delimiter_columns(line: &[u8]) -> Option<usize> {
    let row = line.strip_suffix(b"\n").unwrap_or(line);
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    let allowed = row
        .iter()
        .all(|b| matches!(b, b'|' | b'-' | b':' | b' ' | b'\t'));
    if !allowed || !row.contains(&b'|') || !row.contains(&b'-') {
        return None;
    }
    Some(
        row.split(|&b| b == b'|')
            .filter(|part| part.contains(&b'-'))
            .count(),
    )
}

/// The lines of `text`, each with its line ending (`\n`, `\r\n` or a lone `\r`, as CommonMark
/// has them).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let end = match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) if bytes[i..].starts_with(b"\r\n") => i + 2,
            Some(i) => i + 1,
            None => rest.len(),
        };
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// True for a line of spaces and tabs only: the parser takes it for blank (it takes a few
/// more, which only makes the bounds here looser).
fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Length in bytes of the line's leading run of indentation and container markers. Generous on
/// purpose (any digit, `.` or `)` counts): it bounds what the parser can read as containers.
fn leading_run(line: &[u8]) -> usize {
    line.iter()
        .position(|b| {
            !matches!(
                b,
                b' ' | b'\t' | b'\x0b' | b'\x0c' | b'>' | b'-' | b'+' | b'*' | b'.' | b')'
            ) && !b.is_ascii_digit()
        })
        .unwrap_or(line.len())
}

/// Length of the line's indentation and `>` marks: where a table row inside a block quote or
/// a list item starts.
fn container_prefix(line: &[u8]) -> usize {
    line.iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'>'))
        .unwrap_or(line.len())
}

/// Columns `run` spans, a tab counting as many as it can (4).
fn columns(run: &[u8]) -> usize {
    run.iter().map(|&b| if b == b'\t' { 4 } else { 1 }).sum()
}

/// Length of the longest prefix of `run` within `max` columns.
fn prefix_within_columns(run: &[u8], max: usize) -> usize {
    let mut used = 0;
    for (i, &b) in run.iter().enumerate() {
        used += columns(&[b]);
        if used > max {
            return i;
        }
    }
    run.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_every_kind_of_ending() {
        let split: Vec<&str> = lines("a\nb\r\nc\rd").collect();
        assert_eq!(split, vec!["a\n", "b\r\n", "c\r", "d"]);
        assert_eq!(lines("").count(), 0);
        assert_eq!(lines("\n\n").count(), 2);
    }

    #[test]
    fn leading_runs_and_columns() {
        assert_eq!(leading_run(b"- - > 1. a"), 9);
        assert_eq!(leading_run(b"text"), 0);
        assert_eq!(leading_run(b"  \t- "), 5);
        assert_eq!(columns(b"  \t- "), 8);
        assert_eq!(prefix_within_columns(b"- - - ", 4), 4);
        assert_eq!(prefix_within_columns(b"  \t", 4), 2);
        assert_eq!(prefix_within_columns(b"- ", 16), 2);
        assert_eq!(container_prefix(b" > > |-|"), 5);
    }

    #[test]
    fn delimiter_rows() {
        assert_eq!(delimiter_columns(b"|---|:--:|\n"), Some(2));
        assert_eq!(delimiter_columns(b"--- | ---\r\n"), Some(2));
        assert_eq!(delimiter_columns(b"|-|-|-|"), Some(3));
        assert_eq!(delimiter_columns(b"---\n"), None);
        assert_eq!(delimiter_columns(b"| a | b |\n"), None);
    }

    #[test]
    fn ordinary_markdown_is_left_alone() {
        let samples = [
            "# Title\n\nSome **bold** text.\n\n- a\n  - b\n    - c\n- d\n",
            "> quoted\n> > twice\n\n1. one\n2. two\n",
            "```\n                                        deep code\n```\n",
            "| a | b | c | d |\n|---|---|---|---|\n| 1 | 2 | 3 | 4 |\n| 5 |\n",
            "|1|2|3|4|5|6|\n|-|-|-|-|-|-|\n|1|2|3|4|5|6|\n|1|2|3|4|5|6|\n",
        ];
        for md in samples {
            assert!(matches!(guard(md), Cow::Borrowed(_)), "{md:?}");
        }
        // Long flat lists, paragraphs and tables stay cheap, however many lines.
        let long = [
            "- item\n".repeat(50_000),
            "word word\n".repeat(50_000),
            format!("|a|b|c|\n|-|-|-|\n{}", "|1|2|3|\n".repeat(50_000)),
        ];
        for md in long {
            assert!(matches!(guard(&md), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn deep_nesting_with_lazy_lines_is_cut_to_the_cap() {
        for ending in ["\n", "\r\n", "\r"] {
            let md = format!(
                "{}a{ending}{}",
                "- ".repeat(8000),
                format!("b{ending}").repeat(8000)
            );
            let guarded = guard(&md);
            assert!(matches!(guarded, Cow::Owned(_)), "{ending:?}");
            let first = lines(&guarded).next().unwrap_or_default();
            assert_eq!(first, format!("{}a{ending}", "- ".repeat(8)));
            // Only the markers past the cap are gone.
            assert_eq!(guarded.len(), md.len() - 2 * (8000 - 8));
            // Cut, the text costs the parser a bounded number of steps per line.
            let lines = lines(&guarded).count();
            assert!(container_steps(&guarded) <= (2 * MAX_RUN_COLUMNS + STEPS_PER_LINE) * lines);
        }
        let quotes = format!("{}a\n{}", "> ".repeat(8000), "b\n".repeat(8000));
        assert!(matches!(guard(&quotes), Cow::Owned(_)));
    }

    #[test]
    fn blank_lines_do_not_hide_open_containers() {
        // Lists stay open over blank lines; the lazy lines after the next paragraph line still
        // run at full depth.
        let md = format!(
            "{}a\n\n{}x\n{}",
            "- ".repeat(4000),
            "  ".repeat(4000),
            "b\n".repeat(8000)
        );
        assert!(matches!(guard(&md), Cow::Owned(_)));
    }

    #[test]
    fn padded_tables_lose_their_delimiter_rows() {
        let table = format!(
            "{}\n{}\n{}\n",
            "|a".repeat(512),
            "|-".repeat(512),
            "x\n".repeat(512)
        );
        let md = table.repeat(8);
        let guarded = guard(&md);
        assert_eq!(guarded.len(), md.len() + 8);
        assert_eq!(guarded.matches("\n\\|-|-").count(), 8);
        // In a quote or a list item too, and however the header is spelled.
        let quoted = format!("> a|b\n> {}\n{}", "|-".repeat(512), "> x\n".repeat(512));
        assert!(guard(&quoted).contains("> \\|-|-"));
    }
}
