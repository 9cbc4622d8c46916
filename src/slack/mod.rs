//! The Slack Web API as the bridge uses it: typed calls through slack-morphism on one pooled
//! reqwest client, each counted in metrics, each error classified for the delivery code.

mod connector;
pub mod directory;

pub use connector::{ReqwestConnector, MAX_RETRY_AFTER, MIN_RETRY_AFTER};

use crate::proxy::ProxyConfig;
use crate::retry::Verdict;
use crate::socket_mode::{OpenConnection, OpenError};
use crate::telemetry::{MethodLabels, Metrics, SlackCallLabels};
use futures_util::future::{BoxFuture, FutureExt};
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

pub use crate::outbound::install_crypto_provider;

/// How a failed call should be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying cannot help: the person cannot be messaged.
    Permanent,
    /// Slack refused the message as built: the bridge's fault, not the person's.
    BadMessage,
    /// A setting must be fixed by an administrator; retrying later may work.
    Configuration,
    /// Slack said to wait this long.
    RateLimited(Option<Duration>),
    /// Outage, timeout, 5xx: retry with backoff.
    Transient,
}

/// A failed Slack call. Its text names the method and Slack's error code, never a body
/// (a `chat.postMessage` answer echoes the message, which can carry secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SlackError {
    #[error("{method}: {code}{}", needed.as_ref().map(|n| format!(" {n}")).unwrap_or_default())]
    Api {
        method: &'static str,
        code: String,
        /// For `missing_scope`: the scope Slack asked for.
        needed: Option<String>,
    },
    #[error("{method}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        method: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{method}: HTTP status {status}")]
    Http { method: &'static str, status: u16 },
    #[error("{method}: {detail}")]
    Transport {
        method: &'static str,
        detail: String,
    },
    #[error("{method}: unexpected answer from Slack ({detail})")]
    Protocol {
        method: &'static str,
        detail: String,
    },
    #[error("{method}: {setting} is not set")]
    NoToken {
        method: &'static str,
        setting: &'static str,
    },
}

/// What a Slack error code means, for the codes the bridge treats specially (any other is
/// taken as a passing failure). Each code is named here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// The message can never reach that person.
    Unreachable,
    /// The bridge built a message Slack will not take.
    BadMessage,
    /// The token itself is refused: reinstall the app, copy the new token.
    TokenRefused,
    /// The token lacks a scope (Slack names it in `needed`).
    MissingScope,
    /// App Home → Messages Tab is off.
    MessagesTabOff,
    /// The workspace does not let this app do that.
    NotAllowed,
    /// The message or thread asked about is no longer there (deleted), or can no longer be
    /// edited: a new one is started.
    Gone,
}

const CODES: &[(&str, Meaning)] = &[
    ("users_not_found", Meaning::Unreachable),
    ("user_not_found", Meaning::Unreachable),
    ("channel_not_found", Meaning::Unreachable),
    ("cannot_dm_bot", Meaning::Unreachable),
    ("user_disabled", Meaning::Unreachable),
    ("is_archived", Meaning::Unreachable),
    ("user_not_visible", Meaning::Unreachable),
    ("restricted_action", Meaning::Unreachable),
    ("not_in_channel", Meaning::Unreachable),
    ("invalid_blocks", Meaning::BadMessage),
    ("invalid_blocks_format", Meaning::BadMessage),
    ("msg_too_long", Meaning::BadMessage),
    ("no_text", Meaning::BadMessage),
    ("too_many_attachments", Meaning::BadMessage),
    ("invalid_metadata_format", Meaning::BadMessage),
    ("invalid_metadata_schema", Meaning::BadMessage),
    ("metadata_too_large", Meaning::BadMessage),
    ("not_authed", Meaning::TokenRefused),
    ("invalid_auth", Meaning::TokenRefused),
    ("token_revoked", Meaning::TokenRefused),
    ("token_expired", Meaning::TokenRefused),
    ("account_inactive", Meaning::TokenRefused),
    ("not_allowed_token_type", Meaning::TokenRefused),
    ("missing_scope", Meaning::MissingScope),
    ("messages_tab_disabled", Meaning::MessagesTabOff),
    ("no_permission", Meaning::NotAllowed),
    ("ekm_access_denied", Meaning::NotAllowed),
    ("team_access_not_granted", Meaning::NotAllowed),
    ("org_login_required", Meaning::NotAllowed),
    ("thread_not_found", Meaning::Gone),
    ("message_not_found", Meaning::Gone),
    ("cant_update_message", Meaning::Gone),
    ("edit_window_closed", Meaning::Gone),
];

fn meaning(code: &str) -> Option<Meaning> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

impl SlackError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SlackError::Api { code, .. } => match meaning(code) {
                Some(Meaning::Unreachable | Meaning::Gone) => ErrorClass::Permanent,
                Some(Meaning::BadMessage) => ErrorClass::BadMessage,
                Some(_) => ErrorClass::Configuration,
                None => ErrorClass::Transient,
            },
            SlackError::NoToken { .. } => ErrorClass::Configuration,
            SlackError::RateLimited { retry_after, .. } => ErrorClass::RateLimited(*retry_after),
            _ => ErrorClass::Transient,
        }
    }

    /// Whether the message or thread the call named is gone (or can no longer be edited).
    pub fn is_gone(&self) -> bool {
        matches!(self, SlackError::Api { code, .. } if meaning(code) == Some(Meaning::Gone))
    }

    /// Whether the token lacks a scope the call needs.
    pub fn lacks_scope(&self) -> bool {
        matches!(self, SlackError::Api { code, .. } if meaning(code) == Some(Meaning::MissingScope))
    }

    /// Whether another attempt can help, and when: a 429's `Retry-After` (clamped where it
    /// is parsed), backoff for outages, never for answers that will not change.
    pub fn verdict(&self) -> Verdict {
        match self.class() {
            ErrorClass::RateLimited(after) => Verdict::After(after.unwrap_or(MIN_RETRY_AFTER)),
            ErrorClass::Transient => Verdict::Backoff,
            ErrorClass::Permanent | ErrorClass::BadMessage | ErrorClass::Configuration => {
                Verdict::Stop
            }
        }
    }

    /// Whether Slack may have done what was asked although no answer said so: the request
    /// may have arrived before the connection failed, the timeout struck or an edge proxy
    /// answered 5xx. An error code or a 429 is Slack's own answer, so the outcome is known.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            SlackError::Transport { .. } | SlackError::Protocol { .. } => true,
            SlackError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Slack's error code, or a short tag for errors without one.
    pub fn code(&self) -> &str {
        match self {
            SlackError::Api { code, .. } => code,
            SlackError::RateLimited { .. } => "rate_limited",
            SlackError::Http { .. } => "http_error",
            SlackError::Transport { .. } => "transport_error",
            SlackError::Protocol { .. } => "protocol_error",
            SlackError::NoToken { .. } => "no_token",
        }
    }

    /// For configuration errors: what the administrator should do.
    pub fn remedy(&self) -> Option<String> {
        let SlackError::Api { code, needed, .. } = self else {
            return match self {
                SlackError::NoToken { setting, .. } => Some(format!("set {setting}")),
                _ => None,
            };
        };
        Some(match meaning(code)? {
            Meaning::TokenRefused => {
                "check SLACK_BOT_TOKEN: Slack no longer accepts it (reinstall the app and copy the new xoxb- token)".into()
            }
            Meaning::MissingScope => format!(
                "add the bot scope {} to the Slack app and reinstall it",
                needed.as_deref().unwrap_or("named by Slack")
            ),
            Meaning::MessagesTabOff => {
                "turn on App Home → Messages Tab in the Slack app settings".into()
            }
            Meaning::NotAllowed => {
                "the Slack workspace does not let this app do that: check the app's installation".into()
            }
            Meaning::Unreachable | Meaning::BadMessage | Meaning::Gone => return None,
        })
    }
}

#[derive(serde::Deserialize)]
struct PostedMessage {
    channel: String,
    ts: String,
}

#[derive(serde::Deserialize)]
struct Scheduled {
    channel: String,
    scheduled_message_id: String,
}

/// The `event_type` of the metadata every notification carries, with its `msg_id` in
/// `event_payload`, so a DM can be searched for a post whose answer was lost.
pub const METADATA_EVENT_TYPE: &str = "coder_notification";

#[derive(serde::Serialize)]
struct OpenDmRequest<'a> {
    users: &'a str,
}

#[derive(serde::Deserialize)]
struct OpenedDm {
    channel: ChannelRef,
}

#[derive(serde::Deserialize)]
struct ChannelRef {
    id: String,
}

/// Only what a read-back needs of `conversations.history`: blocks of any shape must not
/// break the parse.
#[derive(serde::Deserialize)]
struct History {
    #[serde(default)]
    messages: Vec<HistoryMessage>,
    response_metadata: Option<HistoryCursor>,
}

#[derive(serde::Deserialize)]
struct HistoryMessage {
    ts: String,
    metadata: Option<HistoryMetadata>,
}

#[derive(serde::Deserialize)]
struct HistoryMetadata {
    event_type: String,
    #[serde(default)]
    event_payload: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct HistoryCursor {
    next_cursor: Option<String>,
}

/// Pages of history read when looking for one message: a DM gets few messages in the
/// minutes a read-back covers.
const HISTORY_PAGES: usize = 5;

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

/// What `auth.test` says of the bot token.
#[derive(Debug, Clone)]
pub struct AuthInfo {
    pub team: String,
    pub user: String,
    /// From the `x-oauth-scopes` header; `None` when Slack did not send it.
    pub scopes: Option<Vec<String>>,
}

/// The Web API client. Tokens are held as slack-morphism tokens, whose `Debug` shows only
/// their length.
#[derive(Debug)]
pub struct SlackApi {
    client: SlackClient<ReqwestConnector>,
    http: reqwest::Client,
    api_url: Url,
    bot_token: Option<SlackApiToken>,
    app_token: Option<SlackApiToken>,
    metrics: Metrics,
}

impl SlackApi {
    pub fn new(
        api_url: &Url,
        bot_token: Option<&SecretString>,
        app_token: Option<&SecretString>,
        call_timeout: Duration,
        metrics: Metrics,
        proxies: &ProxyConfig,
    ) -> Result<Self, String> {
        let proxies = Arc::new(proxies.clone());
        let user_agent = concat!("coder-slack-bridge/", env!("CARGO_PKG_VERSION"));
        let http = crate::outbound::client(proxies.clone(), call_timeout, user_agent)?;
        let token =
            |t: &SecretString| SlackApiToken::new(SlackApiTokenValue(t.expose_secret().to_owned()));
        Ok(SlackApi {
            client: SlackClient::new(ReqwestConnector::new(http.clone(), api_url, proxies)),
            http,
            api_url: api_url.clone(),
            bot_token: bot_token.map(token),
            app_token: app_token.map(token),
            metrics,
        })
    }

    /// The one way the bridge builds its Slack client: `serve`, `check` and `send-test`.
    pub fn from_config(
        config: &crate::config::Config,
        proxies: &ProxyConfig,
        metrics: Metrics,
    ) -> Result<Self, String> {
        Self::new(
            &config.slack_api_url,
            config.slack_bot_token.as_ref(),
            config.slack_app_token.as_ref(),
            config.tuning.slack_call_timeout,
            metrics,
            proxies,
        )
    }

    pub fn has_app_token(&self) -> bool {
        self.app_token.is_some()
    }

    fn bot_token(&self, method: &'static str) -> Result<&SlackApiToken, SlackError> {
        self.bot_token.as_ref().ok_or(SlackError::NoToken {
            method,
            setting: "SLACK_BOT_TOKEN",
        })
    }

    /// A read method with the bot token: Slack takes its arguments as a query, not as JSON
    /// (as slack-morphism's own read methods send them); counted and logged like every call.
    async fn read<T: serde::de::DeserializeOwned + Send, const N: usize>(
        &self,
        method: &'static str,
        params: &[(&str, Option<&str>); N],
    ) -> Result<T, SlackError> {
        let token = self.bot_token(method)?;
        let started = Instant::now();
        let result = self
            .client
            .open_session(token)
            .http_session_api
            .http_get(method, params, None)
            .await;
        self.finish(method, started, result)
    }

    /// Counts and logs one finished call, and turns slack-morphism's error into ours.
    fn finish<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: Result<T, SlackClientError>,
    ) -> Result<T, SlackError> {
        let result = result.map_err(|e| classify(method, e));
        self.record(method, started, &result);
        result
    }

    /// `chat.postMessage`; returns the channel and timestamp Slack assigned.
    pub async fn post_message(
        &self,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<(String, String), SlackError> {
        // Only `channel` and `ts` are read from the answer: Slack echoes the whole message
        // back, and a block shape the typed model does not know must not turn a message
        // that was posted into an error (Coder would retry and post it twice).
        let posted: PostedMessage = self.post("chat.postMessage", request).await?;
        Ok((posted.channel, posted.ts))
    }

    /// `conversations.open` for a user ID: the `D…` ID of the app's DM with that person.
    pub async fn open_dm(&self, user: &SlackUserId) -> Result<String, SlackError> {
        let request = OpenDmRequest { users: &user.0 };
        let opened: OpenedDm = self.post("conversations.open", &request).await?;
        Ok(opened.channel.id)
    }

    /// Looks in `channel` (in the thread under `thread_ts`, when given) for a message posted
    /// at or after `oldest` (a Slack timestamp) whose metadata names `msg_id`; returns its `ts`.
    pub async fn find_notification(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: &str,
        msg_id: &str,
    ) -> Result<Option<String>, SlackError> {
        let mut cursor: Option<String> = None;
        for _ in 0..HISTORY_PAGES {
            let history = self
                .history_page(channel, thread_ts, oldest, cursor.as_deref())
                .await?;
            let found = history.messages.into_iter().find(|m| {
                m.metadata.as_ref().is_some_and(|meta| {
                    meta.event_type == METADATA_EVENT_TYPE
                        && meta.event_payload.get("msg_id").and_then(|v| v.as_str()) == Some(msg_id)
                })
            });
            if let Some(message) = found {
                return Ok(Some(message.ts));
            }
            cursor = history
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// A page of `conversations.history`, or of `conversations.replies` under `thread_ts`.
    async fn history_page(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: &str,
        cursor: Option<&str>,
    ) -> Result<History, SlackError> {
        let method = match thread_ts {
            Some(_) => "conversations.replies",
            None => "conversations.history",
        };
        let params = [
            ("channel", Some(channel)),
            ("ts", thread_ts),
            ("oldest", Some(oldest)),
            ("inclusive", Some("true")),
            ("include_all_metadata", Some("true")),
            ("limit", Some("100")),
            ("cursor", cursor),
        ];
        self.read(method, &params).await
    }

    /// `views.publish`: `blocks` as `user`'s App Home.
    pub async fn publish_home(
        &self,
        user: &str,
        blocks: Vec<SlackBlock>,
    ) -> Result<(), SlackError> {
        let request = SlackApiViewsPublishRequest::new(
            SlackUserId(user.to_owned()),
            SlackView::Home(SlackHomeView::new(blocks)),
        );
        let _: serde::de::IgnoredAny = self.post("views.publish", &request).await?;
        Ok(())
    }

    /// `chat.postEphemeral`: `text` shown to `user` alone in `channel` (in the thread under
    /// `thread_ts`, when given).
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatPostEphemeralRequest::new(
            SlackChannelId(channel.to_owned()),
            SlackUserId(user.to_owned()),
            SlackMessageContent::new().with_text(text.to_owned()),
        )
        .opt_thread_ts(thread_ts.map(|ts| SlackTs(ts.to_owned())));
        let _: serde::de::IgnoredAny = self.post("chat.postEphemeral", &request).await?;
        Ok(())
    }

    /// `chat.update`: replaces the message at `ts` in `channel` with `content`.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        content: SlackMessageContent,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId(channel.to_owned()),
            content,
            SlackTs(ts.to_owned()),
        );
        let _: PostedMessage = self.post("chat.update", &request).await?;
        Ok(())
    }

    /// `chat.update` with blocks as Slack sent them (a clicked message, edited to show what
    /// the click did): kept as JSON, so no block shape the typed model lacks is lost.
    pub async fn update_message_blocks(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &serde_json::Value,
    ) -> Result<(), SlackError> {
        let request = serde_json::json!({
            "channel": channel,
            "ts": ts,
            "text": text,
            "blocks": blocks,
        });
        let _: PostedMessage = self.post("chat.update", &request).await?;
        Ok(())
    }

    /// Proves the bot may post in `channel` without posting: a message scheduled an hour
    /// ahead meets the same checks as a post (`not_in_channel`, `channel_not_found`, …) and
    /// is deleted at once.
    pub async fn verify_can_post(&self, channel: &str) -> Result<(), SlackError> {
        let post_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + 3600;
        let request = serde_json::json!({
            "channel": channel,
            "post_at": post_at,
            "text": "coder-slack-bridge check (deleted at once, never sent)",
        });
        let scheduled: Scheduled = self.post("chat.scheduleMessage", &request).await?;
        let delete = serde_json::json!({
            "channel": scheduled.channel,
            "scheduled_message_id": scheduled.scheduled_message_id,
        });
        self.post::<_, serde_json::Value>("chat.deleteScheduledMessage", &delete)
            .await
            .map(|_| ())
    }

    /// A JSON POST with the bot token, its answer read as `T` (only the fields the bridge
    /// needs, so a shape slack-morphism's model does not know cannot break it), counted like
    /// every other call.
    async fn post<RQ, T>(&self, method: &'static str, request: &RQ) -> Result<T, SlackError>
    where
        RQ: serde::Serialize + Send + Sync,
        T: serde::de::DeserializeOwned + Send,
    {
        let token = self.bot_token(method)?;
        let started = Instant::now();
        let result: Result<T, _> = self
            .client
            .open_session(token)
            .http_session_api
            .http_post(method, request, None)
            .await;
        self.finish(method, started, result)
    }

    /// `users.lookupByEmail`; `Ok(None)` when Slack has no active user with that address.
    pub async fn lookup_by_email(&self, email: &str) -> Result<Option<SlackUserId>, SlackError> {
        const METHOD: &str = "users.lookupByEmail";
        let token = self.bot_token(METHOD)?;
        let started = Instant::now();
        let request = SlackApiUsersLookupByEmailRequest::new(EmailAddress(email.to_owned()));
        let result = self
            .client
            .open_session(token)
            .users_lookup_by_email(&request)
            .await;
        match self.finish(METHOD, started, result) {
            Ok(response) if response.user.deleted != Some(true) => Ok(Some(response.user.id)),
            Ok(_) => Ok(None),
            Err(SlackError::Api { code, .. }) if code == "users_not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `users.list`: the active people's (lower-cased e-mail, user ID), the
    /// addresses of deleted users and bots, and the next page's cursor. Each member is read
    /// into a few borrowed fields ([`ListedMember`]), never into a full profile, so a page of
    /// a large org costs its body and little more.
    pub async fn users_list_page(
        &self,
        cursor: Option<String>,
        limit: u16,
    ) -> Result<UsersPage, SlackError> {
        let limit = limit.to_string();
        let params = [
            ("limit", Some(limit.as_str())),
            ("cursor", cursor.as_deref()),
        ];
        self.read("users.list", &params).await
    }

    /// `auth.test` for the bot token, with the scopes Slack reports in `x-oauth-scopes`
    /// (slack-morphism's typed answer does not expose headers, so this one call is made
    /// directly on the shared HTTP client).
    pub async fn auth_test(&self) -> Result<AuthInfo, SlackError> {
        const METHOD: &str = "auth.test";
        let token = self.bot_token(METHOD)?;
        let started = Instant::now();
        let url = format!("{}/auth.test", self.api_url.as_str().trim_end_matches('/'));
        let result = async {
            let response = self
                .http
                .post(url)
                .bearer_auth(&token.token_value.0)
                .send()
                .await
                .map_err(|e| self.transport(METHOD, e))?;
            let scopes = response
                .headers()
                .get("x-oauth-scopes")
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                });
            let status = response.status();
            let retry_after = connector::retry_after(response.headers());
            let body = response
                .bytes()
                .await
                .map_err(|e| self.transport(METHOD, e))?;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(SlackError::RateLimited {
                    method: METHOD,
                    retry_after,
                });
            }
            if !status.is_success() {
                return Err(SlackError::Http {
                    method: METHOD,
                    status: status.as_u16(),
                });
            }
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| SlackError::Protocol {
                    method: METHOD,
                    detail: e.to_string(),
                })?;
            if value["ok"] != serde_json::Value::Bool(true) {
                return Err(SlackError::Api {
                    method: METHOD,
                    code: value["error"]
                        .as_str()
                        .unwrap_or("unknown_error")
                        .to_owned(),
                    needed: value["needed"].as_str().map(str::to_owned),
                });
            }
            let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
            Ok(AuthInfo {
                team: text("team"),
                user: text("user"),
                scopes,
            })
        }
        .await;
        self.record(METHOD, started, &result);
        result
    }

    fn record<T>(&self, method: &'static str, started: Instant, result: &Result<T, SlackError>) {
        if let Err(SlackError::RateLimited { .. }) = result {
            self.metrics
                .slack_rate_limited
                .get_or_create(&MethodLabels { method })
                .inc();
        }
        let label = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        tracing::debug!(
            method,
            result = label.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "slack call"
        );
        self.metrics
            .slack_calls
            .get_or_create(&SlackCallLabels {
                method,
                result: label,
            })
            .inc();
    }

    /// `apps.connections.open` with the app-level token: a single-use Socket Mode URL.
    pub async fn open_socket_url(&self) -> Result<Url, SlackError> {
        const METHOD: &str = "apps.connections.open";
        let token = self.app_token.as_ref().ok_or(SlackError::NoToken {
            method: METHOD,
            setting: "SLACK_APP_TOKEN",
        })?;
        let started = Instant::now();
        let result = self
            .client
            .open_session(token)
            .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
            .await;
        let response = self.finish(METHOD, started, result)?;
        Ok(response.url.0)
    }
}

/// What an `apps.connections.open` failure means to Socket Mode, decided here so that
/// Socket Mode knows no Slack error codes.
fn open_error(error: SlackError) -> OpenError {
    match (&error, error.class()) {
        (_, ErrorClass::Configuration) => OpenError::Auth(error.code().to_owned()),
        (_, ErrorClass::RateLimited(after)) => {
            OpenError::RateLimited(after.unwrap_or(MIN_RETRY_AFTER))
        }
        (SlackError::Api { code, .. }, _) => OpenError::Api(code.clone()),
        (SlackError::Transport { .. }, _) => OpenError::Transport(error.to_string()),
        _ => OpenError::Other(error.to_string()),
    }
}

impl OpenConnection for SlackApi {
    fn open(&self) -> BoxFuture<'_, Result<Url, OpenError>> {
        async move { self.open_socket_url().await.map_err(open_error) }.boxed()
    }
}

impl SlackApi {
    /// A transport failure with its causes and the proxy it went through (never the URL's
    /// path or query, which can carry an e-mail address).
    fn transport(&self, method: &'static str, error: reqwest::Error) -> SlackError {
        SlackError::Transport {
            method,
            detail: self.client.http_api.connector.describe_error(error),
        }
    }
}

fn classify(method: &'static str, error: SlackClientError) -> SlackError {
    match error {
        SlackClientError::ApiError(e) => {
            let needed = e
                .http_response_body
                .as_deref()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .and_then(|v| v["needed"].as_str().map(str::to_owned));
            SlackError::Api {
                method,
                code: e.code,
                needed,
            }
        }
        SlackClientError::RateLimitError(e) => SlackError::RateLimited {
            method,
            retry_after: e.retry_after,
        },
        SlackClientError::HttpError(e) => SlackError::Http {
            method,
            status: e.status_code.as_u16(),
        },
        SlackClientError::HttpProtocolError(e) => SlackError::Transport {
            method,
            detail: e
                .cause
                .map(|c| c.to_string())
                .unwrap_or_else(|| "request failed".into()),
        },
        SlackClientError::ProtocolError(e) => SlackError::Protocol {
            method,
            detail: e.json_error.to_string(),
        },
        other => SlackError::Protocol {
            method,
            detail: match other {
                SlackClientError::EndOfStream(_) => "connection closed early".into(),
                _ => "unexpected client error".into(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: &str) -> SlackError {
        SlackError::Api {
            method: "apps.connections.open",
            code: code.to_owned(),
            needed: None,
        }
    }

    #[test]
    fn only_a_refused_app_token_is_blamed_on_the_token() {
        for code in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "account_inactive",
            "not_allowed_token_type",
            "missing_scope",
        ] {
            let e = open_error(api_error(code));
            assert!(e.is_auth(), "{code}");
            assert!(e.to_string().contains("SLACK_APP_TOKEN"), "{e}");
        }
        let no_token = SlackError::NoToken {
            method: "apps.connections.open",
            setting: "SLACK_APP_TOKEN",
        };
        assert!(open_error(no_token).is_auth());
        for e in [
            api_error("internal_error"),
            SlackError::Transport {
                method: "apps.connections.open",
                detail: "proxy said invalid_auth".into(),
            },
            SlackError::Http {
                method: "apps.connections.open",
                status: 502,
            },
        ] {
            assert!(!open_error(e.clone()).is_auth(), "{e}");
        }
        let limited = SlackError::RateLimited {
            method: "apps.connections.open",
            retry_after: Some(Duration::from_secs(30)),
        };
        assert!(matches!(
            open_error(limited),
            OpenError::RateLimited(after) if after == Duration::from_secs(30)
        ));
    }
}
