//! `preview`: the `chat.postMessage` a Coder payload becomes, as JSON, without Slack.

use crate::coder::Notification;
use crate::config::{Needs, Settings};
use crate::render;
use std::io::Read;

pub fn preview(settings: Settings, file: &std::path::Path) -> Result<(), String> {
    // CODER_URL from the environment, `.env` or `--coder-url`, like every other setting.
    let config = settings.validate(Needs::Nothing).map_err(|e| e.0)?;
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    let notification = Notification::parse(&body, Some("preview")).map_err(|e| e.0)?;
    let options = render::RenderOptions {
        coder_url: config.coder_url,
    };
    let rendered = render::render(&notification, &options, None);
    for skipped in &rendered.skipped_actions {
        eprintln!(
            "note: button {} left out: {}",
            skipped.index, skipped.reason
        );
    }
    let channel = format!("<Slack user ID of {}>", notification.user_email);
    let request = crate::delivery::post_request(
        slack_morphism::prelude::SlackChannelId(channel),
        rendered.content,
        &notification,
    );
    let json = serde_json::to_string_pretty(&request).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}
