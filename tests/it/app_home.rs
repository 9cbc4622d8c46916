//! The App Home under load and races: handlers of a burst run a bounded number at a time,
//! publishes for one person never overlap and the last one shows the store's state, and a
//! view someone else published meanwhile (Slack's `hash`) is not overwritten with an old one.

use crate::support::*;
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
