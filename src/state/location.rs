//! `DATABASE_URL`: where the store is. The URL can hold a password, so it is read once here
//! (the PostgreSQL settings the backend connects with come from this one reading), kept only
//! in forms that cannot print it, and shown with its whole user part replaced by `***`.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum Location {
    /// `sqlite://PATH`: relative paths are in the working folder.
    Sqlite(PathBuf),
    /// `sqlite::memory:`: a private database gone at exit (tests, dry runs).
    SqliteMemory,
    /// `postgres://…` or `postgresql://…`.
    Postgres {
        /// What the backend connects with; its `Debug` leaves the password out.
        config: Box<tokio_postgres::Config>,
        /// The URL without its user, password and options, for logs and errors.
        shown: String,
        /// `sslrootcert=PATH`: the CA certificates (PEM) the server's certificate must be
        /// signed by, instead of the system's trust store, as with libpq.
        root_cert: Option<PathBuf>,
    },
}

/// What `DATABASE_URL` accepts, said after each refusal.
const ACCEPTED: &str = "use sqlite://PATH (e.g. sqlite://coder-slack-bridge.db, \
    sqlite:///var/lib/coder-slack-bridge/state.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// Said when the user or password may hold a character that ends it early.
const ENCODE: &str = "reserved characters in the user or password (@ : / # ? %) must be \
    percent-encoded (%40 %3A %2F %23 %3F %25), e.g. with \
    python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD'";

impl Location {
    /// Parses `DATABASE_URL`; the error names the setting and what it accepts, and never
    /// repeats any part of the value.
    pub fn parse(raw: &str) -> Result<Location, String> {
        let raw = raw.trim();
        let bad = |why: &str| format!("DATABASE_URL {why}: {ACCEPTED}");
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
        for scheme in ["postgres", "postgresql"] {
            if let Some(rest) = raw.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
                return postgres(scheme, raw, rest);
            }
        }
        if raw.starts_with("sqlite:") {
            return Err(bad(
                "must be sqlite://PATH (two slashes; three before an absolute path)",
            ));
        }
        // libpq's key=value form: say how to write it as a URL, showing none of it.
        if raw.split_whitespace().any(|pair| {
            pair.split_once('=').is_some_and(|(key, _)| {
                matches!(key, "host" | "hostaddr" | "dbname" | "user" | "port")
            })
        }) {
            return Err(bad(
                "looks like libpq's key=value form, which the bridge does not take: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require, with @ : / # ? % in the user or password percent-encoded",
            ));
        }
        // Only a scheme as URLs spell one is named: anything else may be a user or password.
        match raw.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                Err(bad(&format!(
                    "has scheme {scheme:?}, which the bridge does not know"
                )))
            }
            _ => Err(bad("is not a URL the bridge knows")),
        }
    }

    /// How logs and errors name it: without user, password and options.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite://{}", path.display()),
            Location::SqliteMemory => "sqlite::memory:".to_owned(),
            Location::Postgres { shown, .. } => shown.clone(),
        }
    }

    pub(super) fn postgres_config(&self) -> Option<&tokio_postgres::Config> {
        match self {
            Location::Postgres { config, .. } => Some(config),
            _ => None,
        }
    }

    /// The file named by `sslrootcert`, if any.
    pub(super) fn root_cert(&self) -> Option<&std::path::Path> {
        match self {
            Location::Postgres { root_cert, .. } => root_cert.as_deref(),
            _ => None,
        }
    }

    /// Why the connection to a server that is not on this host could be read or changed
    /// on the way: without `sslmode=require` (or `verify-ca`, `verify-full`), TLS is
    /// either off or, with `prefer` (the default), dropped by anyone in the path who
    /// answers that the server offers none. `None` when TLS is required or every host is
    /// this one (loopback, or a Unix socket).
    pub fn tls_warning(&self) -> Option<String> {
        use tokio_postgres::config::{Host, SslMode};
        let config = self.postgres_config()?;
        let remote = |host: &Host| match host {
            Host::Tcp(name) => !is_loopback(name),
            Host::Unix(_) => false,
        };
        let remote = config.get_hosts().iter().any(remote)
            || config.get_hostaddrs().iter().any(|ip| !ip.is_loopback());
        let mode = match config.get_ssl_mode() {
            SslMode::Require => return None,
            _ if !remote => return None,
            SslMode::Disable => "sslmode=disable sends everything unencrypted",
            _ => "sslmode=prefer (the default) lets anyone in the network path turn TLS off",
        };
        Some(format!(
            "DATABASE_URL: {mode}, password included, to a host that is not this one: \
             add sslmode=verify-full (or require, which verifies the certificate and name \
             here too) and, for a private CA, sslrootcert=PATH"
        ))
    }
}

/// `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `raw` without its `sslrootcert` option (which tokio-postgres does not know), and the
/// option's value, percent-decoded; `system` (libpq's word for the system's trust store,
/// the default here) is no file.
fn take_root_cert(raw: &str) -> (String, Option<PathBuf>) {
    let Some((base, query)) = raw.split_once('?') else {
        return (raw.to_owned(), None);
    };
    let mut root_cert = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|option| match option.strip_prefix("sslrootcert=") {
            Some(value) => {
                root_cert = Some(percent_decoded(value));
                false
            }
            None => true,
        })
        .collect();
    let url = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let root_cert = root_cert.filter(|path| path != "system").map(PathBuf::from);
    (url, root_cert)
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `postgres://` URL, `rest` being what follows `scheme://`. PostgreSQL's own parser
/// takes the user part up to the first `@` where a URL parser takes it up to the last one
/// before the host: a URL on which the two could disagree (an `@`, `/`, `?` or `#` left
/// unencoded in the password) is refused, so the part shown is never part of a password.
fn postgres(scheme: &str, raw: &str, rest: &str) -> Result<Location, String> {
    let refuse = |why: &str| Err(format!("DATABASE_URL {why}: {ENCODE}"));
    let after_user = match rest.split_once('@') {
        None => rest,
        Some((user_part, after)) => {
            if after.contains('@') {
                return refuse("has more than one @");
            }
            if user_part.contains(['/', '?', '#']) {
                return refuse("has a /, ? or # before the @ that ends the user and password");
            }
            if !percent_escapes_are_whole(user_part) {
                return refuse(
                    "has a % in the user or password that is not followed by two hex digits",
                );
            }
            after
        }
    };
    if after_user.contains('#') {
        return refuse("has a # (a URL fragment, which PostgreSQL has no use for)");
    }
    let (url, root_cert) = take_root_cert(raw);
    let config = super::postgres::libpq_sslmodes(&url)
        .parse::<tokio_postgres::Config>()
        .map_err(|e| {
            // tokio-postgres names the option or the kind of fault, never a value.
            let e = crate::error_text::error_chain(&e);
            format!(
                "DATABASE_URL cannot be read ({e}): it takes postgres://USER:PASSWORD@HOST:PORT/DATABASE \
                 (several hosts: HOST1:PORT1,HOST2:PORT2) with the options \
                 sslmode=disable|prefer|require|verify-ca|verify-full, sslrootcert=PATH, \
                 target_session_attrs, connect_timeout, application_name and options; {ENCODE}"
            )
        })?;
    // Options (sslmode, options=…, password=…) are left out: one may carry a secret.
    let place = after_user.split('?').next().unwrap_or_default();
    let user = if rest.contains('@') { "***@" } else { "" };
    Ok(Location::Postgres {
        config: Box::new(config),
        shown: format!("{scheme}://{user}{place}"),
        root_cert,
    })
}

/// Every `%` starts an escape of two hex digits.
fn percent_escapes_are_whole(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
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
    fn postgres_urls_are_shown_without_their_user_and_password() {
        let location =
            Location::parse("postgres://bridge:hunter2@db:5432/coder_slack_bridge?sslmode=require")
                .expect("valid");
        assert_eq!(
            location.shown(),
            "postgres://***@db:5432/coder_slack_bridge"
        );
        assert!(!format!("{location:?}").contains("hunter2"));
        let location = Location::parse("postgresql://db/x").expect("valid");
        assert_eq!(location.shown(), "postgresql://db/x");
        // A percent-encoded password is decoded for PostgreSQL and shown as nothing.
        let location = Location::parse("postgres://u:Sup3r%2FSecret%40%23@db/x").expect("valid");
        assert_eq!(location.shown(), "postgres://***@db/x");
        let config = location.postgres_config().expect("postgres");
        assert_eq!(config.get_password(), Some(&b"Sup3r/Secret@#"[..]));
        assert_eq!(config.get_user(), Some("u"));
    }

    #[test]
    fn several_hosts_are_taken_and_shown_as_given_without_the_user() {
        let location = Location::parse(
            "postgres://bridge:hunter2@pg-a:5432,pg-b:5433/csb?target_session_attrs=read-write",
        )
        .expect("several hosts");
        assert_eq!(location.shown(), "postgres://***@pg-a:5432,pg-b:5433/csb");
        let config = location.postgres_config().expect("postgres");
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(config.get_ports(), [5432, 5433]);
        let location = Location::parse("postgres://a,b/db?target_session_attrs=read-write")
            .expect("several hosts");
        assert_eq!(location.shown(), "postgres://a,b/db");
        let location = Location::parse("postgresql://u:p@[::1]:5432,b/db").expect("IPv6");
        assert_eq!(location.shown(), "postgresql://***@[::1]:5432,b/db");
    }

    #[test]
    fn sslrootcert_names_a_file_kept_beside_the_driver_settings() {
        let location = Location::parse(
            "postgres://u:p@db/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fpg%20ca.pem&connect_timeout=3",
        )
        .expect("sslrootcert is taken");
        assert_eq!(
            location.root_cert(),
            Some(std::path::Path::new("/etc/pg ca.pem"))
        );
        let config = location.postgres_config().expect("postgres");
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        let location = Location::parse("postgres://db/x?sslrootcert=/ca.pem").expect("alone");
        assert_eq!(location.root_cert(), Some(std::path::Path::new("/ca.pem")));
        let location = Location::parse("postgres://db/x?sslrootcert=system").expect("system");
        assert_eq!(location.root_cert(), None);
    }

    #[test]
    fn a_remote_host_without_required_tls_is_warned_about() {
        let warning = |url: &str| Location::parse(url).expect(url).tls_warning();
        for url in [
            "postgres://u:p@db.internal/x",
            "postgres://u:p@db.internal/x?sslmode=prefer",
            "postgres://u:p@localhost,db.internal/x",
            "postgres://u:p@10.0.0.5/x?sslmode=disable",
        ] {
            let text = warning(url).unwrap_or_else(|| panic!("no warning for {url}"));
            assert!(text.contains("sslmode=verify-full"), "{text}");
            assert!(!text.contains("u:p"), "{text}");
        }
        for url in [
            "postgres://u:p@db.internal/x?sslmode=require",
            "postgres://u:p@db.internal/x?sslmode=verify-ca",
            "postgres://u:p@db.internal/x?sslmode=verify-full",
            "postgres://u:p@localhost/x",
            "postgres://u:p@127.0.0.1:5432/x?sslmode=disable",
            "postgres://u:p@[::1]/x",
            "postgres://u:p@%2Frun%2Fpostgresql/x",
        ] {
            assert_eq!(warning(url), None, "{url}");
        }
        assert_eq!(Location::SqliteMemory.tls_warning(), None);
    }

    /// Pieces of the passwords below: none may appear in any message.
    const PIECES: [&str; 7] = ["p@ss", "@ss", "ss#", "#word", "Sup3r", "Secret", "%zz"];

    #[test]
    fn reserved_characters_in_a_password_are_refused_without_showing_it() {
        for raw in [
            "postgres://u:p@ss#word@host/db",
            "postgres://u:Sup3r/Secret@host/db",
            "postgres://u:Sup3r?Secret@host/db",
            "postgres://u:Sup3r#Secret@host/db",
            "postgres://u:p@ss@host/db",
            "postgresql://u:p%zzSecret@host/db",
            "postgres://u:Secret@host/db#word",
        ] {
            let e = Location::parse(raw).expect_err(raw);
            assert!(
                e.starts_with("DATABASE_URL") && e.contains("must be percent-encoded"),
                "{raw}: {e}"
            );
            for piece in PIECES {
                assert!(!e.contains(piece), "{raw}: {piece:?} shown in: {e}");
            }
        }
    }

    #[test]
    fn an_unreadable_url_is_refused_without_showing_it() {
        // A bad port: tokio-postgres's own reading names the option, never the value.
        let e = Location::parse("postgres://u:Secret@host:Sup3r/db").unwrap_err();
        assert!(e.contains("DATABASE_URL cannot be read"), "{e}");
        assert!(!e.contains("Secret") && !e.contains("Sup3r"), "{e}");
        // No scheme: the user and password are not taken for one.
        let e = Location::parse("Sup3r:Secret@host/db").unwrap_err();
        assert!(!e.contains("Sup3r") && !e.contains("Secret"), "{e}");
        // A typo in the scheme's slashes: nothing of it is echoed either.
        let e = Location::parse("postgres//bridge:Secret@db/x").unwrap_err();
        assert!(!e.contains("bridge:") && !e.contains("Secret"), "{e}");
        // libpq's key=value form: told how to write it as a URL, without its values.
        let e = Location::parse("host=dbhost user=ops password=Secret dbname=xdb").unwrap_err();
        assert!(
            e.contains("key=value form") && e.contains("postgres://USER:PASSWORD@HOST"),
            "{e}"
        );
        for value in ["dbhost", "ops", "Secret", "xdb"] {
            assert!(!e.contains(value), "{value} in {e}");
        }
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
