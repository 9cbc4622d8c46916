//! The plain settings' parsers: the listen address, durations, http(s) URLs, the fallback
//! channel and the number of Socket Mode connections. Each message names the setting.

use super::{err, ConfigError};
use crate::duration::{human, parse_duration};
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

pub(super) fn listen_addr(raw: Option<&str>, port: Option<u16>) -> Result<SocketAddr, ConfigError> {
    match (raw.map(str::trim), port) {
        (Some(addr), _) if !addr.is_empty() => addr.parse::<SocketAddr>().or_else(|_| {
            err(format!(
                "LISTEN_ADDR must be an address and port such as 127.0.0.1:6000 or 0.0.0.0:6000, not {addr:?}"
            ))
        }),
        (_, Some(port)) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => Ok(SocketAddr::from(([127, 0, 0, 1], 6000))),
    }
}

pub(super) fn socket_mode_connections(raw: &str) -> Result<usize, ConfigError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=10).contains(&n) => Ok(n),
        _ => err(format!(
            "SOCKET_MODE_CONNECTIONS must be a whole number from 1 to 10, not {raw:?}"
        )),
    }
}

/// `QUEUE_MAX_AGE` and `QUEUE_MAX_DEPTH`: `None` (store and forward off) for an age of 0.
/// A notification must not outwait its handled `msg_id`, or a retry of Coder's after the id
/// was pruned could deliver it twice: so no longer than `RETENTION`.
pub(super) fn queue_limits(
    max_age: &str,
    max_depth: &str,
    retention: &str,
) -> Result<Option<super::QueueLimits>, ConfigError> {
    if parse_duration(max_age) == Some(Duration::ZERO) {
        return Ok(None);
    }
    let retention = parse_duration(retention).unwrap_or(Duration::MAX);
    let max_age = bounded_duration(
        "QUEUE_MAX_AGE",
        max_age,
        Duration::from_secs(60)..=retention.min(Duration::from_secs(365 * 86_400)),
        "0 turns store and forward off; a notification may not wait longer than RETENTION keeps its msg_id",
    )?;
    let max_depth = match max_depth.trim().replace('_', "").parse::<u64>() {
        Ok(n) if (1..=100_000_000).contains(&n) => n,
        _ => {
            return err(format!(
                "QUEUE_MAX_DEPTH must be a whole number from 1 to 100000000, not {max_depth:?}"
            ))
        }
    };
    Ok(Some(super::QueueLimits { max_age, max_depth }))
}

/// A channel ID: it survives the channel being renamed, and `.env` reads `#name` as a comment.
pub(super) fn fallback_channel(raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(channel) = raw.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let is_id = channel.len() >= 9
        && channel.starts_with(['C', 'G', 'D'])
        && channel
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if is_id {
        return Ok(Some(channel.to_owned()));
    }
    let hint =
        "the ID is at the bottom of the channel's details in Slack (click the channel's name)";
    if channel.starts_with('#') {
        err(format!(
            "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD, not a name ({channel}): {hint}"
        ))
    } else {
        err(format!(
            "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD (C, G or D, then capital letters and digits), not {channel:?}: {hint}"
        ))
    }
}

pub(super) fn http_url(name: &str, raw: &str) -> Result<Url, ConfigError> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => err(format!(
            "{name} must be an http(s) URL such as https://example.com"
        )),
    }
}

/// `CODER_URL`: an http(s) URL, or nothing. Where Slack will see its links, an address in
/// the documentation domains (`example.com`, `.org`, `.net`: what `.env.example` and
/// the deployment files once shipped) is refused, as placeholder tokens are: every "turn
/// off in Coder" and App Home link would lead nowhere.
pub(super) fn coder_url(raw: Option<&str>, uses_slack: bool) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = raw.map(str::trim).filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let url = http_url("CODER_URL", raw)?;
    if uses_slack && url.host_str().is_some_and(is_example_domain) {
        return err(
            "CODER_URL is still a placeholder (an example.com, example.org or example.net address): \
             set it to your Coder's access URL, the one people open in their browser \
             (CODER_ACCESS_URL on the Coder server), or leave it unset",
        );
    }
    Ok(Some(url))
}

/// `example.com`, `example.org`, `example.net` and their subdomains (RFC 2606).
fn is_example_domain(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    ["example.com", "example.org", "example.net"]
        .iter()
        .any(|domain| host == *domain || host.ends_with(&format!(".{domain}")))
}

/// A duration within `range`; the message says why the bounds are what they are.
pub(super) fn bounded_duration(
    name: &str,
    raw: &str,
    range: std::ops::RangeInclusive<Duration>,
    why: &str,
) -> Result<Duration, ConfigError> {
    let Some(value) = parse_duration(raw) else {
        return err(format!(
            "{name} must be a duration such as 30s, 1500ms, 5m or 1h, not {raw:?}"
        ));
    };
    if range.contains(&value) {
        return Ok(value);
    }
    err(format!(
        "{name} must be from {} to {}, not {raw:?}: {why}",
        human(*range.start()),
        human(*range.end())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::settings;
    use crate::config::Needs;

    #[test]
    fn port_alone_sets_the_port() {
        let mut s = settings();
        s.port = Some(7000);
        assert_eq!(
            s.validate(Needs::Serve)
                .expect("ok")
                .listen_addr
                .to_string(),
            "127.0.0.1:7000"
        );
    }

    #[test]
    fn a_placeholder_coder_url_is_refused_where_slack_sees_its_links() {
        for placeholder in [
            "https://coder.example.com",
            "https://example.com/",
            "http://Coder.Example.ORG:3000",
            "https://a.b.example.net.",
        ] {
            let mut s = settings();
            s.coder_url = Some(placeholder.into());
            let e = s.clone().validate(Needs::Serve).unwrap_err().0;
            assert!(
                e.starts_with("CODER_URL is still a placeholder"),
                "{placeholder}: {e}"
            );
            let e = s.clone().validate(Needs::BotToken).unwrap_err().0;
            assert!(e.starts_with("CODER_URL"), "check: {placeholder}: {e}");
            // Nothing reaches Slack in a dry run or a preview.
            assert!(s.clone().validate(Needs::Nothing).is_ok());
            s.dry_run = true;
            assert!(s.validate(Needs::Serve).is_ok());
        }
        for real in [
            "https://coder.mycompany.com",
            "https://notexample.com",
            "https://example.com.mycompany.com",
            "http://127.0.0.1:3000",
        ] {
            let mut s = settings();
            s.coder_url = Some(real.into());
            let c = s.validate(Needs::Serve).expect(real);
            assert!(c.coder_url.is_some());
        }
    }

    #[test]
    fn retention_is_in_days_and_bounded() {
        let mut s = settings();
        s.retention = "7d".into();
        let c = s.clone().validate(Needs::Serve).expect("ok");
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        for raw in ["1h", "400d", "forever"] {
            s.retention = raw.into();
            let e = s.clone().validate(Needs::Serve).expect_err(raw);
            assert!(e.0.starts_with("RETENTION must be"), "{e}");
        }
        s.retention = "1h".into();
        assert_eq!(
            s.validate(Needs::Serve).expect_err("short").0,
            "RETENTION must be from 24h to 365d, not \"1h\": a day outlasts Coder's retries, and a year of handled ids is plenty"
        );
    }

    #[test]
    fn directory_refresh_is_bounded() {
        for (raw, ok) in [
            ("1m", true),
            ("24h", true),
            ("59s", false),
            ("25h", false),
            ("100000h", false),
            ("18446744073709551615h", false),
            ("99999999999999999999999", false),
        ] {
            let mut s = settings();
            s.directory_refresh = raw.into();
            match s.validate(Needs::Serve) {
                Ok(c) => assert!(ok, "{raw} accepted as {:?}", c.directory_refresh),
                Err(e) => {
                    assert!(!ok, "{raw}: {e}");
                    assert!(e.0.starts_with("DIRECTORY_REFRESH must be"), "{e}");
                }
            }
        }
        let mut s = settings();
        s.directory_refresh = "48h".into();
        assert_eq!(
            s.validate(Needs::Serve).unwrap_err().0,
            "DIRECTORY_REFRESH must be from 1m to 24h, not \"48h\": users.list is rate-limited, and a day-old directory is stale enough"
        );
        let mut s = settings();
        s.delivery_timeout = "1000000000000h".into();
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("DELIVERY_TIMEOUT"));
    }

    #[test]
    fn fallback_channel_must_be_an_id() {
        for ok in ["C0123ABCD", "G0123ABCD", "D0123ABCD", " C0FALLBACK "] {
            let mut s = settings();
            s.fallback_channel = Some(ok.into());
            let c = s.validate(Needs::Serve).expect(ok);
            assert_eq!(c.fallback_channel.as_deref(), Some(ok.trim()));
        }
        let mut s = settings();
        s.fallback_channel = Some("#general".into());
        let e = s.validate(Needs::Serve).unwrap_err().0;
        assert!(
            e.starts_with(
                "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD, not a name (#general)"
            ) && e.contains("channel's details"),
            "{e}"
        );
        for bad in ["general", "c0123abcd", "C012", "U0123ABCD", "C0123-ABCD"] {
            let mut s = settings();
            s.fallback_channel = Some(bad.into());
            let e = s.validate(Needs::Serve).unwrap_err().0;
            assert!(
                e.starts_with("FALLBACK_CHANNEL must be a channel ID"),
                "{bad}: {e}"
            );
        }
        let mut s = settings();
        s.fallback_channel = Some("  ".into());
        assert!(s
            .validate(Needs::Serve)
            .expect("ok")
            .fallback_channel
            .is_none());
    }
}
