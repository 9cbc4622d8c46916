//! `THREADS=workspace`: notifications about a workspace gather in its thread in the person's
//! DM, under a card edited to show the latest; urgent ones are broadcast to the conversation.
//! Asserted on what the fake Slack keeps: each conversation's posts, threads and edits.

use crate::support;

use coder_slack_bridge::config::Config;
use coder_slack_bridge::delivery::Threads;
use coder_slack_bridge::state::Location;
use serde_json::{json, Value};
use support::*;

const DM: &str = "DBOBBY";

const AUTOSTOP: &str = "TemplateWorkspaceAutostopReminder.json.golden";
const AUTOBUILD_FAILED: &str = "TemplateWorkspaceAutobuildFailed.json.golden";
const OUT_OF_MEMORY: &str = "TemplateWorkspaceOutOfMemory.json.golden";
const DELETED: &str = "TemplateWorkspaceDeleted.json.golden";
const MANUALLY_UPDATED: &str = "TemplateWorkspaceManuallyUpdated.json.golden";
const AWAITING_APPROVAL: &str = "TemplateMCPGatewayEscalationRequested.json.golden";
const TEST: &str = "TemplateTestNotification.json.golden";

fn threaded(config: &mut Config) {
    config.threads = Threads::Workspace;
}

fn msg_id(message: &Value) -> &str {
    message["metadata"]["event_payload"]["msg_id"]
        .as_str()
        .unwrap_or_default()
}

/// The card whose heading names `workspace`.
fn card_of(slack: &FakeSlack, workspace: &str) -> Value {
    let heading = format!("*Workspace {workspace}* ·");
    let cards: Vec<Value> = slack
        .top_level(DM)
        .into_iter()
        .filter(|m| {
            m["blocks"][0]["text"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(&heading))
        })
        .collect();
    assert_eq!(cards.len(), 1, "one card for {workspace}: {cards:#?}");
    cards[0].clone()
}

#[tokio::test]
async fn a_thread_per_workspace_under_a_card_kept_current() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    let dev = [AUTOSTOP, AUTOBUILD_FAILED, OUT_OF_MEMORY, DELETED].map(|s| about(s, "dev"));
    for body in &dev {
        bridge.deliver(body).await;
    }
    let api = about(MANUALLY_UPDATED, "api");
    bridge.deliver(&api).await;
    let test = notification(sample(TEST), &fresh_id(), "bobby@coder.com");
    bridge.deliver(&test).await;

    // dev: one thread, the four in order, each broadcast (all four kinds are urgent).
    let dev_card = card_of(&slack, "dev");
    let dev_ts = dev_card["ts"].as_str().expect("ts");
    let replies = slack.replies(DM, dev_ts);
    let ids: Vec<&str> = replies.iter().map(msg_id).collect();
    let sent: Vec<&str> = dev
        .iter()
        .map(|b| b["msg_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, sent);
    assert!(
        replies.iter().all(|r| r["reply_broadcast"] == true),
        "{replies:#?}"
    );
    // The card shows the last one: made for the first, edited as each of the others arrived.
    let latest = dev_card["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        latest.starts_with("Latest: Workspace \"bobby-workspace\" deleted · <!date^"),
        "{latest}"
    );
    assert_eq!(dev_card["edits"], 3);
    assert_eq!(
        dev_card["blocks"][0]["text"]["text"],
        "*Workspace dev* · bobby"
    );

    // api: its own thread, not broadcast (a routine kind). Coder names its owner "Bobby":
    // the recipient, bobby (usernames are case-insensitive), so the thread is his.
    let api_card = card_of(&slack, "api");
    assert_eq!(
        api_card["blocks"][0]["text"]["text"],
        "*Workspace api* · bobby"
    );
    let api_replies = slack.replies(DM, api_card["ts"].as_str().expect("ts"));
    assert_eq!(api_replies.len(), 1);
    assert_eq!(msg_id(&api_replies[0]), api["msg_id"]);
    assert_eq!(api_replies[0]["reply_broadcast"], false);

    // The test notification is about no workspace: top level, in no thread.
    let test_message = slack
        .top_level(DM)
        .into_iter()
        .find(|m| msg_id(m) == test["msg_id"])
        .expect("the test notification at top level");
    assert!(test_message.get("thread_ts").is_none());
    // What the person sees without opening a thread: 2 cards, 4 broadcasts, the test.
    assert_eq!(slack.top_level(DM).len(), 7);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 8);
    bridge.stop().await;
}

#[tokio::test]
async fn threads_off_posts_each_notification_at_top_level_as_before() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    for body in [AUTOSTOP, DELETED].map(|s| about(s, "dev")) {
        bridge.deliver(&body).await;
    }
    let messages = slack.messages_in(DM);
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.get("thread_ts").is_none()));
    assert!(slack.calls_to("chat.update").is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn notifications_about_a_new_workspace_at_once_share_one_card() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    let bodies: Vec<Value> = (0..5).map(|_| about(OUT_OF_MEMORY, "dev")).collect();
    bridge.deliver_all(&bodies).await;
    let card = card_of(&slack, "dev");
    assert_eq!(slack.replies(DM, card["ts"].as_str().expect("ts")).len(), 5);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 6);
    bridge.stop().await;
}

#[tokio::test]
async fn a_deleted_card_starts_a_new_thread() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    let first = card_of(&slack, "dev");
    slack.delete_message(DM, first["ts"].as_str().expect("ts"));
    let next = about(DELETED, "dev");
    let answer = bridge.deliver(&next).await;
    let second = card_of(&slack, "dev");
    assert_ne!(first["ts"], second["ts"]);
    let replies = slack.replies(DM, second["ts"].as_str().expect("ts"));
    assert_eq!(replies.len(), 1);
    assert_eq!(msg_id(&replies[0]), next["msg_id"]);
    assert_eq!(answer["ts"], replies[0]["ts"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_reply_whose_answer_is_lost_is_read_back_in_its_thread() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    // The next reply reaches Slack, but an edge proxy answers 502.
    slack.lose_answer("chat.postMessage", Lost::Status(502));
    let body = about(OUT_OF_MEMORY, "dev");
    let answer = bridge.deliver(&body).await;
    let card = card_of(&slack, "dev");
    let replies = slack.replies(DM, card["ts"].as_str().expect("ts"));
    assert_eq!(replies.len(), 2, "posted once: {replies:#?}");
    assert_eq!(answer["ts"], replies[1]["ts"]);
    assert_eq!(slack.calls_to("conversations.replies").len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn threads_outlive_a_restart() {
    let dir = fresh_dir("threads-restart");
    let on_file = |config: &mut Config| {
        config.threads = Threads::Workspace;
        config.database = Location::Sqlite(dir.join("state.db"));
    };
    let (slack, bridge) = bridge_with_bobby(on_file).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    bridge.stop().await;

    let mut config = config(settings(&slack));
    on_file(&mut config);
    let bridge = Bridge::start(config).await;
    bridge.wait_ready(200).await;
    bridge.deliver(&about(DELETED, "dev")).await;
    let card = card_of(&slack, "dev");
    assert_eq!(slack.replies(DM, card["ts"].as_str().expect("ts")).len(), 2);
    assert_eq!(card["edits"], 1);
    bridge.stop().await;
    assert_eq!(slack.top_level(DM).len(), 3, "one card, two broadcasts");
}

#[tokio::test]
async fn a_burst_about_one_workspace_edits_its_card_once_and_a_stop_sends_what_is_queued() {
    let coalescing = |config: &mut Config| {
        config.threads = Threads::Workspace;
        config.tuning.card_edit_delay = std::time::Duration::from_secs(2);
    };
    let (slack, bridge) = bridge_with_bobby(coalescing).await;
    // The first makes the card; five more follow at once.
    let burst = [
        AUTOSTOP,
        OUT_OF_MEMORY,
        AUTOBUILD_FAILED,
        OUT_OF_MEMORY,
        AUTOSTOP,
        DELETED,
    ]
    .map(|s| about(s, "dev"));
    for body in &burst {
        bridge.deliver(body).await;
    }
    // Every webhook was answered without waiting for the card.
    assert!(slack.calls_to("chat.update").is_empty());
    slack
        .wait_for("one edit of the card", |calls| {
            calls.iter().any(|c| c.method == "chat.update")
        })
        .await;
    let card = card_of(&slack, "dev");
    assert_eq!(card["edits"], 1, "one edit for the burst: {card:#}");
    let latest = card["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        latest.starts_with("Latest: Workspace \"bobby-workspace\" deleted"),
        "the card shows the last of the burst: {latest}"
    );
    assert_eq!(slack.replies(DM, card["ts"].as_str().expect("ts")).len(), 6);

    // A stop does not wait out the delay, nor lose the edit.
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    bridge.stop().await;
    slack
        .wait_for("the queued edit is sent at the stop", |calls| {
            calls.iter().filter(|c| c.method == "chat.update").count() == 2
        })
        .await;
    let card = card_of(&slack, "dev");
    let latest = card["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        latest.starts_with("Latest: Your workspace \"bobby-workspace\" will stop soon"),
        "{latest}"
    );
}

#[tokio::test]
async fn a_rate_limited_card_edit_waits_as_slack_says_then_shows_the_latest() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    // chat.update is Tier 3: Slack refuses the next edit for a second.
    slack.push("chat.update", Canned::rate_limited(1));
    bridge.deliver(&about(DELETED, "dev")).await;
    slack
        .wait_for("the edit tried again", |calls| {
            calls.iter().filter(|c| c.method == "chat.update").count() == 2
        })
        .await;
    bridge.stop().await;
    let card = card_of(&slack, "dev");
    assert_eq!(card["edits"], 1);
    let latest = card["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(latest.contains("deleted"), "{latest}");
}

#[tokio::test]
async fn a_card_edit_that_fails_for_good_is_counted_and_logged() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    bridge
        .assert_metrics(&["coder_slack_bridge_card_edits_failed_total 0"])
        .await;
    slack.always("chat.update", Some(Canned::status(500)));
    bridge.deliver(&about(DELETED, "dev")).await;
    // A few attempts with backoff, then it is given up, counted.
    wait_until("the edit is given up", WAIT, async || {
        let (_, metrics) = bridge.get("/metrics").await;
        metrics.contains("coder_slack_bridge_card_edits_failed_total 1")
    })
    .await;
    assert_eq!(slack.calls_to("chat.update").len(), 5);
    bridge.stop().await;
}

#[tokio::test]
async fn a_stop_waits_for_a_pending_card_edit() {
    let slow_edits = |config: &mut Config| {
        config.threads = Threads::Workspace;
        config.tuning.card_edit_delay = std::time::Duration::from_secs(20);
    };
    let (slack, bridge) = bridge_with_bobby(slow_edits).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    // Slack takes its time over the edit that the stop sends.
    slack.delay("chat.update", std::time::Duration::from_millis(700));
    bridge.deliver(&about(DELETED, "dev")).await;
    assert!(slack.calls_to("chat.update").is_empty(), "still waiting");
    bridge.stop().await;
    // Sent at once by the stop, and waited for: the card shows it when the stop returns.
    let card = card_of(&slack, "dev");
    assert_eq!(card["edits"], 1, "{card:#}");
}

#[tokio::test]
async fn a_tool_call_awaiting_approval_joins_its_workspaces_thread() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    bridge.deliver(&about(AUTOSTOP, "dev")).await;
    // Coder names its workspace in `workspace_name`.
    let approval = about(AWAITING_APPROVAL, "dev");
    assert_eq!(approval["payload"]["labels"]["workspace_name"], "dev");
    let answer = bridge.deliver(&approval).await;
    let card = card_of(&slack, "dev");
    let replies = slack.replies(DM, card["ts"].as_str().expect("ts"));
    assert_eq!(replies.len(), 2, "{replies:#?}");
    assert_eq!(msg_id(&replies[1]), approval["msg_id"]);
    assert_eq!(replies[1]["ts"], answer["ts"]);
    bridge.stop().await;
}

#[tokio::test]
async fn reversing_marks_and_terminal_colours_from_coder_never_reach_slack() {
    let (slack, bridge) = bridge_with_bobby(threaded).await;
    // A workspace named so that Slack would show its tail reversed, and a body with colours
    // from a terminal, in every field Coder fills.
    let name = "bobby-\u{202e}ved";
    let mut body = about(OUT_OF_MEMORY, name);
    body["title"] = format!("Your workspace \"{name}\" is low on memory").into();
    body["title_markdown"] = body["title"].clone();
    body["body"] = format!("Your workspace {name} has reached \u{1b}[1;31m90%\u{1b}[0m.").into();
    body["body_markdown"] =
        format!("Your workspace **{name}** has reached **\u{1b}[1;31m90%\u{1b}[0m**.").into();
    body["payload"]["actions"] = json!([{
        "label": "View \u{1b}[32mworkspace\u{1b}[0m\u{2067}",
        "url": format!("http://test.com/@bobby/{name}"),
    }]);
    bridge.deliver(&body).await;

    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(
        posts.len(),
        2,
        "the card, then the notification in its thread"
    );
    let (card, reply) = (&posts[0].args, &posts[1].args);
    assert_eq!(
        card["blocks"][0]["text"]["text"],
        "*Workspace bobby-ved* · bobby"
    );
    assert_eq!(
        card["text"],
        "Workspace bobby-ved (bobby): Your workspace \"bobby-ved\" is low on memory"
    );
    assert_eq!(
        reply["blocks"][0]["text"]["text"],
        "Your workspace \"bobby-ved\" is low on memory"
    );
    assert_eq!(
        reply["blocks"][1]["text"]["text"],
        "Your workspace *bobby-ved* has reached *90%*."
    );
    assert_eq!(
        reply["blocks"][2]["elements"][0]["text"]["text"],
        "View workspace"
    );
    assert_eq!(
        reply["blocks"][2]["elements"][0]["url"],
        "http://test.com/@bobby/bobby-ved"
    );
    assert_eq!(
        reply["text"],
        "Your workspace \"bobby-ved\" is low on memory\nYour workspace bobby-ved has reached 90%."
    );
    // Nor anywhere else in what Slack was sent (the card's edits included).
    for call in slack.calls() {
        let sent = call.args.to_string();
        assert!(
            !sent.contains('\u{202e}') && !sent.contains("\\u001b"),
            "{}: {sent}",
            call.method
        );
    }
    bridge.stop().await;
}
