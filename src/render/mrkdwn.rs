//! Markdown (as Coder writes it) → Slack mrkdwn, and mrkdwn escaping.
//!
//! Everything taken from the input is escaped (`&`, `<`, `>`), so the only `<…>` sequences in
//! the output are links this module builds from real Markdown links, and only to http(s) or
//! mailto URLs. Nothing from the input can become `<!channel>`, `<@U123>` or a disguised link.

use super::parser_guard::guard;
use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

/// Longest link URL (as sent) rendered as a link; longer ones render as their text.
const MAX_LINK_URL: usize = 2000;
/// Longest link label (escaped chars); longer ones are cut with `…`.
const MAX_LINK_LABEL: usize = 500;

/// Escapes text for Slack mrkdwn: `&` → `&amp;` (first), `<` → `&lt;`, `>` → `&gt;`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Converts Markdown to Slack mrkdwn. See the module documentation for the safety rules.
pub fn markdown_to_mrkdwn(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TABLES);
    let mut conv = Converter::default();
    // Defused first: the parser is super-linear on some shapes (see `parser_guard`).
    let markdown = guard(markdown);
    for event in Parser::new_ext(&markdown, options) {
        conv.event(event);
    }
    conv.finish()
}

/// Cuts escaped mrkdwn text to at most `max` chars (including the `…`), never inside an
/// `&amp;`-style entity. Returns the text unchanged when it fits.
pub(crate) fn cut_escaped(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut end = byte_index_of_char(text, max.saturating_sub(1));
    end = entity_safe(text, end);
    let mut out = text[..end].trim_end().to_owned();
    out.push('…');
    out
}

/// Byte index of the `n`-th char (or the string's length).
pub(crate) fn byte_index_of_char(text: &str, n: usize) -> usize {
    text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)
}

/// Moves a cut point back so that it does not fall inside an `&…;` entity.
pub(crate) fn entity_safe(text: &str, end: usize) -> usize {
    let head = &text[..end];
    if let Some(amp) = head.rfind('&') {
        if end - amp < 8 && !head[amp..].contains(';') {
            return amp;
        }
    }
    end
}

/// The URL to put inside `<…>`, or None when the destination must not become a link.
fn link_url(dest: &str) -> Option<String> {
    let parsed = url::Url::parse(dest.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https" | "mailto") {
        return None;
    }
    let mut out = String::with_capacity(parsed.as_str().len());
    for c in parsed.as_str().chars() {
        match c {
            '|' => out.push_str("%7C"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() || c.is_whitespace() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    (out.chars().count() <= MAX_LINK_URL).then_some(out)
}

struct ListLevel {
    next: Option<u64>,
    /// Marker still to be written on the item's first line.
    marker: Option<String>,
    /// Width of the current item's marker, for continuation lines.
    width: usize,
}

struct LinkState {
    dest: String,
    link_type: LinkType,
    /// Escaped label.
    label: String,
    /// Raw label text, to compare with the URL.
    plain: String,
}

#[derive(Default)]
struct Converter {
    out: String,
    /// Line break owed before the next output: 0 none, 1 newline, 2 blank line.
    pending: u8,
    at_line_start: bool,
    started: bool,
    last_line_quoted: bool,
    quote: usize,
    lists: Vec<ListLevel>,
    /// Open inline formats: marker and whether it was written.
    formats: Vec<(&'static str, bool)>,
    links: Vec<LinkState>,
    code_block: Option<String>,
    html_block: Option<String>,
    table_cell: usize,
}

impl Converter {
    fn sep(&mut self, n: u8) {
        self.pending = self.pending.max(n);
    }

    fn block_sep(&mut self) {
        self.sep(if self.lists.is_empty() { 2 } else { 1 });
    }

    /// Settles owed line breaks and writes the line prefix when at a line start.
    fn begin(&mut self) {
        if !self.started {
            self.started = true;
            self.at_line_start = true;
        } else if self.pending > 0 {
            self.out.push('\n');
            if self.pending > 1 {
                if self.quote > 0 && self.last_line_quoted {
                    self.out.push('>');
                }
                self.out.push('\n');
            }
            self.at_line_start = true;
        }
        self.pending = 0;
        if self.at_line_start {
            self.at_line_start = false;
            self.last_line_quoted = self.quote > 0;
            let prefix = self.prefix();
            self.out.push_str(&prefix);
        }
    }

    fn prefix(&mut self) -> String {
        let mut p = String::new();
        if self.quote > 0 {
            p.push_str("> ");
        }
        let n = self.lists.len();
        for (i, level) in self.lists.iter_mut().enumerate() {
            let innermost = i + 1 == n;
            match level.marker.take() {
                Some(m) if innermost => p.push_str(&m),
                Some(m) => p.push_str(&format!("{m:<4}")),
                None if innermost => p.push_str(&" ".repeat(level.width)),
                None => p.push_str("    "),
            }
        }
        p
    }

    /// Writes escaped inline text without newlines.
    fn write(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(link) = self.links.last_mut() {
            link.label.push_str(s);
            return;
        }
        self.begin();
        self.out.push_str(s);
    }

    /// Writes raw text (escaping it); newlines become line breaks.
    fn text(&mut self, raw: &str) {
        if let Some(link) = self.links.last_mut() {
            let flat = raw.replace(['\n', '\r'], " ");
            link.plain.push_str(&flat);
            link.label.push_str(&escape(&flat));
            return;
        }
        for (i, line) in raw.split('\n').enumerate() {
            if i > 0 {
                self.line_break();
            }
            self.write(&escape(line));
        }
    }

    fn line_break(&mut self) {
        if let Some(link) = self.links.last_mut() {
            link.plain.push(' ');
            link.label.push(' ');
            return;
        }
        let open: Vec<&'static str> = self
            .formats
            .iter()
            .filter(|(_, written)| *written)
            .map(|(m, _)| *m)
            .collect();
        for m in open.iter().rev() {
            self.write(m);
        }
        self.sep(1);
        for m in &open {
            self.write(m);
        }
    }

    /// Writes a whole line (already escaped) on its own line, even when empty.
    fn line(&mut self, s: &str) {
        self.sep(1);
        self.begin();
        self.out.push_str(s);
    }

    fn open_format(&mut self, marker: &'static str) {
        let write = self.links.is_empty() && !self.formats.iter().any(|(m, w)| *m == marker && *w);
        self.formats.push((marker, write));
        if write {
            self.write(marker);
        }
    }

    fn close_format(&mut self) {
        if let Some((marker, true)) = self.formats.pop() {
            self.write(marker);
        }
    }

    fn end_link(&mut self) {
        let Some(link) = self.links.pop() else {
            return;
        };
        if let Some(outer) = self.links.last_mut() {
            outer.label.push_str(&link.label);
            outer.plain.push_str(&link.plain);
            return;
        }
        let rendered = render_link(&link);
        self.write(&rendered);
    }

    fn event(&mut self, event: Event<'_>) {
        if let Some(code) = self.code_block.as_mut() {
            match event {
                Event::Text(t) => code.push_str(&t),
                Event::End(TagEnd::CodeBlock) => {
                    let code = self.code_block.take().unwrap_or_default();
                    let code = code.strip_suffix('\n').unwrap_or(&code);
                    if !code.is_empty() {
                        self.line("```");
                        for l in code.split('\n') {
                            self.line(&escape(l.trim_end_matches('\r')));
                        }
                        self.line("```");
                    }
                }
                _ => {}
            }
            return;
        }
        if let Some(html) = self.html_block.as_mut() {
            match event {
                Event::Html(t) | Event::Text(t) => html.push_str(&t),
                Event::End(TagEnd::HtmlBlock) => {
                    let html = self.html_block.take().unwrap_or_default();
                    for l in html.trim_end_matches('\n').split('\n') {
                        self.line(&escape(l.trim_end_matches('\r')));
                    }
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.text(&t),
            Event::Code(c) => {
                if self.links.is_empty() {
                    self.write(&format!("`{}`", escape(&c)));
                } else {
                    self.text(&c);
                }
            }
            Event::InlineMath(c) | Event::DisplayMath(c) => self.text(&c),
            Event::Html(h) | Event::InlineHtml(h) => self.text(&h),
            Event::FootnoteReference(f) => self.text(&format!("[^{f}]")),
            Event::SoftBreak | Event::HardBreak => self.line_break(),
            Event::Rule => {
                self.block_sep();
                self.write("──────────");
            }
            Event::TaskListMarker(done) => self.write(if done { "☑ " } else { "☐ " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => self.block_sep(),
            Tag::Heading { .. } => {
                self.block_sep();
                self.open_format("*");
            }
            Tag::BlockQuote(_) => {
                self.block_sep();
                self.quote += 1;
            }
            Tag::CodeBlock(_) => {
                self.block_sep();
                self.code_block = Some(String::new());
            }
            Tag::HtmlBlock => {
                self.block_sep();
                self.html_block = Some(String::new());
            }
            Tag::List(start) => {
                self.block_sep();
                self.lists.push(ListLevel {
                    next: start,
                    marker: None,
                    width: 2,
                });
            }
            Tag::Item => {
                self.sep(1);
                if let Some(level) = self.lists.last_mut() {
                    let marker = match level.next.as_mut() {
                        Some(n) => {
                            let m = format!("{n}. ");
                            *n += 1;
                            m
                        }
                        None => "• ".to_owned(),
                    };
                    level.width = marker.chars().count();
                    level.marker = Some(marker);
                }
            }
            Tag::Table(_) => self.block_sep(),
            Tag::TableHead | Tag::TableRow => {
                self.sep(1);
                self.table_cell = 0;
            }
            Tag::TableCell => {
                if self.table_cell > 0 {
                    self.write(" | ");
                }
                self.table_cell += 1;
            }
            Tag::Emphasis => self.open_format("_"),
            Tag::Strong => self.open_format("*"),
            Tag::Strikethrough => self.open_format("~"),
            Tag::Superscript | Tag::Subscript => self.formats.push(("", false)),
            Tag::Link {
                link_type,
                dest_url,
                ..
            }
            | Tag::Image {
                link_type,
                dest_url,
                ..
            } => self.links.push(LinkState {
                dest: dest_url.to_string(),
                link_type,
                label: String::new(),
                plain: String::new(),
            }),
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_)
            | TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript => self.close_format(),
            TagEnd::BlockQuote(_) => {
                self.quote = self.quote.saturating_sub(1);
                self.block_sep();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.block_sep();
            }
            TagEnd::Item => {
                if let Some(level) = self.lists.last_mut() {
                    level.marker = None;
                }
            }
            TagEnd::Link | TagEnd::Image => self.end_link(),
            _ => {}
        }
    }

    fn finish(mut self) -> String {
        while !self.links.is_empty() {
            self.end_link();
        }
        let lines: Vec<&str> = self.out.lines().collect();
        let first = lines.iter().position(|l| !l.trim().is_empty());
        let last = lines.iter().rposition(|l| !l.trim().is_empty());
        match (first, last) {
            (Some(a), Some(b)) => lines[a..=b]
                .iter()
                .map(|l| l.trim_end())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

fn render_link(link: &LinkState) -> String {
    let url_text = match link.link_type {
        LinkType::Email if !link.dest.starts_with("mailto:") => format!("mailto:{}", link.dest),
        _ => link.dest.clone(),
    };
    let label = cut_escaped(link.label.trim(), MAX_LINK_LABEL);
    let Some(url) = link_url(&url_text) else {
        return label;
    };
    let plain = link.plain.trim();
    // An e-mail autolink keeps its address as the label (not "mailto:…").
    let bare = label.is_empty()
        || (link.link_type != LinkType::Email
            && (link.link_type == LinkType::Autolink
                || plain == link.dest.trim()
                || plain == url_text.trim()
                || plain == url));
    if bare {
        format!("<{url}>")
    } else {
        format!("<{url}|{label}>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(s: &str) -> String {
        markdown_to_mrkdwn(s)
    }

    #[test]
    fn escape_order_and_hostile_text() {
        assert_eq!(escape("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(escape("&lt;"), "&amp;lt;");
        assert_eq!(escape("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(escape("<@U123>"), "&lt;@U123&gt;");
        assert_eq!(escape("<http://evil|click>"), "&lt;http://evil|click&gt;");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn emphasis() {
        assert_eq!(md("**bold** and __bold__"), "*bold* and *bold*");
        assert_eq!(md("*it* and _it_"), "_it_ and _it_");
        assert_eq!(md("~~gone~~"), "~gone~");
        assert_eq!(md("**bold _both_**"), "*bold _both_*");
        assert_eq!(md("**a\nb**"), "*a*\n*b*");
    }

    #[test]
    fn links() {
        assert_eq!(md("[text](https://x.com/a)"), "<https://x.com/a|text>");
        assert_eq!(
            md("[https://x.com/a](https://x.com/a)"),
            "<https://x.com/a>"
        );
        assert_eq!(md("<https://x.com/a>"), "<https://x.com/a>");
        assert_eq!(md("[](https://x.com/)"), "<https://x.com/>");
        assert_eq!(
            md("<bob@example.com>"),
            "<mailto:bob@example.com|bob@example.com>"
        );
        assert_eq!(md("[mail](mailto:a@b.c)"), "<mailto:a@b.c|mail>");
        assert_eq!(
            md("[**dormant**](http://x.com/d)"),
            "<http://x.com/d|dormant>"
        );
        assert_eq!(
            md("[a <b> & c](http://x.com/)"),
            "<http://x.com/|a &lt;b&gt; &amp; c>"
        );
        assert_eq!(
            md("[x](http://x.com/a?b=1&c=2)"),
            "<http://x.com/a?b=1&amp;c=2|x>"
        );
        assert_eq!(
            md("[x](<http://x.com/a b|c>)"),
            "<http://x.com/a%20b%7Cc|x>"
        );
    }

    #[test]
    fn unsafe_link_schemes_render_as_text() {
        assert_eq!(md("[click](javascript:alert(1))"), "click");
        assert_eq!(md("[rel](/changelog)"), "rel");
        assert_eq!(md("[f](ftp://x.com/f)"), "f");
        assert_eq!(md("[](javascript:alert(1))"), "");
    }

    #[test]
    fn images_link_to_the_image() {
        assert_eq!(
            md("![logo](https://x.com/l.png)"),
            "<https://x.com/l.png|logo>"
        );
        assert_eq!(md("![](https://x.com/l.png)"), "<https://x.com/l.png>");
        assert_eq!(
            md("[![logo](https://x.com/l.png)](https://x.com/)"),
            "<https://x.com/|logo>"
        );
    }

    #[test]
    fn headings_are_bold_lines() {
        assert_eq!(md("# Title\n\ntext"), "*Title*\n\ntext");
        assert_eq!(md("## **Sub**"), "*Sub*");
    }

    #[test]
    fn lists() {
        assert_eq!(md("- a\n- b"), "• a\n• b");
        assert_eq!(md("* a\n\n* b\n\n\n* c"), "• a\n• b\n• c");
        assert_eq!(md("1. a\n2. b\n3. c"), "1. a\n2. b\n3. c");
        assert_eq!(md("3. a\n\n4. b"), "3. a\n4. b");
        assert_eq!(
            md("- a\n  - b\n    - c\n- d"),
            "• a\n    • b\n        • c\n• d"
        );
        assert_eq!(
            md("intro\n\n- a\n\n   - b\n\n   - c\n\n\n- d\n\nafter"),
            "intro\n\n• a\n    • b\n    • c\n• d\n\nafter"
        );
        assert_eq!(md("1. a\n   - b"), "1. a\n    • b");
        assert_eq!(md("- a\n  more"), "• a\n  more");
    }

    #[test]
    fn paragraphs_and_breaks() {
        assert_eq!(md("\n\none\n\n\n\ntwo\n\n"), "one\n\ntwo");
        assert_eq!(md("a\nb"), "a\nb");
        assert_eq!(md("a  \nb"), "a\nb");
        assert_eq!(md("a\\\nb"), "a\nb");
    }

    #[test]
    fn code_is_verbatim_and_escaped() {
        assert_eq!(md("run `a <b> && *c*`"), "run `a &lt;b&gt; &amp;&amp; *c*`");
        assert_eq!(
            md("```sh\necho <!channel> **x**\n\nls & wait\n```"),
            "```\necho &lt;!channel&gt; **x**\n\nls &amp; wait\n```"
        );
        assert_eq!(md("    indented <x>"), "```\nindented &lt;x&gt;\n```");
        assert_eq!(md("**`/home/coder`** is full"), "*`/home/coder`* is full");
    }

    #[test]
    fn backslash_escapes_resolved() {
        assert_eq!(md(r"_docker\_container\[0\]_"), "_docker_container[0]_");
        assert_eq!(md(r"\*not bold\*"), "*not bold*");
    }

    #[test]
    fn raw_html_is_text() {
        assert_eq!(md("a <b>bold</b> c"), "a &lt;b&gt;bold&lt;/b&gt; c");
        assert_eq!(
            md("<div>\n<!channel>\n</div>"),
            "&lt;div&gt;\n&lt;!channel&gt;\n&lt;/div&gt;"
        );
        assert_eq!(md("<!-- hidden -->"), "&lt;!-- hidden --&gt;");
        assert_eq!(md("<@U123> hi"), "&lt;@U123&gt; hi");
    }

    #[test]
    fn block_quotes() {
        assert_eq!(md("> quoted <x>"), "> quoted &lt;x&gt;");
        assert_eq!(
            md("before\n\n> a\n>\n> b\n\nafter"),
            "before\n\n> a\n>\n> b\n\nafter"
        );
        assert_eq!(md("> a\nb"), "> a\n> b");
    }

    #[test]
    fn hostile_inputs_never_become_slack_syntax() {
        let inputs = [
            "<!channel>",
            "<!here|here>",
            "<@U123>",
            "<#C123>",
            "<http://evil|innocent>",
            "&lt;!channel&gt;",
            "[<!channel>](http://x.com/)",
            "[x](http://x.com/<!channel>)",
            "`<!channel>`",
            "```\n<@U1>\n```",
            "**<!everyone>**",
            "[a|b](http://evil.com|innocent)",
        ];
        for input in inputs {
            let out = md(input);
            for bad in ["<!", "<@", "<#", "|innocent>"] {
                assert!(!out.contains(bad), "{input:?} → {out:?}");
            }
        }
        // In Markdown `&lt;` is an entity for `<`; a literal "&lt;" is written `\&lt;`.
        assert_eq!(md("&lt;!channel&gt;"), "&lt;!channel&gt;");
        assert_eq!(md("\\&lt;"), "&amp;lt;");
        assert_eq!(md("`&lt;`"), "`&amp;lt;`");
        assert_eq!(md("&amp;"), "&amp;");
        assert_eq!(md("a & b"), "a &amp; b");
    }

    #[test]
    fn rules_and_tables() {
        assert_eq!(md("a\n\n---\n\nb"), "a\n\n──────────\n\nb");
        assert_eq!(md("| a | b |\n|---|---|\n| 1 | 2 |"), "a | b\n1 | 2");
    }

    #[test]
    fn long_link_labels_and_urls_are_bounded() {
        let label = "l".repeat(2000);
        let out = md(&format!("[{label}](http://x.com/)"));
        assert!(out.chars().count() < 600, "{}", out.len());
        assert!(out.ends_with("…>"));
        let url = format!("http://x.com/{}", "u".repeat(3000));
        assert_eq!(md(&format!("[text]({url})")), "text");
    }

    #[test]
    fn cut_escaped_respects_entities() {
        assert_eq!(cut_escaped("abc", 3), "abc");
        assert_eq!(cut_escaped("ab&amp;cd", 5), "ab…");
        assert_eq!(cut_escaped("abcdefgh", 5), "abcd…");
    }
}
