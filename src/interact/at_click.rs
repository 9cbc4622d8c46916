//! What a click on a button that acts is held to at the moment of the click, not as of the
//! notification: Slack's buttons never expire, and much can change after a message went out.
//! The message must be at most [`MAX_AGE`] old; the notification's Coder user must still be
//! active (a suspended or deleted account's old buttons do nothing); and the workspace must
//! still be theirs.

use crate::act::ActTarget;
use crate::coder_api::{CoderApi, CoderError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buttons on messages older than this link to Coder instead of acting.
pub(super) const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a click does not act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    /// The message is older than [`MAX_AGE`] (or says no time Slack would write).
    Expired,
    /// The Coder account is not active: `suspended`, `dormant`, or a status Coder adds.
    Inactive(String),
    /// Coder does not know the account any more: deleted.
    Gone,
    /// The workspace's owner is no longer the notification's Coder user.
    NotOwner,
    /// Coder did not answer a read as it should.
    Coder(CoderError),
}

impl Stop {
    /// Its name in `coder_actions_total{outcome}` and in logs.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Stop::Expired => "expired",
            Stop::Inactive(_) | Stop::Gone | Stop::NotOwner => "not_allowed",
            Stop::Coder(e) => e.outcome(),
        }
    }
}

/// Whether the message posted at `message_ts` (Slack's `seconds.micros`) is too old to act
/// from at `now`.
pub(super) fn expired(message_ts: &str, now: SystemTime) -> bool {
    let posted = message_ts
        .split('.')
        .next()
        .and_then(|secs| secs.parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    match posted {
        Some(posted) => now.duration_since(posted).unwrap_or_default() > MAX_AGE,
        // Slack always sends one; a click without it is refused rather than trusted.
        None => true,
    }
}

/// Reads the user and then the workspace from Coder, and says whether a click may act on
/// `target` now.
pub(super) async fn may_act(coder: &CoderApi, target: &ActTarget) -> Result<(), Stop> {
    let user = match coder.user(target.user_id).await {
        Ok(user) => user,
        // Coder answers a user it does not know (any more) 404, or 400 from newer versions.
        Err(CoderError::Refused {
            status: 400 | 404, ..
        }) => return Err(Stop::Gone),
        Err(e) => return Err(Stop::Coder(e)),
    };
    if user.status != "active" {
        return Err(Stop::Inactive(user.status));
    }
    let workspace = coder
        .workspace(target.workspace_id)
        .await
        .map_err(Stop::Coder)?;
    if workspace.owner_id != target.user_id {
        return Err(Stop::NotOwner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_over_seven_days_old_are_expired() {
        let now = UNIX_EPOCH + Duration::from_secs(1_710_510_000);
        let ago = |secs: u64| format!("{}.000200", 1_710_510_000 - secs);
        assert!(!expired(&ago(0), now));
        assert!(!expired(&ago(7 * 24 * 3600), now));
        assert!(expired(&ago(7 * 24 * 3600 + 1), now));
        assert!(!expired("1710519999.000100", now), "a clock behind Slack's");
        assert!(expired("", now));
        assert!(expired("soon", now));
    }
}
