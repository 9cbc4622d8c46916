//! The routes file read and checked: TOML through serde, every value's place kept
//! ([`Spanned`]) so each refusal names the file, the line and the reason. Refused: unknown
//! keys, an empty or unknown notification name (a UUID this build does not know is taken as
//! a custom template's ID), an unknown group, a route naming the One-Time Passcode, a bad
//! channel or duration, no route at all, and a route that can never match because routes
//! above it take everything it names.

use super::{Channel, Group, Matcher, Route};
use crate::duration::{human, parse_duration};
use crate::kinds::{Audience, Kind, KINDS, ONE_TIME_PASSCODE};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// `collapse` when a route does not say: copies of one event reach Coder's webhook within
/// seconds of each other (Coder sends them in one batch), so ten minutes gathers every copy,
/// retries included, while a later event of the same kind still gets a post of its own.
pub const DEFAULT_COLLAPSE: Duration = Duration::from_secs(600);

/// The longest `collapse`: copies of one event arrive within minutes, not days.
pub const MAX_COLLAPSE: Duration = Duration::from_secs(24 * 3600);

/// Why a routes file is refused: the file, the line when there is one, and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RoutesError {
    path: PathBuf,
    line: Option<usize>,
    reason: String,
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ROUTES_FILE {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl RoutesError {
    pub(super) fn new(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        RoutesError {
            path: path.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    pub(super) fn unreadable(path: &Path, error: &std::io::Error) -> Self {
        let why = crate::error_text::describe_io(error);
        Self::new(path, None, format!("cannot read it: {why}"))
    }

    /// The line the refusal is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// Why, without the file and line.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    notifications: Spanned<Vec<Spanned<String>>>,
    channel: Spanned<String>,
    #[serde(default)]
    dm: bool,
    collapse: Option<Spanned<RawDuration>>,
}

/// `collapse` as written: a string (`"10m"`), or a number of seconds (`0`).
struct RawDuration(String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"10m\", or \"0\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The text of a file at `path`, read into routes.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
}

/// Reads and checks the routes in `text` (the file at `path`).
pub(super) fn parse(path: &Path, text: &str) -> Result<Vec<Route>, RoutesError> {
    let reader = Reader { path, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| reader.toml_error(&e))?;
    if raw.route.is_empty() {
        return Err(reader.error(None, "it holds no [[route]] table: add one, or unset ROUTES_FILE to send every notification to its recipient's DM".to_owned()));
    }
    let unknown_ids = reader.unknown_ids(&raw.route);
    let mut taken = Taken::new(unknown_ids);
    let mut routes = Vec::with_capacity(raw.route.len());
    for (i, raw_route) in raw.route.iter().enumerate() {
        let route = reader.route(i + 1, raw_route)?;
        taken
            .claim(&route)
            .map_err(|reason| reader.error(Some(route.line), reason))?;
        routes.push(route);
    }
    Ok(routes)
}

impl Reader<'_> {
    /// The line (from 1) a span starts on.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// TOML's own refusal (syntax, a key or type serde refused), at its line.
    fn toml_error(&self, error: &toml::de::Error) -> RoutesError {
        let line = error.span().map(|span| self.line(&span));
        let mut reason = error.message().trim_end().to_owned();
        let header = line.and_then(|line| self.text.lines().nth(line - 1));
        if header.is_some_and(|h| h.trim_start().starts_with("[route]")) {
            reason.push_str(": each route is a [[route]] table (two pairs of brackets)");
        }
        self.error(line, reason)
    }

    fn error(&self, line: Option<usize>, reason: String) -> RoutesError {
        RoutesError::new(self.path, line, reason)
    }

    fn error_at<T>(&self, span: &Range<usize>, reason: String) -> Result<T, RoutesError> {
        Err(self.error(Some(self.line(span)), reason))
    }

    fn route(&self, index: usize, raw: &Spanned<RawRoute>) -> Result<Route, RoutesError> {
        let line = self.line(&raw.span());
        let route = raw.get_ref();
        let notifications = &route.notifications;
        if notifications.get_ref().is_empty() {
            return self.error_at(&notifications.span(), "notifications is empty: name at least one notification, template ID or group (@admin, @all)".into());
        }
        let matchers = notifications
            .get_ref()
            .iter()
            .map(|name| self.matcher(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route {
            index,
            line,
            matchers,
            channel: self.channel(&route.channel)?,
            dm: route.dm,
            collapse: match &route.collapse {
                Some(raw) => self.collapse(raw)?,
                None => DEFAULT_COLLAPSE,
            },
        })
    }

    /// One entry of `notifications`: a group, a template ID, or a notification's name.
    fn matcher(&self, raw: &Spanned<String>) -> Result<Matcher, RoutesError> {
        let span = raw.span();
        let written = raw.get_ref().trim();
        if written.is_empty() {
            return self.error_at(&span, "an empty name in notifications".into());
        }
        if let Some(group) = written.strip_prefix('@') {
            return match group.to_ascii_lowercase().as_str() {
                "admin" => Ok(Matcher::Group(Group::Admin)),
                "all" => Ok(Matcher::Group(Group::All)),
                _ => self.error_at(&span, format!("unknown group {written:?}: the groups are @admin (every copy of a notification Coder sends to all admins) and @all (every notification)")),
            };
        }
        let kind = match uuid::Uuid::try_parse(written) {
            Ok(id) => {
                let id = id.to_string();
                match KINDS.iter().find(|k| k.template_id == id) {
                    Some(kind) => kind,
                    None => return Ok(Matcher::TemplateId(id)),
                }
            }
            Err(_) => match KINDS
                .iter()
                .find(|k| k.names.iter().any(|n| n.eq_ignore_ascii_case(written)))
            {
                Some(kind) => kind,
                None => return self.error_at(&span, unknown_name(written)),
            },
        };
        if kind.template_id == ONE_TIME_PASSCODE {
            return self.error_at(&span, format!("{written:?} is the One-Time Passcode, which carries a password-reset code: it goes to its recipient's own DM only, never to a channel, so no route may name it"));
        }
        Ok(Matcher::Kind(kind))
    }

    /// A channel ID (`C…`, `G…`), or `#name` (resolved at start-up).
    fn channel(&self, raw: &Spanned<String>) -> Result<Channel, RoutesError> {
        let written = raw.get_ref().trim();
        if let Some(name) = written.strip_prefix('#') {
            let fits = !name.is_empty()
                && name.chars().count() <= 80
                && !name.contains(|c: char| c.is_whitespace() || c == '#');
            if !fits {
                return self.error_at(&raw.span(), format!("channel {written:?} is not a channel name: after the #, up to 80 characters without spaces, as Slack shows it"));
            }
            return Ok(Channel {
                written: written.to_owned(),
                id: None,
            });
        }
        let is_id = written.len() >= 9
            && written.starts_with(['C', 'G'])
            && written
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !is_id {
            return self.error_at(&raw.span(), format!("channel {written:?} is neither a channel ID (C or G, then capital letters and digits, such as C0123ABCDE: at the bottom of the channel's details in Slack) nor a #name"));
        }
        Ok(Channel {
            written: written.to_owned(),
            id: Some(written.to_owned()),
        })
    }

    fn collapse(&self, raw: &Spanned<RawDuration>) -> Result<Duration, RoutesError> {
        let written = raw.get_ref().0.trim();
        let Some(window) = parse_duration(written) else {
            return self.error_at(&raw.span(), format!("collapse {written:?} is not a duration such as \"10m\", \"30s\" or \"1h\" (\"0\" turns collapsing off)"));
        };
        if window > MAX_COLLAPSE {
            let most = human(MAX_COLLAPSE);
            return self.error_at(&raw.span(), format!("collapse {written:?} is longer than {most}: the copies of one event arrive within minutes"));
        }
        Ok(window)
    }

    /// Template IDs the file names that this build does not know, each once.
    fn unknown_ids(&self, routes: &[Spanned<RawRoute>]) -> Vec<String> {
        let mut ids = Vec::new();
        for raw in routes {
            for name in raw.get_ref().notifications.get_ref() {
                if let Ok(Matcher::TemplateId(id)) = self.matcher(name) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        ids
    }
}

/// Why `written` names no notification, with the closest names when some are close.
fn unknown_name(written: &str) -> String {
    let wanted = written.to_lowercase();
    let mut close: Vec<(usize, &str)> = KINDS
        .iter()
        .filter(|k| k.template_id != ONE_TIME_PASSCODE)
        .flat_map(|k| k.names.iter().copied())
        .map(|name| (edit_distance(&wanted, &name.to_lowercase()), name))
        .filter(|(distance, _)| *distance <= (wanted.chars().count() / 3).max(2))
        .collect();
    close.sort();
    // The closest only (a typo is one or two letters off; ties are all shown, up to three).
    let best = close.first().map(|(distance, _)| *distance);
    let close: Vec<String> = close
        .iter()
        .filter(|(distance, _)| Some(*distance) == best)
        .take(3)
        .map(|(_, name)| format!("{name:?}"))
        .collect();
    let hint = match close.as_slice() {
        [] => "names are Coder's own, as its notification settings list them (such as \"Workspace Deleted\"), or template IDs".to_owned(),
        close => format!("did you mean {}?", close.join(" or ")),
    };
    format!("{written:?} is not a notification Coder sends (nor a template ID), so the route would never match it: {hint}")
}

/// Levenshtein's distance between two texts, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// What a matcher reaches, in parts no two matchers split: a kind, or for the kinds whose
/// admins' copies are role broadcasts each of its two copies; a template ID the file names
/// that this build does not know; and every other notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Kind(&'static str),
    AdminsCopy(&'static str),
    OwnersCopy(&'static str),
    Id(String),
    Other,
}

/// Which route took each part first, to find a route the routes above it leave nothing to.
struct Taken {
    unknown_ids: Vec<String>,
    by: HashMap<Part, (usize, usize)>,
}

impl Taken {
    fn new(unknown_ids: Vec<String>) -> Self {
        Taken {
            unknown_ids,
            by: HashMap::new(),
        }
    }

    /// Records what `route` reaches; refuses it when routes above took all of it.
    fn claim(&mut self, route: &Route) -> Result<(), String> {
        let parts: Vec<Part> = route.matchers.iter().flat_map(|m| self.parts(m)).collect();
        let mut takers: Vec<(usize, usize)> = parts
            .iter()
            .filter_map(|part| self.by.get(part).copied())
            .collect();
        if takers.len() == parts.len() {
            takers.sort();
            takers.dedup();
            let takers: Vec<String> = takers
                .iter()
                .map(|(index, line)| format!("route {index} (line {line})"))
                .collect();
            return Err(format!("{route} can never match: every notification it names is taken by {} above it (the first route that matches decides)", takers.join(" and ")));
        }
        for part in parts {
            self.by.entry(part).or_insert((route.index, route.line));
        }
        Ok(())
    }

    fn parts(&self, matcher: &Matcher) -> Vec<Part> {
        let routable = KINDS.iter().filter(|k| k.template_id != ONE_TIME_PASSCODE);
        match matcher {
            Matcher::Kind(kind) => kind_parts(kind),
            Matcher::TemplateId(id) => vec![Part::Id(id.clone())],
            Matcher::Group(Group::Admin) => routable
                .filter_map(|k| match k.audience {
                    Audience::Role => Some(Part::Kind(k.template_id)),
                    Audience::AdminCopies => Some(Part::AdminsCopy(k.template_id)),
                    Audience::Person => None,
                })
                .collect(),
            Matcher::Group(Group::All) => routable
                .flat_map(kind_parts)
                .chain(self.unknown_ids.iter().cloned().map(Part::Id))
                .chain([Part::Other])
                .collect(),
        }
    }
}

fn kind_parts(kind: &'static Kind) -> Vec<Part> {
    match kind.audience {
        Audience::AdminCopies => vec![
            Part::AdminsCopy(kind.template_id),
            Part::OwnersCopy(kind.template_id),
        ],
        Audience::Role | Audience::Person => vec![Part::Kind(kind.template_id)],
    }
}
