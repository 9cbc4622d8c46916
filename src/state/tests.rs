//! What only an SQLite file shows: state that outlives the store, upgrades of earlier schema
//! versions, refusals of a newer schema and of unwritable places. The store's semantics are
//! one suite run on both backends (`tests/it/store_suite.rs`).

use super::*;
use std::path::PathBuf;

/// A database file in a folder of its own, removed with the folder when the test ends.
struct TempDb {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_db(name: &str) -> TempDb {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("csb-state-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp folder");
    let path = dir.join("state.db");
    TempDb { dir, path }
}

async fn open(path: &std::path::Path) -> Store {
    Store::open(&Location::Sqlite(path.to_owned()))
        .await
        .expect("opens")
}

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn state_outlives_the_store_and_old_ids_are_pruned() {
    let db = temp_db("reopen");
    let path = &db.path;
    let store = open(path).await;
    let (old, new) = (MsgKey::of("old"), MsgKey::of("new"));
    for key in [&old, &new] {
        let Ok(Claim::Fresh(token)) = store.claim(key, LEASE).await else {
            panic!()
        };
        store.finish(key, &token).await.expect("finish");
    }
    store
        .learn_dm_channel("UBOBBY", "D0BOBBY")
        .await
        .expect("learn");
    drop(store);

    let store = open(path).await;
    assert_eq!(store.claim(&new, LEASE).await, Ok(Claim::Done));
    assert_eq!(store.dm_channel("UBOBBY").await, Ok(Some("D0BOBBY".into())));
    assert_eq!(store.dm_channel("UOTHER").await, Ok(None));
    assert_eq!(
        store.prune(Duration::from_secs(3600)).await.map(|p| p.ids),
        Ok(0)
    );
    assert_eq!(store.prune(Duration::ZERO).await.map(|p| p.ids), Ok(2));
    assert!(matches!(
        store.claim(&old, LEASE).await,
        Ok(Claim::Fresh(_))
    ));
    assert_eq!(
        store.health().await,
        Ok(Health {
            backend: "sqlite",
            schema_version: schema::LATEST
        })
    );
}

#[tokio::test]
async fn a_database_of_every_earlier_version_is_upgraded_keeping_its_rows() {
    for version in 1..schema::LATEST as usize {
        let db = temp_db("migrate");
        let path = &db.path;
        sqlite::migrate_to(path, version);
        {
            // A handled id, as that version's bridge left it.
            let conn = rusqlite::Connection::open(path).expect("open");
            conn.execute(
                "INSERT INTO handled (msg_id, owner, done, attempts, lease_expires, created_at) VALUES (x'01', 'old', 1, 1, 0, $1)",
                [unix_ms(SystemTime::now())],
            )
            .expect("a row");
        }
        let store = open(path).await;
        assert_eq!(
            store.health().await.map(|h| h.schema_version),
            Ok(schema::LATEST)
        );
        assert_eq!(
            store.claim(&MsgKey::Other("\u{1}".into()), LEASE).await,
            Ok(Claim::Done),
            "from version {version}"
        );
        store
            .learn_dm_channel("U1", "D1")
            .await
            .expect("the new table is there");
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused_rather_than_guessed_at() {
    let db = temp_db("newer");
    let path = &db.path;
    sqlite::migrate_to(path, schema::LATEST as usize);
    rusqlite::Connection::open(path)
        .and_then(|c| c.execute("UPDATE schema_version SET version = 99", []))
        .expect("bump");
    let Err(e) = Store::open(&Location::Sqlite(path.clone())).await else {
        panic!("a newer schema opened");
    };
    assert!(e.to_string().contains("schema version 99"), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[tokio::test]
async fn an_unwritable_place_is_named_with_its_cause() {
    let Err(e) = Store::open(&Location::Sqlite("/nonexistent-folder/state.db".into())).await else {
        panic!("opened a database in a folder that does not exist");
    };
    let text = e.to_string();
    assert!(
        text.contains("sqlite:///nonexistent-folder/state.db"),
        "{text}"
    );
    assert!(text.contains("does the folder exist"), "{text}");
}

#[tokio::test]
async fn a_read_only_database_is_refused_at_open() {
    let db = temp_db("readonly");
    let path = &db.path;
    drop(open(path).await);
    // Root ignores file modes, so the file is opened read-only through SQLite's own URI.
    let uri = format!("file:{}?mode=ro", path.display());
    let conn = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .expect("open read-only");
    let e = conn
        .execute("DELETE FROM handled WHERE msg_id = x''", [])
        .unwrap_err();
    assert!(sqlite::describe(&e).contains("read-only"), "{e}");
}

#[test]
fn uuids_are_keyed_on_their_bytes_and_other_ids_on_their_text() {
    let id = "0b6e5bd4-8fd4-4c38-a6d5-0d5c8a4f4a43";
    assert_eq!(MsgKey::of(id), MsgKey::of(&id.to_uppercase()));
    assert!(matches!(MsgKey::of(id), MsgKey::Uuid(_)));
    assert_eq!(MsgKey::of(id).bytes().len(), 16);
    assert_eq!(
        MsgKey::of("send-test-1"),
        MsgKey::Other("send-test-1".into())
    );
    assert_ne!(MsgKey::of("send-test-1"), MsgKey::of("send-test-2"));
}

/// The raw version record of the database at `path`.
fn recorded_version(path: &std::path::Path) -> (i64, Option<i64>) {
    let conn = rusqlite::Connection::open(path).expect("open");
    sqlite::schema_version(&conn).expect("read the version")
}

#[tokio::test]
async fn a_database_migrated_by_this_build_keeps_working_for_the_previous_one() {
    let db = temp_db("rollback");
    let location = Location::Sqlite(db.path.clone());
    let store = Store::open(&location).await.expect("opens");
    let key = MsgKey::of("before-the-rollback");
    let Ok(Claim::Fresh(token)) = store.claim(&key, LEASE).await else {
        panic!("fresh")
    };
    store.finish(&key, &token).await.expect("finish");
    drop(store);
    assert_eq!(recorded_version(&db.path), (schema::LATEST, Some(1)));

    // A replica of the previous release (a rolling update, or a rollback) opens it: it works,
    // and neither migrates it back nor rewrites its version.
    let previous = Store::open_knowing(&location, schema::LATEST - 1)
        .await
        .expect("the previous build opens a database this one migrated");
    assert_eq!(previous.claim(&key, LEASE).await, Ok(Claim::Done));
    let next = MsgKey::of("after-the-rollback");
    let Ok(Claim::Fresh(token)) = previous.claim(&next, LEASE).await else {
        panic!("fresh")
    };
    previous.finish(&next, &token).await.expect("finish");
    previous
        .learn_dm_channel("UBOBBY", "DBOBBY")
        .await
        .expect("write");
    drop(previous);
    assert_eq!(recorded_version(&db.path), (schema::LATEST, Some(1)));
}

#[tokio::test]
async fn a_database_that_needs_a_newer_bridge_is_refused_naming_the_versions() {
    let db = temp_db("needs-newer");
    let location = Location::Sqlite(db.path.clone());
    drop(Store::open(&location).await.expect("opens"));
    let newer = schema::LATEST + 1;
    rusqlite::Connection::open(&db.path)
        .and_then(|c| {
            c.execute(
                "UPDATE schema_version SET version = $1, oldest_reader = $1",
                [newer],
            )
        })
        .expect("a newer bridge that changed what this one relies on");
    let Err(e) = Store::open(&location).await else {
        panic!("opened a database it cannot read");
    };
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "schema version {newer}, which needs a bridge that knows version {newer}"
        )),
        "{text}"
    );
    assert_eq!(recorded_version(&db.path), (newer, Some(newer)));
}

/// A restart checkpoint (what the checkpointer runs once the WAL passes its bound) holds the
/// writer off while it runs: the store's batches, which begin with a claim's reads, wait for
/// it; not one fails with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_out_restart_checkpoints_and_none_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = temp_db("restart");
    let store = open(&db.path).await;
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = std::thread::spawn({
        let (stop, path) = (stop.clone(), db.path.clone());
        move || {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
            let mut restarts = 0u32;
            while !stop.load(Ordering::Relaxed) {
                sqlite::checkpoint(&conn, 0).expect("checkpoint");
                restarts += 1;
            }
            restarts
        }
    });
    let key = ThreadKey {
        slack_user: "URESTART".into(),
        owner: "restart".into(),
        workspace: "dev".into(),
    };
    let deliveries = (0..20).map(|task| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            for n in 0..200 {
                let msg = MsgKey::of(&format!("restart-{task}-{n}"));
                let claimed = store.claim_looking(&msg, LEASE, Some(&key)).await;
                let Ok((Claim::Fresh(token), Some(_))) = claimed else {
                    panic!("a claim failed: {claimed:?}");
                };
                let shown = Shown::default();
                let done = store.finish_delivery(&msg, &token, &shown).await;
                done.expect("a done mark failed");
            }
        })
    });
    let finished = futures_util::future::join_all(deliveries).await;
    stop.store(true, Ordering::Relaxed);
    let restarts = checkpointer.join().expect("the checkpointer ran");
    assert!(finished.iter().all(Result::is_ok), "{finished:?}");
    assert!(restarts > 0);
}

/// A batch that finds another connection holding the write lock (the checkpointer's restart,
/// a second bridge, someone's `sqlite3` shell) waits for it within the busy timeout instead
/// of failing at once, even when its first statement only reads.
#[tokio::test]
async fn a_batch_waits_for_the_write_lock_rather_than_failing() {
    let db = temp_db("locked");
    let store = open(&db.path).await;
    let other = rusqlite::Connection::open(&db.path).expect("open");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let key = ThreadKey {
        slack_user: "ULOCKED".into(),
        owner: "locked".into(),
        workspace: "dev".into(),
    };
    let msg = MsgKey::of("locked-1");
    let claim = store.claim_looking(&msg, LEASE, Some(&key));
    tokio::pin!(claim);
    // Failing at once is the bug; still waiting after a while is the fix.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut claim).await;
    assert!(early.is_err(), "the claim did not wait: {early:?}");
    other.execute_batch("COMMIT").expect("let go");
    let claimed = tokio::time::timeout(Duration::from_secs(10), claim).await;
    assert!(
        matches!(claimed, Ok(Ok((Claim::Fresh(_), Some(_))))),
        "{claimed:?}"
    );
}

/// What `Store::queue` answers for is on disk before the answer: its batch commits with
/// `synchronous=FULL` (Coder never resends a notification it was told is taken); the other
/// batches keep `NORMAL`, durable against a killed process without an fsync each.
#[tokio::test]
async fn a_synced_batch_commits_with_full_sync_and_the_others_with_normal() {
    let db = temp_db("synced");
    let store = open(&db.path).await;
    let look = || vec![statement("PRAGMA synchronous", [])];
    let level = |done: Result<Vec<Done>, StoreError>| {
        let done = done.expect("runs");
        done.first()
            .and_then(Done::first)
            .and_then(|r| r.int(0).ok())
    };
    let synced = store.run_atomically("look", Synced::Yes, look()).await;
    assert_eq!(level(synced), Some(2), "FULL");
    let after = store.run("look", Commit::Durable, look()).await;
    assert_eq!(level(after), Some(1), "NORMAL again");
    let atomic = store.run_atomically("look", Synced::No, look()).await;
    assert_eq!(level(atomic), Some(1), "NORMAL");
}
