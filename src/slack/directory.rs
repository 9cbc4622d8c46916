//! E-mail address → Slack user ID. Filled from `users.list` at start-up and on a timer, so a
//! burst to many people needs no per-person lookups; a miss falls back to
//! `users.lookupByEmail`, and an address Slack does not know is remembered briefly.

use super::{SlackApi, SlackError};
use crate::retry::Retry;
use crate::telemetry::{LookupLabels, Metrics};
use moka::future::Cache;
use slack_morphism::prelude::SlackUserId;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `users.list` page size: Slack's maximum.
const PAGE_SIZE: u16 = 1000;
/// More than any workspace has; bounds memory if Slack misbehaves.
const MAX_USERS: u64 = 2_000_000;
/// Attempts at one page (after a 429's wait, or a transient error) before a sweep gives up.
const PAGE_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct Directory {
    api: Arc<SlackApi>,
    users: Cache<String, SlackUserId>,
    unknown: Cache<String, ()>,
    metrics: Metrics,
}

/// Why a lookup found nobody, shared between coalesced callers.
#[derive(Debug, Clone)]
enum Miss {
    NotFound,
    Failed(SlackError),
}

impl Directory {
    /// `entry_ttl` bounds how long a learned address is trusted without being seen again in
    /// a sweep or a lookup: if sweeps keep failing, an address reassigned in Slack must not
    /// keep going to its previous owner.
    pub fn new(
        api: Arc<SlackApi>,
        negative_ttl: Duration,
        entry_ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        for result in ["hit", "miss", "negative_hit"] {
            let _ = metrics
                .directory_lookups
                .get_or_create(&LookupLabels { result });
        }
        for result in ["ok", "failed"] {
            let labels = crate::telemetry::SweepLabels { result };
            let _ = metrics.directory_sweeps.get_or_create(&labels);
        }
        Directory {
            api,
            users: Cache::builder()
                .max_capacity(MAX_USERS)
                .time_to_live(entry_ttl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative_ttl)
                .build(),
            metrics,
        }
    }

    /// The Slack user with this address; `Ok(None)` when Slack has nobody active with it.
    /// Concurrent lookups of one address share one Slack call.
    pub async fn resolve(&self, email: &str) -> Result<Option<SlackUserId>, SlackError> {
        let key = email.to_lowercase();
        if let Some(id) = self.users.get(&key).await {
            self.count("hit");
            return Ok(Some(id));
        }
        if self.unknown.contains_key(&key) {
            self.count("negative_hit");
            return Ok(None);
        }
        self.count("miss");
        let api = &self.api;
        let result = self
            .users
            .try_get_with(key.clone(), async {
                match api.lookup_by_email(&key).await {
                    Ok(Some(id)) => Ok(id),
                    Ok(None) => Err(Miss::NotFound),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        match result {
            Ok(id) => {
                self.publish_size();
                Ok(Some(id))
            }
            Err(miss) => match miss.as_ref() {
                Miss::NotFound => {
                    self.unknown.insert(key, ()).await;
                    Ok(None)
                }
                Miss::Failed(e) => Err(e.clone()),
            },
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .directory_lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }

    fn count_sweep(&self, result: &'static str) {
        let labels = crate::telemetry::SweepLabels { result };
        self.metrics.directory_sweeps.get_or_create(&labels).inc();
    }

    fn publish_size(&self) {
        self.metrics
            .directory_size
            .set(i64::try_from(self.users.entry_count()).unwrap_or(i64::MAX));
    }

    /// Known users (approximate while the cache settles).
    pub async fn known_users(&self) -> u64 {
        self.users.run_pending_tasks().await;
        self.users.entry_count()
    }

    /// One sweep of `users.list`, page by page. Returns how many active users it saw.
    pub async fn refresh(&self) -> Result<usize, SlackError> {
        let mut cursor = None;
        let mut seen = 0;
        loop {
            let (active, gone, next) = self.page_with_retries(cursor.take()).await?;
            seen += active.len();
            for (email, id) in active {
                self.unknown.invalidate(&email).await;
                self.users.insert(email, id).await;
            }
            for email in gone {
                self.users.invalidate(&email).await;
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        self.users.run_pending_tasks().await;
        self.publish_size();
        Ok(seen)
    }

    async fn page_with_retries(
        &self,
        cursor: Option<String>,
    ) -> Result<(Vec<(String, SlackUserId)>, Vec<String>, Option<String>), SlackError> {
        Retry::new(Duration::from_secs(1), Duration::from_secs(30))
            .attempts(PAGE_ATTEMPTS)
            .run(SlackError::verdict, || {
                self.api.users_list_page(cursor.clone(), PAGE_SIZE)
            })
            .await
    }

    /// Sweeps now and then every `every`, until `shutdown`.
    pub fn spawn_refresher(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let metrics = &self.metrics;
        metrics
            .directory_sweep_interval
            .set(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
        // Counted from the start, so a bridge whose sweeps never succeed is noticed, and one
        // just started is not.
        metrics
            .directory_last_sweep
            .set(crate::telemetry::unix_now());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let started = std::time::Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = self.refresh() => match result {
                        Ok(users) => {
                            self.count_sweep("ok");
                            self.metrics.directory_last_sweep.set(crate::telemetry::unix_now());
                            tracing::info!(users, elapsed_ms = started.elapsed().as_millis() as u64, "directory refreshed from users.list")
                        }
                        Err(e) => {
                            self.count_sweep("failed");
                            match e.remedy() {
                                Some(remedy) => tracing::error!(error = %e, "directory refresh failed: {remedy}"),
                                None => tracing::warn!(error = %e, "directory refresh failed; users are looked up one by one until the next refresh"),
                            }
                        }
                    }
                }
            }
        })
    }
}
