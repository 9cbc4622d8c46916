//! A fake Slack Socket Mode server, a fake `apps.connections.open`, and a CONNECT proxy, all on
//! loopback, for tests/socket_mode.rs.
#![allow(dead_code)]

use coder_slack_bridge::socket_mode::{OpenConnection, OpenError};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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
pub struct FakeSlack {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    conns: Arc<Mutex<Vec<ConnControl>>>,
    /// Connections (by `n`) that get no automatic hello: the test sends it.
    hold_hello: Arc<Mutex<HashSet<usize>>>,
    /// URLs' `n` values that were used more than once.
    reused: Arc<Mutex<Vec<usize>>>,
    /// What every connection does right after its hello, when set.
    after_hello: Arc<Mutex<Option<AfterHello>>>,
}

/// A misbehaving Slack: what each connection does as soon as it has sent hello.
#[derive(Debug, Clone)]
pub enum AfterHello {
    /// Sends this frame (e.g. a disconnect).
    Send(String),
    /// Drops the TCP connection.
    Drop,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeSlack {
            addr,
            log: Arc::default(),
            conns: Arc::default(),
            hold_hello: Arc::default(),
            reused: Arc::default(),
            after_hello: Arc::default(),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(tcp).await });
            }
        });
        fake
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

    /// Sends a command to connection `n`.
    pub fn cmd(&self, n: usize, cmd: Cmd) {
        let conns = self.conns.lock().unwrap();
        let (_, tx) = conns
            .iter()
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

    async fn serve(self, tcp: TcpStream) {
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

/// An HTTP proxy on loopback that records each request head: `CONNECT` opens a tunnel (what
/// `https`/`wss` use), an absolute-form request (`POST http://host:port/path`, what `http`
/// uses) is forwarded as it is.
#[derive(Clone)]
pub struct FakeProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    pub async fn start() -> FakeProxy {
        Self::spawn(None).await
    }

    /// A proxy that answers every request with `status` (e.g. `407 Proxy Authentication
    /// Required`) and closes the connection.
    pub async fn refusing(status: &'static str) -> FakeProxy {
        Self::spawn(Some(status)).await
    }

    async fn spawn(refuse: Option<&'static str>) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FakeProxy {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
        };
        let requests = proxy.requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    let _ = proxy_one(client, requests, refuse).await;
                });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines seen so far (`CONNECT host:port HTTP/1.1`, `POST http://… HTTP/1.1`).
    pub fn request_lines(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|head| head.lines().next().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn proxy_one(
    mut client: TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
    refuse: Option<&'static str>,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    requests.lock().unwrap().push(head.clone());
    if let Some(status) = refuse {
        let answer = format!(
            "HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(answer.as_bytes()).await?;
        return Ok(());
    }
    let request_target = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let connect = head.starts_with("CONNECT ");
    // CONNECT names host:port; an absolute-form request names http://host:port/path.
    let target = if connect {
        request_target
    } else {
        request_target
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    if connect {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        upstream.write_all(head.as_bytes()).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A port on loopback where nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A fake Slack Web API on loopback: `auth.test` and `apps.connections.open` (with the
/// websocket URL it was given), answered with `Connection: close`. Records `METHOD path`.
#[derive(Clone)]
pub struct FakeWebApi {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<String>>>,
    socket_url: Arc<Mutex<String>>,
    /// `apps.connections.open` answers `{"ok":false,"error":CODE}` while set.
    open_error: Arc<Mutex<Option<String>>>,
}

impl FakeWebApi {
    pub async fn start() -> FakeWebApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = FakeWebApi {
            addr: listener.local_addr().unwrap(),
            calls: Arc::default(),
            socket_url: Arc::default(),
            open_error: Arc::default(),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.answer(stream).await;
                });
            }
        });
        api
    }

    /// `http://127.0.0.1:PORT/api`, for `SlackApi::new`.
    pub fn api_url(&self) -> Url {
        Url::parse(&format!("http://{}/api", self.addr)).unwrap()
    }

    pub fn set_socket_url(&self, url: &str) {
        *self.socket_url.lock().unwrap() = url.to_owned();
    }

    pub fn fail_open_with(&self, code: &str) {
        *self.open_error.lock().unwrap() = Some(code.to_owned());
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let Some(head) = read_head(&mut stream).await? else {
            return Ok(());
        };
        let mut words = head.lines().next().unwrap_or_default().split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        // Through a proxy the target is absolute (http://host:port/path).
        let target = words.next().unwrap_or_default();
        let path = match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
            None => target,
        };
        let path = path.split('?').next().unwrap_or_default().to_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await?;
        self.calls.lock().unwrap().push(format!("{method} {path}"));
        let json = match path.as_str() {
            "/api/auth.test" => serde_json::json!({
                "ok": true, "team": "Test", "user": "bridge", "user_id": "UBOT", "team_id": "T1",
            }),
            "/api/apps.connections.open" => match self.open_error.lock().unwrap().clone() {
                Some(code) => serde_json::json!({"ok": false, "error": code}),
                None => serde_json::json!({"ok": true, "url": *self.socket_url.lock().unwrap()}),
            },
            _ => serde_json::json!({"ok": false, "error": "unknown_method"}),
        }
        .to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-oauth-scopes: chat:write,users:read,users:read.email\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    }
}

/// A TLS server on loopback whose certificate (for `localhost` and 127.0.0.1) comes from a CA
/// made up at test time, which no trust store knows. It completes no handshake.
pub struct UntrustedTls {
    pub addr: SocketAddr,
}

impl UntrustedTls {
    pub async fn start() -> UntrustedTls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coder-slack-bridge test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &*ca).unwrap();
        let chain = vec![cert.der().clone(), ca.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                // The client gives up at the certificate; the outcome is the client's to report.
                tokio::spawn(async move {
                    let _ = acceptor.accept(stream).await;
                });
            }
        });
        UntrustedTls { addr }
    }
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `within`.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
