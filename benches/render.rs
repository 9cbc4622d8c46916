//! Parse + render + wire serialisation of the largest Coder samples: the CPU the bridge spends
//! on one notification apart from HTTP; and rendering of 1 MiB bodies built against the
//! renderer's super-linear paths, which must stay bounded by what a message can carry.
//! `cargo bench --bench render` (or `just bench`; `-- pathological` for the second group).

#[path = "../tests/support/mod.rs"]
mod support;

use coder_slack_bridge::coder::Notification;
use coder_slack_bridge::render::{self, RenderOptions};
use coder_slack_bridge::MAX_BODY_BYTES;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slack_morphism::prelude::SlackChannelId;
use std::hint::black_box;

/// How many of the largest samples are benchmarked.
const LARGEST: usize = 3;

/// The largest webhook samples by file size, as (file name, body).
fn largest_samples() -> Vec<(String, Vec<u8>)> {
    let mut samples = support::sample_bytes();
    for (name, body) in &samples {
        Notification::parse(body, None).unwrap_or_else(|e| panic!("{name} parses: {e}"));
    }
    samples.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    samples.truncate(LARGEST);
    assert!(!samples.is_empty(), "no samples");
    samples
}

fn options() -> RenderOptions {
    RenderOptions {
        snooze: false,
        coder_url: Some("https://coder.example.com".parse().expect("url")),
    }
}

fn bench(c: &mut Criterion) {
    let options = options();
    for (name, body) in largest_samples() {
        let name = name
            .strip_suffix(".json.golden")
            .or_else(|| name.strip_suffix(".golden.json"))
            .unwrap_or(&name);
        let name = format!("{name} ({} B)", body.len());
        let notification = Notification::parse(&body, None).expect("sample parses");
        let rendered = render::render(&notification, &options, None);
        let request =
            render::post_message_request(SlackChannelId("U0123ABCD".into()), rendered.content);
        let wire = serde_json::to_vec(&request).expect("serialises");

        let mut group = c.benchmark_group("webhook");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", &name), &body, |b, body| {
            b.iter(|| Notification::parse(black_box(body), None).expect("parses"))
        });
        group.bench_with_input(
            BenchmarkId::new("render", &name),
            &notification,
            |b, notification| b.iter(|| render::render(black_box(notification), &options, None)),
        );
        group.bench_with_input(
            BenchmarkId::new("serialize", &name),
            &request,
            |b, request| b.iter(|| serde_json::to_vec(black_box(request)).expect("serialises")),
        );
        group.bench_with_input(
            BenchmarkId::new("parse+render+serialize", &name),
            &body,
            |b, body| {
                b.iter(|| {
                    let n = Notification::parse(black_box(body), None).expect("parses");
                    let rendered = render::render(&n, &options, None);
                    let request = render::post_message_request(
                        SlackChannelId("U0123ABCD".into()),
                        rendered.content,
                    );
                    serde_json::to_vec(&request).expect("serialises")
                })
            },
        );
        group.finish();
        eprintln!("{name}: chat.postMessage body is {} bytes", wire.len());
    }
}

/// Bodies of the webhook limit, each built to hit one path that used to be super-linear.
fn pathological_bodies() -> Vec<(&'static str, String)> {
    let mib = MAX_BODY_BYTES;
    let padded_table = format!(
        "{}\n{}\n{}\n",
        "|a".repeat(512),
        "|-".repeat(512),
        "x\n".repeat(512)
    );
    vec![
        (
            "nested lists",
            format!("{}a\n{}", "- ".repeat(mib / 16), "b\n".repeat(3 * mib / 8)),
        ),
        (
            "nested quotes",
            format!("{}a\n{}", "> ".repeat(mib / 16), "b\n".repeat(3 * mib / 8)),
        ),
        (
            "padded tables",
            padded_table.repeat(mib / padded_table.len()),
        ),
        ("open brackets", "[".repeat(mib)),
        ("short lines", "a\n".repeat(mib / 2)),
        ("one line of ampersands", "&".repeat(mib)),
    ]
}

fn bench_pathological(c: &mut Criterion) {
    let options = options();
    let mut group = c.benchmark_group("pathological");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(MAX_BODY_BYTES as u64));
    for (name, markdown) in pathological_bodies() {
        let notification = Notification {
            labels: Default::default(),
            data: serde_json::Value::Null,
            msg_id: "00000000-0000-0000-0000-000000000000".into(),
            notification_name: "Pathological".into(),
            template_id: None,
            user_id: None,
            first_target: None,
            user_email: "bobby@coder.com".into(),
            user_name: None,
            user_username: None,
            actions: Vec::new(),
            title: "Pathological".into(),
            body: "b".into(),
            title_markdown: None,
            body_markdown: Some(markdown),
            kind: Default::default(),
        };
        group.bench_with_input(
            BenchmarkId::new("render 1 MiB", name),
            &notification,
            |b, notification| b.iter(|| render::render(black_box(notification), &options, None)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench, bench_pathological);
criterion_main!(benches);
