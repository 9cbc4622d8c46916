//! `send-test`: one test notification, made for the person, through the full path (lookup,
//! render, post) to them.

use crate::coder::Notification;
use crate::config::{Config, Needs, Settings};
use crate::delivery::{Answer, Outcome};
use crate::proxy::ProxyConfig;
use crate::slack::SlackApi;
use crate::startup::slack_delivery;
use crate::state::Store;
use crate::telemetry::Metrics;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The test notification for `email`, as Coder would send it: Coder's Test Notification
/// (its name and ID, so it renders as one), greeting the person by their address's name,
/// with a button to their notification settings in Coder when `CODER_URL` is known.
fn test_notification(email: &str, coder_url: Option<&url::Url>) -> Value {
    let name = email.split('@').next().unwrap_or(email);
    let greeting = format!(
        "Hi {name},\n\nThis is a test notification from coder-slack-bridge: Coder's \
         notifications to {email} reach you here."
    );
    let actions: Vec<Value> = coder_url
        .and_then(|url| url.join("/settings/notifications").ok())
        .map(|url| json!({"label": "View notification settings", "url": url.as_str()}))
        .into_iter()
        .collect();
    json!({
        "_version": "1.0",
        "msg_id": format!("send-test-{}", std::process::id()),
        "payload": {
            "_version": "1.1",
            "notification_name": "Test Notification",
            "notification_template_id": "00000000-0000-0000-0000-000000000000",
            "user_email": email,
            "user_name": name,
            "actions": actions,
            "labels": {},
        },
        // Plain text only: an address's name is not Markdown.
        "title": "A test notification",
        "body": greeting,
    })
}

/// The test notification through the full path: directory lookup, render, post.
pub async fn send_test(settings: Settings, email: &str) -> Result<(), String> {
    let config = settings.validate(Needs::BotToken).map_err(|e| e.0)?;
    let body = test_notification(email, config.coder_url.as_ref());
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    // Parsed like Coder's own, so it is checked and cleaned the same way.
    let notification = Notification::parse(&bytes, None).map_err(|e| e.0)?;

    let metrics = Metrics::new();
    // No app-level token: a test send needs no Socket Mode.
    let config = Config {
        slack_app_token: None,
        // To the person or nowhere: a test send must not land in the fallback channel, nor in
        // a channel of ROUTES_FILE (an `@all` route would take the test notification).
        fallback_channel: None,
        routes: None,
        ..config
    };
    let api = Arc::new(SlackApi::from_config(
        &config,
        &ProxyConfig::from_env()?,
        metrics.clone(),
    )?);
    // Its msg_id is its own: a private in-memory store, the real one untouched.
    let store = Store::in_memory().await.map_err(|e| e.to_string())?;
    let (delivery, _, _) = slack_delivery(api, store, &config, &metrics, &CancellationToken::new());
    // One attempt, nothing retries it: each failure says so and what to do.
    match delivery.deliver(&notification, &bytes).await {
        Ok(Answer::Fresh(Outcome::Delivered { channel, ts })) => {
            println!("delivered to {email}: channel {channel}, ts {ts}");
            Ok(())
        }
        Ok(Answer::Fresh(Outcome::Undeliverable { reason, .. })) => Err(format!(
            "send-test failed: {email} cannot be messaged ({reason}); nothing was sent. \
             Check that this is the address the person uses in Slack"
        )),
        Ok(other) => Err(format!(
            "send-test failed: unexpected answer {other:?}; nothing was sent"
        )),
        Err(e) => Err(format!(
            "send-test failed: Slack {}; nothing was sent. Run `coder-slack-bridge check` \
             to see what to fix, then send-test again",
            e.reason.strip_prefix("slack: ").unwrap_or(&e.reason)
        )),
    }
}
