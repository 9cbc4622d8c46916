//! Security and operations: webhook auth, start-up refusal, secrets kept out of logs,
//! readiness, metrics, graceful shutdown, and the `check` command.

use crate::support::*;
use base64::Engine as _;
use coder_slack_bridge::state::SCHEMA_VERSION;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const SECRET: &str = "webhook-s3cret-value-42";

#[tokio::test]
async fn webhook_auth_none_wrong_basic_and_bearer() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut s = settings(&slack);
    s.webhook_secret = Some(SECRET.into());
    let bridge = Bridge::start(config(s)).await;
    let body = || {
        notification(
            sample("TemplateTestNotification.json.golden"),
            &fresh_id(),
            "bobby@coder.com",
        )
        .to_string()
    };
    let send = |auth: Option<String>| {
        let mut request = bridge
            .client
            .post(bridge.url("/v1/webhook"))
            .header("content-type", "application/json")
            .body(body());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };

    for auth in [
        None,
        Some(basic("coder:wrong")),
        Some("Bearer wrong".to_owned()),
        Some(basic(SECRET)),
    ] {
        let response = send(auth.clone()).await.expect("send");
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"coder-slack-bridge\""
        );
    }
    assert!(slack.calls_to("chat.postMessage").is_empty());

    for auth in [
        basic(&format!("coder:{SECRET}")),
        basic(&format!(":{SECRET}")),
        format!("Bearer {SECRET}"),
    ] {
        let response = send(Some(auth.clone())).await.expect("send");
        assert_eq!(response.status(), 200, "{auth}");
    }
    assert_eq!(slack.calls_to("chat.postMessage").len(), 3);
    // Probes need no credentials.
    assert_eq!(bridge.get("/healthz").await.0, 200);
    bridge.stop().await;
}

#[tokio::test]
async fn a_public_listener_without_a_secret_is_refused_at_start_up() {
    let slack = FakeSlack::start().await;
    let output = run_to_end(bridge_command(&slack).env("LISTEN_ADDR", "0.0.0.0:0")).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WEBHOOK_SECRET") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );

    let output = run_to_end(bridge_command(&slack).env_remove("SLACK_BOT_TOKEN")).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SLACK_BOT_TOKEN is not set"));
}

async fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("kill exits")
    .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    slack.set_socket_url(&socket.url());
    let otp = "9f1c2e7a-otp-secret-5b3d";
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut command = bridge_command(&slack);
    command
        .env("RUST_LOG", "debug,coder_slack_bridge=trace")
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .env("WEBHOOK_SECRET", SECRET)
        .env("FALLBACK_CHANNEL", "C0FALLBACK");
    let (child, addr, log) = spawn_bridge(command).await;

    let client = http_client();
    let mut otp_body = sample("TemplateUserRequestedOneTimePasscode.json.golden");
    otp_body["msg_id"] = fresh_id().into();
    otp_body["payload"]["user_email"] = "bobby@coder.com".into();
    otp_body["payload"]["labels"]["one_time_passcode"] = otp.into();
    otp_body["payload"]["actions"][0]["url"] =
        format!("http://test.com/reset-password/change?otp={otp}").into();
    otp_body["body"] = format!("Your one-time passcode is {otp}").into();
    otp_body["body_markdown"] = format!("Your one-time passcode is **{otp}**").into();
    let mut unknown = otp_body.clone();
    unknown["msg_id"] = fresh_id().into();
    unknown["payload"]["user_email"] = "nobody@coder.com".into();
    for body in [&otp_body, &unknown] {
        let response = client
            .post(format!("http://{addr}/v1/webhook"))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook");
        assert_eq!(response.status(), 200);
    }
    // A wrong secret is logged as a rejection, not echoed.
    let response = client
        .post(format!("http://{addr}/v1/webhook"))
        .bearer_auth(format!("{SECRET}-wrong"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    slack
        .wait_for("the DM and the fallback post", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .count()
                == 2
        })
        .await;
    assert_eq!(
        slack.calls_to("chat.postMessage")[0].args["blocks"][1]["text"]["text"],
        format!("Your one-time passcode is *{otp}*")
    );

    sigterm(&child).await;
    let log = tokio::time::timeout(Duration::from_secs(20), log)
        .await
        .expect("exits")
        .expect("log");
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "debug logging was on: {log}"
    );
    for secret in [
        otp,
        BOT_TOKEN,
        APP_TOKEN,
        SECRET,
        "reset-password",
        "passcode is",
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
    // The token's distinctive tail must not appear either (e.g. in a Debug of a header).
    assert!(!log.contains("0123456789"), "{log}");
}

#[tokio::test]
async fn readiness_reports_socket_mode_but_does_not_depend_on_it() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let socket = FakeSocketServer::start().await;
    slack.set_socket_url(&socket.url());
    let mut s = settings(&slack);
    s.slack_app_token = Some(APP_TOKEN.into());
    // Readiness as it waits for the bot token (store and forward would not wait).
    s.queue_max_age = "0".into();
    let mut c = config(s);
    c.tuning.socket_mode.backoff_base = Duration::from_millis(10);
    c.tuning.socket_mode.backoff_max = Duration::from_millis(100);
    let bridge = Bridge::start(c).await;
    let readyz = || async {
        let (status, body) = bridge.get("/readyz").await;
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        )
    };
    // Waits until `n` connections are open, then checks the whole answer.
    let ready_with_open = async |n: u64| {
        wait_until(
            &format!("{n} Socket Mode connections are open"),
            WAIT,
            async || readyz().await.1["socket_mode"]["connections_open"] == n,
        )
        .await;
        assert_eq!(
            readyz().await,
            (
                200,
                json!({"status": "ready", "reason": "ok", "socket_mode": {"connections_open": n, "ever_connected": true}})
            )
        );
    };
    ready_with_open(2).await;

    // Every connection goes, and Slack will not hand out new ones for now: DMs still go
    // out, so the bridge stays in service and says what is missing.
    slack.always(
        "apps.connections.open",
        Some(Canned::error("internal_error")),
    );
    socket.drop_all();
    ready_with_open(0).await;
    bridge
        .assert_metrics(&["coder_slack_bridge_socket_mode_connections_open 0"])
        .await;
    let (status, _, answer) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!((status, &answer["status"]), (200, &json!("delivered")));

    slack.always("apps.connections.open", None);
    wait_until("the metrics show a reconnect", WAIT, async || {
        let metrics = bridge.get("/metrics").await.1;
        metrics.contains("coder_slack_bridge_socket_mode_connections_open 2")
            && !metrics.contains("coder_slack_bridge_socket_mode_reconnects_total 0")
    })
    .await;
    assert_eq!(readyz().await.1["socket_mode"]["connections_open"], 2);
    bridge.stop().await;
}

#[tokio::test]
async fn with_store_and_forward_off_readiness_waits_for_a_verified_bot_token() {
    let slack = FakeSlack::start().await;
    slack.revoke_token();
    let mut s = settings(&slack);
    s.queue_max_age = "0".into();
    let bridge = Bridge::start(config(s)).await;
    slack
        .wait_for("auth.test", |calls| {
            calls.iter().any(|c| c.method == "auth.test")
        })
        .await;
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("SLACK_BOT_TOKEN"), "{body}");
    bridge.stop().await;
}

#[tokio::test]
async fn metrics_are_exported_after_traffic() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let bridge = Bridge::start(config(settings(&slack))).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(1).await;
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    bridge.post(&body).await;
    bridge.post(&body).await;
    bridge.post(&json!({"msg_id": "x"})).await;
    bridge
        .assert_metrics(&[
            "coder_slack_bridge_webhooks_total{outcome=\"delivered\"} 1",
            "coder_slack_bridge_webhooks_total{outcome=\"duplicate\"} 1",
            "coder_slack_bridge_webhooks_total{outcome=\"rejected\"} 1",
            "coder_slack_bridge_delivery_seconds_count 3",
            "coder_slack_bridge_slack_api_calls_total{method=\"chat.postMessage\",result=\"ok\"} 1",
            "coder_slack_bridge_slack_api_calls_total{method=\"auth.test\",result=\"ok\"} 1",
            "coder_slack_bridge_directory_users 1",
            "coder_slack_bridge_directory_lookups_total{result=\"hit\"} 1",
            "coder_slack_bridge_socket_mode_connections_open 0",
            "# EOF",
        ])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn sigterm_finishes_the_delivery_in_flight_then_exits_0() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.delay("chat.postMessage", Duration::from_millis(800));
    let (mut child, addr, log) = spawn_bridge(bridge_command(&slack)).await;
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    let request = tokio::spawn(async move {
        let response = http_client()
            .post(format!("http://{addr}/v1/webhook"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook");
        (
            response.status().as_u16(),
            response.bytes().await.unwrap_or_default(),
        )
    });
    slack
        .wait_for("the post to reach Slack", |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    sigterm(&child).await;
    let (status, answer) = request.await.expect("request task");
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["status"], "delivered");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(exit.success(), "exit status {exit:?}");
    let log = tokio::time::timeout(DEADLINE, log)
        .await
        .expect("the log ends")
        .expect("log");
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_with_slack_hanging_still_exits_within_25_seconds() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    // Every post hangs past the 10 s call timeout; the budget would allow retries for 55 s.
    slack.delay("chat.postMessage", Duration::from_secs(120));
    let mut command = bridge_command(&slack);
    command.env("DELIVERY_TIMEOUT", "55s");
    let (mut child, addr, _log) = spawn_bridge(command).await;
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    let _request = tokio::spawn(async move {
        http_client()
            .post(format!("http://{addr}/v1/webhook"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
    });
    slack
        .wait_for("the post to reach Slack", |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    let started = std::time::Instant::now();
    sigterm(&child).await;
    let exit = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("exits (well within 40 s)")
        .expect("status");
    let took = started.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(took < Duration::from_secs(25), "stopped after {took:?}");
}

async fn run_check(
    slack: &FakeSlack,
    socket: &FakeSocketServer,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    slack.set_socket_url(&socket.url());
    let mut command = bridge_command(slack);
    command
        .arg("check")
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        // On loopback (and closed): `check` reads CODER_URL's buildinfo, and a test never
        // leaves this machine, not even for a DNS lookup.
        .env("CODER_URL", "http://127.0.0.1:1")
        .envs(env.iter().copied());
    run_for_text(&mut command).await
}

#[tokio::test]
async fn check_passes_against_a_healthy_slack() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let (ok, out, err) = run_check(&slack, &socket, &[]).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("ok    SLACK_BOT_TOKEN")
            && out.contains("ok    bot scopes")
            && out.contains("Socket Mode connected"),
        "{out}"
    );
    assert!(out.contains("all checks passed"));
    assert_eq!(socket.accepted(), 1, "the websocket was really opened");
    // The default store: `check` says what `serve` would do, and creates nothing.
    assert!(
        out.contains(&format!("ok    DATABASE_URL: sqlite://coder-slack-bridge.db (sqlite: no database yet; serve creates it at schema version {SCHEMA_VERSION})")),
        "{out}"
    );
    // Store and forward, on by default, with what happens to what waits too long.
    assert!(
        out.contains("ok    store and forward: on (QUEUE_MAX_AGE 24h, QUEUE_MAX_DEPTH 100000): ")
            && out.contains("older than QUEUE_MAX_AGE are dropped, with an error log (set FALLBACK_CHANNEL to keep them)"),
        "{out}"
    );
}

#[tokio::test]
async fn check_warns_that_store_and_forward_is_off_and_what_that_risks() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let env = [("QUEUE_MAX_AGE", "0"), ("QUEUE_MAX_DEPTH", "50")];
    let (ok, out, err) = run_check(&slack, &socket, &env).await;
    assert!(
        ok,
        "a warning, not a failure:\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains("warn  store and forward: off (QUEUE_MAX_AGE=0): a Slack outage longer than Coder's retries (about 20 minutes) loses notifications"),
        "{out}"
    );
    // Set otherwise, it says how.
    let env = [("QUEUE_MAX_AGE", "2h"), ("QUEUE_MAX_DEPTH", "50")];
    let (ok, out, err) = run_check(&slack, &socket, &env).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("ok    store and forward: on (QUEUE_MAX_AGE 2h, QUEUE_MAX_DEPTH 50)"),
        "{out}"
    );
}

#[tokio::test]
async fn check_reports_what_serve_would_do_with_an_old_database_and_leaves_it_unchanged() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let dir = fresh_dir("check-old-db");
    let path = dir.join("state.db");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(include_str!("../../fixtures/schema/sqlite-v1.sql"))
        .expect("a version 1 database");
    drop(conn);
    let before = std::fs::read(&path).expect("read");
    let url = format!("sqlite://{}", path.display());
    let (ok, out, err) = run_check(&slack, &socket, &[("DATABASE_URL", &url)]).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("ok    DATABASE_URL: {url} (sqlite, schema version 1: serve migrates it to {SCHEMA_VERSION}, only adding")),
        "{out}"
    );
    // Not migrated, not written: the file is byte for byte what it was, and alone.
    assert_eq!(std::fs::read(&path).expect("read"), before);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(files, [std::ffi::OsString::from("state.db")]);
}

#[tokio::test]
async fn check_fails_naming_listen_addr_when_another_program_holds_it() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    // Another program on the port: it accepts connections but never answers.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let (ok, out, err) = run_check(&slack, &socket, &[("LISTEN_ADDR", &addr)]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  LISTEN_ADDR: cannot listen on {addr}: address already in use"
        )),
        "{out}"
    );
    assert!(!out.contains("all checks passed"), "{out}");
    assert!(
        err.contains(&format!("LISTEN_ADDR {addr} cannot be bound")),
        "{err}"
    );

    // Freed, the same address passes (and is released again: it can be bound after check).
    drop(taken);
    let (ok, out, err) = run_check(&slack, &socket, &[("LISTEN_ADDR", &addr)]).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("ok    LISTEN_ADDR: {addr} is free")),
        "{out}"
    );
    std::net::TcpListener::bind(&addr).expect("check let the address go");
}

#[tokio::test]
async fn check_beside_a_running_bridge_warns_that_its_address_is_taken() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let (_bridge, addr, _log) = spawn_bridge(bridge_command(&slack)).await;
    let (ok, out, err) = run_check(&slack, &socket, &[("LISTEN_ADDR", &addr)]).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "warn  LISTEN_ADDR: {addr} is taken by a server that answers /healthz as a bridge does"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn an_unusable_store_is_named_by_check_and_refused_by_serve() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let nowhere = [("DATABASE_URL", "sqlite:///nonexistent-folder/state.db")];
    let (ok, out, err) = run_check(&slack, &socket, &nowhere).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "FAIL  DATABASE_URL: the store (sqlite:///nonexistent-folder/state.db) failed to read its schema"
        ) && out.contains("does the folder exist"),
        "{out}"
    );
    assert!(err.contains("DATABASE_URL"), "{err}");

    let output = run_to_end(bridge_command(&slack).envs(nowhere)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL: the store"), "{stderr}");

    // A PostgreSQL server that is not there: the setting, the place (no password), the cause.
    let closed = closed_port();
    let url = format!(
        "postgres://bridge:hunter2@127.0.0.1:{}/bridge",
        closed.port()
    );
    let (ok, out, _) = run_check(&slack, &socket, &[("DATABASE_URL", &url)]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  DATABASE_URL: the store (postgres://***@127.0.0.1")
            && out.contains("failed to connect"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

#[tokio::test]
async fn check_fails_naming_the_setting_for_a_revoked_token_or_missing_scope() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    slack.revoke_token();
    let (ok, out, err) = run_check(&slack, &socket, &[]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  SLACK_BOT_TOKEN") && out.contains("token_revoked"),
        "{out}"
    );
    assert!(err.contains("SLACK_BOT_TOKEN"), "{err}");

    let slack = FakeSlack::start().await;
    slack.set_scopes("chat:write,users:read");
    let (ok, out, err) = run_check(&slack, &socket, &[]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("users:read.email"), "{err}");
}

#[tokio::test]
async fn check_warns_without_the_read_back_scopes() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    slack.set_scopes("chat:write,users:read,users:read.email");
    let (ok, out, _) = run_check(&slack, &socket, &[]).await;
    assert!(ok, "the bridge works without them: {out}");
    assert!(
        out.contains("warn  bot scopes: missing im:write, im:history"),
        "{out}"
    );
}

#[tokio::test]
async fn check_verifies_the_app_can_post_in_the_fallback_channel() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocketServer::start().await;
    let (ok, out, err) = run_check(&slack, &socket, &[("FALLBACK_CHANNEL", "C0OPS1234")]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  FALLBACK_CHANNEL") && out.contains("not_in_channel"),
        "{out}"
    );
    assert!(err.contains("invite the app"), "{err}");

    slack.join_channel("C0OPS1234");
    let (ok, out, _) = run_check(&slack, &socket, &[("FALLBACK_CHANNEL", "C0OPS1234")]).await;
    assert!(ok, "{out}");
    assert!(out.contains("ok    FALLBACK_CHANNEL"), "{out}");
    // And it is where what waited past QUEUE_MAX_AGE goes.
    assert!(
        out.contains("older than QUEUE_MAX_AGE go to FALLBACK_CHANNEL C0OPS1234"),
        "{out}"
    );
    // Checked without posting: the scheduled message was deleted again.
    let scheduled = slack.calls_to("chat.scheduleMessage");
    let deleted = slack.calls_to("chat.deleteScheduledMessage");
    assert_eq!((scheduled.len(), deleted.len()), (2, 1));
    assert_eq!(deleted[0].args["channel"], "C0OPS1234");
    assert!(slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn send_test_delivers_a_sample_through_the_full_path() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut command = bridge_command(&slack);
    command.args(["send-test", "--email", "bobby@coder.com"]);
    let output = run_to_end(&mut command).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("delivered to bobby@coder.com"), "{stdout}");
    assert_eq!(slack.calls_to("users.lookupByEmail").len(), 1);
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].args["channel"], "UBOBBY");
    assert_eq!(
        posts[0].args["blocks"][0]["text"]["text"],
        "A test notification"
    );

    let output =
        run_to_end(bridge_command(&slack).args(["send-test", "--email", "nobody@coder.com"])).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("users_not_found"));
}

#[tokio::test]
async fn send_test_is_made_for_its_recipient_and_links_to_coder_url() {
    let slack = FakeSlack::start().await;
    slack.add_user("alice.smith@coder.com", "UALICE");
    let mut command = bridge_command(&slack);
    command.env("CODER_URL", "https://coder.acme.test").args([
        "send-test",
        "--email",
        "alice.smith@coder.com",
    ]);
    let (ok, _, stderr) = run_for_text(&mut command).await;
    assert!(ok, "{stderr}");
    let post = slack.calls_to("chat.postMessage")[0].args.clone();
    assert_eq!(post["channel"], "UALICE");
    assert_eq!(
        post["blocks"][1]["text"]["text"],
        "Hi alice.smith,\n\nThis is a test notification from coder-slack-bridge: Coder's \
         notifications to alice.smith@coder.com reach you here."
    );
    assert_eq!(
        post["blocks"][2]["elements"][0]["text"]["text"],
        "View notification settings"
    );
    assert_eq!(
        post["blocks"][2]["elements"][0]["url"],
        "https://coder.acme.test/settings/notifications"
    );
    let sent = post.to_string();
    assert!(
        !sent.contains("Bobby") && !sent.contains("test.com"),
        "{sent}"
    );

    // Without CODER_URL there is nowhere to link to: no button.
    let mut command = bridge_command(&slack);
    command
        .env_remove("CODER_URL")
        .args(["send-test", "--email", "alice.smith@coder.com"]);
    let (ok, _, stderr) = run_for_text(&mut command).await;
    assert!(ok, "{stderr}");
    let post = slack.calls_to("chat.postMessage")[1].args.clone();
    let blocks = post["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2, "header and body only: {blocks:#?}");
    assert!(!post.to_string().contains("http"), "{post}");
}

#[tokio::test]
async fn idle_half_open_and_slow_clients_do_not_block_real_requests() {
    use tokio::io::AsyncWriteExt;
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut c = config(settings(&slack));
    c.tuning.header_read_timeout = Duration::from_millis(300);
    c.tuning.body_read_timeout = Duration::from_millis(300);
    let bridge = Bridge::start(c).await;

    // 150 idle connections and 150 that stop halfway through their headers.
    let mut held = Vec::new();
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(bridge.app_addr)
            .await
            .expect("connect");
        if i % 2 == 1 {
            stream
                .write_all(b"POST /v1/webhook HTTP/1.1\r\nHost: bridge\r\n")
                .await
                .expect("write");
        }
        held.push(stream);
    }
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    bridge.deliver(&body).await;

    // The server hangs up on a client that never finishes its headers.
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), held[1].read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "half-open connection was not closed"
    );
    if let Ok(Ok(n)) = read {
        let rest = tokio::time::timeout(Duration::from_secs(5), async {
            let mut total = n;
            loop {
                match held[1].read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(more) => total += more,
                }
            }
        })
        .await;
        assert!(rest.is_ok(), "half-open connection stayed open");
    }

    // A body that trickles in loses its slot with 408.
    let mut slow = tokio::net::TcpStream::connect(bridge.app_addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /v1/webhook HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"msg").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(held);
    bridge.stop().await;
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let slack = FakeSlack::start().await;
    let mut command = bridge_command(&slack);
    command
        .env("LOG_FORMAT", "json")
        .env("DRY_RUN", "1")
        .env_remove("SLACK_BOT_TOKEN");
    let mut child = command.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        let record: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["timestamp"].is_string(),
            "{record}"
        );
        let listening = record["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("listening");
        seen.push(record);
        if listening {
            break;
        }
    }
    assert!(
        seen.iter().any(|r| r["local_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))),
        "{seen:?}"
    );
    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn dot_env_is_read_from_the_working_folder_only() {
    // A parent's `.env` that would break the run (LOG_FORMAT) and show itself (CODER_URL).
    let parent = fresh_dir("dotenv-parent");
    std::fs::write(
        parent.join(".env"),
        "CODER_URL=https://parent.example.com\nLOG_FORMAT=yaml\nLISTEN_ADDR=0.0.0.0:6000\n",
    )
    .expect("write the parent's .env");
    let here = parent.join("work");
    std::fs::create_dir_all(&here).expect("working folder");
    let sample = sample_path("TemplateChangelog.json.golden");
    let preview = || {
        let mut command = bridge_binary(&here);
        command.arg("preview").arg(&sample);
        command
    };

    let output = run_to_end(&mut preview()).await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("parent.example.com"), "{stdout}");

    // The working folder's own `.env` is read; the environment wins over it.
    std::fs::write(here.join(".env"), "CODER_URL=https://here.example.com\n").expect("write .env");
    let output = run_to_end(&mut preview()).await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("https://here.example.com/changelog/2.30"),
        "{stdout}"
    );
    let output = run_to_end(preview().env("CODER_URL", "https://env.example.com")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("https://env.example.com/changelog/2.30"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_malformed_dot_env_line_is_named_but_not_shown() {
    let token_tail = "FAKEtoken0secret0tail";
    let cases = [
        // An unclosed quote, as the audit found.
        format!(
            "CODER_URL=https://x.example.com\n# the bot\nSLACK_BOT_TOKEN=\"xoxb-1-2-{token_tail}\n"
        ),
        // A value with a space, after a quoted value that spans two lines.
        format!("NOTE=\"two\nlines\"\n\nexport SLACK_BOT_TOKEN=xoxb-1-2 {token_tail}\n"),
    ];
    for (content, line) in cases.iter().zip([3, 4]) {
        let dir = fresh_dir("dotenv-malformed");
        std::fs::write(dir.join(".env"), content).expect("write .env");
        let (ok, _, stderr) = run_for_text(&mut bridge_binary(&dir)).await;
        assert!(!ok);
        assert!(
            stderr.contains(&format!(".env line {line} (SLACK_BOT_TOKEN)")),
            "{stderr}"
        );
        assert!(
            !stderr.contains(token_tail) && !stderr.contains("xoxb-1"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn placeholders_are_refused_at_start_up_naming_the_setting() {
    // The shipped `.env.example`, copied as is.
    let dir = fresh_dir("placeholders");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
        dir.join(".env"),
    )
    .expect("copy .env.example");
    let (ok, _, stderr) = run_for_text(&mut bridge_binary(&dir)).await;
    assert!(!ok);
    assert!(
        stderr.contains("SLACK_BOT_TOKEN is still the placeholder from .env.example"),
        "{stderr}"
    );

    let slack = FakeSlack::start().await;
    for (name, value) in [
        ("SLACK_BOT_TOKEN", "xoxb-REPLACE-ME"),
        ("SLACK_APP_TOKEN", "xapp-..."),
        ("SLACK_APP_TOKEN", "xapp-<your app token>"),
        ("WEBHOOK_SECRET", "CHANGE-ME"),
        ("WEBHOOK_SECRET", "<your webhook secret>"),
        ("CODER_URL", "https://coder.example.com"),
    ] {
        let (ok, _, stderr) = run_for_text(bridge_command(&slack).env(name, value)).await;
        assert!(!ok, "{name}={value} was accepted");
        assert!(
            stderr.contains(&format!("{name} is still")) && !stderr.contains(value),
            "{name}={value}: {stderr}"
        );
    }
}

#[tokio::test]
async fn help_names_each_variable_without_a_value() {
    let slack = FakeSlack::start().await;
    let mut command = bridge_command(&slack);
    command
        .arg("--help")
        .env("WEBHOOK_SECRET", "Zq9-webhook-secret-value");
    let (ok, out, err) = run_for_text(&mut command).await;
    assert!(ok, "{err}");
    // Set (LISTEN_ADDR, the tokens) or not (PORT), each shows as its name alone.
    for name in [
        "LISTEN_ADDR",
        "PORT",
        "SLACK_BOT_TOKEN",
        "WEBHOOK_SECRET",
        "DATABASE_URL",
    ] {
        assert!(out.contains(&format!("[env: {name}]")), "{name}: {out}");
    }
    assert!(!out.contains("=]") && !out.contains("127.0.0.1:0"), "{out}");
    assert!(!out.contains("Zq9") && !out.contains(BOT_TOKEN), "{out}");
}

#[tokio::test]
async fn a_short_webhook_secret_is_refused_at_start_up() {
    let slack = FakeSlack::start().await;
    let (ok, _, stderr) =
        run_for_text(bridge_command(&slack).env("WEBHOOK_SECRET", "Zq9-short")).await;
    assert!(!ok);
    assert!(
        stderr.contains("WEBHOOK_SECRET is too short: use at least 16 characters"),
        "{stderr}"
    );
    assert!(!stderr.contains("Zq9"), "{stderr}");
}

#[tokio::test]
async fn a_webhook_secret_with_a_trailing_newline_matches_without_it() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut s = settings(&slack);
    // As `kubectl create secret --from-file` stores it.
    s.webhook_secret = Some("s3cret-0123456789\n".into());
    let bridge = Bridge::start(config(s)).await;
    let body = notification(
        sample("TemplateTestNotification.json.golden"),
        &fresh_id(),
        "bobby@coder.com",
    );
    let response = bridge
        .client
        .post(bridge.url("/v1/webhook"))
        .bearer_auth("s3cret-0123456789")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    bridge.stop().await;
}

#[tokio::test]
async fn a_fallback_channel_name_is_refused_asking_for_its_id() {
    let slack = FakeSlack::start().await;
    let (ok, _, stderr) =
        run_for_text(bridge_command(&slack).env("FALLBACK_CHANNEL", "#general")).await;
    assert!(!ok);
    assert!(
        stderr.contains("FALLBACK_CHANNEL must be a channel ID") && stderr.contains("#general"),
        "{stderr}"
    );
    // In `.env`, `#general` would be a comment and the setting silently empty.
    let dir = fresh_dir("fallback-name");
    std::fs::write(dir.join(".env"), "FALLBACK_CHANNEL=#general\n").expect("write .env");
    let mut command = bridge_binary(&dir);
    command
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_API_URL", slack.api_url())
        .env("LISTEN_ADDR", "127.0.0.1:0");
    let (ok, _, stderr) = run_for_text(&mut command).await;
    assert!(!ok);
    assert!(
        stderr.contains(".env line 1 (FALLBACK_CHANNEL)") && stderr.contains("channel ID"),
        "{stderr}"
    );
}

#[tokio::test]
async fn directory_refresh_out_of_bounds_is_refused_not_a_panic() {
    let slack = FakeSlack::start().await;
    for value in ["100000h", "18446744073709551615h", "30s"] {
        let (ok, _, stderr) =
            run_for_text(bridge_command(&slack).env("DIRECTORY_REFRESH", value)).await;
        assert!(!ok, "DIRECTORY_REFRESH={value}");
        assert!(stderr.contains("error: DIRECTORY_REFRESH"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_value_clap_refuses_names_the_variable_and_the_flag() {
    let slack = FakeSlack::start().await;
    for (name, value, expected) in [
        ("PORT", "abc", "PORT (--port): invalid value \"abc\""),
        (
            "LOG_FORMAT",
            "yaml",
            "LOG_FORMAT (--log-format): invalid value \"yaml\": use one of text, json",
        ),
    ] {
        let (ok, _, stderr) = run_for_text(bridge_command(&slack).env(name, value)).await;
        assert!(!ok, "{name}={value}");
        assert!(stderr.contains(expected), "{name}={value}: {stderr}");
    }
}

#[tokio::test]
async fn send_test_failures_say_nothing_was_sent_and_what_to_do() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    slack.always("chat.postMessage", Some(Canned::error("missing_scope")));
    let (ok, _, stderr) =
        run_for_text(bridge_command(&slack).args(["send-test", "--email", "bobby@coder.com"]))
            .await;
    assert!(!ok);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("send-test failed")
            && error.contains("missing_scope")
            && error.contains("nothing was sent")
            && error.contains("check")
            && !error.contains("retry"),
        "{error}"
    );

    let output =
        run_to_end(bridge_command(&slack).args(["send-test", "--email", "nobody@coder.com"])).await;
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("send-test failed") && stderr.contains("nothing was sent"),
        "{stderr}"
    );
}

#[tokio::test]
async fn refused_webhooks_are_logged_with_reason_and_address_but_no_secret() {
    let slack = FakeSlack::start().await;
    let mut command = bridge_command(&slack);
    command.env("WEBHOOK_SECRET", SECRET);
    let (child, addr, log) = spawn_bridge(command).await;
    let client = http_client();
    let post = |auth: String, content_type: &'static str, body: &'static str| {
        client
            .post(format!("http://{addr}/v1/webhook"))
            .header("authorization", auth)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let wrong = format!("Bearer {SECRET}-typo");
    let right = format!("Bearer {SECRET}");
    for _ in 0..3 {
        let response = post(wrong.clone(), "application/json", "{}")
            .await
            .expect("send");
        assert_eq!(response.status(), 401);
    }
    let response = post(right.clone(), "text/plain", "{}").await.expect("send");
    assert_eq!(response.status(), 415);
    let response = post(right, "application/json", "{\"msg_id\": 7")
        .await
        .expect("send");
    assert_eq!(response.status(), 400);

    sigterm(&child).await;
    let log = tokio::time::timeout(DEADLINE, log)
        .await
        .expect("exits")
        .expect("log");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("webhook rejected"))
        .collect();
    let unauthorized: Vec<&&str> = warnings
        .iter()
        .filter(|l| l.contains("wrong or missing webhook secret"))
        .collect();
    assert_eq!(unauthorized.len(), 1, "at most one per 10 s: {log}");
    assert!(unauthorized[0].contains("status=401"), "{log}");
    for reason in [
        "Content-Type is not application/json: it is text/plain",
        "body is not a Coder notification: body is not valid JSON",
    ] {
        assert!(
            warnings.iter().any(|l| l.contains(reason)),
            "{reason}: {log}"
        );
    }
    for line in &warnings {
        assert!(line.contains("remote=127.0.0.1:"), "{line}");
    }
    assert!(!log.contains(SECRET), "{log}");
}
