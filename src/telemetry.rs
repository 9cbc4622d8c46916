//! Logs (tracing) and metrics (Prometheus text format).

use crate::config::LogFormat;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. The level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log shippers get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvelopeLabels {
    pub r#type: String,
}

/// Every metric the bridge exports. Cheap to clone (all handles are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub webhooks: Family<OutcomeLabels, Counter>,
    pub delivery_seconds: Histogram,
    pub slack_calls: Family<SlackCallLabels, Counter>,
    pub slack_rate_limited: Family<MethodLabels, Counter>,
    pub directory_size: Gauge,
    pub directory_lookups: Family<LookupLabels, Counter>,
    pub socket_connections_open: Gauge,
    pub socket_reconnects: Counter,
    pub socket_envelopes_acked: Family<EnvelopeLabels, Counter>,
    pub block_actions: Counter,
    pub plain_text_fallbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coder_slack_bridge");
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhooks received, by outcome",
            webhooks.clone(),
        );
        let delivery_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "delivery_seconds",
            "Time from webhook received to answer",
            delivery_seconds.clone(),
        );
        let slack_calls = Family::<SlackCallLabels, Counter>::default();
        registry.register(
            "slack_api_calls",
            "Slack Web API calls, by method and result",
            slack_calls.clone(),
        );
        let slack_rate_limited = Family::<MethodLabels, Counter>::default();
        registry.register(
            "slack_rate_limited",
            "Slack Web API answers of 429, by method",
            slack_rate_limited.clone(),
        );
        let directory_size = Gauge::default();
        registry.register(
            "directory_users",
            "Slack users known by e-mail address",
            directory_size.clone(),
        );
        let directory_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "directory_lookups",
            "E-mail → Slack user lookups, by result (hit, miss, negative_hit)",
            directory_lookups.clone(),
        );
        let socket_connections_open = Gauge::default();
        registry.register(
            "socket_mode_connections_open",
            "Socket Mode connections that have received hello",
            socket_connections_open.clone(),
        );
        let socket_reconnects = Counter::default();
        registry.register(
            "socket_mode_reconnects",
            "Socket Mode connections opened to replace another",
            socket_reconnects.clone(),
        );
        let socket_envelopes_acked = Family::<EnvelopeLabels, Counter>::default();
        registry.register(
            "socket_mode_envelopes_acked",
            "Socket Mode envelopes acknowledged, by type",
            socket_envelopes_acked.clone(),
        );
        let block_actions = Counter::default();
        registry.register(
            "block_actions",
            "Button clicks received over Socket Mode",
            block_actions.clone(),
        );
        let plain_text_fallbacks = Counter::default();
        registry.register(
            "plain_text_fallbacks",
            "Messages Slack refused as built (invalid_blocks, msg_too_long, …) and sent again as plain text",
            plain_text_fallbacks.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            webhooks,
            delivery_seconds,
            slack_calls,
            slack_rate_limited,
            directory_size,
            directory_lookups,
            socket_connections_open,
            socket_reconnects,
            socket_envelopes_acked,
            block_actions,
            plain_text_fallbacks,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
