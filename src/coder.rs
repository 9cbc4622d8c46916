//! The notification Coder posts to its webhook endpoint, parsed and validated.
//!
//! Every generation is accepted: webhook `_version` 1.0 (no `*_markdown`), payload 1.0–1.2
//! (`targets` absent or null), `data` of any shape, unknown fields ignored. A body that is not
//! a usable notification gets an error naming the offending field.
//!
//! Every text a person may see (titles, bodies, labels, buttons, names) is cleaned here, as
//! it is parsed (see [`crate::untrusted`]). This is the one door: the bridge makes a
//! [`Notification`] only with [`Notification::parse`] (`serve`, `preview`, `send-test`), and
//! everything Slack shows comes from one (a message, its plain-text form, a card, the
//! store's thread keys and so the App Home, the buttons' values), so no path can skip the
//! cleaning, as one could if each renderer had to remember it.

use crate::untrusted;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

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
    /// The recipient's Coder user ID (a UUID; Coder's test fixtures zero it).
    pub user_id: Option<String>,
    /// `payload.targets[0]` (payload 1.2+): for kinds about a workspace, its ID; a hint only.
    pub first_target: Option<String>,
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
    /// `payload.labels` that are text; which of them name a workspace and its owner is
    /// [`crate::kinds`]' table.
    pub labels: Labels,
    /// `payload.data` as Coder sent it (`null` when absent): never shown to anyone, only
    /// compared, so the copies Coder sends every admin can be told to be one event
    /// (`routes::collapse_digest`).
    pub data: Value,
    /// Which of `kinds::KINDS` it is, looked up once (`kinds::Kind::of`): every step of a
    /// delivery asks, and the lookup compares its ID or name with the whole table.
    pub kind: KindSlot,
}

/// Where a notification keeps the index of its kind once looked up. Only a cache: it takes no
/// part in comparing notifications.
#[derive(Clone, Default)]
pub struct KindSlot(OnceLock<Option<u8>>);

impl KindSlot {
    /// The index, looked up with `lookup` the first time.
    pub fn get_or_init(&self, lookup: impl FnOnce() -> Option<u8>) -> Option<u8> {
        *self.0.get_or_init(lookup)
    }
}

impl PartialEq for KindSlot {
    fn eq(&self, _: &KindSlot) -> bool {
        true
    }
}

impl Eq for KindSlot {}

/// `payload.labels` whose values are strings (trimmed, cleaned, non-empty); labels of other
/// types are ignored, as Coder may add labels at any time. Values can be secret (the one-time
/// passcode is one), so `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The label `key`'s value, when it is present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The labels' names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    fn from_wire(labels: Option<&Value>) -> Self {
        let Some(labels) = labels.and_then(Value::as_object) else {
            return Labels::default();
        };
        let text = |(key, value): (&String, &Value)| {
            let value = untrusted::clean(value.as_str()?).trim().to_owned();
            (!value.is_empty()).then(|| (key.clone(), value))
        };
        Labels(labels.iter().filter_map(text).collect())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
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

/// The body as Coder sends it. Every field is optional here: what is required is checked in
/// [`Wire::validate`], so the error can name it. Fields not listed (anything new) are
/// skipped without being built.
#[derive(Deserialize)]
struct Wire {
    msg_id: Option<String>,
    payload: Option<WirePayload>,
    title: Option<String>,
    body: Option<String>,
    title_markdown: Option<String>,
    body_markdown: Option<String>,
}

#[derive(Deserialize)]
struct WirePayload {
    notification_name: Option<String>,
    notification_template_id: Option<String>,
    /// Any JSON: a string is kept, anything else ignored (only buttons that act need it).
    user_id: Option<Value>,
    /// Any JSON: only a first element that is a string is kept.
    targets: Option<Value>,
    user_email: Option<String>,
    user_name: Option<String>,
    user_username: Option<String>,
    actions: Option<Vec<WireAction>>,
    /// Any JSON: only its string values are taken.
    labels: Option<Value>,
    /// Any JSON, kept as it is.
    data: Option<Value>,
}

#[derive(Deserialize)]
struct WireAction {
    label: Option<String>,
    url: Option<String>,
}

impl Notification {
    /// Parses a webhook body. `header_msg_id` is Coder's `X-Message-Id`, used when the body
    /// lacks `msg_id`.
    pub fn parse(body: &[u8], header_msg_id: Option<&str>) -> Result<Self, PayloadError> {
        let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        match serde_json::from_slice::<Wire>(body) {
            Ok(wire) if is_object => wire.validate(header_msg_id),
            // The typed parse says only that something is off; the tree says which field.
            Ok(_) | Err(_) => Err(explain(body)),
        }
    }
}

impl Wire {
    fn validate(self, header_msg_id: Option<&str>) -> Result<Notification, PayloadError> {
        let msg_id = match self.msg_id {
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
        let payload = self
            .payload
            .ok_or_else(|| PayloadError("payload is missing".into()))?;
        Ok(Notification {
            user_email: user_email(payload.user_email)?,
            actions: actions(payload.actions)?,
            labels: Labels::from_wire(payload.labels.as_ref()),
            data: payload.data.unwrap_or(Value::Null),
            msg_id,
            notification_name: clean(payload.notification_name).unwrap_or_default(),
            template_id: payload.notification_template_id,
            user_id: payload.user_id.as_ref().and_then(text_of),
            first_target: payload
                .targets
                .as_ref()
                .and_then(|t| t.get(0))
                .and_then(text_of),
            user_name: clean(payload.user_name),
            user_username: clean(payload.user_username),
            title: clean(self.title).unwrap_or_default(),
            body: clean(self.body).unwrap_or_default(),
            title_markdown: clean(self.title_markdown),
            body_markdown: clean(self.body_markdown),
            kind: KindSlot::default(),
        })
    }
}

/// A text someone may see, cleaned (see [`crate::untrusted`]).
fn clean(text: Option<String>) -> Option<String> {
    text.map(untrusted::cleaned)
}

/// The recipient's address, as the directory looks it up. Not cleaned but refused when it
/// needs cleaning: an address cleaned into another could reach someone else.
fn user_email(raw: Option<String>) -> Result<String, PayloadError> {
    let user_email = raw
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| PayloadError("payload.user_email is missing".into()))?;
    if !user_email.contains('@') || !untrusted::is_clean(&user_email) {
        return Err(PayloadError(
            "payload.user_email is not an e-mail address".into(),
        ));
    }
    Ok(user_email)
}

/// Coder's buttons, labels and URLs cleaned; a button without a URL is an error.
fn actions(raw: Option<Vec<WireAction>>) -> Result<Vec<Action>, PayloadError> {
    raw.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let url = action
                .url
                .ok_or_else(|| PayloadError(format!("payload.actions[{i}].url is missing")))?;
            Ok(Action {
                label: clean(action.label).unwrap_or_default(),
                url: untrusted::cleaned(url),
            })
        })
        .collect()
}

/// A JSON string's trimmed text, when it is a non-empty string.
fn text_of(value: &Value) -> Option<String> {
    let text = value.as_str()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Names what is wrong with a body the typed parse refused: invalid JSON, or the first field
/// of the wrong type.
fn explain(body: &[u8]) -> PayloadError {
    let root: Value = match serde_json::from_slice(body) {
        Ok(root) => root,
        Err(e) => return PayloadError(format!("body is not valid JSON: {e}")),
    };
    let Some(root) = root.as_object() else {
        return PayloadError("body must be a JSON object".into());
    };
    let strings = |object: &Map<String, Value>, keys: &[&str], prefix: &str| {
        keys.iter()
            .find(|key| {
                !matches!(
                    object.get(**key),
                    None | Some(Value::Null | Value::String(_))
                )
            })
            .map(|key| PayloadError(format!("{prefix}{key} must be a string")))
    };
    const ROOT_STRINGS: [&str; 5] = ["msg_id", "title", "body", "title_markdown", "body_markdown"];
    const PAYLOAD_STRINGS: [&str; 5] = [
        "notification_name",
        "notification_template_id",
        "user_email",
        "user_name",
        "user_username",
    ];
    if let Some(e) = strings(root, &ROOT_STRINGS, "") {
        return e;
    }
    let payload = match root.get("payload") {
        None | Some(Value::Null) => return PayloadError("payload is missing".into()),
        Some(Value::Object(p)) => p,
        Some(_) => return PayloadError("payload must be an object".into()),
    };
    if let Some(e) = strings(payload, &PAYLOAD_STRINGS, "payload.") {
        return e;
    }
    match payload.get("actions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(item) = item.as_object() else {
                    return PayloadError(format!("payload.actions[{i}] must be an object"));
                };
                if let Some(e) = strings(item, &["label", "url"], &format!("payload.actions[{i}]."))
                {
                    return e;
                }
            }
        }
        Some(_) => return PayloadError("payload.actions must be a list".into()),
    }
    PayloadError("body does not have the shape of a Coder notification".into())
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
        let n = parse(r#"{"msg_id":"m","payload":{"user_email":"a@b","actions":[{"label":"Reset","url":"http://x/?otp=SECRET1"}],"labels":{"one_time_passcode":"SECRET3"}},"body":"SECRET2"}"#).expect("ok");
        let shown = format!("{n:?} {:?} {:?}", n.actions, n.labels);
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn every_text_a_person_may_see_is_cleaned_and_a_doctored_address_is_refused() {
        let dirty = "a\u{202e}b\u{1b}[31mc\u{1b}[0m\u{0}";
        let body = serde_json::json!({
            "msg_id": "m", "title": dirty, "body": dirty, "title_markdown": dirty, "body_markdown": dirty,
            "payload": {
                "notification_name": dirty, "user_email": "a@b.c", "user_name": dirty,
                "user_username": dirty, "labels": {"workspace": dirty, "count": 3},
                "actions": [{"label": dirty, "url": format!("http://x/{dirty}")}],
            },
        });
        let n = parse(&body.to_string()).expect("valid");
        let texts = [&n.title, &n.body, &n.notification_name, &n.actions[0].label];
        assert!(texts.iter().all(|t| *t == "abc"), "{texts:?}");
        let optional = [
            &n.title_markdown,
            &n.body_markdown,
            &n.user_name,
            &n.user_username,
        ];
        assert!(
            optional.iter().all(|t| t.as_deref() == Some("abc")),
            "{optional:?}"
        );
        assert_eq!(n.labels.get("workspace"), Some("abc"));
        assert_eq!(n.labels.get("count"), None);
        assert_eq!(n.actions[0].url, "http://x/abc");

        for email in ["bob\u{202e}@b.c", "bob@b.c\u{1b}[0m", "bo\u{0}b@b.c"] {
            let body = serde_json::json!({"msg_id": "m", "payload": {"user_email": email}});
            let err = parse(&body.to_string()).expect_err(email);
            assert_eq!(err.0, "payload.user_email is not an e-mail address");
        }
    }

    #[test]
    fn every_sample_parses() {
        let samples = crate::test_samples::sample_bytes();
        assert_eq!(samples.len(), crate::test_samples::SAMPLE_COUNT);
        for (name, body) in samples {
            Notification::parse(&body, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
