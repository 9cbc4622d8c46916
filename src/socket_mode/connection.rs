//! One Socket Mode connection: reads frames, acks envelopes at once, hands them to the handler
//! in their own (tracked, bounded) tasks, pings, and notices when the other side has gone
//! quiet.

use super::envelope::{ack_text, parse_frame, DisconnectReason, Envelope, Frame};
use super::handler::EnvelopeHandler;
use super::tunnel::WsStream;
use super::Timing;
use crate::telemetry::{EnvelopeLabels, Metrics};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// What every connection of one supervisor shares.
pub(crate) struct Shared {
    /// Cancelled when Socket Mode stops.
    pub stop: tokio_util::sync::CancellationToken,
    pub handler: Arc<dyn EnvelopeHandler>,
    /// One per handler running: `tuning.max_handlers` in all.
    pub handler_permits: Arc<Semaphore>,
    pub metrics: Metrics,
    pub tuning: Timing,
    /// Envelope ids seen recently, across all connections: redeliveries are acked, not handled.
    pub seen: moka::future::Cache<String, ()>,
    /// Connections that have received hello and are still open.
    pub status: super::Status,
    /// Connection tasks, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// Handlers of acked envelopes (waiting for a permit or running), so shutdown can wait
    /// for them: Slack does not deliver an acked envelope again.
    pub handlers: TaskTracker,
    /// Set when a shutdown begins: envelopes are left unacked from then on.
    pub draining: AtomicBool,
}

/// What a connection tells its keeper.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Hello,
    Disconnect(DisconnectReason),
}

/// Why a connection's task ended.
#[derive(Debug)]
pub(crate) enum EndReason {
    /// We closed it (replaced, shut down, or its handle was dropped).
    ClosedByUs,
    /// The server closed it, or the TCP connection ended.
    ClosedByServer,
    HelloTimeout,
    Stale,
    Error(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::ClosedByUs => f.write_str("closed by the bridge"),
            EndReason::ClosedByServer => f.write_str("closed by Slack"),
            EndReason::HelloTimeout => f.write_str("no hello in time"),
            EndReason::Stale => f.write_str("no frame in time (stale)"),
            EndReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The keeper's side of a running connection.
pub(crate) struct ConnHandle {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<ConnEvent>,
    /// When it received hello (set by the keeper).
    pub hello_at: Option<Instant>,
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<EndReason>,
    close_wait: Duration,
}

impl ConnHandle {
    /// Whether it has lived long enough after hello to count as healthy.
    pub fn was_healthy(&self, healthy_after: Duration) -> bool {
        self.hello_at
            .is_some_and(|at| at.elapsed() >= healthy_after)
    }

    /// Waits for the task to end by itself (after `events` returned `None`).
    pub async fn finish(self) -> EndReason {
        self.task
            .await
            .unwrap_or_else(|e| EndReason::Error(format!("connection task failed: {e}")))
    }

    /// Sends a normal close frame and waits (bounded) for the task to end.
    pub async fn close(mut self) -> EndReason {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let abort = self.task.abort_handle();
        match tokio::time::timeout(self.close_wait, &mut self.task).await {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => EndReason::Error(format!("connection task failed: {e}")),
            Err(_) => {
                abort.abort();
                EndReason::Error("close took too long".to_owned())
            }
        }
    }
}

/// Starts serving `ws` in a task of its own.
pub(crate) fn spawn(ws: WsStream, shared: Arc<Shared>, id: u64) -> ConnHandle {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (close, close_rx) = oneshot::channel();
    // Sending the close frame and waiting for its answer are each bounded by io_timeout.
    let close_wait = shared.tuning.io_timeout.saturating_mul(2) + Duration::from_millis(100);
    let span = tracing::info_span!("socket_mode_connection", connection = id);
    let task = shared
        .connections
        .spawn(run(ws, shared.clone(), events_tx, close_rx).instrument(span));
    ConnHandle {
        id,
        events,
        hello_at: None,
        close: Some(close),
        task,
        close_wait,
    }
}

/// Counts a connection as open from hello until it is dropped.
struct OpenGuard {
    shared: Arc<Shared>,
}

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.status.opened();
        shared.metrics.socket_connections_open.inc();
        OpenGuard { shared }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let still_open = self.shared.status.closed();
        self.shared.metrics.socket_connections_open.dec();
        if still_open == 0 && !self.shared.stop.is_cancelled() {
            tracing::warn!("no Socket Mode connection is open: DMs still go out, but button clicks are not acknowledged until one is");
        }
    }
}

async fn run(
    ws: WsStream,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ConnEvent>,
    mut close_rx: oneshot::Receiver<()>,
) -> EndReason {
    let tuning = shared.tuning.clone();
    let started = Instant::now();
    let hello_deadline = started + tuning.hello_timeout;
    let mut last_frame = started;
    let mut ping = tokio::time::interval_at(started + tuning.ping_interval, tuning.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn = Connection {
        ws,
        shared,
        events,
        open: None,
    };

    loop {
        let stale_at = last_frame + tuning.stale_after;
        let deadline = if conn.open.is_none() {
            stale_at.min(hello_deadline)
        } else {
            stale_at
        };
        let step = tokio::select! {
            biased;
            // A close request, or the keeper dropped its handle: close either way.
            _ = &mut close_rx => {
                close_gracefully(&mut conn.ws, tuning.io_timeout, true).await;
                return EndReason::ClosedByUs;
            }
            frame = conn.ws.next() => match frame {
                None => Err(EndReason::ClosedByServer),
                Some(Err(e)) => Err(EndReason::Error(describe(&e))),
                Some(Ok(message)) => {
                    last_frame = Instant::now();
                    conn.on_message(message).await
                }
            },
            _ = ping.tick() => {
                let ping = conn.ws.send(Message::Ping(Default::default()));
                bounded(tuning.io_timeout, "sending ping", ping).await
            }
            _ = tokio::time::sleep_until(deadline) => {
                let end = if conn.open.is_none() && Instant::now() >= hello_deadline {
                    EndReason::HelloTimeout
                } else {
                    EndReason::Stale
                };
                // The peer is not listening: do not wait for its answer to our close.
                close_gracefully(&mut conn.ws, tuning.io_timeout.min(Duration::from_secs(1)), false).await;
                Err(end)
            }
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// One connection's state while it serves.
struct Connection {
    ws: WsStream,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ConnEvent>,
    /// Present from hello on: counts the connection as open.
    open: Option<OpenGuard>,
}

impl Connection {
    async fn on_message(&mut self, message: Message) -> Result<(), EndReason> {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(bytes) => {
                tracing::warn!(bytes = bytes.len(), "skipping binary Socket Mode frame");
                Ok(())
            }
            // tungstenite queued the pong; send it now.
            Message::Ping(_) => {
                let io_timeout = self.shared.tuning.io_timeout;
                bounded(io_timeout, "sending pong", self.ws.flush()).await
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => {
                // tungstenite answers it; the stream ends after that.
                tracing::debug!("Slack sent a close frame");
                Ok(())
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), EndReason> {
        match parse_frame(text) {
            Ok(Frame::Hello { num_connections }) if self.open.is_none() => {
                tracing::debug!(?num_connections, "Socket Mode hello");
                self.open = Some(OpenGuard::new(self.shared.clone()));
                let _ = self.events.send(ConnEvent::Hello);
            }
            Ok(Frame::Hello { .. }) => tracing::debug!("second hello ignored"),
            Ok(Frame::Disconnect { reason }) => {
                tracing::info!(?reason, "Slack asked to disconnect");
                let _ = self.events.send(ConnEvent::Disconnect(reason));
            }
            Ok(Frame::Envelope(envelope)) => {
                // Counted as handled work before the drain is asked about, so a drain that
                // begins meanwhile waits for this envelope once it is acked.
                let in_flight = self.shared.handlers.token();
                if self.shared.draining.load(Ordering::SeqCst) {
                    tracing::debug!(
                        envelope_type = envelope.metric_label(),
                        "Socket Mode envelope left unacked while stopping: Slack delivers it again"
                    );
                    return Ok(());
                }
                let io_timeout = self.shared.tuning.io_timeout;
                ack(&mut self.ws, &envelope, io_timeout, &self.shared.metrics)
                    .await
                    .map_err(EndReason::Error)?;
                dispatch(&self.shared, envelope, in_flight).await;
            }
            Ok(Frame::Unknown { kind }) => {
                tracing::debug!(frame_type = %kind, "skipping Socket Mode frame of unknown type");
            }
            Err(e) => {
                tracing::warn!(error = %e, bytes = text.len(), "skipping malformed Socket Mode frame");
            }
        }
        Ok(())
    }
}

/// A websocket write bounded by `io_timeout`; its failure ends the connection.
async fn bounded(
    io_timeout: Duration,
    what: &str,
    write: impl std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
) -> Result<(), EndReason> {
    match tokio::time::timeout(io_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(EndReason::Error(describe(&e))),
        Err(_) => Err(EndReason::Error(format!("{what} timed out"))),
    }
}

/// Acks `envelope` and counts the ack.
async fn ack(
    ws: &mut WsStream,
    envelope: &Envelope,
    io_timeout: Duration,
    metrics: &Metrics,
) -> Result<(), String> {
    let message = Message::text(ack_text(&envelope.envelope_id));
    match tokio::time::timeout(io_timeout, ws.send(message)).await {
        Ok(Ok(())) => {
            metrics
                .socket_envelopes_acked
                .get_or_create(&EnvelopeLabels {
                    r#type: envelope.metric_label().to_owned(),
                })
                .inc();
            Ok(())
        }
        Ok(Err(e)) => Err(format!("sending ack: {}", describe(&e))),
        Err(_) => Err("sending ack timed out".to_owned()),
    }
}

/// Runs the handler in its own tracked task, unless this envelope id was handled recently.
async fn dispatch(shared: &Arc<Shared>, envelope: Envelope, in_flight: TaskTrackerToken) {
    let fresh = shared
        .seen
        .entry(envelope.envelope_id.clone())
        .or_insert(())
        .await
        .is_fresh();
    if !fresh {
        tracing::debug!(
            envelope_type = envelope.metric_label(),
            retry_attempt = ?envelope.retry_attempt,
            "redelivered envelope acked again, not handled again"
        );
        return;
    }
    let handler = shared.handler.clone();
    let permits = shared.handler_permits.clone();
    let handle = async move {
        // At the bound (a burst of App Home opens, say), the envelope, acked already, waits
        // here for a running handler to finish: Slack got its ack in time, only the work
        // starts later, and a shutdown waits for it like for any other.
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        handler.handle(envelope).await;
        drop(in_flight);
    };
    shared
        .handlers
        .spawn(handle.instrument(tracing::Span::current()));
}

/// Sends a normal close frame; with `wait_for_answer`, reads (bounded) until the other side
/// answers or the stream ends.
async fn close_gracefully(ws: &mut WsStream, io_timeout: Duration, wait_for_answer: bool) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    match tokio::time::timeout(io_timeout, ws.close(Some(frame))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %describe(&e), "sending close frame failed");
            return;
        }
        Err(_) => {
            tracing::debug!("sending close frame timed out");
            return;
        }
    }
    if !wait_for_answer {
        return;
    }
    // Reading on lets tungstenite finish the closing handshake; the stream ends after it.
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    if tokio::time::timeout(io_timeout, drain).await.is_err() {
        tracing::debug!("no answer to our close frame in time");
    }
}

/// A websocket error without content from frames or URLs.
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(io) => format!("I/O: {}", io.kind()),
        Error::Protocol(p) => format!("protocol: {p}"),
        Error::Capacity(c) => format!("capacity: {c}"),
        Error::ConnectionClosed => "connection closed".to_owned(),
        Error::AlreadyClosed => "already closed".to_owned(),
        Error::Utf8(_) => "text frame is not UTF-8".to_owned(),
        _ => "websocket error".to_owned(),
    }
}
