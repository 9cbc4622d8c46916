//! The SQLite store: one connection on a thread of its own (SQLite's calls block, so they
//! stay off the async runtime). Operations queue to it and are run in batches, one
//! transaction per batch, and answered only after the commit: under load many claims share
//! one commit (WAL, `synchronous=NORMAL`: durable against a killed process, which is what a
//! claim needs; a power loss may undo the last commits, as for any SQLite file so set up). A
//! batch that puts a notification in the outbox commits with `synchronous=FULL`: the WAL is on
//! disk before Coder is told the notification is taken, since Coder never sends it again.

use super::sql::{Done, Row, Statement, Value};
use super::{schema, Found, Location, StoreError};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::Connection;
use std::ops::Neg;
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

/// The writer's page cache, in KiB.
const CACHE_KIB: i64 = 512;

/// A WAL longer than this many frames (4 KiB pages: 16 MiB) is started over at the next
/// checkpoint, however busy the writer is.
const RESTART_WAL_FRAMES: i64 = 4096;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A job, and whether its batch's commit must reach the disk before it is answered.
type Queued = (Job, Synced);

/// Whether a commit waits for the disk (`synchronous=FULL` for its batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    No,
    Yes,
}

pub struct Sqlite {
    jobs: mpsc::Sender<Queued>,
    database: Arc<str>,
    /// Dropped with the store: the checkpointer then stops.
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
}

impl Sqlite {
    /// Opens (creating when missing) and migrates the database, on its own thread.
    /// Opens (creating when missing) and migrates the database to `known`, on its own thread.
    pub async fn open(location: &Location, known: i64) -> Result<Sqlite, StoreError> {
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
            .spawn(move || match connect(path.as_deref(), known) {
                Ok(conn) => {
                    // Held while the store's thread runs; the kernel lets it go when the
                    // process ends, however it ends.
                    let _alone = path
                        .as_deref()
                        .and_then(|path| take_over_if_alone(&conn, path, known));
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
        synced: Synced,
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
        self.jobs.send((job, synced)).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Runs `statements` in order in the next batch's transaction; what each did, once
    /// that commits. When `atomic`, under a savepoint of their own: a failing statement
    /// undoes the ones before it (the batch's other operations stay).
    pub async fn run(
        &self,
        operation: &'static str,
        (atomic, synced): (bool, Synced),
        statements: Vec<Statement>,
    ) -> Result<Vec<Done>, StoreError> {
        self.call(operation, synced, move |txn| {
            if !atomic {
                return run_all(txn, &statements);
            }
            execute_cached(txn, "SAVEPOINT atomic")?;
            let done = run_all(txn, &statements);
            if done.is_err() {
                execute_cached(txn, "ROLLBACK TO atomic")?;
            }
            execute_cached(txn, "RELEASE atomic")?;
            done
        })
        .await
    }
}

fn run_all(txn: &Connection, statements: &[Statement]) -> rusqlite::Result<Vec<Done>> {
    let mut done = Vec::with_capacity(statements.len());
    for statement in statements {
        let this = match statement.runs_after(&done) {
            true => run_one(txn, statement)?,
            false => Done::default(),
        };
        done.push(this);
    }
    Ok(done)
}

/// One statement: its rows when it has columns (a query, or `RETURNING`), else the count.
fn run_one(txn: &Connection, statement: &Statement) -> rusqlite::Result<Done> {
    let mut prepared = txn.prepare_cached(statement.sql.sqlite)?;
    let params = rusqlite::params_from_iter(statement.params.iter());
    let columns = prepared.column_count();
    if columns == 0 {
        let changed = prepared.execute(params)?;
        return Ok(Done {
            rows: Vec::new(),
            changed: changed as u64,
        });
    }
    let rows = prepared
        .query_map(params, |row| {
            (0..columns).map(|i| value_of(row.get_ref(i)?)).collect()
        })?
        .map(|row| row.map(Row))
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    Ok(Done {
        changed: rows.len() as u64,
        rows,
    })
}

fn value_of(value: ValueRef<'_>) -> rusqlite::Result<Value> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        // The schema has no REAL column; a float here is a foreign row, kept as its integer.
        ValueRef::Real(v) => Value::Int(v as i64),
        ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Value::Blob(v.to_vec()),
    })
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
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

fn connect(path: Option<&std::path::Path>, known: i64) -> Result<Connection, String> {
    let mut conn = match path {
        Some(path) => {
            create_private(path);
            Connection::open(path)
        }
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
        // A WAL started over is cut back to this size, so a burst leaves no large file.
        conn.pragma_update(None, "journal_size_limit", RESTART_WAL_FRAMES * 4096)?;
        conn.set_prepared_statement_cache_capacity(32);
        // A smaller page cache than SQLite's 2 MiB: the pages a claim touches stay in the
        // kernel's cache anyway, and the bridge's peak memory is what operators watch.
        conn.pragma_update(None, "cache_size", CACHE_KIB.neg())?;
        Ok(())
    };
    setup(&mut conn).map_err(|e| describe(&e))?;
    migrate(&mut conn, known)?;
    Ok(conn)
}

/// When this process is the only bridge on the file (it holds an exclusive lock on
/// `FILE.lock`, kept until the process ends), whatever a claim, a card's making or an
/// outbox send holds under a live lease was left by a bridge that died (a SIGKILL, a crash,
/// a lost host): its leases end now, so Coder's next retry takes the notification over at
/// once (reading the DM back first) instead of waiting out a lease nobody will release.
/// With another process on the file, leases end as they would.
fn take_over_if_alone(
    conn: &Connection,
    path: &std::path::Path,
    known: i64,
) -> Option<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(&lock_path).ok()?;
    lock.try_lock().ok()?;
    let mut ended = 0;
    let statements = schema::END_DEAD_LEASES
        .iter()
        .filter(|(from, _)| known >= *from);
    for (_, sql) in statements {
        match conn.execute(sql, []) {
            Ok(n) => ended += n,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot end the leases a stopped bridge left")
            }
        }
    }
    if ended > 0 {
        tracing::info!(leases = ended, "the previous bridge on this file stopped in the middle of its work: what it held is taken over (read back before anything is posted again)");
    }
    Some(lock)
}

/// Creates the database file (empty: SQLite takes that as a new database) readable and
/// writable by the bridge's user alone, when it is not there yet: SQLite would create it 0644
/// (less the umask), readable by every user of the host, and it gives the -wal and -shm files
/// it makes beside it the main file's mode. An existing file keeps the mode it has; a file
/// that cannot be created is left to SQLite, whose error names the cause.
fn create_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// Brings the schema to `known` (this build: [`schema::LATEST`]) as [`schema::plan`] says,
/// all in one write transaction (so two processes starting on one file cannot both migrate);
/// a newer database this bridge can read is used as it is.
fn migrate(conn: &mut Connection, known: i64) -> Result<(), String> {
    let txn = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| describe(&e))?;
    txn.execute(schema::VERSION_TABLE, [])
        .map_err(|e| describe(&e))?;
    let (found, oldest_reader) = schema_version(&txn).map_err(|e| describe(&e))?;
    if schema::plan(found, oldest_reader, known)? != schema::Plan::Migrate {
        return txn.commit().map_err(|e| describe(&e));
    }
    let upto = usize::try_from(known).unwrap_or(0);
    for (version, script) in schema::SQLITE[..upto]
        .iter()
        .enumerate()
        .skip(found as usize)
    {
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
    let recorded = match known >= schema::RECORDS_OLDEST_READER {
        true => txn.execute(
            schema::RECORD_VERSION,
            [known, schema::oldest_reader(known)],
        ),
        false => txn.execute(schema::RECORD_VERSION_ONLY, [known]),
    };
    recorded.map_err(|e| describe(&e))?;
    txn.commit().map_err(|e| describe(&e))
}

/// The schema of the database file at `path` as found, opened read-only: nothing is
/// created, migrated or written (`check`). `None` when there is no file yet.
pub fn inspect(path: &std::path::Path) -> Result<Option<Found>, String> {
    if !path.exists() {
        let folder = folder_of(path);
        if !folder.is_dir() {
            return Err(format!(
                "cannot create {}: the folder {} does not exist (does the folder exist, and may the bridge write to it?)",
                path.display(),
                folder.display()
            ));
        }
        if !may_write(folder) {
            return Err(format!(
                "cannot create {}: this user may not write to the folder {}",
                path.display(),
                folder.display()
            ));
        }
        return Ok(None);
    }
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| describe(&e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| describe(&e))?;
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| describe(&e))?;
    let (version, oldest_reader) = match has_table {
        true => schema_version(&conn).map_err(|e| describe(&e))?,
        false => (0, None),
    };
    Ok(Some(Found {
        version,
        oldest_reader,
        read_only: !writable(path),
    }))
}

/// Whether this process may write the file and its folder (for the -wal and -shm files).
fn writable(path: &std::path::Path) -> bool {
    may_write(path) && may_write(folder_of(path))
}

fn folder_of(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}

/// `access(2)` with `W_OK`: what this process's user may write, without writing.
fn may_write(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The version a database records, and its oldest reader once it records one.
pub(super) fn schema_version(conn: &Connection) -> rusqlite::Result<(i64, Option<i64>)> {
    let found: i64 = conn.query_row(schema::VERSION, [], |row| row.get(0))?;
    let oldest_reader = match found >= schema::RECORDS_OLDEST_READER {
        true => conn.query_row(schema::OLDEST_READER_OF, [], |row| row.get(0))?,
        false => None,
    };
    Ok((found, oldest_reader))
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
            let checkpoint = || checkpoint(&conn, RESTART_WAL_FRAMES);
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

/// Copies the WAL back into the database. Passive: what it can without waiting. Under a
/// steady stream of writes that never catches up, and the WAL would grow as long as the
/// stream lasts (to hundreds of MB in minutes of a load test): past `restart_frames`, a
/// restart checkpoint holds the writer off until it is done, so the next write starts the
/// WAL over (the writer's batches begin IMMEDIATE, so they wait for it, see [`run`]).
pub(super) fn checkpoint(conn: &Connection, restart_frames: i64) -> rusqlite::Result<()> {
    let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    })?;
    if frames > restart_frames {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// The store's thread: batches of queued jobs, each batch one transaction.
fn run(conn: Connection, mut queue: mpsc::Receiver<Queued>, database: &Arc<str>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let synced = batch.iter().any(|(_, synced)| *synced == Synced::Yes);
        let committed = run_batch(&conn, batch.drain(..).map(|(job, _)| job), synced, database);
        for complete in committed.completions {
            complete(committed.result.as_ref().map(drop));
        }
    }
}

/// What one batch's jobs await, and how its commit went.
struct Committed {
    completions: Vec<Completion>,
    result: Result<(), StoreError>,
}

/// One batch: one transaction, `synchronous=FULL` for its commit when `synced`.
fn run_batch(
    conn: &Connection,
    jobs: impl Iterator<Item = Job>,
    synced: bool,
    database: &Arc<str>,
) -> Committed {
    let synced = synced && execute_cached(conn, "PRAGMA synchronous = FULL").is_ok();
    // BEGIN and COMMIT as cached statements: rusqlite's Transaction parses both again
    // for every batch. IMMEDIATE: the write lock is taken (or waited for, within the
    // busy timeout) before the first read; a batch that read first and then found the
    // checkpointer holding the lock would fail at once, as SQLite does not wait there.
    let committed = match execute_cached(conn, "BEGIN IMMEDIATE") {
        Err(e) => {
            let failed = error(database, "begin a transaction", describe(&e));
            let completions = jobs.map(|job| job(Err(&failed))).collect();
            Committed {
                completions,
                result: Err(failed),
            }
        }
        Ok(()) => {
            let completions = jobs.map(|job| job(Ok(conn))).collect();
            let result = execute_cached(conn, "COMMIT").map_err(|e| {
                // A failed COMMIT leaves the transaction open: end it, so the next batch begins.
                let _ = conn.execute_batch("ROLLBACK");
                error(database, "commit", describe(&e))
            });
            Committed {
                completions,
                result,
            }
        }
    };
    if synced {
        let _ = execute_cached(conn, "PRAGMA synchronous = NORMAL");
    }
    committed
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
