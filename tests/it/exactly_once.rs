//! One exactly-once poster for every post. Slack takes a post and its answer is lost (an edge
//! proxy's 502, or an answer slower than the call timeout): the workspace's card, a reply in
//! its thread, and a top-level post each end as exactly one message, with `THREADS=workspace`
//! and `THREADS=off`; the card is edited once per notification that joins it, never twice.

use crate::support;
use coder_slack_bridge::config::Config;
use coder_slack_bridge::delivery::Threads;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const DM: &str = "DBOBBY";
const AUTOSTOP: &str = "TemplateWorkspaceAutostopReminder.json.golden";
const OUT_OF_MEMORY: &str = "TemplateWorkspaceOutOfMemory.json.golden";
const TEST: &str = "TemplateTestNotification.json.golden";

/// The two ways an answer is lost after Slack carried the post out.
const LOSSES: [Lost; 2] = [Lost::Status(502), Lost::Late(Duration::from_secs(2))];

fn with(threads: Threads) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.threads = threads;
        // Shorter than the late answer, so that answer counts as lost.
        config.tuning.slack_call_timeout = Duration::from_millis(400);
    }
}

/// The messages in Bobby's DM that are `body`'s notification (not a card made for it).
fn carrying(slack: &FakeSlack, body: &Value) -> Vec<Value> {
    slack
        .messages_in(DM)
        .into_iter()
        .filter(|m| {
            let payload = &m["metadata"]["event_payload"];
            payload["msg_id"] == body["msg_id"] && payload.get("part").is_none()
        })
        .collect()
}

/// The cards in Bobby's DM: top-level messages whose metadata says so.
fn cards(slack: &FakeSlack) -> Vec<Value> {
    slack
        .top_level(DM)
        .into_iter()
        .filter(|m| m["metadata"]["event_payload"]["part"] == "card")
        .collect()
}

#[tokio::test]
async fn a_card_whose_answer_is_lost_is_found_again_not_posted_twice() {
    for loss in LOSSES {
        let (slack, bridge) = bridge_with_bobby(with(Threads::Workspace)).await;
        // The first post is the card.
        slack.lose_answer("chat.postMessage", loss);
        let body = about(AUTOSTOP, "dev");
        let answer = bridge.deliver(&body).await;
        let cards = cards(&slack);
        assert_eq!(cards.len(), 1, "{loss:?}: one card: {cards:#?}");
        assert_eq!(
            cards[0]["metadata"]["event_payload"]["msg_id"],
            body["msg_id"]
        );
        let replies = slack.replies(DM, cards[0]["ts"].as_str().expect("ts"));
        let mine = carrying(&slack, &body);
        assert_eq!(
            (replies.len(), mine.len()),
            (1, 1),
            "{loss:?}: {replies:#?}"
        );
        assert_eq!(answer["ts"], mine[0]["ts"]);
        assert_eq!(mine[0]["thread_ts"], cards[0]["ts"]);
        // Made for this notification, so never edited for it.
        assert_eq!(card_edits(&slack), 0, "{loss:?}");
        // The card was read back from the DM's history, the reply posted after a look in
        // the thread (where the card itself, the thread's parent, is not taken for it).
        assert_eq!(slack.calls_to("chat.postMessage").len(), 2, "{loss:?}");
        assert_eq!(slack.calls_to("conversations.history").len(), 1, "{loss:?}");
        assert_eq!(slack.calls_to("conversations.replies").len(), 1, "{loss:?}");
        bridge.stop().await;
    }
}

#[tokio::test]
async fn a_reply_whose_answer_is_lost_is_found_in_its_thread_and_the_card_edited_once() {
    for loss in LOSSES {
        let (slack, bridge) = bridge_with_bobby(with(Threads::Workspace)).await;
        bridge.deliver(&about(AUTOSTOP, "dev")).await;
        slack.lose_answer("chat.postMessage", loss);
        let body = about(OUT_OF_MEMORY, "dev");
        let answer = bridge.deliver(&body).await;
        let cards = cards(&slack);
        assert_eq!(cards.len(), 1, "{loss:?}");
        let mine = carrying(&slack, &body);
        assert_eq!(mine.len(), 1, "{loss:?}: posted once: {mine:#?}");
        assert_eq!(
            (&answer["ts"], &mine[0]["thread_ts"]),
            (&mine[0]["ts"], &cards[0]["ts"])
        );
        assert_eq!(
            slack
                .replies(DM, cards[0]["ts"].as_str().expect("ts"))
                .len(),
            2
        );
        bridge.stop().await;
        assert_eq!(card_edits(&slack), 1, "{loss:?}");
    }
}

#[tokio::test]
async fn a_top_level_post_whose_answer_is_lost_is_found_in_the_dm_with_threads_on_and_off() {
    for loss in LOSSES {
        for (threads, sample) in [(Threads::Workspace, TEST), (Threads::Off, AUTOSTOP)] {
            let (slack, bridge) = bridge_with_bobby(with(threads)).await;
            slack.lose_answer("chat.postMessage", loss);
            let body = notification(support::sample(sample), &fresh_id(), "bobby@coder.com");
            let answer = bridge.deliver(&body).await;
            let mine = carrying(&slack, &body);
            let case = format!("{loss:?}, {threads:?}");
            assert_eq!(mine.len(), 1, "{case}: posted once: {mine:#?}");
            assert_eq!(
                (&answer["channel"], &answer["ts"]),
                (&json!(DM), &mine[0]["ts"]),
                "{case}"
            );
            assert!(mine[0].get("thread_ts").is_none(), "{case}");
            assert_eq!(
                slack.messages_in(DM).len(),
                1,
                "{case}: no card, nothing else"
            );
            assert_eq!(slack.calls_to("chat.postMessage").len(), 1, "{case}");
            bridge.stop().await;
        }
    }
}

/// How many times the cards in Bobby's DM were edited, in all.
fn card_edits(slack: &FakeSlack) -> u64 {
    cards(slack)
        .iter()
        .map(|card| card["edits"].as_u64().unwrap_or_default())
        .sum()
}
