//! The buttons that act on a workspace in Coder (with `CODER_TOKEN`): which act each of them
//! is, and what its button carries. The workspace in it was checked, when the notification
//! was delivered, to be owned by the notification's Coder user; a click checks that again,
//! with the user's account, before its one call that acts (`interact::at_click`).

use serde::{Deserialize, Serialize};

/// How far past the deadline the workspace had when the reminder went out an extend asks.
pub const EXTEND_BY_SECS: i64 = 3600;

/// One act on a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `PUT /api/v2/workspaces/{id}/extend` to an absolute deadline.
    Extend,
    /// `POST /api/v2/workspaces/{id}/builds` `{"transition":"start"}`.
    Start,
    /// `PUT /api/v2/workspaces/{id}/dormant` `{"dormant":false}`.
    Keep,
}

impl Act {
    pub const ALL: [Act; 3] = [Act::Extend, Act::Start, Act::Keep];

    /// The button's `action_id` (DESIGN.md's contract).
    pub fn action_id(self) -> &'static str {
        match self {
            Act::Extend => "extend_workspace",
            Act::Start => "start_workspace",
            Act::Keep => "keep_workspace",
        }
    }

    pub fn from_action_id(action_id: &str) -> Option<Act> {
        Act::ALL.into_iter().find(|a| a.action_id() == action_id)
    }

    /// The button's text.
    pub fn label(self) -> &'static str {
        match self {
            Act::Extend => "Extend 1 hour",
            Act::Start => "Start",
            Act::Keep => "Keep it",
        }
    }

    /// Its name in logs and in `coder_actions_total{action}`.
    pub fn name(self) -> &'static str {
        match self {
            Act::Extend => "extend",
            Act::Start => "start",
            Act::Keep => "keep",
        }
    }
}

/// A button that acts, offered on one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub act: Act,
    pub target: ActTarget,
}

/// Slack's limit on a button's `value`.
const MAX_VALUE: usize = 2000;

/// What an act's button carries in its `value` (compact JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActTarget {
    /// The workspace's ID in Coder.
    #[serde(rename = "w")]
    pub workspace_id: uuid::Uuid,
    /// The notification's Coder user: the workspace's owner, and the account a click reads
    /// to confirm it is still active.
    #[serde(rename = "u")]
    pub user_id: uuid::Uuid,
    /// The owner's username and the workspace's name, to say which workspace and to link to
    /// it in the dashboard.
    #[serde(rename = "o")]
    pub owner: String,
    #[serde(rename = "n")]
    pub name: String,
    /// Extend: the deadline asked for (Unix seconds), fixed when the notification was
    /// delivered, so a second click asks for the same one instead of another hour.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

impl ActTarget {
    /// The button's `value`; `None` when it would not fit.
    pub fn to_value(&self) -> Option<String> {
        let value = serde_json::to_string(self).ok()?;
        (value.len() <= MAX_VALUE).then_some(value)
    }

    /// A button's `value` back; `None` for anything the bridge did not make.
    pub fn parse(value: &str) -> Option<ActTarget> {
        if value.len() > MAX_VALUE {
            return None;
        }
        let target: ActTarget = serde_json::from_str(value).ok()?;
        let names_ok = [&target.owner, &target.name]
            .iter()
            .all(|s| !s.is_empty() && s.len() <= 128 && !s.contains('/'));
        names_ok.then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_survives_its_button_and_others_are_refused() {
        let target = ActTarget {
            workspace_id: uuid::Uuid::from_u128(7),
            user_id: uuid::Uuid::from_u128(9),
            owner: "bobby".into(),
            name: "dev".into(),
            deadline: Some(1_710_514_800),
        };
        let value = target.to_value().expect("fits");
        assert_eq!(ActTarget::parse(&value), Some(target));
        for bad in [
            "",
            "bobby/dev",
            r#"{"w":"x","u":"00000000-0000-0000-0000-000000000009","o":"b","n":"d"}"#,
            r#"{"w":"00000000-0000-0000-0000-000000000007","u":"00000000-0000-0000-0000-000000000009","o":"a/b","n":"d"}"#,
        ] {
            assert_eq!(ActTarget::parse(bad), None, "{bad}");
        }
        for act in Act::ALL {
            assert_eq!(Act::from_action_id(act.action_id()), Some(act));
        }
        assert_eq!(Act::from_action_id("snooze"), None);
    }
}
