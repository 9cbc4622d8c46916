use super::*;
use crate::test_samples::sample_bytes;
use serde_json::json;
use std::collections::HashMap;

fn parse(text: &str) -> Result<Routes, RoutesError> {
    Routes::parse(Path::new("routes.toml"), text)
}

/// The refusal of `text`: its line and its reason.
fn refusal(text: &str) -> (Option<usize>, String) {
    let e = parse(text).expect_err(text);
    assert!(e.to_string().starts_with("ROUTES_FILE routes.toml"), "{e}");
    (e.line(), e.reason().to_owned())
}

fn notification(body: serde_json::Value) -> Notification {
    Notification::parse(body.to_string().as_bytes(), None).expect("a valid notification")
}

/// A notification of `name` to alice, with `labels`.
fn named(name: &str, labels: serde_json::Value) -> Notification {
    notification(json!({
        "msg_id": "m",
        "payload": {
            "notification_name": name,
            "user_email": "alice@example.com",
            "user_username": "alice",
            "labels": labels,
        },
    }))
}

fn sample(name: &str) -> Notification {
    let bytes = sample_bytes()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is gone"))
        .1;
    Notification::parse(&bytes, None).expect("a valid sample")
}

/// The index of the route `notification` takes.
fn taken(routes: &Routes, notification: &Notification) -> Option<usize> {
    routes.route_for(notification).map(|r| r.index)
}

#[test]
fn a_route_is_read_with_its_defaults() {
    let routes = parse(
        "# admins' broadcasts\n[[route]]\nnotifications = [\"@admin\"]\nchannel = \" C0123ABCDE \"\n\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"#Ops-Alerts\"\ndm = true\ncollapse = \"0\"\n",
    )
    .expect("valid");
    let all: Vec<&Route> = routes.iter().collect();
    assert_eq!(all.len(), 2);
    let (first, second) = (all[0], all[1]);
    assert_eq!(
        (first.index, first.line, first.label()),
        (1, 2, "route 1 (line 2)".to_owned())
    );
    assert_eq!(first.channel.id(), Some("C0123ABCDE"));
    assert_eq!(first.channel.to_string(), "C0123ABCDE");
    assert!(!first.dm);
    assert_eq!(first.collapse, DEFAULT_COLLAPSE);
    assert_eq!((second.index, second.line), (2, 6));
    assert_eq!(second.channel.id(), None);
    assert_eq!(second.channel.name().as_deref(), Some("ops-alerts"));
    assert_eq!(second.channel.target(), "#Ops-Alerts");
    assert!(second.dm);
    assert_eq!(second.collapse, Duration::ZERO);
    assert!(!routes.is_resolved());
}

#[test]
fn collapse_takes_a_duration_or_a_number_of_seconds() {
    let with = |collapse: &str| {
        let text = format!("[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\ncollapse = {collapse}\n");
        parse(&text).map(|r| r.routes[0].collapse)
    };
    assert_eq!(with("\"30s\""), Ok(Duration::from_secs(30)));
    assert_eq!(with("\"1h\""), Ok(Duration::from_secs(3600)));
    assert_eq!(with("\"24h\""), Ok(MAX_COLLAPSE));
    assert_eq!(with("0"), Ok(Duration::ZERO));
    assert_eq!(with("90"), Ok(Duration::from_secs(90)));
}

#[test]
fn each_refusal_names_the_line_and_the_reason() {
    let route = |body: &str| {
        format!("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0123ABCDE\"\n\n[[route]]\n{body}\n")
    };
    let cases: Vec<(String, usize, &str)> = vec![
        (route("notifications = [\"@all\"]\nchanel = \"C0123ABCDE\""), 7, "unknown field `chanel`, expected one of `notifications`, `channel`, `dm`, `collapse`"),
        ("[[routes]]\nchannel = \"C0123ABCDE\"\n".into(), 1, "unknown field `routes`, expected `route`"),
        (route("notifications = [\"@all\"]"), 5, "missing field `channel`"),
        (route("notifications = [\"Workspace Deleted\", \"@admins\"]\nchannel = \"C0123ABCDE\""), 6, "unknown group \"@admins\": the groups are @admin (every copy of a notification Coder sends to all admins) and @all (every notification)"),
        (route("notifications = [\n  \"Workspace Deleted\",\n  \"Workspace Delted\",\n]\nchannel = \"C0123ABCDE\""), 8, "\"Workspace Delted\" is not a notification Coder sends (nor a template ID), so the route would never match it: did you mean \"Workspace Deleted\"?"),
        (route("notifications = [\"Lunch Is Served\"]\nchannel = \"C0123ABCDE\""), 6, "\"Lunch Is Served\" is not a notification Coder sends (nor a template ID), so the route would never match it: names are Coder's own, as its notification settings list them (such as \"Workspace Deleted\"), or template IDs"),
        (route("notifications = [\"one-time passcode\"]\nchannel = \"C0123ABCDE\""), 6, "\"one-time passcode\" is the One-Time Passcode, which carries a password-reset code: it goes to its recipient's own DM only, never to a channel, so no route may name it"),
        (route("notifications = [\"62F86A30-2330-4B61-A26D-311FF3B608CF\"]\nchannel = \"C0123ABCDE\""), 6, "\"62F86A30-2330-4B61-A26D-311FF3B608CF\" is the One-Time Passcode, which carries a password-reset code: it goes to its recipient's own DM only, never to a channel, so no route may name it"),
        (route("notifications = []\nchannel = \"C0123ABCDE\""), 6, "notifications is empty: name at least one notification, template ID or group (@admin, @all)"),
        (route("notifications = [\"Workspace Deleted\", \" \"]\nchannel = \"C0123ABCDE\""), 6, "an empty name in notifications"),
        (route("notifications = \"@all\"\nchannel = \"C0123ABCDE\""), 6, "invalid type: string \"@all\", expected a sequence"),
        (route("notifications = [\"@all\"]\nchannel = \"general\""), 7, "channel \"general\" is neither a channel ID (C or G, then capital letters and digits, such as C0123ABCDE: at the bottom of the channel's details in Slack) nor a #name"),
        (route("notifications = [\"@all\"]\nchannel = \"D0123ABCDE\""), 7, "channel \"D0123ABCDE\" is neither a channel ID (C or G, then capital letters and digits, such as C0123ABCDE: at the bottom of the channel's details in Slack) nor a #name"),
        (route("notifications = [\"@all\"]\nchannel = \"#ops alerts\""), 7, "channel \"#ops alerts\" is not a channel name: after the #, up to 80 characters without spaces, as Slack shows it"),
        (route("notifications = [\"@all\"]\nchannel = \"\""), 7, "channel \"\" is neither a channel ID (C or G, then capital letters and digits, such as C0123ABCDE: at the bottom of the channel's details in Slack) nor a #name"),
        (route("notifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\ncollapse = \"ten minutes\""), 8, "collapse \"ten minutes\" is not a duration such as \"10m\", \"30s\" or \"1h\" (\"0\" turns collapsing off)"),
        (route("notifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\ncollapse = \"2d\""), 8, "collapse \"2d\" is longer than 24h: the copies of one event arrive within minutes"),
        (route("notifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\ncollapse = -5"), 8, "collapse \"-5\" is not a duration such as \"10m\", \"30s\" or \"1h\" (\"0\" turns collapsing off)"),
        (route("notifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\ndm = \"yes\""), 8, "invalid type: string \"yes\", expected a boolean"),
        ("[[route]\nnotifications = []\n".into(), 1, "unclosed array table, expected `]`"),
        ("[route]\nnotifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\n".into(), 1, "invalid type: map, expected a sequence: each route is a [[route]] table (two pairs of brackets)"),
    ];
    for (text, line, reason) in cases {
        assert_eq!(refusal(&text), (Some(line), reason.to_owned()), "{text}");
    }
}

#[test]
fn a_file_without_routes_is_refused() {
    for text in ["", "# every route commented out\n# [[route]]\n"] {
        assert_eq!(
            refusal(text),
            (None, "it holds no [[route]] table: add one, or unset ROUTES_FILE to send every notification to its recipient's DM".to_owned())
        );
    }
}

#[test]
fn a_missing_file_is_refused_naming_it() {
    let path = Path::new("/nonexistent/routes.toml");
    let e = Routes::load(path).expect_err("missing");
    assert_eq!(e.line(), None);
    assert!(
        e.to_string()
            .starts_with("ROUTES_FILE /nonexistent/routes.toml: cannot read it: "),
        "{e}"
    );
}

#[test]
fn a_route_the_routes_above_take_everything_of_is_refused_naming_both() {
    let cases = [
        // The same route twice.
        ("[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"workspace deleted\"]\nchannel = \"C0FFFFFFFF\"\n", 4, "route 2 (line 4) can never match: every notification it names is taken by route 1 (line 1) above it (the first route that matches decides)"),
        // Anything after @all.
        ("[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"00000000-0000-0000-0000-00000000abcd\"]\nchannel = \"C0FFFFFFFF\"\n", 4, "route 2 (line 4) can never match: every notification it names is taken by route 1 (line 1) above it (the first route that matches decides)"),
        // A kind always sent to a role, after @admin; by its older name.
        ("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"Report: Workspace Builds Failed For Template\"]\nchannel = \"C0FFFFFFFF\"\n", 4, "route 2 (line 4) can never match: every notification it names is taken by route 1 (line 1) above it (the first route that matches decides)"),
        // Taken by two routes together; the ID and the name are one kind.
        ("[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"Workspace Out Of Disk\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"f047f6a3-5713-40f7-85aa-0394cce9fa3a\", \"Workspace Deleted\"]\nchannel = \"C0FFFFFFFF\"\n", 7, "route 3 (line 7) can never match: every notification it names is taken by route 1 (line 1) and route 2 (line 4) above it (the first route that matches decides)"),
    ];
    for (text, line, reason) in cases {
        assert_eq!(refusal(text), (Some(line), reason.to_owned()), "{text}");
    }
    // Still reachable: the owner's own copy of a workspace created after @admin, and
    // anything else after a route that takes part of it.
    for text in [
        "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"Workspace Created\"]\nchannel = \"C0FFFFFFFF\"\n",
        "[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"Workspace Deleted\", \"Workspace Out Of Disk\"]\nchannel = \"C0FFFFFFFF\"\n",
        "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0FFFFFFFF\"\n",
        "[[route]]\nnotifications = [\"00000000-0000-0000-0000-00000000abcd\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0FFFFFFFF\"\n",
    ] {
        assert!(parse(text).is_ok(), "{text}");
    }
}

#[test]
fn the_shipped_routes_files_and_the_readme_s_example_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "routes.example.toml",
        "deploy/kubernetes/components/routes/routes.toml",
    ] {
        let path = root.join(file);
        let routes = Routes::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!routes.is_empty(), "{file}");
        assert_eq!(routes.path(), path);
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("## Routes")
        .nth(1)
        .expect("README.md has a Routes section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the Routes section shows a routes file");
    let routes = Routes::parse(Path::new("README.md"), example).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(routes.len(), 2);
}

#[test]
fn names_match_in_any_case_and_older_names_and_ids_match_too() {
    let routes = parse("[[route]]\nnotifications = [\"  workspace OUT of memory \"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"414D9331-C1FC-4761-B40C-D1F4702279EB\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"00000000-0000-0000-0000-00000000abcd\"]\nchannel = \"C0123ABCDE\"\n").expect("valid");
    let workspace = json!({"workspace": "dev"});
    // The kind's older name, by which older Coders send it.
    let older = named("Workspace Reached Resource Threshold", workspace.clone());
    assert_eq!(taken(&routes, &older), Some(1));
    assert_eq!(
        taken(&routes, &named("Workspace Out Of Memory", workspace)),
        Some(1)
    );
    // A name route matches a notification sent with the kind's ID and another name.
    let by_id = notification(json!({"msg_id": "m", "payload": {
        "notification_name": "Renamed Some Day",
        "notification_template_id": "a9d027b4-ac49-4fb1-9f6d-45af15f64e7a",
        "user_email": "a@b.c"}}));
    assert_eq!(taken(&routes, &by_id), Some(1));
    assert_eq!(
        taken(&routes, &named("Prebuild Failure Limit Reached", json!({}))),
        Some(2)
    );
    let custom = notification(json!({"msg_id": "m", "payload": {
        "notification_name": "Our Own",
        "notification_template_id": "00000000-0000-0000-0000-00000000ABCD",
        "user_email": "a@b.c"}}));
    assert_eq!(taken(&routes, &custom), Some(3));
    assert_eq!(
        taken(&routes, &named("Workspace Deleted", json!({"name": "dev"}))),
        None
    );
}

#[test]
fn admin_takes_every_role_broadcast_and_the_admins_copies_not_the_owners() {
    let routes = parse("[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0123ABCDE\"\n")
        .expect("valid");
    for (name, bytes) in sample_bytes() {
        let n = Notification::parse(&bytes, None).expect("sample");
        let expected = crate::kinds::is_role_broadcast(&n).then_some(1);
        assert_eq!(taken(&routes, &n), expected, "{name}");
    }
    // A template admin's copy of mrbobby's failed build; the owner's own copy is not one.
    let admins = sample("TemplateWorkspaceManualBuildFailed.json.golden");
    assert_eq!(taken(&routes, &admins), Some(1));
    let owners = named(
        "Workspace Manual Build Failed",
        json!({"name": "dev", "workspace_owner_username": "Alice"}),
    );
    assert_eq!(taken(&routes, &owners), None);
    for name in [
        "User account created",
        "Template Deleted",
        "Missing AI Model Prices",
    ] {
        assert_eq!(taken(&routes, &named(name, json!({}))), Some(1), "{name}");
    }
    for name in [
        "Workspace Deleted",
        "Your account has been suspended",
        "AI Budget Warning",
    ] {
        assert_eq!(
            taken(&routes, &named(name, json!({"name": "dev"}))),
            None,
            "{name}"
        );
    }
}

#[test]
fn the_first_route_that_matches_decides_and_all_takes_the_rest() {
    let routes = parse("[[route]]\nnotifications = [\"Workspace Manual Build Failed\"]\nchannel = \"C0000000001\"\n[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0000000002\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0000000003\"\n").expect("valid");
    let admins = sample("TemplateWorkspaceManualBuildFailed.json.golden");
    assert_eq!(taken(&routes, &admins), Some(1));
    let created = sample("TemplateUserAccountCreated.json.golden");
    assert_eq!(taken(&routes, &created), Some(2));
    let deleted = sample("TemplateWorkspaceDeleted.json.golden");
    assert_eq!(taken(&routes, &deleted), Some(3));
    let unknown = named("Something Newer", json!({}));
    assert_eq!(taken(&routes, &unknown), Some(3));
    assert_eq!(
        routes.route_for(&created).map(|r| r.channel.target()),
        Some("C0000000002")
    );
}

#[test]
fn a_notification_carrying_a_secret_takes_no_route() {
    let routes = parse("[[route]]\nnotifications = [\"User account created\"]\nchannel = \"C0000000001\"\n[[route]]\nnotifications = [\"@admin\"]\nchannel = \"C0000000002\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"C0000000003\"\n").expect("valid");
    for name in [
        "TemplateUserRequestedOneTimePasscode.json.golden",
        "TemplateUserRequestedOneTimePasscode.golden.json",
    ] {
        assert_eq!(taken(&routes, &sample(name)), None, "{name}");
    }
    // A label named like a secret, in a kind a route names.
    let labelled = named("User account created", json!({"reset_token": "t0k3n"}));
    assert_eq!(taken(&routes, &labelled), None);
    assert_eq!(
        taken(&routes, &named("User account created", json!({}))),
        Some(1)
    );
}

#[test]
fn names_resolve_to_ids_and_an_unknown_name_is_refused_with_its_line() {
    let text = "[[route]]\nnotifications = [\"@admin\"]\nchannel = \"#Ops\"\n[[route]]\nnotifications = [\"Workspace Deleted\"]\nchannel = \"C0123ABCDE\"\n[[route]]\nnotifications = [\"Workspace Out Of Disk\"]\nchannel = \"#ops\"\n[[route]]\nnotifications = [\"@all\"]\nchannel = \"#lost\"\n";
    let routes = parse(text).expect("valid");
    assert_eq!(routes.channel_names(), ["ops", "lost"]);
    let ids = HashMap::from([
        ("ops".to_owned(), "C0000000OPS".to_owned()),
        ("lost".to_owned(), "G00000LOST".to_owned()),
    ]);
    let resolved = routes.clone().resolved(&ids).expect("every name known");
    assert!(resolved.is_resolved());
    let channels: Vec<String> = resolved.iter().map(|r| r.channel.to_string()).collect();
    assert_eq!(
        channels,
        [
            "#Ops (C0000000OPS)",
            "C0123ABCDE",
            "#ops (C0000000OPS)",
            "#lost (G00000LOST)"
        ]
    );
    let targets: Vec<&str> = resolved.iter().map(|r| r.channel.target()).collect();
    assert_eq!(
        targets,
        ["C0000000OPS", "C0123ABCDE", "C0000000OPS", "G00000LOST"]
    );

    let only_ops = HashMap::from([("ops".to_owned(), "C0000000OPS".to_owned())]);
    let e = routes.resolved(&only_ops).expect_err("#lost is unknown");
    assert_eq!(e.to_string(), "ROUTES_FILE routes.toml, line 10: #lost names no channel the app can see: no public channel has that name, and no private one the app was invited to (archived channels do not count); check the name, or write the channel's ID");
}
