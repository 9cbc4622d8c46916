//! Socket Mode frames: what Slack sends over the websocket, parsed without trusting it.
//!
//! Frame contents may carry secrets (button URLs, values, one-time passcodes): nothing in this
//! module puts a frame's content into an error or a log line.

use serde_json::Value;

/// The envelope types Slack documents; anything else is acked and labelled `other` in metrics.
pub const KNOWN_ENVELOPE_TYPES: [&str; 3] = ["interactive", "events_api", "slash_commands"];

/// One envelope: Slack expects `{"envelope_id": …}` back within 3 s.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub envelope_id: String,
    /// `interactive`, `events_api`, `slash_commands`, or a type not known yet
    /// (`"unknown"` when Slack sent none).
    pub kind: String,
    pub payload: Value,
    pub accepts_response_payload: bool,
    pub retry_attempt: Option<u64>,
    pub retry_reason: Option<String>,
}

impl Envelope {
    /// The type as a metric label: one of the known types or `other` (bounded cardinality).
    pub fn metric_label(&self) -> &'static str {
        KNOWN_ENVELOPE_TYPES
            .iter()
            .find(|known| **known == self.kind)
            .copied()
            .unwrap_or("other")
    }

    /// `payload.type` of an `interactive` envelope (`block_actions`, `view_submission`, …).
    pub fn payload_type(&self) -> Option<&str> {
        self.payload.get("type").and_then(Value::as_str)
    }
}

/// Why Slack asks the client to go away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The connection will be closed in about 10 s.
    Warning,
    /// Slack wants this connection replaced now.
    RefreshRequested,
    /// Socket Mode was switched off in the app's settings.
    LinkDisabled,
    /// A reason not known yet (or none): treated like `refresh_requested`.
    Other(String),
}

impl DisconnectReason {
    fn parse(reason: Option<&str>) -> Self {
        match reason {
            Some("warning") => DisconnectReason::Warning,
            Some("refresh_requested") => DisconnectReason::RefreshRequested,
            Some("link_disabled") => DisconnectReason::LinkDisabled,
            Some(other) => DisconnectReason::Other(sanitize_label(other, 40)),
            None => DisconnectReason::Other(String::new()),
        }
    }
}

/// A text frame from Slack.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello {
        num_connections: Option<u64>,
    },
    Disconnect {
        reason: DisconnectReason,
    },
    Envelope(Envelope),
    /// A frame with a type but no `envelope_id`: nothing to ack, nothing to do.
    Unknown {
        kind: String,
    },
}

/// Why a text frame could not be understood. Carries no content from the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("frame is not JSON")]
    NotJson,
    #[error("frame is not a JSON object")]
    NotObject,
    #[error("frame has neither a type nor an envelope_id")]
    NoType,
}

/// Parses one text frame. Any object with a string `envelope_id` is an envelope (so it gets
/// acked even when its type is new or missing).
pub fn parse_frame(text: &str) -> Result<Frame, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ParseError::NotJson)?;
    let Value::Object(mut map) = value else {
        return Err(ParseError::NotObject);
    };
    let kind = map.get("type").and_then(Value::as_str).map(str::to_owned);
    if let Some(envelope_id) = map.get("envelope_id").and_then(Value::as_str) {
        let envelope_id = envelope_id.to_owned();
        let payload = map.remove("payload").unwrap_or(Value::Null);
        return Ok(Frame::Envelope(Envelope {
            envelope_id,
            kind: kind.unwrap_or_else(|| "unknown".to_owned()),
            payload,
            accepts_response_payload: map
                .get("accepts_response_payload")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            retry_attempt: map.get("retry_attempt").and_then(Value::as_u64),
            retry_reason: map
                .get("retry_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }));
    }
    match kind.as_deref() {
        Some("hello") => Ok(Frame::Hello {
            num_connections: map.get("num_connections").and_then(Value::as_u64),
        }),
        Some("disconnect") => Ok(Frame::Disconnect {
            reason: DisconnectReason::parse(map.get("reason").and_then(Value::as_str)),
        }),
        Some(other) => Ok(Frame::Unknown {
            kind: sanitize_label(other, 40),
        }),
        None => Err(ParseError::NoType),
    }
}

/// The ack Slack expects for an envelope.
pub fn ack_text(envelope_id: &str) -> String {
    serde_json::json!({ "envelope_id": envelope_id }).to_string()
}

/// A type, reason or id fit for a log line: at most `max` characters, only `[A-Za-z0-9_.-]`
/// (anything else becomes `?`).
pub(crate) fn sanitize_label(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_parsed() {
        let f = parse_frame(
            r#"{"type":"hello","num_connections":2,"debug_info":{"host":"applink-1"},"connection_info":{"app_id":"A1"}}"#,
        );
        assert_eq!(
            f,
            Ok(Frame::Hello {
                num_connections: Some(2)
            })
        );
    }

    #[test]
    fn disconnect_reasons_are_parsed() {
        let reason = |r: &str| match parse_frame(&format!(
            r#"{{"type":"disconnect","reason":"{r}","debug_info":{{"host":"x"}}}}"#
        )) {
            Ok(Frame::Disconnect { reason }) => reason,
            other => panic!("not a disconnect: {other:?}"),
        };
        assert_eq!(reason("warning"), DisconnectReason::Warning);
        assert_eq!(
            reason("refresh_requested"),
            DisconnectReason::RefreshRequested
        );
        assert_eq!(reason("link_disabled"), DisconnectReason::LinkDisabled);
        assert_eq!(
            reason("new_thing"),
            DisconnectReason::Other("new_thing".into())
        );
        assert_eq!(
            parse_frame(r#"{"type":"disconnect"}"#),
            Ok(Frame::Disconnect {
                reason: DisconnectReason::Other(String::new())
            })
        );
    }

    #[test]
    fn interactive_envelope_is_parsed() {
        let f = parse_frame(
            r#"{"envelope_id":"e1","type":"interactive","accepts_response_payload":false,
                "payload":{"type":"block_actions","user":{"id":"U1"},"actions":[{"action_id":"coder_action_0"}]}}"#,
        );
        let Ok(Frame::Envelope(env)) = f else {
            panic!("not an envelope: {f:?}")
        };
        assert_eq!(env.envelope_id, "e1");
        assert_eq!(env.kind, "interactive");
        assert_eq!(env.payload_type(), Some("block_actions"));
        assert_eq!(env.metric_label(), "interactive");
        assert!(!env.accepts_response_payload);
        assert_eq!(env.retry_attempt, None);
    }

    #[test]
    fn events_api_retry_fields_are_parsed() {
        let f = parse_frame(
            r#"{"envelope_id":"e2","type":"events_api","payload":{},"accepts_response_payload":true,
                "retry_attempt":1,"retry_reason":"timeout"}"#,
        );
        let Ok(Frame::Envelope(env)) = f else {
            panic!("not an envelope: {f:?}")
        };
        assert_eq!(env.retry_attempt, Some(1));
        assert_eq!(env.retry_reason.as_deref(), Some("timeout"));
        assert!(env.accepts_response_payload);
    }

    #[test]
    fn unknown_and_missing_types_with_an_envelope_id_are_still_envelopes() {
        let Ok(Frame::Envelope(env)) = parse_frame(r#"{"envelope_id":"e3","type":"brand_new"}"#)
        else {
            panic!("not an envelope")
        };
        assert_eq!(env.kind, "brand_new");
        assert_eq!(env.metric_label(), "other");
        assert_eq!(env.payload, Value::Null);
        let Ok(Frame::Envelope(env)) = parse_frame(r#"{"envelope_id":"e4"}"#) else {
            panic!("not an envelope")
        };
        assert_eq!(env.kind, "unknown");
    }

    #[test]
    fn typed_frames_without_envelope_id_are_unknown() {
        assert_eq!(
            parse_frame(r#"{"type":"some thing\n"}"#),
            Ok(Frame::Unknown {
                kind: "some?thing?".into()
            })
        );
    }

    #[test]
    fn garbage_is_an_error_that_carries_no_content() {
        assert_eq!(
            parse_frame("not json xoxb-secret"),
            Err(ParseError::NotJson)
        );
        assert_eq!(parse_frame("[1,2]"), Err(ParseError::NotObject));
        assert_eq!(parse_frame(r#""text""#), Err(ParseError::NotObject));
        assert_eq!(parse_frame(r#"{"no":"type"}"#), Err(ParseError::NoType));
        assert_eq!(parse_frame(r#"{"type":5}"#), Err(ParseError::NoType));
        assert_eq!(parse_frame(r#"{"envelope_id":5}"#), Err(ParseError::NoType));
        let msg = ParseError::NotJson.to_string();
        assert!(!msg.contains("secret"));
    }

    #[test]
    fn ack_is_the_envelope_id_only() {
        let ack: Value = serde_json::from_str(&ack_text("a\"b")).unwrap();
        assert_eq!(ack, serde_json::json!({"envelope_id": "a\"b"}));
    }
}
