//! What a failed Slack call means: [`SlackError`] and its [`ErrorClass`], decided from Slack's
//! error code by one table ([`CODES`]), the only place a code is named. slack-morphism's errors
//! become ours in [`classify`]; an `apps.connections.open` failure becomes Socket Mode's
//! [`OpenError`] in [`open_error`].

use super::MIN_RETRY_AFTER;
use crate::retry::Verdict;
use crate::socket_mode::OpenError;
use slack_morphism::errors::SlackClientError;
use std::time::Duration;

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
    /// No channel the app can see has that ID: there is none, or it is private and the app
    /// is not in it. A post there can never arrive either.
    NoChannel,
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
    /// The view changed since the hash sent with it (someone else published): read the
    /// state again and publish that.
    StaleView,
}

const CODES: &[(&str, Meaning)] = &[
    ("users_not_found", Meaning::Unreachable),
    ("user_not_found", Meaning::Unreachable),
    ("channel_not_found", Meaning::NoChannel),
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
    ("hash_conflict", Meaning::StaleView),
];

fn meaning(code: &str) -> Option<Meaning> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

impl SlackError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SlackError::Api { code, .. } => match meaning(code) {
                Some(
                    Meaning::Unreachable | Meaning::NoChannel | Meaning::Gone | Meaning::StaleView,
                ) => ErrorClass::Permanent,
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

    /// Whether the channel named does not exist for the app (none has that ID, or it is
    /// private and the app is not in it).
    pub fn is_no_channel(&self) -> bool {
        matches!(self, SlackError::Api { code, .. } if meaning(code) == Some(Meaning::NoChannel))
    }

    /// Whether a view was published with a hash Slack no longer holds (`views.publish`).
    pub fn is_stale_view(&self) -> bool {
        matches!(self, SlackError::Api { code, .. } if meaning(code) == Some(Meaning::StaleView))
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
            Meaning::Unreachable
            | Meaning::NoChannel
            | Meaning::BadMessage
            | Meaning::Gone
            | Meaning::StaleView => return None,
        })
    }
}

/// What an `apps.connections.open` failure means to Socket Mode, decided here so that
/// Socket Mode knows no Slack error codes.
pub(super) fn open_error(error: SlackError) -> OpenError {
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

pub(super) fn classify(method: &'static str, error: SlackClientError) -> SlackError {
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

    #[test]
    fn auth_test_errors_mean_what_they_mean_from_any_other_method() {
        // auth.test builds its SlackError from the answer itself (it needs a header
        // slack-morphism hides), so its codes must still read through the one table.
        for code in [
            "invalid_auth",
            "account_inactive",
            "token_revoked",
            "missing_scope",
        ] {
            let from = |method: &'static str| SlackError::Api {
                method,
                code: code.to_owned(),
                needed: None,
            };
            let (auth, post) = (from("auth.test"), from("chat.postMessage"));
            assert_eq!(auth.class(), ErrorClass::Configuration, "{code}");
            assert_eq!(auth.class(), post.class(), "{code}");
            assert_eq!(auth.verdict(), post.verdict(), "{code}");
            assert!(auth.remedy().is_some(), "{code}");
            assert_eq!(auth.remedy(), post.remedy(), "{code}");
        }
    }
}
