//! `preview`: the `chat.postMessage` a Coder payload becomes, as JSON, without Slack; with
//! `--thread`, what a sequence of payloads becomes in the person's DM.

use crate::coder::Notification;
use crate::config::{Needs, Settings};
use crate::kinds::{self, Kind};
use crate::render::{self, RenderOptions};
use crate::routes::Routes;
use serde_json::{json, Value};
use slack_morphism::prelude::{SlackChannelId, SlackTs};
use std::io::Read;
use std::path::{Path, PathBuf};

pub fn preview(settings: Settings, files: &[PathBuf], thread: bool) -> Result<(), String> {
    // CODER_URL from the environment, `.env` or `--coder-url`, like every other setting.
    let config = settings.validate(Needs::Nothing).map_err(|e| e.0)?;
    // On standard error, so standard output stays the JSON.
    eprintln!("note: {}", super::store_and_forward(&config).1);
    let options = RenderOptions {
        snooze: config.slack_app_token.is_some(),
        coder_url: config.coder_url,
    };
    let notifications = files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(routes) = &config.routes {
        for notification in &notifications {
            eprintln!("note: {}", route_taken(routes, notification));
        }
    }
    let json = match (thread, notifications.as_slice()) {
        (false, [notification]) => message(notification, &options, None),
        (false, _) => {
            return Err("give one FILE, or --thread to see what several become together".into())
        }
        (true, notifications) => conversation(notifications, &options),
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// Which route of `ROUTES_FILE` `notification` would take (the message shown is the DM's).
fn route_taken(routes: &Routes, notification: &Notification) -> String {
    let what = &notification.notification_name;
    match routes.route_for(notification) {
        Some(route) => format!(
            "{what:?} takes {route} of {}: to {}{}",
            routes.path().display(),
            route.channel,
            if route.dm {
                " and the recipient's DM"
            } else {
                ""
            }
        ),
        None => format!("{what:?} takes no route: to the recipient's DM"),
    }
}

fn read(file: &Path) -> Result<Notification, String> {
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    Notification::parse(&body, Some("preview")).map_err(|e| format!("{}: {}", file.display(), e.0))
}

/// The chat.postMessage arguments for one notification (in the thread under `thread_ts`,
/// when given); buttons left out are noted on standard error.
fn message(notification: &Notification, options: &RenderOptions, thread_ts: Option<&str>) -> Value {
    let rendered = render::render(notification, options, None);
    for skipped in &rendered.skipped_actions {
        eprintln!(
            "note: button {} left out: {}",
            skipped.index, skipped.reason
        );
    }
    let channel = SlackChannelId(format!("<Slack user ID of {}>", notification.user_email));
    let mut request = crate::delivery::post_request(channel, rendered.content, notification);
    if let Some(ts) = thread_ts {
        let urgent = Kind::of(notification).is_some_and(|k| k.urgent);
        request = request
            .with_thread_ts(SlackTs(ts.to_owned()))
            .with_reply_broadcast(urgent);
    }
    serde_json::to_value(&request).unwrap_or(Value::Null)
}

/// The person's DM after `notifications`, as `THREADS=workspace` makes it: top-level
/// messages in order, each workspace's card (showing the latest) with its replies.
fn conversation(notifications: &[Notification], options: &RenderOptions) -> Value {
    // (recipient, owner, workspace) → index in `top`.
    let mut threads: Vec<((String, String, String), usize)> = Vec::new();
    let mut top: Vec<Value> = Vec::new();
    for notification in notifications {
        let Some(workspace) = kinds::own_workspace_of(notification) else {
            top.push(json!({"message": message(notification, options, None)}));
            continue;
        };
        let owner = workspace.owner;
        let key = (
            notification.user_email.clone(),
            owner.to_owned(),
            workspace.name.to_owned(),
        );
        let at = match threads.iter().find(|(k, _)| *k == key) {
            Some((_, at)) => *at,
            None => {
                threads.push((key, top.len()));
                top.push(json!({"card": Value::Null, "replies": []}));
                top.len() - 1
            }
        };
        let card_ts = format!("<ts of the card for {}>", workspace.name);
        let card = render::card(&render::CardState {
            workspace: workspace.name,
            owner,
            latest: &render::latest_of(notification),
            at: std::time::SystemTime::now(),
            snoozed_until: None,
        });
        top[at]["card"] = serde_json::to_value(&card).unwrap_or(Value::Null);
        if let Some(replies) = top[at]["replies"].as_array_mut() {
            replies.push(message(notification, options, Some(&card_ts)));
        }
    }
    json!({"conversation": top})
}
