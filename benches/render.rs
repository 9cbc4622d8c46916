//! Parse + render + wire serialisation of the largest Coder samples: the CPU the bridge spends
//! on one notification apart from HTTP. `cargo bench --bench render` (or `just bench`).

#[path = "../tests/support/mod.rs"]
mod support;

use coder_slack_bridge::coder::Notification;
use coder_slack_bridge::render::{self, RenderOptions};
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

criterion_group!(benches, bench);
criterion_main!(benches);
