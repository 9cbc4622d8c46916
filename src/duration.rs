//! Durations as people write them in settings and in the routes file (`30s`, `1500ms`, `5m`,
//! `1h`, `30d`, or a bare number of seconds), and back.

use std::time::Duration;

/// Parses `30s`, `1500ms`, `5m`, `1h`, `30d`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(24 * 3600),
        _ => None,
    }
}

/// `1s`, `55s`, `1m`, `24h`, `30d`: a duration as a person would write it (whole seconds).
pub fn human(d: Duration) -> String {
    match d.as_secs() {
        // Days from two on: a day reads better as 24h.
        s if s >= 2 * 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("1w"), None);
    }

    #[test]
    fn durations_are_shown_as_written() {
        let shown: Vec<String> = [1, 55, 60, 600, 3600, 86_400, 30 * 86_400]
            .into_iter()
            .map(|s| human(Duration::from_secs(s)))
            .collect();
        assert_eq!(shown, ["1s", "55s", "1m", "10m", "1h", "24h", "30d"]);
    }
}
