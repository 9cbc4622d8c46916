//! Stopping during a rolling update: `/readyz` turns 503 at once while webhooks are still
//! taken for `SHUTDOWN_GRACE`, then the work in flight (deliveries, Socket Mode's handlers)
//! finishes before the bridge's stop returns, all within the budget.

use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_stopping_bridge_answers_readyz_503_but_delivers_webhooks_for_the_grace() {
    let grace = Duration::from_secs(2);
    let (slack, mut bridge) = bridge_with_bobby(|c| c.shutdown_grace = grace).await;
    let app = bridge.app.take().expect("a running bridge");
    let started = Instant::now();
    bridge.shutdown.cancel();
    let stopped = tokio::spawn(app.run_until_stopped());

    let (status, body) = bridge.get("/readyz").await;
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (status, &body["status"], &body["reason"]),
        (503, &json!("not_ready"), &json!("shutting down"))
    );
    // A new connection (a client that did not notice yet) is still taken and delivered.
    let url = bridge.url("/v1/webhook");
    let (status, _, answer) =
        post_webhook(&http_client(), &url, &workspace_deleted("bobby@coder.com")).await;
    assert_eq!((status, &answer["status"]), (200, &json!("delivered")));
    assert!(
        started.elapsed() < grace,
        "the webhook came within the grace"
    );
    assert_eq!(slack.top_level("DBOBBY").len(), 1);

    tokio::time::timeout(Duration::from_secs(25), stopped)
        .await
        .expect("the bridge stops within the budget")
        .expect("the stop ran");
    let took = started.elapsed();
    // The whole stop: the grace, then the (empty) drain, well inside the test's budget of 5 s.
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        http_client()
            .get(bridge.url("/readyz"))
            .send()
            .await
            .is_err(),
        "the listener is closed once the bridge stopped"
    );
}

#[tokio::test]
async fn a_click_acked_just_before_the_stop_is_handled_before_the_stop_returns() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    let bridge = bridge_with_socket_mode(&slack, &socket, 1, |_| {}).await;
    // Its Slack call takes a while: the stop must wait for it, not cut it off.
    slack.delay("views.publish", Duration::from_millis(700));
    socket.send_text(0, home_opened("e-home", "UBOBBY"));
    wait_until("the envelope is acked", WAIT, async || {
        socket.acks().iter().any(|(_, id)| id == "e-home")
    })
    .await;

    bridge.stop().await;
    assert_eq!(
        slack.answered("views.publish"),
        1,
        "the App Home was published before the stop returned"
    );
    assert!(slack.home_view("UBOBBY").is_some());
    assert!(
        socket.has_seen(&Seen::CloseFrame(0, Some(1000))),
        "{:?}",
        socket.seen()
    );
}
