//! The working folder's `.env`, read the way dotenvy reads it, except that a line it cannot
//! parse (or one that would silently empty a setting) is refused, named by number and
//! variable and never shown.

use super::cli::Cli;
use super::{err, ConfigError};

/// Reads `path` (the working folder's `.env`) as `NAME=value` pairs, in file order. A missing
/// file is no settings. Only this one file is read: a `.env` in a parent folder belongs to
/// something else. A line that cannot be parsed is named by number and variable, never shown:
/// it may hold a token.
pub fn read_dotenv(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return err(format!("{} is not UTF-8 text", path.display()))
        }
        Err(e) => return err(format!("{} could not be read: {e}", path.display())),
    };
    parse_dotenv(&content, is_setting).map_err(|bad| {
        let name = bad
            .name
            .map_or_else(|| "no NAME= at its start".to_owned(), |n| n.to_owned());
        let problem = match bad.problem {
            LineProblem::Unparsable => {
                "cannot be parsed: check its quotes and backslashes, and quote a value with spaces"
            }
            LineProblem::HashValue => {
                "has a value starting with #, which .env reads as a comment, leaving the setting \
                 empty: quote the value (for FALLBACK_CHANNEL, use the channel ID instead of #name)"
            }
        };
        ConfigError(format!(
            "{} line {} ({name}) {problem} (the line is not shown: it may hold a secret)",
            path.display(),
            bad.number
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineProblem {
    Unparsable,
    /// `NAME=#…`: dotenvy reads an empty value, which would silently unset a secret or the
    /// fallback channel.
    HashValue,
}

/// A refused line: its number, the variable it sets (when it names one) and why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadLine<'a> {
    number: usize,
    name: Option<&'a str>,
    problem: LineProblem,
}

/// Whether `name` is one of the bridge's settings (`.env` may hold others' variables too).
pub(super) fn is_setting(name: &str) -> bool {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .any(|arg| arg.get_env().is_some_and(|env| env == name))
}

/// dotenvy's parse of `content`, or the first line it could not parse, or that sets one of
/// `ours` empty though a value follows `=`.
pub(super) fn parse_dotenv(
    content: &str,
    ours: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, BadLine<'_>> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let reader = LineAtATime::new(content);
    let delivered = reader.delivered.clone();
    let mut pairs = Vec::new();
    for item in dotenvy::from_read_iter(reader) {
        let (name, value) = item.map_err(|e| failed_line(content, delivered.get(), &e))?;
        if value.is_empty() && ours(&name) {
            // An empty entry is one line: the last one read.
            let number = last_line_read(content, delivered.get());
            let line = content.lines().nth(number - 1).unwrap_or_default();
            if line
                .split_once('=')
                .is_some_and(|(_, v)| v.starts_with('#'))
            {
                return Err(BadLine {
                    number,
                    name: variable_name(line),
                    problem: LineProblem::HashValue,
                });
            }
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// The number of the line that holds the `read`th byte of `content`.
fn last_line_read(content: &str, read: usize) -> usize {
    let consumed = &content[..read.min(content.len())];
    let consumed = consumed.strip_suffix('\n').unwrap_or(consumed);
    consumed.matches('\n').count() + 1
}

/// The first line of the entry that failed. dotenvy's error carries the entry's text
/// (sometimes only its value), so the line is found from how far it had read.
fn failed_line<'a>(content: &'a str, read: usize, e: &dotenvy::Error) -> BadLine<'a> {
    // An entry spans several lines when a quoted value does.
    let spanned = match e {
        dotenvy::Error::LineParse(text, _) => text.trim_end().matches('\n').count(),
        _ => 0,
    };
    let number = last_line_read(content, read).saturating_sub(spanned).max(1);
    BadLine {
        number,
        name: content.lines().nth(number - 1).and_then(variable_name),
        problem: LineProblem::Unparsable,
    }
}

/// `NAME` of a `NAME=…` or `export NAME=…` line; nothing for a line that does not start so,
/// whose start could be a secret pasted alone.
fn variable_name(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map_or(line, str::trim_start);
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (starts_well && rest.trim_start().starts_with('=')).then_some(name)
}

/// Hands dotenvy at most one line per read, so the bytes it has taken say which line it is on
/// (its buffered reader asks for more only once a line is used up).
struct LineAtATime<'a> {
    rest: &'a [u8],
    delivered: std::rc::Rc<std::cell::Cell<usize>>,
}

impl<'a> LineAtATime<'a> {
    fn new(content: &'a str) -> Self {
        LineAtATime {
            rest: content.as_bytes(),
            delivered: std::rc::Rc::default(),
        }
    }
}

impl std::io::Read for LineAtATime<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let line_end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let n = line_end.min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        self.delivered.set(self.delivered.get() + n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_parses_like_dotenvy() {
        let pairs = parse_dotenv(
            "\u{feff}# comment\nA=1\nexport B='two words'\nC=\"multi\nline\"\n\nD=${A}x # note\n",
            is_setting,
        )
        .expect("parses");
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "multi\nline"),
                ("D", "1x")
            ]
        );
    }

    #[test]
    fn a_bad_dotenv_line_is_named_by_number_and_variable_only() {
        for (content, line, name) in [
            (
                "A=1\nSLACK_BOT_TOKEN=\"xoxb-secret-tail\n",
                2,
                Some("SLACK_BOT_TOKEN"),
            ),
            (
                "A=1\nB=\"x\ny\"\nTOKEN=xoxb secret-tail\nC=2\n",
                4,
                Some("TOKEN"),
            ),
            (
                "A=1\n\n   export  TOKEN = 'secret-tail\nB=2\n",
                3,
                Some("TOKEN"),
            ),
            ("# c\nsecret-tail\n", 2, None),
            ("A=1\nxoxb-secret-tail x\n", 2, None),
            ("A=1\nB=\\q secret-tail\n", 2, Some("B")),
        ] {
            let bad = parse_dotenv(content, is_setting).unwrap_err();
            assert_eq!((bad.number, bad.name), (line, name), "{content:?}");
            assert_eq!(bad.problem, LineProblem::Unparsable);
        }
        // A value after `=` that .env would read as a comment is refused, not left empty.
        for (content, line, name) in [
            (
                "A=1\nFALLBACK_CHANNEL=#general\n",
                2,
                Some("FALLBACK_CHANNEL"),
            ),
            (
                "export WEBHOOK_SECRET=#secret-tail # note\n",
                1,
                Some("WEBHOOK_SECRET"),
            ),
        ] {
            let bad = parse_dotenv(content, is_setting).unwrap_err();
            assert_eq!((bad.number, bad.name), (line, name), "{content:?}");
            assert_eq!(bad.problem, LineProblem::HashValue);
        }
        let pairs = parse_dotenv("EMPTY=\nNOTE= # a comment\nOTHER=#x\n", is_setting)
            .expect("empty values are fine, and others' variables are theirs");
        assert_eq!(pairs.len(), 3);

        let dir = std::env::temp_dir().join(format!("csb-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(".env");
        std::fs::write(&path, "OK=1\nSLACK_BOT_TOKEN=\"xoxb-1-secret-tail\n").expect("write");
        let e = read_dotenv(&path).unwrap_err().0;
        assert!(
            e.contains(".env line 2 (SLACK_BOT_TOKEN) cannot be parsed"),
            "{e}"
        );
        assert!(!e.contains("secret-tail") && !e.contains("xoxb-1"), "{e}");
        assert!(read_dotenv(&dir.join("absent"))
            .expect("missing is fine")
            .is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
