//! coder-slack-bridge: Coder notifications → Slack direct messages, over outbound connections only.
//!
//! The data's path: [`http`] receives Coder's webhook → [`delivery`] dedupes and routes it →
//! [`render`] turns it into Block Kit → [`slack`] posts it. [`socket_mode`] runs beside them,
//! keeping the websocket that carries button clicks. [`App::build`] wires them together and
//! binds the listener, so tests start the real thing on port 0.

pub mod backoff;
pub mod coder;
pub mod config;
pub mod delivery;
pub mod http;
pub mod proxy;
pub mod render;
pub mod retry;
mod server;
pub mod slack;
pub mod socket_mode;
pub mod telemetry;

use config::Config;
use delivery::Delivery;
use secrecy::SecretString;
use slack::directory::Directory;
use slack::{ErrorClass, SlackApi};
use socket_mode::{DefaultHandler, SocketMode, SocketModeConfig, SocketModeState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telemetry::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time Socket Mode's close frames get at shutdown, after the grace period for deliveries.
const SOCKET_MODE_CLOSE_BUDGET: Duration = Duration::from_secs(3);

/// What the HTTP handlers share.
pub struct AppState {
    pub metrics: Metrics,
    pub delivery: Arc<Delivery>,
    pub webhook_secret: Option<SecretString>,
    /// Deliveries in flight; shutdown waits for them.
    pub tasks: TaskTracker,
    /// Webhook requests being read or handled.
    pub request_slots: tokio::sync::Semaphore,
    pub body_read_timeout: Duration,
    dry_run: bool,
    /// Set by the auth check once `auth.test` accepted the bot token.
    slack_verified: Arc<AtomicBool>,
    socket_mode: Mutex<Option<SocketMode>>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// Whether the bridge can deliver DMs.
    pub ready: bool,
    pub reason: &'static str,
    /// Socket Mode's connections, when it is on. Reported, but not part of `ready`: DMs go
    /// out without it, so an outage must not take the only replica out of service.
    pub socket_mode: Option<SocketModeState>,
}

impl AppState {
    /// Ready when the bot token was verified (dry run: always).
    pub fn readiness(&self) -> Readiness {
        let socket_mode = self
            .socket_mode
            .lock()
            .ok()
            .and_then(|guard| guard.as_ref().map(SocketMode::state));
        let (ready, reason) = if self.dry_run {
            (true, "dry run: Slack is not contacted")
        } else if !self.slack_verified.load(Ordering::Acquire) {
            (false, "SLACK_BOT_TOKEN not verified yet (auth.test)")
        } else {
            (true, "ok")
        };
        Readiness {
            ready,
            reason,
            socket_mode,
        }
    }
}

/// A running bridge: the listener is bound and background work has started.
pub struct App {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    directory: Option<Arc<Directory>>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl App {
    /// Builds every part from `config` and binds the listener (port 0 picks a free one).
    pub async fn build(config: Config) -> Result<App, String> {
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let tuning = &config.tuning;
        let settings = delivery::Settings::from_config(&config);
        if config.coder_url.is_none() {
            tracing::warn!("CODER_URL is not set: buttons with relative URLs are left out");
        }

        let mut background = Vec::new();
        let slack_verified = Arc::new(AtomicBool::new(false));
        let mut directory = None;
        let mut socket_mode = None;
        let delivery = if config.dry_run {
            tracing::warn!(
                "DRY_RUN is on: notifications are rendered, not sent to Slack (the log shows their shape; `preview` shows a whole message)"
            );
            Delivery::dry_run(settings, metrics.clone(), shutdown.clone())
        } else {
            let proxies = proxy::ProxyConfig::from_env()?;
            let api = Arc::new(SlackApi::new(
                &config.slack_api_url,
                config.slack_bot_token.as_ref(),
                config.slack_app_token.as_ref(),
                tuning.slack_call_timeout,
                metrics.clone(),
                &proxies,
            )?);
            let dir = Arc::new(Directory::new(
                api.clone(),
                tuning.negative_cache_ttl,
                config.directory_refresh.saturating_mul(2),
                metrics.clone(),
            ));
            background.push(
                dir.clone()
                    .spawn_refresher(config.directory_refresh, shutdown.clone()),
            );
            if api.has_app_token() {
                socket_mode = Some(SocketMode::spawn(
                    api.clone(),
                    SocketModeConfig {
                        connections: config.socket_mode_connections,
                        tuning: tuning.socket_mode.clone(),
                        proxy: proxies,
                    },
                    Arc::new(DefaultHandler::new(metrics.clone())),
                    metrics.clone(),
                    shutdown.clone(),
                ));
            } else {
                tracing::warn!(
                    "SLACK_APP_TOKEN is not set: Socket Mode is off, so Slack shows a warning icon when someone clicks a button"
                );
            }
            directory = Some(dir.clone());
            background.push(spawn_auth_check(
                api.clone(),
                slack_verified.clone(),
                shutdown.clone(),
            ));
            Delivery::slack(api, dir, settings, metrics.clone(), shutdown.clone())
        };

        let state = Arc::new(AppState {
            metrics,
            delivery: Arc::new(delivery),
            webhook_secret: config.webhook_secret.clone(),
            tasks: TaskTracker::new(),
            request_slots: tokio::sync::Semaphore::new(tuning.max_concurrent_requests),
            body_read_timeout: tuning.body_read_timeout,
            dry_run: config.dry_run,
            slack_verified,
            socket_mode: Mutex::new(socket_mode),
        });

        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| format!("cannot listen on LISTEN_ADDR {}: {e}", config.listen_addr))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the listener's address: {e}"))?;
        let server = tokio::spawn(server::serve(
            listener,
            http::routes(state.clone()),
            server::Limits {
                max_connections: tuning.max_connections,
                header_read_timeout: tuning.header_read_timeout,
            },
            shutdown.clone(),
        ));
        tracing::info!(%local_addr, "listening for Coder's webhook on POST /v1/webhook");
        Ok(App {
            local_addr,
            state,
            directory,
            shutdown,
            server,
            background,
            grace: tuning.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The e-mail → Slack user directory (absent in dry run).
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Cancelling it starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled, then stops accepting, lets deliveries in
    /// flight finish (they stop retrying; all of it bounded by the grace period) and closes
    /// Socket Mode with close frames (bounded too), so the whole stop stays under the 30 s
    /// that Kubernetes and systemd give before they kill.
    pub async fn run_until_stopped(self) {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down: finishing deliveries in flight");
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut server = self.server;
        if tokio::time::timeout_at(deadline, &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        self.state.tasks.close();
        if tokio::time::timeout_at(deadline, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still in flight after the grace period were abandoned; Coder retries them");
        }
        let socket_mode = self
            .state
            .socket_mode
            .lock()
            .ok()
            .and_then(|mut g| g.take());
        if let Some(socket_mode) = socket_mode {
            if tokio::time::timeout(SOCKET_MODE_CLOSE_BUDGET, socket_mode.join())
                .await
                .is_err()
            {
                tracing::warn!("Socket Mode connections did not close in time");
            }
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("stopped");
    }
}

/// Verifies the bot token with `auth.test` until it works, for `/readyz`.
fn spawn_auth_check(
    api: Arc<SlackApi>,
    verified: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let retry =
            retry::Retry::new(Duration::from_secs(1), Duration::from_secs(60)).until(shutdown);
        // Even a refused token is tried again (slowly): the log says what to fix meanwhile.
        let keep_trying = |e: &slack::SlackError| match e.verdict() {
            retry::Verdict::Stop => retry::Verdict::Backoff,
            verdict => verdict,
        };
        let checked = retry
            .run(keep_trying, || async {
                let result = api.auth_test().await;
                if let Err(e) = &result {
                    match (e.class(), e.remedy()) {
                        (ErrorClass::Configuration, Some(remedy)) => {
                            tracing::error!(error = %e, "Slack rejected the bot token: {remedy}")
                        }
                        _ => {
                            tracing::warn!(error = %e, "cannot reach Slack to verify the bot token; retrying")
                        }
                    }
                }
                result
            })
            .await;
        if let Ok(info) = checked {
            tracing::info!(team = %info.team, bot = %info.user, "Slack bot token verified");
            verified.store(true, Ordering::Release);
        }
    })
}
