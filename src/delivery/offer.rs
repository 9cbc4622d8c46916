//! The button that acts on the workspace in Coder (`CODER_TOKEN`), found while its
//! notification is delivered: the workspace is read from Coder once (by `targets[0]`, a hint,
//! else by owner and name), kept only when its owner is the notification's Coder user, and
//! the button then carries all a click needs. When Coder cannot say, the notification goes
//! without the button: a DM is worth more than a button.

use super::Delivery;
use crate::act::{Act, ActTarget, Offer, EXTEND_BY_SECS};
use crate::coder::Notification;
use crate::coder_api::{CoderApi, CoderError, Workspace};
use crate::kinds::{self, Kind};
use chrono::{DateTime, Utc};
use uuid::Uuid;

impl Delivery {
    /// The act `notification` offers on its workspace, if any can be offered now.
    pub(super) async fn offer_for(&self, notification: &Notification) -> Option<Offer> {
        let coder = self.coder.as_deref()?;
        let act = Kind::of(notification)?.act()?;
        // Not on a copy sent to someone else (a template admin): not theirs to act on.
        let workspace = kinds::own_workspace_of(notification)?;
        let username = notification.user_username.as_deref()?;
        let user_id = real_uuid(notification.user_id.as_deref())?;
        let hint = real_uuid(notification.first_target.as_deref());
        match find(coder, hint, user_id, username, workspace.name).await {
            Ok(Some(found)) => offer_on(act, &found, user_id, std::time::SystemTime::now().into()),
            Ok(None) => {
                tracing::info!(msg_id = %notification.msg_id, action = act.name(), "the workspace is not the recipient's in Coder; no button that acts");
                None
            }
            Err(e) => {
                tracing::warn!(msg_id = %notification.msg_id, action = act.name(), error = %e, "cannot read the workspace from Coder; the notification goes without its button");
                None
            }
        }
    }
}

/// A UUID that is not Coder's test fixtures' zero.
fn real_uuid(raw: Option<&str>) -> Option<Uuid> {
    Uuid::try_parse(raw?).ok().filter(|id| !id.is_nil())
}

/// The workspace, when `user_id` owns it: by its ID when the notification gives one, else
/// by owner and name.
async fn find(
    coder: &CoderApi,
    hint: Option<Uuid>,
    user_id: Uuid,
    username: &str,
    name: &str,
) -> Result<Option<Workspace>, CoderError> {
    if let Some(id) = hint {
        match coder.workspace(id).await {
            Ok(found) if found.owner_id == user_id => return Ok(Some(found)),
            // Only a hint: another kind's first target, or gone.
            Ok(_) | Err(CoderError::Refused { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    match coder.workspace_by_name(username, name).await {
        Ok(found) => Ok((found.owner_id == user_id).then_some(found)),
        // Not found and not allowed are both 404.
        Err(CoderError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The button `act` makes on `workspace` at `now`, when it can do something: extend a
/// running workspace with a deadline (to an hour past it, capped at its max deadline), start
/// one that is not running or starting, keep one that is dormant.
pub(super) fn offer_on(
    act: Act,
    workspace: &Workspace,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Option<Offer> {
    let build = &workspace.latest_build;
    let deadline = match act {
        Act::Extend => {
            if build.transition != "start" {
                return None;
            }
            let deadline = build.deadline()?.timestamp();
            let mut target = deadline + EXTEND_BY_SECS;
            if let Some(max) = build.max_deadline() {
                target = target.min(max.timestamp());
            }
            if target <= deadline || target <= now.timestamp() {
                return None;
            }
            Some(target)
        }
        Act::Start => {
            let busy = ["running", "starting", "pending"].contains(&build.status.as_str());
            if build.transition == "start" && busy {
                return None;
            }
            None
        }
        Act::Keep => {
            workspace.dormant_at.as_ref()?;
            None
        }
    };
    Some(Offer {
        act,
        target: ActTarget {
            workspace_id: workspace.id,
            user_id,
            owner: workspace.owner_name.clone(),
            name: workspace.name.clone(),
            deadline,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder_api::Build;

    fn workspace(
        transition: &str,
        status: &str,
        deadline: Option<&str>,
        max: Option<&str>,
    ) -> Workspace {
        Workspace {
            id: Uuid::from_u128(1),
            owner_id: Uuid::from_u128(2),
            owner_name: "bobby".into(),
            name: "dev".into(),
            latest_build: Build {
                transition: transition.into(),
                status: status.into(),
                deadline: deadline.map(str::to_owned),
                max_deadline: max.map(str::to_owned),
            },
            dormant_at: None,
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn extend_asks_for_an_hour_past_the_deadline_capped_at_the_max() {
        let now = at("2024-03-15T13:30:00Z");
        let user = Uuid::from_u128(2);
        let deadline =
            |w: &Workspace| offer_on(Act::Extend, w, user, now).and_then(|o| o.target.deadline);
        let running = workspace("start", "running", Some("2024-03-15T14:00:00Z"), None);
        assert_eq!(
            deadline(&running),
            Some(at("2024-03-15T15:00:00Z").timestamp())
        );
        let capped = workspace(
            "start",
            "running",
            Some("2024-03-15T14:00:00Z"),
            Some("2024-03-15T14:20:00Z"),
        );
        assert_eq!(
            deadline(&capped),
            Some(at("2024-03-15T14:20:00Z").timestamp())
        );
        let at_max = workspace(
            "start",
            "running",
            Some("2024-03-15T14:00:00Z"),
            Some("2024-03-15T14:00:00Z"),
        );
        assert_eq!(offer_on(Act::Extend, &at_max, user, now), None);
        let manual = workspace("start", "running", None, None);
        assert_eq!(offer_on(Act::Extend, &manual, user, now), None);
        let stopped = workspace("stop", "stopped", Some("2024-03-15T14:00:00Z"), None);
        assert_eq!(offer_on(Act::Extend, &stopped, user, now), None);
        let long_past = workspace("start", "running", Some("2024-03-15T12:00:00Z"), None);
        assert_eq!(offer_on(Act::Extend, &long_past, user, now), None);
    }

    #[test]
    fn start_is_offered_unless_running_and_keep_only_while_dormant() {
        let user = Uuid::from_u128(2);
        let now: DateTime<Utc> = std::time::SystemTime::now().into();
        let failed = workspace("start", "failed", None, None);
        let offer = offer_on(Act::Start, &failed, user, now).expect("offered");
        assert_eq!(
            (offer.target.owner.as_str(), offer.target.deadline),
            ("bobby", None)
        );
        for (transition, status) in [("start", "running"), ("start", "starting")] {
            assert_eq!(
                offer_on(
                    Act::Start,
                    &workspace(transition, status, None, None),
                    user,
                    now
                ),
                None
            );
        }
        assert!(offer_on(
            Act::Start,
            &workspace("stop", "stopped", None, None),
            user,
            now
        )
        .is_some());
        let mut dormant = workspace("stop", "stopped", None, None);
        assert_eq!(offer_on(Act::Keep, &dormant, user, now), None);
        dormant.dormant_at = Some("2024-03-15T12:00:00Z".into());
        assert!(offer_on(Act::Keep, &dormant, user, now).is_some());
    }
}
