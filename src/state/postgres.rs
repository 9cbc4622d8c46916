//! The PostgreSQL store, for replicas sharing one database: small pools of connections
//! (tokio-postgres, asynchronous all the way), statements prepared once per connection.
//! Claims are single `INSERT … ON CONFLICT` statements, so two replicas claiming one
//! `msg_id` at the same instant cannot both win. TLS (`sslmode=require`) verifies the
//! server's certificate against the system's roots, or the CAs `sslrootcert` names.
//!
//! Claims commit durably (they must survive a server crash: a lost claim could let a copy
//! post again). Everything after a claim (done marks, releases, DM channels, pruning) goes
//! through connections with `synchronous_commit=off`: such a commit is not waited for on
//! disk, which halves the fsyncs per notification, and losing one in a server crash is
//! safe: the claim stays, its lease ends, and whoever takes it over reads the DM back.
//! Connections make their settings with `SET` after connecting, never as startup options,
//! which poolers such as PgBouncer refuse (session pooling: see the README).
//!
//! After a failover or a partition in which the old server vanished without a reset, every
//! pooled connection leads nowhere while a new one would work at once: a connection that
//! times out or fails on its socket is closed (its statement cancelled, best effort), every
//! connection made before it is dropped rather than handed out, an idle one answers a check
//! first, and the kernel gives up on a silent connection in seconds (TCP user timeout,
//! keepalives) rather than minutes. The server ends a statement before the bridge would
//! give up on it (`statement_timeout`).

use super::sql::{Commit, Done, Row, RunsIf, Statement, Value};
use super::{schema, Found, Location, StoreError};
use bytes::BytesMut;
use deadpool_postgres::{
    GenericClient, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime,
};
use futures_util::future::try_join_all;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};

/// Connections per replica for claims and for the rest: statements are short, and
/// PostgreSQL's default limit is 100 connections in all.
const CLAIM_POOL_SIZE: usize = 8;
const RELAXED_POOL_SIZE: usize = 4;
/// For connecting, for a free connection, and for one operation.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The least time a host gets to accept a connection, however many the URL names.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The server ends a statement after this, before the bridge gives up on it ([`TIMEOUT`]),
/// so nothing the bridge abandoned keeps running (or waiting for a lock) there.
const STATEMENT_TIMEOUT: &str = "4s";
/// A pooled connection idle longer than this is asked for an (empty) answer before it is
/// handed out, within [`VERIFY_TIMEOUT`]: after a failover or a partition an idle
/// connection may lead nowhere, and nothing on it says so.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);
const VERIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request to cancel an abandoned statement may take (best effort: the server
/// may be the one that vanished).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);
/// The kernel closes a connection whose data stays unacknowledged this long (by default it
/// retransmits for ~15 minutes), and probes an idle one: a dead path is found in seconds.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_RETRIES: u32 = 3;
/// tokio-postgres's default idle time before keepalives (two hours): the URL set none.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// How long a migration waits for a lock another session holds (below [`TIMEOUT`], so the
/// bridge can still say who holds it).
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// Serialises migrations of replicas starting together (any fixed number: "csb" + 1).
const MIGRATION_LOCK: i64 = 0x0063_7362_0001;

pub struct Postgres {
    /// Durable commits: claims, and the schema.
    durable: Pool,
    /// `synchronous_commit=off`: what may be lost in a server crash (see the module's note).
    relaxed: Pool,
    /// For requests to cancel a statement the bridge gave up on.
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Shared with both pools' checks (see [`LastFailure`]).
    last_failure: Arc<LastFailure>,
    database: Arc<str>,
}

/// A pooled connection lent to one operation. Unless given back, it is dropped with the
/// operation (which timed out, failed on the socket, or was abandoned by its caller: its
/// state is unknown) and taken out of its pool for good, closing it; every connection made
/// before it is then suspect too (see [`LastFailure`]).
struct Lent<'a> {
    client: Option<Object>,
    last_failure: &'a LastFailure,
}

impl Lent<'_> {
    fn client(&mut self) -> &mut Object {
        self.client
            .as_mut()
            .expect("lent until given back or dropped")
    }

    /// Back to its pool, for the next operation (as any [`Object`] dropped goes).
    fn give_back(mut self) {
        drop(self.client.take());
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.last_failure.mark();
            drop(Object::take(client));
        }
    }
}

/// When a connection last failed (timed out, or an I/O error): the connections made before
/// then may share its dead path (a failover, a partition), so the pools hand none of them
/// out again; new connections are made instead, which work at once if the server does.
#[derive(Debug, Default)]
struct LastFailure(Mutex<Option<Instant>>);

impl LastFailure {
    fn mark(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether a connection made at `created` is older than the last failure.
    fn outdates(&self, created: Instant) -> bool {
        let last = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|failed| created <= failed)
    }
}

impl Postgres {
    /// Connects and migrates to `known` (see [`Postgres::migrate`]).
    pub async fn open(location: &Location, known: i64) -> Result<Postgres, StoreError> {
        if let Some(warning) = location.tls_warning() {
            tracing::warn!("{warning}");
        }
        let store = Postgres::connect_to(location).await?;
        store.migrate(known).await?;
        Ok(store)
    }

    /// The database's schema as found, without writing anything (`check`): its version, its
    /// oldest reader, and whether the server takes writes.
    pub async fn inspect(location: &Location) -> Result<Found, StoreError> {
        let store = Postgres::connect_to(location).await?;
        let found = store
            .with_client(
                "read its schema",
                Commit::Durable,
                async |client: &mut Object| {
                    let has_table: bool = client
                        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
                        .await?
                        .get(0);
                    let read_only: bool = client
                        .query_one("SELECT pg_is_in_recovery()", &[])
                        .await?
                        .get(0);
                    let (version, oldest_reader) = match has_table {
                        false => (0, None),
                        true => {
                            let found: i64 = client.query_one(schema::VERSION, &[]).await?.get(0);
                            let oldest = match found >= schema::RECORDS_OLDEST_READER {
                                true => client
                                    .query_one(schema::OLDEST_READER_OF, &[])
                                    .await?
                                    .get(0),
                                false => None,
                            };
                            (found, oldest)
                        }
                    };
                    Ok(Found {
                        version,
                        oldest_reader,
                        read_only,
                    })
                },
            )
            .await?;
        // The other pool's connections (their settings made after connecting) work too.
        store
            .setting_on_each_pool("synchronous_commit")
            .await
            .map(|_| found)
    }

    /// `name`'s value as each pool's connections see it: durable first, then relaxed.
    pub async fn setting_on_each_pool(&self, name: &str) -> Result<[String; 2], StoreError> {
        let read = |commit| {
            self.with_client(
                "read a setting on each of its connection pools",
                commit,
                async |client: &mut Object| {
                    let row = client
                        .query_one("SELECT current_setting($1)", &[&name])
                        .await?;
                    Ok(row.get::<_, String>(0))
                },
            )
        };
        let (durable, relaxed) =
            futures_util::future::try_join(read(Commit::Durable), read(Commit::Relaxed)).await?;
        Ok([durable, relaxed])
    }

    /// The pools, with one connection made (so a failure names its step).
    async fn connect_to(location: &Location) -> Result<Postgres, StoreError> {
        let database: Arc<str> = location.shown().into();
        let fail = |operation, cause| StoreError {
            database: database.clone(),
            operation,
            cause,
        };
        let Some(config) = location.postgres_config() else {
            return Err(fail(
                "open",
                "DATABASE_URL is not a postgres:// URL".to_owned(),
            ));
        };
        let config = connection_config(config);
        let tls = tls(location.root_cert())
            .await
            .map_err(|cause| fail("set up TLS", cause))?;
        let last_failure = Arc::new(LastFailure::default());
        let pool = |commit, size| {
            let settings = session_settings(commit);
            pool(
                config.clone(),
                tls.clone(),
                size,
                settings,
                last_failure.clone(),
            )
            .map_err(|e| fail("set up its connection pool", e))
        };
        let store = Postgres {
            durable: pool(Commit::Durable, CLAIM_POOL_SIZE)?,
            relaxed: pool(Commit::Relaxed, RELAXED_POOL_SIZE)?,
            tls: tls.clone(),
            last_failure,
            database,
        };
        // One connection first, so a failure names its step (connect or authenticate)
        // rather than the migration that would have been next.
        store.connect().await?;
        Ok(store)
    }

    /// A connection from the durable pool (kept there for the migration).
    async fn connect(&self) -> Result<(), StoreError> {
        let e = match self.durable.get().await {
            Ok(_client) => return Ok(()),
            Err(e) => e,
        };
        let operation = match &e {
            PoolError::Backend(e) if credentials_refused(e) => "authenticate",
            _ => "connect",
        };
        Err(StoreError {
            database: self.database.clone(),
            operation,
            cause: describe_pool(&e),
        })
    }

    /// Runs `work` on a pooled connection, bounded by [`TIMEOUT`]. A connection that timed
    /// out, failed on its socket or was abandoned mid-operation is never pooled again (see
    /// [`Lent`]).
    async fn with_client<T>(
        &self,
        operation: &'static str,
        commit: Commit,
        work: impl AsyncFnOnce(&mut Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let fail = |cause| StoreError {
            database: self.database.clone(),
            operation,
            cause,
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let no_answer = || fail(format!("no answer within {}s", TIMEOUT.as_secs()));
        let pool = match commit {
            Commit::Durable => &self.durable,
            Commit::Relaxed => &self.relaxed,
        };
        let client = match tokio::time::timeout_at(deadline, pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(fail(describe_pool(&e))),
            Err(_) => return Err(no_answer()),
        };
        let mut lent = Lent {
            client: Some(client),
            last_failure: &self.last_failure,
        };
        match tokio::time::timeout_at(deadline, work(lent.client())).await {
            Ok(Ok(value)) => {
                lent.give_back();
                Ok(value)
            }
            Ok(Err(e)) => {
                if !connection_broken(&e) {
                    lent.give_back();
                }
                Err(fail(describe(&e)))
            }
            Err(_) => {
                // The server may still be running it (or waiting for a lock): best effort.
                let token = lent.client().cancel_token();
                drop(lent);
                let cancelled = token.cancel_query(self.tls.clone());
                if let Ok(Err(e)) = tokio::time::timeout(CANCEL_TIMEOUT, cancelled).await {
                    tracing::debug!(error = %describe(&e), "could not cancel an abandoned statement");
                }
                Err(no_answer())
            }
        }
    }

    /// Brings the schema to `known` as [`schema::plan`] says, in one transaction under an
    /// advisory lock (replicas starting together migrate once); a newer database this bridge
    /// can read is used as it is, and nothing is written then. A lock another session holds
    /// stops it within [`MIGRATION_LOCK_TIMEOUT`], naming that session, rather than leave
    /// its request queued on the server with every replica's reads of the table behind it.
    async fn migrate(&self, known: i64) -> Result<(), StoreError> {
        const OPERATION: &str = "migrate its schema";
        let planned =
            self.with_client(OPERATION, Commit::Durable, async |client: &mut Object| {
                match migrate_on(client, known).await {
                    Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                        Ok(Err((OPERATION, lock_holders(client).await?)))
                    }
                    planned => planned.map(|planned| planned.map_err(|why| ("open", why))),
                }
            })
            .await?;
        planned.map(drop).map_err(|(operation, cause)| StoreError {
            database: self.database.clone(),
            operation,
            cause,
        })
    }

    /// Runs `statements` in order on one pooled connection; what each did. As separate
    /// statements (each atomic on its own, which is all most operations need), or, when
    /// `atomic`, in one transaction: all of them or none.
    pub async fn run(
        &self,
        operation: &'static str,
        commit: Commit,
        atomic: bool,
        statements: Vec<Statement>,
    ) -> Result<Vec<Done>, StoreError> {
        self.with_client(operation, commit, async move |client: &mut Object| {
            if !atomic {
                return run_all(&*client, &statements).await;
            }
            let txn = client.transaction().await?;
            let done = run_all(&txn, &statements).await?;
            txn.commit().await?;
            Ok(done)
        })
        .await
    }
}

/// Runs `statements` in order. A statement that always runs needs nothing from the ones
/// before it, so it goes out with them: they are pipelined on the connection, one round trip
/// to the server for the lot (a delivery's claim and its reads, its done mark and what its
/// message showed). Outside a transaction, one that fails does not stop those sent with it
/// (each is atomic on its own, as [`Postgres::run`] says); inside one, the server refuses
/// the rest, and nothing is committed.
async fn run_all(
    client: &impl GenericClient,
    statements: &[Statement],
) -> Result<Vec<Done>, tokio_postgres::Error> {
    let mut done = Vec::with_capacity(statements.len());
    let mut rest = statements;
    while let Some(first) = rest.first() {
        let always = rest[1..].iter().take_while(|s| s.runs_if == RunsIf::Always);
        let (group, after) = rest.split_at(1 + always.count());
        let sent = match first.runs_after(&done) {
            true => group,
            false => {
                done.push(Done::default());
                &group[1..]
            }
        };
        let answers = try_join_all(sent.iter().map(|s| run_one(client, s))).await?;
        done.extend(answers);
        rest = after;
    }
    Ok(done)
}

/// The migration itself, in one transaction (see [`Postgres::migrate`]).
async fn migrate_on(
    client: &mut Object,
    known: i64,
) -> Result<Result<schema::Plan, String>, tokio_postgres::Error> {
    let txn = client.transaction().await?;
    txn.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}s'; SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'",
        MIGRATION_LOCK_TIMEOUT.as_secs()
    ))
    .await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(schema::VERSION_TABLE).await?;
    let found: i64 = txn.query_one(schema::VERSION, &[]).await?.get(0);
    let oldest_reader: Option<i64> = match found >= schema::RECORDS_OLDEST_READER {
        true => txn.query_one(schema::OLDEST_READER_OF, &[]).await?.get(0),
        false => None,
    };
    let planned = schema::plan(found, oldest_reader, known);
    if planned != Ok(schema::Plan::Migrate) {
        return Ok(planned);
    }
    let upto = usize::try_from(known).unwrap_or(0);
    for script in schema::POSTGRES[..upto].iter().skip(found as usize) {
        txn.batch_execute(script).await?;
    }
    txn.execute("DELETE FROM schema_version", &[]).await?;
    match known >= schema::RECORDS_OLDEST_READER {
        true => {
            let oldest = schema::oldest_reader(known);
            txn.execute(schema::RECORD_VERSION, &[&known, &oldest])
                .await?
        }
        false => txn.execute(schema::RECORD_VERSION_ONLY, &[&known]).await?,
    };
    txn.commit().await?;
    Ok(planned)
}

/// The sessions holding a lock on the bridge's tables (or its migration lock), oldest
/// transaction first: who they are and what they do, never their query's text (it may
/// hold data).
const LOCK_HOLDERS: &str = "SELECT coalesce('table ' || c.relname, 'the bridge''s migration lock'),
        a.pid, a.usename::text, a.application_name, a.state,
        to_char(a.state_change AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')
    FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    LEFT JOIN pg_class c ON c.oid = l.relation
    WHERE l.granted AND l.pid <> pg_backend_pid()
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND (l.locktype = 'advisory' OR c.relname::text = ANY($1::text[]))
    ORDER BY a.xact_start NULLS LAST, a.pid
    LIMIT 3";

/// Why a migration gave up waiting for a lock: who holds it (see [`LOCK_HOLDERS`]).
async fn lock_holders(client: &Object) -> Result<String, tokio_postgres::Error> {
    let tables = schema::TABLES.to_vec();
    let rows = client.query(LOCK_HOLDERS, &[&tables]).await?;
    let holders: Vec<String> = rows
        .iter()
        .map(|row| {
            let text = |i| row.get::<_, Option<String>>(i).unwrap_or_default();
            let pid: i32 = row.get(1);
            format!(
                "another session (pid {pid}, user {:?}, application_name {:?}, {} since {}) holds a lock on {}",
                text(2),
                text(3),
                text(4),
                text(5),
                text(0),
            )
        })
        .collect();
    let waited = MIGRATION_LOCK_TIMEOUT.as_secs();
    Ok(match holders.is_empty() {
        true => format!(
            "the migration waited {waited}s for a lock another session held (it has let go since): start the bridge again"
        ),
        false => format!(
            "the migration waited {waited}s for a lock and gave up (nothing was changed): {}; \
             end that session or let it finish (a session idle in transaction holds its locks \
             until it commits or rolls back), then start the bridge again",
            holders.join("; ")
        ),
    })
}

/// One statement: its rows when it has columns (a query, or `RETURNING`), else the count.
async fn run_one(
    client: &impl GenericClient,
    statement: &Statement,
) -> Result<Done, tokio_postgres::Error> {
    let prepared = client.prepare_cached(statement.sql.postgres).await?;
    let params: Vec<&(dyn ToSql + Sync)> = statement
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    if prepared.columns().is_empty() {
        let changed = client.execute(&prepared, &params).await?;
        return Ok(Done {
            rows: Vec::new(),
            changed,
        });
    }
    let rows = client
        .query(&prepared, &params)
        .await?
        .iter()
        .map(row_of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Done {
        changed: rows.len() as u64,
        rows,
    })
}

/// A row's columns as [`Value`]s, by each column's type.
fn row_of(row: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            // BIGINT, and anything else the driver can read as one (or says why not).
            _ => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// A [`Value`] as the parameter's declared type asks: the schema's integer columns are
/// SMALLINT, INTEGER and BIGINT, all given as `i64` here.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT2 => i16::try_from(*v)?.to_sql_checked(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql_checked(ty, out),
                _ => v.to_sql_checked(ty, out),
            },
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::Blob(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <i16 as ToSql>::accepts(ty)
            || <String as ToSql>::accepts(ty)
            || <Vec<u8> as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The settings every connection is made with: `location`'s, with the bridge's timeouts
/// and TCP keepalives where the URL sets none.
fn connection_config(location: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = location.clone();
    if config.get_connect_timeout().is_none() {
        // Per host: with several (following a failover), one that vanished must leave time
        // to try the next within the budget for a connection.
        let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
        let hosts = u32::try_from(hosts).unwrap_or(u32::MAX).max(1);
        config.connect_timeout((TIMEOUT / hosts).max(MIN_CONNECT_TIMEOUT));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives() && config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    config.application_name("coder-slack-bridge");
    config
}

/// What each new connection of a pool runs before its first use: settings made after
/// connecting, never startup options (`options=-c …`), which connection poolers such as
/// PgBouncer refuse.
fn session_settings(commit: Commit) -> String {
    let timeout = format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'");
    match commit {
        Commit::Durable => timeout,
        Commit::Relaxed => format!("{timeout}; SET synchronous_commit = off"),
    }
}

fn pool(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
    settings: String,
    last_failure: Arc<LastFailure>,
) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            // A closed connection is never handed out; a live-looking one is checked below.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let settings: Arc<str> = settings.into();
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .post_create(Hook::async_fn(move |client, _| {
            let settings = settings.clone();
            Box::pin(async move {
                client
                    .batch_execute(&settings)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .pre_recycle(Hook::async_fn(move |client, metrics| {
            let last_failure = last_failure.clone();
            Box::pin(async move { verify(client, metrics, &last_failure).await })
        }))
        .build()
        .map_err(|e| e.to_string())
}

/// Whether a pooled connection may be handed out: not one made before the last failure,
/// and one idle for a while only once it answered (its failure marks the others suspect).
async fn verify(
    client: &mut deadpool_postgres::ClientWrapper,
    metrics: &deadpool_postgres::Metrics,
    last_failure: &LastFailure,
) -> Result<(), HookError> {
    if last_failure.outdates(metrics.created) {
        return Err(HookError::message("made before a connection failed"));
    }
    if metrics.last_used() < VERIFY_AFTER_IDLE {
        return Ok(());
    }
    match tokio::time::timeout(VERIFY_TIMEOUT, client.simple_query("")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if !connection_broken(&e) => Ok(()),
        _ => {
            last_failure.mark();
            Err(HookError::message("no answer from an idle connection"))
        }
    }
}

/// The connection itself failed (closed, or an error on its socket), as opposed to the
/// server refusing a statement: it cannot be used again.
fn connection_broken(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// libpq's `sslmode=verify-ca` and `verify-full` as `require`, which (unlike libpq's own
/// `require`) always verifies the server's certificate and name here.
pub(super) fn libpq_sslmodes(url: &str) -> String {
    ["verify-full", "verify-ca"]
        .iter()
        .fold(url.to_owned(), |url, mode| {
            url.replace(&format!("sslmode={mode}"), "sslmode=require")
        })
}

/// TLS for `sslmode=prefer|require`: the server's certificate verified against the CAs in
/// `root_cert` (`sslrootcert`, read now) when given, else the platform's roots.
async fn tls(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let roots = match root_cert {
        Some(path) => Some(read_roots(path).await?),
        None => None,
    };
    let config = tokio::task::spawn_blocking(move || {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        // Its own provider (ring, as the Slack side uses), so nothing global is assumed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        match roots {
            Some(roots) => Ok(builder.with_root_certificates(roots)),
            None => builder.with_platform_verifier().map_err(|e| e.to_string()),
        }
        .map(|builder| builder.with_no_client_auth())
    })
    .await
    .map_err(|e| format!("TLS setup task failed: {e}"))??;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The CA certificates in the PEM file `path` (`sslrootcert`); errors name the file.
async fn read_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let named = |why: String| format!("sslrootcert {}: {why}", path.display());
    let pem = tokio::fs::read(path).await.map_err(|e| {
        named(format!(
            "cannot read it ({})",
            crate::error_text::describe_io(&e)
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| named(format!("not a PEM certificate file ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| named(format!("holds a certificate rustls cannot use ({e})")))?;
    }
    if roots.is_empty() {
        return Err(named(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}

/// PostgreSQL's own message and code, or the connection failure with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let hint = match db.code().code() {
            "25006" => " (the server is read-only: a standby, or default_transaction_read_only is on)",
            "42501" => " (the user lacks a privilege on the database: grant it CREATE and ownership of the bridge's tables)",
            "3D000" => " (create the database first: CREATE DATABASE coder_slack_bridge)",
            "28P01" | "28000" => " (check the user and password in DATABASE_URL)",
            _ => "",
        };
        return format!("{} (SQLSTATE {}){hint}", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The server refused the user or password (SQLSTATE class 28), or wanted a password and
/// the URL had none (tokio-postgres says so only in words).
fn credentials_refused(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => db.code().code().starts_with("28"),
        None => e.to_string().contains("password missing"),
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => describe(e),
        PoolError::Timeout(_) => format!(
            "cannot connect within {}s (is the server up and reachable?)",
            TIMEOUT.as_secs()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_commit_is_set_after_connecting_never_as_a_startup_option() {
        let url = "postgres://u@db/x?options=-c%20search_path%3Dbridge";
        let config = connection_config(&url.parse().expect("a URL"));
        // The one configuration both pools connect with keeps the URL's options as given.
        assert_eq!(config.get_options(), Some("-c search_path=bridge"));
        let plain = connection_config(&"postgres://u@db/x".parse().expect("a URL"));
        assert_eq!(plain.get_options(), None);
        assert!(!session_settings(Commit::Durable).contains("synchronous_commit"));
        assert!(session_settings(Commit::Relaxed).contains("SET synchronous_commit = off"));
    }

    #[test]
    fn connections_find_a_dead_path_in_seconds_unless_the_url_says_otherwise() {
        let config: tokio_postgres::Config = "postgres://u@db/x".parse().expect("a URL");
        let config = connection_config(&config);
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert_eq!(config.get_connect_timeout(), Some(&TIMEOUT));
        assert!(session_settings(Commit::Durable).contains("statement_timeout"));
        let url = "postgres://u@db/x?keepalives_idle=30&tcp_user_timeout=20&connect_timeout=9";
        let config = connection_config(&url.parse().expect("a URL"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(20))
        );
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(9)));
        // Several hosts share the budget for a connection, so the last is reached in time.
        let config = connection_config(&"postgres://u@a,b/x".parse().expect("a URL"));
        assert_eq!(config.get_connect_timeout(), Some(&(TIMEOUT / 2)));
    }

    #[test]
    fn libpq_verifying_sslmodes_are_taken_as_require() {
        let url = super::libpq_sslmodes("postgres://u@db/x?sslmode=verify-full&connect_timeout=5");
        assert_eq!(url, "postgres://u@db/x?sslmode=require&connect_timeout=5");
        assert!(url.parse::<tokio_postgres::Config>().is_ok());
        let url = super::libpq_sslmodes("postgres://u@db/x?sslmode=verify-ca");
        assert!(url.parse::<tokio_postgres::Config>().is_ok());
    }
}
