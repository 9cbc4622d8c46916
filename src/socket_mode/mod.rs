//! Socket Mode: the outbound websocket that carries button clicks.
//!
//! A supervisor runs `connections` keepers, each keeping one connection open. Each asks [`OpenConnection`] for a fresh
//! single-use URL, connects (through the proxy [`ProxyConfig`] picks, TLS for `wss`), waits for
//! `hello`, then serves frames: envelopes are acked as soon as they are read and handled in
//! their own tasks, once per envelope id, at most `max_handlers` at a time, each tracked so a
//! shutdown lets the acked ones finish ([`SocketMode::drain`]) before the sockets close
//! ([`SocketMode::close`]). `disconnect` (`warning`, `refresh_requested`) makes the
//! keeper open a replacement that has received `hello` before it closes the old socket. Dead or
//! silent connections are replaced with full-jitter backoff.
//!
//! Layout: [`envelope`] parses frames, [`handler`] is what runs after the ack, [`tunnel`] is the
//! transport (proxy, TLS, websocket handshake), `connection` is one connection's loop.

mod connection;
pub mod envelope;
pub mod handler;
pub mod tunnel;

pub use envelope::{DisconnectReason, Envelope, Frame};
pub use handler::{DefaultHandler, EnvelopeHandler, BRIDGE_ACTION_PREFIX};
pub use tunnel::ProxyConfig;

use crate::retry::{Retry, Verdict};
use crate::telemetry::Metrics;
use connection::{ConnEvent, ConnHandle, Shared};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Slack allows up to 10 Socket Mode connections per app.
pub const MAX_CONNECTIONS: usize = 10;

/// Intervals with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a new connection may take to send `hello`.
    pub hello_timeout: Duration,
    /// How often the client pings.
    pub ping_interval: Duration,
    /// A connection without any frame for this long is replaced.
    pub stale_after: Duration,
    /// Reconnect backoff: the first ceiling, doubling up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A connection that lived this long after `hello` resets the backoff.
    pub healthy_after: Duration,
    /// Bound on each network step: TCP connect, proxy CONNECT, TLS, websocket handshake,
    /// `apps.connections.open`, sending a frame, waiting for the answer to a close frame.
    pub io_timeout: Duration,
    /// How long envelope ids are remembered to handle redeliveries once.
    pub dedupe_ttl: Duration,
    /// Envelopes handled at once (each may make Slack and Coder calls); more wait their turn.
    pub max_handlers: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(45),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(30),
            io_timeout: Duration::from_secs(10),
            dedupe_ttl: Duration::from_secs(600),
            max_handlers: 16,
        }
    }
}

/// Gets a Socket Mode URL.
pub trait OpenConnection: Send + Sync + 'static {
    /// Calls apps.connections.open with the app-level token; returns the single-use wss URL.
    fn open(&self) -> BoxFuture<'_, Result<url::Url, OpenError>>;
}

/// Why no URL could be had. The variant is decided where the error is made, from what
/// failed: only [`OpenError::Auth`] blames the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// Slack refused the app-level token (or it is not set): retrying cannot help.
    #[error("Slack rejected SLACK_APP_TOKEN: {0}")]
    Auth(String),
    /// Slack asked to wait this long (a 429).
    #[error("apps.connections.open is rate-limited (retry after {0:?})")]
    RateLimited(Duration),
    /// Slack answered with another error code.
    #[error("apps.connections.open failed: {0}")]
    Api(String),
    /// The request or its answer did not get through: network, proxy, TLS, timeout.
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Other(String),
}

impl OpenError {
    /// Whether retrying cannot help until the token is fixed.
    pub fn is_auth(&self) -> bool {
        matches!(self, OpenError::Auth(_))
    }
}

/// What the supervisor needs besides the opener, handler and metrics.
#[derive(Debug, Clone)]
pub struct SocketModeConfig {
    /// Concurrent connections, 1–10 (clamped).
    pub connections: usize,
    pub tuning: Timing,
    /// Passed explicitly (use [`ProxyConfig::from_env`] in production).
    pub proxy: ProxyConfig,
}

/// The connection counts, shared by the connections that update them and whoever reports
/// them (`/readyz`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<StatusCounts>);

#[derive(Debug, Default)]
struct StatusCounts {
    open: AtomicUsize,
    ever_connected: AtomicBool,
}

impl Status {
    pub fn state(&self) -> SocketModeState {
        SocketModeState {
            connections_open: self.0.open.load(Ordering::SeqCst),
            ever_connected: self.0.ever_connected.load(Ordering::SeqCst),
        }
    }

    /// A connection received hello.
    pub(crate) fn opened(&self) {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        self.0.ever_connected.store(true, Ordering::SeqCst);
    }

    /// A connection that had hello ended; returns how many are still open.
    pub(crate) fn closed(&self) -> usize {
        self.0.open.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
    }
}

/// What `/readyz` reports of Socket Mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SocketModeState {
    /// Connections that have received `hello` and are still open.
    pub connections_open: usize,
    /// Whether any connection has ever received `hello`.
    pub ever_connected: bool,
}

/// The running supervisor. Stop it with [`SocketMode::drain`], then [`SocketMode::close`];
/// dropped, its keepers stop too.
pub struct SocketMode {
    shared: Arc<Shared>,
    /// One task per connection kept open.
    keepers: Vec<JoinHandle<()>>,
}

impl SocketMode {
    /// Starts the keepers; they run until [`SocketMode::close`] (or the supervisor is dropped).
    pub fn spawn(
        opener: Arc<dyn OpenConnection>,
        config: SocketModeConfig,
        handler: Arc<dyn EnvelopeHandler>,
        metrics: Metrics,
    ) -> SocketMode {
        let connections = config.connections.clamp(1, MAX_CONNECTIONS);
        if connections != config.connections {
            tracing::warn!(
                asked = config.connections,
                using = connections,
                "Socket Mode connections must be 1–{MAX_CONNECTIONS}"
            );
        }
        let tuning = config.tuning;
        let seen = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(tuning.dedupe_ttl)
            .build();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            stop: stop.clone(),
            handler,
            metrics,
            handler_permits: Arc::new(Semaphore::new(tuning.max_handlers.max(1))),
            tuning,
            seen,
            status: Status::default(),
            connections: TaskTracker::new(),
            handlers: TaskTracker::new(),
            draining: AtomicBool::new(false),
        });
        let next_id = Arc::new(AtomicU64::new(1));
        let proxy = Arc::new(config.proxy);
        let keepers = (0..connections)
            .map(|index| {
                let keeper = Keeper {
                    shared: shared.clone(),
                    opener: opener.clone(),
                    proxy: proxy.clone(),
                    stop: stop.clone(),
                    next_id: next_id.clone(),
                };
                let span = tracing::info_span!("socket_mode", keeper = index);
                tokio::spawn(keeper.run().instrument(span))
            })
            .collect();
        SocketMode { shared, keepers }
    }

    pub fn state(&self) -> SocketModeState {
        self.shared.status.state()
    }

    /// A handle on the connection counts that outlives this supervisor.
    pub fn status(&self) -> Status {
        self.shared.status.clone()
    }

    /// The first step of a stop: envelopes are no longer acked (an ack promises the work is
    /// done; one left unacked is delivered again by Slack, to another connection or to the
    /// next bridge), and the handlers of those acked already finish, until `until`. Whether
    /// they all did; those still running then are abandoned with a warning.
    pub async fn drain(&self, until: Instant) -> bool {
        self.shared.draining.store(true, Ordering::SeqCst);
        let handlers = &self.shared.handlers;
        handlers.close();
        let running = handlers.len();
        if running > 0 {
            tracing::info!(
                running,
                "waiting for the clicks and events acked before the shutdown"
            );
        }
        let drained = tokio::time::timeout_at(until, handlers.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                abandoned = handlers.len(),
                "Socket Mode envelopes acked before the shutdown were still being handled when its budget ran out; they are lost"
            );
        }
        drained
    }

    /// Closes every socket with a normal close frame (each bounded by `io_timeout`) and waits
    /// for the keepers and connections to end.
    pub async fn close(mut self) {
        self.shared.stop.cancel();
        for keeper in std::mem::take(&mut self.keepers) {
            if let Err(e) = keeper.await {
                tracing::error!(error = %e, "Socket Mode keeper task failed");
            }
        }
        let tracker = &self.shared.connections;
        tracker.close();
        let bound = self.shared.tuning.io_timeout.saturating_mul(2) + Duration::from_millis(100);
        if tokio::time::timeout(bound, tracker.wait()).await.is_err() {
            tracing::warn!("Socket Mode connections did not close in time");
        }
    }
}

/// How serving a connection ended, from its keeper's point of view.
enum Next {
    /// Replace it, keeping it open until the replacement has hello.
    Replace,
    /// Socket Mode was switched off: wait long.
    LinkDisabled,
    /// It is gone: back off.
    Gone,
    Shutdown,
}

/// Slack switched Socket Mode off for this app: say what to fix, close the connection.
async fn link_disabled(conn: ConnHandle) {
    tracing::error!(
        "Slack disabled Socket Mode for this app (link_disabled): Socket Mode was \
         switched off in the Slack app's settings (Settings → Socket Mode), or \
         SLACK_APP_TOKEN belongs to an app without it; button clicks will not \
         arrive. Retrying slowly."
    );
    conn.close().await;
}

/// One of the `connections` supervisors: keeps one connection open.
struct Keeper {
    shared: Arc<Shared>,
    opener: Arc<dyn OpenConnection>,
    proxy: Arc<ProxyConfig>,
    stop: CancellationToken,
    next_id: Arc<AtomicU64>,
}

impl Keeper {
    async fn run(self) {
        let tuning = self.shared.tuning.clone();
        let mut retry =
            Retry::new(tuning.backoff_base, tuning.backoff_max).until(self.stop.clone());
        let mut old: Option<ConnHandle> = None;
        let mut first = true;
        tracing::debug!("Socket Mode keeper starting");
        while let Some(conn) = self.establish_retrying(&mut retry).await {
            if !first {
                self.shared.metrics.socket_reconnects.inc();
            }
            first = false;
            tracing::info!(connection = conn.id, "Socket Mode connected");
            if let Some(replaced) = old.take() {
                let end = replaced.close().await;
                tracing::debug!(connection_ended = %end, "replaced Socket Mode connection closed");
            }
            let (next, conn) = self.serve(conn).await;
            if conn.was_healthy(tuning.healthy_after) {
                retry.reset();
            }
            let wait = match next {
                Next::Shutdown => {
                    conn.close().await;
                    break;
                }
                Next::Replace => self.replace_later(conn, &mut old, tuning.healthy_after),
                Next::LinkDisabled => {
                    link_disabled(conn).await;
                    // Retry slowly: this wait and the following ones at the ceiling.
                    retry.saturate();
                    Some(Verdict::After(tuning.backoff_max))
                }
                Next::Gone => {
                    let id = conn.id;
                    let end = conn.finish().await;
                    tracing::warn!(connection = id, reason = %end, "Socket Mode connection lost; reconnecting");
                    Some(Verdict::Backoff)
                }
            };
            if let Some(verdict) = wait {
                if !retry.wait(verdict).await {
                    break;
                }
            }
        }
        if let Some(replaced) = old.take() {
            replaced.close().await;
        }
        tracing::debug!("Socket Mode keeper stopped");
    }

    /// Keeps `conn` open (and acking) until its replacement has hello. One asked to go soon
    /// after its own hello is replaced after a backoff step, or a Slack that keeps asking
    /// would get a tight loop.
    fn replace_later(
        &self,
        conn: ConnHandle,
        old: &mut Option<ConnHandle>,
        healthy_after: Duration,
    ) -> Option<Verdict> {
        let healthy = conn.was_healthy(healthy_after);
        *old = Some(conn);
        (!healthy).then_some(Verdict::Backoff)
    }

    /// Serves `conn` until it needs replacing or ends; the connection task acks on its own.
    async fn serve(&self, mut conn: ConnHandle) -> (Next, ConnHandle) {
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return (Next::Shutdown, conn),
                event = conn.events.recv() => event,
            };
            match event {
                None => return (Next::Gone, conn),
                Some(ConnEvent::Hello) => {}
                Some(ConnEvent::Disconnect(DisconnectReason::LinkDisabled)) => {
                    return (Next::LinkDisabled, conn)
                }
                Some(ConnEvent::Disconnect(reason)) => {
                    tracing::info!(
                        ?reason,
                        "replacing Socket Mode connection at Slack's request"
                    );
                    return (Next::Replace, conn);
                }
            }
        }
    }

    /// Opens connections until one receives hello, backing off between failures (a 429
    /// waits its `Retry-After`). `None` on shutdown.
    async fn establish_retrying(&self, retry: &mut Retry) -> Option<ConnHandle> {
        loop {
            let error = tokio::select! {
                _ = self.stop.cancelled() => return None,
                attempt = self.establish() => match attempt {
                    Ok(conn) => return Some(conn),
                    Err(e) => e,
                },
            };
            let verdict = match &error {
                EstablishError::Open(OpenError::RateLimited(after)) => Verdict::After(*after),
                _ => Verdict::Backoff,
            };
            match &error {
                EstablishError::Open(e) if e.is_auth() => tracing::error!(
                    error = %e,
                    "configuration error: Slack rejected SLACK_APP_TOKEN for apps.connections.open \
                     (it must be the app-level xapp-… token with connections:write); retrying with backoff"
                ),
                _ => tracing::warn!(error = %error, "Socket Mode connection failed; retrying"),
            }
            if !retry.wait(verdict).await {
                return None;
            }
        }
    }

    /// One attempt: a fresh URL, the websocket, then hello.
    async fn establish(&self) -> Result<ConnHandle, EstablishError> {
        let io_timeout = self.shared.tuning.io_timeout;
        let url = tokio::time::timeout(io_timeout, self.opener.open())
            .await
            .map_err(|_| {
                EstablishError::Open(OpenError::Other(
                    "apps.connections.open timed out".to_owned(),
                ))
            })?
            .map_err(EstablishError::Open)?;
        let ws = tunnel::connect(&url, &self.proxy, io_timeout)
            .await
            .map_err(|e| EstablishError::Connect(e.to_string()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conn = connection::spawn(ws, self.shared.clone(), id);
        // The connection enforces hello_timeout itself and then ends (events → None).
        match conn.events.recv().await {
            Some(ConnEvent::Hello) => {
                conn.hello_at = Some(Instant::now());
                Ok(conn)
            }
            Some(ConnEvent::Disconnect(reason)) => {
                conn.close().await;
                Err(EstablishError::Connect(format!(
                    "Slack sent disconnect ({reason:?}) before hello"
                )))
            }
            None => Err(EstablishError::Connect(format!(
                "connection ended before hello: {}",
                conn.finish().await
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EstablishError {
    #[error("{0}")]
    Open(OpenError),
    #[error("{0}")]
    Connect(String),
}

/// Connects once to `url` and waits for `hello`, then closes normally: what `check` uses to
/// prove Socket Mode is reachable through the firewall and proxy. Every step is bounded, so a
/// proxy or server that stalls cannot hang `check`.
pub async fn probe(url: &url::Url, proxies: &ProxyConfig, tuning: &Timing) -> Result<(), String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = tunnel::connect(url, proxies, tuning.io_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(tuning.hello_timeout, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    if let Ok(Frame::Hello { .. }) = envelope::parse_frame(&text) {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("websocket error: {e}")),
            }
        }
        Err("Slack closed the connection before hello".to_owned())
    })
    .await
    .unwrap_or_else(|_| Err("no hello within the hello timeout".to_owned()));
    // `close` sends the close frame and flushes it; a peer that stopped reading would keep
    // that pending forever, so it is bounded and the socket is then dropped.
    let _ = tokio::time::timeout(tuning.io_timeout, socket.close(None)).await;
    hello
}

impl Drop for SocketMode {
    fn drop(&mut self) {
        // Whoever spawned the keepers owns their end.
        self.shared.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_defaults() {
        let t = Timing::default();
        assert_eq!(t.hello_timeout, Duration::from_secs(10));
        assert_eq!(t.stale_after, Duration::from_secs(45));
        assert_eq!(t.backoff_max, Duration::from_secs(60));
        assert_eq!(t.max_handlers, 16);
    }
}
