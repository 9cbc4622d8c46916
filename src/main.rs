//! CLI and start-up only; everything else lives in the library.

use clap::Parser;
use coder_slack_bridge::coder::Notification;
use coder_slack_bridge::config::{Cli, Command, Needs};
use coder_slack_bridge::slack::SlackApi;
use coder_slack_bridge::telemetry::{self, Metrics};
use coder_slack_bridge::{render, App};
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `.env` first, so clap sees its values as environment variables.
    let from_dotenv = match load_dotenv() {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(&e),
    };
    telemetry::init_logging(cli.settings.log_format);
    if from_dotenv > 0 {
        tracing::info!(
            variables = from_dotenv,
            "settings read from .env in the working folder (the environment wins over it)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.settings).await,
            Command::Check => commands::check(cli.settings).await,
            Command::Preview { file } => preview(cli.settings, &file),
            Command::SendTest { email } => commands::send_test(cli.settings, &email).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `./.env` (the working folder's only) into the environment, without overriding what
/// is already set; returns how many variables it added.
fn load_dotenv() -> Result<usize, String> {
    let pairs =
        coder_slack_bridge::config::read_dotenv(std::path::Path::new(".env")).map_err(|e| e.0)?;
    let mut added = 0;
    for (name, value) in pairs {
        // The first definition in the file wins, as it does in dotenvy.
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
            added += 1;
        }
    }
    Ok(added)
}

/// clap names the flag (`--port`) when a value is wrong; most people set the environment
/// variable, so name that too. Help, version and usage errors stay clap's.
fn clap_failure(error: &clap::Error) -> ExitCode {
    use clap::CommandFactory;
    match coder_slack_bridge::config::explain_clap_error(&Cli::command(), error) {
        Some(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        None => error.exit(),
    }
}

async fn serve(settings: coder_slack_bridge::config::Settings) -> Result<(), String> {
    let config = settings.validate(Needs::Serve).map_err(|e| e.0)?;
    // Listen for signals before anything starts, so a SIGTERM during start-up is a clean
    // shutdown too rather than the default kill.
    let signal = shutdown_signal()?;
    let app = App::build(config).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        signal.await;
        shutdown.cancel();
    });
    app.run_until_stopped().await;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes, systemd) or Ctrl-C; the handlers are installed at once.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let mut terminate = listen(SignalKind::terminate())?;
        let mut interrupt = listen(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn preview(
    settings: coder_slack_bridge::config::Settings,
    file: &std::path::Path,
) -> Result<(), String> {
    // CODER_URL from the environment, `.env` or `--coder-url`, like every other setting.
    let config = settings.validate(Needs::Nothing).map_err(|e| e.0)?;
    let mut body = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    let notification = Notification::parse(&body, Some("preview")).map_err(|e| e.0)?;
    let options = render::RenderOptions {
        coder_url: config.coder_url,
    };
    let rendered = render::render(&notification, &options, None);
    for skipped in &rendered.skipped_actions {
        eprintln!(
            "note: button {} left out: {}",
            skipped.index, skipped.reason
        );
    }
    let channel = format!("<Slack user ID of {}>", notification.user_email);
    let request = coder_slack_bridge::delivery::post_request(
        slack_morphism::prelude::SlackChannelId(channel),
        rendered.content,
        &notification,
    );
    let json = serde_json::to_string_pretty(&request).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

mod commands {
    use super::*;
    use coder_slack_bridge::config::{Config, Settings};
    use coder_slack_bridge::delivery::{self, Answer, Delivery, Outcome};
    use coder_slack_bridge::proxy::ProxyConfig;
    use coder_slack_bridge::slack::directory::Directory;
    use coder_slack_bridge::socket_mode::{self, OpenConnection as _, OpenError};

    const REQUIRED_SCOPES: [&str; 3] = ["chat:write", "users:read", "users:read.email"];
    /// Without these a post whose answer is lost cannot be looked for in the DM, so it may
    /// be posted twice; everything else works.
    const READ_BACK_SCOPES: [&str; 2] = ["im:write", "im:history"];

    /// Verifies tokens, scopes and Socket Mode; prints a report; fails naming what to fix.
    pub async fn check(settings: Settings) -> Result<(), String> {
        let config = settings.validate(Needs::BotToken).map_err(|e| e.0)?;
        let proxies = ProxyConfig::from_env()?;
        let api = SlackApi::new(
            &config.slack_api_url,
            config.slack_bot_token.as_ref(),
            config.slack_app_token.as_ref(),
            config.tuning.slack_call_timeout,
            Metrics::new(),
            &proxies,
        )?;
        let mut problems = Vec::new();
        match api.auth_test().await {
            Ok(info) => {
                println!(
                    "ok    SLACK_BOT_TOKEN: bot @{} in workspace {}",
                    info.user, info.team
                );
                match info.scopes {
                    Some(scopes) => {
                        let missing: Vec<_> = REQUIRED_SCOPES
                            .iter()
                            .filter(|s| !scopes.iter().any(|have| have == *s))
                            .collect();
                        let missing_read_back: Vec<_> = READ_BACK_SCOPES
                            .iter()
                            .filter(|s| !scopes.iter().any(|have| have == *s))
                            .copied()
                            .collect();
                        if !missing_read_back.is_empty() {
                            println!(
                                "warn  bot scopes: missing {}: a post whose answer Slack loses cannot be checked and may reach the person twice (add them and reinstall the app)",
                                missing_read_back.join(", ")
                            );
                        }
                        if missing.is_empty() {
                            println!("ok    bot scopes: {}", REQUIRED_SCOPES.join(", "));
                        } else {
                            let missing = missing
                                .iter()
                                .map(|s| s.to_string())
                                .collect::<Vec<_>>()
                                .join(", ");
                            println!("FAIL  bot scopes: missing {missing}");
                            problems.push(format!("SLACK_BOT_TOKEN lacks the scopes {missing}: add them under OAuth & Permissions and reinstall the app"));
                        }
                    }
                    None => println!("warn  bot scopes: Slack did not report them"),
                }
            }
            Err(e) => {
                println!("FAIL  SLACK_BOT_TOKEN: {e}");
                problems.push(
                    e.remedy()
                        .unwrap_or_else(|| format!("SLACK_BOT_TOKEN could not be verified: {e}")),
                );
            }
        }
        if let Some(channel) = &config.fallback_channel {
            match api.verify_can_post(channel).await {
                Ok(()) => println!("ok    FALLBACK_CHANNEL: the app can post in {channel}"),
                Err(e) => {
                    println!("FAIL  FALLBACK_CHANNEL: {e}");
                    problems.push(format!(
                        "FALLBACK_CHANNEL {channel} does not take the app's posts ({}): use the channel's ID and invite the app to it",
                        e.code()
                    ));
                }
            }
        }
        match &config.slack_app_token {
            None => println!("warn  SLACK_APP_TOKEN: not set, so Socket Mode is off"),
            Some(_) => {
                if let Err(problem) = check_socket_mode(&api, &proxies, &config).await {
                    problems.push(problem);
                }
            }
        }
        if problems.is_empty() {
            println!("all checks passed");
            Ok(())
        } else {
            Err(problems.join("; "))
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

    /// A sample notification through the full path: directory lookup, render, post.
    pub async fn send_test(settings: Settings, email: &str) -> Result<(), String> {
        let config = settings.validate(Needs::BotToken).map_err(|e| e.0)?;
        let sample = include_str!(
            "../tests/fixtures/coder-webhook-samples/TemplateTestNotification.json.golden"
        );
        let mut body: serde_json::Value =
            serde_json::from_str(sample).map_err(|e| e.to_string())?;
        body["msg_id"] = format!("send-test-{}", std::process::id()).into();
        body["payload"]["user_email"] = email.into();
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let notification = Notification::parse(&bytes, None).map_err(|e| e.0)?;

        let metrics = Metrics::new();
        let api = std::sync::Arc::new(SlackApi::new(
            &config.slack_api_url,
            config.slack_bot_token.as_ref(),
            None,
            config.tuning.slack_call_timeout,
            metrics.clone(),
            &ProxyConfig::from_env()?,
        )?);
        let directory = std::sync::Arc::new(Directory::new(
            api.clone(),
            config.tuning.negative_cache_ttl,
            config.directory_refresh.saturating_mul(2),
            metrics.clone(),
        ));
        let delivery = Delivery::slack(
            api,
            directory,
            // To the person or nowhere: a test send must not land in the fallback channel.
            delivery::Settings {
                fallback_channel: None,
                ..delivery::Settings::from_config(&config)
            },
            metrics,
            tokio_util::sync::CancellationToken::new(),
        );
        // One attempt, nothing retries it: each failure says so and what to do.
        match delivery.deliver(&notification).await {
            Ok(Answer::Fresh(Outcome::Delivered { channel, ts })) => {
                println!("delivered to {email}: channel {channel}, ts {ts}");
                Ok(())
            }
            Ok(Answer::Fresh(Outcome::Undeliverable { reason, .. })) => Err(format!(
                "send-test failed: {email} cannot be messaged ({reason}); nothing was sent. \
                 Check that this is the address the person uses in Slack"
            )),
            Ok(other) => Err(format!(
                "send-test failed: unexpected answer {other:?}; nothing was sent"
            )),
            Err(e) => Err(format!(
                "send-test failed: Slack {}; nothing was sent. Run `coder-slack-bridge check` \
                 to see what to fix, then send-test again",
                e.reason.strip_prefix("slack: ").unwrap_or(&e.reason)
            )),
        }
    }
}
