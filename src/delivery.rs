//! One notification's way to Slack: dedupe on `msg_id`, find the person, render, post, and
//! decide what Coder is told. Coder retries anything but a 2xx (5 attempts, 5 minutes apart),
//! so an answer is either final (2xx) or "try again" (503 with `Retry-After`).

use crate::coder::Notification;
use crate::render::{self, RenderOptions};
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackApi, SlackError};
use moka::future::Cache;
use serde::Serialize;
use slack_morphism::prelude::SlackChannelId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The final result of delivering one `msg_id`; remembered for retries and copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Delivered {
        channel: String,
        ts: String,
    },
    /// Retrying cannot help (the person is not in Slack, or Slack refuses the message).
    Undeliverable {
        reason: String,
        /// Where the notification went instead, when `FALLBACK_CHANNEL` is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback_channel: Option<String>,
    },
    DryRun,
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This request delivered it (or found it undeliverable).
    Fresh(Outcome),
    /// Another request with the same `msg_id` already did.
    Duplicate,
}

/// Slack failed or rate-limited past the budget: Coder should try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RetryLater {
    pub reason: String,
    pub retry_after: Duration,
}

/// Retry-After suggested when Slack gave none; Coder waits 5 minutes between attempts anyway.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Wait after a 429 that carried no Retry-After.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// The first wait of the backoff between failed calls is drawn under `retry_base`; never longer than this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(8);

pub struct Settings {
    pub render: RenderOptions,
    pub fallback_channel: Option<String>,
    pub budget: Duration,
    pub retry_base: Duration,
    pub max_concurrent: usize,
    pub dedupe_ttl: Duration,
    pub dedupe_capacity: u64,
}

impl Settings {
    /// The delivery settings a validated configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Settings {
            render: RenderOptions {
                coder_url: config.coder_url.clone(),
            },
            fallback_channel: config.fallback_channel.clone(),
            budget: config.delivery_timeout,
            retry_base: config.tuning.retry_base_delay,
            max_concurrent: config.tuning.max_concurrent_deliveries,
            dedupe_ttl: config.tuning.dedupe_ttl,
            dedupe_capacity: config.tuning.dedupe_capacity,
        }
    }
}

enum Route {
    DryRun,
    Slack {
        api: Arc<SlackApi>,
        directory: Arc<Directory>,
    },
}

/// What the dedupe store keeps per `msg_id`: that it was handled, nothing more.
#[derive(Debug, Clone, Copy)]
struct Handled;

pub struct Delivery {
    route: Route,
    delivered: Cache<String, Handled>,
    permits: Semaphore,
    settings: Settings,
}

impl Delivery {
    pub fn dry_run(settings: Settings) -> Self {
        Self::with_route(Route::DryRun, settings)
    }

    pub fn slack(api: Arc<SlackApi>, directory: Arc<Directory>, settings: Settings) -> Self {
        Self::with_route(Route::Slack { api, directory }, settings)
    }

    fn with_route(route: Route, settings: Settings) -> Self {
        Delivery {
            route,
            delivered: Cache::builder()
                .max_capacity(settings.dedupe_capacity)
                .time_to_live(settings.dedupe_ttl)
                .build(),
            permits: Semaphore::new(settings.max_concurrent),
            settings,
        }
    }

    /// Delivers once per `msg_id`: a copy that arrives while the first is in flight waits
    /// for its outcome; a failure is not remembered, so Coder's retry tries again.
    pub async fn deliver(&self, notification: &Notification) -> Result<Answer, RetryLater> {
        // Only that the id was handled is remembered (a byte); the full outcome goes to the
        // request that did the work.
        let mut fresh = None;
        let entry = self
            .delivered
            .entry_by_ref(&notification.msg_id)
            .or_try_insert_with(async {
                let outcome = self.deliver_once(notification).await?;
                fresh = Some(outcome);
                Ok::<_, RetryLater>(Handled)
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok(match fresh {
            Some(outcome) if entry.is_fresh() => Answer::Fresh(outcome),
            _ => Answer::Duplicate,
        })
    }

    async fn deliver_once(&self, notification: &Notification) -> Result<Outcome, RetryLater> {
        let deadline = Instant::now() + self.settings.budget;
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| RetryLater {
                reason: "too many deliveries in flight".into(),
                retry_after: DEFAULT_RETRY_AFTER,
            })?;
        match &self.route {
            Route::DryRun => {
                let rendered = render::render(notification, &self.settings.render, None);
                // The message itself can carry secrets (one-time passcodes), so only its
                // shape is logged; `preview` prints it in full.
                tracing::info!(
                    msg_id = %notification.msg_id,
                    template = %notification.notification_name,
                    blocks = rendered.content.blocks.as_ref().map_or(0, Vec::len),
                    skipped_buttons = rendered.skipped_actions.len(),
                    "dry run: rendered, not sent (use `preview` to see the message)"
                );
                Ok(Outcome::DryRun)
            }
            Route::Slack { api, directory } => {
                self.deliver_to_slack(api, directory, notification, deadline)
                    .await
            }
        }
    }

    async fn deliver_to_slack(
        &self,
        api: &SlackApi,
        directory: &Directory,
        notification: &Notification,
        deadline: Instant,
    ) -> Result<Outcome, RetryLater> {
        let user = self
            .with_retries(deadline, || directory.resolve(&notification.user_email))
            .await
            .map_err(|e| retry_later(&e))?;
        let Some(user) = user else {
            let reason = "users_not_found: no active Slack user has this e-mail address";
            return self
                .undeliverable(api, notification, reason, deadline)
                .await;
        };
        let rendered = render::render(notification, &self.settings.render, None);
        log_skipped(notification, &rendered.skipped_actions);
        let request =
            render::post_message_request(SlackChannelId(user.0.clone()), rendered.content);
        match self
            .with_retries(deadline, || api.post_message(&request))
            .await
        {
            Ok((channel, ts)) => Ok(Outcome::Delivered { channel, ts }),
            Err(e) if e.class() == ErrorClass::Permanent => {
                let reason = format!(
                    "{}: Slack will not deliver this message to the user",
                    e.code()
                );
                self.undeliverable(api, notification, &reason, deadline)
                    .await
            }
            Err(e) => Err(retry_later(&e)),
        }
    }

    /// The person cannot be reached: say so, and post to the fallback channel when there is one.
    async fn undeliverable(
        &self,
        api: &SlackApi,
        notification: &Notification,
        reason: &str,
        deadline: Instant,
    ) -> Result<Outcome, RetryLater> {
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, reason, "notification is undeliverable");
        let Some(channel) = &self.settings.fallback_channel else {
            return Ok(Outcome::Undeliverable {
                reason: reason.to_owned(),
                fallback_channel: None,
            });
        };
        let note = format!(
            "Intended for {}, who could not be reached in Slack ({}).",
            notification.user_email,
            reason.split(':').next().unwrap_or(reason)
        );
        let rendered = render::render(notification, &self.settings.render, Some(&note));
        let request =
            render::post_message_request(SlackChannelId(channel.clone()), rendered.content);
        match self
            .with_retries(deadline, || api.post_message(&request))
            .await
        {
            Ok(_) => Ok(Outcome::Undeliverable {
                reason: reason.to_owned(),
                fallback_channel: Some(channel.clone()),
            }),
            Err(e) if e.class() == ErrorClass::Permanent => {
                tracing::error!(error = %e, "cannot post to FALLBACK_CHANNEL {channel}: invite the app to it or fix the setting");
                Ok(Outcome::Undeliverable {
                    reason: format!("{reason}; FALLBACK_CHANNEL failed too: {}", e.code()),
                    fallback_channel: None,
                })
            }
            Err(e) => Err(retry_later(&e)),
        }
    }

    /// Calls Slack until it answers, a permanent or configuration error comes back, or the
    /// next wait would pass `deadline`. 429s wait their `Retry-After`; other failures back off.
    async fn with_retries<T, F, Fut>(&self, deadline: Instant, mut call: F) -> Result<T, SlackError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SlackError>>,
    {
        let mut backoff = crate::backoff::Backoff::new(self.settings.retry_base, MAX_RETRY_WAIT);
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let wait = match error.class() {
                ErrorClass::RateLimited(after) => after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
                ErrorClass::Transient => backoff.next_delay(),
                ErrorClass::Permanent | ErrorClass::Configuration => return Err(error),
            };
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %error, wait_ms = wait.as_millis() as u64, "slack call will be retried");
            tokio::time::sleep(wait).await;
        }
    }
}

fn log_skipped(notification: &Notification, skipped: &[render::SkippedAction]) {
    for s in skipped {
        tracing::warn!(msg_id = %notification.msg_id, template = %notification.notification_name, action = s.index, reason = s.reason, "button left out");
    }
}

/// A Slack failure that retrying later may fix; configuration errors are logged with the fix.
fn retry_later(error: &SlackError) -> RetryLater {
    let retry_after = match error.class() {
        ErrorClass::RateLimited(Some(after)) => after.max(Duration::from_secs(1)),
        _ => DEFAULT_RETRY_AFTER,
    };
    match error.remedy() {
        Some(remedy) if error.class() == ErrorClass::Configuration => {
            tracing::error!(error = %error, "Slack refused the call: {remedy}");
        }
        _ => tracing::warn!(error = %error, "Slack call failed; Coder will retry"),
    }
    RetryLater {
        reason: format!("slack: {error}"),
        retry_after,
    }
}
