//! Exactly once when Slack's answer is lost, hard time limits, and outcomes that say whose
//! fault a failure is.

use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The one message in Bobby's DM carries this body's msg_id, and the answer names it.
fn assert_one_message_in_the_dm(slack: &FakeSlack, body: &Value, answer: &Value) {
    let dm = slack.messages_in("DBOBBY");
    assert_eq!(dm.len(), 1, "exactly one message in the DM: {dm:?}");
    assert_eq!(dm[0]["metadata"]["event_payload"]["msg_id"], body["msg_id"]);
    assert_eq!(
        (&answer["status"], &answer["channel"], &answer["ts"]),
        (&json!("delivered"), &json!("DBOBBY"), &dm[0]["ts"]),
        "{answer}"
    );
}

#[tokio::test]
async fn a_post_whose_answer_is_lost_at_the_edge_is_found_in_the_dm_not_posted_again() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    slack.lose_answer("chat.postMessage", Lost::Status(504));
    let body = workspace_deleted("bobby@coder.com");
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_one_message_in_the_dm(&slack, &body, &answer);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    let open = slack.calls_to("conversations.open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].args, json!({"users": "UBOBBY"}));
    let history = slack.calls_to("conversations.history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].args["channel"], "DBOBBY");
    assert_eq!(history[0].args["include_all_metadata"], "true");
    bridge.stop().await;
}

#[tokio::test]
async fn an_answer_slower_than_the_call_timeout_is_not_posted_twice() {
    let (slack, bridge) = bridge_with_bobby(|c| {
        c.tuning.slack_call_timeout = Duration::from_millis(500);
    })
    .await;
    slack.lose_answer("chat.postMessage", Lost::Late(Duration::from_secs(3)));
    let body = workspace_deleted("bobby@coder.com");
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_one_message_in_the_dm(&slack, &body, &answer);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn coders_retry_after_a_lost_answer_reads_the_dm_back_before_posting() {
    let (slack, bridge) = bridge_with_bobby(|c| {
        c.delivery_timeout = Duration::from_secs(1);
        // Coder's retry is what reads back here; the outbox's sender does the same (outbox.rs).
        c.queue = None;
    })
    .await;
    // The answer is lost and the DM cannot be read back within this webhook's budget.
    slack.lose_answer("chat.postMessage", Lost::Status(502));
    slack.always("conversations.history", Some(Canned::status(500)));
    let body = workspace_deleted("bobby@coder.com");
    let (status, retry_after, answer) = bridge.post(&body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(retry_after.is_some());
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        1,
        "never posted blind"
    );

    // Coder's retry, once Slack answers again: the message is found, not posted again.
    slack.always("conversations.history", None);
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_one_message_in_the_dm(&slack, &body, &answer);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    let (_, _, again) = bridge.post(&body).await;
    assert_eq!(again, json!({"status": "duplicate"}));
    bridge.stop().await;
}

#[tokio::test]
async fn without_the_read_back_scopes_a_lost_answer_is_posted_again() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    slack.always("conversations.open", Some(Canned::error("missing_scope")));
    slack.lose_answer("chat.postMessage", Lost::Status(504));
    let body = workspace_deleted("bobby@coder.com");
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!((status, &answer["status"]), (200, &json!("delivered")));
    // As before read-back existed: the person sees it twice, and the log says why (once).
    assert_eq!(slack.messages_in("DBOBBY").len(), 2);
    assert!(slack.calls_to("conversations.history").is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn a_message_slack_refuses_as_built_goes_to_the_person_as_plain_text() {
    for code in [
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
    ] {
        let slack = FakeSlack::start().await;
        slack.add_user("bobby@coder.com", "UBOBBY");
        let mut s = settings(&slack);
        s.fallback_channel = Some("C0FALLBACK".into());
        let bridge = Bridge::start(config(s)).await;
        slack.push("chat.postMessage", Canned::error(code));
        let body = workspace_deleted("bobby@coder.com");
        let (status, _, answer) = bridge.post(&body).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("delivered")),
            "{code}: {answer}"
        );
        let posts = slack.calls_to("chat.postMessage");
        assert_eq!(posts.len(), 2, "{code}");
        assert!(posts[0].args.get("blocks").is_some());
        let retry = &posts[1].args;
        assert_eq!(
            retry["channel"], "UBOBBY",
            "{code}: the same person, not the fallback"
        );
        assert!(retry.get("blocks").is_none(), "{code}: {retry}");
        let text = retry["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("*{}*", body["title"].as_str().unwrap_or_default())),
            "{code}: {text}"
        );
        assert!(
            text.contains("<http://test.com/workspaces|View workspaces>"),
            "{text}"
        );
        assert_eq!(retry["metadata"]["event_payload"]["msg_id"], body["msg_id"]);
        bridge
            .assert_metrics(&["coder_slack_bridge_plain_text_fallbacks_total 1"])
            .await;
        bridge.stop().await;
    }
}

#[tokio::test]
async fn with_store_and_forward_off_a_hanging_slack_is_answered_within_the_delivery_timeout() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut s = settings(&slack);
    s.delivery_timeout = "2s".into();
    s.queue_max_age = "0".into();
    s.fallback_channel = Some("C0FALLBACK".into());
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(1).await;
    // Every post hangs far past the call timeout (10 s) and the budget.
    slack.delay("chat.postMessage", Duration::from_secs(60));

    for email in ["bobby@coder.com", "nobody@coder.com"] {
        let started = Instant::now();
        let (status, retry_after, answer) = bridge.post(&workspace_deleted(email)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{email}: {answer}");
        assert!(retry_after.is_some());
        // DELIVERY_TIMEOUT + 1 s at worst, the fallback post included.
        assert!(
            took < Duration::from_secs(3),
            "{email}: answered after {took:?}"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn retry_after_from_slack_is_clamped() {
    let (slack, bridge) = bridge_with_bobby(|c| {
        c.delivery_timeout = Duration::from_secs(5);
        // What Coder is told to wait: with store and forward on, it is told nothing.
        c.queue = None;
    })
    .await;
    // 0 would be a tight loop: it waits 1 s, then posts.
    slack.push("chat.postMessage", Canned::rate_limited(0));
    let started = Instant::now();
    let (status, _, answer) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!((status, &answer["status"]), (200, &json!("delivered")));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(slack.calls_to("chat.postMessage").len(), 2);

    // A huge one is no panic: Coder is told to come back within the hour.
    slack.push("chat.postMessage", Canned::rate_limited(u64::MAX));
    let (status, retry_after, answer) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    let (status, _, _) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!(status, 200, "the bridge lives on");
    bridge.stop().await;
}
