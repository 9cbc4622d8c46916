//! `DATABASE_URL`: where the store is. The URL can hold a password, so it is kept secret and
//! shown only without it.

use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum Location {
    /// `sqlite://PATH`: relative paths are in the working folder.
    Sqlite(PathBuf),
    /// `sqlite::memory:`: a private database gone at exit (tests, dry runs).
    SqliteMemory,
    /// `postgres://…` or `postgresql://…`.
    Postgres {
        url: SecretString,
        /// The URL without its password, for logs and errors.
        shown: String,
    },
}

impl Location {
    /// Parses `DATABASE_URL`; the error names the setting and what it accepts.
    pub fn parse(raw: &str) -> Result<Location, String> {
        let raw = raw.trim();
        let bad = |why: &str| {
            format!(
                "DATABASE_URL {why}: use sqlite://PATH (e.g. sqlite://coder-slack-bridge.db, \
                 sqlite:///var/lib/coder-slack-bridge/state.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        };
        if raw == "sqlite::memory:" {
            return Ok(Location::SqliteMemory);
        }
        if let Some(path) = raw.strip_prefix("sqlite://") {
            // Query options are not taken: the bridge sets what SQLite needs itself.
            if path.is_empty() || path.contains('?') {
                return Err(bad("must name a file after sqlite://, with no ?options"));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let parsed =
                url::Url::parse(raw).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
            let mut shown = parsed.clone();
            if shown.password().is_some() {
                let _ = shown.set_password(Some("***"));
            }
            // Query options (sslmode, options=…) can carry nothing secret worth showing.
            shown.set_query(None);
            return Ok(Location::Postgres {
                url: raw.into(),
                shown: shown.to_string(),
            });
        }
        if raw.starts_with("sqlite:") {
            return Err(bad(
                "must be sqlite://PATH (two slashes; three before an absolute path)",
            ));
        }
        let scheme = raw.split(':').next().unwrap_or_default();
        Err(bad(&format!(
            "has scheme {scheme:?}, which the bridge does not know"
        )))
    }

    /// How logs and errors name it: the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite://{}", path.display()),
            Location::SqliteMemory => "sqlite::memory:".to_owned(),
            Location::Postgres { shown, .. } => shown.clone(),
        }
    }

    pub(super) fn postgres_url(&self) -> Option<&str> {
        match self {
            Location::Postgres { url, .. } => Some(url.expose_secret()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_and_memory() {
        let at = |raw| match Location::parse(raw) {
            Ok(Location::Sqlite(path)) => path,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(
            at("sqlite://coder-slack-bridge.db"),
            PathBuf::from("coder-slack-bridge.db")
        );
        assert_eq!(
            at("sqlite:///var/lib/b/state.db"),
            PathBuf::from("/var/lib/b/state.db")
        );
        assert!(matches!(
            Location::parse("sqlite::memory:"),
            Ok(Location::SqliteMemory)
        ));
        assert!(Location::parse("sqlite://")
            .unwrap_err()
            .contains("DATABASE_URL"));
        assert!(Location::parse("sqlite://x.db?mode=ro").is_err());
        let e = Location::parse("sqlite:state.db").unwrap_err();
        assert!(e.contains("must be sqlite://PATH"), "{e}");
    }

    #[test]
    fn postgres_urls_are_shown_without_their_password() {
        let location =
            Location::parse("postgres://bridge:hunter2@db:5432/coder_slack_bridge?sslmode=require")
                .expect("valid");
        let shown = location.shown();
        assert_eq!(shown, "postgres://bridge:***@db:5432/coder_slack_bridge");
        assert!(!format!("{location:?}").contains("hunter2"));
        assert!(Location::parse("postgresql://db/x").is_ok());
    }

    #[test]
    fn unknown_schemes_are_refused_with_what_is_accepted() {
        let e = Location::parse("mysql://db/x").unwrap_err();
        assert!(
            e.contains("\"mysql\"") && e.contains("sqlite://PATH") && e.contains("postgres://"),
            "{e}"
        );
    }
}
