//! Channels as the routes need them: `conversations.list` to turn `#name`s into IDs once at
//! start-up, and `conversations.info` for `check` to say whether the app can post in one.
//! Both are read methods (scopes `channels:read` for public channels, `groups:read` for
//! private ones), read into the few fields used, so a shape the typed model does not know
//! cannot break them.

use super::{SlackApi, SlackError};
use crate::retry::Retry;
use std::collections::HashMap;
use std::time::Duration;

/// Channels per `conversations.list` page: Slack's most. Slack may send fewer, even none,
/// with a cursor for more.
const PAGE_SIZE: &str = "1000";

/// A failed page is tried this many times in all (a 429 waits as Slack says).
const PAGE_ATTEMPTS: u32 = 5;

/// Pages read at most: a million channels, more than any workspace has.
const MAX_PAGES: usize = 1000;

/// A channel as Slack describes it to the app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChannelInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub is_private: bool,
    /// Whether the app is in it.
    #[serde(default)]
    pub is_member: bool,
    #[serde(default)]
    pub is_archived: bool,
}

#[derive(serde::Deserialize)]
struct ChannelsPage {
    #[serde(default)]
    channels: Vec<ChannelInfo>,
    response_metadata: Option<Cursor>,
}

#[derive(serde::Deserialize)]
struct Cursor {
    next_cursor: Option<String>,
}

#[derive(serde::Deserialize)]
struct OneChannel {
    channel: ChannelInfo,
}

impl SlackApi {
    /// The IDs of the channels named in `names` (lower-case, without `#`) among those the
    /// app can see: public channels, and private ones it is in, archived ones left out.
    /// Names not found are absent from the answer; paging stops once every name is found.
    pub async fn channel_ids(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, String>, SlackError> {
        let mut found = HashMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if found.len() == names.len() {
                break;
            }
            let page = Retry::new(Duration::from_secs(1), Duration::from_secs(30))
                .attempts(PAGE_ATTEMPTS)
                .run(SlackError::verdict, || {
                    self.channels_page(cursor.as_deref())
                })
                .await?;
            for channel in page.channels {
                let name = channel.name.to_lowercase();
                if names.contains(&name) {
                    found.insert(name, channel.id);
                }
            }
            cursor = page
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                break;
            }
        }
        Ok(found)
    }

    /// One page of `conversations.list`.
    async fn channels_page(&self, cursor: Option<&str>) -> Result<ChannelsPage, SlackError> {
        let params = [
            ("types", Some("public_channel,private_channel")),
            ("exclude_archived", Some("true")),
            ("limit", Some(PAGE_SIZE)),
            ("cursor", cursor),
        ];
        self.read("conversations.list", &params).await
    }

    /// `conversations.info`: the channel `id` as the app sees it; `None` when the app sees
    /// no such channel (there is none, or it is private and the app is not in it).
    pub async fn channel_info(&self, id: &str) -> Result<Option<ChannelInfo>, SlackError> {
        let params = [("channel", Some(id))];
        match self
            .read::<OneChannel, 1>("conversations.info", &params)
            .await
        {
            Ok(one) => Ok(Some(one.channel)),
            Err(e) if e.is_no_channel() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
