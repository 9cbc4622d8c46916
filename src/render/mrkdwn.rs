//! Markdown (as Coder writes it) → Slack mrkdwn, and mrkdwn escaping.
//!
//! Everything taken from the input is escaped (`&`, `<`, `>`), so the only `<…>` sequences in
//! the output are links this module builds from real Markdown links, and only to http(s) or
//! mailto URLs. Nothing from the input can become `<!channel>`, `<@U123>` or a disguised link.
//!
//! The work is bounded by what a message can carry, not by the input: [`convert_within`]
//! parses only the head of the Markdown (defused where the parser would not be linear, see
//! `parser_guard`) and stops converting once its output is full; list indentation stops
//! growing at [`MAX_LIST_INDENT`] levels, so no line's prefix grows with the depth.

use super::parser_guard::guard;
use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

/// Longest link URL (as sent) rendered as a link; longer ones render as their text.
const MAX_LINK_URL: usize = 2000;
/// Longest link label (escaped chars); longer ones are cut with `…`.
const MAX_LINK_LABEL: usize = 500;
/// Deepest list level indented on its own: deeper levels line up with it (and an item marker
/// of a level between, opened on the same line as a deeper one, is left out).
pub const MAX_LIST_INDENT: usize = 8;

/// Escapes text for Slack mrkdwn: `&` → `&amp;` (first), `<` → `&lt;`, `>` → `&gt;`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        out.push_str(escaped(c, &mut [0; 4]).0);
    }
    out
}

/// `text` escaped, as far as fits in `max` chars (never part of an entity), and whether
/// anything was left out.
pub(crate) fn escape_within(text: &str, max: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max));
    let mut room = max;
    let mut buf = [0; 4];
    for c in text.chars() {
        let (piece, len) = escaped(c, &mut buf);
        if len > room {
            return (out, true);
        }
        room -= len;
        out.push_str(piece);
    }
    (out, false)
}

/// The mrkdwn form of one char (`&`, `<` and `>` as entities) and its length in chars.
fn escaped(c: char, buf: &mut [u8; 4]) -> (&str, usize) {
    match c {
        '&' => ("&amp;", 5),
        '<' => ("&lt;", 4),
        '>' => ("&gt;", 4),
        c => (c.encode_utf8(buf), 1),
    }
}

/// Mrkdwn converted from Markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mrkdwn {
    pub text: String,
    /// True when `text` stops short of the whole Markdown: it would not have fit.
    pub cut: bool,
}

/// How much of a Markdown text is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Markdown parsed (bytes): the head of the text, ending at a line end when there is one
    /// in its second half.
    pub markdown_bytes: usize,
    /// Mrkdwn written (chars): conversion stops at the first piece that does not fit.
    pub mrkdwn_chars: usize,
}

/// Converts Markdown to Slack mrkdwn (see the module documentation for the safety rules), as
/// far as a message body can use it: [`convert_within`] with [`super::BODY_LIMITS`].
pub fn markdown_to_mrkdwn(markdown: &str) -> String {
    convert_within(markdown, super::BODY_LIMITS).text
}

/// Converts the head of `markdown` within `limits`. Parsing and conversion stop there, so time
/// and memory grow with the limits, not with the input.
pub fn convert_within(markdown: &str, limits: Limits) -> Mrkdwn {
    let (head, head_cut) = head_lines(markdown, limits.markdown_bytes);
    let head = guard(head);
    let events = Parser::new_ext(&head, parser_options());
    let mut mrkdwn = convert_events(events, limits.mrkdwn_chars);
    mrkdwn.cut |= head_cut;
    mrkdwn
}

fn parser_options() -> Options {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TABLES);
    options
}

/// Converts parser events into at most `max_chars` chars, pulling no more events once full.
fn convert_events<'a>(events: impl IntoIterator<Item = Event<'a>>, max_chars: usize) -> Mrkdwn {
    let mut conv = Converter::new(max_chars);
    for event in events {
        conv.event(event);
        // Whatever comes next could only follow text that was left out.
        if conv.cut {
            break;
        }
    }
    conv.finish()
}

/// The longest head of `text` within `max` bytes, ending at a line end unless that would drop
/// more than half of it (a long line is cut at a char boundary instead), and whether anything
/// but whitespace is left out.
fn head_lines(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let line_end = text.as_bytes()[..end]
        .iter()
        .rposition(|&b| b == b'\n' || b == b'\r');
    if let Some(line_end) = line_end.filter(|&i| i >= max / 2) {
        end = line_end + 1;
    }
    (&text[..end], !text[end..].trim().is_empty())
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

/// The outermost open link (or image). Links inside it only add to its label, so their text
/// goes straight there instead of being copied up level by level.
struct LinkState {
    dest: String,
    link_type: LinkType,
    /// Escaped label.
    label: String,
    /// Raw label text, to compare with the URL.
    plain: String,
    /// Links and images open inside this one.
    inner: usize,
}

impl LinkState {
    /// Adds raw text to the label, newlines as spaces.
    fn add_text(&mut self, raw: &str) {
        for c in raw.chars() {
            let c = if matches!(c, '\n' | '\r') { ' ' } else { c };
            self.plain.push(c);
            self.label.push_str(escaped(c, &mut [0; 4]).0);
        }
    }
}

struct Converter {
    out: String,
    /// Chars `out` can still take.
    room: usize,
    /// Set once a piece did not fit: nothing more is written, and conversion stops.
    cut: bool,
    /// Line break owed before the next output: 0 none, 1 newline, 2 blank line.
    pending: u8,
    at_line_start: bool,
    started: bool,
    last_line_quoted: bool,
    quote: usize,
    lists: Vec<ListLevel>,
    /// Lowest list level whose item marker may still be unwritten; `prefix` clears markers
    /// from there on, so a line costs the levels opened since the last line, not the depth.
    unwritten_from: usize,
    /// Open inline formats, innermost last: whether each wrote its marker.
    formats: Vec<bool>,
    /// Markers written by open formats, innermost last: at most one each of `_`, `*`, `~`,
    /// so a line break closes and reopens at most three however deep formats nest.
    written: Vec<&'static str>,
    link: Option<LinkState>,
    code_block: Option<String>,
    html_block: Option<String>,
    table_cell: usize,
}

impl Converter {
    fn new(max_chars: usize) -> Self {
        Converter {
            out: String::new(),
            room: max_chars,
            cut: false,
            pending: 0,
            at_line_start: false,
            started: false,
            last_line_quoted: false,
            quote: 0,
            lists: Vec::new(),
            unwritten_from: 0,
            formats: Vec::new(),
            written: Vec::new(),
            link: None,
            code_block: None,
            html_block: None,
            table_cell: 0,
        }
    }

    /// Appends `s` whole, or (when it does not fit) nothing and marks the output cut, so a
    /// link or a marker is never split.
    fn push(&mut self, s: &str) {
        if self.cut {
            return;
        }
        let len = s.chars().count();
        if len > self.room {
            self.cut = true;
            return;
        }
        self.room -= len;
        self.out.push_str(s);
    }

    /// Appends `raw` escaped, as far as it fits (never part of an entity).
    fn push_escaped(&mut self, raw: &str) {
        let mut buf = [0; 4];
        for c in raw.chars() {
            if self.cut {
                return;
            }
            let (piece, len) = escaped(c, &mut buf);
            if len > self.room {
                self.cut = true;
                return;
            }
            self.room -= len;
            self.out.push_str(piece);
        }
    }

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
            self.push("\n");
            if self.pending > 1 {
                if self.quote > 0 && self.last_line_quoted {
                    self.push(">");
                }
                self.push("\n");
            }
            self.at_line_start = true;
        }
        self.pending = 0;
        if self.at_line_start {
            self.at_line_start = false;
            self.last_line_quoted = self.quote > 0;
            let prefix = self.prefix();
            self.push(&prefix);
        }
    }

    /// The line prefix: `> ` in a quote, then a column per list level (the outermost
    /// `MAX_LIST_INDENT - 1` and the innermost), holding an item's marker on its first line.
    fn prefix(&mut self) -> String {
        let mut p = String::new();
        if self.quote > 0 {
            p.push_str("> ");
        }
        let n = self.lists.len();
        let outer = n.saturating_sub(1).min(MAX_LIST_INDENT - 1);
        for level in &mut self.lists[..outer] {
            match level.marker.take() {
                Some(m) => p.push_str(&format!("{m:<4}")),
                None => p.push_str("    "),
            }
        }
        // Levels without a column of their own lose a marker still unwritten.
        let hidden_from = outer.max(self.unwritten_from);
        for level in self
            .lists
            .iter_mut()
            .take(n.saturating_sub(1))
            .skip(hidden_from)
        {
            level.marker = None;
        }
        self.unwritten_from = n;
        if let Some(level) = self.lists.last_mut() {
            match level.marker.take() {
                Some(m) => p.push_str(&m),
                None => p.push_str(&" ".repeat(level.width)),
            }
        }
        p
    }

    /// Writes mrkdwn (already escaped) inline, without newlines.
    fn write(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(link) = self.link.as_mut() {
            link.label.push_str(s);
            return;
        }
        self.begin();
        self.push(s);
    }

    /// Writes raw text (escaping it); newlines become line breaks.
    fn text(&mut self, raw: &str) {
        if let Some(link) = self.link.as_mut() {
            link.add_text(raw);
            return;
        }
        for (i, line) in raw.split('\n').enumerate() {
            if self.cut {
                return;
            }
            if i > 0 {
                self.line_break();
            }
            if !line.is_empty() {
                self.begin();
                self.push_escaped(line);
            }
        }
    }

    fn line_break(&mut self) {
        if let Some(link) = self.link.as_mut() {
            link.add_text(" ");
            return;
        }
        for i in (0..self.written.len()).rev() {
            let marker = self.written[i];
            self.write(marker);
        }
        self.sep(1);
        for i in 0..self.written.len() {
            let marker = self.written[i];
            self.write(marker);
        }
    }

    /// Writes a line of a code or HTML block (`raw`, escaped) on its own line, even when empty.
    fn block_line(&mut self, raw: &str) {
        self.sep(1);
        self.begin();
        self.push_escaped(raw);
    }

    fn fence(&mut self) {
        self.sep(1);
        self.begin();
        self.push("```");
    }

    fn open_format(&mut self, marker: &'static str) {
        let write = self.link.is_none() && !self.written.contains(&marker);
        self.formats.push(write);
        if write {
            self.written.push(marker);
            self.write(marker);
        }
    }

    fn close_format(&mut self) {
        if self.formats.pop() == Some(true) {
            if let Some(marker) = self.written.pop() {
                self.write(marker);
            }
        }
    }

    fn start_link(&mut self, link_type: LinkType, dest: &str) {
        match self.link.as_mut() {
            Some(outer) => outer.inner += 1,
            None => {
                self.link = Some(LinkState {
                    dest: dest.to_owned(),
                    link_type,
                    label: String::new(),
                    plain: String::new(),
                    inner: 0,
                })
            }
        }
    }

    fn end_link(&mut self) {
        if let Some(link) = self.link.as_mut().filter(|l| l.inner > 0) {
            link.inner -= 1;
            return;
        }
        if let Some(link) = self.link.take() {
            let rendered = render_link(&link);
            self.write(&rendered);
        }
    }

    fn event(&mut self, event: Event<'_>) {
        if self.code_block.is_some() {
            return self.code_block_event(event);
        }
        if self.html_block.is_some() {
            return self.html_block_event(event);
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.text(&t),
            Event::Code(c) => {
                if self.link.is_none() {
                    self.write("`");
                    self.push_escaped(&c);
                    self.push("`");
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

    fn code_block_event(&mut self, event: Event<'_>) {
        match event {
            Event::Text(t) => {
                if let Some(code) = self.code_block.as_mut() {
                    code.push_str(&t);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                let code = self.code_block.take().unwrap_or_default();
                let code = code.strip_suffix('\n').unwrap_or(&code);
                if !code.is_empty() {
                    self.fence();
                    for l in code.split('\n') {
                        if self.cut {
                            return;
                        }
                        self.block_line(l.trim_end_matches('\r'));
                    }
                    self.fence();
                }
            }
            _ => {}
        }
    }

    fn html_block_event(&mut self, event: Event<'_>) {
        match event {
            Event::Html(t) | Event::Text(t) => {
                if let Some(html) = self.html_block.as_mut() {
                    html.push_str(&t);
                }
            }
            Event::End(TagEnd::HtmlBlock) => {
                let html = self.html_block.take().unwrap_or_default();
                for l in html.trim_end_matches('\n').split('\n') {
                    if self.cut {
                        return;
                    }
                    self.block_line(l.trim_end_matches('\r'));
                }
            }
            _ => {}
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
            Tag::Item => self.start_item(),
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
            Tag::Superscript | Tag::Subscript => self.formats.push(false),
            Tag::Link {
                link_type,
                dest_url,
                ..
            }
            | Tag::Image {
                link_type,
                dest_url,
                ..
            } => self.start_link(link_type, &dest_url),
        }
    }

    fn start_item(&mut self) {
        self.sep(1);
        let innermost = self.lists.len().saturating_sub(1);
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
            self.unwritten_from = self.unwritten_from.min(innermost);
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

    /// Closes an open link and drops blank lines at both ends and trailing whitespace.
    fn finish(mut self) -> Mrkdwn {
        if let Some(link) = self.link.as_mut() {
            link.inner = 0;
        }
        self.end_link();
        let mut text = String::with_capacity(self.out.len());
        // Blank lines are held back until a line with text follows them.
        let mut blank_lines = 0;
        for line in self.out.lines().map(str::trim_end) {
            if line.is_empty() {
                blank_lines += usize::from(!text.is_empty());
                continue;
            }
            if !text.is_empty() {
                text.extend(std::iter::repeat_n('\n', blank_lines + 1));
            }
            blank_lines = 0;
            text.push_str(line);
        }
        Mrkdwn {
            text,
            cut: self.cut,
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
    fn list_indentation_stops_at_the_cap() {
        // Ten levels, an item each on its own line: the levels past the cap line up with it.
        let input: String = (0..10)
            .map(|i| format!("{}- l{i}\n", "  ".repeat(i)))
            .collect();
        let expected: Vec<String> = (0..10)
            .map(|i| format!("{}• l{i}", "    ".repeat(i.min(MAX_LIST_INDENT - 1))))
            .collect();
        assert_eq!(md(&input), expected.join("\n"));
        // Ten markers on one line: the levels between the cap and the innermost lose theirs;
        // a continuation line lines up with the innermost item's text.
        let input = format!("{}a\n{}b", "- ".repeat(10), "  ".repeat(10));
        assert_eq!(
            md(&input),
            format!("{}• a\n{}  b", "•   ".repeat(7), "    ".repeat(7))
        );
        // Within the cap nothing changes.
        assert_eq!(
            md(&format!("{}a", "- ".repeat(8))),
            format!("{}• a", "•   ".repeat(7))
        );
    }

    #[test]
    fn deeply_nested_formats_reopen_each_marker_once_per_line() {
        let input = format!(
            "{}a\nb{}",
            "**x ~~x _x ".repeat(1000),
            " x_ x~~ x**".repeat(1000)
        );
        let out = md(&input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for line in lines {
            for marker in ['*', '~', '_'] {
                assert_eq!(line.matches(marker).count(), 2, "{marker} in {line}");
            }
        }
    }

    #[test]
    fn nested_links_add_to_the_outermost_label() {
        let input = format!("{}{}", "![x".repeat(2000), "](http://x.co)".repeat(2000));
        assert_eq!(
            md(&input),
            format!("<http://x.co/|{}…>", "x".repeat(MAX_LINK_LABEL - 1))
        );
    }

    #[test]
    fn conversion_stops_pulling_events_once_full() {
        let input = "- item with *some* text\n".repeat(10_000);
        let total = Parser::new_ext(&input, parser_options()).count();
        let mut pulled = 0;
        let events = Parser::new_ext(&input, parser_options()).inspect(|_| pulled += 1);
        let out = convert_events(events, 1000);
        assert!(out.cut);
        assert!(out.text.chars().count() <= 1000);
        assert!(pulled < total / 100, "{pulled} of {total} events");
        // Cut output ends on whole pieces: no half entity, no half link.
        let out = convert_events(
            Parser::new_ext("&&& [a](http://x.com/)", parser_options()),
            17,
        );
        assert_eq!((out.text.as_str(), out.cut), ("&amp;&amp;&amp;", true));
    }

    #[test]
    fn head_lines_end_at_a_line_end() {
        assert_eq!(head_lines("ab\ncd\nef", 100), ("ab\ncd\nef", false));
        assert_eq!(head_lines("ab\ncd\nef", 7), ("ab\ncd\n", true));
        assert_eq!(head_lines("ab\ncdefgh", 7), ("ab\ncdef", true));
        assert_eq!(head_lines("ab\r\ncd", 5), ("ab\r\n", true));
        assert_eq!(head_lines("abcdef", 3), ("abc", true));
        assert_eq!(head_lines("aü", 2), ("a", true));
        assert_eq!(head_lines("ab\n   \n", 3), ("ab\n", false));
    }

    #[test]
    fn escape_within_keeps_whole_entities() {
        assert_eq!(escape_within("a&b", 10), ("a&amp;b".to_owned(), false));
        assert_eq!(escape_within("a&b", 5), ("a".to_owned(), true));
        assert_eq!(escape_within("a&b", 6), ("a&amp;".to_owned(), true));
    }

    #[test]
    fn cut_escaped_respects_entities() {
        assert_eq!(cut_escaped("abc", 3), "abc");
        assert_eq!(cut_escaped("ab&amp;cd", 5), "ab…");
        assert_eq!(cut_escaped("abcdefgh", 5), "abcd…");
    }
}
