//! Logs (tracing) and metrics (Prometheus text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written: plain text for people, JSON objects for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. The levels come from `RUST_LOG` (default `info`): a level,
/// `target=level` pairs, or both, e.g. `info,coder_slack_bridge=debug`. (Targets, not
/// EnvFilter: span and field filters are rarely wanted here, and EnvFilter brought a regex
/// engine, about 250 KB of code.)
pub fn init_logging(format: LogFormat) {
    let (filter, refused) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log shippers get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless: keep the first.
    let installed = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    if let (Ok(()), Some(reason)) = (installed, refused) {
        tracing::warn!("RUST_LOG is not understood ({reason}); logging at info");
    }
}

/// The filter `RUST_LOG` asks for, or `info` and why the value was refused.
fn log_filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => (info(), None),
        Some(value) => match value.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (info(), Some(e.to_string())),
        },
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlackCallLabels {
    pub method: &'static str,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

/// Result of an e-mail → user lookup: `hit`, `miss` (asked Slack) or `negative_hit`
/// (remembered as unknown).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub result: &'static str,
}

/// A sweep of `users.list`: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SweepLabels {
    pub result: &'static str,
}

/// A route of `ROUTES_FILE`, by its place in the file (from 1).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Where a notification that waited past QUEUE_MAX_AGE went: `fallback` or `dropped`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiredLabels {
    pub to: &'static str,
}

impl ExpiredLabels {
    const ALL: [&'static str; 2] = ["fallback", "dropped"];

    /// Both destinations at 0 from the start: `increase()` over a series needs a sample
    /// before the first expiry, or the alert on expiries misses it.
    fn family() -> Family<ExpiredLabels, Counter> {
        let family = Family::<ExpiredLabels, Counter>::default();
        for to in ExpiredLabels::ALL {
            let _ = family.get_or_create(&ExpiredLabels { to });
        }
        family
    }
}

/// A click on a button that acts on Coder: which act, and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoderActionLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvelopeLabels {
    pub r#type: String,
}

/// Declares [`Metrics`] from one table: each field, its type and first value, its name (under
/// the `coder_slack_bridge_` prefix) and help text, so a metric is named in one place.
macro_rules! metrics {
    ($($field:ident: $ty:ty = $init:expr => $name:literal, $help:literal;)*) => {
        /// Every metric the bridge exports. Cheap to clone (all handles are shared).
        #[derive(Clone, Debug)]
        pub struct Metrics {
            registry: Arc<Registry>,
            $(pub $field: $ty,)*
        }

        impl Metrics {
            pub fn new() -> Self {
                let mut registry = Registry::with_prefix("coder_slack_bridge");
                $(
                    let $field: $ty = $init;
                    // The registry keeps a handle of its own; the struct keeps the other.
                    registry.register($name, $help, $field.clone());
                )*
                Metrics { registry: Arc::new(registry), $($field,)* }
            }
        }
    };
}

metrics! {
    webhooks: Family<OutcomeLabels, Counter> = Family::default()
        => "webhooks", "Webhooks received, by outcome";
    delivery_seconds: Histogram = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        => "delivery_seconds", "Time from webhook received to answer (every webhook, refused ones too); DELIVERY_TIMEOUT is at most 55 s";
    slack_calls: Family<SlackCallLabels, Counter> = Family::default()
        => "slack_api_calls", "Slack Web API calls, by method and result";
    slack_rate_limited: Family<MethodLabels, Counter> = Family::default()
        => "slack_rate_limited", "Slack Web API answers of 429, by method";
    ready: Gauge = Gauge::default()
        => "ready", "1 while the bridge can take notifications without losing them (what /readyz says: the store answers, and the bot token is verified or store and forward is on), else 0";
    directory_sweeps: Family<SweepLabels, Counter> = Family::default()
        => "directory_sweeps", "Sweeps of users.list into the e-mail → user directory, by result (ok, failed)";
    directory_last_sweep: Gauge = Gauge::default()
        => "directory_last_sweep_timestamp_seconds", "When users.list was last swept completely (Unix time; the process's start until the first sweep)";
    directory_sweep_interval: Gauge = Gauge::default()
        => "directory_sweep_interval_seconds", "How often users.list is swept (DIRECTORY_REFRESH)";
    directory_size: Gauge = Gauge::default()
        => "directory_users", "Slack users known by e-mail address";
    directory_lookups: Family<LookupLabels, Counter> = Family::default()
        => "directory_lookups", "E-mail → Slack user lookups, by result (hit, miss, negative_hit)";
    socket_connections_open: Gauge = Gauge::default()
        => "socket_mode_connections_open", "Socket Mode connections that have received hello";
    socket_connections_wanted: Gauge = Gauge::default()
        => "socket_mode_connections_wanted", "Socket Mode connections the bridge keeps open (SOCKET_MODE_CONNECTIONS; 0 without SLACK_APP_TOKEN)";
    socket_reconnects: Counter = Counter::default()
        => "socket_mode_reconnects", "Socket Mode connections opened to replace another";
    socket_envelopes_acked: Family<EnvelopeLabels, Counter> = Family::default()
        => "socket_mode_envelopes_acked", "Socket Mode envelopes acknowledged, by type";
    block_actions: Counter = Counter::default()
        => "block_actions", "Button clicks received over Socket Mode";
    snoozed: Counter = Counter::default()
        => "snoozed", "Notifications held back because the person snoozed their workspace in Slack";
    coder_actions: Family<CoderActionLabels, Counter> = Family::default()
        => "coder_actions", "Clicks on the buttons that act on Coder, by action (extend, start, keep) and outcome (done, unchanged, already_later: the deadline was already at or past the one asked, refused, token_refused, failed, unreachable, not_allowed: someone else, or the Coder account is not active or no longer owns the workspace, expired: a message over 7 days old; repeated: a click Slack delivered again, not carried out twice; unknown: one left in flight by a bridge that stopped, not carried out again)";
    store_errors: Counter = Counter::default()
        => "store_errors", "Store operations that failed (claims, marks, reads); the log says which and why";
    plain_text_fallbacks: Counter = Counter::default()
        => "plain_text_fallbacks", "Messages Slack refused as built (invalid_blocks, msg_too_long, …) and sent again as plain text";
    outbox_depth: Gauge = Gauge::default()
        => "outbox_depth", "Notifications waiting in the outbox for Slack (store and forward; every replica reports the shared outbox)";
    outbox_oldest: Gauge = Gauge::default()
        => "outbox_oldest_seconds", "How long the oldest notification in the outbox has waited since Coder sent it (0 when none waits)";
    outbox_queued: Counter = Counter::default()
        => "outbox_queued", "Notifications put in the outbox because Slack could not take them (or an earlier one for the same person waited)";
    outbox_sent: Counter = Counter::default()
        => "outbox_sent", "Notifications taken out of the outbox with an outcome (delivered, undeliverable, snoozed)";
    outbox_expired: Family<ExpiredLabels, Counter> = ExpiredLabels::family()
        => "outbox_expired", "Notifications older than QUEUE_MAX_AGE taken out of the outbox, by where they went (fallback: FALLBACK_CHANNEL, dropped: nowhere, logged)";
    slack_trouble: Gauge = Gauge::default()
        => "slack_unavailable", "1 while Slack's last answer to a delivery was an outage, a timeout or a refused token (notifications wait in the outbox), else 0";
    routed: Family<RouteLabels, Counter> = Family::default()
        => "routed", "Notifications that took a route of ROUTES_FILE, by route (its place in the file, from 1)";
    route_posts: Family<RouteLabels, Counter> = Family::default()
        => "route_posts", "Posts made in a route's channel, by route (one per event when copies collapse)";
    collapsed: Family<RouteLabels, Counter> = Family::default()
        => "collapsed", "Copies of an event that joined its post in a route's channel instead of posting, by route";
    card_edits_failed: Counter = Counter::default()
        => "card_edits_failed", "Edits of a workspace's card given up after retries (rate limits past a few attempts, outages): the card shows an older state until its next change; the log says why";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Now as Unix seconds, for the timestamp gauges.
pub fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{log_filter, Metrics};
    use tracing::Level;

    #[test]
    fn expiries_show_at_zero_from_the_start_so_the_first_one_is_an_increase() {
        let exposition = Metrics::new().encode();
        for to in ["fallback", "dropped"] {
            let line = format!("coder_slack_bridge_outbox_expired_total{{to=\"{to}\"}} 0\n");
            assert!(exposition.contains(&line), "{exposition}");
        }
    }

    #[test]
    fn rust_log_takes_a_level_and_per_target_levels_and_refuses_nonsense() {
        let (filter, refused) = log_filter(None);
        assert!(refused.is_none());
        assert!(filter.would_enable("coder_slack_bridge", &Level::INFO));
        assert!(!filter.would_enable("coder_slack_bridge", &Level::DEBUG));

        let (filter, refused) = log_filter(Some("warn,coder_slack_bridge::http=debug"));
        assert!(refused.is_none());
        assert!(filter.would_enable("coder_slack_bridge::http", &Level::DEBUG));
        assert!(!filter.would_enable("coder_slack_bridge::delivery", &Level::INFO));
        assert!(filter.would_enable("hyper", &Level::WARN));

        let (filter, refused) = log_filter(Some("info,coder_slack_bridge=loud"));
        assert!(refused.is_some_and(|r| !r.is_empty()));
        assert!(filter.would_enable("coder_slack_bridge", &Level::INFO));
        assert!(!filter.would_enable("coder_slack_bridge", &Level::DEBUG));
    }
}
