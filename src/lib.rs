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
mod server;
pub mod slack;
pub mod socket_mode;
pub mod telemetry;

use config::Config;
use delivery::Delivery;
use secrecy::SecretString;
use slack::directory::Directory;
use slack::{ErrorClass, SlackApi};
use socket_mode::{DefaultHandler, SocketMode, SocketModeConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telemetry::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    slack_verified: AtomicBool,
    socket_mode: Mutex<Option<SocketMode>>,
    socket_mode_on: bool,
}

impl AppState {
    /// Ready when the bot token was verified and, with Socket Mode on, a connection has had
    /// `hello`. Returns the reason when not.
    pub fn readiness(&self) -> (bool, &'static str) {
        if self.dry_run {
            return (true, "dry run: Slack is not contacted");
        }
        if !self.slack_verified.load(Ordering::Acquire) {
            return (false, "SLACK_BOT_TOKEN not verified yet (auth.test)");
        }
        if self.socket_mode_on {
            let open = self
                .socket_mode
                .lock()
                .ok()
                .and_then(|guard| guard.as_ref().map(|s| s.state().connections_open))
                .unwrap_or(0);
            if open == 0 {
                return (false, "no Socket Mode connection is open");
            }
        }
        (true, "ok")
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
        let mut directory = None;
        let mut socket_mode = None;
        let delivery = if config.dry_run {
            tracing::warn!(
                "DRY_RUN is on: notifications are rendered, not sent to Slack (the log shows their shape; `preview` shows a whole message)"
            );
            Delivery::dry_run(settings)
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
            Delivery::slack(api, dir, settings)
        };

        let socket_mode_on = socket_mode.is_some();
        let state = Arc::new(AppState {
            metrics,
            delivery: Arc::new(delivery),
            webhook_secret: config.webhook_secret.clone(),
            tasks: TaskTracker::new(),
            request_slots: tokio::sync::Semaphore::new(tuning.max_concurrent_requests),
            body_read_timeout: tuning.body_read_timeout,
            dry_run: config.dry_run,
            slack_verified: AtomicBool::new(false),
            socket_mode: Mutex::new(socket_mode),
            socket_mode_on,
        });
        if let Some(dir) = &directory {
            background.push(spawn_auth_check(
                dir.api().clone(),
                state.clone(),
                shutdown.clone(),
            ));
        }

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
    /// flight finish (bounded by the grace period) and closes Socket Mode cleanly.
    pub async fn run_until_stopped(self) {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down: finishing deliveries in flight");
        let _ = self.server.await;
        self.state.tasks.close();
        if tokio::time::timeout(self.grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still in flight after the grace period were abandoned");
        }
        let socket_mode = self
            .state
            .socket_mode
            .lock()
            .ok()
            .and_then(|mut g| g.take());
        if let Some(socket_mode) = socket_mode {
            socket_mode.join().await;
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
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let wait = match api.auth_test().await {
                Ok(info) => {
                    tracing::info!(team = %info.team, bot = %info.user, "Slack bot token verified");
                    state.slack_verified.store(true, Ordering::Release);
                    return;
                }
                Err(e) => {
                    match (e.class(), e.remedy()) {
                        (ErrorClass::Configuration, Some(remedy)) => {
                            tracing::error!(error = %e, "Slack rejected the bot token: {remedy}")
                        }
                        _ => {
                            tracing::warn!(error = %e, "cannot reach Slack to verify the bot token; retrying")
                        }
                    }
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}
