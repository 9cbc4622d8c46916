//! The PostgreSQL store, for replicas sharing one database: small pools of connections
//! (tokio-postgres, asynchronous all the way), statements prepared once per connection.
//! Claims are single `INSERT … ON CONFLICT` statements, so two replicas claiming one
//! `msg_id` at the same instant cannot both win. TLS (`sslmode=require`) verifies the
//! server's certificate against the system's roots.
//!
//! Claims commit durably (they must survive a server crash: a lost claim could let a copy
//! post again). Everything after a claim (done marks, releases, DM channels, pruning) goes
//! through connections with `synchronous_commit=off`: such a commit is not waited for on
//! disk, which halves the fsyncs per notification, and losing one in a server crash is
//! safe: the claim stays, its lease ends, and whoever takes it over reads the DM back.

use super::schema;
use super::{CardRow, Claimed, Health, HomeRows, Location, StoreError, Thread, ThreadKey, Token};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// Connections per replica for claims and for the rest: statements are short, and
/// PostgreSQL's default limit is 100 connections in all.
const CLAIM_POOL_SIZE: usize = 8;
const RELAXED_POOL_SIZE: usize = 4;
/// For connecting, for a free connection, and for one operation.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Serialises migrations of replicas starting together (any fixed number: "csb" + 1).
const MIGRATION_LOCK: i64 = 0x0063_7362_0001;

pub struct Postgres {
    /// Durable commits: claims, and the schema.
    durable: Pool,
    /// `synchronous_commit=off`: what may be lost in a server crash (see the module's note).
    relaxed: Pool,
    database: Arc<str>,
}

/// Which of the two pools an operation uses.
#[derive(Clone, Copy)]
enum Commit {
    Durable,
    Relaxed,
}

impl Postgres {
    pub async fn open(location: &Location) -> Result<Postgres, StoreError> {
        let database: Arc<str> = location.shown().into();
        let fail = |operation, cause| StoreError {
            database: database.clone(),
            operation,
            cause,
        };
        let url = libpq_sslmodes(location.postgres_url().unwrap_or_default());
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            fail(
                "read DATABASE_URL",
                format!("{e} (it takes postgres://USER:PASSWORD@HOST:PORT/DATABASE with the options sslmode=disable|prefer|require|verify-full, connect_timeout, application_name and options; sslrootcert is not taken: add your CA to the system's trust store)"),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(TIMEOUT);
        }
        config.application_name("coder-slack-bridge");
        let tls = tls().await.map_err(|cause| fail("set up TLS", cause))?;
        let mut relaxed = config.clone();
        let options = relaxed.get_options().unwrap_or_default();
        relaxed.options(format!("{options} -c synchronous_commit=off").trim_start());
        let store = Postgres {
            durable: pool(config, tls.clone(), CLAIM_POOL_SIZE)
                .map_err(|e| fail("set up its connection pool", e))?,
            relaxed: pool(relaxed, tls, RELAXED_POOL_SIZE)
                .map_err(|e| fail("set up its connection pool", e))?,
            database,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs `work` on a pooled connection, bounded by [`TIMEOUT`].
    async fn with_client<T, F>(
        &self,
        operation: &'static str,
        commit: Commit,
        work: impl FnOnce(deadpool_postgres::Object) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let fail = |cause| StoreError {
            database: self.database.clone(),
            operation,
            cause,
        };
        let done = tokio::time::timeout(TIMEOUT, async {
            let pool = match commit {
                Commit::Durable => &self.durable,
                Commit::Relaxed => &self.relaxed,
            };
            let client = pool.get().await.map_err(|e| describe_pool(&e))?;
            work(client).await.map_err(|e| describe(&e))
        })
        .await;
        match done {
            Ok(result) => result.map_err(fail),
            Err(_) => Err(fail(format!("no answer within {}s", TIMEOUT.as_secs()))),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let found = self
            .with_client(
                "migrate its schema",
                Commit::Durable,
                |mut client| async move {
                    let txn = client.transaction().await?;
                    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                        .await?;
                    txn.batch_execute(schema::VERSION_TABLE).await?;
                    let found: i64 = txn
                        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
                        .await?
                        .get(0);
                    if schema::refuse_newer(found).is_err() {
                        return Ok(found);
                    }
                    for script in schema::POSTGRES.iter().skip(found as usize) {
                        txn.batch_execute(script).await?;
                    }
                    txn.execute("DELETE FROM schema_version", &[]).await?;
                    txn.execute(
                        "INSERT INTO schema_version (version) VALUES ($1)",
                        &[&schema::LATEST],
                    )
                    .await?;
                    txn.commit().await?;
                    Ok(found)
                },
            )
            .await?;
        schema::refuse_newer(found).map_err(|cause| StoreError {
            database: self.database.clone(),
            operation: "open",
            cause,
        })
    }

    pub async fn claim(
        &self,
        key: Vec<u8>,
        token: &Token,
        now: i64,
        lease_expires: i64,
    ) -> Result<Claimed, StoreError> {
        let owner = token.0.as_str();
        self.with_client("claim a msg_id", Commit::Durable, |client| async move {
            let claim = client.prepare_cached(schema::CLAIM).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&key, &owner, &lease_expires, &now];
            if let Some(row) = client.query_opt(&claim, &params).await? {
                return Ok(Claimed::Ours {
                    attempts: i64::from(row.try_get::<_, i32>(0)?),
                    first_claimed: row.try_get(1)?,
                });
            }
            let holder = client.prepare_cached(schema::HOLDER).await?;
            Ok(match client.query_opt(&holder, &[&key]).await? {
                Some(row) => Claimed::Held {
                    done: row.try_get::<_, i16>(0)? != 0,
                    lease_expires: row.try_get(1)?,
                },
                None => Claimed::Vanished,
            })
        })
        .await
    }

    pub async fn finish(&self, key: Vec<u8>, token: &Token) -> Result<(), StoreError> {
        self.execute("mark a msg_id handled", schema::FINISH, &[&key, &token.0])
            .await
            .map(drop)
    }

    pub async fn release(
        &self,
        key: Vec<u8>,
        token: &Token,
        maybe_posted: bool,
    ) -> Result<(), StoreError> {
        let sql = match maybe_posted {
            true => schema::RELEASE_UNSETTLED,
            false => schema::RELEASE,
        };
        self.execute("give up a claim", sql, &[&key, &token.0])
            .await
            .map(drop)
    }

    pub async fn dm_channel(&self, user: &str) -> Result<Option<String>, StoreError> {
        self.with_client("read a DM channel", Commit::Relaxed, |client| async move {
            let statement = client.prepare_cached(schema::DM_CHANNEL).await?;
            let row = client.query_opt(&statement, &[&user]).await?;
            row.map(|row| row.try_get(0)).transpose()
        })
        .await
    }

    pub async fn learn_dm_channel(
        &self,
        user: &str,
        channel: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&user, &channel, &now];
        self.execute("remember a DM channel", schema::LEARN_DM_CHANNEL, &params)
            .await
            .map(drop)
    }

    /// Whether the making of `key`'s card is now `token`'s.
    pub async fn claim_thread(
        &self,
        key: &ThreadKey,
        token: &Token,
        lease_expires: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with_client("claim a thread", Commit::Durable, |client| async move {
            let statement = client.prepare_cached(schema::CLAIM_THREAD).await?;
            let params: [&(dyn ToSql + Sync); 6] = [
                &key.slack_user,
                &key.owner,
                &key.workspace,
                &token.0,
                &lease_expires,
                &now,
            ];
            Ok(client.query_opt(&statement, &params).await?.is_some())
        })
        .await
    }

    pub async fn thread(&self, key: &ThreadKey) -> Result<Option<Thread>, StoreError> {
        self.with_client("read a thread", Commit::Durable, |client| async move {
            let statement = client.prepare_cached(schema::THREAD).await?;
            let params: [&(dyn ToSql + Sync); 3] = [&key.slack_user, &key.owner, &key.workspace];
            let Some(row) = client.query_opt(&statement, &params).await? else {
                return Ok(None);
            };
            let channel: Option<String> = row.try_get(0)?;
            let card_ts: Option<String> = row.try_get(1)?;
            Ok(channel
                .zip(card_ts)
                .map(|(channel, card_ts)| Thread { channel, card_ts }))
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
        // Durable: a card lost in a server crash would be made again, as a second card.
        let params: [&(dyn ToSql + Sync); 7] = [
            &thread.channel,
            &thread.card_ts,
            &now,
            &key.slack_user,
            &key.owner,
            &key.workspace,
            &token.0,
        ];
        self.with_client("record a thread", Commit::Durable, |client| async move {
            let statement = client.prepare_cached(schema::SET_THREAD).await?;
            client.execute(&statement, &params).await.map(drop)
        })
        .await
    }

    pub async fn release_thread(&self, key: &ThreadKey, token: &Token) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 4] =
            [&key.slack_user, &key.owner, &key.workspace, &token.0];
        self.execute("give up a thread", schema::RELEASE_THREAD, &params)
            .await
            .map(drop)
    }

    pub async fn forget_thread(&self, key: &ThreadKey, card_ts: &str) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 4] =
            [&key.slack_user, &key.owner, &key.workspace, &card_ts];
        self.execute("forget a thread", schema::FORGET_THREAD, &params)
            .await
            .map(drop)
    }

    pub async fn set_latest(
        &self,
        key: &ThreadKey,
        latest: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 5] =
            [&latest, &at, &key.slack_user, &key.owner, &key.workspace];
        self.execute("record a card's latest", schema::SET_LATEST, &params)
            .await
            .map(drop)
    }

    pub async fn card(&self, key: &ThreadKey) -> Result<Option<CardRow>, StoreError> {
        self.with_client("read a card", Commit::Relaxed, |client| async move {
            let statement = client.prepare_cached(schema::CARD).await?;
            let params: [&(dyn ToSql + Sync); 3] = [&key.slack_user, &key.owner, &key.workspace];
            let Some(r) = client.query_opt(&statement, &params).await? else {
                return Ok(None);
            };
            Ok(Some((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
            )))
        })
        .await
    }

    pub async fn home(&self, slack_user: &str, now: i64) -> Result<HomeRows, StoreError> {
        self.with_client("read an App Home", Commit::Relaxed, |client| async move {
            let statement = client.prepare_cached(schema::SNOOZES_OF).await?;
            let snoozes = client
                .query(&statement, &[&slack_user, &now])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            let statement = client.prepare_cached(schema::THREADS_OF).await?;
            let workspaces = client
                .query(&statement, &[&slack_user])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
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
        self.with_client(operation, Commit::Durable, |client| async move {
            let statement = client.prepare_cached(sql).await?;
            match at {
                Some(at) => {
                    let params: [&(dyn ToSql + Sync); 4] =
                        [&key.slack_user, &key.owner, &key.workspace, &at];
                    client.execute(&statement, &params).await
                }
                None => {
                    let params: [&(dyn ToSql + Sync); 3] =
                        [&key.slack_user, &key.owner, &key.workspace];
                    client.execute(&statement, &params).await
                }
            }
        })
        .await
    }

    /// Runs `sql` with a workspace's key and `at` (`$4`); the first column of its row
    /// (BIGINT or INTEGER).
    pub async fn key_query(
        &self,
        operation: &'static str,
        sql: &'static str,
        key: &ThreadKey,
        at: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.with_client(operation, Commit::Durable, |client| async move {
            let statement = client.prepare_cached(sql).await?;
            let params: [&(dyn ToSql + Sync); 4] =
                [&key.slack_user, &key.owner, &key.workspace, &at];
            let Some(row) = client.query_opt(&statement, &params).await? else {
                return Ok(None);
            };
            match row.try_get::<_, i64>(0) {
                Ok(value) => Ok(Some(value)),
                Err(_) => row.try_get::<_, i32>(0).map(|v| Some(i64::from(v))),
            }
        })
        .await
    }

    /// Forgets up to [`schema::PRUNE_BATCH`] ids first claimed before `cutoff`.
    pub async fn prune_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.execute("prune old msg_ids", schema::PRUNE, &[&cutoff])
            .await
    }

    pub async fn health(&self) -> Result<Health, StoreError> {
        self.with_client(
            "answer a health check",
            Commit::Durable,
            |client| async move {
                // A write that changes nothing fails on a read-only server or without privileges.
                client
                    .execute("DELETE FROM handled WHERE msg_id = '\\x'::bytea", &[])
                    .await?;
                let version: i64 = client
                    .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
                    .await?
                    .get(0);
                Ok(Health {
                    backend: "postgres",
                    schema_version: version,
                })
            },
        )
        .await
    }

    /// Runs a write whose commit may be lost in a server crash (see the module's note).
    async fn execute(
        &self,
        operation: &'static str,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.with_client(operation, Commit::Relaxed, |client| async move {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, params).await
        })
        .await
    }
}

fn pool(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .build()
        .map_err(|e| e.to_string())
}

/// libpq's `sslmode=verify-ca` and `verify-full` as `require`, which (unlike libpq's own
/// `require`) always verifies the server's certificate and name here.
fn libpq_sslmodes(url: &str) -> String {
    ["verify-full", "verify-ca"]
        .iter()
        .fold(url.to_owned(), |url, mode| {
            url.replace(&format!("sslmode={mode}"), "sslmode=require")
        })
}

/// TLS for `sslmode=prefer|require`, verified against the platform's roots.
async fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let config = tokio::task::spawn_blocking(|| {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        // Its own provider (ring, as the Slack side uses), so nothing global is assumed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_platform_verifier()
            .map(|builder| builder.with_no_client_auth())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("TLS setup task failed: {e}"))??;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
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

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(_) => format!(
            "cannot connect within {}s (is the server up and reachable?)",
            TIMEOUT.as_secs()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn libpq_verifying_sslmodes_are_taken_as_require() {
        let url = super::libpq_sslmodes("postgres://u@db/x?sslmode=verify-full&connect_timeout=5");
        assert_eq!(url, "postgres://u@db/x?sslmode=require&connect_timeout=5");
        assert!(url.parse::<tokio_postgres::Config>().is_ok());
        let url = super::libpq_sslmodes("postgres://u@db/x?sslmode=verify-ca");
        assert!(url.parse::<tokio_postgres::Config>().is_ok());
    }
}
