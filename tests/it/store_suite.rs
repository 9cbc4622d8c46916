//! One suite of the store's semantics, run on both backends: an SQLite file and a real
//! PostgreSQL (a server of the test's own, see `support/postgres.rs`). Every operation is
//! written once over the backend-neutral layer (`state::sql`), so what holds on one must
//! hold on the other; a difference between them fails here.

use crate::support;
use coder_slack_bridge::state::{
    Claim, CollapseClaim, Event, Known, Location, MsgKey, Pruned, Queued, Shown, SnoozeMet,
    Snoozed, Store, Taken, Thread, ThreadClaim, ThreadKey, ToQueue, Token, SCHEMA_VERSION,
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
    the_outbox_takes_a_claimed_notification_with_its_done_mark_or_not_at_all(store).await;
    the_outbox_gives_each_persons_first_to_one_sender_in_arrival_order(store).await;
    the_copies_of_an_event_collapse_into_one_post_within_its_window(store).await;
    old_ids_are_pruned_and_recent_ones_kept(store).await;
    a_claim_reads_the_workspace_and_the_done_mark_records_what_was_shown(store).await;
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
        .finish_delivery(&key, &paused, &Shown::default())
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

/// A delivery's two round trips: the claim with the workspace's snooze and thread, and the
/// done mark with the ended snooze and the card's latest.
async fn a_claim_reads_the_workspace_and_the_done_mark_records_what_was_shown(store: &Store) {
    let key = workspace_of("looked");
    let msg = MsgKey::of("look-1");
    let claim = |_: &str| store.claim_looking(&msg, LEASE, Some(&key));
    let Ok((Claim::Fresh(token), Some(looked))) = claim("look-1").await else {
        panic!("a fresh claim that looked");
    };
    assert_eq!(
        (looked.key.clone(), looked.snoozed, looked.thread),
        (key.clone(), false, None)
    );
    let Ok(ThreadClaim::Ours(maker)) = store.claim_thread(&key, LEASE).await else {
        panic!("ours");
    };
    // A card being made is no thread yet.
    let Ok((Claim::Busy { .. }, Some(looked))) = claim("look-1").await else {
        panic!("busy, and looked");
    };
    assert_eq!(looked.thread, None);
    let thread = Thread {
        channel: "DLOOK".into(),
        card_ts: "2.000001".into(),
    };
    store.set_thread(&key, &maker, &thread).await.expect("set");
    let until = SystemTime::now() + Duration::from_secs(3600);
    store.snooze(&key, until).await.expect("snooze");
    let Ok((Claim::Busy { .. }, Some(looked))) = claim("look-1").await else {
        panic!("busy, and looked");
    };
    assert_eq!((looked.snoozed, looked.thread), (true, Some(thread)));
    store.unsnooze(&key).await.expect("unsnooze");

    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let shown = Shown {
        snooze_ended: Some(key.clone()),
        on_card: Some((key.clone(), "Autobuild failed".into(), at)),
    };
    let msg = MsgKey::of("look-1");
    store
        .finish_delivery(&msg, &token, &shown)
        .await
        .expect("done");
    assert_eq!(store.claim(&msg, LEASE).await, Ok(Claim::Done));
    let view = store.card(&key).await.expect("read").expect("a card");
    assert_eq!(view.latest, Some(("Autobuild failed".into(), at)));
    let Ok((Claim::Done, Some(looked))) = claim("look-1").await else {
        panic!("done, and looked");
    };
    assert!(!looked.snoozed, "the ended snooze is forgotten");
    // Without a workspace to look at, the claim reads nothing more.
    assert_eq!(
        store.claim_looking(&msg, LEASE, None).await,
        Ok((Claim::Done, None))
    );
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
        .finish_delivery(
            &msg,
            &token,
            &Shown {
                snooze_ended: Some(key.clone()),
                ..Shown::default()
            },
        )
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
            threads: 2,
            events: 1,
        }
    );
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
    let home = store.home("Uhome").await.expect("home");
    assert!(home.workspaces.is_empty(), "{home:?}");
    assert!(matches!(
        store.claim_thread(&workspace_of("home"), LEASE).await,
        Ok(ThreadClaim::Ours(_))
    ));
    // A cutoff of now forgets every id the suite claimed (fifteen keys) and the snooze that
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
            ids: 15,
            snoozes: 1,
            threads: 0,
            events: 0,
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

/// Claims `msg_id` and queues it for `recipient` in an outbox of at most `max_depth`.
async fn claim_and_queue(store: &Store, msg_id: &str, recipient: &str, max_depth: u64) -> Queued {
    let key = MsgKey::of(msg_id);
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("{msg_id} claimed");
    };
    queue(store, &key, &token, msg_id, recipient, max_depth).await
}

async fn queue(
    store: &Store,
    key: &MsgKey,
    token: &Token,
    msg_id: &str,
    recipient: &str,
    max_depth: u64,
) -> Queued {
    let body = format!("{{\"msg_id\": \"{msg_id}\"}}");
    let item = ToQueue {
        key,
        token,
        msg_id,
        recipient,
        body: body.as_bytes(),
        template: "Workspace Deleted",
        reason: "slack: chat.postMessage: HTTP status 503",
        unsettled_since: None,
        max_depth,
    };
    store.queue(&item).await.expect("queued or not")
}

async fn the_outbox_takes_a_claimed_notification_with_its_done_mark_or_not_at_all(store: &Store) {
    assert_eq!(
        claim_and_queue(store, "q-one", "Ann@Coder.com", 10).await,
        Queued::Yes
    );
    // Handled from then on: Coder's retries are duplicates.
    let key = MsgKey::of("q-one");
    assert_eq!(store.claim(&key, LEASE).await, Ok(Claim::Done));
    assert_eq!(store.queued_for("ann@coder.com").await, Ok(true));
    assert_eq!(store.queued_for("bob@coder.com").await, Ok(false));
    // A full outbox takes nothing, and the claim stays this delivery's to give up.
    let full = MsgKey::of("q-full");
    let Ok(Claim::Fresh(token)) = store.claim(&full, LEASE).await else {
        panic!("claimed");
    };
    assert_eq!(
        queue(store, &full, &token, "q-full", "bob@coder.com", 1).await,
        Queued::Full { depth: 1 }
    );
    assert!(matches!(
        store.claim(&full, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    // A claim taken over by another is not queued by its old holder.
    store.release(&full, &token, true).await.expect("released");
    let Ok(Claim::TakenOver { .. }) = store.claim(&full, LEASE).await else {
        panic!("taken over");
    };
    assert_eq!(
        queue(store, &full, &token, "q-full", "bob@coder.com", 10).await,
        Queued::ClaimLost
    );
    // All or nothing: an insert that fails (here, a msg_id the outbox holds already)
    // leaves the claim as it was, not done with nothing queued.
    let other = MsgKey::of("q-other");
    let Ok(Claim::Fresh(token)) = store.claim(&other, LEASE).await else {
        panic!("claimed");
    };
    let item = ToQueue {
        key: &other,
        token: &token,
        msg_id: "q-one",
        recipient: "bob@coder.com",
        body: b"{}",
        template: "T",
        reason: "r",
        unsettled_since: None,
        max_depth: 10,
    };
    assert!(store.queue(&item).await.is_err());
    assert!(matches!(
        store.claim(&other, LEASE).await,
        Ok(Claim::Busy { .. })
    ));
    let state = store.outbox_state().await.expect("state");
    assert_eq!(state.depth, 1);
    assert!(state
        .oldest
        .is_some_and(|age| age < Duration::from_secs(60)));
    let sender = store.sender_token();
    let taken = store.take_queued(&sender, LEASE, 10).await.expect("taken");
    assert_eq!(ids(&taken), ["q-one"]);
    assert_eq!(taken[0].body, br#"{"msg_id": "q-one"}"#);
    assert_eq!((taken[0].tries, taken[0].unsettled_since), (1, None));
    store
        .unqueue(taken[0].seq, &sender, &Shown::default())
        .await
        .expect("out");
    assert_eq!(store.outbox_state().await.expect("state").depth, 0);
}

fn ids(taken: &[Taken]) -> Vec<&str> {
    taken.iter().map(|t| t.msg_id.as_str()).collect()
}

async fn the_outbox_gives_each_persons_first_to_one_sender_in_arrival_order(store: &Store) {
    for (msg_id, recipient) in [
        ("o-ann-1", "ann@coder.com"),
        ("o-ann-2", "ann@coder.com"),
        ("o-bob-1", "bob@coder.com"),
        ("o-cat-1", "cat@coder.com"),
    ] {
        assert_eq!(
            claim_and_queue(store, msg_id, recipient, 100).await,
            Queued::Yes
        );
    }
    // Two senders at once: each person's first goes to one of them, Ann's second to none.
    let (one, two) = (store.sender_token(), store.sender_token());
    let (a, b) = futures_util::future::join(
        store.take_queued(&one, LEASE, 10),
        store.take_queued(&two, LEASE, 10),
    )
    .await;
    let (a, b) = (a.expect("taken"), b.expect("taken"));
    let mut both: Vec<&str> = ids(&a).into_iter().chain(ids(&b)).collect();
    both.sort_unstable();
    assert_eq!(both, ["o-ann-1", "o-bob-1", "o-cat-1"]);
    let holder = |msg_id: &str| match a.iter().any(|t| t.msg_id == msg_id) {
        true => (&one, a.iter().find(|t| t.msg_id == msg_id)),
        false => (&two, b.iter().find(|t| t.msg_id == msg_id)),
    };
    // A failed try gives Ann's first back, due at once, remembering an unknown outcome.
    let (ann_sender, ann_first) = holder("o-ann-1");
    let ann_first = ann_first.expect("Ann's first");
    let since = SystemTime::now();
    let wrong = store.sender_token();
    store
        .retry_queued(ann_first.seq, &wrong, Duration::ZERO, "not mine", None)
        .await
        .expect("a no-op");
    store
        .retry_queued(
            ann_first.seq,
            ann_sender,
            Duration::ZERO,
            "slack: timeout",
            Some(since),
        )
        .await
        .expect("given back");
    let third = store.sender_token();
    let again = store.take_queued(&third, LEASE, 10).await.expect("taken");
    assert_eq!(
        ids(&again),
        ["o-ann-1"],
        "Ann's first again, not her second"
    );
    assert_eq!(again[0].tries, 2);
    assert_eq!(again[0].reason, "slack: timeout");
    let unsettled = again[0].unsettled_since.expect("unsettled");
    let off = unsettled
        .duration_since(since)
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_millis(2), "{off:?}");
    // Delivered: Ann's second is next.
    store
        .unqueue(again[0].seq, &third, &Shown::default())
        .await
        .expect("out");
    let next = store
        .take_queued(&third, Duration::from_millis(1), 10)
        .await;
    assert_eq!(ids(&next.expect("taken")), ["o-ann-2"]);
    // Its sender died (the lease ran out): the next reads back since it was queued.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken_over = store.take_queued(&third, LEASE, 10).await.expect("taken");
    assert_eq!(ids(&taken_over), ["o-ann-2"]);
    assert!(taken_over[0].unsettled_since.is_some(), "read back first");
    for (sender, taken) in [(&third, &taken_over), (&one, &a), (&two, &b)] {
        for t in taken.iter().filter(|t| t.msg_id != "o-ann-1") {
            store
                .unqueue(t.seq, sender, &Shown::default())
                .await
                .expect("out");
        }
    }
    assert_eq!(store.outbox_state().await.expect("state").depth, 0);
}

fn event(digest: &[u8]) -> Event<'_> {
    Event {
        channel: "CADMINS",
        digest,
    }
}

async fn the_copies_of_an_event_collapse_into_one_post_within_its_window(store: &Store) {
    const WINDOW: Duration = Duration::from_secs(600);
    let claim =
        |digest: &'static [u8], window, lease| store.claim_collapse(event(digest), window, lease);
    let Ok(CollapseClaim::Ours(maker)) = claim(b"one", WINDOW, LEASE).await else {
        panic!("the first copy posts");
    };
    assert_eq!(claim(b"one", WINDOW, LEASE).await, Ok(CollapseClaim::Busy));
    store
        .set_collapse_post(event(b"one"), &maker, "1.0001")
        .await
        .expect("recorded");
    for copies in 2..=3 {
        assert_eq!(
            claim(b"one", WINDOW, LEASE).await,
            Ok(CollapseClaim::Joined {
                ts: "1.0001".into(),
                copies
            })
        );
    }
    // Another event, and another channel, are events of their own.
    assert!(matches!(
        claim(b"two", WINDOW, LEASE).await,
        Ok(CollapseClaim::Ours(_))
    ));
    let elsewhere = Event {
        channel: "COTHER",
        digest: b"one",
    };
    let other_channel = store.claim_collapse(elsewhere, WINDOW, LEASE).await;
    assert!(matches!(other_channel, Ok(CollapseClaim::Ours(_))));
    // Copies at once: one posts.
    let at_once =
        futures_util::future::join_all((0..10).map(|_| claim(b"at-once", WINDOW, LEASE))).await;
    let ours: Vec<&Token> = at_once
        .iter()
        .filter_map(|c| match c {
            Ok(CollapseClaim::Ours(token)) => Some(token),
            _ => None,
        })
        .collect();
    assert_eq!(ours.len(), 1, "{at_once:?}");
    // A failed post gives the event to the next copy.
    store
        .release_collapse(event(b"at-once"), ours[0])
        .await
        .expect("released");
    assert!(matches!(
        claim(b"at-once", WINDOW, LEASE).await,
        Ok(CollapseClaim::Ours(_))
    ));
    // A maker that died (its lease ended) and a window that ended: a copy posts anew.
    assert!(matches!(
        claim(b"dead", WINDOW, Duration::from_millis(1)).await,
        Ok(CollapseClaim::Ours(_))
    ));
    let Ok(CollapseClaim::Ours(maker)) = claim(b"ended", Duration::from_millis(1), LEASE).await
    else {
        panic!("ours");
    };
    store
        .set_collapse_post(event(b"ended"), &maker, "2.0001")
        .await
        .expect("recorded");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        claim(b"dead", WINDOW, LEASE).await,
        Ok(CollapseClaim::Ours(_))
    ));
    let Ok(CollapseClaim::Ours(maker)) =
        claim(b"ended", Duration::from_millis(1), Duration::from_millis(1)).await
    else {
        panic!("a new event once the window ended");
    };
    store
        .set_collapse_post(event(b"ended"), &maker, "3.0001")
        .await
        .expect("recorded");
    tokio::time::sleep(Duration::from_millis(5)).await;
}
