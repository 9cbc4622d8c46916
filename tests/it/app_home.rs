//! The App Home under load and races: handlers of a burst run a bounded number at a time,
//! publishes for one person never overlap and the last one shows the store's state, and a
//! view someone else published meanwhile (Slack's `hash`) is not overwritten with an old one.

use crate::support::*;
use coder_slack_bridge::config::Threads;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_burst_of_app_home_opens_runs_at_most_the_bound_at_once() {
    let slack = FakeSlack::start().await;
    let users: Vec<String> = (1..=6).map(|n| format!("UPERSON{n}")).collect();
    for (n, user) in users.iter().enumerate() {
        slack.add_user(&format!("person{n}@coder.com"), user);
    }
    let socket = FakeSocketServer::start().await;
    let bridge = bridge_with_socket_mode(&slack, &socket, 6, |c| {
        c.tuning.socket_mode.max_handlers = 2;
    })
    .await;
    slack.delay("views.publish", Duration::from_millis(150));
    for (n, user) in users.iter().enumerate() {
        socket.send_text(0, home_opened(&format!("e{n}"), user));
    }
    // Every one acked at once, whatever waits behind the bound.
    wait_until("all six are acked", WAIT, async || socket.acks().len() == 6).await;
    slack.wait_answered("views.publish", 6).await;
    assert_eq!(slack.max_in_flight("views.publish"), 2);
    for user in &users {
        assert!(slack.home_view(user).is_some(), "{user}'s Home");
    }
    bridge.stop().await;
}

/// A click on `action` by Bobby on the message at `message_ts` in his DM's thread `thread_ts`.
fn click_in_dm(id: &str, message_ts: &str, thread_ts: &str, action: Value) -> String {
    envelope(
        id,
        "interactive",
        json!({
            "type": "block_actions",
            "user": {"id": "UBOBBY"},
            "container": {"type": "message", "channel_id": "DBOBBY", "message_ts": message_ts, "thread_ts": thread_ts},
            "channel": {"id": "DBOBBY"},
            "actions": [action],
        }),
    )
}

#[tokio::test]
async fn an_unsnooze_during_a_home_publish_ends_with_the_current_state_and_no_overlap() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = bridge_with_socket_mode(&slack, &socket, 1, |c| {
        c.threads = Threads::Workspace;
    })
    .await;
    bridge
        .deliver(&about(
            "TemplateWorkspaceAutostopReminder.json.golden",
            "dev",
        ))
        .await;
    let card_ts = slack.messages_in("DBOBBY")[0]["ts"]
        .as_str()
        .expect("a card")
        .to_owned();
    let reply_ts = slack.replies("DBOBBY", &card_ts)[0]["ts"]
        .as_str()
        .expect("a reply")
        .to_owned();
    let snooze = json!({"action_id": "snooze", "selected_option": {"value": "1w:bobby/dev"}});
    socket.send_text(0, click_in_dm("e1", &reply_ts, &card_ts, snooze));
    wait_until("the snoozed note", WAIT, async || {
        slack.replies("DBOBBY", &card_ts).len() == 2
    })
    .await;

    // Opening the Home publishes slowly; what the unsnooze asks for would land at once.
    slack.delay_next("views.publish", Duration::from_millis(1500));
    slack.delay_next("views.publish", Duration::from_millis(20));
    socket.send_text(0, home_opened("e2", "UBOBBY"));
    slack
        .wait_for("the first publish is in flight", |calls| {
            calls.iter().any(|c| c.method == "views.publish")
        })
        .await;
    let from_home = envelope(
        "e3",
        "interactive",
        json!({
            "type": "block_actions",
            "user": {"id": "UBOBBY"},
            "container": {"type": "view", "view_id": "VHOME"},
            "actions": [{"action_id": "unsnooze", "value": "bobby/dev"}],
        }),
    );
    socket.send_text(0, from_home);
    slack.wait_answered("views.publish", 2).await;
    // Every handler done: no publish is left to land later.
    bridge.stop().await;

    let view = slack.home_view("UBOBBY").expect("a Home").to_string();
    assert!(view.contains("Nothing is snoozed"), "{view}");
    assert_eq!(slack.max_publishing("UBOBBY"), 1, "publishes overlapped");
    let published = slack.calls_to("views.publish");
    assert_eq!(published.len(), 2, "the unsnooze made exactly one more");
    // The second went with the hash Slack gave the first.
    assert!(
        published[1].args["hash"].is_string(),
        "{:?}",
        published[1].args
    );
}

#[tokio::test]
async fn a_home_published_elsewhere_meanwhile_is_read_again_not_overwritten_blindly() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = bridge_with_socket_mode(&slack, &socket, 1, |_| {}).await;
    socket.send_text(0, home_opened("e1", "UBOBBY"));
    slack.wait_answered("views.publish", 1).await;
    // Another replica publishes Bobby's Home: the hash this bridge holds is stale now.
    slack.publish_elsewhere("UBOBBY", json!({"type": "home", "blocks": []}));

    socket.send_text(0, home_opened("e2", "UBOBBY"));
    slack.wait_answered("views.publish", 3).await;
    bridge.stop().await;
    let published = slack.calls_to("views.publish");
    assert_eq!(published.len(), 3);
    assert!(published[0].args.get("hash").is_none());
    // Sent with the stale hash (refused: hash_conflict), then read again and sent without.
    assert!(
        published[1].args["hash"].is_string(),
        "{:?}",
        published[1].args
    );
    assert!(published[2].args.get("hash").is_none());
    let view = slack.home_view("UBOBBY").expect("a Home").to_string();
    assert!(view.contains("Your Coder notifications"), "{view}");
}
