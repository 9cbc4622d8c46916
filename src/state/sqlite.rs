//! The SQLite store: one connection on a thread of its own (SQLite's calls block, so they
//! stay off the async runtime). Operations queue to it and are run in batches, one
//! transaction per batch, and answered only after the commit: under load many claims share
//! one commit (WAL, `synchronous=NORMAL`: durable against a killed process, which is what a
//! claim needs; a power loss may undo the last commits, as for any SQLite file so set up).

use super::schema;
use super::{CardRow, Claimed, Health, HomeRows, Location, StoreError, Thread, ThreadKey, Token};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Operations waiting beyond this make their callers wait (backpressure, bounded memory).
const QUEUE: usize = 1024;
/// At most this many operations share one transaction.
const MAX_BATCH: usize = 256;
/// How long a write waits for another process holding the file's lock (a second bridge on
/// the same file, or someone's `sqlite3` shell).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// Runs in the batch's transaction, or hears why there is none.
type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Completion + Send>;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub struct Sqlite {
    jobs: mpsc::Sender<Job>,
    database: Arc<str>,
    /// Dropped with the store: the checkpointer then stops.
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
}

impl Sqlite {
    /// Opens (creating when missing) and migrates the database, on its own thread.
    pub async fn open(location: &Location) -> Result<Sqlite, StoreError> {
        let database: Arc<str> = location.shown().into();
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (opened, ready) = oneshot::channel();
        let path = match location {
            Location::Sqlite(path) => Some(path.clone()),
            _ => None,
        };
        let name = database.clone();
        let writer_name = database.clone();
        std::thread::Builder::new()
            .name("sqlite-store".into())
            .spawn(move || match connect(path.as_deref()) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    run(conn, queue, &writer_name);
                }
                Err(cause) => {
                    let _ = opened.send(Err(cause));
                }
            })
            .map_err(|e| error(&database, "start its thread", e.to_string()))?;
        match ready.await {
            Ok(Ok(())) => Ok(Sqlite {
                jobs,
                _checkpointer: match location {
                    Location::Sqlite(path) => Some(spawn_checkpointer(path.clone(), name)?),
                    _ => None,
                },
                database,
            }),
            Ok(Err(cause)) => Err(error(&database, "open", cause)),
            Err(_) => Err(error(&database, "open", "its thread stopped".into())),
        }
    }

    /// Runs `work` in the next batch's transaction; its result is given once that commits.
    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let database = self.database.clone();
        let job: Job = Box::new(move |txn| {
            let result = match txn {
                Ok(txn) => work(txn).map_err(|e| error(&database, operation, describe(&e))),
                Err(e) => Err(e.clone()),
            };
            Box::new(move |committed| {
                let _ = answer.send(match (result, committed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(e.clone()),
                    (Ok(value), Ok(())) => Ok(value),
                });
            })
        });
        let stopped = || {
            error(
                &self.database,
                operation,
                "the store's thread stopped".into(),
            )
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    pub async fn claim(
        &self,
        key: Vec<u8>,
        token: &Token,
        now: i64,
        lease_expires: i64,
    ) -> Result<Claimed, StoreError> {
        let owner = token.0.clone();
        self.call("claim a msg_id", move |txn| {
            let ours = txn
                .prepare_cached(schema::CLAIM)?
                .query_row(params![key, owner, lease_expires, now], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            if let Some((attempts, first_claimed)) = ours {
                return Ok(Claimed::Ours {
                    attempts,
                    first_claimed,
                });
            }
            let holder = txn
                .prepare_cached(schema::HOLDER)?
                .query_row(params![key], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?)))
                .optional()?;
            Ok(match holder {
                Some((done, lease_expires)) => Claimed::Held {
                    done: done != 0,
                    lease_expires,
                },
                None => Claimed::Vanished,
            })
        })
        .await
    }

    pub async fn finish(&self, key: Vec<u8>, token: &Token) -> Result<(), StoreError> {
        let owner = token.0.clone();
        self.call("mark a msg_id handled", move |txn| {
            txn.prepare_cached(schema::FINISH)?
                .execute(params![key, owner])
                .map(drop)
        })
        .await
    }

    pub async fn release(
        &self,
        key: Vec<u8>,
        token: &Token,
        maybe_posted: bool,
    ) -> Result<(), StoreError> {
        let owner = token.0.clone();
        let sql = match maybe_posted {
            true => schema::RELEASE_UNSETTLED,
            false => schema::RELEASE,
        };
        self.call("give up a claim", move |txn| {
            txn.prepare_cached(sql)?
                .execute(params![key, owner])
                .map(drop)
        })
        .await
    }

    pub async fn dm_channel(&self, user: &str) -> Result<Option<String>, StoreError> {
        let user = user.to_owned();
        self.call("read a DM channel", move |txn| {
            txn.prepare_cached(schema::DM_CHANNEL)?
                .query_row(params![user], |row| row.get(0))
                .optional()
        })
        .await
    }

    pub async fn learn_dm_channel(
        &self,
        user: &str,
        channel: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (user, channel) = (user.to_owned(), channel.to_owned());
        self.call("remember a DM channel", move |txn| {
            txn.prepare_cached(schema::LEARN_DM_CHANNEL)?
                .execute(params![user, channel, now])
                .map(drop)
        })
        .await
    }

    /// Whether the making of `key`'s card is now `token`'s.
    pub async fn claim_thread(
        &self,
        key: &ThreadKey,
        token: &Token,
        lease_expires: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (key, maker) = (key.clone(), token.0.clone());
        self.call("claim a thread", move |txn| {
            let params = params![
                key.slack_user,
                key.owner,
                key.workspace,
                maker,
                lease_expires,
                now
            ];
            let mut claim = txn.prepare_cached(schema::CLAIM_THREAD)?;
            claim
                .query_row(params, |_| Ok(()))
                .optional()
                .map(|row| row.is_some())
        })
        .await
    }

    pub async fn thread(&self, key: &ThreadKey) -> Result<Option<Thread>, StoreError> {
        let key = key.clone();
        self.call("read a thread", move |txn| {
            let row = txn
                .prepare_cached(schema::THREAD)?
                .query_row(params![key.slack_user, key.owner, key.workspace], |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<String>>(1)?,
                    ))
                })
                .optional()?;
            Ok(match row {
                Some((Some(channel), Some(card_ts))) => Some(Thread { channel, card_ts }),
                _ => None,
            })
        })
        .await
    }

    pub async fn set_thread(
        &self,
        key: &ThreadKey,
        token: &Token,
        thread: &Thread,
        now: i64,
    ) -> Result<(), StoreError> {
        let (key, maker, thread) = (key.clone(), token.0.clone(), thread.clone());
        self.call("record a thread", move |txn| {
            let params = params![
                thread.channel,
                thread.card_ts,
                now,
                key.slack_user,
                key.owner,
                key.workspace,
                maker
            ];
            txn.prepare_cached(schema::SET_THREAD)?
                .execute(params)
                .map(drop)
        })
        .await
    }

    pub async fn release_thread(&self, key: &ThreadKey, token: &Token) -> Result<(), StoreError> {
        let (key, maker) = (key.clone(), token.0.clone());
        self.call("give up a thread", move |txn| {
            let params = params![key.slack_user, key.owner, key.workspace, maker];
            txn.prepare_cached(schema::RELEASE_THREAD)?
                .execute(params)
                .map(drop)
        })
        .await
    }

    pub async fn forget_thread(&self, key: &ThreadKey, card_ts: &str) -> Result<(), StoreError> {
        let (key, card_ts) = (key.clone(), card_ts.to_owned());
        self.call("forget a thread", move |txn| {
            let params = params![key.slack_user, key.owner, key.workspace, card_ts];
            txn.prepare_cached(schema::FORGET_THREAD)?
                .execute(params)
                .map(drop)
        })
        .await
    }

    pub async fn set_latest(
        &self,
        key: &ThreadKey,
        latest: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let (key, latest) = (key.clone(), latest.to_owned());
        self.call("record a card's latest", move |txn| {
            let params = params![latest, at, key.slack_user, key.owner, key.workspace];
            txn.prepare_cached(schema::SET_LATEST)?
                .execute(params)
                .map(drop)
        })
        .await
    }

    pub async fn card(&self, key: &ThreadKey) -> Result<Option<CardRow>, StoreError> {
        let key = key.clone();
        self.call("read a card", move |txn| {
            txn.prepare_cached(schema::CARD)?
                .query_row(params![key.slack_user, key.owner, key.workspace], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
        })
        .await
    }

    pub async fn home(&self, slack_user: &str, now: i64) -> Result<HomeRows, StoreError> {
        let user = slack_user.to_owned();
        self.call("read an App Home", move |txn| {
            let snoozes = txn
                .prepare_cached(schema::SNOOZES_OF)?
                .query_map(params![user, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let workspaces = txn
                .prepare_cached(schema::THREADS_OF)?
                .query_map(params![user], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((snoozes, workspaces))
        })
        .await
    }

    /// Runs `sql` with a workspace's key (and `at`, as `$4`, when given); rows changed.
    pub async fn key_execute(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let key = key.clone();
        self.call(operation, move |txn| {
            let mut statement = txn.prepare_cached(sql)?;
            match at {
                Some(at) => {
                    statement.execute(params![key.slack_user, key.owner, key.workspace, at])
                }
                None => statement.execute(params![key.slack_user, key.owner, key.workspace]),
            }
        })
        .await
        .map(|n| n as u64)
    }

    /// Runs `sql` with a workspace's key and `at` (`$4`); the first column of its row.
    pub async fn key_query(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let key = key.clone();
        self.call(operation, move |txn| {
            txn.prepare_cached(sql)?
                .query_row(
                    params![key.slack_user, key.owner, key.workspace, at],
                    |row| row.get(0),
                )
                .optional()
        })
        .await
    }

    /// Forgets up to [`schema::PRUNE_BATCH`] ids first claimed before `cutoff`, in one
    /// transaction, so claims queued meanwhile wait little.
    pub async fn prune_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.call("prune old msg_ids", move |txn| {
            txn.prepare_cached(schema::PRUNE)?.execute(params![cutoff])
        })
        .await
        .map(|n| n as u64)
    }

    pub async fn health(&self) -> Result<Health, StoreError> {
        self.call("answer a health check", |txn| {
            // A write that changes nothing still needs the write lock and a writable file.
            txn.execute("DELETE FROM handled WHERE msg_id = x''", [])?;
            Ok(Health {
                backend: "sqlite",
                schema_version: schema_version(txn)?,
            })
        })
        .await
    }
}

fn error(database: &Arc<str>, operation: &'static str, cause: String) -> StoreError {
    StoreError {
        database: database.clone(),
        operation,
        cause,
    }
}

/// SQLite's message, with the usual fix where there is one.
pub(super) fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode as Code;
    let hint = match e.sqlite_error_code() {
        Some(Code::ReadOnly) => " (the file or its folder is read-only: the bridge must be able to write both, for the database and its -wal file)",
        Some(Code::CannotOpen) => " (does the folder exist, and may the bridge write to it?)",
        Some(Code::DatabaseBusy | Code::DatabaseLocked) => " (another process holds the file's lock)",
        Some(Code::DiskFull) => " (the disk is full)",
        Some(Code::NotADatabase) => " (the file is not an SQLite database)",
        _ => "",
    };
    format!("{e}{hint}")
}

fn connect(path: Option<&std::path::Path>) -> Result<Connection, String> {
    let mut conn = match path {
        Some(path) => Connection::open(path),
        None => Connection::open_in_memory(),
    }
    .map_err(|e| describe(&e))?;
    let setup = |conn: &mut Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never wait for the writer; NORMAL: a commit is durable against a
        // killed process without an fsync each (see the module's note).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (and their fsync) run on a thread of their own, not in a commit that
        // every queued claim waits for; see `spawn_checkpointer`.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    };
    setup(&mut conn).map_err(|e| describe(&e))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Brings the schema to [`schema::LATEST`], all in one write transaction (so two processes
/// starting on one file cannot both migrate).
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let txn = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| describe(&e))?;
    txn.execute(schema::VERSION_TABLE, [])
        .map_err(|e| describe(&e))?;
    let found = schema_version(&txn).map_err(|e| describe(&e))?;
    schema::refuse_newer(found)?;
    for (version, script) in schema::SQLITE.iter().enumerate().skip(found as usize) {
        txn.execute_batch(script).map_err(|e| {
            format!(
                "migrate to schema version {}: {}",
                version + 1,
                describe(&e)
            )
        })?;
    }
    txn.execute("DELETE FROM schema_version", [])
        .map_err(|e| describe(&e))?;
    txn.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        [schema::LATEST],
    )
    .map_err(|e| describe(&e))?;
    txn.commit().map_err(|e| describe(&e))
}

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
}

/// Copies the WAL back into the database every [`CHECKPOINT_EVERY`] on a connection and
/// thread of its own (passive: it never blocks the writer), until the store is dropped.
fn spawn_checkpointer(
    path: std::path::PathBuf,
    database: Arc<str>,
) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = Connection::open(&path)
        .and_then(|conn| conn.busy_timeout(BUSY_TIMEOUT).map(|()| conn))
        .map_err(|e| error(&database, "open its checkpointer", describe(&e)))?;
    let (keep, stop) = std::sync::mpsc::channel::<()>();
    let name = database.clone();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let checkpoint = || {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = checkpoint() {
                    tracing::warn!(error = %error(&name, "checkpoint", describe(&e)), "the store could not copy its WAL back");
                }
            }
            let _ = checkpoint();
        })
        .map_err(|e| error(&database, "start its checkpointer", e.to_string()))?;
    Ok(keep)
}

/// The store's thread: batches of queued jobs, each batch one transaction.
fn run(conn: Connection, mut queue: mpsc::Receiver<Job>, database: &Arc<str>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // BEGIN and COMMIT as cached statements: rusqlite's Transaction parses both again
        // for every batch.
        if let Err(e) = execute_cached(&conn, "BEGIN") {
            let failed = error(database, "begin a transaction", describe(&e));
            for job in batch.drain(..) {
                job(Err(&failed))(Err(&failed));
            }
            continue;
        }
        let completions: Vec<Completion> = batch.drain(..).map(|job| job(Ok(&conn))).collect();
        let committed = execute_cached(&conn, "COMMIT").map_err(|e| {
            // A failed COMMIT leaves the transaction open: end it, so the next batch begins.
            let _ = conn.execute_batch("ROLLBACK");
            error(database, "commit", describe(&e))
        });
        for complete in completions {
            complete(committed.as_ref().map(drop));
        }
    }
}

fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
pub(super) fn migrate_to(path: &std::path::Path, version: usize) {
    let conn = Connection::open(path).expect("open");
    conn.execute(schema::VERSION_TABLE, [])
        .expect("version table");
    for script in &schema::SQLITE[..version] {
        conn.execute_batch(script).expect("migrate");
    }
    conn.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        [version as i64],
    )
    .expect("record the version");
}
