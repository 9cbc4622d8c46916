//! The websocket's transport: TCP (direct or through an HTTP CONNECT proxy) → TLS for `wss` →
//! the websocket handshake. Every step has its own timeout.
//!
//! Which proxy a URL goes through is [`ProxyConfig::proxy_for`]'s decision, the same one the Web
//! API's HTTP client uses.
//!
//! Nothing here logs or returns a Socket Mode URL's path or query: Slack's single-use URL carries
//! a ticket. Errors name hosts and ports only, and a proxy as `http://host:port`.

use crate::error_text::describe_io;
use crate::proxy::ProxyUrl;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use url::Url;

pub use crate::proxy::ProxyConfig;

/// Plain TCP and TLS streams behind one type, so one code path serves both.
pub trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// A boxed transport stream.
pub type BoxedIo = Box<dyn AsyncIo>;

/// A connected Socket Mode websocket.
pub type WsStream = WebSocketStream<BoxedIo>;

/// Why a connection could not be made. Names hosts, never paths or queries.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported URL scheme {0:?} (want ws or wss)")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("{step} timed out after {after:?}")]
    Timeout { step: String, after: Duration },
    #[error("could not connect to {target}: {}", describe_io(source))]
    Tcp {
        target: String,
        source: std::io::Error,
    },
    /// The proxy itself could not be reached: it is down, or the address is wrong.
    #[error("could not connect to the proxy {proxy}: {}", describe_io(source))]
    ProxyTcp {
        proxy: String,
        source: std::io::Error,
    },
    /// The proxy answered CONNECT with something other than 2xx.
    #[error("proxy {proxy} refused the tunnel to {target}: {status}{hint}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: String,
        hint: &'static str,
    },
    #[error("proxy {proxy}: {detail}")]
    Proxy { proxy: String, detail: String },
    #[error("TLS setup failed: {0}")]
    TlsConfig(String),
    #[error("TLS handshake with {host} failed: {}", describe_io(source))]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("websocket handshake with {host} failed: {detail}")]
    WebSocket { host: String, detail: String },
}

/// Opens the websocket at `url` (`ws` or `wss`), through the proxy `proxies` picks for it.
pub async fn connect(
    url: &Url,
    proxies: &ProxyConfig,
    step_timeout: Duration,
) -> Result<WsStream, ConnectError> {
    let tls = match url.scheme() {
        "wss" => true,
        "ws" => false,
        other => return Err(ConnectError::Scheme(other.to_owned())),
    };
    let host = url.host_str().ok_or(ConnectError::NoHost)?.to_owned();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let tcp = match proxies.proxy_for(url) {
        None => direct(&host, port, step_timeout).await?,
        Some(proxy) => through_proxy(proxy, &host, port, step_timeout).await?,
    };
    // Acks are small and must leave at once.
    let _ = tcp.set_nodelay(true);
    let io: BoxedIo = if tls {
        Box::new(tls_handshake(tcp, &host, step_timeout).await?)
    } else {
        Box::new(tcp)
    };
    ws_handshake(url, io, &host, step_timeout).await
}

/// `step` bounded by `after`.
async fn bounded<T>(
    step: impl FnOnce() -> String,
    after: Duration,
    future: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(after, future)
        .await
        .map_err(|_| ConnectError::Timeout {
            step: step(),
            after,
        })?
}

async fn direct(host: &str, port: u16, after: Duration) -> Result<TcpStream, ConnectError> {
    let target = format!("{host}:{port}");
    bounded(|| format!("TCP connect to {target}"), after, async {
        TcpStream::connect((bare(host), port))
            .await
            .map_err(|source| ConnectError::Tcp {
                target: target.clone(),
                source,
            })
    })
    .await
}

/// TCP to the proxy, then a CONNECT tunnel to `host:port` through it.
async fn through_proxy(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    after: Duration,
) -> Result<TcpStream, ConnectError> {
    let mut tcp = bounded(
        || format!("TCP connect to the proxy {proxy}"),
        after,
        async {
            TcpStream::connect((bare(proxy.host()), proxy.port()))
                .await
                .map_err(|source| ConnectError::ProxyTcp {
                    proxy: proxy.to_string(),
                    source,
                })
        },
    )
    .await?;
    bounded(
        || format!("CONNECT to {host}:{port} through the proxy {proxy}"),
        after,
        http_connect(&mut tcp, proxy, host, port),
    )
    .await?;
    Ok(tcp)
}

async fn tls_handshake(
    tcp: TcpStream,
    host: &str,
    after: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let config = tls_config().await?;
    let name = rustls::pki_types::ServerName::try_from(bare(host).to_owned())
        .map_err(|e| ConnectError::TlsConfig(format!("bad server name: {e}")))?;
    bounded(|| format!("TLS handshake with {host}"), after, async {
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                host: host.to_owned(),
                source,
            })
    })
    .await
}

async fn ws_handshake(
    url: &Url,
    io: BoxedIo,
    host: &str,
    after: Duration,
) -> Result<WsStream, ConnectError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    bounded(
        || format!("websocket handshake with {host}"),
        after,
        async {
            tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(ws_config))
                .await
                .map(|(ws, _response)| ws)
                .map_err(|e| ConnectError::WebSocket {
                    host: host.to_owned(),
                    detail: describe_ws_error(&e),
                })
        },
    )
    .await
}

/// A host as a socket address or TLS name wants it: IPv6 without brackets.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A tungstenite error without anything that could echo the URL.
fn describe_ws_error(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => format!("HTTP status {}", response.status()),
        Error::Url(_) => "invalid URL".to_owned(),
        Error::Io(io) => describe_io(io),
        other => other.to_string(),
    }
}

/// The rustls client configuration with the platform's verifier, built once (loading the
/// system's roots reads files, so it runs on the blocking pool).
async fn tls_config() -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    static CONFIG: tokio::sync::OnceCell<Arc<rustls::ClientConfig>> =
        tokio::sync::OnceCell::const_new();
    CONFIG
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(|| {
                use rustls_platform_verifier::ConfigVerifierExt as _;
                rustls::ClientConfig::with_platform_verifier()
                    .map(Arc::new)
                    .map_err(|e| ConnectError::TlsConfig(e.to_string()))
            })
            .await
            .map_err(|e| ConnectError::TlsConfig(format!("TLS setup task failed: {e}")))?
        })
        .await
        .cloned()
}

/// Asks the proxy on `tcp` for a tunnel to `host:port` and reads its answer.
async fn http_connect(
    tcp: &mut TcpStream,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<(), ConnectError> {
    let perr = |detail: String| ConnectError::Proxy {
        proxy: proxy.to_string(),
        detail,
    };
    // `host` keeps its IPv6 brackets here, as an authority needs them.
    let authority = format!("{host}:{port}");
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = proxy.credentials() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| perr(format!("writing CONNECT: {}", describe_io(&e))))?;
    let status_line = read_answer_head(tcp).await.map_err(perr)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(perr("answer to CONNECT is not HTTP/1.x".to_owned()));
    }
    if code.len() == 3 && code.starts_with('2') {
        return Ok(());
    }
    let hint = match (code, proxy.credentials().is_some()) {
        ("407", false) => " (the proxy wants credentials: put user:password in the proxy URL)",
        ("407", true) => " (the proxy did not accept the user:password in the proxy URL)",
        ("403", _) => " (the proxy's rules do not allow this destination)",
        _ => "",
    };
    Err(ConnectError::ProxyRefused {
        proxy: proxy.to_string(),
        target: authority,
        status: status_line.chars().take(100).collect(),
        hint,
    })
}

/// Reads the head of the proxy's answer and returns its status line. Byte by byte: nothing
/// after the head may be consumed, it belongs to the tunnel. It is short, and read once per
/// connection.
async fn read_answer_head(tcp: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16 * 1024 {
            return Err("answer to CONNECT is too long".to_owned());
        }
        let n = tcp
            .read(&mut byte)
            .await
            .map_err(|e| format!("reading answer to CONNECT: {}", describe_io(&e)))?;
        if n == 0 {
            return Err("closed the connection during CONNECT".to_owned());
        }
        head.push(byte[0]);
    }
    Ok(head
        .split(|b| *b == b'\r')
        .next()
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .unwrap_or_default())
}
