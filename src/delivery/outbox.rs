//! Store and forward: a notification Slack cannot take now (an outage, a timeout, a refused
//! token, a rate limit past the budget) goes to the outbox in the store, with its claim's
//! done mark, and Coder is answered `queued`; the sender (`sender`) delivers it when Slack
//! answers again. What deliveries share about it lives here: whether the outbox may hold
//! anything (so a delivery looks whether its person has something waiting, and waits
//! behind it), whether Slack is in trouble (so new notifications wait with the others
//! instead of each spending its budget on an outage), and what `/readyz` reports.

use super::{Delivery, Outcome, RetryLater, Trouble};
use crate::coder::Notification;
use crate::config::{OutboxTiming, QueueLimits};
use crate::state::{MsgKey, OutboxState, Queued, ToQueue, Token};
use crate::telemetry::Metrics;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What deliveries and the sender share about the outbox.
#[derive(Debug)]
pub struct Outbox {
    pub(super) limits: QueueLimits,
    pub(super) timing: OutboxTiming,
    /// Notifications this process queued so far; with `empty_at`, whether the outbox may
    /// hold anything.
    queued: AtomicU64,
    /// `queued` as it was when the sender last found the outbox empty (`u64::MAX`: not
    /// since it started). Another replica's queueing shows at the sender's next look.
    empty_at: AtomicU64,
    /// Whether `trouble` holds anything: the common path reads this alone.
    in_trouble: AtomicBool,
    trouble: Mutex<Option<SlackTrouble>>,
    /// The outbox as the sender last read it, for `/readyz`.
    state: Mutex<OutboxState>,
    /// Wakes the sender when something is queued.
    pub(super) wake: Notify,
    metrics: Metrics,
}

/// Slack's trouble as last met.
#[derive(Debug)]
struct SlackTrouble {
    since: SystemTime,
    reason: String,
    /// Until then, new notifications go straight to the outbox (the sender tries Slack).
    hold_until: Instant,
}

/// What `/readyz` says of store and forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxReport {
    pub depth: u64,
    pub oldest_seconds: u64,
    /// Slack's trouble, while deliveries meet it: what Slack answered last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack_unavailable: Option<String>,
}

impl Outbox {
    pub fn new(limits: QueueLimits, timing: OutboxTiming, metrics: Metrics) -> Self {
        Outbox {
            limits,
            timing,
            queued: AtomicU64::new(0),
            empty_at: AtomicU64::new(u64::MAX),
            in_trouble: AtomicBool::new(false),
            trouble: Mutex::new(None),
            state: Mutex::new(OutboxState::default()),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Whether the outbox may hold anything (then a delivery looks for its person's).
    fn may_hold_anything(&self) -> bool {
        self.empty_at.load(Ordering::Acquire) != self.queued.load(Ordering::Acquire)
    }

    /// What the sender found, read after `queued_before` was: the gauges, `/readyz`, and
    /// whether deliveries need look for their person's.
    pub(super) fn found(&self, state: OutboxState, queued_before: u64) {
        self.empty_at.store(
            match state.depth {
                0 => queued_before,
                _ => u64::MAX,
            },
            Ordering::Release,
        );
        self.metrics
            .outbox_depth
            .set(i64::try_from(state.depth).unwrap_or(i64::MAX));
        let oldest = state.oldest.unwrap_or_default().as_secs();
        self.metrics
            .outbox_oldest
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// How many this process queued so far (read before the sender looks at the outbox).
    pub(super) fn queued_so_far(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Slack failed a delivery with `trouble`: new notifications wait in the outbox for
    /// `hold` (the sender's next try), and `/readyz` and the metrics say so.
    pub(super) fn slack_failed(&self, reason: &str, hold: Duration) {
        let mut trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        let since = trouble.as_ref().map_or_else(SystemTime::now, |t| t.since);
        if trouble.is_none() {
            tracing::warn!(
                reason,
                "Slack is unavailable: notifications wait in the outbox until it answers"
            );
        }
        *trouble = Some(SlackTrouble {
            since,
            reason: reason.to_owned(),
            hold_until: Instant::now() + hold,
        });
        self.in_trouble.store(true, Ordering::Release);
        self.metrics.slack_trouble.set(1);
    }

    /// Slack took a delivery: its trouble is over.
    pub(super) fn slack_answered(&self) {
        if !self.in_trouble.load(Ordering::Acquire) {
            return;
        }
        let mut trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ended) = trouble.take() {
            let seconds = ended.since.elapsed().unwrap_or_default().as_secs();
            tracing::info!(unavailable_seconds = seconds, "Slack answers again");
        }
        self.in_trouble.store(false, Ordering::Release);
        self.metrics.slack_trouble.set(0);
    }

    /// Why new notifications wait now, if they do: Slack's trouble, for a while after the
    /// last failure.
    fn holding(&self) -> Option<String> {
        if !self.in_trouble.load(Ordering::Acquire) {
            return None;
        }
        let trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        let trouble = trouble.as_ref()?;
        (Instant::now() < trouble.hold_until).then(|| trouble.reason.clone())
    }

    pub fn report(&self) -> OutboxReport {
        let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        let trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        OutboxReport {
            depth: state.depth,
            oldest_seconds: state.oldest.unwrap_or_default().as_secs(),
            slack_unavailable: trouble.as_ref().map(|t| t.reason.clone()),
        }
    }
}

impl Delivery {
    /// Why `notification` must wait in the outbox without trying Slack, if it must: Slack
    /// is in trouble (the sender is on it), or its person has notifications waiting, which
    /// it may not overtake.
    pub(super) async fn must_wait(&self, notification: &Notification) -> Option<RetryLater> {
        let outbox = self.outbox.as_ref()?;
        if let Some(reason) = outbox.holding() {
            return Some(RetryLater::waiting(reason));
        }
        if !outbox.may_hold_anything() {
            return None;
        }
        match self.store.queued_for(&notification.user_email).await {
            Ok(true) => Some(RetryLater::waiting(
                "earlier notifications for this person wait in the outbox".into(),
            )),
            Ok(false) => None,
            Err(e) => {
                // The claim just worked: try Slack rather than fail on a look.
                self.note_store_error(&e);
                None
            }
        }
    }

    /// Puts a claimed notification that `later` kept from Slack in the outbox (when store
    /// and forward is on and time can cure `later`): `queued`, or why Coder should retry.
    pub(super) async fn queue(
        &self,
        claim: (&MsgKey, &Token),
        notification: &Notification,
        body: &[u8],
        unsettled_since: Option<SystemTime>,
        later: RetryLater,
    ) -> Result<Outcome, RetryLater> {
        let (Some(outbox), Some(trouble)) = (&self.outbox, later.trouble) else {
            return Err(later);
        };
        if trouble == Trouble::SlackDown {
            outbox.slack_failed(
                &later.reason,
                later.retry_after.min(outbox.timing.retry_cap),
            );
        }
        let item = ToQueue {
            key: claim.0,
            token: claim.1,
            msg_id: &notification.msg_id,
            recipient: &notification.user_email,
            body,
            template: &notification.notification_name,
            reason: &later.reason,
            unsettled_since,
            max_depth: outbox.limits.max_depth,
        };
        match self.store.queue(&item).await {
            Ok(Queued::Yes) => {
                outbox.queued.fetch_add(1, Ordering::AcqRel);
                outbox.wake.notify_one();
                self.metrics.outbox_queued.inc();
                tracing::info!(msg_id = %notification.msg_id, template = %notification.notification_name, reason = %later.reason, "Slack cannot take this notification now: it waits in the outbox");
                Ok(Outcome::Queued)
            }
            Ok(Queued::Full { depth }) => Err(RetryLater {
                reason: format!(
                    "the outbox is full ({depth} notifications wait for Slack; QUEUE_MAX_DEPTH): {}",
                    later.reason
                ),
                ..later
            }),
            Ok(Queued::ClaimLost) => Err(later),
            Err(e) => Err(self.store_failed(&e)),
        }
    }
}
