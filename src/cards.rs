//! A workspace's card, kept true: the one path that edits it. Whatever changes what a card
//! should show (a notification joining its thread, a snooze, an unsnooze) asks for a
//! [`CardEdits::refresh`]; one worker per card then renders it from the store's state at
//! send time (what happened last, the snooze in force) and sends one `chat.update`. So edits
//! of one card are ordered, the latest state wins, and a snooze shown on the card is never
//! wiped by an edit rendered before it.
//!
//! In a burst (Coder sends up to 20 at once, often about the same workspaces) an edit per
//! notification would double the Slack calls per DM and run into `chat.update`'s Tier 3
//! limit (~50 a minute per workspace): the first request of a card waits `delay`, later ones
//! join it. A rate-limited edit waits as Slack says and tries again (still rendered afresh);
//! an edit that fails for good is counted (`card_edits_failed_total`) and logged at warn.
//! Workers are tracked: a shutdown sends what is pending at once and waits for it.

use crate::render;
use crate::retry::{Retry, Verdict};
use crate::slack::{SlackApi, SlackError};
use crate::state::{Store, ThreadKey};
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Attempts at one edit (rate limits and outages included) before it is given up.
const ATTEMPTS: u32 = 5;
/// The longest backoff step between attempts after an outage (a rate limit waits as long as
/// Slack says).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct CardEdits {
    /// How long a card's first change waits for more (zero: at once, in the caller's task).
    delay: Duration,
    api: Arc<SlackApi>,
    store: Store,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Cards with a worker, and whether a change came after the worker last read the store.
    pending: Mutex<HashMap<ThreadKey, bool>>,
    workers: TaskTracker,
}

impl CardEdits {
    pub fn new(
        delay: Duration,
        api: Arc<SlackApi>,
        store: Store,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(CardEdits {
            delay,
            api,
            store,
            metrics,
            shutdown,
            pending: Mutex::new(HashMap::new()),
            workers: TaskTracker::new(),
        })
    }

    /// Shows `key`'s card as the store has it: soon (within the delay, together with other
    /// changes meanwhile), or, without a delay, at once in the caller's task. Never more than
    /// one edit of a card is in flight; retries (rate limits, outages) go on in a worker, so
    /// nobody waits for them.
    pub async fn refresh(self: &Arc<Self>, key: &ThreadKey) {
        if !self.ask(key) {
            return; // its worker reads the store again before it stops
        }
        let mut failed = None;
        if self.delay.is_zero() {
            match self.edit_pending(key).await {
                Ok(()) => return,
                Err(e) => failed = Some(e),
            }
        }
        let edits = self.clone();
        let key = key.clone();
        self.workers
            .spawn(async move { edits.work(key, failed).await });
    }

    /// Waits for the edits pending at shutdown (their delays are cut short), until `deadline`.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        self.workers.close();
        tokio::time::timeout_at(deadline, self.workers.wait())
            .await
            .is_ok()
    }

    /// Notes a change of `key`'s card; whether it has no worker yet (the caller starts one).
    fn ask(&self, key: &ThreadKey) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(key.clone(), true).is_none()
    }

    /// Takes the pending change (the store is read after this, so it shows it).
    fn take(&self, key: &ThreadKey) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(key.clone(), false);
    }

    /// Whether a change came meanwhile; if not, the card's worker is done.
    fn done(&self, key: &ThreadKey) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let done = pending.get(key) == Some(&false);
        if done {
            pending.remove(key);
        }
        done
    }

    /// Edits until no change came meanwhile, one attempt each; the error of one that may
    /// work when tried again (its change is still pending then).
    async fn edit_pending(&self, key: &ThreadKey) -> Result<(), SlackError> {
        loop {
            self.take(key);
            if let Err(e) = self.edit_once(key).await {
                if !matches!(e.verdict(), Verdict::Stop) {
                    self.ask(key);
                    return Err(e);
                }
                self.report(key, &e);
            }
            if self.done(key) {
                return Ok(());
            }
        }
    }

    /// One card's worker: after the delay (or an attempt that failed), edits with retries
    /// until no change came in meanwhile.
    async fn work(&self, key: ThreadKey, mut failed: Option<SlackError>) {
        loop {
            if failed.is_none() && !self.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.delay) => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
            self.take(&key);
            if let Err(e) = self.edit(&key, failed.take()).await {
                self.report(&key, &e);
            }
            if self.done(&key) {
                return;
            }
        }
    }

    /// One edit, rendered afresh at every attempt; after `failed` (an attempt already made),
    /// retried on rate limits (as long as Slack says) and outages (backing off), a few
    /// times, and not past the start of a shutdown.
    async fn edit(&self, key: &ThreadKey, failed: Option<SlackError>) -> Result<(), SlackError> {
        let mut retry =
            Retry::new(Duration::from_millis(500), MAX_BACKOFF).until(self.shutdown.clone());
        let mut attempts = u32::from(failed.is_some());
        let mut last = failed;
        loop {
            if let Some(e) = last.take() {
                if attempts >= ATTEMPTS || !retry.wait(e.verdict()).await {
                    return Err(e);
                }
            }
            attempts += 1;
            match self.edit_once(key).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
    }

    /// An edit given up: a card Slack no longer has is forgotten (`edit_once`); anything
    /// else is counted and said.
    fn report(&self, key: &ThreadKey, e: &SlackError) {
        if e.is_gone() {
            tracing::info!(workspace = %key.workspace, "the workspace's card is gone from Slack; a new thread starts");
            return;
        }
        self.metrics.card_edits_failed.inc();
        tracing::warn!(workspace = %key.workspace, error = %e, "the workspace's card was not updated; it shows an older state until its next change");
    }

    async fn edit_once(&self, key: &ThreadKey) -> Result<(), SlackError> {
        let view = match self.store.card(key).await {
            Ok(Some(view)) => view,
            // No card (any more): nothing to show.
            Ok(None) => return Ok(()),
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(error = %e, "the store failed");
                return Ok(());
            }
        };
        let (latest, at) = view
            .latest
            .unwrap_or_else(|| (String::new(), SystemTime::now()));
        let card = render::card(&render::CardState {
            workspace: &key.workspace,
            owner: &key.owner,
            latest: &latest,
            at,
            snoozed_until: view.snoozed_until,
        });
        let thread = view.thread;
        let result = self
            .api
            .update_message(&thread.channel, &thread.card_ts, card)
            .await;
        if let Err(e) = &result {
            if e.is_gone() {
                if let Err(e) = self.store.forget_thread(key, &thread.card_ts).await {
                    self.metrics.store_errors.inc();
                    tracing::error!(error = %e, "the store failed");
                }
            }
        }
        result
    }
}
