//! Whether the bridge can deliver DMs, as `/readyz` reports it. Each source sets its own part:
//! a shutdown (SIGTERM) makes it not ready at once, so load balancers stop sending while the
//! listener still takes what they send meanwhile; the auth check releases the latch once
//! Slack accepted the bot token; a watcher asks the store every few seconds whether it
//! answers and can write; Socket Mode's
//! connections are read from its status, reported but never required (DMs go out without
//! it, so a Socket Mode outage must not take the only replica out of its Service).

use crate::delivery::{Outbox, OutboxReport};
use crate::socket_mode::{SocketModeState, Status};
use crate::state::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the store is asked whether it answers, and how long it has to.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(5);
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Readiness {
    dry_run: bool,
    /// Released once Slack accepted the bot token (`auth.test`).
    slack_verified: Arc<AtomicBool>,
    /// Whether the store answered its last check (it did at start-up, or the bridge
    /// would not have started).
    store_answers: Arc<AtomicBool>,
    socket_mode: OnceLock<Status>,
    /// Store and forward, when on: Slack's trouble no longer makes the bridge unready.
    outbox: OnceLock<Arc<Outbox>>,
    /// Cancelled when a shutdown begins.
    shutdown: CancellationToken,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Whether the bridge can deliver DMs.
    pub ready: bool,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<SocketModeState>,
    /// Store and forward's outbox, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxReport>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            dry_run: false,
            slack_verified: Arc::default(),
            store_answers: Arc::new(AtomicBool::new(true)),
            socket_mode: OnceLock::new(),
            outbox: OnceLock::new(),
            shutdown: CancellationToken::new(),
        }
    }
}

impl Readiness {
    /// A dry run is ready at once: it needs nothing outside. Once `shutdown` is cancelled,
    /// nothing is ready.
    pub fn new(dry_run: bool, shutdown: CancellationToken) -> Self {
        Readiness {
            dry_run,
            shutdown,
            ..Readiness::default()
        }
    }

    /// What the bot token check calls once Slack accepted the token (`auth.test`).
    pub fn latch(&self) -> impl FnOnce() + Send + 'static {
        let verified = self.slack_verified.clone();
        move || verified.store(true, Ordering::Release)
    }

    /// Asks `store` whether it answers and can write, every few seconds until `shutdown`;
    /// the log says when that changes.
    pub fn watch_store(
        &self,
        store: Store,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let answers = self.store_answers.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(STORE_CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let checked = tokio::time::timeout(STORE_CHECK_TIMEOUT, store.health()).await;
                let failure = match checked {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!(
                        "the store did not answer within {}s",
                        STORE_CHECK_TIMEOUT.as_secs()
                    )),
                };
                let was = answers.swap(failure.is_none(), Ordering::AcqRel);
                match (was, failure) {
                    (true, Some(e)) => {
                        tracing::error!(error = %e, "the store stopped answering: not ready until it does")
                    }
                    (false, None) => tracing::info!("the store answers again"),
                    _ => {}
                }
            }
        })
    }

    /// Reports the outbox from now on: with store and forward on, a notification Slack
    /// cannot take waits there, so Slack's trouble (a token not verified yet, an outage)
    /// is reported, never a reason to be taken out of the load balancer (Coder would then
    /// give up on every notification).
    pub fn report_outbox(&self, outbox: Arc<Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// Reports Socket Mode's connections from now on.
    pub fn report_socket_mode(&self, status: Status) {
        let _ = self.socket_mode.set(status);
    }

    pub fn report(&self) -> Report {
        let (ready, reason) = if self.shutdown.is_cancelled() {
            (false, "shutting down")
        } else if self.dry_run {
            (true, "dry run: Slack is not contacted")
        } else if !self.store_answers.load(Ordering::Acquire) {
            (false, "the store (DATABASE_URL) does not answer")
        } else if self.slack_verified.load(Ordering::Acquire) {
            (true, "ok")
        } else if self.outbox.get().is_some() {
            (
                true,
                "SLACK_BOT_TOKEN not verified yet (auth.test): notifications wait in the outbox",
            )
        } else {
            (false, "SLACK_BOT_TOKEN not verified yet (auth.test)")
        };
        Report {
            ready,
            reason,
            socket_mode: self.socket_mode.get().map(Status::state),
            outbox: self.outbox.get().map(|outbox| outbox.report()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_the_bot_token_is_verified_whatever_socket_mode_does() {
        let readiness = Readiness::new(false, CancellationToken::new());
        assert!(!readiness.report().ready);
        readiness.report_socket_mode(Status::default());
        readiness.latch()();
        let report = readiness.report();
        assert!(report.ready);
        assert_eq!(
            report.socket_mode,
            Some(SocketModeState {
                connections_open: 0,
                ever_connected: false
            })
        );
        assert!(
            Readiness::new(true, CancellationToken::new())
                .report()
                .ready
        );
    }

    #[test]
    fn a_shutdown_is_not_ready_whatever_else_holds() {
        let shutdown = CancellationToken::new();
        let readiness = Readiness::new(true, shutdown.clone());
        readiness.latch()();
        shutdown.cancel();
        let report = readiness.report();
        assert_eq!((report.ready, report.reason), (false, "shutting down"));
    }
}
