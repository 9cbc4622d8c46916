//! `check`: verifies that `LISTEN_ADDR` can be bound (`check_listen`), the tokens, their
//! scopes, the fallback channel, the routes' channels (`check_routes`), the store, Coder
//! (`check_coder`) and Socket Mode through the firewall and proxy; prints one line per check
//! and fails naming what to fix.

use crate::config::{Config, Needs, Settings};
use crate::proxy::ProxyConfig;
use crate::slack::SlackApi;
use crate::socket_mode::{self, OpenConnection as _, OpenError};
use crate::state::{self, Plan, Store, SCHEMA_VERSION};
use crate::telemetry::Metrics;

const REQUIRED_SCOPES: [&str; 3] = ["chat:write", "users:read", "users:read.email"];
/// Without these a post whose answer is lost cannot be looked for in the DM, so it may
/// be posted twice; everything else works.
const READ_BACK_SCOPES: [&str; 2] = ["im:write", "im:history"];

/// Verifies tokens, scopes and Socket Mode; prints a report; fails naming what to fix.
pub async fn check(settings: Settings) -> Result<(), String> {
    let config = settings.validate(Needs::BotToken).map_err(|e| e.0)?;
    let proxies = ProxyConfig::from_env()?;
    let api = SlackApi::from_config(&config, &proxies, Metrics::new())?;
    let mut problems = Vec::new();
    problems.extend(
        super::check_listen::check_listen_addr(config.listen_addr)
            .await
            .err(),
    );
    let scopes = check_bot_token(&api, &mut problems).await;
    if let Some(channel) = &config.fallback_channel {
        problems.extend(check_fallback_channel(&api, channel).await.err());
    }
    let routes = config.routes.as_deref();
    problems.extend(super::check_routes::check_routes(&api, routes, scopes.as_deref()).await);
    problems.extend(check_store(&config.database).await.err());
    let (level, store_and_forward) = super::store_and_forward(&config);
    println!("{level:<6}{store_and_forward}");
    problems.extend(super::check_coder::check_coder(&config, &proxies).await);
    match &config.slack_app_token {
        None => println!(
            "warn  SLACK_APP_TOKEN: not set, so Socket Mode is off: no snooze, no App Home"
        ),
        Some(_) => {
            problems.extend(check_socket_mode(&api, &proxies, &config).await.err());
            // A bot token cannot read the app's own settings, so this one is a reminder.
            println!("note  App Home: needs App Home → Home Tab on and the bot event app_home_opened (the README's manifest has both); a bot token cannot check them");
        }
    }
    if problems.is_empty() {
        println!("all checks passed");
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `auth.test`, and the scopes Slack reports for the token: returned when it reports them;
/// what is wrong goes to `problems`.
async fn check_bot_token(api: &SlackApi, problems: &mut Vec<String>) -> Option<Vec<String>> {
    let info = match api.auth_test().await {
        Ok(info) => info,
        Err(e) => {
            println!("FAIL  SLACK_BOT_TOKEN: {e}");
            problems.push(
                e.remedy()
                    .unwrap_or_else(|| format!("SLACK_BOT_TOKEN could not be verified: {e}")),
            );
            return None;
        }
    };
    println!(
        "ok    SLACK_BOT_TOKEN: bot @{} in workspace {}",
        info.user, info.team
    );
    let Some(scopes) = info.scopes else {
        println!("warn  bot scopes: Slack did not report them");
        return None;
    };
    let missing = |wanted: &[&str]| -> String {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|s| !scopes.iter().any(|have| have == *s))
            .copied()
            .collect();
        missing.join(", ")
    };
    let missing_read_back = missing(&READ_BACK_SCOPES);
    if !missing_read_back.is_empty() {
        println!("warn  bot scopes: missing {missing_read_back}: a post whose answer Slack loses cannot be checked and may reach the person twice (add them and reinstall the app)");
    }
    let missing_required = missing(&REQUIRED_SCOPES);
    if missing_required.is_empty() {
        println!("ok    bot scopes: {}", REQUIRED_SCOPES.join(", "));
    } else {
        println!("FAIL  bot scopes: missing {missing_required}");
        problems.push(format!("SLACK_BOT_TOKEN lacks the scopes {missing_required}: add them under OAuth & Permissions and reinstall the app"));
    }
    Some(scopes)
}

/// What `serve` would do with the store, found without writing to it: `check` never
/// creates, migrates or writes a database (a live one may be in use by replicas of another
/// version during a rolling update).
async fn check_store(database: &state::Location) -> Result<(), String> {
    let shown = database.shown();
    let inspection = match Store::inspect(database).await {
        Ok(inspection) => inspection,
        Err(e) => {
            println!("FAIL  DATABASE_URL: {e}");
            return Err(format!("DATABASE_URL: {e}"));
        }
    };
    if let Some(warning) = database.tls_warning() {
        println!("warn  {warning}");
    }
    let backend = inspection.backend;
    let Some(found) = inspection.found else {
        println!("ok    DATABASE_URL: {shown} ({backend}: no database yet; serve creates it at schema version {SCHEMA_VERSION})");
        return Ok(());
    };
    let version = found.version;
    let doing = match inspection.plan {
        Ok(Plan::Migrate) if version == 0 => {
            format!("empty: serve creates its tables at schema version {SCHEMA_VERSION}")
        }
        Ok(Plan::Migrate) => format!(
            "schema version {version}: serve migrates it to {SCHEMA_VERSION}, only adding, so bridges of the previous release keep working on it"
        ),
        Ok(Plan::Current) => format!("schema version {version}, current"),
        Ok(Plan::Newer) => format!(
            "schema version {version}, from a newer bridge: this one uses it as it is"
        ),
        Err(why) => {
            println!("FAIL  DATABASE_URL: {shown}: {why}");
            return Err(format!("DATABASE_URL: {why}"));
        }
    };
    if found.read_only {
        let why = match backend {
            "postgres" => "the server is a read-only standby: point DATABASE_URL at the primary (target_session_attrs=read-write)",
            _ => "this user cannot write the file or its folder (the -wal file is made beside it)",
        };
        println!("FAIL  DATABASE_URL: {shown} ({backend}, {doing}), but {why}");
        return Err(format!("DATABASE_URL: {why}"));
    }
    println!("ok    DATABASE_URL: {shown} ({backend}, {doing})");
    Ok(())
}

/// That the app may post in the fallback channel, without posting there.
async fn check_fallback_channel(api: &SlackApi, channel: &str) -> Result<(), String> {
    match api.verify_can_post(channel).await {
        Ok(()) => {
            println!("ok    FALLBACK_CHANNEL: the app can post in {channel}");
            Ok(())
        }
        Err(e) => {
            println!("FAIL  FALLBACK_CHANNEL: {e}");
            Err(format!(
                "FALLBACK_CHANNEL {channel} does not take the app's posts ({}): use the channel's ID and invite the app to it",
                e.code()
            ))
        }
    }
}

/// Opens a Socket Mode URL and the websocket, as the server would. Blames SLACK_APP_TOKEN
/// only when Slack refused it; a network failure names its cause and the proxy settings.
async fn check_socket_mode(
    api: &SlackApi,
    proxies: &ProxyConfig,
    config: &Config,
) -> Result<(), String> {
    const NETWORK: &str = "check HTTPS_PROXY / NO_PROXY and that the firewall lets this host reach slack.com and wss-primary.slack.com on port 443";
    let url = match api.open().await {
        Ok(url) => url,
        Err(OpenError::Auth(code)) => {
            println!("FAIL  SLACK_APP_TOKEN: Slack refused it ({code})");
            return Err(format!("SLACK_APP_TOKEN was refused ({code}): create an app-level token with connections:write and turn Socket Mode on"));
        }
        Err(OpenError::Transport(cause)) => {
            println!("FAIL  Socket Mode: {cause}");
            return Err(format!("{cause} ({NETWORK})"));
        }
        Err(e) => {
            println!("FAIL  Socket Mode: {e}");
            return Err(format!("Socket Mode could not be opened: {e}"));
        }
    };
    match socket_mode::probe(&url, proxies, &config.tuning.socket_mode).await {
        Ok(()) => {
            println!("ok    SLACK_APP_TOKEN: Socket Mode connected and said hello");
            Ok(())
        }
        Err(e) => {
            println!("FAIL  Socket Mode: {e}");
            Err(format!("Socket Mode is not reachable: {e} ({NETWORK})"))
        }
    }
}
