//! Start-up and shutdown. [`App::build`] makes every part from the configuration and binds
//! the listener (port 0 picks a free one, so tests start the real thing);
//! [`App::run_until_stopped`] serves until the shutdown token is cancelled, then stops in
//! bounded time: `/readyz` turns 503 at once, webhooks are still taken for `SHUTDOWN_GRACE`
//! (load balancers take a few seconds to stop sending), then the listener closes and the work
//! in flight drains.

use crate::cards::CardEdits;
use crate::coder_api::CoderApi;
use crate::config::Config;
use crate::delivery::{self, Delivery, Outbox};
use crate::interact::Interact;
use crate::proxy::ProxyConfig;
use crate::readiness::Readiness;
use crate::retry::{Retry, Verdict};
use crate::routes::Routes;
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackApi, SlackError};
use crate::socket_mode::{SocketMode, SocketModeConfig};
use crate::state::Store;
use crate::telemetry::Metrics;
use crate::{http, server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time Socket Mode's close frames get at shutdown, after the budget for the work in flight.
const SOCKET_MODE_CLOSE_BUDGET: Duration = Duration::from_secs(3);

/// A running bridge: the listener is bound and background work has started.
pub struct App {
    local_addr: SocketAddr,
    state: Arc<http::State>,
    background: Background,
    /// Cancelled by whoever stops the bridge (SIGTERM): `/readyz` turns 503 at once.
    shutdown: CancellationToken,
    /// Cancelled once `SHUTDOWN_GRACE` has passed: the listener closes, deliveries stop
    /// retrying, background work stops.
    stop: CancellationToken,
    server: JoinHandle<()>,
    /// `SHUTDOWN_GRACE`.
    grace: Duration,
    /// By when, counted from the shutdown, the work in flight must be done.
    budget: Duration,
}

/// What runs beside the HTTP face (all absent in a dry run).
#[derive(Default)]
struct Background {
    /// The e-mail → Slack user directory.
    directory: Option<Arc<Directory>>,
    socket_mode: Option<SocketMode>,
    /// Edits of workspaces' cards; shutdown sends what is pending.
    cards: Option<Arc<CardEdits>>,
    /// The directory's refresher and the bot token check.
    tasks: Vec<JoinHandle<()>>,
    /// The outbox's sender (store and forward); shutdown lets its sends in flight finish.
    sender: Option<JoinHandle<()>>,
}

impl App {
    /// Builds every part from `config` and binds the listener.
    pub async fn build(config: Config) -> Result<App, String> {
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let readiness = Readiness::new(config.dry_run, shutdown.clone());
        if config.coder_url.is_none() {
            tracing::warn!("CODER_URL is not set: buttons with relative URLs are left out");
        }
        let config = resolve_routes(config, &metrics).await?;
        let store = open_store(&config).await?;
        let (delivery, mut background) = if config.dry_run {
            tracing::warn!("DRY_RUN is on: notifications are rendered, not sent to Slack (the log shows their shape; `preview` shows a whole message)");
            let policy = delivery::Policy::from_config(&config);
            let delivery = Delivery::dry_run(store.clone(), policy, metrics.clone(), stop.clone());
            (delivery, Background::default())
        } else {
            start_slack(&config, store.clone(), &metrics, &stop, &readiness)?
        };
        background.tasks.push(store.clone().spawn_pruner(
            config.retention,
            config.tuning.prune_every,
            stop.clone(),
        ));
        background
            .tasks
            .push(readiness.watch_store(store, stop.clone()));
        let delivery = Arc::new(delivery);
        if let Some(outbox) = delivery.outbox() {
            readiness.report_outbox(outbox.clone());
            background.sender = Some(tokio::spawn(delivery.clone().drain_outbox(stop.clone())));
        }
        let state = http::State::new(
            metrics,
            delivery,
            config.webhook_secret.clone(),
            config.tuning.max_concurrent_requests,
            config.tuning.body_read_timeout,
            readiness,
        );
        let (local_addr, server) = listen(&config, state.clone(), stop.clone()).await?;
        Ok(App {
            local_addr,
            state,
            background,
            shutdown,
            stop,
            server,
            grace: config.shutdown_grace,
            budget: config.tuning.shutdown_budget,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The e-mail → Slack user directory (absent in dry run).
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.background.directory.as_ref()
    }

    /// Cancelling it starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled, then stops in stages, each bounded, so the
    /// whole stop stays under 25 s (Kubernetes and systemd kill at 30 s):
    /// 1. `/readyz` answers 503 at once, while webhooks are still taken and delivered for
    ///    `SHUTDOWN_GRACE`: a load balancer (a Service's endpoints, kube-proxy) stops sending
    ///    only seconds after the pod began terminating, and a refused POST waits 5 minutes
    ///    for Coder's next attempt;
    /// 2. the listener closes; requests and deliveries in flight finish without starting new
    ///    retries, then the handlers of the envelopes Socket Mode acked (new ones are left
    ///    unacked for Slack to deliver again), then the cards' pending edits are sent at once
    ///    (all until the budget, counted from the shutdown);
    /// 3. Socket Mode closes with close frames (3 s more).
    pub async fn run_until_stopped(self) {
        self.shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + self.budget;
        if !self.grace.is_zero() {
            tracing::info!(
                grace_seconds = self.grace.as_secs_f64(),
                "shutting down: /readyz answers 503; webhooks are still taken for SHUTDOWN_GRACE"
            );
            tokio::time::sleep(self.grace).await;
        }
        tracing::info!("shutting down: the listener closes; finishing deliveries in flight");
        self.stop.cancel();
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
            tracing::warn!("deliveries still in flight after the shutdown budget were abandoned; Coder retries them");
        }
        // Clicks acked just before: Slack will not send them again. Their card edits follow.
        if let Some(socket_mode) = &self.background.socket_mode {
            socket_mode.drain(deadline).await;
        }
        if let Some(sender) = self.background.sender {
            if tokio::time::timeout_at(deadline, sender).await.is_err() {
                tracing::warn!("sends from the outbox still in flight after the shutdown budget were abandoned; they stay in the outbox, and the next start reads Slack back before sending them again");
            }
        }
        if let Some(cards) = &self.background.cards {
            if !cards.drain(deadline).await {
                tracing::warn!("edits of workspaces' cards still pending after the shutdown budget were abandoned; each card catches up with its next change");
            }
        }
        if let Some(socket_mode) = self.background.socket_mode {
            if tokio::time::timeout(SOCKET_MODE_CLOSE_BUDGET, socket_mode.close())
                .await
                .is_err()
            {
                tracing::warn!("Socket Mode connections did not close in time");
            }
        }
        for task in self.background.tasks {
            task.abort();
        }
        tracing::info!("stopped");
    }
}

/// The Slack side: the client, the directory and its refresher, the bot token check,
/// Socket Mode when there is an app-level token, and the delivery that uses them.
fn start_slack(
    config: &Config,
    store: Store,
    metrics: &Metrics,
    stop: &CancellationToken,
    readiness: &Readiness,
) -> Result<(Delivery, Background), String> {
    let proxies = ProxyConfig::from_env()?;
    let api = Arc::new(SlackApi::from_config(config, &proxies, metrics.clone())?);
    let (mut delivery, directory, cards) =
        slack_delivery(api.clone(), store.clone(), config, metrics, stop);
    match config.queue {
        Some(limits) => {
            let outbox = Outbox::new(limits, config.tuning.outbox.clone(), metrics.clone());
            delivery = delivery.with_outbox(Arc::new(outbox));
        }
        None => tracing::warn!("QUEUE_MAX_AGE is 0: store and forward is off, so notifications that meet a Slack outage rely on Coder's retries (about 20 minutes)"),
    }
    let coder = coder_api(config, &proxies, api.has_app_token())?;
    if let Some(coder) = &coder {
        delivery = delivery.with_coder(coder.clone());
    }
    let tasks = vec![
        directory
            .clone()
            .spawn_refresher(config.directory_refresh, stop.clone()),
        spawn_auth_check(api.clone(), readiness.latch(), stop.clone()),
    ];
    let socket_mode = if api.has_app_token() {
        let mut interact = Interact::new(
            api.clone(),
            store,
            cards.clone(),
            metrics.clone(),
            config.coder_url.clone(),
        )
        .with_threads(config.threads);
        if let Some(coder) = coder {
            interact = interact.with_coder(coder);
        }
        let interact = Arc::new(interact);
        let socket_mode = SocketMode::spawn(
            api,
            SocketModeConfig {
                connections: config.socket_mode_connections,
                tuning: config.tuning.socket_mode.clone(),
                proxy: proxies,
            },
            interact,
            metrics.clone(),
        );
        readiness.report_socket_mode(socket_mode.status());
        let wanted = i64::try_from(config.socket_mode_connections).unwrap_or(i64::MAX);
        metrics.socket_connections_wanted.set(wanted);
        Some(socket_mode)
    } else {
        tracing::warn!("SLACK_APP_TOKEN is not set: Socket Mode is off, so Slack shows a warning icon when someone clicks a button");
        None
    };
    let background = Background {
        directory: Some(directory),
        socket_mode,
        cards: Some(cards),
        tasks,
        sender: None,
    };
    Ok((delivery, background))
}

/// Coder's API for the buttons that act, when `CODER_TOKEN` is set and clicks can arrive
/// (Socket Mode: `SLACK_APP_TOKEN`).
fn coder_api(
    config: &Config,
    proxies: &ProxyConfig,
    socket_mode: bool,
) -> Result<Option<Arc<CoderApi>>, String> {
    let (Some(token), Some(url)) = (&config.coder_token, &config.coder_url) else {
        return Ok(None);
    };
    if !socket_mode {
        tracing::warn!("CODER_TOKEN is set but SLACK_APP_TOKEN is not: clicks arrive over Socket Mode, so the buttons that act on Coder are left out");
        return Ok(None);
    }
    let api = CoderApi::new(
        url,
        token.clone(),
        Arc::new(proxies.clone()),
        config.tuning.coder_call_timeout,
        config.tuning.coder_lookup_timeout,
    )?;
    tracing::info!(coder_url = %url, "CODER_TOKEN is set: notifications offer extend, start and keep (run `check` to verify the token)");
    Ok(Some(Arc::new(api)))
}

/// Delivery to Slack through `api`, with the e-mail → user directory it looks people up in
/// and the one path that edits workspaces' cards: what `serve` runs and what `send-test`
/// sends one notification through.
pub(crate) fn slack_delivery(
    api: Arc<SlackApi>,
    store: Store,
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> (Delivery, Arc<Directory>, Arc<CardEdits>) {
    let directory = Arc::new(Directory::new(
        api.clone(),
        config.tuning.negative_cache_ttl,
        // Learned addresses are trusted for two sweeps: if sweeps keep failing, an address
        // reassigned in Slack must not keep going to its previous owner.
        config.directory_refresh.saturating_mul(2),
        metrics.clone(),
    ));
    let cards = CardEdits::new(
        config.tuning.card_edit_delay,
        api.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let delivery = Delivery::slack(
        api,
        directory.clone(),
        cards.clone(),
        store,
        delivery::Policy::from_config(config),
        metrics.clone(),
        shutdown.clone(),
    );
    (delivery, directory, cards)
}

/// `ROUTES_FILE`'s `#name`s turned into channel IDs through Slack, once, before any webhook
/// is taken: a name that is no channel the app can see stops start-up, naming the file, the
/// line and the name. A dry run calls no Slack, so its names stay unresolved.
async fn resolve_routes(mut config: Config, metrics: &Metrics) -> Result<Config, String> {
    let Some(routes) = config.routes.take() else {
        return Ok(config);
    };
    let names = routes.channel_names();
    let routes = if names.is_empty() {
        routes
    } else if config.dry_run {
        tracing::info!(
            ?names,
            "DRY_RUN is on: the routes' #names are not looked up in Slack"
        );
        routes
    } else {
        let api = SlackApi::from_config(&config, &ProxyConfig::from_env()?, metrics.clone())?;
        let ids = api.channel_ids(&names).await.map_err(|e| {
            let remedy = e.remedy().map(|r| format!(": {r}")).unwrap_or_default();
            let path = routes.path().display();
            format!("ROUTES_FILE {path}: cannot look its #names up in Slack ({e}){remedy}")
        })?;
        Arc::new(
            Routes::clone(&routes)
                .resolved(&ids)
                .map_err(|e| e.to_string())?,
        )
    };
    for route in routes.iter() {
        tracing::info!(
            file = %routes.path().display(),
            route = %route,
            channel = %route.channel,
            dm = route.dm,
            collapse = %crate::duration::human(route.collapse),
            "route"
        );
    }
    config.routes = Some(routes);
    Ok(config)
}

/// Opens `DATABASE_URL` (an in-memory database when nothing needs one: a dry run).
async fn open_store(config: &Config) -> Result<Store, String> {
    let store = Store::open(&config.database)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let health = store
        .health()
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    tracing::info!(
        database = %config.database.shown(),
        schema_version = health.schema_version,
        "store open"
    );
    Ok(store)
}

/// Binds `LISTEN_ADDR` and serves the HTTP routes until `stop`.
async fn listen(
    config: &Config,
    state: Arc<http::State>,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on LISTEN_ADDR {}: {e}", config.listen_addr))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listener's address: {e}"))?;
    let limits = server::Limits {
        max_connections: config.tuning.max_connections,
        header_read_timeout: config.tuning.header_read_timeout,
    };
    let server = tokio::spawn(server::serve(listener, http::routes(state), limits, stop));
    tracing::info!(%local_addr, "listening for Coder's webhook on POST /v1/webhook");
    Ok((local_addr, server))
}

/// Verifies the bot token with `auth.test` until it works, then releases the readiness latch.
fn spawn_auth_check(
    api: Arc<SlackApi>,
    verified: impl FnOnce() + Send + 'static,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Even a refused token is tried again (slowly): the log says what to fix meanwhile.
        let keep_trying = |e: &SlackError| match e.verdict() {
            Verdict::Stop => Verdict::Backoff,
            verdict => verdict,
        };
        let checked = Retry::new(Duration::from_secs(1), Duration::from_secs(60))
            .until(shutdown)
            .run(keep_trying, || async {
                let result = api.auth_test().await;
                if let Err(e) = &result {
                    log_auth_failure(e);
                }
                result
            })
            .await;
        if let Ok(info) = checked {
            tracing::info!(team = %info.team, bot = %info.user, "Slack bot token verified");
            verified();
        }
    })
}

fn log_auth_failure(e: &SlackError) {
    match (e.class(), e.remedy()) {
        (ErrorClass::Configuration, Some(remedy)) => {
            tracing::error!(error = %e, "Slack rejected the bot token: {remedy}")
        }
        _ => tracing::warn!(error = %e, "cannot reach Slack to verify the bot token; retrying"),
    }
}
