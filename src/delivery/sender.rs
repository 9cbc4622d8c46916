//! The outbox's sender: takes what waits (each person's oldest first, under a lease, so a
//! replica's death loses nothing and two replicas never send one notification), delivers
//! it the way a webhook would have been (the same claim-free route, exactly-once poster,
//! threads, cards and snoozes), and takes it out; past `QUEUE_MAX_AGE` it goes to
//! `FALLBACK_CHANNEL`, or is dropped with an error log. While Slack fails it backs off, up
//! to the cap, honouring `Retry-After`.

use super::outbox::Outbox;
use super::poster::Attempt;
use super::{Delivery, Destination, Outcome, Recipient, RetryLater, Trouble};
use crate::backoff::Backoff;
use crate::coder::Notification;
use crate::config::human_duration;
use crate::render;
use crate::state::{Taken, Token};
use crate::telemetry::ExpiredLabels;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one look at the outbox asks of the next.
enum Next {
    /// Go on at once: a batch went out, more may wait.
    Now,
    /// Look again after this, or when something is queued.
    Idle(Duration),
    /// Slack failed: wait this long (what the failed rows were given too).
    BackOff(Duration),
}

impl Delivery {
    /// Drains the outbox until `stop`. Sends in flight then finish (a lease covers them
    /// should the process die first: the next sender reads the conversation back).
    pub async fn drain_outbox(self: Arc<Self>, stop: CancellationToken) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let token = self.store.sender_token();
        let timing = &outbox.timing;
        let mut backoff = Backoff::new(timing.retry_base, timing.retry_cap);
        loop {
            // Something queued meanwhile ends an idle wait, not a backoff: it would only
            // meet the same trouble.
            let (wait, wakes) = match self.drain_once(&outbox, &token, &mut backoff).await {
                Next::Now => (Duration::ZERO, false),
                Next::Idle(wait) => (wait, true),
                Next::BackOff(wait) => (wait, false),
            };
            let woken = outbox.wake.notified();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = woken, if wakes => {}
            }
        }
    }

    /// One look: the outbox's state for the gauges, then one batch.
    async fn drain_once(&self, outbox: &Outbox, token: &Token, backoff: &mut Backoff) -> Next {
        let idle = Next::Idle(outbox.timing.poll);
        let before = outbox.queued_so_far();
        match self.store.outbox_state().await {
            Ok(state) => {
                outbox.found(state, before);
                if state.depth == 0 {
                    return idle;
                }
            }
            Err(e) => {
                self.note_store_error(&e);
                return idle;
            }
        }
        let lease = self.policy.lease;
        let taken = match self
            .store
            .take_queued(token, lease, outbox.timing.batch)
            .await
        {
            Ok(taken) if taken.is_empty() => return idle,
            Ok(taken) => taken,
            Err(e) => {
                self.note_store_error(&e);
                return idle;
            }
        };
        let sends = taken.iter().map(|t| self.send_queued(outbox, t, token));
        let results = futures_util::future::join_all(sends).await;
        let failed: Vec<(&Taken, FailedSend)> = taken
            .iter()
            .zip(results)
            .filter_map(|(t, r)| r.err().map(|later| (t, later)))
            .collect();
        if failed.is_empty() {
            backoff.reset();
            return Next::Now;
        }
        let wait = self.wait_after(outbox, backoff, &failed, taken.len());
        for (taken, failure) in &failed {
            let reason = &failure.later.reason;
            let unsettled = failure.unsettled_since;
            let retried = self
                .store
                .retry_queued(taken.seq, token, wait, reason, unsettled)
                .await;
            if let Err(e) = retried {
                // Its lease ends on its own; the next try reads the conversation back.
                self.note_store_error(&e);
            }
        }
        Next::BackOff(wait)
    }

    /// How long failed sends wait: the next backoff step while nothing gets through (and
    /// the first step when some did), or longer when Slack said so.
    fn wait_after(
        &self,
        outbox: &Outbox,
        backoff: &mut Backoff,
        failed: &[(&Taken, FailedSend)],
        tried: usize,
    ) -> Duration {
        let all_failed = failed.len() == tried;
        let step = match all_failed {
            true => backoff.next_delay(),
            false => {
                backoff.reset();
                outbox.timing.retry_base
            }
        };
        let asked = failed
            .iter()
            .filter(|(_, f)| f.later.trouble == Some(Trouble::Busy))
            .map(|(_, f)| f.later.retry_after)
            .max()
            .unwrap_or_default();
        let wait = step.max(asked.min(outbox.timing.retry_cap));
        if let Some((_, f)) = failed
            .iter()
            .find(|(_, f)| f.later.trouble == Some(Trouble::SlackDown))
        {
            outbox.slack_failed(&f.later.reason, wait);
        }
        wait
    }
}

/// A send that failed, and when a post of it whose outcome is unknown began.
struct FailedSend {
    later: RetryLater,
    unsettled_since: Option<std::time::SystemTime>,
}

impl Delivery {
    /// Delivers one notification from the outbox, or gives it to the fallback channel (or
    /// drops it) once it is older than `QUEUE_MAX_AGE`; taken out of the outbox either way.
    async fn send_queued(
        &self,
        outbox: &Outbox,
        taken: &Taken,
        token: &Token,
    ) -> Result<(), FailedSend> {
        let Destination::Slack {
            poster, directory, ..
        } = &self.destination
        else {
            return Ok(());
        };
        let notification = match Notification::parse(&taken.body, Some(&taken.msg_id)) {
            Ok(notification) => notification,
            Err(e) => {
                // It was read once already: only a foreign row could fail here.
                tracing::error!(msg_id = %taken.msg_id, template = %taken.template, error = %e.0, "a notification in the outbox cannot be read; dropped");
                self.unqueue(taken, token, None).await;
                return Ok(());
            }
        };
        let attempt = Attempt::from_outbox(taken.unsettled_since, taken.sent_at);
        let failed = |later| FailedSend {
            later,
            unsettled_since: attempt.unsettled_since(),
        };
        let deadline = Instant::now() + self.policy.budget;
        let _permit = self.permit(deadline).await.map_err(failed)?;
        let to = Recipient {
            poster,
            notification: &notification,
            deadline,
            attempt: &attempt,
        };
        if taken.age > outbox.limits.max_age {
            return self.expire(outbox, &to, taken, token).await.map_err(failed);
        }
        let outcome = self
            .deliver_to_slack(directory, &to)
            .await
            .map_err(failed)?;
        outbox.slack_answered();
        self.metrics.outbox_sent.inc();
        let waited = taken.age.as_secs();
        tracing::info!(msg_id = %notification.msg_id, template = %notification.notification_name, outcome = ?outcome_name(&outcome), waited_seconds = waited, tries = taken.tries, "a notification from the outbox reached Slack");
        self.unqueue(taken, token, Some(&attempt)).await;
        Ok(())
    }

    /// A notification that waited longer than `QUEUE_MAX_AGE`: to `FALLBACK_CHANNEL`, saying
    /// it is late and why, else dropped with an error log; counted either way.
    async fn expire(
        &self,
        outbox: &Outbox,
        to: &Recipient<'_>,
        taken: &Taken,
        token: &Token,
    ) -> Result<(), RetryLater> {
        let notification = to.notification;
        let max_age = outbox.limits.max_age;
        let reason = format!(
            "expired: Slack could not take it within QUEUE_MAX_AGE ({}); last: {}",
            human_duration(max_age),
            taken.reason
        );
        let note = format!(
            "Intended for {}. Coder sent it at {}, but Slack could not take it within QUEUE_MAX_AGE ({}).",
            notification.user_email,
            render::utc_time(taken.sent_at),
            human_duration(max_age),
        );
        let outcome = self.to_fallback(to, &reason, "expired", &note).await?;
        let to_label = match outcome {
            Outcome::Undeliverable {
                fallback_channel: Some(_),
                ..
            } => "fallback",
            _ => {
                tracing::error!(msg_id = %notification.msg_id, template = %notification.notification_name, reason = %reason, "a notification waited longer than QUEUE_MAX_AGE and is dropped (set FALLBACK_CHANNEL to keep such notifications)");
                "dropped"
            }
        };
        self.metrics
            .outbox_expired
            .get_or_create(&ExpiredLabels { to: to_label })
            .inc();
        self.unqueue(taken, token, None).await;
        Ok(())
    }

    /// Takes `taken` out of the outbox; for one `delivered`, with what its message showed.
    async fn unqueue(&self, taken: &Taken, token: &Token, delivered: Option<&Attempt>) {
        let shown = delivered.map(Attempt::shown).unwrap_or_default();
        if let Err(e) = self.store.unqueue(taken.seq, token, &shown).await {
            // Its lease ends and it is tried again: the read-back then finds the post.
            self.note_store_error(&e);
        }
        if let Some(attempt) = delivered {
            self.edit_card(attempt).await;
        }
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Undeliverable { .. } => "undeliverable",
        Outcome::DryRun => "dry_run",
        Outcome::Snoozed => "snoozed",
        Outcome::Queued => "queued",
        Outcome::Collapsed { .. } => "collapsed",
    }
}
