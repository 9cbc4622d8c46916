//! Settings: from the environment, a `.env` file, or `--flags` (clap reads all three once
//! `dotenvy` has loaded `.env`). Validation turns them into a [`Config`] or one plain sentence
//! naming the setting to fix. Secrets are held in [`SecretString`] so they cannot be printed.

use crate::state::Location;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

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

/// Raw settings as given. `hide_env_values` keeps tokens out of `--help`.
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
        default_value = "https://slack.com/api",
        global = true
    )]
    pub slack_api_url: String,
    /// Coder's access URL, to resolve relative button URLs.
    #[arg(long, env = "CODER_URL", global = true)]
    pub coder_url: Option<String>,
    /// Coder API token (a least-privilege service account's): buttons that extend, start
    /// and keep the workspace a notification is about. Needs CODER_URL and SLACK_APP_TOKEN.
    #[arg(long, env = "CODER_TOKEN", hide_env_values = true, global = true)]
    pub coder_token: Option<SecretString>,
    /// Address the webhook listener binds.
    #[arg(long, env = "LISTEN_ADDR", global = true)]
    pub listen_addr: Option<String>,
    /// Port on 127.0.0.1, when LISTEN_ADDR is not given.
    #[arg(long, env = "PORT", global = true)]
    pub port: Option<u16>,
    /// Secret Coder must send as the Basic-auth password or a Bearer token.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, global = true)]
    pub webhook_secret: Option<SecretString>,
    /// Log rendered messages instead of sending them; no Slack needed.
    #[arg(long, env = "DRY_RUN", global = true, value_parser = clap::builder::FalseyValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub dry_run: bool,
    /// Channel for notifications that cannot reach their person.
    #[arg(long, env = "FALLBACK_CHANNEL", global = true)]
    pub fallback_channel: Option<String>,
    /// Concurrent Socket Mode connections (1–10).
    #[arg(
        long,
        env = "SOCKET_MODE_CONNECTIONS",
        default_value = "2",
        global = true
    )]
    pub socket_mode_connections: String,
    /// Budget for one webhook, Slack retries included (e.g. 30s, 1500ms).
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "30s", global = true)]
    pub delivery_timeout: String,
    /// How often the e-mail → Slack user directory is refreshed from users.list.
    #[arg(long, env = "DIRECTORY_REFRESH", default_value = "1h", global = true)]
    pub directory_refresh: String,
    /// Log format; the level comes from RUST_LOG.
    #[arg(
        long,
        env = "LOG_FORMAT",
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
        value_enum,
        default_value = "workspace",
        global = true
    )]
    pub threads: Threads,
    /// Allow a non-loopback LISTEN_ADDR without WEBHOOK_SECRET.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED", global = true, value_parser = clap::builder::FalseyValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub allow_unauthenticated: bool,
}

/// `THREADS`: where a notification about a workspace goes in the person's DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Threads {
    /// In the workspace's thread, under a card kept current.
    Workspace,
    /// Each a top-level message.
    Off,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub slack_bot_token: Option<SecretString>,
    pub slack_app_token: Option<SecretString>,
    pub slack_api_url: Url,
    pub coder_url: Option<Url>,
    /// For the buttons that act on Coder; only with `coder_url`.
    pub coder_token: Option<SecretString>,
    pub listen_addr: SocketAddr,
    pub webhook_secret: Option<SecretString>,
    pub dry_run: bool,
    pub fallback_channel: Option<String>,
    pub socket_mode_connections: usize,
    pub delivery_timeout: Duration,
    pub directory_refresh: Duration,
    /// Where state lives; an in-memory database when nothing needs one (dry run, `preview`).
    pub database: Location,
    pub threads: Threads,
    /// Tuning that operators never need but tests shorten.
    pub tuning: Tuning,
}

/// Intervals and limits with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long an unknown e-mail address is remembered as unknown.
    pub negative_cache_ttl: Duration,
    /// How long a handled `msg_id` is remembered (Coder's retries span about 25 minutes).
    pub dedupe_ttl: Duration,
    /// How often ids older than `dedupe_ttl` are pruned from the store.
    pub prune_every: Duration,
    /// A claim's lease is DELIVERY_TIMEOUT plus this: time for the store's own calls, and
    /// for clocks of replicas that disagree a little.
    pub lease_margin: Duration,
    /// Deliveries talking to Slack at once.
    pub max_concurrent_deliveries: usize,
    /// Open client connections the listener serves at once.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Time a client has to send a webhook body, once its headers are in.
    pub body_read_timeout: Duration,
    /// Webhook requests read and handled at once; bounds the memory bodies can take
    /// (this many × 1 MiB at worst). Coder sends at most 20 at a time; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Timeout for one Slack Web API call.
    pub slack_call_timeout: Duration,
    /// Timeout for one call to Coder's API from a click.
    pub coder_call_timeout: Duration,
    /// Timeout for reading a workspace from Coder while its notification is delivered.
    pub coder_lookup_timeout: Duration,
    /// How long a workspace card's first change waits for more before one `chat.update`
    /// shows the latest (a burst about one workspace edits its card once).
    pub card_edit_delay: Duration,
    /// First wait before retrying a failed Slack call (doubles, full jitter).
    pub retry_base_delay: Duration,
    /// How long shutdown waits for requests and deliveries in flight; Socket Mode's close
    /// frames get 3 s more, so a stop stays under 25 s (Kubernetes and systemd kill at 30 s).
    pub shutdown_grace: Duration,
    pub socket_mode: crate::socket_mode::Timing,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            negative_cache_ttl: Duration::from_secs(300),
            dedupe_ttl: Duration::from_secs(24 * 3600),
            prune_every: Duration::from_secs(600),
            lease_margin: Duration::from_secs(30),
            max_concurrent_deliveries: 64,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_concurrent_requests: 32,
            slack_call_timeout: Duration::from_secs(10),
            coder_call_timeout: Duration::from_secs(10),
            coder_lookup_timeout: Duration::from_secs(3),
            card_edit_delay: Duration::from_secs(1),
            retry_base_delay: Duration::from_millis(250),
            shutdown_grace: Duration::from_secs(20),
            socket_mode: crate::socket_mode::Timing::default(),
        }
    }
}

/// One plain sentence naming the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// What the command about to run needs from Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `serve`: a bot token unless dry run.
    Serve,
    /// `check` and `send-test`: a bot token always.
    BotToken,
    /// `preview`: nothing.
    Nothing,
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

    pub fn validate(self, needs: Needs) -> Result<Config, ConfigError> {
        // Whether Slack will really be called: only then is a placeholder token an error.
        let uses_slack = match needs {
            Needs::Serve => !self.dry_run,
            Needs::BotToken => true,
            Needs::Nothing => false,
        };
        let slack_bot_token = bot_token(self.slack_bot_token, needs, uses_slack)?;
        let slack_app_token = app_token(self.slack_app_token, uses_slack)?;
        let slack_api_url = http_url("SLACK_API_URL", &self.slack_api_url)?;
        let coder_url = match self.coder_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(http_url("CODER_URL", raw)?),
        };
        let coder_token = coder_token(self.coder_token, coder_url.is_some(), uses_slack)?;
        let listen_addr = listen_addr(self.listen_addr.as_deref(), self.port)?;
        let webhook_secret = webhook_secret(self.webhook_secret, needs == Needs::Serve)?;
        if needs == Needs::Serve && webhook_secret.is_none() && !self.allow_unauthenticated {
            public_listener_needs_a_secret(listen_addr)?;
        }
        Ok(Config {
            slack_bot_token,
            slack_app_token,
            slack_api_url,
            coder_url,
            coder_token,
            listen_addr,
            webhook_secret,
            dry_run: self.dry_run,
            fallback_channel: fallback_channel(self.fallback_channel.as_deref())?,
            socket_mode_connections: socket_mode_connections(&self.socket_mode_connections)?,
            delivery_timeout: bounded_duration(
                "DELIVERY_TIMEOUT",
                &self.delivery_timeout,
                Duration::from_secs(1)..=Duration::from_secs(55),
                "Coder abandons a webhook after 1 minute",
            )?,
            directory_refresh: bounded_duration(
                "DIRECTORY_REFRESH",
                &self.directory_refresh,
                Duration::from_secs(60)..=Duration::from_secs(24 * 3600),
                "users.list is rate-limited, and a day-old directory is stale enough",
            )?,
            database: match uses_slack {
                true => Location::parse(self.database_url.expose_secret()).map_err(ConfigError)?,
                false => Location::SqliteMemory,
            },
            threads: self.threads,
            tuning: Tuning::default(),
        })
    }
}

fn bot_token(
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
        return err("SLACK_BOT_TOKEN must start with xoxb- (a bot token)");
    }
    Ok(Some(token))
}

fn app_token(
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
        return err("SLACK_APP_TOKEN must start with xapp- (an app-level token)");
    }
    Ok(Some(token))
}

fn coder_token(
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

fn webhook_secret(
    raw: Option<SecretString>,
    serving: bool,
) -> Result<Option<SecretString>, ConfigError> {
    let secret = secret_setting("WEBHOOK_SECRET", raw);
    if let (Some(secret), true) = (&secret, serving) {
        refuse_placeholder(
            "WEBHOOK_SECRET",
            secret.expose_secret(),
            "a secret of your own (e.g. the output of `openssl rand -hex 32`)",
        )?;
        // README's Coder URL example spells the secret as SECRET.
        if secret.expose_secret().eq_ignore_ascii_case("secret") {
            return err("WEBHOOK_SECRET is still the word SECRET from the example: replace it with a secret of your own (e.g. the output of `openssl rand -hex 32`)");
        }
    }
    Ok(secret)
}

fn listen_addr(raw: Option<&str>, port: Option<u16>) -> Result<SocketAddr, ConfigError> {
    match (raw.map(str::trim), port) {
        (Some(addr), _) if !addr.is_empty() => addr.parse::<SocketAddr>().or_else(|_| {
            err(format!(
                "LISTEN_ADDR must be an address and port such as 127.0.0.1:6000 or 0.0.0.0:6000, not {addr:?}"
            ))
        }),
        (_, Some(port)) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => Ok(SocketAddr::from(([127, 0, 0, 1], 6000))),
    }
}

fn public_listener_needs_a_secret(listen_addr: SocketAddr) -> Result<(), ConfigError> {
    if listen_addr.ip().is_loopback() {
        return Ok(());
    }
    err(format!(
        "LISTEN_ADDR {listen_addr} is reachable from other hosts but WEBHOOK_SECRET is not set: \
         set WEBHOOK_SECRET (and put it in Coder's webhook URL as http://coder:SECRET@host/v1/webhook), \
         or pass --allow-unauthenticated to accept unauthenticated webhooks"
    ))
}

fn socket_mode_connections(raw: &str) -> Result<usize, ConfigError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=10).contains(&n) => Ok(n),
        _ => err(format!(
            "SOCKET_MODE_CONNECTIONS must be a whole number from 1 to 10, not {raw:?}"
        )),
    }
}

/// A channel ID: it survives the channel being renamed, and `.env` reads `#name` as a comment.
fn fallback_channel(raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(channel) = raw.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let is_id = channel.len() >= 9
        && channel.starts_with(['C', 'G', 'D'])
        && channel
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if is_id {
        return Ok(Some(channel.to_owned()));
    }
    let hint =
        "the ID is at the bottom of the channel's details in Slack (click the channel's name)";
    if channel.starts_with('#') {
        err(format!(
            "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD, not a name ({channel}): {hint}"
        ))
    } else {
        err(format!(
            "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD (C, G or D, then capital letters and digits), not {channel:?}: {hint}"
        ))
    }
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

fn http_url(name: &str, raw: &str) -> Result<Url, ConfigError> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => err(format!(
            "{name} must be an http(s) URL such as https://example.com"
        )),
    }
}

/// Parses `30s`, `1500ms`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => None,
    }
}

/// A duration within `range`; the message says why the bounds are what they are.
fn bounded_duration(
    name: &str,
    raw: &str,
    range: std::ops::RangeInclusive<Duration>,
    why: &str,
) -> Result<Duration, ConfigError> {
    let Some(value) = parse_duration(raw) else {
        return err(format!(
            "{name} must be a duration such as 30s, 1500ms, 5m or 1h, not {raw:?}"
        ));
    };
    if range.contains(&value) {
        return Ok(value);
    }
    err(format!(
        "{name} must be from {} to {}, not {raw:?}: {why}",
        human(*range.start()),
        human(*range.end())
    ))
}

/// `1s`, `55s`, `1m`, `24h`: a bound as a person would write it.
fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Reads `path` (the working folder's `.env`) as `NAME=value` pairs, in file order. A missing
/// file is no settings. Only this one file is read: a `.env` in a parent folder belongs to
/// something else. A line that cannot be parsed is named by number and variable, never shown:
/// it may hold a token.
pub fn read_dotenv(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return err(format!("{} is not UTF-8 text", path.display()))
        }
        Err(e) => return err(format!("{} could not be read: {e}", path.display())),
    };
    parse_dotenv(&content, is_setting).map_err(|bad| {
        let name = bad
            .name
            .map_or_else(|| "no NAME= at its start".to_owned(), |n| n.to_owned());
        let problem = match bad.problem {
            LineProblem::Unparsable => {
                "cannot be parsed: check its quotes and backslashes, and quote a value with spaces"
            }
            LineProblem::HashValue => {
                "has a value starting with #, which .env reads as a comment, leaving the setting \
                 empty: quote the value (for FALLBACK_CHANNEL, use the channel ID instead of #name)"
            }
        };
        ConfigError(format!(
            "{} line {} ({name}) {problem} (the line is not shown: it may hold a secret)",
            path.display(),
            bad.number
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineProblem {
    Unparsable,
    /// `NAME=#…`: dotenvy reads an empty value, which would silently unset a secret or the
    /// fallback channel.
    HashValue,
}

/// A refused line: its number, the variable it sets (when it names one) and why.
#[derive(Debug, PartialEq, Eq)]
struct BadLine<'a> {
    number: usize,
    name: Option<&'a str>,
    problem: LineProblem,
}

/// Whether `name` is one of the bridge's settings (`.env` may hold others' variables too).
fn is_setting(name: &str) -> bool {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .any(|arg| arg.get_env().is_some_and(|env| env == name))
}

/// dotenvy's parse of `content`, or the first line it could not parse, or that sets one of
/// `ours` empty though a value follows `=`.
fn parse_dotenv(
    content: &str,
    ours: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, BadLine<'_>> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let reader = LineAtATime::new(content);
    let delivered = reader.delivered.clone();
    let mut pairs = Vec::new();
    for item in dotenvy::from_read_iter(reader) {
        let (name, value) = item.map_err(|e| failed_line(content, delivered.get(), &e))?;
        if value.is_empty() && ours(&name) {
            // An empty entry is one line: the last one read.
            let number = last_line_read(content, delivered.get());
            let line = content.lines().nth(number - 1).unwrap_or_default();
            if line
                .split_once('=')
                .is_some_and(|(_, v)| v.starts_with('#'))
            {
                return Err(BadLine {
                    number,
                    name: variable_name(line),
                    problem: LineProblem::HashValue,
                });
            }
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// The number of the line that holds the `read`th byte of `content`.
fn last_line_read(content: &str, read: usize) -> usize {
    let consumed = &content[..read.min(content.len())];
    let consumed = consumed.strip_suffix('\n').unwrap_or(consumed);
    consumed.matches('\n').count() + 1
}

/// The first line of the entry that failed. dotenvy's error carries the entry's text
/// (sometimes only its value), so the line is found from how far it had read.
fn failed_line<'a>(content: &'a str, read: usize, e: &dotenvy::Error) -> BadLine<'a> {
    // An entry spans several lines when a quoted value does.
    let spanned = match e {
        dotenvy::Error::LineParse(text, _) => text.trim_end().matches('\n').count(),
        _ => 0,
    };
    let number = last_line_read(content, read).saturating_sub(spanned).max(1);
    BadLine {
        number,
        name: content.lines().nth(number - 1).and_then(variable_name),
        problem: LineProblem::Unparsable,
    }
}

/// `NAME` of a `NAME=…` or `export NAME=…` line; nothing for a line that does not start so,
/// whose start could be a secret pasted alone.
fn variable_name(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map_or(line, str::trim_start);
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (starts_well && rest.trim_start().starts_with('=')).then_some(name)
}

/// Hands dotenvy at most one line per read, so the bytes it has taken say which line it is on
/// (its buffered reader asks for more only once a line is used up).
struct LineAtATime<'a> {
    rest: &'a [u8],
    delivered: std::rc::Rc<std::cell::Cell<usize>>,
}

impl<'a> LineAtATime<'a> {
    fn new(content: &'a str) -> Self {
        LineAtATime {
            rest: content.as_bytes(),
            delivered: std::rc::Rc::default(),
        }
    }
}

impl std::io::Read for LineAtATime<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let line_end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let n = line_end.min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        self.delivered.set(self.delivered.get() + n);
        Ok(n)
    }
}

/// For a value clap refused (`PORT=abc`, `LOG_FORMAT=yaml`): a sentence naming the
/// environment variable as well as the flag, since most people set the variable. `None` for
/// every other error (help, version, unknown flags), which clap words well itself. A hidden
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
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !arg.is_hide_env_values_set() => format!("{v:?}"),
        _ => "(not shown)".to_owned(),
    };
    let why = match (
        error.get(ContextKind::ValidValue),
        std::error::Error::source(error),
    ) {
        (Some(ContextValue::Strings(valid)), _) => format!("use one of {}", valid.join(", ")),
        (_, Some(source)) if !arg.is_hide_env_values_set() => source.to_string(),
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

    fn settings() -> Settings {
        let mut s = Settings::defaults();
        s.slack_bot_token = Some("xoxb-test".into());
        s
    }

    #[test]
    fn defaults_are_sensible() {
        let c = settings().validate(Needs::Serve).expect("valid");
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:6000");
        assert_eq!(c.socket_mode_connections, 2);
        assert_eq!(c.delivery_timeout, Duration::from_secs(30));
        assert_eq!(c.slack_api_url.as_str(), "https://slack.com/api");
        assert!(!c.dry_run);
    }

    #[test]
    fn coder_token_needs_coder_url_and_a_real_token() {
        let mut s = settings();
        s.coder_token = Some("tok-123".into());
        let e = s.clone().validate(Needs::Serve).unwrap_err().0;
        assert!(
            e.starts_with("CODER_TOKEN is set but CODER_URL is not"),
            "{e}"
        );
        s.coder_url = Some("https://coder.example.com".into());
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
    fn missing_or_malformed_settings_are_named() {
        let mut s = settings();
        s.slack_bot_token = None;
        assert!(s
            .clone()
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("SLACK_BOT_TOKEN is not set"));
        s.dry_run = true;
        assert!(s.validate(Needs::Serve).is_ok());

        let mut s = settings();
        s.slack_bot_token = Some("xoxp-user".into());
        assert_eq!(
            s.validate(Needs::Serve).unwrap_err().0,
            "SLACK_BOT_TOKEN must start with xoxb- (a bot token)"
        );

        let mut s = settings();
        s.slack_app_token = Some("xoxb-wrong".into());
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("SLACK_APP_TOKEN must start with xapp-"));

        let mut s = settings();
        s.socket_mode_connections = "11".into();
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("SOCKET_MODE_CONNECTIONS"));

        let mut s = settings();
        s.delivery_timeout = "soon".into();
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("DELIVERY_TIMEOUT"));

        let mut s = settings();
        s.coder_url = Some("ftp://x".into());
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("CODER_URL"));

        let mut s = settings();
        s.listen_addr = Some("nonsense".into());
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("LISTEN_ADDR"));
    }

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
    fn port_alone_sets_the_port() {
        let mut s = settings();
        s.port = Some(7000);
        assert_eq!(
            s.validate(Needs::Serve)
                .expect("ok")
                .listen_addr
                .to_string(),
            "127.0.0.1:7000"
        );
    }

    #[test]
    fn public_listener_needs_a_secret_or_explicit_opt_out() {
        let mut s = settings();
        s.listen_addr = Some("0.0.0.0:6000".into());
        let e = s.clone().validate(Needs::Serve).unwrap_err().0;
        assert!(
            e.contains("WEBHOOK_SECRET") && e.contains("--allow-unauthenticated"),
            "{e}"
        );
        let mut with_secret = s.clone();
        with_secret.webhook_secret = Some("s3cret".into());
        assert!(with_secret.validate(Needs::Serve).is_ok());
        s.allow_unauthenticated = true;
        assert!(s.validate(Needs::Serve).is_ok());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1d"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let mut s = settings();
        s.webhook_secret = Some("hunter2-secret".into());
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
        let example =
            parse_dotenv(include_str!("../.env.example"), is_setting).expect(".env.example parses");
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
    fn secrets_are_trimmed() {
        let mut s = settings();
        s.webhook_secret = Some("s3cret\n".into());
        s.slack_bot_token = Some(" xoxb-test\r\n".into());
        s.slack_app_token = Some("\txapp-1\n".into());
        let c = s.validate(Needs::Serve).expect("valid");
        let shown = |v: &Option<SecretString>| v.as_ref().map(|v| v.expose_secret().to_owned());
        assert_eq!(shown(&c.webhook_secret).as_deref(), Some("s3cret"));
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

    #[test]
    fn directory_refresh_is_bounded() {
        for (raw, ok) in [
            ("1m", true),
            ("24h", true),
            ("59s", false),
            ("25h", false),
            ("100000h", false),
            ("18446744073709551615h", false),
            ("99999999999999999999999", false),
        ] {
            let mut s = settings();
            s.directory_refresh = raw.into();
            match s.validate(Needs::Serve) {
                Ok(c) => assert!(ok, "{raw} accepted as {:?}", c.directory_refresh),
                Err(e) => {
                    assert!(!ok, "{raw}: {e}");
                    assert!(e.0.starts_with("DIRECTORY_REFRESH must be"), "{e}");
                }
            }
        }
        let mut s = settings();
        s.directory_refresh = "48h".into();
        assert_eq!(
            s.validate(Needs::Serve).unwrap_err().0,
            "DIRECTORY_REFRESH must be from 1m to 24h, not \"48h\": users.list is rate-limited, and a day-old directory is stale enough"
        );
        let mut s = settings();
        s.delivery_timeout = "1000000000000h".into();
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("DELIVERY_TIMEOUT"));
    }

    #[test]
    fn fallback_channel_must_be_an_id() {
        for ok in ["C0123ABCD", "G0123ABCD", "D0123ABCD", " C0FALLBACK "] {
            let mut s = settings();
            s.fallback_channel = Some(ok.into());
            let c = s.validate(Needs::Serve).expect(ok);
            assert_eq!(c.fallback_channel.as_deref(), Some(ok.trim()));
        }
        let mut s = settings();
        s.fallback_channel = Some("#general".into());
        let e = s.validate(Needs::Serve).unwrap_err().0;
        assert!(
            e.starts_with(
                "FALLBACK_CHANNEL must be a channel ID such as C0123ABCD, not a name (#general)"
            ) && e.contains("channel's details"),
            "{e}"
        );
        for bad in ["general", "c0123abcd", "C012", "U0123ABCD", "C0123-ABCD"] {
            let mut s = settings();
            s.fallback_channel = Some(bad.into());
            let e = s.validate(Needs::Serve).unwrap_err().0;
            assert!(
                e.starts_with("FALLBACK_CHANNEL must be a channel ID"),
                "{bad}: {e}"
            );
        }
        let mut s = settings();
        s.fallback_channel = Some("  ".into());
        assert!(s
            .validate(Needs::Serve)
            .expect("ok")
            .fallback_channel
            .is_none());
    }

    #[test]
    fn dotenv_parses_like_dotenvy() {
        let pairs = parse_dotenv(
            "\u{feff}# comment\nA=1\nexport B='two words'\nC=\"multi\nline\"\n\nD=${A}x # note\n",
            is_setting,
        )
        .expect("parses");
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "multi\nline"),
                ("D", "1x")
            ]
        );
    }

    #[test]
    fn a_bad_dotenv_line_is_named_by_number_and_variable_only() {
        for (content, line, name) in [
            (
                "A=1\nSLACK_BOT_TOKEN=\"xoxb-secret-tail\n",
                2,
                Some("SLACK_BOT_TOKEN"),
            ),
            (
                "A=1\nB=\"x\ny\"\nTOKEN=xoxb secret-tail\nC=2\n",
                4,
                Some("TOKEN"),
            ),
            (
                "A=1\n\n   export  TOKEN = 'secret-tail\nB=2\n",
                3,
                Some("TOKEN"),
            ),
            ("# c\nsecret-tail\n", 2, None),
            ("A=1\nxoxb-secret-tail x\n", 2, None),
            ("A=1\nB=\\q secret-tail\n", 2, Some("B")),
        ] {
            let bad = parse_dotenv(content, is_setting).unwrap_err();
            assert_eq!((bad.number, bad.name), (line, name), "{content:?}");
            assert_eq!(bad.problem, LineProblem::Unparsable);
        }
        // A value after `=` that .env would read as a comment is refused, not left empty.
        for (content, line, name) in [
            (
                "A=1\nFALLBACK_CHANNEL=#general\n",
                2,
                Some("FALLBACK_CHANNEL"),
            ),
            (
                "export WEBHOOK_SECRET=#secret-tail # note\n",
                1,
                Some("WEBHOOK_SECRET"),
            ),
        ] {
            let bad = parse_dotenv(content, is_setting).unwrap_err();
            assert_eq!((bad.number, bad.name), (line, name), "{content:?}");
            assert_eq!(bad.problem, LineProblem::HashValue);
        }
        let pairs = parse_dotenv("EMPTY=\nNOTE= # a comment\nOTHER=#x\n", is_setting)
            .expect("empty values are fine, and others' variables are theirs");
        assert_eq!(pairs.len(), 3);

        let dir = std::env::temp_dir().join(format!("csb-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(".env");
        std::fs::write(&path, "OK=1\nSLACK_BOT_TOKEN=\"xoxb-1-secret-tail\n").expect("write");
        let e = read_dotenv(&path).unwrap_err().0;
        assert!(
            e.contains(".env line 2 (SLACK_BOT_TOKEN) cannot be parsed"),
            "{e}"
        );
        assert!(!e.contains("secret-tail") && !e.contains("xoxb-1"), "{e}");
        assert!(read_dotenv(&dir.join("absent"))
            .expect("missing is fine")
            .is_empty());
        let _ = std::fs::remove_dir_all(&dir);
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

        // A hidden setting's value is never repeated.
        let hidden = clap::Command::new("t").arg(
            clap::Arg::new("secret")
                .long("secret")
                .env("SECRET_SETTING")
                .hide_env_values(true)
                .value_parser(clap::value_parser!(u16)),
        );
        let e = hidden
            .clone()
            .try_get_matches_from(["t", "--secret", "hunter2"])
            .unwrap_err();
        let message = explain_clap_error(&hidden, &e).expect("explained");
        assert_eq!(
            message,
            "SECRET_SETTING (--secret): invalid value (not shown): not a valid value"
        );
    }
}
