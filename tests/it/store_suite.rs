//! One suite of the store's semantics, run on both backends: an SQLite file and a real
//! PostgreSQL (a server of the test's own, see `support/postgres.rs`). Every operation is
//! written once over the backend-neutral layer (`state::sql`), so what holds on one must
//! hold on the other; a difference between them fails here.

use crate::support;
use coder_slack_bridge::state::{
    Claim, Known, Location, MsgKey, Pruned, SnoozeMet, Snoozed, Store, Thread, ThreadClaim,
    ThreadKey, SCHEMA_VERSION,
};
use std::time::{Duration, SystemTime};
use support::postgres::PgServer;

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_store_suite_holds_on_an_sqlite_file() {
    let dir = support::fresh_dir("store-suite");
    let store = Store::open(&Location::Sqlite(dir.join("state.db")))
        .await
        .expect("opens");
    suite(&store, "sqlite").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_store_suite_holds_on_postgresql() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let url = server.new_database("suite").await;
    let location = Location::parse(&url).expect("a PostgreSQL URL");
    let store = Store::open(&location).await.expect("opens");
    suite(&store, "postgres").await;
}

/// Every check in turn, each on keys of its own; pruning, which forgets every handled id,
/// comes last.
async fn suite(store: &Store, backend: &str) {
    let health = store.health().await.expect("healthy");
    assert_eq!(
        (health.backend, health.schema_version),
        (backend, SCHEMA_VERSION)
    );
    a_claim_is_fresh_then_busy_then_done(store).await;
    a_released_claim_starts_fresh_and_an_unsettled_one_is_taken_over(store).await;
    an_expired_lease_is_taken_over_and_a_live_one_is_not(store).await;
    a_holder_whose_lease_was_taken_over_cannot_finish(store).await;
    claims_of_one_id_at_once_have_one_winner(store).await;
    dm_channels_are_remembered_and_replaced(store).await;
    a_thread_is_claimed_once_recorded_and_found(store).await;
    a_card_shows_its_latest_and_the_home_lists_it(store).await;
    a_snooze_holds_back_counts_and_reports_once_it_ends(store).await;
    old_ids_are_pruned_and_recent_ones_kept(store).await;
}

fn workspace_of(name: &str) -> ThreadKey {
    ThreadKey {
        slack_user: format!("U{name}"),
        owner: name.to_owned(),
        workspace: "dev".into(),
    }
}

async fn a_claim_is_fresh_then_busy_then_done(store: &Store) {
    let key = MsgKey::of("0b6e5bd4-8fd4-4c38-a6d5-0d5c8a4f4a43");
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("the first claim is fresh");
    };
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    store.finish(&key, &token).await.expect("finish");
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
    // Other keys are not affected, and text ids are kept apart from UUIDs.
    assert!(matches!(
        store.claim(&MsgKey::of("send-test-1"), LEASE).await,
        Ok(Claim::Fresh(_))
    ));
}

async fn a_released_claim_starts_fresh_and_an_unsettled_one_is_taken_over(store: &Store) {
    let key = MsgKey::of("released");
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("fresh")
    };
    store.release(&key, &token, false).await.expect("release");
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("nothing was posted: the next claim is fresh");
    };
    let before = SystemTime::now();
    store.release(&key, &token, true).await.expect("release");
    let Ok(Claim::TakenOver {
        token: next,
        first_claimed,
    }) = store.claim(&key, LEASE).await
    else {
        panic!("an unsettled claim is taken over");
    };
    assert_ne!(next, token);
    assert!(first_claimed <= before + Duration::from_millis(1));
    // The old token can no longer finish what the new one holds.
    store.finish(&key, &token).await.expect("finish");
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    store.finish(&key, &next).await.expect("finish");
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
}

async fn an_expired_lease_is_taken_over_and_a_live_one_is_not(store: &Store) {
    let key = MsgKey::of("expired");
    let Ok(Claim::Fresh(_dead)) = store.claim(&key, Duration::ZERO).await else {
        panic!("fresh")
    };
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::TakenOver { .. })
    ));
    match store.claim(&key, LEASE).await {
        Ok(Claim::Busy { lease_ends }) => assert!(lease_ends > SystemTime::now()),
        other => panic!("a live lease is not taken over: {other:?}"),
    }
}

async fn a_holder_whose_lease_was_taken_over_cannot_finish(store: &Store) {
    let key = MsgKey::of("paused-holder");
    let Ok(Claim::Fresh(paused)) = store.claim(&key, Duration::ZERO).await else {
        panic!("fresh")
    };
    let Ok(Claim::TakenOver { token: taker, .. }) = store.claim(&key, LEASE).await else {
        panic!("its lease ended: taken over");
    };
    // The paused holder comes back and marks it done: nothing changes, the taker holds it.
    store.finish(&key, &paused).await.expect("finish");
    store
        .finish_delivery(&key, &paused, None)
        .await
        .expect("finish");
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    store.release(&key, &paused, false).await.expect("release");
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    store.finish(&key, &taker).await.expect("finish");
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
}

async fn claims_of_one_id_at_once_have_one_winner(store: &Store) {
    let key = MsgKey::of("at-once");
    let claims = futures_util::future::join_all((0..50).map(|_| store.claim(&key, LEASE))).await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Fresh(_))))
        .count();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
        .count();
    assert_eq!((won, busy), (1, 49), "{claims:?}");
}

async fn dm_channels_are_remembered_and_replaced(store: &Store) {
    assert_eq!(store.dm_channel("UBOBBY").await, Ok(None));
    store.learn_dm_channel("UBOBBY", "D0").await.expect("learn");
    store.learn_dm_channel("UBOBBY", "D1").await.expect("learn");
    assert_eq!(store.dm_channel("UBOBBY").await, Ok(Some("D1".into())));
    assert_eq!(store.dm_channel("UOTHER").await, Ok(None));
}

async fn a_thread_is_claimed_once_recorded_and_found(store: &Store) {
    let key = workspace_of("thread");
    let Ok(ThreadClaim::Ours(token)) = store.claim_thread(&key, LEASE).await else {
        panic!("the first claim of a thread is ours");
    };
    assert_eq!(store.claim_thread(&key, LEASE).await, Ok(ThreadClaim::Busy));
    // Given up: the next claim makes the card.
    store.release_thread(&key, &token).await.expect("release");
    let Ok(ThreadClaim::Ours(token)) = store.claim_thread(&key, LEASE).await else {
        panic!("a released thread is claimed again");
    };
    let thread = Thread {
        channel: "DTHREAD".into(),
        card_ts: "1700000000.000100".into(),
    };
    store.set_thread(&key, &token, &thread).await.expect("set");
    assert_eq!(
        store.claim_thread(&key, LEASE).await,
        Ok(ThreadClaim::Found(thread.clone()))
    );
    // Another person's thread of the same workspace is theirs alone.
    let other = ThreadKey {
        slack_user: "UOTHER".into(),
        ..key.clone()
    };
    assert!(matches!(
        store.claim_thread(&other, LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
    // Forgetting another card leaves this one; forgetting this one starts a new thread.
    store.forget_thread(&key, "1.0").await.expect("forget");
    assert_eq!(
        store.claim_thread(&key, LEASE).await,
        Ok(ThreadClaim::Found(thread.clone()))
    );
    store
        .forget_thread(&key, &thread.card_ts)
        .await
        .expect("forget");
    assert!(matches!(
        store.claim_thread(&key, LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
    // A claim whose lease ended without a card is taken over.
    let dead = workspace_of("dead");
    let _ = store
        .claim_thread(&dead, Duration::ZERO)
        .await
        .expect("claim");
    assert!(matches!(
        store.claim_thread(&dead, LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
}

async fn a_card_shows_its_latest_and_the_home_lists_it(store: &Store) {
    let (first, second) = (
        workspace_of("home"),
        ThreadKey {
            workspace: "ci".into(),
            ..workspace_of("home")
        },
    );
    assert_eq!(store.card(&first).await, Ok(None));
    for (key, ts) in [(&first, "1.000001"), (&second, "1.000002")] {
        let Ok(ThreadClaim::Ours(token)) = store.claim_thread(key, LEASE).await else {
            panic!("ours");
        };
        let thread = Thread {
            channel: "DHOME".into(),
            card_ts: ts.into(),
        };
        store.set_thread(key, &token, &thread).await.expect("set");
    }
    let view = store.card(&first).await.expect("read").expect("a card");
    assert_eq!(
        (view.thread.card_ts.as_str(), view.latest),
        ("1.000001", None)
    );
    assert_eq!(view.snoozed_until, None);
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    store
        .set_latest(&first, "Build failed", at(1_700_000_000))
        .await
        .expect("set");
    store
        .set_latest(&second, "Started", at(1_600_000_000))
        .await
        .expect("set");
    let view = store.card(&first).await.expect("read").expect("a card");
    assert_eq!(
        view.latest,
        Some(("Build failed".into(), at(1_700_000_000)))
    );

    // The card shows a snooze in force, as the store has it when the card is rendered.
    let until = SystemTime::now() + Duration::from_secs(3600);
    store.snooze(&second, until).await.expect("snooze");
    let view = store.card(&second).await.expect("read").expect("a card");
    let shown = view.snoozed_until.expect("the snooze is on the card");
    assert!(shown.duration_since(until).unwrap_or_default() < Duration::from_millis(1));
    let home = store.home(&first.slack_user).await.expect("home");
    let known = |workspace: &str, latest: &str, secs| Known {
        owner: "home".into(),
        workspace: workspace.into(),
        latest: Some((latest.into(), at(secs))),
    };
    // Most recent first.
    assert_eq!(
        home.workspaces,
        [
            known("dev", "Build failed", 1_700_000_000),
            known("ci", "Started", 1_600_000_000)
        ]
    );
    assert_eq!(home.snoozes.len(), 1);
    let Snoozed {
        workspace,
        until: shown,
        ..
    } = &home.snoozes[0];
    assert_eq!(workspace, "ci");
    assert!(shown.duration_since(until).unwrap_or_default() < Duration::from_millis(1));
    // Someone else's home is empty.
    let empty = store.home("UNOBODY").await.expect("home");
    assert!(empty.workspaces.is_empty() && empty.snoozes.is_empty());
    // An ended snooze is no longer listed.
    store.unsnooze(&second).await.expect("unsnooze");
    assert!(store
        .home(&first.slack_user)
        .await
        .expect("home")
        .snoozes
        .is_empty());
}

async fn a_snooze_holds_back_counts_and_reports_once_it_ends(store: &Store) {
    let key = workspace_of("snooze");
    assert_eq!(store.hold_back(&key).await, Ok(None));
    assert_eq!(store.unsnooze(&key).await, Ok(false));
    let until = SystemTime::now() + Duration::from_secs(3600);
    store.snooze(&key, until).await.expect("snooze");
    for _ in 0..2 {
        let held = store.hold_back(&key).await.expect("check");
        assert!(held.is_some_and(|t| t > SystemTime::now()), "{held:?}");
    }
    // Still on: nothing to end yet.
    assert_eq!(store.end_snooze(&key).await, Ok(None));
    assert_eq!(store.unsnooze(&key).await, Ok(true));
    assert_eq!(store.hold_back(&key).await, Ok(None));
    assert_eq!(store.end_snooze(&key).await, Ok(Some(2)));
    assert_eq!(store.end_snooze(&key).await, Ok(None));
    // The same, as a delivery meets it.
    assert_eq!(store.meet_snooze(&key).await, Ok(SnoozeMet::None));
    store.snooze(&key, until).await.expect("snooze");
    assert!(matches!(
        store.meet_snooze(&key).await,
        Ok(SnoozeMet::On(t)) if t > SystemTime::now()
    ));
    store.unsnooze(&key).await.expect("unsnooze");
    // What it held back stays until a delivery that shows it is finished, so a post that
    // fails (and Coder's retry) still shows it.
    assert_eq!(store.meet_snooze(&key).await, Ok(SnoozeMet::Ended(1)));
    assert_eq!(store.meet_snooze(&key).await, Ok(SnoozeMet::Ended(1)));
    let msg = MsgKey::of("shows-the-count");
    let Ok(Claim::Fresh(token)) = store.claim(&msg, LEASE).await else {
        panic!("fresh")
    };
    store
        .finish_delivery(&msg, &token, Some(&key))
        .await
        .expect("finish");
    assert_eq!(store.claim(&msg, LEASE).await, Ok(Claim::Done));
    assert_eq!(store.meet_snooze(&key).await, Ok(SnoozeMet::None));
    // A snooze that ended having held nothing back goes at once.
    store.snooze(&key, until).await.expect("snooze");
    store.unsnooze(&key).await.expect("unsnooze");
    assert_eq!(store.meet_snooze(&key).await, Ok(SnoozeMet::None));
    assert_eq!(store.end_snooze(&key).await, Ok(None));
    // Another person's snooze of the same workspace is theirs alone.
    let other = ThreadKey {
        slack_user: "UOTHER".into(),
        ..key.clone()
    };
    store.snooze(&other, until).await.expect("snooze");
    assert_eq!(store.hold_back(&key).await, Ok(None));
}

async fn old_ids_are_pruned_and_recent_ones_kept(store: &Store) {
    let key = MsgKey::of("pruned");
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("fresh")
    };
    store.finish(&key, &token).await.expect("finish");
    // An hour's retention: every id is younger; the App Home's two threads, idle since long
    // ago (their latest is from 2023 and 2020), go; the snooze that ended now stays.
    let pruned = store.prune(Duration::from_secs(3600)).await.expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            ids: 0,
            snoozes: 0,
            threads: 2
        }
    );
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
    let home = store.home("Uhome").await.expect("home");
    assert!(home.workspaces.is_empty(), "{home:?}");
    assert!(matches!(
        store.claim_thread(&workspace_of("home"), LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
    // A cutoff of now forgets every id the suite claimed (eight keys) and the snooze that
    // ended (not the one in force, nor threads whose card is being made): ids are stamped in
    // milliseconds, and only those strictly older than the cutoff go, so the clock must
    // move past the last claim's millisecond first.
    let last_claimed = SystemTime::now();
    while SystemTime::now() < last_claimed + Duration::from_millis(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pruned = store.prune(Duration::ZERO).await.expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            ids: 8,
            snoozes: 1,
            threads: 0
        }
    );
    assert!(matches!(
        store.claim(&key, LEASE).await,
        Ok(Claim::Fresh(_))
    ));
    let in_force = ThreadKey {
        slack_user: "UOTHER".into(),
        ..workspace_of("snooze")
    };
    assert!(matches!(store.hold_back(&in_force).await, Ok(Some(_))));
}
