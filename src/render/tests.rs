//! The renderer's unit tests: layout, Markdown rules, escaping, limits and splitting.

use super::split::hard_cut;
use super::*;

fn notification(title: &str, body: &str, body_markdown: Option<&str>) -> Notification {
    Notification {
        labels: Default::default(),
        data: serde_json::Value::Null,
        msg_id: "m".into(),
        notification_name: "Test Notification".into(),
        template_id: None,
        user_id: None,
        first_target: None,
        user_email: "a@b.c".into(),
        user_name: None,
        user_username: None,
        actions: Vec::new(),
        title: title.into(),
        body: body.into(),
        title_markdown: None,
        body_markdown: body_markdown.map(str::to_owned),
        kind: Default::default(),
    }
}

fn with_actions(mut n: Notification, actions: &[(&str, &str)]) -> Notification {
    n.actions = actions
        .iter()
        .map(|(label, url)| crate::coder::Action {
            label: (*label).into(),
            url: (*url).into(),
        })
        .collect();
    n
}

fn opts(base: Option<&str>) -> RenderOptions {
    RenderOptions {
        snooze: false,
        coder_url: base.map(|b| url::Url::parse(b).expect("url")),
    }
}

fn blocks(r: &Rendered) -> &Vec<SlackBlock> {
    r.content.blocks.as_ref().expect("blocks")
}

fn header_text(r: &Rendered) -> String {
    let json = serde_json::to_value(&blocks(r)[0]).expect("json");
    json["text"]["text"].as_str().expect("text").to_owned()
}

pub(super) fn section_texts(r: &Rendered) -> Vec<String> {
    blocks(r)
        .iter()
        .filter_map(|b| match b {
            SlackBlock::Section(s) => match &s.text {
                Some(SlackBlockText::MarkDown(m)) => Some(m.text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn buttons(r: &Rendered) -> Vec<SlackBlockButtonElement> {
    blocks(r)
        .iter()
        .filter_map(|b| match b {
            SlackBlock::Actions(a) => Some(a.elements.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            SlackActionBlockElement::Button(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn check(r: &Rendered) {
    check_limits(&r.content).unwrap_or_else(|e| panic!("limit violated: {e}"));
}

#[test]
fn simple_message() {
    let n = with_actions(
        notification("Hello", "plain", Some("**bold** <x>")),
        &[("View", "https://coder.example.com/w")],
    );
    let r = render(&n, &RenderOptions::default(), None);
    check(&r);
    assert!(!r.shortened);
    assert!(r.skipped_actions.is_empty());
    assert_eq!(header_text(&r), "Hello");
    assert_eq!(section_texts(&r), vec!["*bold* &lt;x&gt;".to_owned()]);
    let b = buttons(&r);
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].action_id.as_ref().map(|a| a.0.as_str()),
        Some("coder_action_0")
    );
    assert_eq!(
        b[0].url.as_ref().map(|u| u.as_str()),
        Some("https://coder.example.com/w")
    );
    assert_eq!(r.content.text.as_deref(), Some("Hello\nplain"));
}

#[test]
fn plain_body_is_escaped_when_no_markdown() {
    for md in [None, Some(""), Some("  \n ")] {
        let n = notification("T", "<!channel> & <@U123> <http://evil|click> &lt;", md);
        let r = render(&n, &RenderOptions::default(), None);
        check(&r);
        assert_eq!(
            section_texts(&r),
            vec![
                "&lt;!channel&gt; &amp; &lt;@U123&gt; &lt;http://evil|click&gt; &amp;lt;"
                    .to_owned()
            ]
        );
        let text = r.content.text.clone().unwrap_or_default();
        assert!(!text.contains("<!") && !text.contains("<@") && text.contains("&amp;lt;"));
    }
}

#[test]
fn blank_body_has_no_sections() {
    let r = render(
        &notification("T", "  ", Some("")),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    assert_eq!(blocks(&r).len(), 1);
    assert_eq!(r.content.text.as_deref(), Some("T"));
}

#[test]
fn title_fallbacks_and_newlines() {
    let r = render(
        &notification("  ", "b", None),
        &RenderOptions::default(),
        None,
    );
    assert_eq!(header_text(&r), "Test Notification");
    let mut n = notification("", "b", None);
    n.notification_name = " ".into();
    let r = render(&n, &RenderOptions::default(), None);
    assert_eq!(header_text(&r), "Coder notification");
    let r = render(
        &notification("a\nb\r\nc", "", None),
        &RenderOptions::default(),
        None,
    );
    assert_eq!(header_text(&r), "a b c");
    // Plain text header: not escaped; the fallback text is.
    let r = render(
        &notification("<!here> & co", "", None),
        &RenderOptions::default(),
        None,
    );
    assert_eq!(header_text(&r), "<!here> & co");
    assert_eq!(r.content.text.as_deref(), Some("&lt;!here&gt; &amp; co"));
}

#[test]
fn long_title_is_cut_at_a_word() {
    let title = "word ".repeat(60);
    let r = render(
        &notification(&title, "b", None),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    let h = header_text(&r);
    assert!(h.chars().count() <= 150);
    assert!(h.ends_with("word…"), "{h}");
    assert!(r.shortened);
    let r = render(
        &notification(&"x".repeat(400), "", None),
        &RenderOptions::default(),
        None,
    );
    let h = header_text(&r);
    assert_eq!(h.chars().count(), 150);
    assert!(h.ends_with('…'));
}

#[test]
fn note_follows_header_escaped() {
    let r = render(
        &notification("T", "b", None),
        &RenderOptions::default(),
        Some("Intended for <bobby@coder.com> & co"),
    );
    check(&r);
    let json = serde_json::to_value(&blocks(&r)[1]).expect("json");
    assert_eq!(json["type"], "context");
    assert_eq!(json["elements"][0]["type"], "mrkdwn");
    assert_eq!(
        json["elements"][0]["text"],
        "Intended for &lt;bobby@coder.com&gt; &amp; co"
    );
    assert!(matches!(blocks(&r)[2], SlackBlock::Section(_)));
}

#[test]
fn long_body_splits_into_sections_without_loss() {
    let para = "Lorem ipsum dolor sit amet & <stuff>, consectetur adipiscing elit.";
    let body: Vec<String> = (0..600).map(|i| format!("{i} {para}")).collect();
    let body = body.join("\n\n");
    let r = render(
        &notification("T", &body, None),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    assert!(!r.shortened);
    let sections = section_texts(&r);
    assert!(
        sections.len() > 10 && sections.len() < 48,
        "{}",
        sections.len()
    );
    for s in &sections {
        assert!(s.chars().count() <= 3000);
        assert!(!s.starts_with('\n') && !s.ends_with('\n'));
    }
    assert_eq!(sections.join("\n\n"), escape(&body));
    let text = r.content.text.clone().unwrap_or_default();
    assert!(text.chars().count() <= 3000 && text.ends_with('…'));
}

#[test]
fn single_long_line_is_hard_cut() {
    let body = "a".repeat(10_000);
    let r = render(
        &notification("T", &body, None),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    let sections = section_texts(&r);
    assert_eq!(sections.len(), 4);
    assert_eq!(sections.concat(), body);
    // Entities are never split.
    let body = "&".repeat(3000);
    let r = render(
        &notification("T", &body, None),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    for s in section_texts(&r) {
        assert!(s.starts_with("&amp;") && s.ends_with("&amp;"));
    }
    assert_eq!(section_texts(&r).concat(), escape(&body));
}

#[test]
fn hard_cuts_avoid_links() {
    let link = "<http://x.com/aaaa|label>";
    let line = format!("{}{}", "b".repeat(2980), link);
    let cut = hard_cut(&line, 2992);
    assert_eq!(&line[cut..], link);
    let line = format!("{} {}", "b".repeat(2000), "c".repeat(2000));
    assert_eq!(hard_cut(&line, 2992), 2001);
}

#[test]
fn a_long_line_starting_with_a_link_is_not_cut_inside_it() {
    // Found while fuzzing: the cut preferred the space inside the link's label.
    let markdown = format!(
        "[a b](http://e.com/{}){}",
        "x".repeat(1900),
        "z".repeat(1100)
    );
    let n = Notification::parse(
        serde_json::json!({"msg_id": "m", "payload": {"user_email": "a@b.c"}, "title": "T", "body_markdown": markdown})
            .to_string()
            .as_bytes(),
        None,
    )
    .expect("parses");
    let rendered = render(&n, &RenderOptions::default(), None);
    check_limits(&rendered.content).expect("within limits, no link cut in half");
}

#[test]
fn split_code_fences_are_closed_and_reopened() {
    let code: Vec<String> = (0..400).map(|i| format!("line {i} of code")).collect();
    let md = format!("intro\n\n```\n{}\n```\n\nafter", code.join("\n"));
    let r = render(
        &notification("T", "", Some(&md)),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    let sections = section_texts(&r);
    assert!(sections.len() >= 2);
    for s in &sections {
        let fences = s.lines().filter(|l| l.trim() == "```").count();
        assert_eq!(fences % 2, 0, "unbalanced fences in {s}");
    }
}

#[test]
fn huge_body_is_shortened_to_50_blocks() {
    let body: Vec<String> = (0..100)
        .map(|i| format!("{i} {}", "z".repeat(2900)))
        .collect();
    let n = with_actions(
        notification("T", &body.join("\n\n"), None),
        &[("A", "https://x.com/a")],
    );
    let r = render(&n, &RenderOptions::default(), Some("note"));
    check(&r);
    assert!(r.shortened);
    let b = blocks(&r);
    assert_eq!(b.len(), 50);
    assert!(matches!(b[0], SlackBlock::Header(_)));
    assert!(matches!(b[1], SlackBlock::Context(_)));
    assert!(matches!(b[49], SlackBlock::Actions(_)));
    let json = serde_json::to_value(&b[48]).expect("json");
    assert_eq!(json["elements"][0]["text"], SHORTENED_NOTE);
    assert_eq!(buttons(&r).len(), 1);
}

#[test]
fn buttons_labels_and_ids() {
    let long = "L".repeat(200);
    let n = with_actions(
        notification("T", "b", None),
        &[
            ("", "https://x.com/1"),
            (&long, "https://x.com/2"),
            ("  ok  ", "http://x.com/3"),
        ],
    );
    let r = render(&n, &RenderOptions::default(), None);
    check(&r);
    let b = buttons(&r);
    let json = serde_json::to_value(&b).expect("json");
    assert_eq!(json[0]["text"]["text"], "Open");
    let l = json[1]["text"]["text"].as_str().expect("label");
    assert_eq!(l.chars().count(), 75);
    assert!(l.ends_with('…'));
    assert_eq!(json[2]["text"]["text"], "ok");
    assert!(r.shortened);
}

/// A body `b` with `n` "Go" buttons, rendered and checked against the limits.
fn render_with_actions(n: usize) -> Rendered {
    let urls: Vec<String> = (0..n).map(|i| format!("https://x.com/{i}")).collect();
    let actions: Vec<(&str, &str)> = urls.iter().map(|u| ("Go", u.as_str())).collect();
    let r = render(
        &with_actions(notification("T", "b", None), &actions),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    r
}

#[test]
fn sixty_actions_make_three_blocks() {
    let r = render_with_actions(60);
    let actions_blocks: Vec<usize> = blocks(&r)
        .iter()
        .filter_map(|b| match b {
            SlackBlock::Actions(a) => Some(a.elements.len()),
            _ => None,
        })
        .collect();
    assert_eq!(actions_blocks, vec![25, 25, 10]);
    let ids: HashSet<String> = buttons(&r)
        .iter()
        .filter_map(|b| b.action_id.as_ref().map(|a| a.0.clone()))
        .collect();
    assert_eq!(ids.len(), 60);
    assert!(ids.contains("coder_action_59"));
    assert!(!r.shortened);
}

#[test]
fn too_many_actions_are_capped() {
    let r = render_with_actions(1300);
    assert!(r.shortened);
    assert_eq!(blocks(&r).len(), 50);
    assert_eq!(section_texts(&r), vec!["b".to_owned()]);
    assert_eq!(buttons(&r).len() + r.skipped_actions.len(), 1300);
    assert!(r.skipped_actions.iter().all(|s| s.reason == SKIP_TOO_MANY));
}

#[test]
fn action_urls() {
    let long = format!("https://x.com/{}", "a".repeat(4000));
    let n = with_actions(
        notification("T", "b", None),
        &[
            ("rel", "/changelog/2.30"),
            ("js", "javascript:alert(1)"),
            ("long", &long),
            ("bad", "http://[::1"),
            ("ok", "https://x.com/ok"),
            ("ftp", "ftp://x.com/f"),
            ("rel2", "changelog"),
        ],
    );
    let r = render(&n, &RenderOptions::default(), None);
    check(&r);
    assert_eq!(
        r.skipped_actions,
        vec![
            SkippedAction {
                index: 0,
                reason: SKIP_RELATIVE
            },
            SkippedAction {
                index: 1,
                reason: SKIP_SCHEME
            },
            SkippedAction {
                index: 2,
                reason: SKIP_LONG
            },
            SkippedAction {
                index: 3,
                reason: SKIP_INVALID
            },
            SkippedAction {
                index: 5,
                reason: SKIP_SCHEME
            },
            SkippedAction {
                index: 6,
                reason: SKIP_RELATIVE
            },
        ]
    );
    let b = buttons(&r);
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].action_id.as_ref().map(|a| a.0.as_str()),
        Some("coder_action_4")
    );

    let r = render(&n, &opts(Some("https://coder.example.com")), None);
    check(&r);
    let urls: Vec<String> = buttons(&r)
        .iter()
        .filter_map(|b| b.url.as_ref().map(|u| u.to_string()))
        .collect();
    assert_eq!(
        urls,
        vec![
            "https://coder.example.com/changelog/2.30",
            "https://x.com/ok",
            "https://coder.example.com/changelog"
        ]
    );
    let debug = format!("{:?}", r.skipped_actions);
    assert!(!debug.contains("javascript"));
}

#[test]
fn top_level_text_is_bounded() {
    let body = "<b> & ".repeat(2000);
    let r = render(
        &notification("Title", &body, None),
        &RenderOptions::default(),
        None,
    );
    check(&r);
    let text = r.content.text.clone().unwrap_or_default();
    assert!(text.chars().count() <= 3000);
    assert!(text.starts_with("Title\n&lt;b&gt; &amp; "));
    assert!(text.ends_with('…'));
    // Markdown is the fallback when the plain body is empty.
    let r = render(
        &notification("T", "", Some("**x**")),
        &RenderOptions::default(),
        None,
    );
    assert_eq!(r.content.text.as_deref(), Some("T\n**x**"));
}

#[test]
fn post_message_request_settings() {
    let r = render(
        &notification("T", "b", None),
        &RenderOptions::default(),
        None,
    );
    let req = post_message_request(SlackChannelId("D123".into()), r.content.clone());
    assert_eq!(req.channel.0, "D123");
    assert_eq!(req.unfurl_links, Some(false));
    assert_eq!(req.unfurl_media, Some(false));
    assert_eq!(req.username, None);
    assert_eq!(req.icon_emoji, None);
    assert_eq!(req.icon_url, None);
    assert_eq!(req.content, r.content);
}

#[test]
fn check_limits_reports_violations() {
    let bad = SlackMessageContent::new()
        .with_text("t".into())
        .with_blocks(vec![SlackBlock::Section(
            SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(
                SlackBlockMarkDownText::new("<!channel>".into()),
            )),
        )]);
    assert!(check_limits(&bad).is_err());
    let bad = SlackMessageContent::new()
        .with_text("t".into())
        .with_blocks(vec![SlackBlock::Header(SlackHeaderBlock::new(
            "h".repeat(151).into(),
        ))]);
    assert!(check_limits(&bad).unwrap_err().contains("151"));
    let bad = SlackMessageContent::new().with_blocks(vec![]);
    assert!(check_limits(&bad).is_err());
}

#[test]
fn random_hostile_markdown_stays_within_limits() {
    const PIECES: &[&str] = &[
        "<!channel>",
        "<@U1>",
        "<#C1>",
        "<http://evil|x>",
        "[x](http://a.com/|b)",
        "[l](javascript:x)",
        "<https://x.com/a>",
        "<a@b.c>",
        "![i](https://x.com/i.png)",
        "**",
        "__",
        "_",
        "*",
        "~~",
        "`",
        "```\n",
        "\n",
        "\n\n",
        "- ",
        "1. ",
        "> ",
        "    ",
        "# ",
        "&",
        "&lt;",
        "&amp;",
        "\\",
        "|",
        "<",
        ">",
        "[",
        "]",
        "(",
        ")",
        "<div>",
        "---\n",
        "| a | b |\n|---|---|\n",
        "word ",
        "ünï ",
        "🙂",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..300 {
        let mut md = String::new();
        let target = if round % 10 == 0 { 20_000 } else { 400 };
        while md.len() < target {
            if rng.u8(..) < 8 {
                md.push_str(&"y".repeat(rng.usize(100..4000)));
            } else {
                md.push_str(PIECES[rng.usize(..PIECES.len())]);
            }
        }
        let title: String = md.chars().take(300).collect();
        let n = notification(&title, &md, Some(&md));
        let r = render(&n, &RenderOptions::default(), Some(&md));
        check_limits(&r.content).unwrap_or_else(|e| panic!("{e}\ninput: {md:?}"));
    }
}

fn load_samples() -> Vec<(String, Notification)> {
    crate::test_samples::sample_bytes()
        .into_iter()
        .map(|(name, bytes)| {
            let n = Notification::parse(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, n)
        })
        .collect()
}

#[test]
fn every_sample_renders_within_limits() {
    let samples = load_samples();
    assert_eq!(samples.len(), crate::test_samples::SAMPLE_COUNT);
    for base in [None, Some("https://coder.example.com")] {
        for (name, n) in &samples {
            let r = render(n, &opts(base), Some("Intended for bobby@coder.com"));
            check_limits(&r.content).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!r.shortened, "{name}");
            let json = serde_json::to_value(&r.content).expect("json");
            let blocks = json["blocks"].as_array().expect("blocks");
            assert!(blocks.len() <= 50, "{name}");
            assert_eq!(blocks[0]["type"], "header", "{name}");
            if base.is_some() {
                assert!(
                    r.skipped_actions.is_empty(),
                    "{name}: {:?}",
                    r.skipped_actions
                );
            }
        }
    }
}

fn sample(name: &str) -> Notification {
    load_samples()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, n)| n)
        .expect("sample")
}

#[test]
fn sample_builds_failed_report() {
    let r = render(
        &sample("TemplateWorkspaceBuildsFailedReport.json.golden"),
        &RenderOptions::default(),
        None,
    );
    let body = section_texts(&r).join("\n\n");
    assert!(
        body.contains("• *Bobby First Template* failed to build 4/55 times\n"),
        "{body}"
    );
    assert!(body.contains(
        "\n    • <http://test.com/@mtojek/workspace-1/builds/1234|mtojek / workspace-1 / #1234>\n"
    ));
    assert!(body.contains(
        "\n\n*Report:*\n\n*Bobby First Template*\n\n• *bobby-template-version-1* failed 3 times:\n"
    ));
    assert!(!body.contains("\n\n\n"));
    let b = buttons(&r);
    assert_eq!(b.len(), 1);
    assert!(b[0]
        .url
        .as_ref()
        .map(|u| u.as_str())
        .unwrap_or("")
        .starts_with("http://test.com/workspaces?filter=template%3A"));
}

#[test]
fn sample_changelog_relative_url() {
    let n = sample("TemplateChangelog.json.golden");
    let r = render(&n, &RenderOptions::default(), None);
    assert_eq!(
        r.skipped_actions,
        vec![SkippedAction {
            index: 0,
            reason: SKIP_RELATIVE
        }]
    );
    assert!(buttons(&r).is_empty());
    let r = render(&n, &opts(Some("https://coder.example.com/")), None);
    assert!(r.skipped_actions.is_empty());
    assert_eq!(
        buttons(&r)[0].url.as_ref().map(|u| u.as_str()),
        Some("https://coder.example.com/changelog/2.30")
    );
    assert_eq!(header_text(&r), "2.30");
}

#[test]
fn sample_otp_and_out_of_disk() {
    let r = render(
        &sample("TemplateUserRequestedOneTimePasscode.json.golden"),
        &RenderOptions::default(),
        None,
    );
    let body = section_texts(&r).join("\n\n");
    assert_eq!(
        body,
        "Use the link below to reset your password.\n\n\
         If you did not make this request, you can ignore this message."
    );
    let r = render(
        &sample("TemplateUserRequestedOneTimePasscode.golden.json"),
        &RenderOptions::default(),
        None,
    );
    let body = section_texts(&r).join("\n\n");
    assert!(
        body.contains("\n\n*fad9020b-6562-4cdb-87f1-0486f1bea415*\n\n"),
        "{body}"
    );
    let r = render(
        &sample("TemplateWorkspaceOutOfDisk_MultipleVolumes.json.golden"),
        &RenderOptions::default(),
        None,
    );
    assert_eq!(
        section_texts(&r),
        vec![
            "The following volumes are nearly full in workspace *bobby-workspace*\n\n\
              • *`/home/coder`* is over 90% full\n\
              • *`/dev/coder`* is over 80% full\n\
              • *`/etc/coder`* is over 95% full"
                .to_owned()
        ]
    );
    let r = render(
        &sample("TemplateWorkspaceResourceReplaced.json.golden"),
        &RenderOptions::default(),
        None,
    );
    let body = section_texts(&r).join("\n\n");
    assert!(body.contains("• _docker_container[0]_"), "{body}");
}

#[test]
fn every_message_links_to_coders_setting_that_turns_its_kind_off() {
    let dormant = sample("TemplateWorkspaceDormant.golden.json");
    let json = |options: &RenderOptions| {
        serde_json::to_value(render(&dormant, options, None).content).expect("JSON")
    };
    let with_url = json(&opts(Some("https://coder.example.com")));
    let blocks = with_url["blocks"].as_array().expect("blocks");
    assert_eq!(
        blocks.last().map(|b| &b["elements"][0]["text"]),
        Some(&serde_json::json!(
            "<https://coder.example.com/settings/notifications?disabled=0ea69165-ec14-4314-91f1-69566ac3c5a0|Turn these notifications off in Coder>"
        ))
    );
    // Without CODER_URL there is nowhere to link; Coder's fixtures zero the template ID.
    let without = json(&opts(None));
    assert!(!without.to_string().contains("settings/notifications"));
    let zeroed = sample("TemplateWorkspaceDormant.json.golden");
    assert_eq!(
        zeroed.template_id.as_deref(),
        Some("00000000-0000-0000-0000-000000000000")
    );
    let zeroed = render(&zeroed, &opts(Some("https://coder.example.com")), None);
    let text = serde_json::to_string(&zeroed.content).expect("JSON");
    assert!(!text.contains("settings/notifications"), "{text}");
}
