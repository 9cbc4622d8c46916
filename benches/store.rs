//! The store's hot step: claiming a `msg_id` and marking it done, as every webhook does, on
//! the default backend (an SQLite file with its writer thread and batched commits). One at a
//! time is a webhook's latency; twenty at once (Coder's parallelism) shows what batching
//! saves. `cargo bench --bench store`.

use coder_slack_bridge::state::{Claim, Location, MsgKey, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(60);

fn key(i: u64) -> MsgKey {
    MsgKey::Uuid(u128::from(i) | (0x4000_8000 << 64))
}

/// Claims `key` and marks it done.
async fn claim_and_finish(store: &Store, key: MsgKey) {
    match store.claim(&key, LEASE).await {
        Ok(Claim::Fresh(token)) => store.finish(&key, &token).await.expect("finish"),
        other => panic!("a fresh claim, not {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("csb-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let location = Location::Sqlite(dir.join("bench.db"));
    let store = runtime
        .block_on(Store::open(&location))
        .expect("the store opens");
    let mut next = 0u64;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("claim+finish, one at a time (sqlite file)", |b| {
        b.iter(|| {
            next += 1;
            runtime.block_on(claim_and_finish(&store, key(next)));
        })
    });
    group.throughput(Throughput::Elements(20));
    group.bench_function("claim+finish, 20 at once (sqlite file)", |b| {
        b.iter(|| {
            let keys: Vec<MsgKey> = (0..20)
                .map(|_| {
                    next += 1;
                    key(next)
                })
                .collect();
            runtime.block_on(futures_util::future::join_all(
                keys.into_iter().map(|k| claim_and_finish(&store, k)),
            ));
        })
    });
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
