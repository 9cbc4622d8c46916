//! Settings: from the environment, a `.env` file, or `--flags` (clap reads all three once
//! `dotenvy` has loaded `.env`). Validation turns them into a [`Config`] or one plain sentence
//! naming the setting to fix. Secrets are held in [`SecretString`] so they cannot be printed.
//!
//! Each concern reads its own settings, with the shared [`ConfigError`] naming the variable:
//! `cli` declares them for clap (and words clap's own refusals), `dotenv` reads `.env`,
//! `secrets` the tokens and the webhook secret (placeholders refused), `parse` the plain values
//! (address, durations, URLs, the fallback channel). [`Settings::validate`], here, assembles
//! them into a [`Config`].

mod cli;
mod dotenv;
mod parse;
mod secrets;

pub use crate::duration::{human as human_duration, parse_duration};
pub use cli::{explain_clap_error, Cli, Command, Settings};
pub use dotenv::read_dotenv;

use crate::routes::Routes;
use crate::state::Location;
use parse::{
    bounded_duration, coder_url, fallback_channel, http_url, listen_addr, queue_limits,
    socket_mode_connections,
};
use secrecy::{ExposeSecret, SecretString};
use secrets::{app_token, bot_token, coder_token, webhook_secret};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

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
    /// How long handled ids, ended snoozes and idle threads are kept (`RETENTION`).
    pub retention: Duration,
    /// Store and forward (`QUEUE_MAX_AGE`, `QUEUE_MAX_DEPTH`): `None` when off.
    pub queue: Option<QueueLimits>,
    /// After SIGTERM, how long the listener keeps taking webhooks while `/readyz` answers
    /// 503, so load balancers stop sending before it closes (`SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// `ROUTES_FILE`, read and checked: which notifications go to a channel. Its `#name`s
    /// are resolved by `serve` at start-up (`App::build`), before any webhook is taken;
    /// unresolved until then, and in a dry run.
    pub routes: Option<Arc<Routes>>,
    /// Tuning that operators never need but tests shorten.
    pub tuning: Tuning,
}

/// How long and how many notifications may wait in the outbox for Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `QUEUE_MAX_AGE`: past it, FALLBACK_CHANNEL or dropped.
    pub max_age: Duration,
    /// `QUEUE_MAX_DEPTH`: past it, new notifications are answered 503.
    pub max_depth: u64,
}

/// Intervals and limits with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long an unknown e-mail address is remembered as unknown.
    pub negative_cache_ttl: Duration,
    /// How often what is older than `RETENTION` is pruned from the store.
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
    /// By when, counted from SIGTERM (`SHUTDOWN_GRACE` included), requests, deliveries,
    /// card edits and Socket Mode's handlers in flight must be done; Socket Mode's close
    /// frames get 3 s more, so a stop stays under 25 s (Kubernetes and systemd kill at 30 s).
    pub shutdown_budget: Duration,
    pub socket_mode: crate::socket_mode::Timing,
    pub outbox: OutboxTiming,
}

/// How the outbox's sender paces itself.
#[derive(Debug, Clone)]
pub struct OutboxTiming {
    /// First wait after a failed try (doubles, full jitter).
    pub retry_base: Duration,
    /// The longest wait between tries: delivery resumes this soon after Slack's return.
    pub retry_cap: Duration,
    /// How often the outbox is looked at when nothing woke the sender (another replica's
    /// notifications; the depth and age metrics).
    pub poll: Duration,
    /// Notifications taken at once.
    pub batch: u32,
    /// How long a webhook tries Slack itself before its notification waits in the outbox:
    /// a blip is retried at once, an outage does not hold each of Coder's requests for all
    /// of DELIVERY_TIMEOUT.
    pub direct_budget: Duration,
}

impl Default for OutboxTiming {
    fn default() -> Self {
        OutboxTiming {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(30),
            poll: Duration::from_secs(5),
            batch: 16,
            direct_budget: Duration::from_secs(5),
        }
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            negative_cache_ttl: Duration::from_secs(300),
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
            outbox: OutboxTiming::default(),
            shutdown_budget: Duration::from_secs(20),
            socket_mode: crate::socket_mode::Timing::default(),
        }
    }
}

/// The longest `SHUTDOWN_GRACE`: what is left of the shutdown budget (20 s) after it is the
/// time deliveries in flight get to finish (a Slack call's own timeout is 10 s).
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One plain sentence naming the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A setting refused: the one way every parser here says so.
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
    /// Every setting checked and turned into a [`Config`]; the first problem is the error.
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
        let coder_url = coder_url(self.coder_url.as_deref(), uses_slack)?;
        let coder_token = coder_token(self.coder_token, coder_url.is_some(), uses_slack)?;
        let listen_addr = listen_addr(self.listen_addr.as_deref(), self.port)?;
        let webhook_secret = webhook_secret(self.webhook_secret, needs != Needs::Nothing)?;
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
            retention: bounded_duration(
                "RETENTION",
                &self.retention,
                Duration::from_secs(24 * 3600)..=Duration::from_secs(365 * 24 * 3600),
                "a day outlasts Coder's retries, and a year of handled ids is plenty",
            )?,
            queue: queue_limits(&self.queue_max_age, &self.queue_max_depth, &self.retention)?,
            shutdown_grace: bounded_duration(
                "SHUTDOWN_GRACE",
                &self.shutdown_grace,
                Duration::ZERO..=MAX_SHUTDOWN_GRACE,
                "deliveries in flight need the rest of the 25 s a stop may take",
            )?,
            routes: routes(self.routes_file.as_deref())?,
            tuning: Tuning::default(),
        })
    }
}

/// `ROUTES_FILE`, read and checked when set (its errors name the file, the line and why).
fn routes(path: Option<&Path>) -> Result<Option<Arc<Routes>>, ConfigError> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let routes = Routes::load(path).map_err(|e| ConfigError(e.to_string()))?;
    Ok(Some(Arc::new(routes)))
}

/// A listener other hosts can reach takes webhooks only with a secret, unless
/// `--allow-unauthenticated` says otherwise.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with a bot token: settings `serve` accepts.
    pub(super) fn settings() -> Settings {
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
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert!(!c.dry_run);
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
        s.slack_bot_token = Some("xoxa-2-odd".into());
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

        for grace in ["11s", "soon"] {
            let mut s = settings();
            s.shutdown_grace = grace.into();
            assert!(
                s.validate(Needs::Serve)
                    .unwrap_err()
                    .0
                    .starts_with("SHUTDOWN_GRACE must be"),
                "{grace}"
            );
        }
        let mut s = settings();
        s.shutdown_grace = "0s".into();
        assert_eq!(
            s.validate(Needs::Serve).map(|c| c.shutdown_grace),
            Ok(Duration::ZERO)
        );

        let mut s = settings();
        s.listen_addr = Some("nonsense".into());
        assert!(s
            .validate(Needs::Serve)
            .unwrap_err()
            .0
            .starts_with("LISTEN_ADDR"));
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
        with_secret.webhook_secret = Some("s3cret-0123456789".into());
        assert!(with_secret.validate(Needs::Serve).is_ok());
        s.allow_unauthenticated = true;
        assert!(s.validate(Needs::Serve).is_ok());
    }
}
