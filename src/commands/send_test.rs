//! `send-test`: one sample notification through the full path (lookup, render, post) to
//! one person.

use crate::coder::Notification;
use crate::config::{Config, Needs, Settings};
use crate::delivery::{Answer, Outcome};
use crate::proxy::ProxyConfig;
use crate::slack::SlackApi;
use crate::startup::slack_delivery;
use crate::state::Store;
use crate::telemetry::Metrics;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A sample notification through the full path: directory lookup, render, post.
pub async fn send_test(settings: Settings, email: &str) -> Result<(), String> {
    let config = settings.validate(Needs::BotToken).map_err(|e| e.0)?;
    let sample = include_str!(
        "../../tests/fixtures/coder-webhook-samples/TemplateTestNotification.json.golden"
    );
    let mut body: serde_json::Value = serde_json::from_str(sample).map_err(|e| e.to_string())?;
    body["msg_id"] = format!("send-test-{}", std::process::id()).into();
    body["payload"]["user_email"] = email.into();
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let notification = Notification::parse(&bytes, None).map_err(|e| e.0)?;

    let metrics = Metrics::new();
    // No app-level token: a test send needs no Socket Mode.
    let config = Config {
        slack_app_token: None,
        // To the person or nowhere: a test send must not land in the fallback channel.
        fallback_channel: None,
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
    match delivery.deliver(&notification).await {
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
