//! Snoozing a workspace from Slack: the `snooze` control on a workspace's messages, clicked
//! over Socket Mode (the fake's websocket), holds its notifications back for that person
//! until it ends or they click `unsnooze`; someone else's click changes nothing.

use crate::support;

use coder_slack_bridge::config::{Config, Threads};
use coder_slack_bridge::state::Location;
use serde_json::{json, Value};
use support::*;

const DM: &str = "DBOBBY";

const AUTOSTOP: &str = "TemplateWorkspaceAutostopReminder.json.golden";
const OUT_OF_MEMORY: &str = "TemplateWorkspaceOutOfMemory.json.golden";
const MANUALLY_UPDATED: &str = "TemplateWorkspaceManuallyUpdated.json.golden";
const RESOURCE_REPLACED: &str = "TemplateWorkspaceResourceReplaced.json.golden";

/// A bridge with Socket Mode on (the fake's websocket), threads on, its store in `dir`,
/// with one Socket Mode connection open.
async fn start(slack: &FakeSlack, socket: &FakeSocketServer, dir: &std::path::Path) -> Bridge {
    start_for(slack, socket, dir, 1).await
}

/// [`start`], once the directory holds the fake's `users`.
async fn start_for(
    slack: &FakeSlack,
    socket: &FakeSocketServer,
    dir: &std::path::Path,
    users: u64,
) -> Bridge {
    let on_file = |c: &mut Config| c.database = Location::Sqlite(dir.join("state.db"));
    start_with(slack, socket, users, on_file).await
}

/// [`bridge_with_socket_mode`] with threads on, then `adjust`ed.
async fn start_with(
    slack: &FakeSlack,
    socket: &FakeSocketServer,
    users: u64,
    adjust: impl FnOnce(&mut Config),
) -> Bridge {
    bridge_with_socket_mode(slack, socket, users, |c| {
        c.threads = Threads::Workspace;
        adjust(c);
    })
    .await
}

/// The `ts` of the first card in Bobby's DM, and of its first reply.
fn first_thread(slack: &FakeSlack) -> (String, String) {
    let card_ts = slack.messages_in(DM)[0]["ts"]
        .as_str()
        .expect("a card")
        .to_owned();
    let replies = slack.replies(DM, &card_ts);
    let reply_ts = replies[0]["ts"].as_str().expect("a reply").to_owned();
    (card_ts, reply_ts)
}

/// A click on `action` by `user` on the message at `message_ts` (in the thread `thread_ts`).
fn click(id: &str, user: &str, message_ts: &str, thread_ts: &str, action: Value) -> String {
    envelope(
        id,
        "interactive",
        json!({
            "type": "block_actions",
            "user": {"id": user},
            "container": {"type": "message", "channel_id": DM, "message_ts": message_ts, "thread_ts": thread_ts},
            "channel": {"id": DM},
            "actions": [action],
        }),
    )
}

#[tokio::test]
async fn a_snooze_from_slack_holds_a_workspace_back_until_it_is_undone() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let dir = fresh_dir("snooze");
    let bridge = start(&slack, &socket, &dir).await;

    let first = bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let card_ts = slack.messages_in(DM)[0]["ts"]
        .as_str()
        .expect("card")
        .to_owned();
    let reply = slack.replies(DM, &card_ts)[0].clone();
    assert_eq!(first["ts"], reply["ts"]);
    // The snooze control: an overflow whose options carry what a click needs.
    let overflow = reply["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["elements"][0]["action_id"] == "snooze"))
        .map(|b| b["elements"][0].clone())
        .expect("a snooze control");
    let values: Vec<&str> = overflow["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| o["value"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(values, ["1h:bobby/dev", "1d:bobby/dev", "1w:bobby/dev"]);

    // Bobby snoozes dev for a day: a note in the thread says so, with unsnooze.
    let reply_ts = reply["ts"].as_str().expect("ts");
    let snooze = json!({"action_id": "snooze", "type": "overflow", "selected_option": {"value": "1d:bobby/dev"}});
    socket.send_text(0, click("e1", "UBOBBY", reply_ts, &card_ts, snooze));
    wait_until("the snoozed note is in the thread", WAIT, async || {
        slack.replies(DM, &card_ts).len() == 2
    })
    .await;
    // Slack delivering the same click again changes nothing twice.
    let again = json!({"action_id": "snooze", "type": "overflow", "selected_option": {"value": "1d:bobby/dev"}});
    socket.send_text(0, click("e1", "UBOBBY", reply_ts, &card_ts, again));
    wait_until("the repeated click is acked", WAIT, async || {
        socket.acks().iter().filter(|(_, id)| id == "e1").count() == 2
    })
    .await;
    let note = slack.replies(DM, &card_ts)[1].clone();
    assert!(
        note["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Notifications about *dev* are snoozed until <!date^"),
        "{note}"
    );
    assert_eq!(note["blocks"][1]["elements"][0]["action_id"], "unsnooze");
    // The card shows it too, with unsnooze.
    let card_says = async |snoozed: bool| {
        wait_until("the card shows the snooze", WAIT, async || {
            let card = slack.messages_in(DM)[0].to_string();
            card.contains("Snoozed until <!date^") == snoozed
                && card.contains("\"action_id\":\"unsnooze\"") == snoozed
        })
        .await
    };
    card_says(true).await;

    // dev is held back; api is not.
    let posts = slack.calls_to("chat.postMessage").len();
    let (status, _, answer) = bridge.post(&about(OUT_OF_MEMORY, "dev")).await;
    assert_eq!((status, answer), (200, json!({"status": "snoozed"})));
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        posts,
        "nothing posted"
    );
    bridge.deliver(&about(OUT_OF_MEMORY, "api")).await;

    // Someone else's click changes nothing, and they are told why.
    let unsnooze = json!({"action_id": "unsnooze", "type": "button", "value": "bobby/dev"});
    let note_ts = note["ts"].as_str().expect("ts").to_owned();
    socket.send_text(
        0,
        click("e2", "UMALLORY", &note_ts, &card_ts, unsnooze.clone()),
    );
    slack
        .wait_for("an ephemeral note to the other person", |calls| {
            calls.iter().any(|c| c.method == "chat.postEphemeral")
        })
        .await;
    assert_eq!(
        slack.replies(DM, &card_ts).len(),
        2,
        "one note for the click Slack delivered twice"
    );
    let ephemeral = slack.calls_to("chat.postEphemeral");
    assert_eq!(ephemeral[0].args["user"], "UMALLORY");
    let (_, _, answer) = bridge.post(&about(OUT_OF_MEMORY, "dev")).await;
    assert_eq!(answer, json!({"status": "snoozed"}));

    // The snooze outlives a restart.
    bridge.stop().await;
    let bridge = start(&slack, &socket, &dir).await;
    let (_, _, answer) = bridge.post(&about(OUT_OF_MEMORY, "dev")).await;
    assert_eq!(answer, json!({"status": "snoozed"}));

    // Bobby unsnoozes from the note: the note says so, and the next notification says how
    // many were held back.
    socket.send_text(0, click("e3", "UBOBBY", &note_ts, &card_ts, unsnooze));
    wait_until("the note says the snooze ended", WAIT, async || {
        slack.replies(DM, &card_ts)[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("on again"))
    })
    .await;
    card_says(false).await;
    let next = about(OUT_OF_MEMORY, "dev");
    bridge.deliver(&next).await;
    let last = slack
        .replies(DM, &card_ts)
        .last()
        .cloned()
        .expect("a reply");
    assert_eq!(last["metadata"]["event_payload"]["msg_id"], next["msg_id"]);
    assert_eq!(
        last["blocks"][1]["elements"][0]["text"],
        "3 notifications about this workspace were held back while it was snoozed."
    );
    bridge
        .assert_metrics(&[
            "coder_slack_bridge_snoozed_total 1",
            "coder_slack_bridge_webhooks_total{outcome=\"snoozed\"} 1",
        ])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn the_app_home_lists_snoozes_and_workspaces_and_unsnoozes() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start(&slack, &socket, &fresh_dir("home")).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    bridge.deliver(&about(OUT_OF_MEMORY, "api")).await;
    let (card_ts, reply_ts) = first_thread(&slack);
    let snooze = json!({"action_id": "snooze", "selected_option": {"value": "1w:bobby/dev"}});
    socket.send_text(0, click("e1", "UBOBBY", &reply_ts, &card_ts, snooze));
    wait_until("the snoozed note", WAIT, async || {
        slack.replies(DM, &card_ts).len() == 2
    })
    .await;

    // Bobby opens the app's Home tab.
    let opened = json!({"type": "event_callback", "event": {"type": "app_home_opened", "user": "UBOBBY", "tab": "home"}});
    socket.send_text(0, envelope("e2", "events_api", opened));
    slack
        .wait_for("the Home view is published", |calls| {
            calls.iter().any(|c| c.method == "views.publish")
        })
        .await;
    let published = slack.calls_to("views.publish");
    assert_eq!(published[0].args["user_id"], "UBOBBY");
    let view = published[0].args["view"].to_string();
    assert!(view.contains("*dev* (bobby) until <!date^"), "{view}");
    assert!(
        view.contains("\"action_id\":\"unsnooze\"") && view.contains("\"value\":\"bobby/dev\""),
        "{view}"
    );
    assert!(
        view.contains("*api* (bobby)") && view.contains("is low on memory"),
        "{view}"
    );
    assert!(
        view.contains("http://test.com/settings/notifications"),
        "{view}"
    );

    // Unsnooze from the Home tab: the Home is published again, and dev is delivered again.
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
    slack
        .wait_for("the Home view is published again", |calls| {
            calls.iter().filter(|c| c.method == "views.publish").count() == 2
        })
        .await;
    let view = slack.calls_to("views.publish")[1].args["view"].to_string();
    assert!(view.contains("Nothing is snoozed"), "{view}");
    bridge.deliver(&about(OUT_OF_MEMORY, "dev")).await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_click_is_acked_at_once_while_slack_is_slow() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start(&slack, &socket, &fresh_dir("slow")).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let (card_ts, reply_ts) = first_thread(&slack);

    // Slack takes its time over everything the click leads to.
    for method in ["chat.postMessage", "chat.update", "conversations.open"] {
        slack.delay(method, std::time::Duration::from_secs(4));
    }
    let snooze = json!({"action_id": "snooze", "selected_option": {"value": "1h:bobby/dev"}});
    socket.send_text(
        0,
        click("slow-click", "UBOBBY", &reply_ts, &card_ts, snooze),
    );
    wait_until("the click is acked", WAIT, async || {
        socket.acks().iter().any(|(_, id)| id == "slow-click")
    })
    .await;
    // Acked before any of it was done: the note is not in the thread yet.
    assert_eq!(slack.replies(DM, &card_ts).len(), 1);
    // And it is done in the end.
    wait_until("the snoozed note", WAIT, async || {
        slack.replies(DM, &card_ts).len() == 2
    })
    .await;
    bridge.stop().await;
}

/// Snoozes `workspace` of Bobby's for a day from the message at `message_ts` in the thread
/// under `card_ts`, and waits for the click to be acked.
async fn snooze_from(socket: &FakeSocketServer, id: &str, message_ts: &str, card_ts: &str) {
    let snooze = json!({"action_id": "snooze", "type": "overflow", "selected_option": {"value": "1d:bobby/dev"}});
    socket.send_text(0, click(id, "UBOBBY", message_ts, card_ts, snooze));
    wait_until("the click is acked", WAIT, async || {
        socket.acks().iter().any(|(_, acked)| acked == id)
    })
    .await;
}

#[tokio::test]
async fn a_snooze_during_a_pending_card_edit_stays_on_the_card() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    // A notification's edit of the card waits a moment for others.
    let waiting_edits =
        |c: &mut Config| c.tuning.card_edit_delay = std::time::Duration::from_millis(1500);
    let bridge = start_with(&slack, &socket, 1, waiting_edits).await;

    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let (card_ts, reply_ts) = first_thread(&slack);
    // A second notification asks for an edit; before it is sent, Bobby snoozes.
    bridge.deliver(&about(OUT_OF_MEMORY, "dev")).await;
    snooze_from(&socket, "e1", &reply_ts, &card_ts).await;
    slack
        .wait_for("the card's edit", |calls| {
            calls.iter().any(|c| c.method == "chat.update")
        })
        .await;
    bridge.stop().await;
    // One edit for both changes, rendered from the store when it was sent: the latest
    // notification and the snooze, with unsnooze.
    let card = slack.messages_in(DM)[0].clone();
    assert_eq!(card["edits"], 1, "{card:#}");
    let card = card.to_string();
    assert!(card.contains("Snoozed until <!date^"), "{card}");
    assert!(card.contains("\"action_id\":\"unsnooze\""), "{card}");
    assert!(card.contains("is low on memory"), "the latest too: {card}");
    for update in slack.calls_to("chat.update") {
        let blocks = update.args["blocks"].to_string();
        assert!(
            blocks.contains("Snoozed until"),
            "no edit wipes the snooze: {blocks}"
        );
    }
}

#[tokio::test]
async fn unsnooze_on_the_card_leaves_a_card_even_when_its_edit_fails() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start(&slack, &socket, &fresh_dir("unsnooze-card")).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let (card_ts, reply_ts) = first_thread(&slack);
    snooze_from(&socket, "e1", &reply_ts, &card_ts).await;
    wait_until("the card shows the snooze", WAIT, async || {
        slack.messages_in(DM)[0]
            .to_string()
            .contains("Snoozed until")
    })
    .await;
    // Bobby unsnoozes from the card itself, and Slack fails the card's edit.
    slack.always("chat.update", Some(Canned::status(500)));
    let unsnooze = json!({"action_id": "unsnooze", "type": "button", "value": "bobby/dev"});
    socket.send_text(0, click("e2", "UBOBBY", &card_ts, &card_ts, unsnooze));
    slack
        .wait_for("a note that notifications are on again", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.postEphemeral"
                    && c.args["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("on again"))
            })
        })
        .await;
    bridge.stop().await;
    // No edit ever replaced the card by a one-line note.
    for update in slack.calls_to("chat.update") {
        let ts = update.args["ts"].as_str().unwrap_or_default();
        if ts == card_ts {
            let blocks = update.args["blocks"].to_string();
            assert!(blocks.contains("*Workspace dev*"), "a card: {update:?}");
        }
    }
    let card = slack.messages_in(DM)[0].clone();
    assert_eq!(card["blocks"][0]["text"]["text"], "*Workspace dev* · bobby");
}

#[tokio::test]
async fn the_count_held_back_survives_a_failed_post_and_coders_retry() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start(&slack, &socket, &fresh_dir("held-count")).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let (card_ts, reply_ts) = first_thread(&slack);
    snooze_from(&socket, "e1", &reply_ts, &card_ts).await;
    let (_, _, held) = bridge.post(&about(OUT_OF_MEMORY, "dev")).await;
    assert_eq!(held, json!({"status": "snoozed"}));
    let unsnooze = json!({"action_id": "unsnooze", "type": "button", "value": "bobby/dev"});
    socket.send_text(0, click("e2", "UBOBBY", &reply_ts, &card_ts, unsnooze));
    wait_until("the click is acked", WAIT, async || {
        socket.acks().iter().any(|(_, acked)| acked == "e2")
    })
    .await;
    wait_until("the card shows the snooze ended", WAIT, async || {
        !slack.messages_in(DM)[0]
            .to_string()
            .contains("Snoozed until")
    })
    .await;

    // The next notification's post fails (a revoked token, say): it waits in the outbox.
    slack.always("chat.postMessage", Some(Canned::error("token_revoked")));
    let next = about(OUT_OF_MEMORY, "dev");
    let (status, _, answer) = bridge.post(&next).await;
    assert_eq!((status, answer), (200, json!({"status": "queued"})));
    // Once Slack answers again, the outbox's send still says what the snooze held back,
    // and that it waited.
    slack.always("chat.postMessage", None);
    let last = wait_for_value("the queued reply", WAIT, async || {
        let replies = slack.replies(DM, &card_ts);
        replies
            .into_iter()
            .find(|r| r["metadata"]["event_payload"]["msg_id"] == next["msg_id"])
    })
    .await;
    let note = last["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(note.starts_with("Sent by Coder at "), "{note}");
    assert!(
        note.ends_with("it waited in the bridge's outbox while Slack was unavailable. 1 notification about this workspace was held back while it was snoozed."),
        "{note}"
    );
    // Shown once: the one after it says nothing of it.
    let after = about(OUT_OF_MEMORY, "dev");
    bridge.deliver(&after).await;
    let last = slack
        .replies(DM, &card_ts)
        .last()
        .cloned()
        .expect("a reply");
    assert!(!last.to_string().contains("held back"), "{last}");
    bridge.stop().await;
}

/// Whether any block of `message` holds an element with `action_id`.
fn has_action(message: &Value, action_id: &str) -> bool {
    message["blocks"].as_array().is_some_and(|blocks| {
        blocks.iter().any(|b| {
            b["elements"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["action_id"] == action_id))
                || b["accessory"]["action_id"] == action_id
        })
    })
}

/// The Home view published for `user` after they open the Home tab (the `nth` published).
async fn open_home(
    slack: &FakeSlack,
    socket: &FakeSocketServer,
    id: &str,
    user: &str,
    nth: usize,
) -> String {
    let opened = json!({"type": "event_callback", "event": {"type": "app_home_opened", "user": user, "tab": "home"}});
    socket.send_text(0, envelope(id, "events_api", opened));
    slack
        .wait_for("the Home view is published", |calls| {
            calls.iter().filter(|c| c.method == "views.publish").count() == nth
        })
        .await;
    let published = slack.calls_to("views.publish");
    assert_eq!(published[nth - 1].args["user_id"], user);
    published[nth - 1].args["view"].to_string()
}

#[tokio::test]
async fn an_admins_copy_about_someone_elses_workspace_is_one_plain_message_and_the_card_stays_the_owners(
) {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.add_user("alice@coder.com", "UALICE");
    let socket = FakeSocketServer::start().await;
    let bridge = start_for(&slack, &socket, &fresh_dir("admin-copy"), 2).await;

    // Alice, a template admin, gets Coder's copy of bobby's update of his workspace dev.
    let mut copy = notification(sample(MANUALLY_UPDATED), &fresh_id(), "alice@coder.com");
    copy["payload"]["user_username"] = "alice".into();
    copy["payload"]["user_name"] = "Alice".into();
    copy["payload"]["labels"]["workspace"] = "dev".into();
    copy["payload"]["labels"]["workspace_owner_username"] = "bobby".into();
    let answer = bridge.deliver(&copy).await;

    // One top-level message, the notification itself: no card, no thread, no snooze.
    let alices = slack.messages_in("DALICE");
    assert_eq!(alices.len(), 1, "{alices:#?}");
    let message = &alices[0];
    assert_eq!(message["ts"], answer["ts"]);
    assert!(message.get("thread_ts").is_none(), "{message}");
    assert_eq!(
        message["metadata"]["event_payload"]["msg_id"],
        copy["msg_id"]
    );
    assert_eq!(message["blocks"][0]["type"], "header", "{message}");
    assert!(!has_action(message, "snooze"), "{message}");
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    // Her App Home lists no workspace: the store keeps no thread of bobby's for her.
    let view = open_home(&slack, &socket, "e1", "UALICE", 1).await;
    assert!(
        view.contains("No notifications about a workspace yet."),
        "{view}"
    );
    assert!(!view.contains("*dev*"), "{view}");

    // Bobby's own notification about dev still makes his card and thread.
    bridge.deliver(&about(MANUALLY_UPDATED, "dev")).await;
    let bobbys = slack.top_level(DM);
    assert_eq!(bobbys.len(), 1, "{bobbys:#?}");
    assert_eq!(
        bobbys[0]["blocks"][0]["text"]["text"],
        "*Workspace dev* · bobby"
    );
    let replies = slack.replies(DM, bobbys[0]["ts"].as_str().expect("ts"));
    assert_eq!(replies.len(), 1);
    assert!(has_action(&replies[0], "snooze"), "{:#}", replies[0]);
    let view = open_home(&slack, &socket, "e2", "UBOBBY", 2).await;
    assert!(view.contains("*dev* (bobby)"), "{view}");
    assert_eq!(slack.messages_in("DALICE").len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn a_replaced_prebuild_resource_is_about_the_claimants_workspace_not_the_admins_own() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start(&slack, &socket, &fresh_dir("claimant")).await;

    // Bobby has a workspace of his own called my-workspace, and snoozes it.
    bridge.deliver(&about(AUTOSTOP, "my-workspace")).await;
    let (card_ts, reply_ts) = first_thread(&slack);
    let snooze =
        json!({"action_id": "snooze", "selected_option": {"value": "1d:bobby/my-workspace"}});
    socket.send_text(0, click("e1", "UBOBBY", &reply_ts, &card_ts, snooze));
    wait_until("the snoozed note", WAIT, async || {
        slack.replies(DM, &card_ts).len() == 2
    })
    .await;
    let (_, _, held) = bridge.post(&about(OUT_OF_MEMORY, "my-workspace")).await;
    assert_eq!(held, json!({"status": "snoozed"}));

    // As a template admin he is told that prebuilds-claimer's my-workspace had a resource
    // replaced: delivered, at the top level, outside his thread, with no snooze of its own.
    let replaced = notification(sample(RESOURCE_REPLACED), &fresh_id(), "bobby@coder.com");
    assert_eq!(replaced["payload"]["labels"]["workspace"], "my-workspace");
    assert_eq!(
        replaced["payload"]["labels"]["claimant"],
        "prebuilds-claimer"
    );
    let answer = bridge.deliver(&replaced).await;
    let message = slack
        .messages_in(DM)
        .into_iter()
        .find(|m| m["ts"] == answer["ts"])
        .expect("the notification in Bobby's DM");
    assert_eq!(
        message["metadata"]["event_payload"]["msg_id"],
        replaced["msg_id"]
    );
    assert!(message.get("thread_ts").is_none(), "{message}");
    assert!(!has_action(&message, "snooze"), "{message}");
    assert_eq!(
        slack.replies(DM, &card_ts).len(),
        2,
        "his thread is as it was"
    );
    assert_eq!(
        slack.top_level(DM).len(),
        3,
        "his card, the autostop reminder broadcast from his thread, and this message"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn with_threads_off_the_app_home_shows_snoozes_and_how_notifications_arrive() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = start_with(&slack, &socket, 1, |c| c.threads = Threads::Off).await;

    let answer = bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let ts = answer["ts"].as_str().expect("ts").to_owned();
    // A top-level message carries the snooze control too; Bobby snoozes dev from it.
    snooze_from(&socket, "e1", &ts, &ts).await;
    wait_until("the snooze is in force", WAIT, async || {
        let (_, _, held) = bridge.post(&about(OUT_OF_MEMORY, "dev")).await;
        held == json!({"status": "snoozed"})
    })
    .await;
    let view = open_home(&slack, &socket, "e2", "UBOBBY", 1).await;
    assert!(view.contains("*dev* (bobby) until"), "the snooze: {view}");
    assert!(view.contains("\"action_id\":\"unsnooze\""), "{view}");
    assert!(
        view.contains("Each notification from Coder arrives as its own message"),
        "how notifications arrive: {view}"
    );
    assert!(
        !view.contains("*Workspaces*") && !view.contains("No notifications about a workspace yet"),
        "no list of threads that do not exist: {view}"
    );
    bridge.stop().await;
}
