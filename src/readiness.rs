//! Whether the bridge can deliver DMs, as `/readyz` reports it. Each source sets its own part:
//! the auth check releases the latch once Slack accepted the bot token; Socket Mode's
//! connections are read from its status, reported but never required (DMs go out without
//! it, so a Socket Mode outage must not take the only replica out of its Service).

use crate::socket_mode::{SocketModeState, Status};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Default)]
pub struct Readiness {
    dry_run: bool,
    /// Released once Slack accepted the bot token (`auth.test`).
    slack_verified: Arc<AtomicBool>,
    socket_mode: OnceLock<Status>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Whether the bridge can deliver DMs.
    pub ready: bool,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<SocketModeState>,
}

impl Readiness {
    /// A dry run is ready at once: it needs nothing outside.
    pub fn new(dry_run: bool) -> Self {
        Readiness {
            dry_run,
            ..Readiness::default()
        }
    }

    /// What the bot token check calls once Slack accepted the token (`auth.test`).
    pub fn latch(&self) -> impl FnOnce() + Send + 'static {
        let verified = self.slack_verified.clone();
        move || verified.store(true, Ordering::Release)
    }

    /// Reports Socket Mode's connections from now on.
    pub fn report_socket_mode(&self, status: Status) {
        let _ = self.socket_mode.set(status);
    }

    pub fn report(&self) -> Report {
        let (ready, reason) = if self.dry_run {
            (true, "dry run: Slack is not contacted")
        } else if self.slack_verified.load(Ordering::Acquire) {
            (true, "ok")
        } else {
            (false, "SLACK_BOT_TOKEN not verified yet (auth.test)")
        };
        Report {
            ready,
            reason,
            socket_mode: self.socket_mode.get().map(Status::state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_the_bot_token_is_verified_whatever_socket_mode_does() {
        let readiness = Readiness::new(false);
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
        assert!(Readiness::new(true).report().ready);
    }
}
