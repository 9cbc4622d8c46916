//! The Web API's answers (and the one request) as the bridge reads them: only the fields it
//! needs, so a shape slack-morphism's model does not know cannot break a call that worked.

use slack_morphism::prelude::SlackUserId;

#[derive(serde::Deserialize)]
pub(super) struct PostedMessage {
    pub(super) channel: String,
    pub(super) ts: String,
}

/// `views.publish`'s answer: the hash of the view as Slack now holds it.
#[derive(serde::Deserialize)]
pub(super) struct PublishedView {
    pub(super) view: ViewHash,
}

#[derive(serde::Deserialize)]
pub(super) struct ViewHash {
    #[serde(default)]
    pub(super) hash: Option<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct Scheduled {
    pub(super) channel: String,
    pub(super) scheduled_message_id: String,
}

/// The `event_type` of the metadata every notification carries, with its `msg_id` in
/// `event_payload`, so a DM can be searched for a post whose answer was lost.
pub const METADATA_EVENT_TYPE: &str = "coder_notification";

/// The metadata's `part` of a notification's own message (the default when absent); a
/// workspace's card posted for it says `card`, so the two are found apart.
pub const NOTIFICATION_PART: &str = "notification";

#[derive(serde::Serialize)]
pub(super) struct OpenDmRequest<'a> {
    pub(super) users: &'a str,
}

#[derive(serde::Deserialize)]
pub(super) struct OpenedDm {
    pub(super) channel: ChannelRef,
}

#[derive(serde::Deserialize)]
pub(super) struct ChannelRef {
    pub(super) id: String,
}

/// Only what a read-back needs of `conversations.history`: blocks of any shape must not
/// break the parse.
#[derive(serde::Deserialize)]
pub(super) struct History {
    #[serde(default)]
    pub(super) messages: Vec<HistoryMessage>,
    pub(super) response_metadata: Option<HistoryCursor>,
}

#[derive(serde::Deserialize)]
pub(super) struct HistoryMessage {
    pub(super) ts: String,
    pub(super) metadata: Option<HistoryMetadata>,
}

#[derive(serde::Deserialize)]
pub(super) struct HistoryMetadata {
    pub(super) event_type: String,
    #[serde(default)]
    pub(super) event_payload: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
pub(super) struct HistoryCursor {
    pub(super) next_cursor: Option<String>,
}

/// One page of `users.list`, as the directory reads it.
#[derive(Debug, Default)]
pub struct UsersPage {
    /// (lower-cased e-mail, user ID) of the active people on the page.
    pub active: Vec<(String, SlackUserId)>,
    /// Lower-cased e-mails of deleted users and bots (and Slackbot): not to be kept.
    pub gone: Vec<String>,
    /// The next page's cursor; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<'de> serde::Deserialize<'de> for UsersPage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let listed = ListedPage::deserialize(deserializer)?;
        let mut page = UsersPage {
            active: Vec::with_capacity(listed.members.len()),
            gone: Vec::new(),
            next_cursor: listed
                .response_metadata
                .and_then(|m| m.next_cursor)
                .map(|c| c.0.into_owned())
                .filter(|c| !c.is_empty()),
        };
        for member in listed.members {
            let Some(email) = member.profile.and_then(|p| p.email) else {
                continue;
            };
            if email.0.is_empty() {
                continue;
            }
            let email = email.0.to_lowercase();
            let is_bot = member.is_bot == Some(true) || member.id.0 == "USLACKBOT";
            if member.deleted == Some(true) || is_bot {
                page.gone.push(email);
            } else {
                page.active
                    .push((email, SlackUserId(member.id.0.into_owned())));
            }
        }
        Ok(page)
    }
}

/// `users.list`'s answer, read in place: only what the directory needs (serde skips the rest
/// of each member without building it).
#[derive(serde::Deserialize)]
struct ListedPage<'a> {
    #[serde(borrow, default)]
    members: Vec<ListedMember<'a>>,
    #[serde(borrow)]
    response_metadata: Option<ListedCursor<'a>>,
}

#[derive(serde::Deserialize)]
struct ListedMember<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    deleted: Option<bool>,
    is_bot: Option<bool>,
    #[serde(borrow)]
    profile: Option<ListedProfile<'a>>,
}

#[derive(serde::Deserialize)]
struct ListedProfile<'a> {
    #[serde(borrow)]
    email: Option<Text<'a>>,
}

#[derive(serde::Deserialize)]
struct ListedCursor<'a> {
    #[serde(borrow)]
    next_cursor: Option<Text<'a>>,
}

/// A JSON string borrowed from the body, or copied when it had escapes (serde's own `Cow`
/// is always copied when inside an `Option`).
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}
