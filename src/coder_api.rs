//! Coder's API, the little the bridge uses (with `CODER_TOKEN`): read a workspace and a user,
//! act on a workspace (extend, start, keep), and what `check` asks (`users/me`, `buildinfo`). Calls go through
//! the same proxy decision as Slack's, each with a timeout; errors carry Coder's `message`.
//! The token travels only in the `Coder-Session-Token` header, marked sensitive, and is never
//! shown: `Debug` leaves it out, errors never include a request.

use crate::act::{Act, ActTarget};
use crate::proxy::ProxyConfig;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

const AGENT: &str = concat!("coder-slack-bridge/", env!("CARGO_PKG_VERSION"));
/// Most of an answer read: Coder's are small; anything far larger is not Coder.
const MAX_ANSWER: usize = 1024 * 1024;
/// Longest message from Coder passed on (to a log or a person).
const MAX_MESSAGE: usize = 500;

/// The Coder API client. Cheap to share behind an `Arc`.
pub struct CoderApi {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
    proxies: Arc<ProxyConfig>,
    /// Reading a workspace while a notification is being delivered: short, since the
    /// notification waits (and goes without the button when Coder is slow).
    lookup_timeout: Duration,
    /// An act's call (the client's own timeout).
    call_timeout: Duration,
}

impl fmt::Debug for CoderApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoderApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Why a call to Coder did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoderError {
    /// 401: the token is wrong, expired or revoked.
    #[error("Coder refused CODER_TOKEN (401): {message}")]
    TokenRefused { message: String },
    /// Any other 4xx: Coder will not do it (not running, beyond the max deadline, not
    /// allowed, not found: Coder answers 404 for both of the last two).
    #[error("Coder answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// 5xx, or an answer that is not Coder's.
    #[error("Coder failed ({status}): {message}")]
    Failed { status: u16, message: String },
    /// No answer: connection, proxy or timeout.
    #[error("{0}")]
    Unreachable(String),
}

impl CoderError {
    /// Its name in `coder_actions_total{outcome}` and in logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            CoderError::TokenRefused { .. } => "token_refused",
            CoderError::Refused { .. } => "refused",
            CoderError::Failed { .. } => "failed",
            CoderError::Unreachable(_) => "unreachable",
        }
    }
}

/// What an act did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    Done,
    /// Nothing to do (keep on a workspace that is not dormant: Coder answers 304).
    Unchanged,
}

/// The part of `codersdk.Workspace` the bridge reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub owner_id: Uuid,
    #[serde(default)]
    pub owner_name: String,
    pub name: String,
    pub latest_build: Build,
    #[serde(default)]
    pub dormant_at: Option<String>,
}

/// The workspace's latest build.
#[derive(Debug, Clone, Deserialize)]
pub struct Build {
    /// `start`, `stop` or `delete`.
    pub transition: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub max_deadline: Option<String>,
}

impl Build {
    /// When the workspace stops; `None` when it stops only by hand.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        time(self.deadline.as_deref())
    }

    /// The latest it may run to, when its template sets one.
    pub fn max_deadline(&self) -> Option<DateTime<Utc>> {
        time(self.max_deadline.as_deref())
    }
}

/// An RFC 3339 time; Go's zero time (`0001-01-01T00:00:00Z`) means none.
fn time(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(raw?.trim()).ok()?;
    (at.timestamp() > 0).then(|| at.with_timezone(&Utc))
}

/// The part of `codersdk.User` the bridge reads (`GET /api/v2/users/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: Uuid,
    #[serde(default)]
    pub username: String,
    /// `active`, `suspended` or `dormant`.
    #[serde(default)]
    pub status: String,
}

/// The token's account (`GET /api/v2/users/me`).
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub username: String,
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    pub name: String,
}

/// `GET /api/v2/buildinfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildInfo {
    pub version: String,
}

impl CoderApi {
    /// A client for Coder at `base` (`CODER_URL`).
    pub fn new(
        base: &Url,
        token: SecretString,
        proxies: Arc<ProxyConfig>,
        call_timeout: Duration,
        lookup_timeout: Duration,
    ) -> Result<Self, String> {
        Ok(CoderApi {
            http: crate::outbound::client(proxies.clone(), call_timeout, AGENT)?,
            base: base.clone(),
            token,
            proxies,
            lookup_timeout,
            call_timeout,
        })
    }

    /// Coder's version; needs no token (it proves `CODER_URL` is Coder).
    pub async fn buildinfo(&self) -> Result<BuildInfo, CoderError> {
        let request = self.http.get(self.url(&["buildinfo"]));
        self.answer(request).await
    }

    /// The token's account and its site-wide roles.
    pub async fn me(&self) -> Result<Me, CoderError> {
        let request = self.authed(Method::GET, &["users", "me"], None);
        self.answer(request).await
    }

    /// A workspace by its ID, within the lookup timeout.
    pub async fn workspace(&self, id: Uuid) -> Result<Workspace, CoderError> {
        let id = id.hyphenated().to_string();
        let request = self.authed(Method::GET, &["workspaces", &id], None);
        self.answer(request.timeout(self.lookup_timeout)).await
    }

    /// A user by their ID, within the lookup timeout.
    pub async fn user(&self, id: Uuid) -> Result<User, CoderError> {
        let id = id.hyphenated().to_string();
        let request = self.authed(Method::GET, &["users", &id], None);
        self.answer(request.timeout(self.lookup_timeout)).await
    }

    /// The longest a click's calls can take: the user and the workspace read, then the act.
    pub fn click_budget(&self) -> Duration {
        self.lookup_timeout * 2 + self.call_timeout
    }

    /// A workspace by its owner's username and its name, within the lookup timeout.
    pub async fn workspace_by_name(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Workspace, CoderError> {
        let path = ["users", owner, "workspace", name];
        let request = self.authed(Method::GET, &path, None);
        self.answer(request.timeout(self.lookup_timeout)).await
    }

    /// Carries out `act` on `target`'s workspace, for the Slack user `on_behalf_of`, whom
    /// the User-Agent names (Coder's audit log shows only the token's account).
    pub async fn act(
        &self,
        act: Act,
        target: &ActTarget,
        on_behalf_of: &str,
    ) -> Result<Acted, CoderError> {
        let id = target.workspace_id.hyphenated().to_string();
        let (method, last, body) = match act {
            Act::Extend => {
                let deadline = target
                    .deadline
                    .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
                    .ok_or_else(|| CoderError::Refused {
                        status: 400,
                        message: "this button names no deadline".into(),
                    })?;
                let deadline = deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                (Method::PUT, "extend", json!({ "deadline": deadline }))
            }
            Act::Start => (Method::POST, "builds", json!({ "transition": "start" })),
            Act::Keep => (Method::PUT, "dormant", json!({ "dormant": false })),
        };
        let agent = format!("{AGENT} (for Slack user {})", slack_id(on_behalf_of));
        let request = self
            .authed(method, &["workspaces", &id, last], Some(body))
            .header(USER_AGENT, agent);
        let response = self.send(request).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(Acted::Unchanged);
        }
        read(response, &self.proxies).await.map(|_| Acted::Done)
    }

    /// `{CODER_URL}/api/v2/` and `segments`, each escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v2"]).extend(segments);
        }
        url
    }

    fn authed(
        &self,
        method: Method,
        path: &[&str],
        body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let mut token = HeaderValue::from_str(self.token.expose_secret())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        token.set_sensitive(true);
        let request = self
            .http
            .request(method, self.url(path))
            .header("Coder-Session-Token", token);
        match body {
            Some(body) => request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CoderError> {
        request.send().await.map_err(|e| {
            CoderError::Unreachable(crate::outbound::describe_transport_error(
                e,
                &self.proxies,
                "Coder",
            ))
        })
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CoderError> {
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let body = read(response, &self.proxies).await?;
        serde_json::from_slice(&body).map_err(|e| CoderError::Failed {
            status,
            message: format!(
                "the answer is not what Coder sends ({e}); is CODER_URL Coder's access URL?"
            ),
        })
    }
}

/// A successful answer's body, or the error Coder's answer means.
async fn read(
    mut response: reqwest::Response,
    proxies: &ProxyConfig,
) -> Result<Vec<u8>, CoderError> {
    let status = response.status();
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            CoderError::Unreachable(crate::outbound::describe_transport_error(
                e, proxies, "Coder",
            ))
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(CoderError::Failed {
                status: status.as_u16(),
                message: "the answer is over 1 MiB; is CODER_URL Coder's access URL?".into(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    let message = message_of(&body, status);
    Err(match status.as_u16() {
        401 => CoderError::TokenRefused { message },
        status @ 400..=499 => CoderError::Refused { status, message },
        status => CoderError::Failed { status, message },
    })
}

/// Coder's `message` (and `detail`, when it has one) from an error answer, as plain text of
/// bounded length; the status's reason when the body is not Coder's.
fn message_of(body: &[u8], status: StatusCode) -> String {
    #[derive(Deserialize)]
    struct Response {
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: String,
    }
    let text = match serde_json::from_slice::<Response>(body) {
        Ok(r) if !r.message.trim().is_empty() && !r.detail.trim().is_empty() => {
            format!("{} ({})", r.message.trim(), r.detail.trim())
        }
        Ok(r) if !r.message.trim().is_empty() => r.message.trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("no message").to_owned(),
    };
    // Coder's words reach Slack in a note: cleaned as notifications are (escapes, bidi
    // overrides), and on one line.
    let text = crate::untrusted::cleaned(text);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A Slack user ID as it may appear in a header: letters and digits only.
fn slack_id(user: &str) -> String {
    user.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coder_errors_are_read_with_their_message_and_bounded() {
        let body = br#"{"message":"Workspace must be started, current status: stop"}"#;
        assert_eq!(
            message_of(body, StatusCode::CONFLICT),
            "Workspace must be started, current status: stop"
        );
        let body = br#"{"message":"Internal error.","detail":"pq: timeout"}"#;
        assert_eq!(
            message_of(body, StatusCode::INTERNAL_SERVER_ERROR),
            "Internal error. (pq: timeout)"
        );
        assert_eq!(
            message_of(b"<html>bad gateway</html>", StatusCode::BAD_GATEWAY),
            "Bad Gateway"
        );
        let long = format!(r#"{{"message":"{}\u0007"}}"#, "x".repeat(900));
        let message = message_of(long.as_bytes(), StatusCode::BAD_REQUEST);
        assert_eq!(message.chars().count(), MAX_MESSAGE + 1);
        assert!(!message.contains('\u{7}'));
        // A reversing mark or a terminal escape in Coder's words never reaches the note.
        let body = br#"{"message":"workspace \u202eved\u001b[31m is gone"}"#;
        assert_eq!(
            message_of(body, StatusCode::NOT_FOUND),
            "workspace ved is gone"
        );
    }

    #[test]
    fn times_are_read_and_the_zero_time_is_none() {
        let build = |deadline: Option<&str>| Build {
            transition: "start".into(),
            status: "running".into(),
            deadline: deadline.map(str::to_owned),
            max_deadline: Some("0001-01-01T00:00:00Z".into()),
        };
        let at = build(Some("2024-03-15T14:00:00.123456Z")).deadline();
        assert_eq!(at.map(|t| t.timestamp()), Some(1_710_511_200));
        let offset = build(Some("2024-03-15T15:00:00+01:00")).deadline();
        assert_eq!(offset.map(|t| t.timestamp()), Some(1_710_511_200));
        assert_eq!(build(None).deadline(), None);
        assert_eq!(build(Some("soon")).deadline(), None);
        assert_eq!(build(None).max_deadline(), None);
    }

    #[test]
    fn paths_are_escaped_and_the_token_never_shows() {
        let api = CoderApi::new(
            &Url::parse("https://coder.example.com/").expect("url"),
            SecretString::from("secret-token-value"),
            Arc::new(ProxyConfig::none()),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("client");
        let url = api.url(&["users", "bob/../me", "workspace", "dev"]);
        assert_eq!(
            url.as_str(),
            "https://coder.example.com/api/v2/users/bob%2F..%2Fme/workspace/dev"
        );
        assert!(!format!("{api:?}").contains("secret-token-value"));
        assert_eq!(slack_id("U12\r\nX-Evil: 1"), "U12XEvil1");
    }
}
