//! What a click on a button that acts is held to at the moment of the click, not as of the
//! notification: Slack's buttons never expire, and much can change after a message went out.
//! The message must be at most [`MAX_AGE`] old; the notification's Coder user must still be
//! active (a suspended or deleted account's old buttons do nothing); the workspace must still
//! be theirs; and an extend must not move a deadline the owner has since set later.

use crate::act::{Act, ActTarget};
use crate::coder_api::{CoderApi, CoderError, Workspace};
use chrono::{DateTime, Utc};
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
    /// An extend whose workspace already runs until then or later.
    AlreadyUntil(DateTime<Utc>),
    /// Coder did not answer a read as it should.
    Coder(CoderError),
}

impl Stop {
    /// Its name in `coder_actions_total{outcome}` and in logs.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Stop::Expired => "expired",
            Stop::Inactive(_) | Stop::Gone | Stop::NotOwner => "not_allowed",
            Stop::AlreadyUntil(_) => "already_later",
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

/// Reads the user and then the workspace from Coder, and says whether `act` may go ahead on
/// `target` now.
pub(super) async fn may_act(coder: &CoderApi, act: Act, target: &ActTarget) -> Result<(), Stop> {
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
    match act {
        Act::Extend => {
            already_later(target, &workspace).map_or(Ok(()), |until| Err(Stop::AlreadyUntil(until)))
        }
        Act::Start | Act::Keep => Ok(()),
    }
}

/// The workspace's deadline when it is running and already at or past the one the button
/// asks for: an extend never shortens a deadline.
fn already_later(target: &ActTarget, workspace: &Workspace) -> Option<DateTime<Utc>> {
    let asked = target.deadline?;
    let build = &workspace.latest_build;
    let until = build.deadline()?;
    (build.transition == "start" && until.timestamp() >= asked).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder_api::Build;
    use uuid::Uuid;

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

    #[test]
    fn only_a_running_workspace_with_a_later_deadline_is_already_extended() {
        let target = ActTarget {
            workspace_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            owner: "bobby".into(),
            name: "dev".into(),
            deadline: Some(1_710_514_800), // 15:00 UTC
        };
        let workspace = |transition: &str, deadline: &str| Workspace {
            id: Uuid::from_u128(1),
            owner_id: Uuid::from_u128(2),
            owner_name: "bobby".into(),
            name: "dev".into(),
            latest_build: Build {
                transition: transition.into(),
                status: "running".into(),
                deadline: Some(deadline.into()),
                max_deadline: None,
            },
            dormant_at: None,
        };
        let later = already_later(&target, &workspace("start", "2024-03-15T19:00:00Z"));
        assert_eq!(later.map(|t| t.timestamp()), Some(1_710_529_200));
        let same = already_later(&target, &workspace("start", "2024-03-15T15:00:00Z"));
        assert_eq!(same.map(|t| t.timestamp()), Some(1_710_514_800));
        let earlier = workspace("start", "2024-03-15T14:30:00Z");
        assert_eq!(already_later(&target, &earlier), None);
        let stopped = workspace("stop", "2024-03-15T19:00:00Z");
        assert_eq!(already_later(&target, &stopped), None);
        let no_deadline = workspace("start", "0001-01-01T00:00:00Z");
        assert_eq!(already_later(&target, &no_deadline), None);
    }
}
