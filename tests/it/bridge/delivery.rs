//! Delivery under Coder's retry contract and Slack's rate limits.

use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn the_same_msg_id_twice_posts_once() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    let body = workspace_deleted("bobby@coder.com");
    let (status, _, first) = bridge.post(&body).await;
    assert_eq!((status, &first["status"]), (200, &json!("delivered")));
    let (status, _, second) = bridge.post(&body).await;
    assert_eq!((status, second), (200, json!({"status": "duplicate"})));
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn five_concurrent_copies_post_once_and_wait_for_the_first() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    // A slow Slack keeps the first delivery in flight while the copies arrive.
    slack.delay("chat.postMessage", Duration::from_millis(300));
    let body = workspace_deleted("bobby@coder.com");
    let answers = futures_util::future::join_all((0..5).map(|_| bridge.post(&body))).await;
    let statuses: Vec<_> = answers
        .iter()
        .map(|(s, _, a)| (*s, a["status"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|(s, st)| *s == 200 && st == "delivered")
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|(s, st)| *s == 200 && st == "duplicate")
            .count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn a_429_is_waited_out_and_delivered_once() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    slack.push("chat.postMessage", Canned::rate_limited(1));
    bridge.deliver(&workspace_deleted("bobby@coder.com")).await;
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(
        posts.len(),
        2,
        "the rate-limited attempt and the one after Retry-After"
    );
    assert_eq!(
        posts[0].args, posts[1].args,
        "the same message is sent again"
    );
    bridge
        .assert_metrics(&[
            "coder_slack_bridge_slack_rate_limited_total{method=\"chat.postMessage\"} 1",
        ])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn with_store_and_forward_off_a_failing_slack_gets_503_within_the_budget_and_the_retry_posts_once(
) {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut s = settings(&slack);
    s.delivery_timeout = "1s".into();
    s.queue_max_age = "0".into();
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_ready(200).await;
    // Bobby known already, so the whole budget goes to chat.postMessage.
    bridge.wait_for_directory(1).await;

    slack.always("chat.postMessage", Some(Canned::status(500)));
    let body = workspace_deleted("bobby@coder.com");
    let (status, retry_after, answer) = bridge.post(&body).await;
    assert_eq!(status, 503, "{answer}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!(retry_after >= 1);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("chat.postMessage"),
        "{answer}"
    );
    let failed_attempts = slack.calls_to("chat.postMessage").len();
    assert!(
        failed_attempts >= 2,
        "5xx is retried inside the budget ({failed_attempts})"
    );

    // Slack recovers; Coder's retry (same msg_id) posts exactly once.
    slack.always("chat.postMessage", None);
    bridge.deliver(&body).await;
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!((status, answer), (200, json!({"status": "duplicate"})));
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        failed_attempts + 1
    );
    bridge.stop().await;
}

#[tokio::test]
async fn with_store_and_forward_off_a_revoked_token_gets_503_and_nothing_is_posted() {
    let (slack, bridge) = bridge_with_bobby(|c| c.queue = None).await;
    slack.revoke_token();
    let (status, retry_after, answer) = bridge
        .post(&workspace_deleted("someone.new@coder.com"))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert!(retry_after.is_some());
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("token_revoked"),
        "{answer}"
    );
    let (status, _, answer) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        slack
            .calls_to("chat.postMessage")
            .iter()
            .filter(|c| c.args["channel"] == "UBOBBY")
            .count(),
        1,
        "one attempt, refused"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn an_unknown_user_is_undeliverable_with_one_fallback_post() {
    let slack = FakeSlack::start().await;
    let mut s = settings(&slack);
    s.fallback_channel = Some("C0FALLBACK".into());
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_ready(200).await;

    let body = workspace_deleted("stranger@coder.com");
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "undeliverable");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("users_not_found"),
        "{answer}"
    );
    assert_eq!(answer["fallback_channel"], "C0FALLBACK");

    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].args["channel"], "C0FALLBACK");
    let blocks = posts[0].args["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[1]["type"], "context");
    let note = blocks[1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("Intended for stranger@coder.com"), "{note}");

    // Coder's retry of the same msg_id: nothing more; a new notification to the same
    // unknown address costs no lookup (negative cache), only its fallback post.
    let (_, _, again) = bridge.post(&body).await;
    assert_eq!(again, json!({"status": "duplicate"}));
    let lookups = slack.calls_to("users.lookupByEmail").len();
    let (_, _, other) = bridge.post(&workspace_deleted("Stranger@Coder.com")).await;
    assert_eq!(other["status"], "undeliverable");
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), lookups);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 2);
    bridge.stop().await;
}

#[tokio::test]
async fn a_fallback_channel_post_carries_only_controls_anyone_in_it_can_use() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    slack.set_socket_url(&socket.url());
    let mut s = settings(&slack);
    s.fallback_channel = Some("C0FALLBACK".into());
    s.slack_app_token = Some(APP_TOKEN.into());
    s.socket_mode_connections = "1".into();
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_for_socket_mode(1).await;
    bridge.wait_for_directory(1).await;
    // Workspace Deleted by its real template ID, so it can be turned off in Coder.
    let deleted = |email: &str| {
        let mut body = workspace_deleted(email);
        body["payload"]["notification_template_id"] = "f517da0b-cdc9-410f-ab89-a86107c420ed".into();
        body
    };
    let has_snooze = |post: &Value| post.to_string().contains(r#""action_id":"snooze""#);
    let turn_off =
        "http://test.com/settings/notifications?disabled=f517da0b-cdc9-410f-ab89-a86107c420ed";

    // In Bobby's DM: the snooze control and the link that turns the kind off, both his.
    bridge.deliver(&deleted("bobby@coder.com")).await;
    let dm = slack.calls_to("chat.postMessage")[0].args.clone();
    assert!(
        has_snooze(&dm) && dm.to_string().contains(turn_off),
        "{dm:#}"
    );

    // For an address not in Slack, in the channel: neither, but Coder's own link button.
    let (_, _, answer) = bridge.post(&deleted("stranger@coder.com")).await;
    assert_eq!(answer["fallback_channel"], "C0FALLBACK", "{answer}");
    let post = slack.calls_to("chat.postMessage")[1].args.clone();
    assert_eq!(post["channel"], "C0FALLBACK");
    assert!(!has_snooze(&post), "{post:#}");
    assert!(
        !post
            .to_string()
            .contains("/settings/notifications?disabled="),
        "{post:#}"
    );
    let elements = |post: &Value| -> Vec<Value> {
        post["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .filter_map(|b| b["elements"].as_array())
            .flatten()
            .filter(|e| e.get("action_id").is_some())
            .cloned()
            .collect()
    };
    let coders: Vec<Value> = elements(&dm)
        .into_iter()
        .filter(|e| {
            e["action_id"]
                .as_str()
                .is_some_and(|a| a.starts_with("coder_action_"))
        })
        .collect();
    assert_eq!(coders.len(), 2, "{dm:#}");
    assert_eq!(elements(&post), coders, "{post:#}");
    bridge.stop().await;
}

#[tokio::test]
async fn without_a_fallback_channel_an_unknown_user_is_just_undeliverable() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    let (status, _, answer) = bridge.post(&workspace_deleted("stranger@coder.com")).await;
    assert_eq!((status, &answer["status"]), (200, &json!("undeliverable")));
    assert!(answer.get("fallback_channel").is_none());
    assert!(slack.calls_to("chat.postMessage").is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn forty_notifications_to_eight_users_cost_one_call_each() {
    let slack = FakeSlack::start().await;
    for i in 0..8 {
        slack.add_user(&format!("user{i}@coder.com"), &format!("U{i:03}"));
    }
    let bridge = Bridge::start(config(settings(&slack))).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(8).await;

    let bodies: Vec<_> = (0..40)
        .map(|i| workspace_deleted(&format!("USER{}@coder.com", i % 8)))
        .collect();
    bridge.deliver_all(&bodies).await;
    let calls = slack.calls();
    let posts = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .count();
    assert_eq!(posts, 40);
    assert!(
        calls.len() <= 40 + 3,
        "40 posts + auth.test + users.list, got {:?}",
        calls.iter().map(|c| &c.method).collect::<Vec<_>>()
    );
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), 0);
    bridge.stop().await;
}

#[tokio::test]
async fn a_directory_warmed_from_thousands_of_users_needs_no_lookups() {
    let slack = FakeSlack::start().await;
    for i in 0..3500 {
        slack.add_user(&format!("person{i}@corp.example"), &format!("U{i:06}"));
    }
    let bridge = Bridge::start(config(settings(&slack))).await;
    bridge.wait_for_directory(3500).await;
    let pages = slack.calls_to("users.list");
    assert_eq!(pages.len(), 4, "1000 a page");
    assert!(pages.iter().all(|p| p.args["limit"] == "1000"));
    assert_eq!(pages[1].args["cursor"], "page-1000");

    let bodies: Vec<_> = (0..200)
        .map(|i| workspace_deleted(&format!("person{}@corp.example", i * 17)))
        .collect();
    bridge.deliver_all(&bodies).await;
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), 0);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 200);
    // Deleted users and bots from the sweep are not in the directory.
    let (_, _, gone) = bridge.post(&workspace_deleted("gone@example.com")).await;
    assert_eq!(gone["status"], "undeliverable");
    bridge.stop().await;
}

#[tokio::test]
async fn a_user_missing_from_the_sweep_is_looked_up_once() {
    let slack = FakeSlack::start().await;
    let bridge = Bridge::start(config(settings(&slack))).await;
    bridge.wait_ready(200).await;
    slack
        .wait_for("the directory sweep", |calls| {
            calls.iter().any(|c| c.method == "users.list")
        })
        .await;
    slack.add_user("late.joiner@coder.com", "ULATE");
    for _ in 0..3 {
        let (_, _, answer) = bridge
            .post(&workspace_deleted("late.joiner@coder.com"))
            .await;
        assert_eq!(answer["status"], "delivered", "{answer}");
    }
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), 1);
    assert_eq!(slack.calls_to("chat.postMessage").len(), 3);
    bridge.stop().await;
}

#[tokio::test]
async fn a_learned_address_expires_so_a_reassigned_one_reaches_its_new_owner() {
    use coder_slack_bridge::slack::directory::Directory;
    use coder_slack_bridge::telemetry::Metrics;
    let slack = FakeSlack::start().await;
    slack.add_user("ops@coder.com", "UPREVIOUS");
    let api = slack.bot_api();
    // No sweep runs here (as when every users.list fails): only the entry's lifetime can
    // bring the new owner in.
    let directory = Directory::new(
        std::sync::Arc::new(api),
        Duration::from_secs(300),
        Duration::from_millis(300),
        Metrics::new(),
    );
    let resolve = || async {
        directory
            .resolve("ops@coder.com")
            .await
            .expect("lookup")
            .map(|id| id.0)
    };
    assert_eq!(resolve().await.as_deref(), Some("UPREVIOUS"));
    slack.add_user("ops@coder.com", "UNEWOWNER");
    wait_until("the new owner resolves", WAIT, async || {
        resolve().await.as_deref() == Some("UNEWOWNER")
    })
    .await;
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), 2);
}

#[tokio::test]
async fn a_passcode_for_someone_not_in_slack_leaves_only_a_note_in_the_fallback_channel() {
    let slack = FakeSlack::start().await;
    let mut s = settings(&slack);
    s.fallback_channel = Some("C0FALLBACK".into());
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_ready(200).await;

    const CODE: &str = "7f3e9c1a-5b2d-4e8f-9a6c-0d1b2c3d4e5f";
    let reset =
        format!("http://test.com/reset-password/change?otp={CODE}&email=stranger%40coder.com");
    let mut body = notification(
        sample("TemplateUserRequestedOneTimePasscode.json.golden"),
        &fresh_id(),
        "stranger@coder.com",
    );
    body["payload"]["labels"]["one_time_passcode"] = CODE.into();
    body["payload"]["actions"][0]["url"] = reset.clone().into();
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!((status, &answer["status"]), (200, &json!("undeliverable")));
    assert_eq!(answer["fallback_channel"], "C0FALLBACK", "{answer}");

    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].args["channel"], "C0FALLBACK");
    assert_eq!(
        posts[0].args["text"],
        "A one-time passcode for stranger@coder.com could not be delivered in Slack \
         (users_not_found). It is not shown here: the code and its link let whoever has them \
         reset the password."
    );
    assert!(posts[0].args.get("blocks").is_none(), "{}", posts[0].args);
    for call in slack.calls() {
        let sent = call.args.to_string();
        assert!(
            !sent.contains(CODE) && !sent.contains("reset-password"),
            "{} carried the passcode: {sent}",
            call.method
        );
    }
    bridge.stop().await;
}
