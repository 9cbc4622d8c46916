//! Renders adversarial 1 MiB notifications (the body limit) and prints, per case, the CPU time
//! and the peak RSS growth of `render::render`. Figures to report, not to assert.
//!
//! ```sh
//! cargo run --release --example render_worst              # every case
//! cargo run --release --example render_worst -- nested_lists deep_quotes
//! ```
//!
//! Each case runs in a child process of its own (peak RSS is a per-process high-water mark),
//! under a 3 GiB address-space limit and a wall-clock timeout (`TIMEOUT` seconds, default 120),
//! so a super-linear case is reported instead of taking the machine down.

use coder_slack_bridge::coder::{Action, Notification};
use coder_slack_bridge::render::{self, RenderOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The webhook body limit: the largest body a notification can come in.
const MIB: usize = coder_slack_bridge::MAX_BODY_BYTES;

/// A quarter of the limit: the audit's input at 1 MiB has this many markers and lines.
const K: usize = MIB / 4;

/// A case's name and how to build its body Markdown.
type MarkdownCase = (&'static str, fn() -> String);

/// Body Markdown built to hit one super-linear path each (1 MiB, give or take a line).
fn markdown_cases() -> Vec<MarkdownCase> {
    vec![
        // The audit's input (31 KiB); scaled to 1 MiB as is (its markers alone are more than
        // is parsed); and with the markers within the parsed head, so the lines are read too.
        ("audit_31k", || {
            format!("{}a\n{}", "- ".repeat(8000), "b\n".repeat(8000))
        }),
        ("nested_lists", || {
            format!("{}a\n{}", "- ".repeat(K), "b\n".repeat(K))
        }),
        ("nested_lists_head", || {
            format!("{}a\n{}", "- ".repeat(MIB / 16), "b\n".repeat(3 * MIB / 8))
        }),
        ("nested_lists_cr", || {
            format!("{}a\r{}", "- ".repeat(MIB / 16), "b\r".repeat(3 * MIB / 8))
        }),
        ("nested_ordered", || {
            format!(
                "{}a\n{}",
                "1. ".repeat(MIB / 24),
                "b\n".repeat(7 * MIB / 16)
            )
        }),
        ("deep_quotes", || {
            format!("{}a\n{}", "> ".repeat(MIB / 16), "b\n".repeat(3 * MIB / 8))
        }),
        ("quote_chars", || ">".repeat(MIB)),
        ("open_brackets", || "[".repeat(MIB)),
        ("nested_brackets", || {
            format!("{}a{}", "[".repeat(MIB / 2), "]".repeat(MIB / 2))
        }),
        ("nested_images", || {
            format!(
                "{}{}",
                "![x".repeat(MIB / 8),
                "](http://x.co)".repeat(MIB / 28)
            )
        }),
        ("link_openers", || "[a](<b".repeat(MIB / 6)),
        ("stars", || "*".repeat(MIB)),
        ("underscores", || "_".repeat(MIB)),
        ("emph_nested", || {
            format!(
                "{}b{}",
                "*a **a ".repeat(MIB / 14),
                " a** a*".repeat(MIB / 14)
            )
        }),
        ("emph_lines", || {
            format!(
                "{}{}{}",
                "*_".repeat(K / 2),
                "a\n".repeat(K),
                "_*".repeat(K / 2)
            )
        }),
        ("emph_open_no_close", || "_a ".repeat(MIB / 3)),
        ("backticks", || "`".repeat(MIB)),
        ("backtick_runs", || {
            (1..1400).map(|i| format!("e{}", "`".repeat(i))).collect()
        }),
        ("one_line", || "a".repeat(MIB)),
        ("one_line_spaces", || format!("a{}b", " ".repeat(MIB))),
        ("ampersands", || "&".repeat(MIB)),
        ("lt_signs", || "<".repeat(MIB)),
        ("words", || "word ".repeat(MIB / 5)),
        ("tiny_paragraphs", || "a\n\n".repeat(MIB / 3)),
        ("lines", || "a\n".repeat(MIB / 2)),
        ("code_lines", || {
            format!("```\n{}```\n", "a\n".repeat(MIB / 2))
        }),
        ("code_blank_lines", || {
            format!("```\n{}x\n```\n", "\n".repeat(MIB))
        }),
        ("table_wide", || {
            format!(
                "{}\n{}\n{}",
                "|a".repeat(2000),
                "|-".repeat(2000),
                "x\n".repeat((MIB - 8000) / 2)
            )
        }),
        ("table_cells", || format!("|a|\n|-|\n{}", "|".repeat(MIB))),
        // 512 columns, rows of one byte: the parser pads every row with 511 empty cells.
        ("padded_tables", || {
            let table = format!(
                "{}\n{}\n{}\n",
                "|a".repeat(512),
                "|-".repeat(512),
                "x\n".repeat(512)
            );
            table.repeat(MIB / table.len())
        }),
        ("bracket_parens", || "[ (](".repeat(MIB / 5)),
        ("links", || "[a](http://x.com/) ".repeat(MIB / 19)),
        ("long_link_label", || {
            format!("[{}](http://x.com/)", "l ".repeat(MIB / 2))
        }),
        ("idn_link", || {
            format!("[a](http://xn--{})", "a".repeat(MIB))
        }),
        ("autolinks", || "<http://x.com/a> ".repeat(MIB / 17)),
        ("hard_breaks", || "a\\\n".repeat(MIB / 3)),
        ("html_lines", || {
            format!("<div>\n{}", "<b>\n".repeat(MIB / 4))
        }),
        ("ref_defs", || {
            format!(
                "{}{}",
                "[a]: http://x.com\n".repeat(MIB / 36),
                "[a] ".repeat(MIB / 8)
            )
        }),
        ("indented_lists", || {
            (0..700)
                .map(|i| format!("{}- a\n", "  ".repeat(i)))
                .collect()
        }),
    ]
}

fn notification(body_markdown: Option<String>, body: String) -> Notification {
    Notification {
        labels: Default::default(),
        data: serde_json::Value::Null,
        msg_id: "00000000-0000-0000-0000-000000000000".into(),
        notification_name: "Worst case".into(),
        template_id: None,
        user_id: None,
        first_target: None,
        user_email: "bobby@coder.com".into(),
        user_name: None,
        user_username: None,
        actions: Vec::new(),
        title: "Worst case".into(),
        body,
        title_markdown: None,
        body_markdown,
        kind: Default::default(),
    }
}

/// Case names: the Markdown cases, a plain body, a huge title, many actions, an IDN action URL.
fn case_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = markdown_cases().iter().map(|(name, _)| *name).collect();
    names.extend(["plain_ampersands", "title", "actions", "idn_action"]);
    names
}

/// Builds only the named case, so the other inputs never weigh on this process's RSS.
fn build_case(name: &str) -> Option<Notification> {
    if let Some((_, markdown)) = markdown_cases().into_iter().find(|(case, _)| *case == name) {
        return Some(notification(Some(markdown()), "plain".into()));
    }
    let mut n = notification(None, "b".into());
    match name {
        "plain_ampersands" => n.body = "&".repeat(MIB),
        "title" => n.title = "t ".repeat(MIB / 2),
        "actions" => {
            n.actions = (0..MIB / 24)
                .map(|i| Action {
                    label: "Go".into(),
                    url: format!("https://x.com/{i}"),
                })
                .collect()
        }
        "idn_action" => {
            n.actions = vec![Action {
                label: "Go".into(),
                url: format!("http://xn--{}", "a".repeat(MIB)),
            }]
        }
        _ => return None,
    }
    Some(n)
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

fn cpu_seconds(u: &libc::rusage) -> f64 {
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// In the child: renders one case and prints `cpu_s rss_growth_kib blocks shortened`.
fn run_case(name: &str) {
    let limit = libc::rlimit {
        rlim_cur: 3 << 30,
        rlim_max: 3 << 30,
    };
    // SAFETY: setrlimit reads the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    let Some(n) = build_case(name) else {
        eprintln!("no case {name}");
        std::process::exit(2);
    };
    let options = RenderOptions {
        snooze: false,
        coder_url: Some("https://coder.example.com".parse().expect("url")),
    };
    let before = rusage();
    let rendered = render::render(&n, &options, Some("Intended for bobby@coder.com"));
    let after = rusage();
    let blocks = rendered.content.blocks.as_ref().map_or(0, Vec::len);
    let limits = match render::check_limits(&rendered.content) {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("VIOLATION: {e}"),
    };
    println!(
        "{:.3} {} {} {} {}",
        cpu_seconds(&after) - cpu_seconds(&before),
        after.ru_maxrss - before.ru_maxrss,
        blocks,
        rendered.shortened,
        limits
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = args.as_slice() {
        if flag == "--case" {
            run_case(name);
            return;
        }
    }
    let timeout = std::env::var("TIMEOUT")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(120);
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:<20} {:>8} {:>12} {:>6} {:>9}  limits",
        "case", "cpu s", "peak +MiB", "blocks", "shortened"
    );
    for name in case_names() {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        let mut child = Command::new(&exe)
            .args(["--case", name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(timeout) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child
            .wait_with_output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let out = String::from_utf8_lossy(&out);
        let fields: Vec<&str> = out.trim().splitn(5, ' ').collect();
        match (status, fields.as_slice()) {
            (Some(s), [cpu, rss, blocks, shortened, limits]) if s.success() => {
                let rss_mib = rss.parse::<f64>().unwrap_or(0.0) / 1024.0;
                println!(
                    "{name:<20} {cpu:>8} {rss_mib:>12.1} {blocks:>6} {shortened:>9}  {limits}"
                );
            }
            (Some(s), _) => {
                println!("{name:<20} failed: {s} (out of memory under the 3 GiB limit?)")
            }
            (None, _) => println!("{name:<20} timeout after {timeout} s"),
        }
    }
}
