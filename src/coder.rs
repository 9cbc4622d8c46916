//! The notification Coder posts to its webhook endpoint, parsed and validated.
//!
//! Every generation is accepted: webhook `_version` 1.0 (no `*_markdown`), payload 1.0–1.2
//! (`targets` absent or null), `data` of any shape, unknown fields ignored. A body that is not
//! a usable notification gets an error naming the offending field.

use serde_json::{Map, Value};
use std::fmt;

/// Longest `msg_id` accepted: Coder sends UUIDs; anything far longer is not from Coder.
const MAX_MSG_ID_LEN: usize = 256;

/// One button Coder attached to the notification.
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    pub label: String,
    /// Sensitive: may carry a one-time passcode.
    pub url: String,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Action")
            .field("label", &self.label)
            .field("url", &"[redacted]")
            .finish()
    }
}

/// A validated Coder notification. Its `Debug` output leaves out everything a notification
/// can carry in secret (bodies, URLs, labels' values), so it is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct Notification {
    pub msg_id: String,
    pub notification_name: String,
    pub template_id: Option<String>,
    pub user_email: String,
    pub user_name: Option<String>,
    pub user_username: Option<String>,
    pub actions: Vec<Action>,
    /// Plain text.
    pub title: String,
    /// Plain text.
    pub body: String,
    /// Markdown (webhook `_version` 1.1 and later).
    pub title_markdown: Option<String>,
    /// Markdown (webhook `_version` 1.1 and later).
    pub body_markdown: Option<String>,
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notification")
            .field("msg_id", &self.msg_id)
            .field("notification_name", &self.notification_name)
            .field("template_id", &self.template_id)
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

/// Why a body is not a usable notification; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl Notification {
    /// Parses a webhook body. `header_msg_id` is Coder's `X-Message-Id`, used when the body
    /// lacks `msg_id`.
    pub fn parse(body: &[u8], header_msg_id: Option<&str>) -> Result<Self, PayloadError> {
        let root: Value = serde_json::from_slice(body)
            .map_err(|e| PayloadError(format!("body is not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| PayloadError("body must be a JSON object".into()))?;

        let msg_id = match opt_string(root, "msg_id", "msg_id")? {
            Some(id) if !id.is_empty() => id,
            _ => header_msg_id
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| PayloadError("msg_id is missing".into()))?,
        };
        if msg_id.len() > MAX_MSG_ID_LEN {
            return Err(PayloadError(format!(
                "msg_id is longer than {MAX_MSG_ID_LEN} characters"
            )));
        }

        let payload = match root.get("payload") {
            Some(Value::Object(p)) => p,
            Some(Value::Null) | None => return Err(PayloadError("payload is missing".into())),
            Some(_) => return Err(PayloadError("payload must be an object".into())),
        };

        let user_email = opt_string(payload, "user_email", "payload.user_email")?
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| PayloadError("payload.user_email is missing".into()))?;
        if !user_email.contains('@') {
            return Err(PayloadError(
                "payload.user_email is not an e-mail address".into(),
            ));
        }

        Ok(Notification {
            msg_id,
            notification_name: opt_string(
                payload,
                "notification_name",
                "payload.notification_name",
            )?
            .unwrap_or_default(),
            template_id: opt_string(
                payload,
                "notification_template_id",
                "payload.notification_template_id",
            )?,
            user_email,
            user_name: opt_string(payload, "user_name", "payload.user_name")?,
            user_username: opt_string(payload, "user_username", "payload.user_username")?,
            actions: parse_actions(payload.get("actions"))?,
            title: opt_string(root, "title", "title")?.unwrap_or_default(),
            body: opt_string(root, "body", "body")?.unwrap_or_default(),
            title_markdown: opt_string(root, "title_markdown", "title_markdown")?,
            body_markdown: opt_string(root, "body_markdown", "body_markdown")?,
        })
    }
}

/// A string field that may be absent or null, but is a string when present.
fn opt_string(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, PayloadError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PayloadError(format!("{path} must be a string"))),
    }
}

fn parse_actions(value: Option<&Value>) -> Result<Vec<Action>, PayloadError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(PayloadError("payload.actions must be a list".into())),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item
                .as_object()
                .ok_or_else(|| PayloadError(format!("payload.actions[{i}] must be an object")))?;
            let label = opt_string(item, "label", &format!("payload.actions[{i}].label"))?
                .unwrap_or_default();
            let url = opt_string(item, "url", &format!("payload.actions[{i}].url"))?
                .ok_or_else(|| PayloadError(format!("payload.actions[{i}].url is missing")))?;
            Ok(Action { label, url })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Notification, PayloadError> {
        Notification::parse(body.as_bytes(), None)
    }

    const MINIMAL: &str =
        r#"{"msg_id":"m1","payload":{"user_email":"a@b.c"},"title":"T","body":"B"}"#;

    #[test]
    fn minimal_webhook_1_0_is_accepted() {
        let n = parse(MINIMAL).expect("valid");
        assert_eq!(n.msg_id, "m1");
        assert_eq!(n.user_email, "a@b.c");
        assert_eq!(n.title, "T");
        assert!(n.actions.is_empty());
        assert_eq!(n.body_markdown, None);
    }

    #[test]
    fn unknown_fields_and_null_data_and_targets_are_accepted() {
        let body = r#"{"_version":"9.9","msg_id":"m","extra":[1],"payload":{"_version":"1.2",
            "user_email":"a@b.c","data":null,"targets":null,"labels":{},"actions":null,"new":{}}}"#;
        assert!(parse(body).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[]", "body must be a JSON object"),
            ("{", "body is not valid JSON"),
            (r#"{"payload":{"user_email":"a@b"}}"#, "msg_id is missing"),
            (r#"{"msg_id":"m"}"#, "payload is missing"),
            (r#"{"msg_id":"m","payload":3}"#, "payload must be an object"),
            (
                r#"{"msg_id":"m","payload":{}}"#,
                "payload.user_email is missing",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":7}}"#,
                "payload.user_email must be a string",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"nobody"}}"#,
                "payload.user_email is not an e-mail address",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":{}}}"#,
                "payload.actions must be a list",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":[1]}}"#,
                "payload.actions[0] must be an object",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":[{"label":"x"}]}}"#,
                "payload.actions[0].url is missing",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":[{"label":1,"url":"u"}]}}"#,
                "payload.actions[0].label must be a string",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b"},"title":{}}"#,
                "title must be a string",
            ),
            (
                r#"{"msg_id":"m","payload":{"user_email":"a@b"},"body_markdown":[]}"#,
                "body_markdown must be a string",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).expect_err(body);
            assert!(
                err.0.starts_with(expected),
                "{body}: got {err}, want {expected}"
            );
        }
    }

    #[test]
    fn msg_id_falls_back_to_the_header() {
        let n =
            Notification::parse(br#"{"payload":{"user_email":"a@b"}}"#, Some("hdr")).expect("ok");
        assert_eq!(n.msg_id, "hdr");
    }

    #[test]
    fn debug_output_hides_bodies_and_urls() {
        let n = parse(r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":[{"label":"Reset","url":"http://x/?otp=SECRET1"}]},"body":"SECRET2"}"#).expect("ok");
        let shown = format!("{n:?} {:?}", n.actions);
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn every_sample_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/coder-webhook-samples");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("samples folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let body = std::fs::read(&path).expect("read");
            Notification::parse(&body, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
        assert_eq!(count, 68);
    }
}
