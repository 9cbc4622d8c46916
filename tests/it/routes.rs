//! `ROUTES_FILE` as an operator meets it, through the real binary: a bad file stops `serve`
//! before it listens, naming the line; `#name`s are looked up in Slack once at start-up
//! (every page of `conversations.list`), and one that names no channel the app can see stops
//! it; `check` says, route by route, whether the app can post in each channel.

use crate::support::*;
use serde_json::json;
use std::path::PathBuf;

/// `text` as a routes file in a folder of its own; its path.
fn routes_file(text: &str) -> PathBuf {
    let path = fresh_dir("routes").join("routes.toml");
    std::fs::write(&path, text).expect("write the routes file");
    path
}

/// The log lines of a `serve` that stopped, or failed to start.
fn listened(stderr: &str) -> bool {
    stderr.contains("listening for Coder's webhook")
}

#[tokio::test]
async fn a_bad_routes_file_stops_serve_before_it_listens_naming_the_line() {
    let slack = FakeSlack::start().await;
    let path = routes_file(
        "[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"C0123ABCDE\"\n\n[[route]]\nnotifications = [\"@admins\"]\nchannel = \"#ops\"\n",
    );
    let (ok, _, err) = run_for_text(bridge_command(&slack).env("ROUTES_FILE", &path)).await;
    assert!(!ok, "{err}");
    let expected = format!("error: ROUTES_FILE {}, line 6: unknown group \"@admins\": the groups are @admin (every copy of a notification Coder sends to all admins) and @all (every notification)", path.display());
    assert!(err.contains(&expected), "{err}");
    assert!(!listened(&err), "{err}");
    // Told without Slack.
    assert!(slack.calls().is_empty(), "{:?}", slack.calls());

    let missing = path.with_file_name("nowhere.toml");
    let (ok, _, err) = run_for_text(bridge_command(&slack).env("ROUTES_FILE", &missing)).await;
    assert!(!ok, "{err}");
    let expected = format!("error: ROUTES_FILE {}: cannot read it: ", missing.display());
    assert!(err.contains(&expected), "{err}");
    assert!(!listened(&err), "{err}");
}

/// A workspace whose channels span three `conversations.list` pages of two: general and
/// random, ops-alerts and the private ops-private the app is in; then the rest. A private
/// channel the app is not in and an archived one are never listed.
fn workspace_channels(slack: &FakeSlack) {
    slack.add_channel(FakeChannel::public("C0GENERAL1", "general"));
    slack.add_channel(FakeChannel::private("G0HIDDEN01", "hidden"));
    slack.add_channel(FakeChannel::public("C0RANDOM01", "random"));
    slack.add_channel(FakeChannel::public("C0OLDOPS01", "old-ops").archived());
    slack.add_channel(FakeChannel::public("C0ALERTS01", "ops-alerts").member());
    slack.add_channel(FakeChannel::private("G0OPSPRIV1", "ops-private").member());
    slack.add_channel(FakeChannel::public("C0LAST0001", "zz-last"));
    slack.set_channel_page_size(2);
}

#[tokio::test]
async fn names_are_looked_up_once_at_start_up_across_pages_of_conversations_list() {
    let slack = FakeSlack::start().await;
    workspace_channels(&slack);
    let path = routes_file(
        "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#Ops-Alerts\"\n\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"#ops-private\"\ndm = true\ncollapse = \"0\"\n\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\n",
    );
    let mut command = bridge_command(&slack);
    command.env("ROUTES_FILE", &path);
    let (mut child, _addr, log) = spawn_bridge(command).await;
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(DEADLINE, child.wait()).await;
    let log = tokio::time::timeout(DEADLINE, log)
        .await
        .expect("the log ends")
        .expect("the log");
    let file = path.display();
    for line in [
        format!("route file={file} route=route 1 (line 1) channel=#Ops-Alerts (C0ALERTS01) dm=false collapse=10m"),
        format!("route file={file} route=route 2 (line 5) channel=#ops-private (G0OPSPRIV1) dm=true collapse=0s"),
        format!("route file={file} route=route 3 (line 11) channel=C0123ABCDE dm=false collapse=10m"),
    ] {
        assert!(log.contains(&line), "{line} not in:\n{log}");
    }
    // Every page until both names were found, each asking for what the app can see.
    let pages: Vec<_> = slack
        .calls_to("conversations.list")
        .into_iter()
        .map(|c| c.args)
        .collect();
    let page = |cursor: Option<&str>| {
        let mut args = json!({"types": "public_channel,private_channel", "exclude_archived": "true", "limit": "1000"});
        if let Some(cursor) = cursor {
            args["cursor"] = cursor.into();
        }
        args
    };
    assert_eq!(pages, [page(None), page(Some("chan-2"))]);
}

#[tokio::test]
async fn a_name_no_channel_the_app_can_see_has_stops_serve_naming_the_line() {
    let slack = FakeSlack::start().await;
    workspace_channels(&slack);
    for (name, line) in [("#hidden", 4), ("#old-ops", 4), ("#nowhere", 4)] {
        let path = routes_file(&format!(
            "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#general\"\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"{name}\"\n"
        ));
        let (ok, _, err) = run_for_text(bridge_command(&slack).env("ROUTES_FILE", &path)).await;
        assert!(!ok, "{err}");
        let expected = format!("error: ROUTES_FILE {}, line {line}: {name} names no channel the app can see: no public channel has that name, and no private one the app was invited to (archived channels do not count); check the name, or write the channel's ID", path.display());
        assert!(err.contains(&expected), "{name}: {err}");
        assert!(!listened(&err), "{err}");
    }
    // Without the scope to list private channels, start-up says which scope to add.
    slack.set_scopes("chat:write,users:read,users:read.email,channels:read");
    let path = routes_file("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#general\"\n");
    let (ok, _, err) = run_for_text(bridge_command(&slack).env("ROUTES_FILE", &path)).await;
    assert!(!ok, "{err}");
    let expected = format!("error: ROUTES_FILE {}: cannot look its #names up in Slack (conversations.list: missing_scope groups:read): add the bot scope groups:read to the Slack app and reinstall it", path.display());
    assert!(err.contains(&expected), "{err}");
}

#[tokio::test]
async fn a_dry_run_looks_no_name_up() {
    let slack = FakeSlack::start().await;
    let path = routes_file("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#nowhere\"\n");
    let mut command = bridge_command(&slack);
    command.env("ROUTES_FILE", &path).env("DRY_RUN", "true");
    let (mut child, _addr, log) = spawn_bridge(command).await;
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(DEADLINE, child.wait()).await;
    let log = tokio::time::timeout(DEADLINE, log)
        .await
        .expect("the log ends")
        .expect("the log");
    assert!(
        log.contains("the routes' #names are not looked up in Slack")
            && log.contains("channel=#nowhere dm=false"),
        "{log}"
    );
    assert!(slack.calls().is_empty(), "{:?}", slack.calls());
}

/// `check` against `slack`, with `routes` as ROUTES_FILE when given.
async fn check(slack: &FakeSlack, routes: Option<&str>) -> (bool, String, String) {
    let mut command = bridge_command(slack);
    // On loopback (and closed): `check` reads CODER_URL's buildinfo, and a test never leaves
    // this machine.
    command.arg("check").env("CODER_URL", "http://127.0.0.1:1");
    if let Some(text) = routes {
        command.env("ROUTES_FILE", routes_file(text));
    }
    run_for_text(&mut command).await
}

#[tokio::test]
async fn check_passes_when_the_app_can_post_in_every_route_s_channel() {
    let slack = FakeSlack::start().await;
    workspace_channels(&slack);
    slack.set_scopes(&format!("{},chat:write.public", web_api::DEFAULT_SCOPES));
    let (ok, out, err) = check(
        &slack,
        Some("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#ops-alerts\"\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"G0OPSPRIV1\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"#random\"\n"),
    )
    .await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    for line in [
        "ok    ROUTES_FILE route 1 (line 1): #ops-alerts (C0ALERTS01), public: the app is a member and can post",
        "ok    ROUTES_FILE route 2 (line 4): #ops-private (G0OPSPRIV1), private: the app is a member and can post",
        "ok    ROUTES_FILE route 3 (line 7): #random (C0RANDOM01), public: the app is not a member but can post with chat:write.public",
        "all checks passed",
    ] {
        assert!(out.contains(line), "{line} not in:\n{out}");
    }
    assert!(
        !out.contains("FAIL") && !out.contains("warn  ROUTES_FILE"),
        "{out}"
    );
}

#[tokio::test]
async fn check_names_each_route_whose_channel_the_app_cannot_post_in_and_why() {
    let slack = FakeSlack::start().await;
    workspace_channels(&slack);
    let (ok, out, err) = check(
        &slack,
        Some("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#ops-alerts\"\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"G0HIDDEN01\"\n[[route]]\nnotifications = [\"Workspace Out Of Disk\"]\nchannel = \"#random\"\n[[route]]\nnotifications = [\"Workspace Out Of Memory\"]\nchannel = \"C0MISSING1\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"#nowhere\"\n"),
    )
    .await;
    assert!(!ok, "{out}");
    let lines = [
        "ok    ROUTES_FILE route 1 (line 1): #ops-alerts (C0ALERTS01), public: the app is a member and can post",
        "FAIL  ROUTES_FILE route 2 (line 4): no channel the app can see has the ID G0HIDDEN01: there is none, or it is private and the app is not in it: check the ID, or invite the app to the channel",
        "FAIL  ROUTES_FILE route 3 (line 7): #random (C0RANDOM01) is public but the app is not in it and lacks the scope chat:write.public: invite the app to the channel, or add chat:write.public and reinstall the app",
        "FAIL  ROUTES_FILE route 4 (line 10): no channel the app can see has the ID C0MISSING1: there is none, or it is private and the app is not in it: check the ID, or invite the app to the channel",
        "FAIL  ROUTES_FILE route 5 (line 13): #nowhere names no channel the app can see",
    ];
    for line in lines {
        assert!(out.contains(line), "{line} not in:\n{out}");
    }
    assert!(!out.contains("all checks passed"), "{out}");
    for route in [
        "route 2 (line 4)",
        "route 3 (line 7)",
        "route 4 (line 10)",
        "route 5 (line 13)",
    ] {
        assert!(
            err.contains(&format!("ROUTES_FILE {route}: ")),
            "{route}: {err}"
        );
    }
    // Each channel read as Slack would be asked.
    let read: Vec<String> = slack
        .calls_to("conversations.info")
        .into_iter()
        .map(|c| c.args["channel"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        read,
        ["C0ALERTS01", "G0HIDDEN01", "C0RANDOM01", "C0MISSING1"]
    );
}

#[tokio::test]
async fn check_needs_the_route_scopes_only_with_a_routes_file() {
    let slack = FakeSlack::start().await;
    workspace_channels(&slack);
    slack.set_scopes("chat:write,users:read,users:read.email,im:write,im:history");
    let (ok, out, err) = check(&slack, None).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("note  bot scopes: channels:read, groups:read, channels:history, groups:history not granted: needed only with ROUTES_FILE"), "{out}");

    let routes = "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0ALERTS01\"\n";
    let (ok, out, err) = check(&slack, Some(routes)).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  ROUTES_FILE: the bot token lacks channels:read, groups:read: its channels cannot be looked up"), "{out}");
    assert!(
        err.contains(
            "SLACK_BOT_TOKEN lacks the scopes channels:read, groups:read, which ROUTES_FILE needs"
        ),
        "{err}"
    );

    // Read scopes but not the history ones: posts work, a lost answer cannot be checked.
    slack.set_scopes(
        "chat:write,users:read,users:read.email,im:write,im:history,channels:read,groups:read",
    );
    let (ok, out, err) = check(&slack, Some(routes)).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("warn  ROUTES_FILE: bot scopes missing channels:history: a channel post whose answer Slack loses cannot be checked and may be posted twice"), "{out}");
}

#[tokio::test]
async fn preview_says_which_route_a_payload_takes() {
    let path = routes_file(
        "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#coder-admins\"\ndm = true\n",
    );
    let preview = |sample: &str| {
        let mut command = bridge_binary(&fresh_dir("preview"));
        command
            .arg("preview")
            .arg(sample_path(sample))
            .env("ROUTES_FILE", &path);
        command
    };
    let (ok, out, err) = run_for_text(&mut preview("TemplateUserAccountCreated.json.golden")).await;
    assert!(ok, "{err}");
    // The message shown is still the DM's.
    assert!(
        out.contains("\"channel\": \"<Slack user ID of bobby@coder.com>\""),
        "{out}"
    );
    let expected = format!("note: \"User account created\" takes route 1 (line 1) of {}: to #coder-admins and the recipient's DM", path.display());
    assert!(err.contains(&expected), "{err}");
    let (ok, _, err) = run_for_text(&mut preview("TemplateWorkspaceDeleted.json.golden")).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("note: \"Workspace Deleted\" takes no route: to the recipient's DM"),
        "{err}"
    );
}
