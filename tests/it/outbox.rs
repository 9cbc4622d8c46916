//! Store and forward: what Slack cannot take (an outage answering 503, hanging, or refusing
//! connections; a revoked token; a rate limit past the budget) is answered `queued`, waits
//! in the outbox, and reaches its person once Slack answers, exactly once and in order per
//! person; past QUEUE_MAX_AGE it goes to the fallback channel or is dropped; a full outbox
//! answers 503 again.

use crate::support;

use coder_slack_bridge::config::{Config, QueueLimits};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::relay::Relay;
use support::*;

const PEOPLE: [(&str, &str); 3] = [
    ("ann@coder.com", "UANN"),
    ("bob@coder.com", "UBOB"),
    ("cat@coder.com", "UCAT"),
];

/// The app's DM with the Slack user `user` in the fake.
fn dm(user: &str) -> String {
    format!("D{}", &user[1..])
}

/// A fake Slack with three people, reached through a relay that can refuse connections,
/// and a bridge (store and forward on, as by default) that knows them.
async fn three_people(adjust: impl FnOnce(&mut Config)) -> (FakeSlack, Relay, Bridge) {
    let slack = FakeSlack::start().await;
    for (email, user) in PEOPLE {
        slack.add_user(email, user);
    }
    let relay = Relay::start(slack.addr.port()).await;
    let mut s = settings(&slack);
    s.slack_api_url = format!("http://127.0.0.1:{}/api", relay.port);
    s.delivery_timeout = "2s".into();
    let mut c = config(s);
    adjust(&mut c);
    let bridge = Bridge::start(c).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(PEOPLE.len() as u64).await;
    (slack, relay, bridge)
}

/// Posts `body` and asserts it was answered `queued`, within the budget (2 s; the bridges
/// here are given that) and a margin for a busy machine.
async fn assert_queued(bridge: &Bridge, body: &Value) {
    let started = Instant::now();
    let (status, retry_after, answer) = bridge.post(body).await;
    assert_eq!(
        (status, retry_after, answer),
        (200, None, json!({"status": "queued"}))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The msg_ids of what `user`'s DM shows at the top level, oldest first.
fn msg_ids_in_dm(slack: &FakeSlack, user: &str) -> Vec<Value> {
    slack
        .top_level(&dm(user))
        .iter()
        .map(|m| m["metadata"]["event_payload"]["msg_id"].clone())
        .collect()
}

/// The `outbox` part of /readyz's answer, which must be 200.
async fn outbox_report(bridge: &Bridge) -> Value {
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["outbox"].clone()
}

#[tokio::test]
async fn an_outage_of_each_kind_is_waited_out_and_each_person_gets_theirs_once_in_order() {
    let (slack, relay, bridge) = three_people(|_| {}).await;
    let mut sent: Vec<Vec<Value>> = vec![Vec::new(); PEOPLE.len()];
    let send_round = async |sent: &mut Vec<Vec<Value>>| {
        for (i, (email, _)) in PEOPLE.iter().enumerate() {
            let body = workspace_deleted(email);
            assert_queued(&bridge, &body).await;
            sent[i].push(body["msg_id"].clone());
        }
    };
    // An edge answering 503, then a Slack that never answers, then one refusing connections.
    slack.outage(Some(Outage::Status(503)));
    send_round(&mut sent).await;
    send_round(&mut sent).await;
    slack.outage(Some(Outage::Hang));
    send_round(&mut sent).await;
    slack.outage(None);
    relay.refuse();
    send_round(&mut sent).await;
    assert_eq!(slack.calls_to("chat.postMessage").len(), 0);
    // Still ready: taking the bridge out of service would make Coder give up.
    wait_until("/readyz reports all 12 waiting", WAIT, async || {
        outbox_report(&bridge).await["depth"] == 12
    })
    .await;
    let report = outbox_report(&bridge).await;
    assert!(report["slack_unavailable"].is_string(), "{report}");

    relay.admit();
    wait_until("every notification reached its person", WAIT, async || {
        PEOPLE
            .iter()
            .all(|(_, user)| msg_ids_in_dm(&slack, user).len() == 4)
    })
    .await;
    for (i, (_, user)) in PEOPLE.iter().enumerate() {
        assert_eq!(
            msg_ids_in_dm(&slack, user),
            sent[i],
            "{user}'s, once each, in order"
        );
    }
    let first = &slack.top_level(&dm("UANN"))[0];
    let note = first["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.starts_with("Sent by Coder at ") && note.contains("waited in the bridge's outbox"),
        "{first}"
    );
    wait_until("the outbox is empty", WAIT, async || {
        outbox_report(&bridge).await == json!({"depth": 0, "oldest_seconds": 0})
    })
    .await;
    bridge
        .assert_metrics(&[
            "coder_slack_bridge_webhooks_total{outcome=\"queued\"} 12",
            "coder_slack_bridge_outbox_queued_total 12",
            "coder_slack_bridge_outbox_sent_total 12",
            "coder_slack_bridge_outbox_depth 0",
            "coder_slack_bridge_slack_unavailable 0",
        ])
        .await;
    // Replays of Coder's are duplicates, queued or delivered.
    let replay = json!({"msg_id": sent[1][0], "payload": {"user_email": "bob@coder.com"}});
    let replay = merge(workspace_deleted("bob@coder.com"), replay);
    let (_, _, answer) = bridge.post(&replay).await;
    assert_eq!(answer, json!({"status": "duplicate"}));
    bridge.stop().await;
}

/// `base` with `over`'s fields (objects merged one level down).
fn merge(mut base: Value, over: Value) -> Value {
    for (key, value) in over.as_object().cloned().unwrap_or_default() {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(inner)), Value::Object(more)) => inner.extend(more),
            (_, value) => base[key] = value,
        }
    }
    base
}

#[tokio::test]
async fn a_person_with_notifications_waiting_gets_new_ones_behind_them_while_others_go_at_once() {
    let (slack, _relay, bridge) = three_people(|c| {
        // The sender's retries 3 s apart: time for the notifications below in between.
        c.tuning.outbox.retry_base = Duration::from_secs(3);
        c.tuning.outbox.retry_cap = Duration::from_secs(3);
    })
    .await;
    // Ann's post is rate-limited past the budget, directly and on the sender's first try.
    slack.push("chat.postMessage", Canned::rate_limited(40));
    slack.push("chat.postMessage", Canned::rate_limited(40));
    let first = workspace_deleted("ann@coder.com");
    assert_queued(&bridge, &first).await;
    slack
        .wait_for("the sender's try", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .count()
                == 2
        })
        .await;
    // Slack answers again, but Ann's next waits behind her first; Bob's goes at once.
    let second = workspace_deleted("ann@coder.com");
    assert_queued(&bridge, &second).await;
    let (_, _, answer) = bridge.post(&workspace_deleted("bob@coder.com")).await;
    assert_eq!(answer["status"], "delivered", "{answer}");
    assert!(msg_ids_in_dm(&slack, "UANN").is_empty());
    wait_until("Ann's two arrive", WAIT, async || {
        msg_ids_in_dm(&slack, "UANN").len() == 2
    })
    .await;
    assert_eq!(
        msg_ids_in_dm(&slack, "UANN"),
        vec![first["msg_id"].clone(), second["msg_id"].clone()]
    );
    bridge.stop().await;
}

/// Store and forward with `max_age` and `max_depth`, the sender's pace left as tests have it.
fn limits(max_age: Duration, max_depth: u64) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| c.queue = Some(QueueLimits { max_age, max_depth })
}

#[tokio::test]
async fn past_queue_max_age_a_notification_goes_to_the_fallback_channel_saying_it_is_late() {
    let (slack, _relay, bridge) = three_people(|c| {
        limits(Duration::from_secs(1), 100)(c);
        c.fallback_channel = Some("C0FALLBACK".into());
    })
    .await;
    slack.join_channel("C0FALLBACK");
    slack.outage(Some(Outage::Status(503)));
    let late = workspace_deleted("ann@coder.com");
    assert_queued(&bridge, &late).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slack.outage(None);
    let posted = wait_for_value("the fallback post", WAIT, async || {
        slack.top_level("C0FALLBACK").first().cloned()
    })
    .await;
    assert_eq!(
        posted["metadata"]["event_payload"]["msg_id"],
        late["msg_id"]
    );
    let text = posted.to_string();
    assert!(
        text.contains("Intended for ann@coder.com. Coder sent it at "),
        "{text}"
    );
    assert!(
        text.contains("but Slack could not take it within QUEUE_MAX_AGE (1s)"),
        "{text}"
    );
    assert!(msg_ids_in_dm(&slack, "UANN").is_empty(), "not to Ann, late");
    wait_until("the outbox is empty", WAIT, async || {
        outbox_report(&bridge).await["depth"] == 0
    })
    .await;
    bridge
        .assert_metrics(&["coder_slack_bridge_outbox_expired_total{to=\"fallback\"} 1"])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn past_queue_max_age_without_a_fallback_channel_a_notification_is_dropped_and_counted() {
    let (slack, _relay, bridge) = three_people(limits(Duration::from_secs(1), 100)).await;
    slack.outage(Some(Outage::Status(503)));
    assert_queued(&bridge, &workspace_deleted("ann@coder.com")).await;
    // Slack stays down until the sender has given the notification up: a try it began
    // before QUEUE_MAX_AGE could otherwise still be retrying when Slack comes back, and
    // deliver it (seen under load, 6 runs in 25, when this test slept 1.5 s instead).
    let dropped = r#"coder_slack_bridge_outbox_expired_total{to="dropped"} 1"#;
    bridge
        .wait_metrics("the notification dropped", &[dropped])
        .await;
    slack.outage(None);
    wait_until("the outbox is empty", WAIT, async || {
        outbox_report(&bridge).await["depth"] == 0
    })
    .await;
    assert_eq!(slack.calls_to("chat.postMessage").len(), 0);
    bridge
        .assert_metrics(&["coder_slack_bridge_outbox_expired_total{to=\"dropped\"} 1"])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_full_outbox_answers_503_so_coder_retries() {
    let (slack, _relay, bridge) = three_people(limits(Duration::from_secs(3600), 2)).await;
    slack.outage(Some(Outage::Status(503)));
    assert_queued(&bridge, &workspace_deleted("ann@coder.com")).await;
    assert_queued(&bridge, &workspace_deleted("bob@coder.com")).await;
    let third = workspace_deleted("cat@coder.com");
    let (status, retry_after, answer) = bridge.post(&third).await;
    assert_eq!(status, 503, "{answer}");
    assert!(retry_after.is_some());
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the outbox is full (2 notifications wait for Slack; QUEUE_MAX_DEPTH)"),
        "{error}"
    );
    // Coder's retry, once there is room again, is delivered.
    slack.outage(None);
    wait_until("the outbox drains", WAIT, async || {
        outbox_report(&bridge).await["depth"] == 0
    })
    .await;
    let (_, _, answer) = bridge.post(&third).await;
    assert_eq!(answer["status"], "delivered", "{answer}");
    bridge.stop().await;
}

#[tokio::test]
async fn with_store_and_forward_a_revoked_token_keeps_the_bridge_ready_and_its_notifications() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.revoke_token();
    let bridge = Bridge::start(config(settings(&slack))).await;
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "SLACK_BOT_TOKEN not verified yet (auth.test): notifications wait in the outbox"
        ),
        "{body}"
    );
    let body = workspace_deleted("bobby@coder.com");
    let (_, _, answer) = bridge.post(&body).await;
    assert_eq!(answer, json!({"status": "queued"}));
    wait_until("/readyz says why", WAIT, async || {
        let report = outbox_report(&bridge).await;
        report["slack_unavailable"]
            .as_str()
            .is_some_and(|why| why.contains("token_revoked"))
    })
    .await;
    bridge
        .wait_metrics(
            "Slack is reported unavailable",
            &["coder_slack_bridge_slack_unavailable 1"],
        )
        .await;
    // The administrator fixes the token: the notification arrives.
    slack.restore_token();
    wait_until("the notification arrives", WAIT, async || {
        msg_ids_in_dm(&slack, "UBOBBY") == vec![body["msg_id"].clone()]
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_card_made_from_the_outbox_shows_when_coder_sent_it_not_when_it_arrived() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut s = settings(&slack);
    s.delivery_timeout = "2s".into();
    let mut c = config(s);
    c.threads = coder_slack_bridge::config::Threads::Workspace;
    let bridge = Bridge::start(c).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(1).await;
    slack.outage(Some(Outage::Status(503)));
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let body = about("TemplateWorkspaceAutostopReminder.json.golden", "dev");
    assert_queued(&bridge, &body).await;
    // Slack comes back well after Coder sent it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    slack.outage(None);
    let card = wait_for_value("the card", WAIT, async || {
        slack.top_level("DBOBBY").first().cloned()
    })
    .await;
    let text = card.to_string();
    let shown = text
        .split("<!date^")
        .nth(1)
        .and_then(|rest| rest.split('^').next())
        .and_then(|secs| secs.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("a date on the card: {text}"));
    assert!(
        (sent_at..sent_at + 2).contains(&shown),
        "the card shows {shown}, Coder sent it at {sent_at}: {text}"
    );
    bridge.stop().await;
}
