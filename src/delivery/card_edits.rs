//! Card edits, coalesced. Each notification that joins a workspace's thread changes what its
//! card shows; in a burst (Coder sends up to 20 at once, often about the same workspaces) an
//! edit per notification would double the Slack calls per DM and run into `chat.update`'s
//! per-workspace rate limit. Instead the first change of a card starts a short wait, later
//! changes replace what is queued, and one `chat.update` then shows the latest. A shutdown
//! sends what is queued at once.

use crate::slack::{SlackApi, SlackError};
use crate::state::{Store, Thread, ThreadKey};
use crate::telemetry::Metrics;
use slack_morphism::prelude::SlackMessageContent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the edits need besides the queue.
pub(super) struct CardEdits {
    /// How long a card's first change waits for more (zero: each edit at once).
    delay: Duration,
    api: Arc<SlackApi>,
    store: Store,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// The latest content queued for each card, by `channel:card_ts`.
    queued: Mutex<HashMap<String, Queued>>,
}

struct Queued {
    key: ThreadKey,
    thread: Thread,
    card: SlackMessageContent,
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
            queued: Mutex::new(HashMap::new()),
        })
    }

    /// Shows `card` on `thread`'s card: at once without a delay, else within it, together
    /// with whatever else changes that card meanwhile.
    pub async fn show(
        self: &Arc<Self>,
        key: &ThreadKey,
        thread: &Thread,
        card: SlackMessageContent,
    ) {
        let queued = Queued {
            key: key.clone(),
            thread: thread.clone(),
            card,
        };
        if self.delay.is_zero() {
            return self.send(queued).await;
        }
        let id = format!("{}:{}", thread.channel, thread.card_ts);
        let first = {
            let mut all = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            all.insert(id.clone(), queued).is_none()
        };
        if first {
            let edits = self.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(edits.delay) => {}
                    _ = edits.shutdown.cancelled() => {}
                }
                let queued = edits
                    .queued
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(queued) = queued {
                    edits.send(queued).await;
                }
            });
        }
    }

    /// One `chat.update`; a card Slack no longer has is forgotten, so the next notification
    /// starts a new thread.
    async fn send(&self, queued: Queued) {
        let Queued { key, thread, card } = queued;
        let update = self
            .api
            .update_message(&thread.channel, &thread.card_ts, card);
        match update.await {
            Ok(()) => {}
            Err(e) if e.is_gone() => {
                tracing::info!(workspace = %key.workspace, "the workspace's card is gone from Slack; a new thread starts");
                if let Err(e) = self.store.forget_thread(&key, &thread.card_ts).await {
                    self.metrics.store_errors.inc();
                    tracing::error!(error = %e, "the store failed");
                }
            }
            // chat.update is rate-limited per workspace (Tier 3); the card catches up with
            // the next notification, and replies are never held back for it.
            Err(e @ SlackError::RateLimited { .. }) => {
                tracing::debug!(workspace = %key.workspace, error = %e, "the workspace's card was not updated")
            }
            Err(e) => {
                tracing::warn!(workspace = %key.workspace, error = %e, "the workspace's card was not updated")
            }
        }
    }
}
