//! A fake Slack Socket Mode server on loopback, its frames (`hello`, `disconnect`, envelopes),
//! and a fake `apps.connections.open` for the client alone (`FakeOpener`).

use coder_slack_bridge::socket_mode::{OpenConnection, OpenError};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

/// What the fake server saw or did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Accepted(usize),
    HelloSent(usize),
    /// The client acked `envelope_id` on connection `n`.
    Ack(usize, String),
    /// Any other text from the client.
    Text(usize, String),
    Ping(usize),
    Pong(usize),
    /// The client sent a close frame with this code.
    CloseFrame(usize, Option<u16>),
    /// The connection ended (after a close, an error, or a drop by the test).
    Ended(usize),
}

/// Commands the test sends to one server-side connection.
#[derive(Debug)]
pub enum Cmd {
    Send(Message),
    /// Stop reading and writing (no pongs, no frames), keep the TCP connection open.
    GoSilent,
    /// Drop the TCP connection without a close frame.
    DropAbruptly,
}

/// A server-side connection's number and command channel.
type ConnControl = (usize, mpsc::UnboundedSender<Cmd>);

#[derive(Clone)]
pub struct FakeSocketServer {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    conns: Arc<Mutex<Vec<ConnControl>>>,
    /// Connections (by `n`) that get no automatic hello: the test sends it.
    hold_hello: Arc<Mutex<HashSet<usize>>>,
    /// URLs' `n` values that were used more than once.
    reused: Arc<Mutex<Vec<usize>>>,
    /// What every connection does right after its hello, when set.
    after_hello: Arc<Mutex<Option<AfterHello>>>,
    /// Bumped by `drop_all`; every connection open at that moment goes (a watch never misses
    /// a change, whatever the connection was doing, even mid-handshake).
    generation: Arc<watch::Sender<u64>>,
}

/// A misbehaving Slack: what each connection does as soon as it has sent hello.
#[derive(Debug, Clone)]
pub enum AfterHello {
    /// Sends this frame (e.g. a disconnect).
    Send(String),
    /// Drops the TCP connection.
    Drop,
}

impl FakeSocketServer {
    pub async fn start() -> FakeSocketServer {
        // The clients tested against it may speak TLS (wss through a proxy).
        super::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeSocketServer {
            addr,
            log: Arc::default(),
            conns: Arc::default(),
            hold_hello: Arc::default(),
            reused: Arc::default(),
            after_hello: Arc::default(),
            generation: Arc::new(watch::Sender::new(0)),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                // Subscribed at accept, so a drop_all after the TCP accept reaches it.
                let mut dropped = server.generation.subscribe();
                dropped.mark_unchanged();
                let server = server.clone();
                tokio::spawn(async move { server.serve(tcp, dropped).await });
            }
        });
        fake
    }

    /// `ws://ADDR/link`: a URL for `apps.connections.open` to hand out.
    pub fn url(&self) -> String {
        format!("ws://{}/link", self.addr)
    }

    /// Drops every open connection abruptly (no close frame).
    pub fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Every connection from now on does `what` right after its hello.
    pub fn after_hello(&self, what: AfterHello) {
        *self.after_hello.lock().unwrap() = Some(what);
    }

    /// Don't send hello automatically on connection `n`.
    pub fn hold_hello(&self, n: usize) {
        self.hold_hello.lock().unwrap().insert(n);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn has_seen(&self, what: &Seen) -> bool {
        self.seen().contains(what)
    }

    /// When `what` was first seen.
    pub fn when(&self, what: &Seen) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s)| s == what)
            .map(|(at, _)| *at)
    }

    pub fn position(&self, what: &Seen) -> Option<usize> {
        self.seen().iter().position(|s| s == what)
    }

    pub fn acks(&self) -> Vec<(usize, String)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Ack(n, id) => Some((n, id)),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
        self.seen().iter().filter(|s| pred(s)).count()
    }

    pub fn accepted(&self) -> usize {
        self.count(|s| matches!(s, Seen::Accepted(_)))
    }

    pub fn reused_urls(&self) -> Vec<usize> {
        self.reused.lock().unwrap().clone()
    }

    /// Sends a command to connection `n` (the latest, when a URL was used again).
    pub fn cmd(&self, n: usize, cmd: Cmd) {
        let conns = self.conns.lock().unwrap();
        let (_, tx) = conns
            .iter()
            .rev()
            .find(|(k, _)| *k == n)
            .unwrap_or_else(|| panic!("no connection {n}"));
        tx.send(cmd).unwrap();
    }

    pub fn send_text(&self, n: usize, text: impl Into<String>) {
        self.cmd(n, Cmd::Send(Message::text(text.into())));
    }

    pub fn send_hello(&self, n: usize) {
        self.send_text(n, hello());
    }

    fn record(&self, seen: Seen) {
        self.log.lock().unwrap().push((Instant::now(), seen));
    }

    async fn serve(self, tcp: TcpStream, mut dropped: watch::Receiver<u64>) {
        let path = Arc::new(Mutex::new(String::new()));
        let path_in_callback = path.clone();
        #[allow(clippy::result_large_err)] // the signature is tungstenite's
        let callback = move |req: &Request, resp: Response| {
            *path_in_callback.lock().unwrap() = req.uri().to_string();
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let uri = path.lock().unwrap().clone();
        let n: usize = uri
            .split("n=")
            .nth(1)
            .and_then(|v| v.split('&').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut conns = self.conns.lock().unwrap();
            if conns.iter().any(|(k, _)| *k == n) {
                self.reused.lock().unwrap().push(n);
            }
            conns.push((n, tx));
        }
        self.record(Seen::Accepted(n));
        if !self.hold_hello.lock().unwrap().contains(&n) {
            // Recorded before the write: the client may act on it before `send` returns.
            self.record(Seen::HelloSent(n));
            if ws.send(Message::text(hello())).await.is_err() {
                return;
            }
            let after_hello = self.after_hello.lock().unwrap().clone();
            let went_on = match after_hello {
                None => true,
                Some(AfterHello::Drop) => false,
                Some(AfterHello::Send(text)) => ws.send(Message::text(text)).await.is_ok(),
            };
            if !went_on {
                drop(ws);
                self.record(Seen::Ended(n));
                return;
            }
        }
        let mut silent = false;
        loop {
            tokio::select! {
                _ = dropped.changed() => break, // abrupt: no close frame
                cmd = rx.recv() => match cmd {
                    None | Some(Cmd::DropAbruptly) => break,
                    Some(Cmd::GoSilent) => silent = true,
                    Some(Cmd::Send(message)) => {
                        let is_hello = matches!(&message, Message::Text(t) if t.as_str().contains("\"hello\""));
                        if is_hello {
                            self.record(Seen::HelloSent(n));
                        }
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                },
                message = ws.next(), if !silent => match message {
                    None | Some(Err(_)) => break,
                    Some(Ok(Message::Text(text))) => {
                        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                        match value.get("envelope_id").and_then(|v| v.as_str()) {
                            Some(id) => self.record(Seen::Ack(n, id.to_owned())),
                            None => self.record(Seen::Text(n, text.to_string())),
                        }
                    }
                    Some(Ok(Message::Ping(_))) => self.record(Seen::Ping(n)),
                    Some(Ok(Message::Pong(_))) => self.record(Seen::Pong(n)),
                    Some(Ok(Message::Close(frame))) => {
                        self.record(Seen::CloseFrame(n, frame.map(|f| u16::from(f.code))));
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        drop(ws);
        self.record(Seen::Ended(n));
    }
}

pub fn hello() -> String {
    r#"{"type":"hello","num_connections":1,"debug_info":{"host":"fake"},"connection_info":{"app_id":"A1"}}"#.to_owned()
}

pub fn disconnect(reason: &str) -> String {
    format!(r#"{{"type":"disconnect","reason":"{reason}","debug_info":{{"host":"fake"}}}}"#)
}

pub fn envelope(id: &str, kind: &str, payload: serde_json::Value) -> String {
    serde_json::json!({
        "envelope_id": id,
        "type": kind,
        "payload": payload,
        "accepts_response_payload": false,
    })
    .to_string()
}

/// Hands out `ws://HOST:PORT/link?n=K` (K = 1, 2, …), counts calls, and fails when told.
pub struct FakeOpener {
    pub base: String,
    pub calls: AtomicUsize,
    pub call_times: Mutex<Vec<Instant>>,
    /// Fail with `Other` while set.
    pub failing: AtomicBool,
    /// Fail with `Auth` while set.
    pub auth_failing: AtomicBool,
    /// Fail once with a 429 asking to wait this long.
    pub rate_limited: Mutex<Option<Duration>>,
    next: AtomicUsize,
}

impl FakeOpener {
    pub fn new(addr: SocketAddr) -> Arc<FakeOpener> {
        Arc::new(FakeOpener {
            base: format!("ws://{addr}/link"),
            calls: AtomicUsize::new(0),
            call_times: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            auth_failing: AtomicBool::new(false),
            rate_limited: Mutex::new(None),
            next: AtomicUsize::new(1),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl OpenConnection for FakeOpener {
    fn open(&self) -> BoxFuture<'_, Result<Url, OpenError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.call_times.lock().unwrap().push(Instant::now());
            if let Some(after) = self.rate_limited.lock().unwrap().take() {
                return Err(OpenError::RateLimited(after));
            }
            if self.auth_failing.load(Ordering::SeqCst) {
                return Err(OpenError::Auth("invalid_auth".into()));
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(OpenError::Other(
                    "fake apps.connections.open failure".into(),
                ));
            }
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            Ok(Url::parse(&format!("{}?n={n}&ticket=secret", self.base)).unwrap())
        })
    }
}
