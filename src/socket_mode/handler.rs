//! What happens to an envelope after it was acked. Runs in its own task, so it may take as long
//! as it likes: the ack has already left (but a shutdown waits for it only so long).

use super::envelope::{sanitize_label, Envelope};
use crate::telemetry::Metrics;
use futures_util::future::BoxFuture;
use serde_json::Value;

/// The prefix of the `action_id`s the bridge gives its buttons (`coder_action_0`, …).
pub const BRIDGE_ACTION_PREFIX: &str = "coder_action_";
/// The bridge's own controls (see `interact`).
const BRIDGE_CONTROLS: [&str; 5] = [
    "snooze",
    "unsnooze",
    "extend_workspace",
    "start_workspace",
    "keep_workspace",
];

/// Handles envelopes after they were acked; each envelope id reaches it at most once (per
/// dedupe window). Each call runs in its own task, a bounded number at a time.
pub trait EnvelopeHandler: Send + Sync + 'static {
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()>;
}

/// Any `Fn(Envelope) -> future` is a handler (handy in tests).
impl<F, Fut> EnvelopeHandler for F
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(self(envelope))
    }
}

/// Production's handler: logs clicks on the bridge's buttons at info (user id and action_id
/// only: URLs and values may carry secrets) and counts them in `block_actions`; logs every
/// other envelope at debug by type.
#[derive(Debug, Clone)]
pub struct DefaultHandler {
    metrics: Metrics,
}

impl DefaultHandler {
    pub fn new(metrics: Metrics) -> Self {
        DefaultHandler { metrics }
    }

    /// The synchronous part of [`EnvelopeHandler::handle`]; returns how many of the bridge's
    /// button clicks the envelope carried.
    pub fn record(&self, envelope: &Envelope) -> usize {
        let kind = sanitize_label(&envelope.kind, 40);
        let payload_type = envelope.payload_type().map(|t| sanitize_label(t, 40));
        if envelope.kind != "interactive" || payload_type.as_deref() != Some("block_actions") {
            tracing::debug!(
                envelope_type = %kind,
                payload_type = payload_type.as_deref().unwrap_or("-"),
                "Socket Mode envelope needs no handling"
            );
            return 0;
        }
        let user = envelope
            .payload
            .pointer("/user/id")
            .and_then(Value::as_str)
            .map(|u| sanitize_label(u, 32))
            .unwrap_or_else(|| "-".to_owned());
        let actions = envelope
            .payload
            .get("actions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut clicks = 0;
        for action in actions {
            let Some(action_id) = action.get("action_id").and_then(Value::as_str) else {
                continue;
            };
            let action_id = sanitize_label(action_id, 64);
            if action_id.starts_with(BRIDGE_ACTION_PREFIX)
                || BRIDGE_CONTROLS.contains(&action_id.as_str())
            {
                clicks += 1;
                self.metrics.block_actions.inc();
                tracing::info!(user = %user, action_id = %action_id, "button clicked");
            } else {
                tracing::debug!(user = %user, action_id = %action_id, "block action not from the bridge's buttons");
            }
        }
        clicks
    }
}

impl EnvelopeHandler for DefaultHandler {
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.record(&envelope);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket_mode::envelope::{parse_frame, Frame};

    fn envelope(json: &str) -> Envelope {
        match parse_frame(json) {
            Ok(Frame::Envelope(e)) => e,
            other => panic!("not an envelope: {other:?}"),
        }
    }

    #[test]
    fn bridge_button_clicks_are_counted() {
        let metrics = Metrics::new();
        let h = DefaultHandler::new(metrics.clone());
        let env = envelope(
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"block_actions",
                "user":{"id":"U123"},"actions":[{"action_id":"coder_action_1","url":"https://x/?token=secret","value":"v"}]}}"#,
        );
        assert_eq!(h.record(&env), 1);
        assert_eq!(metrics.block_actions.get(), 1);
    }

    #[test]
    fn other_envelopes_are_not_counted() {
        let metrics = Metrics::new();
        let h = DefaultHandler::new(metrics.clone());
        for json in [
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"block_actions","actions":[{"action_id":"other"}]}}"#,
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"view_submission"}}"#,
            r#"{"envelope_id":"e","type":"events_api","payload":{"type":"block_actions","actions":[{"action_id":"coder_action_0"}]}}"#,
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"block_actions","actions":"nope"}}"#,
            r#"{"envelope_id":"e","type":"slash_commands"}"#,
        ] {
            assert_eq!(h.record(&envelope(json)), 0, "{json}");
        }
        assert_eq!(metrics.block_actions.get(), 0);
    }
}
