//! Routes in delivery (`ROUTES_FILE`): role broadcasts to a team channel, the copies Coder
//! sends every admin collapsed into one post (one after another, all at once, across a
//! restart, across two replicas on PostgreSQL), `dm = true`, personal notifications and
//! secrets still to the person's own DM.

use crate::support;

use coder_slack_bridge::config::{Config, Threads};
use coder_slack_bridge::routes::Routes;
use coder_slack_bridge::state::Location;
use serde_json::{json, Value};
use std::sync::Arc;
use support::postgres::PgServer;
use support::*;

const ADMINS: usize = 5;
const CHANNEL: &str = "C0ADMINS01";
const CREATED: &str = "TemplateUserAccountCreated.json.golden";
const BUILD_FAILED: &str = "TemplateWorkspaceManualBuildFailed.json.golden";
const AUTOSTOP: &str = "TemplateWorkspaceAutostopReminder.json.golden";
const PASSCODE: &str = "TemplateUserRequestedOneTimePasscode.json.golden";

fn admin(i: usize) -> (String, String) {
    (format!("admin{i}@coder.com"), format!("UADMIN{i}"))
}

fn routes(text: &str) -> Arc<Routes> {
    let path = std::path::Path::new("routes.toml");
    Arc::new(Routes::parse(path, text).expect("a valid routes file"))
}

/// Admins' copies to a channel, collapsed, nothing to their DMs.
const TO_THE_CHANNEL: &str = r#"
[[route]]
notifications = ["@admin"]
channel = "C0ADMINS01"
"#;

/// A fake Slack with five admins and Bobby, the app in the admins' channel.
async fn team() -> FakeSlack {
    let slack = FakeSlack::start().await;
    for i in 0..ADMINS {
        let (email, user) = admin(i);
        slack.add_user(&email, &user);
    }
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.join_channel(CHANNEL);
    slack
}

fn routed_config(slack: &FakeSlack, text: &str) -> Config {
    let mut c = config(settings(slack));
    c.routes = Some(routes(text));
    c.threads = Threads::Workspace;
    c
}

async fn routed_bridge(slack: &FakeSlack, text: &str) -> Bridge {
    let bridge = Bridge::start(routed_config(slack, text)).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(ADMINS as u64 + 1).await;
    bridge
}

/// The copies of one event Coder sends each admin: the same body, each its own msg_id and
/// recipient.
fn copies(sample_name: &str, tweak: impl Fn(&mut Value)) -> Vec<Value> {
    (0..ADMINS)
        .map(|i| {
            let mut body = notification(sample(sample_name), &fresh_id(), &admin(i).0);
            tweak(&mut body);
            body
        })
        .collect()
}

/// Coder's answer to `body`, which must be 200.
async fn answer_of(bridge: &Bridge, body: &Value) -> Value {
    let (status, _, answer) = bridge.post(body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn admin_dms_are_empty(slack: &FakeSlack) {
    for i in 0..ADMINS {
        let dm = format!("DADMIN{i}");
        assert!(
            slack.messages_in(&dm).is_empty(),
            "{dm}: {:?}",
            slack.messages_in(&dm)
        );
    }
}

/// Asserts the first copy was posted to the channel and every other joined that post.
fn one_post_for_all(answers: &[Value]) -> Value {
    let posted: Vec<&Value> = answers
        .iter()
        .filter(|a| a["status"] == "delivered")
        .collect();
    assert_eq!(posted.len(), 1, "{answers:?}");
    let (channel, ts) = (&posted[0]["channel"], &posted[0]["ts"]);
    assert_eq!(channel, CHANNEL);
    for answer in answers.iter().filter(|a| a["status"] != "delivered") {
        assert_eq!(
            answer,
            &json!({"status": "collapsed", "channel": channel, "ts": ts})
        );
    }
    posted[0].clone()
}

#[tokio::test]
async fn five_admins_copies_become_one_channel_post_one_after_another_and_all_at_once() {
    let slack = team().await;
    let bridge = routed_bridge(&slack, TO_THE_CHANNEL).await;
    let mut answers = Vec::new();
    let one_after_another = copies(CREATED, |_| {});
    for body in &one_after_another {
        answers.push(answer_of(&bridge, body).await);
    }
    one_post_for_all(&answers);
    // All at once, as Coder sends up to 20 in parallel: another event, one more post.
    let all_at_once = copies(CREATED, |b| {
        b["payload"]["labels"]["created_account_name"] = "someone.else".into();
    });
    let answers = futures_util::future::join_all(all_at_once.iter().map(|b| bridge.post(b))).await;
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|(status, _, a)| {
            assert_eq!(status, 200, "{a}");
            a
        })
        .collect();
    one_post_for_all(&answers);
    assert_eq!(slack.top_level(CHANNEL).len(), 2);
    admin_dms_are_empty(&slack);
    // Coder's retries of any copy stay duplicates.
    for body in one_after_another.iter().chain(&all_at_once) {
        let (_, _, answer) = bridge.post(body).await;
        assert_eq!(answer, json!({"status": "duplicate"}));
    }
    assert_eq!(slack.calls_to("chat.postMessage").len(), 2);
    let post = &slack.top_level(CHANNEL)[0];
    assert!(
        !post.to_string().contains("\"snooze\""),
        "no snooze in a channel: {post}"
    );
    bridge
        .assert_metrics(&[
            "coder_slack_bridge_webhooks_total{outcome=\"collapsed\"} 8",
            "coder_slack_bridge_routed_total{route=\"1\"} 10",
            "coder_slack_bridge_route_posts_total{route=\"1\"} 2",
            "coder_slack_bridge_collapsed_total{route=\"1\"} 8",
        ])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn admins_events_go_to_the_channel_once_each_and_personal_notifications_stay_in_the_dm() {
    let slack = team().await;
    let bridge = routed_bridge(&slack, TO_THE_CHANNEL).await;
    // Five admins × (an account created, someone's manual build failed): two events.
    let events = [copies(CREATED, |_| {}), copies(BUILD_FAILED, |_| {})];
    for event in &events {
        let answers =
            futures_util::future::join_all(event.iter().map(|b| answer_of(&bridge, b))).await;
        one_post_for_all(&answers);
    }
    assert_eq!(slack.top_level(CHANNEL).len(), 2);
    admin_dms_are_empty(&slack);
    // Bobby's own notifications are his: the reminder in his workspace's thread, the
    // passcode (a secret, which no route takes) in his DM.
    let reminder = answer_of(&bridge, &about(AUTOSTOP, "dev")).await;
    assert_eq!(reminder["channel"], "DBOBBY", "{reminder}");
    let passcode = notification(sample(PASSCODE), &fresh_id(), "bobby@coder.com");
    let all = format!(
        "{TO_THE_CHANNEL}\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"{CHANNEL}\"\n"
    );
    bridge.stop().await;
    let bridge = routed_bridge(&slack, &all).await;
    let answer = answer_of(&bridge, &passcode).await;
    assert_eq!(answer["channel"], "DBOBBY", "{answer}");
    assert_eq!(
        slack.top_level(CHANNEL).len(),
        2,
        "nothing more in the channel"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn with_dm_true_the_channel_gets_one_post_and_every_admin_their_own() {
    let slack = team().await;
    let text = format!("{TO_THE_CHANNEL}dm = true\n");
    let bridge = routed_bridge(&slack, &text).await;
    let answers = futures_util::future::join_all(
        copies(CREATED, |_| {})
            .iter()
            .map(|b| answer_of(&bridge, b)),
    )
    .await;
    one_post_for_all(&answers);
    assert_eq!(slack.top_level(CHANNEL).len(), 1);
    for i in 0..ADMINS {
        assert_eq!(
            slack.top_level(&format!("DADMIN{i}")).len(),
            1,
            "admin {i}'s DM"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn copies_after_a_restart_join_the_post_made_before_it() {
    let slack = team().await;
    let dir = fresh_dir("routed-restart");
    let on_file = |slack: &FakeSlack| {
        let mut c = routed_config(slack, TO_THE_CHANNEL);
        c.database = Location::Sqlite(dir.join("state.db"));
        c
    };
    let event = copies(CREATED, |_| {});
    let bridge = Bridge::start(on_file(&slack)).await;
    bridge.wait_ready(200).await;
    let first = answer_of(&bridge, &event[0]).await;
    assert_eq!(first["status"], "delivered", "{first}");
    bridge.stop().await;
    let bridge = Bridge::start(on_file(&slack)).await;
    bridge.wait_ready(200).await;
    for body in &event[1..] {
        let answer = answer_of(&bridge, body).await;
        assert_eq!(
            answer,
            json!({"status": "collapsed", "channel": CHANNEL, "ts": first["ts"]})
        );
    }
    assert_eq!(slack.top_level(CHANNEL).len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn copies_spread_over_two_replicas_on_postgresql_become_one_post() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("routed").await;
    let slack = team().await;
    let replica = || {
        let mut c = routed_config(&slack, TO_THE_CHANNEL);
        c.database = Location::parse(&url).expect("a database URL");
        Bridge::start(c)
    };
    let (a, b) = (replica().await, replica().await);
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    for round in 0..3 {
        let event = copies(CREATED, |body| {
            body["payload"]["labels"]["created_account_name"] = format!("user{round}").into();
        });
        let sends = event.iter().enumerate().map(|(i, body)| {
            let replica = if i % 2 == 0 { &a } else { &b };
            answer_of(replica, body)
        });
        let answers = futures_util::future::join_all(sends).await;
        one_post_for_all(&answers);
    }
    assert_eq!(slack.top_level(CHANNEL).len(), 3);
    admin_dms_are_empty(&slack);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_channel_that_refuses_the_post_gives_the_notification_to_the_persons_dm() {
    let slack = team().await;
    let bridge = routed_bridge(&slack, TO_THE_CHANNEL).await;
    // The app was removed from the channel since start-up.
    slack.push("chat.postMessage", Canned::error("not_in_channel"));
    let body = notification(sample(CREATED), &fresh_id(), &admin(0).0);
    let answer = answer_of(&bridge, &body).await;
    assert_eq!(answer["channel"], "DADMIN0", "{answer}");
    assert_eq!(slack.top_level("DADMIN0").len(), 1);
    bridge.stop().await;
}
