//! The main path: every Coder sample becomes exactly the chat.postMessage it should.

use crate::support::*;
use coder_slack_bridge::coder::Notification;
use coder_slack_bridge::render;
use serde_json::{json, Value};

#[tokio::test]
async fn every_sample_is_delivered_as_the_expected_dm() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.add_user("bobby/drop-table+user@coder.com", "UBOBBY2");
    let bridge = Bridge::start(config(settings(&slack))).await;
    bridge.wait_ready(200).await;

    let samples = samples();
    assert_eq!(samples.len(), SAMPLE_COUNT);
    for (name, body) in &samples {
        let msg_id = fresh_id();
        let mut body = body.clone();
        body["msg_id"] = msg_id.clone().into();
        let before = slack.calls_to("chat.postMessage").len();
        let (status, _, answer) = bridge.post(&body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["status"], "delivered", "{name}: {answer}");
        let posts = slack.calls_to("chat.postMessage");
        assert_eq!(posts.len(), before + 1, "{name}: one post per notification");
        let sent = &posts[before];
        assert_eq!(
            sent.authorization.as_deref(),
            Some(&*format!("Bearer {BOT_TOKEN}"))
        );
        let args = &sent.args;

        let email = body["payload"]["user_email"].as_str().unwrap_or_default();
        let user = if email.starts_with("bobby/") {
            "UBOBBY2"
        } else {
            "UBOBBY"
        };
        assert_eq!(args["channel"], user, "{name}: sent to the user's ID");
        assert_eq!(answer["channel"], format!("D{}", &user[1..]), "{name}");
        assert_eq!(args["unfurl_links"], false, "{name}");
        assert_eq!(args["unfurl_media"], false, "{name}");
        assert!(
            args.get("username").is_none()
                && args.get("icon_emoji").is_none()
                && args.get("icon_url").is_none()
        );

        // Header: the title, as plain text.
        let blocks = args["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header", "{name}");
        let title = body["title"].as_str().unwrap_or_default();
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[0]["text"]["text"], title, "{name}");

        // Body: the converted Markdown, in section blocks, in full.
        let markdown = body["body_markdown"].as_str().unwrap_or_default();
        let expected_body = render::mrkdwn::markdown_to_mrkdwn(markdown);
        let sections: Vec<&str> = blocks
            .iter()
            .filter(|b| b["type"] == "section")
            .map(|b| b["text"]["text"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            sections.concat().replace('\n', ""),
            expected_body.replace('\n', ""),
            "{name}"
        );
        for section in &sections {
            assert!(
                !section.contains("**"),
                "{name}: Markdown bold left in {section}"
            );
        }

        // Buttons: one per action, in order, with absolute URLs (relative ones resolved
        // against CODER_URL).
        let buttons: Vec<Value> = blocks
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .collect();
        let actions = body["payload"]["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(buttons.len(), actions.len(), "{name}");
        for (i, (button, action)) in buttons.iter().zip(&actions).enumerate() {
            assert_eq!(button["type"], "button");
            assert_eq!(button["action_id"], format!("coder_action_{i}"));
            assert_eq!(button["text"]["text"], action["label"], "{name}");
            let raw = action["url"].as_str().unwrap_or_default();
            let expected = url::Url::parse("http://test.com")
                .and_then(|base| base.join(raw))
                .expect("url");
            assert_eq!(button["url"], expected.as_str(), "{name}");
        }

        // Within Block Kit's limits, and exactly what the renderer produces.
        let content: slack_morphism::prelude::SlackMessageContent =
            serde_json::from_value(args.clone()).expect("content");
        render::check_limits(&content).unwrap_or_else(|e| panic!("{name}: {e}"));
        let notification = Notification::parse(body.to_string().as_bytes(), None).expect("parses");
        let rendered = render::render(
            &notification,
            &render::RenderOptions {
                snooze: false,
                coder_url: url::Url::parse("http://test.com").ok(),
            },
            None,
        );
        let expected_request = coder_slack_bridge::delivery::post_request(
            slack_morphism::prelude::SlackChannelId(user.into()),
            rendered.content,
            &notification,
        );
        assert_eq!(
            args["metadata"],
            json!({"event_type": "coder_notification", "event_payload": {"msg_id": msg_id}}),
            "{name}: the msg_id travels with the message"
        );
        assert_eq!(
            args,
            &serde_json::to_value(&expected_request).expect("json"),
            "{name}"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn one_sample_exactly_as_slack_receives_it() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let bridge = Bridge::start(config(settings(&slack))).await;
    let body = workspace_deleted("Bobby@Coder.com");
    bridge.deliver(&body).await;
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    let expected = json!({
        "channel": "UBOBBY",
        "text": posts[0].args["text"].clone(),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": body["title"]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "Your workspace *bobby-workspace* was deleted.\n\nThe specified reason was \"*autodeleted due to dormancy (autobuild)*\"."}},
            {"type": "actions", "elements": [
                {"type": "button", "action_id": "coder_action_0", "text": {"type": "plain_text", "text": "View workspaces"}, "url": "http://test.com/workspaces"},
                {"type": "button", "action_id": "coder_action_1", "text": {"type": "plain_text", "text": "View templates"}, "url": "http://test.com/templates"}
            ]}
        ],
        "metadata": {"event_type": "coder_notification", "event_payload": {"msg_id": body["msg_id"]}},
        "unfurl_links": false,
        "unfurl_media": false
    });
    assert_eq!(posts[0].args, expected);
    let text = posts[0].args["text"].as_str().expect("fallback text");
    assert!(
        text.starts_with("Workspace \"bobby-workspace\" deleted"),
        "{text}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn bad_requests_get_specific_errors_and_never_reach_slack() {
    let slack = FakeSlack::start().await;
    let bridge = Bridge::start(config(settings(&slack))).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"payload": {"user_email": "a@b"}}),
            "msg_id is missing",
        ),
        (json!({"msg_id": "m"}), "payload is missing"),
        (
            json!({"msg_id": "m", "payload": {"user_name": "x"}}),
            "payload.user_email is missing",
        ),
        (
            json!({"msg_id": "m", "payload": {"user_email": "a@b", "actions": "nope"}}),
            "payload.actions must be a list",
        ),
        (
            json!({"msg_id": "m", "payload": {"user_email": "a@b", "actions": [{"label": "x", "url": 3}]}}),
            "payload.actions[0].url must be a string",
        ),
        (json!([1, 2]), "body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (status, _, answer) = bridge.post(&body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["error"], expected, "{body}");
    }

    // A body as it is, with its own content type: the status and the answer's `error`.
    let raw = async |body: Vec<u8>, content_type: &'static str| {
        let response = bridge
            .client
            .post(bridge.url("/v1/webhook"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let answer: Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).unwrap_or_default();
        (
            status,
            answer["error"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let (status, error) = raw(b"{not json".to_vec(), "application/json").await;
    assert_eq!(status, 400);
    assert!(error.starts_with("body is not valid JSON"), "{error}");

    let (status, _) = raw(b"{}".to_vec(), "text/plain").await;
    assert_eq!(status, 415);

    let huge = format!(
        "{{\"msg_id\":\"m\",\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let (status, error) = raw(huge.into_bytes(), "application/json").await;
    assert_eq!(status, 413);
    assert!(error.contains("larger than"), "{error}");

    let (status, body) = bridge.get("/v1/webhook").await;
    assert_eq!(
        (status, body.as_str()),
        (405, r#"{"error":"method not allowed"}"#)
    );
    let posted = http_client()
        .post(bridge.url("/metrics"))
        .send()
        .await
        .expect("POST /metrics");
    assert_eq!(posted.status(), 405);
    let (status, body) = bridge.get("/nope").await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"not found"}"#));
    // Paths match exactly, as the probes and Coder's URL are written.
    let (status, _) = bridge.get("/healthz/").await;
    assert_eq!(status, 404);
    let (status, _) = bridge.get("/healthz?verbose=1").await;
    assert_eq!(status, 200);

    assert!(slack.calls_to("chat.postMessage").is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn dry_run_needs_no_slack_and_sends_nothing() {
    let slack = FakeSlack::start().await;
    let mut s = settings(&slack);
    s.slack_bot_token = None;
    s.dry_run = true;
    let bridge = Bridge::start(config(s)).await;
    bridge.wait_ready(200).await;
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    let (status, _, answer) = bridge.post(&body).await;
    assert_eq!((status, answer), (200, json!({"status": "dry_run"})));
    bridge.stop().await;
    assert!(slack.calls().is_empty(), "a dry run contacts no Slack");
}

/// Runs a `preview` command, which must succeed, and returns the JSON it printed.
async fn preview(command: &mut tokio::process::Command) -> Value {
    let (ok, stdout, stderr) = run_for_text(command).await;
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).expect("preview prints JSON")
}

#[tokio::test]
async fn preview_prints_the_message_without_slack() {
    let path = sample_path("TemplateWorkspaceBuildsFailedReport.json.golden");
    let printed = preview(
        bridge_binary(&fresh_dir("preview"))
            .arg("preview")
            .arg(&path)
            .env("SLACK_API_URL", "http://127.0.0.1:9/unreachable"),
    )
    .await;
    assert_eq!(printed["channel"], "<Slack user ID of bobby@coder.com>");
    assert_eq!(
        printed["blocks"][0]["text"]["text"],
        "Failed workspace builds report"
    );
    let body = printed["blocks"][1]["text"]["text"]
        .as_str()
        .expect("section");
    assert!(
        body.contains("• *Bobby First Template* failed to build 4/55 times"),
        "{body}"
    );
    assert_eq!(printed["unfurl_links"], false);
}

#[tokio::test]
async fn preview_notes_whether_store_and_forward_is_on_on_standard_error_only() {
    let path = sample_path("TemplateWorkspaceDeleted.json.golden");
    let run = |queue_max_age: &str| {
        let mut command = bridge_binary(&fresh_dir("preview"));
        command
            .arg("preview")
            .arg(&path)
            .env("QUEUE_MAX_AGE", queue_max_age);
        command
    };
    let (ok, stdout, stderr) = run_for_text(&mut run("24h")).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("note: store and forward: on (QUEUE_MAX_AGE 24h, QUEUE_MAX_DEPTH 100000)"),
        "{stderr}"
    );
    let printed: Value = serde_json::from_str(&stdout).expect("standard output is the JSON alone");
    assert_eq!(printed["channel"], "<Slack user ID of bobby@coder.com>");
    let (ok, _, stderr) = run_for_text(&mut run("0")).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("note: store and forward: off (QUEUE_MAX_AGE=0): a Slack outage longer than Coder's retries (about 20 minutes) loses notifications"),
        "{stderr}"
    );
}

#[tokio::test]
async fn preview_resolves_relative_buttons_with_the_coder_url_flag() {
    let path = sample_path("TemplateChangelog.json.golden");
    let printed = preview(
        bridge_binary(&fresh_dir("preview"))
            .args(["preview", "--coder-url", "https://coder.example.com"])
            .arg(&path),
    )
    .await;
    let actions = printed["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
        .expect("an actions block");
    assert_eq!(
        actions["elements"][0]["url"],
        "https://coder.example.com/changelog/2.30"
    );
}

/// Reads an HTTP answer's status line (a reset connection fails the test).
async fn status_line(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer within the deadline");
        match read {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer failed: {e}"),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Sends `head` and all of `body`, then reads the answer's status line, as simple clients
/// do: a server that hangs up early breaks the pipe before the answer is read. The small send
/// buffer keeps most of the body in the client, as a real network does, rather than all of it
/// in loopback's large buffers.
async fn raw_post(addr: std::net::SocketAddr, head: String, body: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_send_buffer_size(256 * 1024)
        .expect("send buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let sent = tokio::time::timeout(DEADLINE, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await
    })
    .await
    .expect("the body was taken within the deadline");
    if let Err(e) = sent {
        panic!("the bridge hung up before the body was sent: {e}");
    }
    status_line(&mut stream).await
}

#[tokio::test]
async fn an_oversized_body_is_answered_413_not_reset() {
    let slack = FakeSlack::start().await;
    let bridge = Bridge::start(config(settings(&slack))).await;
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let head = |framing: &str| {
        format!("POST /v1/webhook HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n{framing}\r\n")
    };
    for attempt in 0..20 {
        let line = raw_post(
            bridge.app_addr,
            head(&format!("Content-Length: {}\r\n", huge.len())),
            &huge,
        )
        .await;
        assert!(
            line.starts_with("HTTP/1.1 413"),
            "attempt {attempt}: {line}"
        );
    }

    let mut chunked = Vec::new();
    for piece in huge.chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let line = raw_post(
        bridge.app_addr,
        head("Transfer-Encoding: chunked\r\n"),
        &chunked,
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 413"), "chunked: {line}");

    // An HTTP client library, too.
    let response = bridge
        .client
        .post(bridge.url("/v1/webhook"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 413);
    assert!(slack.calls_to("chat.postMessage").is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn preview_thread_shows_what_a_sequence_becomes_in_the_dm() {
    let names = [
        "TemplateWorkspaceAutostopReminder.json.golden",
        "TemplateTestNotification.json.golden",
        "TemplateWorkspaceManuallyUpdated.json.golden",
        "TemplateWorkspaceDeleted.json.golden",
        "TemplateWorkspaceManualBuildFailed.json.golden",
    ];
    let printed = preview(
        bridge_binary(&fresh_dir("preview"))
            .args(["preview", "--thread"])
            .args(names.map(sample_path)),
    )
    .await;
    let top = printed["conversation"].as_array().expect("a conversation");
    // Bobby's workspace in one thread (autostop, manually updated, deleted: Coder names its
    // owner "Bobby" on the update, which is bobby), the test notification, and a template
    // admin's copy of mrbobby's failed build, which is no thread of Bobby's.
    assert_eq!(top.len(), 3, "{printed:#}");
    let card = &top[0]["card"];
    assert_eq!(
        card["blocks"][0]["text"]["text"],
        "*Workspace bobby-workspace* · bobby"
    );
    let latest = card["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        latest.starts_with("Latest: Workspace \"bobby-workspace\" deleted"),
        "{latest}"
    );
    let replies = top[0]["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 3);
    assert!(replies
        .iter()
        .all(|r| r["thread_ts"] == "<ts of the card for bobby-workspace>"));
    let broadcast: Vec<&Value> = replies.iter().map(|r| &r["reply_broadcast"]).collect();
    assert_eq!(broadcast, [&json!(true), &json!(false), &json!(true)]);
    assert_eq!(
        top[1]["message"]["blocks"][0]["text"]["text"],
        "A test notification"
    );
    let copy = &top[2]["message"];
    assert!(copy.get("thread_ts").is_none(), "{copy:#}");
    assert_eq!(
        copy["blocks"][0]["text"]["text"],
        "Workspace \"bobby-workspace\" manual build failed"
    );

    // Without --thread, one file only.
    let (ok, _, stderr) = run_for_text(
        bridge_binary(&fresh_dir("preview"))
            .arg("preview")
            .args(names.map(sample_path)),
    )
    .await;
    assert!(!ok && stderr.contains("--thread"), "{stderr}");
}
