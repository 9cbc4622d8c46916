//! The secret settings: the bot and app-level tokens, Coder's token and the webhook secret.
//! Each is trimmed, checked for its shape, and refused while it is still a placeholder,
//! naming the setting and never the value.

use super::{err, ConfigError, Needs};
use secrecy::{ExposeSecret, SecretString};

pub(super) fn bot_token(
    raw: Option<SecretString>,
    needs: Needs,
    uses_slack: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let Some(token) = secret_setting("SLACK_BOT_TOKEN", raw) else {
        return match (needs, uses_slack) {
            (_, false) => Ok(None),
            (Needs::Serve, true) => {
                err("SLACK_BOT_TOKEN is not set (set DRY_RUN=1 to run without Slack)")
            }
            _ => err("SLACK_BOT_TOKEN is not set"),
        };
    };
    if uses_slack {
        refuse_placeholder(
            "SLACK_BOT_TOKEN",
            token.expose_secret(),
            "the bot token (xoxb-…) from the Slack app's OAuth & Permissions page",
        )?;
    }
    if !token.expose_secret().starts_with("xoxb-") {
        return err(match token_kind(token.expose_secret()) {
            Some(TokenKind::App) => "SLACK_BOT_TOKEN must start with xoxb- (a bot token), but it holds an app-level token (xapp-…): the two tokens look swapped. SLACK_BOT_TOKEN takes the Bot User OAuth Token (OAuth & Permissions), SLACK_APP_TOKEN the app-level token (Basic Information → App-Level Tokens)",
            Some(TokenKind::User) => "SLACK_BOT_TOKEN must start with xoxb- (a bot token), but it holds a user token (xoxp-…), which acts as the person who installed the app: use the Bot User OAuth Token from OAuth & Permissions",
            _ => "SLACK_BOT_TOKEN must start with xoxb- (a bot token)",
        });
    }
    Ok(Some(token))
}

pub(super) fn app_token(
    raw: Option<SecretString>,
    uses_slack: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let Some(token) = secret_setting("SLACK_APP_TOKEN", raw) else {
        return Ok(None);
    };
    if uses_slack {
        refuse_placeholder(
            "SLACK_APP_TOKEN",
            token.expose_secret(),
            "an app-level token (xapp-…) with connections:write from the Slack app's Basic Information page, or leave it unset",
        )?;
    }
    if !token.expose_secret().starts_with("xapp-") {
        return err(match token_kind(token.expose_secret()) {
            Some(TokenKind::Bot) => "SLACK_APP_TOKEN must start with xapp- (an app-level token), but it holds a bot token (xoxb-…): the two tokens look swapped. SLACK_APP_TOKEN takes the app-level token with connections:write (Basic Information → App-Level Tokens), SLACK_BOT_TOKEN the Bot User OAuth Token",
            Some(TokenKind::User) => "SLACK_APP_TOKEN must start with xapp- (an app-level token), but it holds a user token (xoxp-…): generate an app-level token with connections:write under Basic Information → App-Level Tokens",
            _ => "SLACK_APP_TOKEN must start with xapp- (an app-level token)",
        });
    }
    Ok(Some(token))
}

/// Which of Slack's tokens a value is, by its prefix (the only part a message may name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Bot,
    App,
    User,
}

fn token_kind(token: &str) -> Option<TokenKind> {
    [
        ("xoxb-", TokenKind::Bot),
        ("xapp-", TokenKind::App),
        ("xoxp-", TokenKind::User),
    ]
    .into_iter()
    .find(|(prefix, _)| token.starts_with(prefix))
    .map(|(_, kind)| kind)
}

pub(super) fn coder_token(
    raw: Option<SecretString>,
    has_coder_url: bool,
    uses_slack: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let Some(token) = secret_setting("CODER_TOKEN", raw) else {
        return Ok(None);
    };
    if !has_coder_url {
        return err("CODER_TOKEN is set but CODER_URL is not: set CODER_URL to Coder's access URL (the buttons that act call Coder's API there)");
    }
    if uses_slack {
        refuse_placeholder(
            "CODER_TOKEN",
            token.expose_secret(),
            "a token of a Coder service account (see README: \"Buttons that act on Coder\"), or leave it unset",
        )?;
    }
    if token.expose_secret().chars().any(|c| !c.is_ascii_graphic()) {
        return err(
            "CODER_TOKEN has spaces or characters no Coder token has: paste the token alone",
        );
    }
    Ok(Some(token))
}

/// Shorter than this, a webhook secret can be guessed (the bridge answers every wrong one).
pub(super) const WEBHOOK_SECRET_MIN_CHARS: usize = 16;

/// `judged`: whether the secret is checked (serve, and `check`, which reports what serve
/// would refuse); `preview` takes no webhooks.
pub(super) fn webhook_secret(
    raw: Option<SecretString>,
    judged: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let secret = secret_setting("WEBHOOK_SECRET", raw);
    if let (Some(secret), true) = (&secret, judged) {
        refuse_placeholder(
            "WEBHOOK_SECRET",
            secret.expose_secret(),
            "a secret of your own (e.g. the output of `openssl rand -hex 32`)",
        )?;
        // README's Coder URL example spells the secret as SECRET.
        if secret.expose_secret().eq_ignore_ascii_case("secret") {
            return err("WEBHOOK_SECRET is still the word SECRET from the example: replace it with a secret of your own (e.g. the output of `openssl rand -hex 32`)");
        }
        if secret.expose_secret().chars().count() < WEBHOOK_SECRET_MIN_CHARS {
            return err(format!("WEBHOOK_SECRET is too short: use at least {WEBHOOK_SECRET_MIN_CHARS} characters (e.g. the output of `openssl rand -hex 32`)"));
        }
    }
    Ok(secret)
}

/// A secret setting without surrounding whitespace: a file-made secret (`kubectl create
/// secret --from-file`, Docker secrets) ends with a newline that no client ever sends.
fn secret_setting(name: &str, raw: Option<SecretString>) -> Option<SecretString> {
    let raw = raw?;
    let trimmed = raw.expose_secret().trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.len() == raw.expose_secret().len() {
        return Some(raw);
    }
    tracing::warn!(
        "{name} had whitespace around it (such as a trailing newline from a file); it was trimmed"
    );
    Some(SecretString::from(trimmed.to_owned()))
}

/// The values `.env.example` ships, which must never reach Slack or Coder.
const EXAMPLE_PLACEHOLDERS: [(&str, &str); 2] = [
    ("SLACK_BOT_TOKEN", "xoxb-..."),
    ("SLACK_APP_TOKEN", "xapp-..."),
];

/// Parts that only a placeholder contains (compared without case); no real Slack token has
/// them, and a secret that does was not generated.
const PLACEHOLDER_MARKS: [&str; 8] = [
    "...",
    "\u{2026}",
    "replace",
    "change-me",
    "change_me",
    "changeme",
    "your-",
    "your_",
];

/// Refuses a value that is still a placeholder, naming the setting (never the value).
fn refuse_placeholder(name: &str, value: &str, wanted: &str) -> Result<(), ConfigError> {
    if EXAMPLE_PLACEHOLDERS.contains(&(name, value)) {
        return err(format!(
            "{name} is still the placeholder from .env.example: replace it with {wanted}"
        ));
    }
    let lower = value.to_lowercase();
    let mark = PLACEHOLDER_MARKS
        .iter()
        .find(|mark| lower.contains(*mark))
        .map(|mark| format!("{mark:?}"))
        .or_else(|| angle_brackets(value).then(|| "<…>".to_owned()));
    match mark {
        Some(mark) => err(format!(
            "{name} is still a placeholder (it contains {mark}): replace it with {wanted}"
        )),
        None => Ok(()),
    }
}

/// `<your token>`, `<SECRET>`: words in angle brackets.
fn angle_brackets(value: &str) -> bool {
    value.split('<').skip(1).any(|after| {
        after.split_once('>').is_some_and(|(inside, _)| {
            !inside.is_empty()
                && inside
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dotenv::{is_setting, parse_dotenv};
    use crate::config::tests::settings;
    use crate::config::Settings;

    #[test]
    fn coder_token_needs_coder_url_and_a_real_token() {
        let mut s = settings();
        s.coder_token = Some("tok-123".into());
        let e = s.clone().validate(Needs::Serve).unwrap_err().0;
        assert!(
            e.starts_with("CODER_TOKEN is set but CODER_URL is not"),
            "{e}"
        );
        s.coder_url = Some("https://coder.mycompany.test".into());
        let c = s.clone().validate(Needs::Serve).expect("valid");
        assert_eq!(
            c.coder_token.map(|t| t.expose_secret().to_owned()),
            Some("tok-123".into())
        );
        for bad in ["your-coder-token", "tok 123"] {
            s.coder_token = Some(bad.into());
            let e = s.clone().validate(Needs::Serve).unwrap_err().0;
            assert!(e.starts_with("CODER_TOKEN"), "{bad}: {e}");
        }
        s.coder_token = Some("  \n".into());
        assert!(s
            .validate(Needs::Serve)
            .expect("valid")
            .coder_token
            .is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let mut s = settings();
        s.webhook_secret = Some("hunter2-secret-value".into());
        s.slack_app_token = Some("xapp-1-secret".into());
        let c = s.clone().validate(Needs::Serve).expect("ok");
        let shown = format!("{s:?} {c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("xoxb-test") && !shown.contains("xapp-1"),
            "{shown}"
        );
    }

    #[test]
    fn placeholders_are_refused_naming_the_setting_not_the_value() {
        // Every token and secret `.env.example` ships is refused where it would be used.
        let example = parse_dotenv(include_str!("../../.env.example"), is_setting)
            .expect(".env.example parses");
        let shipped: Vec<_> = example
            .iter()
            .filter(|(name, _)| name.starts_with("SLACK_") && name.ends_with("_TOKEN"))
            .collect();
        assert_eq!(shipped.len(), 2, "{shipped:?}");
        for (name, value) in shipped {
            let mut s = settings();
            match name.as_str() {
                "SLACK_BOT_TOKEN" => s.slack_bot_token = Some(value.as_str().into()),
                _ => s.slack_app_token = Some(value.as_str().into()),
            }
            let e = s.validate(Needs::Serve).unwrap_err().0;
            assert!(
                e.starts_with(&format!(
                    "{name} is still the placeholder from .env.example"
                )),
                "{e}"
            );
        }
        // "Zq9" stands for the rest of a value, which a message must not show.
        let refused = |s: Settings, name: &str, value: &str| {
            let e = s.validate(Needs::Serve).unwrap_err().0;
            assert!(e.starts_with(&format!("{name} is still")), "{value}: {e}");
            assert!(!e.contains("Zq9"), "the value is shown: {e}");
        };
        for token in [
            "xoxb-REPLACE-ME-Zq9",
            "xoxb-replace_me-Zq9",
            "xoxb-your-token-Zq9",
            "xoxb-<token>-Zq9",
            "xoxb-CHANGE-ME-Zq9",
            "xoxb-Zq9…",
        ] {
            let mut s = settings();
            s.slack_bot_token = Some(token.into());
            refused(s, "SLACK_BOT_TOKEN", token);
        }
        let mut s = settings();
        s.slack_app_token = Some("xapp-REPLACE-ME-Zq9".into());
        refused(s, "SLACK_APP_TOKEN", "xapp-REPLACE-ME-Zq9");
        for secret in [
            "CHANGE-ME",
            "changeme-Zq9",
            "<your secret>",
            "your-secret-Zq9",
            "SECRET",
        ] {
            let mut s = settings();
            s.webhook_secret = Some(secret.into());
            refused(s, "WEBHOOK_SECRET", secret);
        }
        // Real-looking values pass, and a token nobody uses (dry run, preview) is not judged.
        let mut s = settings();
        s.slack_bot_token = Some("xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx".into());
        s.webhook_secret = Some("9f86d081884c7d659a2feaa0c55ad015".into());
        assert!(s.validate(Needs::Serve).is_ok());
        let mut s = settings();
        s.slack_bot_token = Some("xoxb-...".into());
        s.dry_run = true;
        assert!(s.clone().validate(Needs::Serve).is_ok());
        s.dry_run = false;
        assert!(s.validate(Needs::Nothing).is_ok());
    }

    #[test]
    fn a_short_webhook_secret_is_refused_naming_the_minimum_not_the_value() {
        for short in ["Zq9short", "Zq9-15-chars-ab", "  Zq9-15-chars-ab\n"] {
            let mut s = settings();
            s.webhook_secret = Some(short.into());
            let e = s.clone().validate(Needs::Serve).unwrap_err().0;
            assert_eq!(
                e,
                "WEBHOOK_SECRET is too short: use at least 16 characters (e.g. the output of `openssl rand -hex 32`)"
            );
            // `check` reports what serve would refuse; `preview` takes no webhooks.
            assert_eq!(s.clone().validate(Needs::BotToken).unwrap_err().0, e);
            assert!(s.validate(Needs::Nothing).is_ok());
        }
        let mut s = settings();
        s.webhook_secret = Some("Zq9-16-chars-abc".into());
        assert!(s.validate(Needs::Serve).is_ok());
    }

    #[test]
    fn swapped_and_user_tokens_are_named_as_such_without_their_value() {
        let refused = |bot: Option<&str>, app: Option<&str>| {
            let mut s = settings();
            if let Some(bot) = bot {
                s.slack_bot_token = Some(bot.into());
            }
            s.slack_app_token = app.map(Into::into);
            let e = s.validate(Needs::Serve).unwrap_err().0;
            assert!(!e.contains("Zq9"), "the value is shown: {e}");
            e
        };
        let e = refused(Some("xapp-1-Zq9"), Some("xoxb-1-Zq9"));
        assert!(
            e.starts_with("SLACK_BOT_TOKEN must start with xoxb-") && e.contains("swapped"),
            "{e}"
        );
        let e = refused(None, Some("xoxb-1-Zq9"));
        assert!(
            e.starts_with("SLACK_APP_TOKEN must start with xapp-") && e.contains("swapped"),
            "{e}"
        );
        let e = refused(Some("xoxp-1-Zq9"), None);
        assert!(
            e.starts_with("SLACK_BOT_TOKEN must start with xoxb-")
                && e.contains("user token (xoxp-"),
            "{e}"
        );
        let e = refused(None, Some("xoxp-1-Zq9"));
        assert!(
            e.starts_with("SLACK_APP_TOKEN must start with xapp-")
                && e.contains("user token (xoxp-"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_trimmed() {
        let mut s = settings();
        s.webhook_secret = Some("s3cret-0123456789\n".into());
        s.slack_bot_token = Some(" xoxb-test\r\n".into());
        s.slack_app_token = Some("\txapp-1\n".into());
        let c = s.validate(Needs::Serve).expect("valid");
        let shown = |v: &Option<SecretString>| v.as_ref().map(|v| v.expose_secret().to_owned());
        assert_eq!(
            shown(&c.webhook_secret).as_deref(),
            Some("s3cret-0123456789")
        );
        assert_eq!(shown(&c.slack_bot_token).as_deref(), Some("xoxb-test"));
        assert_eq!(shown(&c.slack_app_token).as_deref(), Some("xapp-1"));
        let mut s = settings();
        s.webhook_secret = Some(" \n".into());
        assert!(s
            .validate(Needs::Serve)
            .expect("valid")
            .webhook_secret
            .is_none());
    }
}
