//! Buttons that act on Coder (`CODER_TOKEN`): extend on the autostop reminder, start on a
//! failed autobuild, keep on dormancy and deletion. Clicks arrive over Socket Mode (the fake's
//! websocket); Coder is a fake the tests own, so every call it receives is asserted.

use crate::support;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use coder_slack_bridge::config::Threads;
use coder_slack_bridge::state::{Claim, Location, MsgKey, Store};
use serde_json::{json, Value};
use std::time::Duration;
use support::coder_api::{self, FakeCoder, FakeWorkspace, World, BOBBY, CODER_TOKEN, DEV};
use support::*;

const DM: &str = "DBOBBY";
const MALLORY: &str = "3a110000-0000-4000-8000-000000000002";
const SHARED: &str = "5a000000-0000-4000-8000-000000000004";

const AUTOSTOP: &str = "TemplateWorkspaceAutostopReminder.json.golden";
const AUTOBUILD_FAILED: &str = "TemplateWorkspaceAutobuildFailed.json.golden";
const DORMANT: &str = "TemplateWorkspaceDormant.json.golden";
const MARKED_FOR_DELETION: &str = "TemplateWorkspaceMarkedForDeletion.json.golden";
const OUT_OF_MEMORY: &str = "TemplateWorkspaceOutOfMemory.json.golden";

const ACT_IDS: [&str; 3] = ["extend_workspace", "start_workspace", "keep_workspace"];

/// Bobby in Slack, his running workspace `dev` in Coder, and a bridge with Socket Mode on,
/// with `CODER_TOKEN` when `token`, one message per notification.
async fn start(token: bool) -> World {
    World::start(token, Threads::Off).await
}

async fn start_with(token: bool, threads: Threads) -> World {
    World::start(token, threads).await
}

/// When `dev` stops now, in Coder.
fn dev_deadline(world: &World) -> DateTime<Utc> {
    let dev = world.coder.workspace(DEV).expect("dev");
    dev.deadline.expect("a deadline")
}

/// A sample for Bobby (his Coder user ID set) about `workspace`, naming `target` first in
/// `targets` (or none, as payload 1.1 does).
fn for_bobby(sample: &str, workspace: &str, target: Option<&str>) -> Value {
    let mut body = about(sample, workspace);
    body["payload"]["user_id"] = BOBBY.into();
    body["payload"]["targets"] = match target {
        Some(id) => json!([id, BOBBY]),
        None => Value::Null,
    };
    body
}

/// Delivers `body` and returns the message it became in Bobby's DM.
async fn deliver(world: &World, body: &Value) -> Value {
    let answer = world.bridge.deliver(body).await;
    let ts = answer["ts"].as_str().expect("delivered");
    message(world, ts)
}

fn message(world: &World, ts: &str) -> Value {
    world
        .slack
        .messages_in(DM)
        .into_iter()
        .find(|m| m["ts"] == ts)
        .expect("the message is in the DM")
}

/// The message's buttons that act on Coder.
fn act_buttons(message: &Value) -> Vec<Value> {
    let blocks = message["blocks"].as_array().cloned().unwrap_or_default();
    blocks
        .iter()
        .filter_map(|b| b["elements"].as_array())
        .flatten()
        .filter(|e| ACT_IDS.contains(&e["action_id"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

/// The message at `ts` in Bobby's DM, top level or in a thread.
fn any_message(world: &World, ts: &str) -> Value {
    let top = world.slack.messages_in(DM);
    let replies = top.iter().flat_map(|m| {
        let card_ts = m["ts"].as_str().unwrap_or_default();
        world.slack.replies(DM, card_ts)
    });
    top.iter()
        .cloned()
        .chain(replies.collect::<Vec<_>>())
        .find(|m| m["ts"] == ts)
        .expect("the message is in the DM")
}

/// Slack's envelope for `user` clicking the act button of `message` (as it was then), at
/// `action_ts`.
fn click(envelope_id: &str, user: &str, message: &Value, action_ts: &str) -> String {
    let button = act_buttons(message).pop().expect("an act button");
    envelope(
        envelope_id,
        "interactive",
        json!({
            "type": "block_actions",
            "user": {"id": user},
            "container": {"type": "message", "channel_id": DM, "message_ts": message["ts"]},
            "channel": {"id": DM},
            "message": {"ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
            "actions": [{"type": "button", "action_id": button["action_id"], "value": button["value"], "action_ts": action_ts}],
        }),
    )
}

/// The calls Coder received after the first `from`, as `METHOD path`.
fn coder_calls_from(world: &World, from: usize) -> Vec<String> {
    let calls = world.coder.calls();
    calls[from..]
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn read_user() -> String {
    format!("GET /api/v2/users/{BOBBY}")
}

fn read_dev() -> String {
    format!("GET /api/v2/workspaces/{DEV}")
}

/// `<{CODER_URL}/@bobby/dev|Open dev in Coder>`, the link notes end with.
fn dev_link(world: &World) -> String {
    format!("<{}/@bobby/dev|Open dev in Coder>", world.coder.url())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The metric line `coder_actions_total{action, outcome} n`.
fn acted(action: &str, outcome: &str, n: u64) -> String {
    format!(
        "coder_slack_bridge_coder_actions_total{{action=\"{action}\",outcome=\"{outcome}\"}} {n}"
    )
}

async fn wait_for_edit(world: &World, n: usize) {
    world
        .slack
        .wait_for("the clicked message is edited", |calls| {
            calls.iter().filter(|c| c.method == "chat.update").count() == n
        })
        .await;
}

async fn wait_for_notes(world: &World, n: usize) -> Value {
    world
        .slack
        .wait_for("an ephemeral note", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postEphemeral")
                .count()
                == n
        })
        .await;
    world.slack.calls_to("chat.postEphemeral")[n - 1]
        .args
        .clone()
}

#[tokio::test]
async fn each_kind_offers_its_button_on_the_recipients_own_workspace() {
    let world = start(true).await;
    let deadline = dev_deadline(&world);
    let offered = async |sample, target| {
        let message = deliver(&world, &for_bobby(sample, "dev", target)).await;
        act_buttons(&message)
    };

    let extend = offered(AUTOSTOP, Some(DEV)).await;
    assert_eq!(extend.len(), 1, "{extend:?}");
    assert_eq!(
        (
            extend[0]["action_id"].as_str(),
            extend[0]["text"]["text"].as_str()
        ),
        (Some("extend_workspace"), Some("Extend 1 hour"))
    );
    let value: Value =
        serde_json::from_str(extend[0]["value"].as_str().expect("a value")).expect("JSON");
    assert_eq!(value["w"], DEV);
    assert_eq!(value["d"], (deadline + TimeDelta::hours(1)).timestamp());
    // Without `targets` (payload 1.1) the workspace is found by owner and name.
    let calls_before = world.coder.calls().len();
    assert_eq!(offered(AUTOSTOP, None).await.len(), 1);
    let lookups: Vec<String> = world.coder.calls()[calls_before..]
        .iter()
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(lookups, ["/api/v2/users/bobby/workspace/dev"]);
    assert!(offered(OUT_OF_MEMORY, Some(DEV)).await.is_empty());

    let mut failed = FakeWorkspace::running(DEV, BOBBY, "bobby", "dev");
    failed.job_status = "failed".into();
    world.coder.add_workspace(failed.clone());
    let start = offered(AUTOBUILD_FAILED, Some(DEV)).await;
    assert_eq!(
        start
            .iter()
            .map(|b| b["action_id"].clone())
            .collect::<Vec<_>>(),
        ["start_workspace"]
    );

    let mut dormant = failed;
    dormant.transition = "stop".into();
    dormant.job_status = "succeeded".into();
    dormant.dormant_at = Some(coder_api::now());
    world.coder.add_workspace(dormant);
    for sample in [DORMANT, MARKED_FOR_DELETION] {
        let keep = offered(sample, Some(DEV)).await;
        assert_eq!(
            keep.iter()
                .map(|b| b["action_id"].clone())
                .collect::<Vec<_>>(),
            ["keep_workspace"],
            "{sample}"
        );
    }
    // Not offered on a workspace someone else owns, even when `targets` points at it.
    world
        .coder
        .add_workspace(FakeWorkspace::running(SHARED, MALLORY, "mallory", "shared"));
    assert!(offered(AUTOSTOP, Some(SHARED)).await.is_empty());
    assert!(
        world.coder.actions().is_empty(),
        "delivering acts on nothing"
    );
    world.bridge.stop().await;
}

#[tokio::test]
async fn without_the_token_there_are_no_buttons_and_coder_is_never_called() {
    let world = start(false).await;
    for sample in [AUTOSTOP, AUTOBUILD_FAILED, DORMANT, MARKED_FOR_DELETION] {
        let message = deliver(&world, &for_bobby(sample, "dev", Some(DEV))).await;
        assert!(act_buttons(&message).is_empty(), "{sample}: {message}");
    }
    assert!(world.coder.calls().is_empty());
    world.bridge.stop().await;
}

#[tokio::test]
async fn a_click_by_the_owner_makes_one_call_and_the_message_shows_what_it_did() {
    let world = start(true).await;
    let deadline = dev_deadline(&world);

    // Extend.
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    world
        .socket
        .send_text(0, click("e1", "UBOBBY", &reminder, "100.1"));
    wait_for_edit(&world, 1).await;
    let calls = world.coder.actions();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("PUT", format!("/api/v2/workspaces/{DEV}/extend").as_str())
    );
    assert_eq!(
        calls[0].body,
        json!({"deadline": rfc3339(deadline + TimeDelta::hours(1))})
    );
    assert_eq!(calls[0].token.as_deref(), Some(CODER_TOKEN));
    let agent = calls[0].user_agent.clone().unwrap_or_default();
    assert!(
        agent.starts_with("coder-slack-bridge/") && agent.contains("Slack user UBOBBY"),
        "{agent}"
    );
    assert_eq!(
        world.coder.workspace(DEV).and_then(|w| w.deadline),
        Some(deadline + TimeDelta::hours(1))
    );
    let edited = world.slack.calls_to("chat.update")[0].args.clone();
    assert_eq!(
        (edited["channel"].as_str(), edited["ts"].clone()),
        (Some(DM), reminder["ts"].clone())
    );
    let shown = message(&world, reminder["ts"].as_str().expect("ts"));
    assert!(
        act_buttons(&shown).is_empty(),
        "the button gave way: {shown}"
    );
    let said = shown["blocks"].to_string();
    let until = deadline + TimeDelta::hours(1);
    assert!(
        said.contains(&format!("Extended until <!date^{}^", until.timestamp()))
            && said.contains("UTC> by you."),
        "{said}"
    );
    assert!(
        said.contains("\"action_id\":\"snooze\""),
        "the snooze control stays: {said}"
    );

    // Start.
    let mut failed = FakeWorkspace::running(DEV, BOBBY, "bobby", "dev");
    failed.job_status = "failed".into();
    world.coder.add_workspace(failed);
    let autobuild = deliver(&world, &for_bobby(AUTOBUILD_FAILED, "dev", Some(DEV))).await;
    world
        .socket
        .send_text(0, click("e2", "UBOBBY", &autobuild, "100.2"));
    wait_for_edit(&world, 2).await;
    let start = world.coder.actions()[1].clone();
    assert_eq!(
        (start.method.as_str(), start.body.clone()),
        ("POST", json!({"transition": "start"}))
    );
    assert_eq!(start.path, format!("/api/v2/workspaces/{DEV}/builds"));
    let shown = message(&world, autobuild["ts"].as_str().expect("ts"))["blocks"].to_string();
    assert!(shown.contains("Start requested by you"), "{shown}");
    // A second click while that build runs: Coder refuses, and the person is told why.
    world
        .socket
        .send_text(0, click("e2-again", "UBOBBY", &autobuild, "100.22"));
    let note = wait_for_notes(&world, 1).await;
    let text = note["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Coder did not start *dev*: A workspace build is already active."),
        "{text}"
    );

    // Keep.
    let mut dormant = FakeWorkspace::running(DEV, BOBBY, "bobby", "dev");
    dormant.transition = "stop".into();
    dormant.dormant_at = Some(coder_api::now());
    world.coder.add_workspace(dormant);
    let marked = deliver(&world, &for_bobby(DORMANT, "dev", Some(DEV))).await;
    world
        .socket
        .send_text(0, click("e3", "UBOBBY", &marked, "100.3"));
    wait_for_edit(&world, 3).await;
    let keep = world.coder.actions()[3].clone();
    assert_eq!(
        (keep.method.as_str(), keep.body.clone()),
        ("PUT", json!({"dormant": false}))
    );
    assert_eq!(world.coder.workspace(DEV).and_then(|w| w.dormant_at), None);
    let shown = message(&world, marked["ts"].as_str().expect("ts"))["blocks"].to_string();
    assert!(
        shown.contains("Kept by you: *dev* is active again"),
        "{shown}"
    );

    // Kept already (a double click): Coder answers 304, and the message says so.
    world
        .socket
        .send_text(0, click("e3-again", "UBOBBY", &marked, "100.33"));
    wait_for_edit(&world, 4).await;
    let shown = message(&world, marked["ts"].as_str().expect("ts"))["blocks"].to_string();
    assert!(
        shown.contains("Kept: *dev* was not dormant any more."),
        "{shown}"
    );

    assert_eq!(world.coder.actions().len(), 5, "one call per click");
    world
        .bridge
        .assert_metrics(&[
            &acted("extend", "done", 1),
            &acted("start", "done", 1),
            &acted("start", "refused", 1),
            &acted("keep", "done", 1),
            &acted("keep", "unchanged", 1),
        ])
        .await;
    let (_, metrics) = world.bridge.get("/metrics").await;
    assert!(!metrics.contains(CODER_TOKEN));
    world.bridge.stop().await;
}

#[tokio::test]
async fn others_clicks_repeated_envelopes_and_double_clicks_act_at_most_once() {
    let world = start(true).await;
    let deadline = dev_deadline(&world);
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;

    // Someone else clicking in Bobby's DM: a note to them, and Coder is not called.
    world
        .socket
        .send_text(0, click("m1", "UMALLORY", &reminder, "200.1"));
    let note = wait_for_notes(&world, 1).await;
    assert_eq!(note["user"], "UMALLORY");
    assert_eq!(
        note["text"],
        "Only bobby can extend this workspace from here."
    );
    assert!(world.coder.actions().is_empty());

    // Bobby's click, with its envelope delivered twice on the connection and once more under
    // another envelope ID (as a redelivery to another replica would be): one call.
    let first = click("b1", "UBOBBY", &reminder, "200.2");
    world.socket.send_text(0, first.clone());
    world.socket.send_text(0, first);
    world
        .socket
        .send_text(0, click("b1-again", "UBOBBY", &reminder, "200.2"));
    wait_until("the repeated click is seen and skipped", WAIT, async || {
        world
            .bridge
            .get("/metrics")
            .await
            .1
            .contains(&acted("extend", "repeated", 1))
    })
    .await;
    wait_for_edit(&world, 1).await;
    assert_eq!(world.coder.actions().len(), 1);

    // A double click (the second on the message as it was): the same deadline asked twice,
    // and Coder's is there already, so the second makes no call and it moves by one hour,
    // not two.
    world
        .socket
        .send_text(0, click("b2", "UBOBBY", &reminder, "200.3"));
    wait_for_edit(&world, 2).await;
    assert_eq!(world.coder.actions().len(), 1);
    assert_eq!(
        world.coder.workspace(DEV).and_then(|w| w.deadline),
        Some(deadline + TimeDelta::hours(1))
    );
    world
        .bridge
        .assert_metrics(&[
            &acted("extend", "not_allowed", 1),
            &acted("extend", "done", 1),
            &acted("extend", "already_later", 1),
        ])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn coder_refusing_failing_or_hanging_becomes_a_note_with_a_link() {
    let world = start(true).await;
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    let extend = format!("/api/v2/workspaces/{DEV}/extend");
    let link = format!("<{}/@bobby/dev|Open dev in Coder>", world.coder.url());
    let refusals = [
        (409, "Workspace must be started, current status: stop", "Coder did not extend *dev*: Workspace must be started, current status: stop"),
        (400, "Cannot extend workspace beyond max deadline.", "Coder did not extend *dev*: Cannot extend workspace beyond max deadline."),
        (403, "Forbidden.", "Coder did not extend *dev*: Forbidden."),
        (404, coder_api::NOT_FOUND, "Coder did not extend *dev*: Resource not found"),
        (500, "Internal error updating the deadline.", "Coder failed to extend *dev* (Internal error updating the deadline.); it may not have happened."),
    ];
    for (n, (status, message, said)) in refusals.into_iter().enumerate() {
        world
            .coder
            .push("PUT", &extend, status, json!({"message": message}));
        world.socket.send_text(
            0,
            click(&format!("r{n}"), "UBOBBY", &reminder, &format!("300.{n}")),
        );
        let note = wait_for_notes(&world, n + 1).await;
        let text = note["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(said) && text.ends_with(&link),
            "{status}: {text}"
        );
        assert_eq!(note["user"], "UBOBBY");
    }

    // Coder failing to say whether the click may act: nothing was done, and the note says so.
    let user = format!("/api/v2/users/{BOBBY}");
    world.coder.push(
        "GET",
        &user,
        500,
        json!({"message": "Internal error fetching user."}),
    );
    world
        .socket
        .send_text(0, click("r-read", "UBOBBY", &reminder, "300.8"));
    let note = wait_for_notes(&world, 6).await;
    assert_eq!(
        note["text"].as_str(),
        Some(format!("Nothing was done to *dev*: Coder failed to say whether it may be extended (Internal error fetching user.). {link}").as_str())
    );

    // Coder hanging past the call timeout: the click is acked at once, and a note follows.
    world.coder.hang("PUT", &extend, Duration::from_secs(5));
    world
        .socket
        .send_text(0, click("r-hang", "UBOBBY", &reminder, "300.9"));
    wait_until("the click is acked", Duration::from_secs(3), async || {
        world.socket.acks().iter().any(|(_, id)| id == "r-hang")
    })
    .await;
    let note = wait_for_notes(&world, 7).await;
    assert!(
        note["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Coder did not answer, so *dev* may not have been extended."),
        "{note}"
    );

    // A revoked token (last: the click's reads of Coder are refused too): the note says to run `check`.
    world.coder.revoke_token();
    world
        .socket
        .send_text(0, click("r-401", "UBOBBY", &reminder, "300.401"));
    let note = wait_for_notes(&world, 8).await;
    assert!(note["text"].as_str().unwrap_or_default().contains("Coder refused the bridge's token. Ask your Coder administrator to run `coder-slack-bridge check`."), "{note}");

    assert!(
        world.slack.calls_to("chat.update").is_empty(),
        "nothing done, nothing shown as done"
    );
    world
        .bridge
        .assert_metrics(&[
            &acted("extend", "refused", 4),
            &acted("extend", "failed", 2),
            &acted("extend", "token_refused", 1),
            &acted("extend", "unreachable", 1),
        ])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn check_verifies_the_token_and_names_a_revoked_one() {
    let slack = FakeSlack::start().await;
    let coder = FakeCoder::start().await;
    let check = || {
        let mut command = bridge_command(&slack);
        command
            .env("CODER_URL", coder.url())
            .env("CODER_TOKEN", CODER_TOKEN)
            .arg("check");
        command
    };
    coder.set_me("slack-bridge", &[]);
    let (ok, out, err) = run_for_text(&mut check()).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "ok    CODER_URL: Coder v2.24.1+deadbee at {}",
            coder.url()
        )),
        "{out}"
    );
    assert!(
        out.contains("ok    CODER_TOKEN: Coder account slack-bridge (no site-wide roles)"),
        "{out}"
    );

    // An Owner's token works, with a warning; so does an old Coder.
    coder.set_me("admin", &["owner"]);
    coder.set_version("v2.19.3+abcdef0");
    let (ok, out, _) = run_for_text(&mut check()).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("warn  CODER_TOKEN: its account has the site-wide role owner"),
        "{out}"
    );
    assert!(
        out.contains("warn  Coder v2.19.3+abcdef0: older than v2.21"),
        "{out}"
    );

    coder.revoke_token();
    let (ok, out, err) = run_for_text(&mut check()).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  CODER_TOKEN: Coder refused CODER_TOKEN (401)"),
        "{out}"
    );
    assert!(err.contains("CODER_TOKEN was refused by Coder"), "{err}");
    for call in coder.calls() {
        if call.path != "/api/v2/buildinfo" {
            assert_eq!(call.token.as_deref(), Some(CODER_TOKEN), "{call:?}");
        }
    }
    assert!(!out.contains(CODER_TOKEN) && !err.contains(CODER_TOKEN));
}

#[tokio::test]
async fn in_a_workspace_thread_the_reply_and_the_card_show_what_was_done() {
    let world = start_with(true, Threads::Workspace).await;
    let deadline = dev_deadline(&world);
    let answer = world
        .bridge
        .deliver(&for_bobby(AUTOSTOP, "dev", Some(DEV)))
        .await;
    let reply = any_message(&world, answer["ts"].as_str().expect("ts"));
    let card_ts = world.slack.messages_in(DM)[0]["ts"].clone();
    assert_ne!(
        reply["ts"], card_ts,
        "the reminder is a reply under the card"
    );
    assert_eq!(act_buttons(&reply).len(), 1);

    world
        .socket
        .send_text(0, click("t1", "UBOBBY", &reply, "400.1"));
    let until = rfc_utc(deadline + TimeDelta::hours(1));
    wait_until(
        "the card says the workspace was extended",
        WAIT,
        async || {
            world.slack.messages_in(DM)[0]
                .to_string()
                .contains(&format!("Extended until {until}"))
        },
    )
    .await;
    let edited = any_message(&world, reply["ts"].as_str().expect("ts"));
    assert!(act_buttons(&edited).is_empty(), "{edited}");
    assert!(edited["blocks"].to_string().contains("by you."), "{edited}");
    assert_eq!(world.coder.actions().len(), 1);
    world.bridge.stop().await;
}

/// `2024-03-15 15:00 UTC`, as the card writes times.
fn rfc_utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[tokio::test]
async fn the_log_names_each_action_and_never_the_token() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    slack.set_socket_url(&socket.url());
    let coder = FakeCoder::start().await;
    coder.add_workspace(FakeWorkspace::running(DEV, BOBBY, "bobby", "dev"));
    let mut command = bridge_command(&slack);
    command
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .env("SOCKET_MODE_CONNECTIONS", "1")
        .env("THREADS", "off")
        .env("CODER_URL", coder.url())
        .env("CODER_TOKEN", CODER_TOKEN)
        .env("RUST_LOG", "debug");
    let (mut child, addr, log) = spawn_bridge(command).await;
    let client = http_client();
    let url = format!("http://{addr}/v1/webhook");
    wait_until(
        "the bridge is ready with Socket Mode open",
        WAIT,
        async || {
            let ready = client.get(format!("http://{addr}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200) && socket.accepted() == 1
        },
    )
    .await;
    let (status, _, answer) =
        post_webhook(&client, &url, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    assert_eq!(status, 200, "{answer}");
    let ts = answer["ts"].as_str().expect("delivered").to_owned();
    let message = slack
        .messages_in(DM)
        .into_iter()
        .find(|m| m["ts"] == ts.as_str())
        .expect("posted");
    socket.send_text(0, click("l1", "UBOBBY", &message, "500.1"));
    slack
        .wait_for("the clicked message is edited", |calls| {
            calls.iter().any(|c| c.method == "chat.update")
        })
        .await;
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("killed");
    let log = tokio::time::timeout(DEADLINE, log)
        .await
        .expect("log read")
        .expect("log");
    let line = log
        .lines()
        .find(|l| l.contains("acted on Coder"))
        .unwrap_or_else(|| panic!("no action logged: {log}"));
    for part in [
        "slack_user=UBOBBY",
        "coder_user=bobby",
        "workspace=bobby/dev",
        "action=\"extend\"",
        "outcome=\"done\"",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(log.contains("Coder"), "the log was read");
    assert!(!log.contains(CODER_TOKEN), "the token is in the log");
}

#[tokio::test]
async fn an_extend_never_moves_a_deadline_the_owner_has_since_set_later() {
    let world = start(true).await;
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    // Since the reminder went out, Bobby extended dev to 5 hours from now in the dashboard.
    let later = coder_api::now() + TimeDelta::hours(5);
    let mut dev = world.coder.workspace(DEV).expect("dev");
    dev.deadline = Some(later);
    world.coder.add_workspace(dev);

    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("x1", "UBOBBY", &reminder, "600.1"));
    wait_for_edit(&world, 1).await;
    assert_eq!(coder_calls_from(&world, before), [read_user(), read_dev()]);
    assert!(world.coder.actions().is_empty(), "no extend call");
    assert_eq!(
        world.coder.workspace(DEV).and_then(|w| w.deadline),
        Some(later)
    );
    let shown = message(&world, reminder["ts"].as_str().expect("ts"));
    let said = shown["blocks"].to_string();
    assert!(
        said.contains(&format!(
            "Already running until <!date^{}^",
            later.timestamp()
        )) && said.contains("so nothing was extended."),
        "{said}"
    );
    assert!(act_buttons(&shown).is_empty(), "{shown}");
    assert!(world.slack.calls_to("chat.postEphemeral").is_empty());
    world
        .bridge
        .assert_metrics(&[
            &acted("extend", "already_later", 1),
            &acted("extend", "done", 0),
        ])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn a_suspended_dormant_or_deleted_accounts_buttons_do_nothing_but_say_why() {
    let world = start(true).await;
    // A start button and a keep button, delivered while Bobby's account was active.
    let mut failed = FakeWorkspace::running(DEV, BOBBY, "bobby", "dev");
    failed.job_status = "failed".into();
    world.coder.add_workspace(failed.clone());
    let autobuild = deliver(&world, &for_bobby(AUTOBUILD_FAILED, "dev", Some(DEV))).await;
    let mut dormant = failed;
    dormant.transition = "stop".into();
    dormant.job_status = "succeeded".into();
    dormant.dormant_at = Some(coder_api::now());
    world.coder.add_workspace(dormant);
    let marked = deliver(&world, &for_bobby(DORMANT, "dev", Some(DEV))).await;
    assert_eq!(act_buttons(&autobuild).len(), 1);
    assert_eq!(act_buttons(&marked).len(), 1);

    // Suspended by an admin since: only the account is read, nothing is acted on.
    world.coder.set_user_status(BOBBY, "suspended");
    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("s1", "UBOBBY", &marked, "700.1"));
    let note = wait_for_notes(&world, 1).await;
    assert_eq!(
        (note["user"].as_str(), note["text"].as_str()),
        (
            Some("UBOBBY"),
            Some("Nothing was done to *dev*: your Coder account is suspended.")
        )
    );
    assert_eq!(coder_calls_from(&world, before), [read_user()]);

    // Dormant (not signed in for long): the same, and how to wake it.
    world.coder.set_user_status(BOBBY, "dormant");
    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("s2", "UBOBBY", &autobuild, "700.2"));
    let note = wait_for_notes(&world, 2).await;
    assert_eq!(
        note["text"].as_str(),
        Some("Nothing was done to *dev*: your Coder account is dormant. Sign in to Coder to make it active, then click again.")
    );
    assert_eq!(coder_calls_from(&world, before), [read_user()]);

    // Deleted (Coder deletes an account only once its workspaces are gone).
    world.coder.delete_workspace(DEV);
    world.coder.delete_user(BOBBY);
    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("s3", "UBOBBY", &marked, "700.3"));
    let note = wait_for_notes(&world, 3).await;
    assert_eq!(
        note["text"].as_str(),
        Some("Nothing was done to *dev*: Coder no longer knows your account.")
    );
    assert_eq!(coder_calls_from(&world, before), [read_user()]);

    assert!(world.coder.actions().is_empty(), "no PUT, no POST");
    assert!(world.slack.calls_to("chat.update").is_empty());
    world
        .bridge
        .assert_metrics(&[
            &acted("keep", "not_allowed", 2),
            &acted("start", "not_allowed", 1),
        ])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn a_workspace_no_longer_the_notifications_users_is_not_acted_on() {
    let world = start(true).await;
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    let mut dev = world.coder.workspace(DEV).expect("dev");
    dev.owner_id = MALLORY.into();
    dev.owner_name = "mallory".into();
    world.coder.add_workspace(dev);

    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("n1", "UBOBBY", &reminder, "750.1"));
    let note = wait_for_notes(&world, 1).await;
    assert_eq!(
        note["text"].as_str(),
        Some(
            format!(
                "Nothing was done to *dev*: it is no longer bobby's workspace in Coder. {}",
                dev_link(&world)
            )
            .as_str()
        )
    );
    assert_eq!(coder_calls_from(&world, before), [read_user(), read_dev()]);
    assert!(world.coder.actions().is_empty(), "no PUT, no POST");
    world
        .bridge
        .assert_metrics(&[&acted("extend", "not_allowed", 1)])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn buttons_older_than_seven_days_link_to_coder_and_call_nothing() {
    let world = start(true).await;
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    // The same message as if it had been posted eight days ago.
    let mut old = reminder.clone();
    let posted = coder_api::now() - TimeDelta::days(8);
    old["ts"] = format!("{}.000100", posted.timestamp()).into();

    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("o1", "UBOBBY", &old, "760.1"));
    let note = wait_for_notes(&world, 1).await;
    assert_eq!(
        note["text"].as_str(),
        Some(
            format!(
                "This message is over 7 days old, so its button no longer acts on *dev*. {}",
                dev_link(&world)
            )
            .as_str()
        )
    );
    assert_eq!(note["user"], "UBOBBY");
    assert_eq!(coder_calls_from(&world, before), Vec::<String>::new());
    assert!(world.slack.calls_to("chat.update").is_empty());
    world
        .bridge
        .assert_metrics(&[&acted("extend", "expired", 1)])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn a_click_left_in_flight_by_a_bridge_that_died_is_not_carried_out_again() {
    let dir = fresh_dir("acting-in-flight");
    let path = dir.join("state.db");
    let world = World::start_on(true, Threads::Off, Location::Sqlite(path.clone())).await;
    let deadline = dev_deadline(&world);
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;

    // Another replica on the same store took this click, and died before it was done: its
    // claim is still there, its lease over.
    let replica = Store::open(&Location::Sqlite(path))
        .await
        .expect("the store opens");
    let key = MsgKey::of("click:UBOBBY:800.1:extend_workspace");
    let Ok(Claim::Fresh(_never_finished)) = replica.claim(&key, Duration::ZERO).await else {
        panic!("the dead replica's claim");
    };

    // Slack delivers the click's envelope again, here.
    let before = world.coder.calls().len();
    world
        .socket
        .send_text(0, click("d1", "UBOBBY", &reminder, "800.1"));
    let note = wait_for_notes(&world, 1).await;
    assert_eq!(
        note["text"].as_str(),
        Some(format!(
            "Whether *dev* was extended is unknown: the bridge stopped while carrying out this click, and it is not tried again. {}",
            dev_link(&world)
        ).as_str())
    );
    assert_eq!(coder_calls_from(&world, before), Vec::<String>::new());
    assert_eq!(
        world.coder.workspace(DEV).and_then(|w| w.deadline),
        Some(deadline)
    );
    assert!(world.slack.calls_to("chat.update").is_empty());

    // Once more: the click is settled now, so nothing at all.
    world
        .socket
        .send_text(0, click("d1-again", "UBOBBY", &reminder, "800.1"));
    wait_until("the repeated click is seen and skipped", WAIT, async || {
        world
            .bridge
            .get("/metrics")
            .await
            .1
            .contains(&acted("extend", "repeated", 1))
    })
    .await;
    assert_eq!(coder_calls_from(&world, before), Vec::<String>::new());
    assert_eq!(world.slack.calls_to("chat.postEphemeral").len(), 1);
    wait_until("the click is marked done in the store", WAIT, async || {
        replica.claim(&key, LEASE).await == Ok(Claim::Done)
    })
    .await;
    world
        .bridge
        .assert_metrics(&[&acted("extend", "unknown", 1)])
        .await;
    world.bridge.stop().await;
}

#[tokio::test]
async fn a_click_is_in_flight_while_coder_is_called_and_done_only_after() {
    let dir = fresh_dir("acting-claim-order");
    let path = dir.join("state.db");
    let world = World::start_on(true, Threads::Off, Location::Sqlite(path.clone())).await;
    let reminder = deliver(&world, &for_bobby(AUTOSTOP, "dev", Some(DEV))).await;
    let store = Store::open(&Location::Sqlite(path))
        .await
        .expect("the store opens");
    let key = MsgKey::of("click:UBOBBY:900.1:extend_workspace");

    // Coder takes its time over the extend (past the bridge's 1 s call timeout).
    let extend = format!("/api/v2/workspaces/{DEV}/extend");
    world.coder.hang("PUT", &extend, Duration::from_secs(5));
    world
        .socket
        .send_text(0, click("f1", "UBOBBY", &reminder, "900.1"));
    world
        .coder
        .wait_for("the extend call arrives", |calls| {
            calls.iter().any(|c| c.method == "PUT" && c.path == extend)
        })
        .await;
    assert!(
        matches!(store.claim(&key, LEASE).await, Ok(Claim::Busy { .. })),
        "in flight, not done, while Coder is called"
    );

    let note = wait_for_notes(&world, 1).await;
    assert!(
        note["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Coder did not answer, so *dev* may not have been extended."),
        "{note}"
    );
    wait_until("the click is marked done in the store", WAIT, async || {
        store.claim(&key, LEASE).await == Ok(Claim::Done)
    })
    .await;
    assert_eq!(world.coder.actions().len(), 1);
    world.bridge.stop().await;
}

const LEASE: Duration = Duration::from_secs(30);
