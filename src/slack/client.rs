//! [`SlackApi`], the Web API client: each call with its token, counted in metrics and logged,
//! its answer read through the wire types and its error classified.

use super::connector::{self, ReqwestConnector};
use super::error::{classify, open_error, SlackError};
use super::wire::{History, OpenDmRequest, OpenedDm, PostedMessage, PublishedView, Scheduled};
use super::{UsersPage, METADATA_EVENT_TYPE, NOTIFICATION_PART};
use crate::proxy::ProxyConfig;
use crate::socket_mode::{OpenConnection, OpenError};
use crate::telemetry::{MethodLabels, Metrics, SlackCallLabels};
use futures_util::future::{BoxFuture, FutureExt};
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Pages of history read when looking for one message: a DM gets few messages in the
/// minutes a read-back covers.
const HISTORY_PAGES: usize = 5;

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
    pub(super) async fn read<T: serde::de::DeserializeOwned + Send, const N: usize>(
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
    /// at or after `oldest` (a Slack timestamp) whose metadata names `msg_id` and `part`; returns its `ts`.
    pub async fn find_notification(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        oldest: &str,
        msg_id: &str,
        part: &str,
    ) -> Result<Option<String>, SlackError> {
        let mut cursor: Option<String> = None;
        for _ in 0..HISTORY_PAGES {
            let history = self
                .history_page(channel, thread_ts, oldest, cursor.as_deref())
                .await?;
            let found = history.messages.into_iter().find(|m| {
                m.metadata.as_ref().is_some_and(|meta| {
                    let field = |name| meta.event_payload.get(name).and_then(|v| v.as_str());
                    meta.event_type == METADATA_EVENT_TYPE
                        && field("msg_id") == Some(msg_id)
                        // Posts from before parts were named are notifications.
                        && field("part").unwrap_or(NOTIFICATION_PART) == part
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

    /// `views.publish`: `blocks` as `user`'s App Home, only if the view Slack holds is still
    /// the one `hash` names (when given; `hash_conflict` otherwise). Returns the new view's hash.
    pub async fn publish_home(
        &self,
        user: &str,
        blocks: Vec<SlackBlock>,
        hash: Option<&str>,
    ) -> Result<Option<String>, SlackError> {
        let request = SlackApiViewsPublishRequest::new(
            SlackUserId(user.to_owned()),
            SlackView::Home(SlackHomeView::new(blocks)),
        )
        .opt_hash(hash.map(str::to_owned));
        let published: PublishedView = self.post("views.publish", &request).await?;
        Ok(published.view.hash)
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
    /// into a few borrowed fields (`wire::ListedMember`), never into a full profile, so a page of
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
