//! The command line: clap's `Cli` with its subcommands, and the [`Settings`] it reads from
//! flags and the environment, as given (validation is the parent module's). A value clap
//! refuses is worded naming the variable as well as the flag.

use super::Threads;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "coder-slack-bridge",
    version,
    about = "Delivers Coder notifications to Slack as direct messages"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve Coder's webhook and Slack's Socket Mode (the default).
    Serve,
    /// Verify the tokens, their scopes and Socket Mode reachability, then exit.
    Check,
    /// Print the chat.postMessage arguments a Coder payload becomes, without contacting Slack.
    Preview {
        /// A webhook body as Coder sends it; `-` reads standard input. With --thread, several.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Show what a sequence of payloads becomes in the person's DM: each workspace's card
        /// (as the last one leaves it) with its thread's replies, and top-level messages.
        #[arg(long)]
        thread: bool,
    },
    /// Send a sample notification through the full path to one person.
    SendTest {
        /// The Slack user's e-mail address.
        #[arg(long)]
        email: String,
    },
}

/// Raw settings as given. Every setting has `hide_env_values`, so `--help` shows
/// `[env: NAME]`, never a value (a token, or what happens to be set) nor an empty `NAME=`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Bot token (xoxb-…); required unless --dry-run.
    #[arg(long, env = "SLACK_BOT_TOKEN", hide_env_values = true, global = true)]
    pub slack_bot_token: Option<SecretString>,
    /// App-level token (xapp-…) with connections:write; Socket Mode is off without it.
    #[arg(long, env = "SLACK_APP_TOKEN", hide_env_values = true, global = true)]
    pub slack_app_token: Option<SecretString>,
    /// Slack Web API base URL.
    #[arg(
        long,
        env = "SLACK_API_URL",
        hide_env_values = true,
        default_value = "https://slack.com/api",
        global = true
    )]
    pub slack_api_url: String,
    /// Coder's access URL, to resolve relative button URLs.
    #[arg(long, env = "CODER_URL", hide_env_values = true, global = true)]
    pub coder_url: Option<String>,
    /// Coder API token (a least-privilege service account's): buttons that extend, start
    /// and keep the workspace a notification is about. Needs CODER_URL and SLACK_APP_TOKEN.
    #[arg(long, env = "CODER_TOKEN", hide_env_values = true, global = true)]
    pub coder_token: Option<SecretString>,
    /// Address the webhook listener binds.
    #[arg(long, env = "LISTEN_ADDR", hide_env_values = true, global = true)]
    pub listen_addr: Option<String>,
    /// Port on 127.0.0.1, when LISTEN_ADDR is not given.
    #[arg(long, env = "PORT", hide_env_values = true, global = true)]
    pub port: Option<u16>,
    /// Secret Coder must send as the Basic-auth password or a Bearer token.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, global = true)]
    pub webhook_secret: Option<SecretString>,
    /// Log rendered messages instead of sending them; no Slack needed.
    #[arg(long, env = "DRY_RUN", hide_env_values = true, global = true, value_parser = clap::builder::FalseyValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub dry_run: bool,
    /// Channel for notifications that cannot reach their person.
    #[arg(long, env = "FALLBACK_CHANNEL", hide_env_values = true, global = true)]
    pub fallback_channel: Option<String>,
    /// Concurrent Socket Mode connections (1–10).
    #[arg(
        long,
        env = "SOCKET_MODE_CONNECTIONS",
        hide_env_values = true,
        default_value = "2",
        global = true
    )]
    pub socket_mode_connections: String,
    /// Budget for one webhook, Slack retries included (e.g. 30s, 1500ms).
    #[arg(
        long,
        env = "DELIVERY_TIMEOUT",
        hide_env_values = true,
        default_value = "30s",
        global = true
    )]
    pub delivery_timeout: String,
    /// How often the e-mail → Slack user directory is refreshed from users.list.
    #[arg(
        long,
        env = "DIRECTORY_REFRESH",
        hide_env_values = true,
        default_value = "1h",
        global = true
    )]
    pub directory_refresh: String,
    /// Log format; the level comes from RUST_LOG.
    #[arg(
        long,
        env = "LOG_FORMAT",
        hide_env_values = true,
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// The store: sqlite://PATH (relative to the working folder) or postgres://… for
    /// replicas sharing one database. Not used by a dry run or `preview`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://coder-slack-bridge.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: SecretString,
    /// `workspace`: notifications about one workspace gather in its thread under a card kept
    /// current; `off`: one top-level message each.
    #[arg(
        long,
        env = "THREADS",
        hide_env_values = true,
        value_enum,
        default_value = "workspace",
        global = true
    )]
    pub threads: Threads,
    /// How long handled msg_ids, ended snoozes and idle workspace threads are kept (e.g.
    /// 30d); a later notification about a workspace idle that long starts a new thread.
    #[arg(
        long,
        env = "RETENTION",
        hide_env_values = true,
        default_value = "30d",
        global = true
    )]
    pub retention: String,
    /// How long a notification may wait in the outbox for Slack to come back (store and
    /// forward); past it, it goes to FALLBACK_CHANNEL or is dropped (logged). 0 turns store
    /// and forward off: Slack trouble answers 503, and Coder's retries (about 20 minutes)
    /// are all there is.
    #[arg(
        long,
        env = "QUEUE_MAX_AGE",
        hide_env_values = true,
        default_value = "24h",
        global = true
    )]
    pub queue_max_age: String,
    /// How many notifications the outbox holds at most; past it, new ones are answered 503
    /// (Coder retries), so a long outage cannot fill the disk.
    #[arg(
        long,
        env = "QUEUE_MAX_DEPTH",
        hide_env_values = true,
        default_value = "100000",
        global = true
    )]
    pub queue_max_depth: String,
    /// After SIGTERM, how long webhooks are still taken while /readyz answers 503, so load
    /// balancers stop sending first (0s–10s); then deliveries in flight finish.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE",
        hide_env_values = true,
        default_value = "5s",
        global = true
    )]
    pub shutdown_grace: String,
    /// A TOML file of routes: which notifications go to a channel (and whether the DM too);
    /// unset, every notification goes to its recipient's DM (see routes.example.toml).
    #[arg(long, env = "ROUTES_FILE", hide_env_values = true, global = true)]
    pub routes_file: Option<PathBuf>,
    /// Allow a non-loopback LISTEN_ADDR without WEBHOOK_SECRET.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED", hide_env_values = true, global = true, value_parser = clap::builder::FalseyValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub allow_unauthenticated: bool,
}

impl Settings {
    /// Settings with every default and nothing from the environment; for tests and tools.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        // The environment is left out, so tests see the same defaults on every machine.
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["coder-slack-bridge"]);
        Cli::from_arg_matches(&matches)
            .map(|cli| cli.settings)
            .expect("the built-in defaults are valid settings")
    }
}

/// The settings whose values are secrets: never repeated in a message.
const SECRET_SETTINGS: [&str; 5] = [
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "CODER_TOKEN",
    "WEBHOOK_SECRET",
    "DATABASE_URL",
];

/// For a value clap refused (`PORT=abc`, `LOG_FORMAT=yaml`): a sentence naming the
/// environment variable as well as the flag, since most people set the variable. `None` for
/// every other error (help, version, unknown flags), which clap words well itself. A secret
/// setting's value is never shown.
pub fn explain_clap_error(command: &clap::Command, error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long: String = shown
        .strip_prefix("--")?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let arg = find_arg(command, &long)?;
    let env = arg.get_env()?.to_str()?;
    let secret = SECRET_SETTINGS.contains(&env);
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !secret => format!("{v:?}"),
        _ => "(not shown)".to_owned(),
    };
    let why = match (
        error.get(ContextKind::ValidValue),
        std::error::Error::source(error),
    ) {
        (Some(ContextValue::Strings(valid)), _) => format!("use one of {}", valid.join(", ")),
        (_, Some(source)) if !secret => source.to_string(),
        _ => "not a valid value".to_owned(),
    };
    Some(format!("{env} (--{long}): invalid value {value}: {why}"))
}

fn find_arg<'c>(command: &'c clap::Command, long: &str) -> Option<&'c clap::Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, long))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_the_environment() {
        // Only `defaults()` reads DIRECTORY_REFRESH in this test binary, so setting it here
        // cannot disturb another test.
        std::env::set_var("DIRECTORY_REFRESH", "2h");
        let refresh = Settings::defaults().directory_refresh;
        std::env::remove_var("DIRECTORY_REFRESH");
        assert_eq!(refresh, "1h");
    }

    #[test]
    fn clap_value_errors_name_the_variable_and_the_flag() {
        use clap::CommandFactory;
        let command = Cli::command();
        let explain = |args: &[&str]| {
            let e = Cli::command().try_get_matches_from(args).unwrap_err();
            explain_clap_error(&command, &e)
        };
        assert_eq!(
            explain(&["bridge", "--port", "abc"]).as_deref(),
            Some("PORT (--port): invalid value \"abc\": invalid digit found in string")
        );
        assert_eq!(
            explain(&["bridge", "--log-format", "yaml"]).as_deref(),
            Some("LOG_FORMAT (--log-format): invalid value \"yaml\": use one of text, json")
        );
        assert_eq!(
            explain(&["bridge", "check", "--port", "70000"]).as_deref(),
            Some("PORT (--port): invalid value \"70000\": 70000 is not in 0..=65535")
        );
        // Not a value error: clap's own words.
        assert_eq!(explain(&["bridge", "--nope"]), None);
        assert_eq!(explain(&["bridge", "--help"]), None);

        // A secret setting's value is never repeated.
        let hidden = clap::Command::new("t").arg(
            clap::Arg::new("secret")
                .long("webhook-secret")
                .env("WEBHOOK_SECRET")
                .hide_env_values(true)
                .value_parser(clap::value_parser!(u16)),
        );
        let e = hidden
            .clone()
            .try_get_matches_from(["t", "--webhook-secret", "hunter2"])
            .unwrap_err();
        let message = explain_clap_error(&hidden, &e).expect("explained");
        assert_eq!(
            message,
            "WEBHOOK_SECRET (--webhook-secret): invalid value (not shown): not a valid value"
        );
    }

    #[test]
    fn help_shows_each_variable_by_name_never_its_value() {
        use clap::CommandFactory;
        let command = Cli::command();
        let with_env: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_env().is_some())
            .collect();
        assert!(with_env.len() >= 17, "{}", with_env.len());
        for arg in with_env {
            assert!(
                arg.is_hide_env_values_set(),
                "{:?} shows its value in --help",
                arg.get_id()
            );
        }
        // Set or not, a variable shows as `[env: NAME]`: no `NAME=`, no value.
        std::env::set_var("CODER_TOKEN", "Zq9-coder-token-in-help");
        let help = Cli::command().render_long_help().to_string();
        std::env::remove_var("CODER_TOKEN");
        assert!(
            help.contains("[env: CODER_TOKEN]") && help.contains("[env: LISTEN_ADDR]"),
            "{help}"
        );
        assert!(!help.contains("=]") && !help.contains("Zq9"), "{help}");
        for name in SECRET_SETTINGS {
            assert!(help.contains(&format!("[env: {name}]")), "{name}: {help}");
        }
    }
}
