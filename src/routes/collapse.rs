//! The collapse key: what makes the copies Coder sends every admin one event. Two copies
//! differ in `msg_id`, the recipient's fields and, in older templates, a greeting by name in
//! the title and body; they agree on the template, the labels and the data. So the digest is
//! over those three alone, in a canonical form (object keys sorted, whatever order Coder
//! wrote them in), and a change in any of them is another event.

use crate::coder::Notification;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Names this digest's layout, so a future change of it cannot equal an old key.
const DOMAIN: &[u8] = b"coder-slack-bridge collapse v1\0";

/// The SHA-256 digest of `notification`'s template ID (its name, lower-case, when Coder sent
/// no ID), labels and data, in a canonical form. Equal for the copies of one event sent to
/// different people; different when the template, a label or the data differ.
pub fn collapse_digest(notification: &Notification) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    let template = notification
        .template_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty());
    match template {
        Some(id) => field(&mut hasher, b"template_id", &id.to_ascii_lowercase()),
        None => field(
            &mut hasher,
            b"name",
            &notification.notification_name.trim().to_lowercase(),
        ),
    }
    // Labels are kept sorted by name (a BTreeMap), so their order is already canonical.
    for key in notification.labels.keys() {
        field(&mut hasher, b"label", key);
        field(
            &mut hasher,
            b"value",
            notification.labels.get(key).unwrap_or_default(),
        );
    }
    hasher.update(b"data\0");
    canonical(&mut hasher, &notification.data);
    hasher.finalize().into()
}

/// A tagged, length-prefixed text: no two different sequences of fields hash alike.
fn field(hasher: &mut Sha256, tag: &[u8], text: &str) {
    hasher.update(tag);
    hasher.update((text.len() as u64).to_be_bytes());
    hasher.update(text.as_bytes());
}

/// `value` as JSON with every object's keys sorted, fed to `hasher` piece by piece.
fn canonical(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                json_text(hasher, &Value::String(key.clone()));
                hasher.update(b":");
                canonical(hasher, &object[key]);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                canonical(hasher, item);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => json_text(hasher, scalar),
    }
}

/// A string, number, boolean or null as serde_json writes it.
fn json_text(hasher: &mut Sha256, scalar: &Value) {
    // Writing a scalar into a Vec cannot fail.
    let text = serde_json::to_vec(scalar).unwrap_or_default();
    hasher.update(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_samples::sample;
    use serde_json::json;

    fn parse(body: &Value) -> Notification {
        Notification::parse(body.to_string().as_bytes(), None).expect("a valid notification")
    }

    /// `body` as Coder would send it to another admin: another msg_id, the recipient's
    /// fields theirs, and the title and body greeting them by name.
    fn copy_to(body: &Value, who: &str) -> Value {
        let mut copy = body.clone();
        copy["msg_id"] = format!("{who}-msg").into();
        let payload = &mut copy["payload"];
        payload["user_id"] = format!("{who}-id").into();
        payload["user_email"] = format!("{who}@example.com").into();
        payload["user_name"] = who.to_uppercase().into();
        payload["user_username"] = who.into();
        for field in ["title", "body", "title_markdown", "body_markdown"] {
            copy[field] = format!("Hi {who}, {}", body[field].as_str().unwrap_or("")).into();
        }
        copy
    }

    /// `value` as JSON text with every object's keys in reverse order.
    fn reversed(value: &Value) -> String {
        match value {
            Value::Object(object) => {
                let fields: Vec<String> = object
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), reversed(v)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(reversed).collect();
                format!("[{}]", items.join(","))
            }
            scalar => scalar.to_string(),
        }
    }

    #[test]
    fn copies_to_different_admins_have_one_digest() {
        for name in [
            "TemplateUserAccountCreated.json.golden",
            "TemplateUserAccountDeleted.golden.json",
            "TemplateWorkspaceBuildsFailedReport.json.golden",
            "TemplateAIModelsUnpricedReport.json.golden",
            "TemplateWorkspaceResourceReplaced.json.golden",
        ] {
            let body = sample(name);
            let alice = parse(&copy_to(&body, "alice"));
            let bob = parse(&copy_to(&body, "bob"));
            assert_ne!((&alice.msg_id, &alice.body), (&bob.msg_id, &bob.body));
            assert_eq!(collapse_digest(&alice), collapse_digest(&bob), "{name}");
            assert_eq!(
                collapse_digest(&alice),
                collapse_digest(&parse(&body)),
                "{name}"
            );
        }
    }

    #[test]
    fn the_order_of_keys_does_not_matter() {
        let body = sample("TemplateWorkspaceBuildsFailedReport.json.golden");
        assert!(body["payload"]["data"].is_object());
        let text = reversed(&body);
        assert_ne!(text, body.to_string());
        let shuffled = Notification::parse(text.as_bytes(), None).expect("valid");
        assert_eq!(collapse_digest(&shuffled), collapse_digest(&parse(&body)));
    }

    #[test]
    fn another_template_label_or_data_is_another_event() {
        let body = sample("TemplateWorkspaceResourceReplaced.json.golden");
        let digest = collapse_digest(&parse(&body));
        let changes = [
            (
                "/payload/notification_template_id",
                json!("89d9745a-816e-4695-a17f-3d0a229e2b8d"),
            ),
            ("/payload/labels/workspace", json!("another-workspace")),
            ("/payload/labels/claimant", json!("someone-else")),
            (
                "/payload/data/replacements",
                json!({"docker_container[0]": "env"}),
            ),
            ("/payload/data/replacements", json!(["env, hostname"])),
            ("/payload/data", Value::Null),
        ];
        for (place, value) in changes {
            let mut other = body.clone();
            *other.pointer_mut(place).expect(place) = value.clone();
            assert_ne!(collapse_digest(&parse(&other)), digest, "{place} = {value}");
        }
        let mut more = body.clone();
        more["payload"]["labels"]["extra"] = "x".into();
        assert_ne!(collapse_digest(&parse(&more)), digest, "a label more");
        // Without a template ID, the name tells kinds apart.
        let mut unnamed = body.clone();
        unnamed["payload"]["notification_template_id"] = Value::Null;
        let mut renamed = unnamed.clone();
        renamed["payload"]["notification_name"] = "Something Else".into();
        assert_ne!(
            collapse_digest(&parse(&unnamed)),
            collapse_digest(&parse(&renamed))
        );
    }
}
