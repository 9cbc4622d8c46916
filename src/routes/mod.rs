//! `ROUTES_FILE`: which notifications go to a channel instead of (or as well as) their
//! recipient's DM. The file is read and checked once (`file`), its `#name`s turned into
//! channel IDs once at start-up (`resolve`, from a list the Slack client reads); a
//! notification then takes the first route that matches it ([`Routes::route_for`]), and the
//! identical copies Coder sends every admin are told apart from other events by
//! [`collapse_digest`] (`collapse`).
//!
//! A notification that carries a secret (the One-Time Passcode, a label named like a secret)
//! matches no route, whatever the file says: it goes to its recipient's own DM only.

mod collapse;
mod file;
mod resolve;
#[cfg(test)]
mod tests;

pub use collapse::collapse_digest;
pub use file::{RoutesError, DEFAULT_COLLAPSE, MAX_COLLAPSE};

use crate::coder::Notification;
use crate::kinds::{self, Kind};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The routes of one file, in the file's order.
#[derive(Debug, Clone)]
pub struct Routes {
    path: PathBuf,
    routes: Vec<Route>,
}

/// One `[[route]]` table.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its place among the routes, from 1.
    pub index: usize,
    /// The line of its `[[route]]` header.
    pub line: usize,
    matchers: Vec<Matcher>,
    pub channel: Channel,
    /// Whether the recipient's DM gets the notification too.
    pub dm: bool,
    /// Copies of one event arriving within this window become one channel post; zero: off.
    pub collapse: Duration,
}

/// What a route names in `notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// A kind Coder ships, by any of its names or its template ID.
    Kind(&'static Kind),
    /// A template this build does not know (a custom one, or a newer Coder's), lower-case.
    TemplateId(String),
    Group(Group),
}

/// `@admin` or `@all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Every copy of a role broadcast (see [`kinds::is_role_broadcast`]).
    Admin,
    /// Every notification.
    All,
}

/// A route's channel: an ID as written, or a `#name` and, once resolved, its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// As the file says it, trimmed: `C0123ABCDE`, or `#name`.
    written: String,
    /// The channel's ID: as written, or a name's once resolved.
    id: Option<String>,
}

impl Channel {
    /// The channel's ID; `None` for a `#name` not resolved (a dry run resolves nothing).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The name written as `#name`, without the `#` and in lower case (as Slack keeps
    /// channel names); `None` for an ID.
    pub fn name(&self) -> Option<String> {
        self.written.strip_prefix('#').map(str::to_lowercase)
    }

    /// Where a post goes: the ID, or, unresolved, the `#name` as written.
    pub fn target(&self) -> &str {
        self.id().unwrap_or(&self.written)
    }
}

impl fmt::Display for Channel {
    /// `C0123ABCDE`, `#ops (C0123ABCDE)`, or `#ops` before it is resolved.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.id, self.written.starts_with('#')) {
            (Some(id), true) => write!(f, "{} ({id})", self.written),
            _ => f.write_str(&self.written),
        }
    }
}

impl Route {
    /// A short stable label for logs and metrics: `route 2 (line 7)`.
    pub fn label(&self) -> String {
        self.to_string()
    }

    fn matches(&self, notification: &Notification, kind: Option<&Kind>, broadcast: bool) -> bool {
        self.matchers.iter().any(|matcher| match matcher {
            Matcher::Kind(k) => kind.is_some_and(|kind| kind.template_id == k.template_id),
            Matcher::TemplateId(id) => notification
                .template_id
                .as_deref()
                .is_some_and(|sent| sent.trim().eq_ignore_ascii_case(id)),
            Matcher::Group(Group::Admin) => broadcast,
            Matcher::Group(Group::All) => true,
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} (line {})", self.index, self.line)
    }
}

impl Routes {
    /// Reads and checks `path` (see [`RoutesError`] for what is refused).
    pub fn load(path: &Path) -> Result<Routes, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError::unreadable(path, &e))?;
        Self::parse(path, &text)
    }

    /// Checks the text of a routes file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Routes, RoutesError> {
        let routes = file::parse(path, text)?;
        Ok(Routes {
            path: path.to_owned(),
            routes,
        })
    }

    /// The route `notification` takes: the first in the file that matches it, by a name or
    /// template ID of its kind, or a group it belongs to. None for a notification that
    /// carries a secret, whatever the file says.
    pub fn route_for(&self, notification: &Notification) -> Option<&Route> {
        if kinds::secret_of(notification).is_some() {
            return None;
        }
        let kind = Kind::of(notification);
        let broadcast = kinds::is_role_broadcast(notification);
        self.routes
            .iter()
            .find(|route| route.matches(notification, kind, broadcast))
    }

    /// The file the routes were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every route, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
