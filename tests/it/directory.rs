//! The e-mail → Slack user directory against the fake Slack: what a sweep of `users.list`
//! keeps, what it replaces, when it stops being trusted, and lookups one by one.

use crate::support;

use coder_slack_bridge::slack::directory::Directory;
use coder_slack_bridge::telemetry::Metrics;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const LONG: Duration = Duration::from_secs(3600);

fn directory(slack: &FakeSlack, entry_ttl: Duration) -> Directory {
    Directory::new(Arc::new(slack.bot_api()), LONG, entry_ttl, Metrics::new())
}

async fn resolve(directory: &Directory, email: &str) -> Option<String> {
    directory
        .resolve(email)
        .await
        .expect("resolved")
        .map(|u| u.0)
}

fn lookups(slack: &FakeSlack) -> usize {
    slack.calls_to("users.lookupByEmail").len()
}

/// A `users.list` page as Slack sends it: full profiles, of which the directory reads four
/// fields.
fn page(members: serde_json::Value) -> Canned {
    Canned {
        status: 200,
        headers: vec![],
        body: json!({"ok": true, "members": members, "cache_ts": 1, "response_metadata": {"next_cursor": ""}}),
    }
}

fn member(id: &str, email: &str) -> serde_json::Value {
    json!({
        "id": id, "team_id": "T1", "name": "someone", "deleted": false, "is_bot": false,
        "color": "9f69e7", "tz": "Europe/Paris", "tz_offset": 3600, "is_admin": false,
        "updated": 1_700_000_000, "enterprise_user": {"id": "W1", "teams": ["T1", "T2"]},
        "profile": {
            "email": email, "real_name": "Some One", "display_name": "someone",
            "title": "Engineer \"staff\" — ünïcode", "phone": "", "image_72": "https://x/y.png",
            "fields": {"Xf01": {"value": "a", "alt": ""}}, "status_emoji_display_info": [],
        },
    })
}

#[tokio::test]
async fn a_sweep_keeps_active_people_by_lower_cased_address_and_nobody_else() {
    let slack = FakeSlack::start().await;
    slack.push(
        "users.list",
        page(json!([
            member("U0MIXED01", "Mixed.Case@Corp.Example"),
            // An escaped string cannot be borrowed from the body: read all the same.
            member("U0ESCAPED", "caf\u{e9}\\@corp.example"),
            member("lower-case-id-no-slack-has", "odd@corp.example"),
            {"id": "UDELETED1", "deleted": true, "profile": {"email": "left@corp.example"}},
            {"id": "B0BOT0001", "is_bot": true, "profile": {"email": "robot@corp.example"}},
            {"id": "USLACKBOT", "profile": {"email": "slackbot@corp.example"}},
            {"id": "UNOPROFILE"},
            {"id": "UNULLMAIL", "profile": {"email": null}},
            {"id": "UEMPTYMAIL", "profile": {"email": ""}},
        ])),
    );
    let directory = directory(&slack, LONG);
    assert_eq!(directory.refresh().await.expect("a sweep"), 3);
    assert_eq!(directory.known_users().await, 3);
    for (email, id) in [
        ("mixed.case@corp.example", "U0MIXED01"),
        ("MIXED.CASE@CORP.EXAMPLE", "U0MIXED01"),
        ("café\\@corp.example", "U0ESCAPED"),
        ("Odd@corp.example", "lower-case-id-no-slack-has"),
    ] {
        assert_eq!(
            resolve(&directory, email).await.as_deref(),
            Some(id),
            "{email}"
        );
    }
    assert_eq!(lookups(&slack), 0);
    for email in [
        "left@corp.example",
        "robot@corp.example",
        "slackbot@corp.example",
    ] {
        assert_eq!(resolve(&directory, email).await, None, "{email}");
    }
    assert_eq!(
        lookups(&slack),
        3,
        "each asked once, then remembered as unknown"
    );
    assert_eq!(resolve(&directory, "left@corp.example").await, None);
    assert_eq!(lookups(&slack), 3);
}

#[tokio::test]
async fn a_sweep_follows_the_cursor_and_waits_out_a_rate_limit() {
    let slack = FakeSlack::start().await;
    for i in 0..2500 {
        slack.add_user(&format!("person{i}@corp.example"), &format!("U{i:08}"));
    }
    slack.push("users.list", Canned::rate_limited(1));
    let directory = directory(&slack, LONG);
    let started = Instant::now();
    assert_eq!(directory.refresh().await.expect("a sweep"), 2500);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After kept"
    );
    let pages = slack.calls_to("users.list");
    assert_eq!(
        pages.len(),
        1 + 3,
        "the refused page again, then 1000 a page"
    );
    assert!(pages.iter().all(|p| p.args["limit"] == "1000"));
    assert_eq!(pages[2].args["cursor"], "page-1000");
    assert_eq!(pages[3].args["cursor"], "page-2000");
    assert_eq!(directory.known_users().await, 2500);
    for i in (0..2500).step_by(7) {
        let id = resolve(&directory, &format!("person{i}@corp.example")).await;
        assert_eq!(id, Some(format!("U{i:08}")));
    }
    assert_eq!(lookups(&slack), 0);
}

#[tokio::test]
async fn a_failed_sweep_keeps_the_previous_one_and_names_the_remedy() {
    let slack = FakeSlack::start().await;
    slack.add_user("alice@corp.example", "UALICE");
    let directory = directory(&slack, LONG);
    directory.refresh().await.expect("a sweep");
    slack.add_user("bob@corp.example", "UBOB");
    let refused = Canned {
        status: 200,
        headers: vec![],
        body: json!({"ok": false, "error": "missing_scope", "needed": "users:read.email"}),
    };
    slack.always("users.list", Some(refused));
    let error = directory.refresh().await.expect_err("refused");
    assert_eq!(error.code(), "missing_scope");
    let remedy = error.remedy().unwrap_or_default();
    assert!(remedy.contains("users:read.email"), "{remedy}");
    assert_eq!(
        resolve(&directory, "alice@corp.example").await.as_deref(),
        Some("UALICE")
    );
    assert_eq!(lookups(&slack), 0);
    assert_eq!(directory.known_users().await, 1);
}

#[tokio::test]
async fn a_sweep_older_than_entry_ttl_is_no_longer_trusted() {
    let slack = FakeSlack::start().await;
    slack.add_user("ops@corp.example", "UPREVIOUS");
    let directory = directory(&slack, Duration::from_millis(400));
    directory.refresh().await.expect("a sweep");
    assert_eq!(
        resolve(&directory, "ops@corp.example").await.as_deref(),
        Some("UPREVIOUS")
    );
    assert_eq!(lookups(&slack), 0);
    // The address changes hands in Slack, and every sweep fails from now on.
    slack.add_user("ops@corp.example", "UNEWOWNER");
    slack.always("users.list", Some(Canned::error("invalid_auth")));
    assert!(directory.refresh().await.is_err());
    wait_until("the new owner resolves", WAIT, async || {
        resolve(&directory, "ops@corp.example").await.as_deref() == Some("UNEWOWNER")
    })
    .await;
    assert_eq!(lookups(&slack), 1);
    assert_eq!(
        directory.known_users().await,
        1,
        "the learned address alone"
    );
}

#[tokio::test]
async fn an_address_in_the_sweep_replaces_what_lookups_said() {
    let slack = FakeSlack::start().await;
    slack.add_user("moved@corp.example", "UOLD");
    let directory = directory(&slack, LONG);
    assert_eq!(
        resolve(&directory, "moved@corp.example").await.as_deref(),
        Some("UOLD")
    );
    assert_eq!(resolve(&directory, "late@corp.example").await, None);
    assert_eq!(lookups(&slack), 2);
    assert_eq!(directory.known_users().await, 1);

    slack.add_user("moved@corp.example", "UNEW");
    slack.add_user("late@corp.example", "ULATE");
    assert_eq!(directory.refresh().await.expect("a sweep"), 2);
    assert_eq!(
        resolve(&directory, "moved@corp.example").await.as_deref(),
        Some("UNEW")
    );
    assert_eq!(
        resolve(&directory, "late@corp.example").await.as_deref(),
        Some("ULATE")
    );
    assert_eq!(lookups(&slack), 2);
    assert_eq!(directory.known_users().await, 2, "no learned copy left");
}

#[tokio::test]
async fn an_address_the_sweep_saw_deleted_is_forgotten() {
    let slack = FakeSlack::start().await;
    // Learned while active; the fake's sweep lists gone@example.com as deleted.
    let active = json!({"ok": true, "user": {"id": "UGONE", "team_id": "T1", "name": "gone",
        "deleted": false, "is_bot": false, "profile": {"email": "gone@example.com"}}});
    slack.push(
        "users.lookupByEmail",
        Canned {
            status: 200,
            headers: vec![],
            body: active,
        },
    );
    let directory = directory(&slack, LONG);
    assert_eq!(
        resolve(&directory, "gone@example.com").await.as_deref(),
        Some("UGONE")
    );
    assert_eq!(directory.known_users().await, 1);
    assert_eq!(directory.refresh().await.expect("a sweep"), 0);
    assert_eq!(directory.known_users().await, 0);
    assert_eq!(resolve(&directory, "gone@example.com").await, None);
    assert_eq!(lookups(&slack), 2);
}

#[tokio::test]
async fn concurrent_misses_for_one_address_share_one_lookup() {
    let slack = FakeSlack::start().await;
    slack.add_user("busy@corp.example", "UBUSY");
    slack.delay("users.lookupByEmail", Duration::from_millis(200));
    let directory = directory(&slack, LONG);
    let all = (0..10).map(|i| {
        let email = if i % 2 == 0 {
            "busy@corp.example"
        } else {
            "Busy@Corp.Example"
        };
        resolve(&directory, email)
    });
    let ids = futures_util::future::join_all(all).await;
    assert!(
        ids.iter().all(|id| id.as_deref() == Some("UBUSY")),
        "{ids:?}"
    );
    assert_eq!(lookups(&slack), 1);
}
