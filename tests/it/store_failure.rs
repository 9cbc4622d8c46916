//! PostgreSQL under failure: a path to the server that goes silent (a failover, a
//! partition: `support/relay.rs` freezes it), a migration blocked by another session's
//! lock, several hosts in one URL.

use crate::support;

use coder_slack_bridge::state::{Claim, Location, MsgKey, Store};
use std::time::{Duration, Instant};
use support::postgres::PgServer;
use support::relay::{Relay, SilentHost};

const LEASE: Duration = Duration::from_secs(60);

/// What a frozen path may cost at most: a few operations failing, not the kernel's
/// ~15 minutes of retransmits.
const RECOVERY: Duration = Duration::from_secs(15);

/// `url` with its port replaced by `port`.
fn via(url: &str, from: u16, port: u16) -> String {
    url.replace(&format!(":{from}/"), &format!(":{port}/"))
}

async fn open(url: &str) -> Store {
    let location = Location::parse(url).expect("a PostgreSQL URL");
    Store::open(&location).await.expect("opens")
}

/// A claim, a DM channel learned and read back, and the health check: each pool in use.
async fn works(store: &Store, n: u32) -> bool {
    let claimed = store.claim(&MsgKey::of(&format!("after-{n}")), LEASE).await;
    let user = format!("U{n}");
    let learned = store.learn_dm_channel(&user, &format!("D{n}")).await;
    let read = store.dm_channel(&user).await;
    let healthy = store.health().await;
    matches!(claimed, Ok(Claim::Fresh(_)))
        && learned.is_ok()
        && read == Ok(Some(format!("D{n}")))
        && healthy.is_ok()
}

#[tokio::test]
async fn a_path_to_postgres_that_goes_silent_is_left_for_new_connections_within_seconds() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("frozen").await;
    let relay = Relay::start(server.port).await;
    let store = open(&via(&url, server.port, relay.port)).await;
    // Several connections in each pool, all through the relay.
    let busy = futures_util::future::join_all((0..8).map(|n| works(&store, n))).await;
    assert!(
        busy.iter().all(|ok| *ok),
        "the store works through the relay"
    );
    let made_before = relay.accepted();

    // The old path is a black hole; a new connection would work at once.
    relay.freeze();
    let frozen_at = Instant::now();
    let mut n = 100;
    let deadline = frozen_at + RECOVERY;
    loop {
        n += 1;
        if works(&store, n).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store still fails {RECOVERY:?} after its path went silent"
        );
    }
    let took = frozen_at.elapsed();
    eprintln!("the store worked again {took:?} after its path went silent");
    assert!(
        relay.accepted() > made_before,
        "it recovered on new connections"
    );
    // And keeps working, on connections of its own.
    assert!(works(&store, 1000).await);
}

#[tokio::test]
async fn done_marks_commit_without_waiting_for_disk_through_a_setting_made_after_connecting() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("relaxed").await;
    let store = open(&url).await;
    // Claims wait for the disk; the other pool (done marks, DM channels, cards) does not.
    assert_eq!(
        store.setting_on_each_pool("synchronous_commit").await,
        Ok(vec!["on".to_owned(), "off".to_owned()])
    );
    assert_eq!(
        store.setting_on_each_pool("statement_timeout").await,
        Ok(vec!["4s".to_owned(), "4s".to_owned()])
    );
}

#[tokio::test]
async fn the_health_check_fails_when_one_connection_pool_cannot_connect() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("onepool").await;
    // Opening uses one pool (claims, the schema); the other connects when first needed.
    let store = open(&url).await;
    // Connections already made keep working; no new one is let in (as a pooler refusing
    // what one pool's connections ask for at start-up would do to that pool alone).
    let admin = url.replace("/onepool?", "/postgres?");
    PgServer::batch(&admin, "ALTER DATABASE onepool ALLOW_CONNECTIONS false").await;
    let claimed = store.claim(&MsgKey::of("claims-still-work"), LEASE).await;
    assert!(matches!(claimed, Ok(Claim::Fresh(_))), "{claimed:?}");
    let Err(e) = store.health().await else {
        panic!("healthy while marking done cannot work");
    };
    assert!(e.to_string().contains("onepool"), "{e}");
}

#[tokio::test]
async fn a_migration_blocked_by_a_lock_gives_up_naming_the_holder_and_leaves_nothing_queued() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("locked").await;
    // A database at schema version 1: opening it migrates, which alters schema_version.
    PgServer::batch(&url, include_str!("../fixtures/schema/postgres-v1.sql")).await;
    let holder_url = format!("{url}&application_name=lock-holder");
    let (holder, connection) = tokio_postgres::connect(&holder_url, tokio_postgres::NoTls)
        .await
        .expect("connect the other session");
    let _connection = tokio::spawn(connection);
    holder
        .batch_execute("BEGIN; LOCK TABLE schema_version IN ACCESS SHARE MODE")
        .await
        .expect("hold a lock");

    let started = Instant::now();
    let location = Location::parse(&url).expect("a PostgreSQL URL");
    let Err(e) = Store::open(&location).await else {
        panic!("opened while the migration could not take its lock");
    };
    let text = e.to_string();
    assert!(started.elapsed() < Duration::from_secs(6), "{text}");
    assert!(
        text.contains("failed to migrate its schema")
            && text.contains("holds a lock on table schema_version")
            && text.contains("application_name \"lock-holder\"")
            && text.contains("idle in transaction since"),
        "{text}"
    );
    // Nothing of the bridge's is left waiting on the server, queueing others behind it.
    let admin = url.replace("/locked?", "/postgres?");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect as postgres");
    let _connection = tokio::spawn(connection);
    let waiting: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
                WHERE application_name = 'coder-slack-bridge' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .expect("read pg_stat_activity")
        .get(0);
    assert_eq!(waiting, 0);
    // Once the other session lets go, the migration goes through.
    holder.batch_execute("COMMIT").await.expect("let go");
    let store = Store::open(&location).await.expect("opens");
    assert!(store.health().await.is_ok());
}

#[tokio::test]
async fn a_url_with_several_hosts_opens_on_the_first_that_answers_as_a_primary() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("hosts").await;
    // The first host refuses connections (a primary that went away); the second answers.
    let closed_port = support::closed_port();
    let closed = closed_port.port();
    let hosts = url
        .replace(
            &format!("@127.0.0.1:{}/", server.port),
            &format!("@127.0.0.1:{closed},localhost:{}/", server.port),
        )
        .replace(
            "?sslmode=disable",
            "?sslmode=disable&target_session_attrs=read-write",
        );
    let location = Location::parse(&hosts).expect("several hosts are taken");
    assert_eq!(
        location.shown(),
        format!(
            "postgres://***@127.0.0.1:{closed},localhost:{}/hosts",
            server.port
        )
    );
    let store = Store::open(&location)
        .await
        .expect("opens on the second host");
    assert!(store.health().await.is_ok());
    let claimed = store.claim(&MsgKey::of("on-the-second"), LEASE).await;
    assert!(matches!(claimed, Ok(Claim::Fresh(_))), "{claimed:?}");
}

#[tokio::test]
async fn a_first_host_that_vanished_leaves_time_to_connect_to_the_next() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("vanished").await;
    let silent = SilentHost::start().await;
    let hosts = url.replace(
        &format!("@127.0.0.1:{}/", server.port),
        &format!("@127.0.0.1:{},127.0.0.1:{}/", silent.port, server.port),
    );
    let started = Instant::now();
    let location = Location::parse(&hosts).expect("several hosts are taken");
    let store = Store::open(&location)
        .await
        .expect("opens on the second host");
    assert!(store.health().await.is_ok());
    assert!(started.elapsed() < Duration::from_secs(10));
}
