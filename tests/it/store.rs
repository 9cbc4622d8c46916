//! The store on real databases: an SQLite file that outlives a killed bridge, PostgreSQL
//! shared by replicas (a server of the test's own; see `support/postgres.rs`), and
//! databases left by the previous schema version.

use crate::support;

use coder_slack_bridge::config::Config;
use coder_slack_bridge::state::{
    Claim, Location, MsgKey, SnoozeMet, Store, ThreadClaim, ThreadKey, SCHEMA_VERSION,
};
use serde_json::{json, Value};
use std::time::Duration;
use support::postgres::PgServer;
use support::*;

const LEASE: Duration = Duration::from_secs(60);

/// POSTs a webhook body to the bridge at `addr`: status and JSON answer.
async fn post_to(client: &reqwest::Client, addr: &str, body: &Value) -> (u16, Value) {
    let (status, _, answer) =
        post_webhook(client, &format!("http://{addr}/v1/webhook"), body).await;
    (status, answer)
}

/// Twenty different Coder notifications for Bobby.
fn twenty_for_bobby() -> Vec<Value> {
    samples()
        .into_iter()
        .take(20)
        .map(|(_, body)| notification(body, &fresh_id(), "bobby@coder.com"))
        .collect()
}

#[tokio::test]
async fn a_bridge_killed_and_restarted_on_its_file_posts_nothing_twice() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let dir = fresh_dir("sigkill");
    let bridge = || {
        let mut command = bridge_binary(&dir);
        command
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_API_URL", slack.api_url())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", "sqlite://state.db");
        command
    };
    let client = http_client();
    let bodies = twenty_for_bobby();

    let (mut first, addr, _log) = spawn_bridge(bridge()).await;
    for body in &bodies {
        let (status, answer) = post_to(&client, &addr, body).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("delivered")),
            "{answer}"
        );
    }
    let posts_before_the_kill = slack.calls_to("chat.postMessage").len();
    // SIGKILL: no shutdown, no flush; only what the file already holds survives.
    first.start_kill().expect("SIGKILL");
    let _ = tokio::time::timeout(DEADLINE, first.wait())
        .await
        .expect("killed");
    assert!(dir.join("state.db").exists());

    let (_second, addr, _log) = spawn_bridge(bridge()).await;
    for body in &bodies {
        // Coder's retry of a delivered notification (its answer lost with the process).
        let (status, answer) = post_to(&client, &addr, body).await;
        assert_eq!((status, answer), (200, json!({"status": "duplicate"})));
    }
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        posts_before_the_kill
    );
    let mut posted: Vec<String> = slack
        .messages_in("DBOBBY")
        .iter()
        .filter_map(|m| {
            m["metadata"]["event_payload"]["msg_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    posted.sort();
    posted.dedup();
    assert_eq!(posted.len(), 20, "each notification once in Bobby's DM");
    // A new one still goes out.
    let (status, answer) = post_to(&client, &addr, &workspace_deleted("bobby@coder.com")).await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("delivered")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_sqlite_file_of_the_previous_schema_version_is_upgraded() {
    let dir = fresh_dir("sqlite-v1");
    let path = dir.join("state.db");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(include_str!("../fixtures/schema/sqlite-v1.sql"))
        .expect("a version 1 database");
    drop(conn);
    let store = Store::open(&Location::Sqlite(path))
        .await
        .expect("opens and upgrades");
    assert_upgraded_from_v1(&store).await;
}

/// What the version 1 fixtures hold is still there, and what later versions added works.
async fn assert_upgraded_from_v1(store: &Store) {
    let health = store.health().await.expect("healthy");
    assert_eq!(health.schema_version, SCHEMA_VERSION);
    let handled = MsgKey::of("6f1c8e7e-3b0a-4c2e-9d8f-0a1b2c3d4e5f");
    assert_eq!(store.claim(&handled, LEASE).await, Ok(Claim::Done));
    store
        .learn_dm_channel("UBOBBY", "DBOBBY")
        .await
        .expect("the new table");
    assert_eq!(store.dm_channel("UBOBBY").await, Ok(Some("DBOBBY".into())));
}

/// A fresh PostgreSQL server with an empty database, or `None` when PostgreSQL is not
/// installed (see `support/postgres.rs`).
async fn postgres(name: &str) -> Option<(PgServer, String)> {
    let server = PgServer::start().await?;
    let url = server.new_database(name).await;
    Some((server, url))
}

async fn open_postgres(url: &str) -> Store {
    let location = Location::parse(url).expect("a PostgreSQL URL");
    Store::open(&location).await.expect("opens")
}

#[tokio::test]
async fn postgres_claims_have_one_winner_across_replicas_and_leases_hand_over() {
    let Some((_server, url)) = postgres("claims").await else {
        return;
    };
    let (a, b) = (open_postgres(&url).await, open_postgres(&url).await);
    let key = MsgKey::of("0b6e5bd4-8fd4-4c38-a6d5-0d5c8a4f4a43");
    // Fifty copies at each replica at the same instant: one claim wins.
    let claims = futures_util::future::join_all((0..100).map(|n| {
        if n % 2 == 0 {
            a.claim(&key, LEASE)
        } else {
            b.claim(&key, LEASE)
        }
    }))
    .await;
    let winners: Vec<_> = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Fresh(_))))
        .collect();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
        .count();
    assert_eq!((winners.len(), busy), (1, 99), "{claims:?}");
    let Ok(Claim::Fresh(token)) = winners[0].clone() else {
        unreachable!()
    };
    a.finish(&key, &token).await.expect("finish");
    assert_eq!(b.claim(&key, LEASE).await, Ok(Claim::Done));

    // A replica that died holding a claim: once its lease ends, another takes it over.
    let orphan = MsgKey::of("orphan");
    assert!(matches!(
        a.claim(&orphan, Duration::ZERO).await,
        Ok(Claim::Fresh(_))
    ));
    assert!(matches!(
        b.claim(&orphan, LEASE).await,
        Ok(Claim::TakenOver { .. })
    ));
    assert!(matches!(
        a.claim(&orphan, LEASE).await,
        Ok(Claim::Busy { .. })
    ));

    // A snooze set on one replica holds on the other, and ends there.
    let dev = ThreadKey {
        slack_user: "UBOBBY".into(),
        owner: "bobby".into(),
        workspace: "dev".into(),
    };
    assert_eq!(b.meet_snooze(&dev).await, Ok(SnoozeMet::None));
    a.snooze(&dev, std::time::SystemTime::now() + LEASE)
        .await
        .expect("snooze");
    assert!(matches!(b.meet_snooze(&dev).await, Ok(SnoozeMet::On(_))));
    assert_eq!(b.unsnooze(&dev).await, Ok(true));
    assert_eq!(a.meet_snooze(&dev).await, Ok(SnoozeMet::Ended(1)));
    a.learn_dm_channel("UBOBBY", "DBOBBY").await.expect("learn");
    assert_eq!(b.dm_channel("UBOBBY").await, Ok(Some("DBOBBY".into())));
    assert_eq!(a.prune(Duration::ZERO).await.map(|p| p.ids), Ok(2));
    let health = b.health().await.expect("healthy");
    assert_eq!(
        (health.backend, health.schema_version),
        ("postgres", SCHEMA_VERSION)
    );
}

#[tokio::test]
async fn postgres_leases_follow_the_database_clock_whatever_a_replica_clock_says() {
    let Some((_server, url)) = postgres("skew").await else {
        return;
    };
    const HOUR_MS: i64 = 3_600_000;
    let on_time = open_postgres(&url).await;
    let ahead = open_postgres(&url).await.with_clock_ahead_ms(HOUR_MS);
    let behind = open_postgres(&url).await.with_clock_ahead_ms(-HOUR_MS);

    // A replica an hour ahead cannot take over a claim whose lease has a minute to run.
    let key = MsgKey::of("skew-live");
    let Ok(Claim::Fresh(token)) = on_time.claim(&key, LEASE).await else {
        panic!("fresh");
    };
    match ahead.claim(&key, LEASE).await {
        Ok(Claim::Busy { lease_ends }) => {
            let left = lease_ends.duration_since(std::time::SystemTime::now());
            let left = left.unwrap_or_default();
            assert!(
                left > LEASE - Duration::from_secs(10) && left <= LEASE,
                "{left:?}"
            );
        }
        other => panic!("a replica whose clock is ahead took a live claim: {other:?}"),
    }
    on_time.finish(&key, &token).await.expect("finish");

    // A replica an hour behind claims a lease that lasts its minute for everyone else.
    let key = MsgKey::of("skew-behind");
    assert!(matches!(
        behind.claim(&key, LEASE).await,
        Ok(Claim::Fresh(_))
    ));
    assert!(
        matches!(on_time.claim(&key, LEASE).await, Ok(Claim::Busy { .. })),
        "the claim of a replica whose clock is behind was already over"
    );

    // The same for the making of a thread's card.
    let workspace = ThreadKey {
        slack_user: "UBOBBY".into(),
        owner: "bobby".into(),
        workspace: "skew".into(),
    };
    assert!(matches!(
        behind.claim_thread(&workspace, LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
    assert_eq!(
        ahead.claim_thread(&workspace, LEASE).await,
        Ok(ThreadClaim::Busy)
    );
}

#[tokio::test]
async fn a_postgres_database_of_the_previous_schema_version_is_upgraded() {
    let Some((_server, url)) = postgres("upgrade").await else {
        return;
    };
    PgServer::batch(&url, include_str!("../fixtures/schema/postgres-v1.sql")).await;
    // Two replicas starting together: the migration runs once, under a lock.
    let (a, b) = tokio::join!(open_postgres(&url), open_postgres(&url));
    assert_upgraded_from_v1(&a).await;
    assert_eq!(
        b.health().await.map(|h| h.schema_version),
        Ok(SCHEMA_VERSION)
    );
}

/// A bridge on `database` against `slack`.
fn replica_config(slack: &FakeSlack, database: &str) -> Config {
    let mut config = config(settings(slack));
    config.database = Location::parse(database).expect("a database URL");
    config
}

#[tokio::test]
async fn two_replicas_on_one_database_post_each_notification_once() {
    let Some((_server, url)) = postgres("replicas").await else {
        return;
    };
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let a = Bridge::start(replica_config(&slack, &url)).await;
    let b = Bridge::start(replica_config(&slack, &url)).await;
    let bodies: Vec<Value> = (0..100)
        .map(|_| workspace_deleted("bobby@coder.com"))
        .collect();
    // Each notification reaches both replicas at the same instant.
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| async { tokio::join!(a.post(body), b.post(body)) }),
    )
    .await;
    for ((status_a, _, answer_a), (status_b, _, answer_b)) in &answers {
        let mut statuses = [answer_a["status"].clone(), answer_b["status"].clone()];
        statuses.sort_by_key(Value::to_string);
        assert_eq!((status_a, status_b), (&200, &200), "{answer_a} {answer_b}");
        assert_eq!(statuses, [json!("delivered"), json!("duplicate")]);
    }
    assert_eq!(slack.calls_to("chat.postMessage").len(), 100);
    let mut posted: Vec<String> = slack
        .messages_in("DBOBBY")
        .iter()
        .map(|m| {
            m["metadata"]["event_payload"]["msg_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    posted.sort();
    posted.dedup();
    assert_eq!(posted.len(), 100, "each notification once in Bobby's DM");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_killed_mid_post_is_taken_over_without_a_second_message() {
    let Some((_server, url)) = postgres("takeover").await else {
        return;
    };
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    // Short budgets, so the dead replica's lease (budget + margin) ends within the test.
    let quick = |mut config: Config| {
        config.delivery_timeout = Duration::from_secs(2);
        config.tuning.lease_margin = Duration::ZERO;
        config
    };
    let mut a = KillableReplica::start(quick(replica_config(&slack, &url)));
    let b = Bridge::start(quick(replica_config(&slack, &url))).await;
    let body = workspace_deleted("bobby@coder.com");

    // Slack posts A's message, but A dies before the answer arrives.
    slack.lose_answer("chat.postMessage", Lost::Late(Duration::from_secs(30)));
    let client = http_client();
    let a_addr = a.addr.to_string();
    let first = tokio::spawn({
        let (client, body) = (client.clone(), body.clone());
        async move {
            let url = format!("http://{a_addr}/v1/webhook");
            client
                .post(url)
                .body(body.to_string())
                .header("content-type", "application/json")
                .send()
                .await
        }
    });
    wait_until("A's message is in Bobby's DM", WAIT, async || {
        !slack.messages_in("DBOBBY").is_empty()
    })
    .await;
    a.kill();
    assert!(
        first.await.expect("the request task").is_err(),
        "A answered after it was killed"
    );

    // Coder's retry reaches B; while A's lease lasts B is told to retry later, as Coder does.
    let answer = wait_for_answer(&b, &body).await;
    assert_eq!(answer["status"], "delivered", "{answer}");
    assert_eq!(
        slack.messages_in("DBOBBY").len(),
        1,
        "exactly one message in the DM"
    );
    assert_eq!(
        slack.calls_to("chat.postMessage").len(),
        1,
        "B did not post again"
    );
    assert_eq!(
        slack.calls_to("conversations.history").len(),
        1,
        "B read the DM back"
    );
    let posted_ts = slack.messages_in("DBOBBY")[0]["ts"].clone();
    assert_eq!(
        answer["ts"], posted_ts,
        "B answers with the message A posted"
    );
    // Further copies are duplicates.
    assert_eq!(b.post(&body).await.2, json!({"status": "duplicate"}));
    b.stop().await;
}

/// Posts `body` to `bridge` as Coder would: again after each `503` (its Retry-After cut
/// short), until a final answer or [`DEADLINE`].
async fn wait_for_answer(bridge: &Bridge, body: &Value) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _, answer) = bridge.post(body).await;
        if status != 503 {
            assert_eq!(status, 200, "{answer}");
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still 503 after {DEADLINE:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some((server, ca_pem)) = PgServer::start_with_tls().await else {
        return;
    };
    let url = server.new_database("tls").await;
    let url = url.replace("sslmode=disable", "sslmode=require");
    let slack = FakeSlack::start().await;
    let dir = fresh_dir("pg-tls");
    let ca_file = dir.join("test-ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write the CA");
    let check = |trusting_the_ca: bool| {
        let mut command = bridge_binary(&dir);
        command
            .arg("check")
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_API_URL", slack.api_url())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &url);
        if trusting_the_ca {
            command.env("SSL_CERT_FILE", &ca_file);
        }
        command
    };
    // A certificate from a CA nobody trusts is refused, as libpq's verify-full would.
    let (ok, out, _) = run_for_text(&mut check(false)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  DATABASE_URL") && out.contains("UnknownIssuer"),
        "{out}"
    );
    // With the CA in the trust store (SSL_CERT_FILE here) the same URL works, over TLS.
    let (ok, out, err) = run_for_text(&mut check(true)).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("ok    DATABASE_URL")
            && out.contains(&format!(
                "(postgres, empty: serve creates its tables at schema version {SCHEMA_VERSION})"
            )),
        "{out}"
    );
}

#[tokio::test]
async fn postgres_over_tls_trusts_the_ca_that_sslrootcert_names() {
    let Some((server, ca_pem)) = PgServer::start_with_tls().await else {
        return;
    };
    let url = server.new_database("rootcert").await;
    let slack = FakeSlack::start().await;
    let dir = fresh_dir("pg-rootcert");
    let ca_file = dir.join("test ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write the CA");
    let check = |sslrootcert: &str| {
        let url = url.replace(
            "sslmode=disable",
            &format!("sslmode=verify-full&sslrootcert={sslrootcert}"),
        );
        let mut command = bridge_binary(&dir);
        command
            .arg("check")
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_API_URL", slack.api_url())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", url);
        command
    };
    // The CA in the file the URL names (percent-encoded, as a URL needs), in no trust store.
    let encoded = ca_file.display().to_string().replace(' ', "%20");
    let (ok, out, err) = run_for_text(&mut check(&encoded)).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("ok    DATABASE_URL") && !out.contains("warn  DATABASE_URL"),
        "{out}"
    );
    // A file that cannot be read is named, at start-up.
    let missing = dir.join("missing.pem").display().to_string();
    let (ok, out, _) = run_for_text(&mut check(&missing)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  DATABASE_URL")
            && out.contains(&format!("sslrootcert {missing}: cannot read it")),
        "{out}"
    );
}

#[tokio::test]
async fn a_read_only_postgres_database_is_refused_naming_the_cause() {
    let Some((_server, url)) = postgres("readonly").await else {
        return;
    };
    drop(open_postgres(&url).await);
    let admin = url.replace("/readonly?", "/postgres?");
    PgServer::batch(
        &admin,
        "ALTER DATABASE readonly SET default_transaction_read_only = on",
    )
    .await;
    let location = Location::parse(&url).expect("a PostgreSQL URL");
    let Err(e) = Store::open(&location).await else {
        panic!("a read-only database opened");
    };
    let text = e.to_string();
    assert!(
        text.contains("failed to migrate its schema")
            && text.contains("read-only")
            && text.contains("SQLSTATE 25006"),
        "{text}"
    );
    assert!(text.contains("postgres://***@127.0.0.1"), "{text}");
}

#[tokio::test]
async fn a_store_that_stops_answering_takes_the_bridge_out_of_service() {
    let Some((server, url)) = postgres("outage").await else {
        return;
    };
    let (slack, bridge) = {
        let slack = FakeSlack::start().await;
        slack.add_user("bobby@coder.com", "UBOBBY");
        let mut config = replica_config(&slack, &url);
        // The outbox's sender would count its own looks at the dead store too.
        config.tuning.outbox.poll = Duration::from_secs(3600);
        let bridge = Bridge::start(config).await;
        (slack, bridge)
    };
    bridge.wait_ready(200).await;
    bridge.deliver(&workspace_deleted("bobby@coder.com")).await;
    drop(server);
    wait_until("/readyz answers 503", Duration::from_secs(30), async || {
        bridge.get("/readyz").await.0 == 503
    })
    .await;
    let (_, body) = bridge.get("/readyz").await;
    assert!(
        body.contains("the store (DATABASE_URL) does not answer"),
        "{body}"
    );
    // Coder is told to try again later; nothing reached Slack.
    let (status, retry_after, answer) = bridge.post(&workspace_deleted("bobby@coder.com")).await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (503, Some("60")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("store"),
        "{answer}"
    );
    assert_eq!(slack.calls_to("chat.postMessage").len(), 1);
    bridge
        .assert_metrics(&["coder_slack_bridge_store_errors_total 1"])
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_wrong_postgres_password_is_named_as_authentication_without_the_password() {
    // A password with reserved characters, percent-encoded in the URL as it must be.
    let Some((_server, url)) = PgServer::start_with_password("bridge_pw", "Sup3r/Secret#1").await
    else {
        return;
    };
    let with = |password: &str| {
        url.replacen(
            "postgres://",
            &format!("postgres://bridge_pw:{password}@"),
            1,
        )
    };

    let wrong = Location::parse(&with("Wr0ng%2FGuess%231")).expect("a PostgreSQL URL");
    let Err(e) = Store::open(&wrong).await else {
        panic!("a wrong password opened the store");
    };
    let text = e.to_string();
    assert_eq!(e.operation, "authenticate", "{text}");
    assert!(
        text.contains("failed to authenticate")
            && text.contains("SQLSTATE 28P01")
            && text.contains("postgres://***@127.0.0.1"),
        "{text}"
    );
    for piece in ["Wr0ng", "Guess", "Sup3r", "Secret", "bridge_pw:"] {
        assert!(!text.contains(piece), "{piece:?} shown in: {text}");
    }

    // The right one, encoded, opens it: the URL is read as PostgreSQL reads it.
    let right = Location::parse(&with("Sup3r%2FSecret%231")).expect("a PostgreSQL URL");
    let store = Store::open(&right)
        .await
        .expect("the right password opens the store");
    assert_eq!(store.health().await.expect("answers").backend, "postgres");
}
