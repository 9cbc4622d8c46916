//! Store and forward, end to end, at the pace the issue asks for: a Slack outage of 45 s,
//! Coder's webhook sender scaled down (3 attempts 3 s apart: it gives up after about 6 s,
//! where the real one waits 20 minutes), 100 notifications for 20 people, and the bridge
//! killed (SIGKILL) in the middle of the outage and started again on its file. None may be
//! lost, none posted twice, each person's in the order Coder's sender sent them; all within
//! 90 s of Slack's return. The same with two replicas on PostgreSQL, one killed mid-drain.

use crate::support;

use coder_slack_bridge::state::Location;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::postgres::PgServer;
use support::*;
use tokio::time::Instant;

const OUTAGE: Duration = Duration::from_secs(45);
const PEOPLE: usize = 20;
const EACH: usize = 5;
/// Coder's sender, scaled down: attempts, the wait between them, and when one is abandoned.
const ATTEMPTS: usize = 3;
const GAP: Duration = Duration::from_secs(3);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// All must have reached their person this soon after Slack's return.
const AFTER_RETURN: Duration = Duration::from_secs(90);

fn person(i: usize) -> (String, String) {
    (format!("person{i}@coder.com"), format!("UPERSON{i}"))
}

/// Coder's webhook sender: up to [`ATTEMPTS`] tries [`GAP`] apart, each abandoned after
/// [`ATTEMPT_TIMEOUT`]; whether one was answered 2xx. `url` is asked each time (a replica
/// may be gone).
async fn coder_sends(client: &reqwest::Client, url: impl Fn() -> String, body: &Value) -> bool {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(GAP).await;
        }
        let sent = client
            .post(url())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        if let Ok(Ok(answer)) = tokio::time::timeout(ATTEMPT_TIMEOUT, sent).await {
            if answer.status().is_success() {
                return true;
            }
        }
    }
    false
}

/// Each person's notifications, in the order Coder's sender sends them.
fn notifications() -> Vec<Vec<Value>> {
    (0..PEOPLE)
        .map(|i| (0..EACH).map(|_| workspace_deleted(&person(i).0)).collect())
        .collect()
}

/// Sends every person's notifications, the people at once and each one's in turn (so their
/// order is defined); `sent` counts those answered. Panics if Coder gave up on any.
async fn send_all(
    client: &reqwest::Client,
    url: impl Fn(usize) -> String + Clone + Send + 'static,
    lanes: &[Vec<Value>],
    sent: Arc<AtomicUsize>,
) {
    let tasks: Vec<_> = lanes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, lane)| {
            let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
            tokio::spawn(async move {
                for (n, body) in lane.iter().enumerate() {
                    let url = url.clone();
                    let taken = coder_sends(&client, move || url(i * EACH + n), body).await;
                    assert!(taken, "Coder gave up on person {i}'s notification {n}");
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sender lane");
    }
}

/// Waits until every person's DM holds their notifications, then asserts each arrived once
/// and in the order sent.
async fn assert_each_once_in_order(slack: &FakeSlack, lanes: &[Vec<Value>], returned: Instant) {
    let posted = |user: &str| -> Vec<Value> {
        let dm = format!("D{}", &user[1..]);
        slack
            .top_level(&dm)
            .iter()
            .map(|m| m["metadata"]["event_payload"]["msg_id"].clone())
            .collect()
    };
    wait_until(
        "every notification reached its person",
        AFTER_RETURN,
        async || (0..PEOPLE).all(|i| posted(&person(i).1).len() >= EACH),
    )
    .await;
    println!(
        "all delivered {:?} after Slack's return",
        returned.elapsed()
    );
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for (i, lane) in lanes.iter().enumerate() {
        let expected: Vec<Value> = lane.iter().map(|b| b["msg_id"].clone()).collect();
        assert_eq!(
            posted(&person(i).1),
            expected,
            "person {i}'s, once each, in order"
        );
        for id in expected {
            *copies.entry(id.to_string()).or_default() += 1;
        }
    }
    assert_eq!(copies.len(), PEOPLE * EACH);
}

async fn fake_slack_with_people() -> FakeSlack {
    let slack = FakeSlack::start().await;
    for i in 0..PEOPLE {
        let (email, user) = person(i);
        slack.add_user(&email, &user);
    }
    slack
}

/// A loopback port free a moment ago: both lives of the bridge listen on it, as a Service
/// address would stay the same.
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_45s_outage_with_a_sigkill_in_it_loses_nothing_and_posts_nothing_twice() {
    let slack = fake_slack_with_people().await;
    let dir = fresh_dir("outage");
    let port = free_port();
    let bridge = || {
        let mut command = bridge_binary(&dir);
        command
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_API_URL", slack.api_url())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", "sqlite://state.db")
            .env("THREADS", "off");
        command
    };
    let (mut first, _, _log) = spawn_bridge(bridge()).await;
    let client = http_client();
    let lanes = notifications();
    let sent = Arc::new(AtomicUsize::new(0));

    let outage_began = Instant::now();
    slack.outage(Some(Outage::Status(503)));
    let url = move |_| format!("http://127.0.0.1:{port}/v1/webhook");
    let sending = tokio::spawn({
        let (client, lanes, sent) = (client.clone(), lanes.clone(), sent.clone());
        async move { send_all(&client, url, &lanes, sent).await }
    });
    // Mid-outage, with half answered: SIGKILL, and a new life on the same file and port.
    wait_until("half are answered", Duration::from_secs(30), async || {
        sent.load(Ordering::SeqCst) >= PEOPLE * EACH / 2
    })
    .await;
    first.start_kill().expect("SIGKILL");
    let _ = tokio::time::timeout(DEADLINE, first.wait())
        .await
        .expect("killed");
    let (_second, _, _log) = spawn_bridge(bridge()).await;
    tokio::time::timeout(OUTAGE, sending)
        .await
        .expect("every notification answered within the outage")
        .expect("Coder gave up on none");
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        0,
        "nothing got through"
    );

    tokio::time::sleep(OUTAGE.saturating_sub(outage_began.elapsed())).await;
    slack.outage(None);
    assert_each_once_in_order(&slack, &lanes, Instant::now()).await;
}

#[tokio::test]
async fn two_replicas_on_postgresql_one_killed_mid_drain_lose_nothing_and_post_nothing_twice() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("outage").await;
    let slack = fake_slack_with_people().await;
    let replica = || {
        let mut config = config(settings(&slack));
        config.database = Location::parse(&url).expect("a database URL");
        // A dead sender's lease ends within the test: a budget of 2 s, no margin.
        config.delivery_timeout = Duration::from_secs(2);
        config.tuning.lease_margin = Duration::ZERO;
        // The production pace of the sender: backoff up to 30 s.
        config.tuning.outbox = Default::default();
        config
    };
    let mut a = KillableReplica::start(replica());
    let b = KillableReplica::start(replica());
    let ports = [a.addr.port(), b.addr.port()];
    let client = http_client();
    let lanes = notifications();

    slack.outage(Some(Outage::Status(503)));
    let outage_began = Instant::now();
    // Coder's requests alternate between the replicas, as a Service spreads them.
    let url = move |n: usize| format!("http://127.0.0.1:{}/v1/webhook", ports[n % 2]);
    let sent = Arc::new(AtomicUsize::new(0));
    tokio::time::timeout(OUTAGE, send_all(&client, url, &lanes, sent))
        .await
        .expect("every notification answered within the outage");

    tokio::time::sleep(OUTAGE.saturating_sub(outage_began.elapsed())).await;
    // Slack returns, slowly, so the drain takes a while; A is killed in the middle of it.
    slack.delay("chat.postMessage", Duration::from_millis(100));
    slack.outage(None);
    let returned = Instant::now();
    wait_until("the drain is under way", AFTER_RETURN, async || {
        slack.answered("chat.postMessage") >= 20
    })
    .await;
    a.kill();
    assert_each_once_in_order(&slack, &lanes, returned).await;
    drop(b);
}
