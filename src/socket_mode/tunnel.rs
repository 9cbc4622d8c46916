//! The websocket's transport: TCP (direct or through an HTTP CONNECT proxy) → TLS for `wss` →
//! the websocket handshake. Every step has its own timeout.
//!
//! Nothing here logs or returns a Socket Mode URL's path or query: Slack's single-use URL carries
//! a ticket. Errors name the host only.

use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use url::Url;

/// Plain TCP and TLS streams behind one type, so one code path serves both.
pub trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// A boxed transport stream.
pub type BoxedIo = Box<dyn AsyncIo>;

/// A connected Socket Mode websocket.
pub type WsStream = WebSocketStream<BoxedIo>;

/// Which proxy (if any) each URL goes through: `HTTPS_PROXY` for `wss`/`https`, `HTTP_PROXY` for
/// `ws`/`http`, `ALL_PROXY` for either when the specific one is unset, none for hosts that
/// `NO_PROXY` matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    pub https: Option<Url>,
    pub http: Option<Url>,
    pub all: Option<Url>,
    /// `NO_PROXY` entries, lower-cased, without ports or leading dots; `*` matches everything.
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxyConfig::default()
    }

    /// `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `ALL_PROXY`/`all_proxy`,
    /// `NO_PROXY`/`no_proxy` from the process environment (upper case wins; empty means unset).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with the variables looked up by `get` (for tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |upper: &str| {
            [upper.to_owned(), upper.to_ascii_lowercase()]
                .iter()
                .filter_map(|name| get(name))
                .map(|v| v.trim().to_owned())
                .find(|v| !v.is_empty())
        };
        let proxy = |upper: &str| {
            let raw = var(upper)?;
            match parse_proxy_url(&raw) {
                Ok(url) => Some(url),
                Err(reason) => {
                    tracing::warn!(variable = upper, %reason, "ignoring proxy setting");
                    None
                }
            }
        };
        ProxyConfig {
            https: proxy("HTTPS_PROXY"),
            http: proxy("HTTP_PROXY"),
            all: proxy("ALL_PROXY"),
            no_proxy: var("NO_PROXY")
                .map(|v| parse_no_proxy(&v))
                .unwrap_or_default(),
        }
    }

    /// Every connection through `proxy` (an `http://[user:pass@]host:port` URL).
    pub fn with_proxy(proxy: Url) -> Self {
        ProxyConfig {
            all: Some(proxy),
            ..ProxyConfig::default()
        }
    }

    /// Adds `NO_PROXY`-style entries (comma-separated).
    pub fn with_no_proxy(mut self, list: &str) -> Self {
        self.no_proxy.extend(parse_no_proxy(list));
        self
    }

    /// The proxy for `url`, or `None` for a direct connection.
    pub fn proxy_for(&self, url: &Url) -> Option<&Url> {
        let specific = match url.scheme() {
            "wss" | "https" => self.https.as_ref(),
            "ws" | "http" => self.http.as_ref(),
            _ => None,
        };
        let proxy = specific.or(self.all.as_ref())?;
        let host = url.host_str()?;
        if self.bypasses(host) {
            None
        } else {
            Some(proxy)
        }
    }

    fn bypasses(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.no_proxy.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || (host.len() > entry.len()
                    && host.ends_with(entry.as_str())
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
        })
    }
}

/// Lower case, without IPv6 brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn parse_no_proxy(list: &str) -> Vec<String> {
    list.split(',')
        .filter_map(|entry| {
            let entry = entry.trim();
            if entry.is_empty() {
                return None;
            }
            if entry == "*" {
                return Some("*".to_owned());
            }
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            // Strip a port: `[v6]:port`, `host:port`; a bare IPv6 address has several colons.
            let host = if let Some(rest) = entry.strip_prefix('[') {
                rest.split(']').next().unwrap_or(rest)
            } else if entry.matches(':').count() == 1 {
                entry.split(':').next().unwrap_or(entry)
            } else {
                entry
            };
            let host = normalize_host(host);
            (!host.is_empty()).then_some(host)
        })
        .collect()
}

fn parse_proxy_url(raw: &str) -> Result<Url, String> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// proxies are supported for Socket Mode, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err("no host".to_owned());
    }
    Ok(url)
}

/// Why a connection could not be made. Names hosts, never paths or queries.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported URL scheme {0:?} (want ws or wss)")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("{step} to {host} timed out after {after:?}")]
    Timeout {
        step: &'static str,
        host: String,
        after: Duration,
    },
    #[error("TCP connect to {host} failed: {source}")]
    Tcp {
        host: String,
        source: std::io::Error,
    },
    #[error("proxy {proxy} refused CONNECT: {status}")]
    ProxyRefused { proxy: String, status: String },
    #[error("proxy {proxy}: {detail}")]
    Proxy { proxy: String, detail: String },
    #[error("TLS setup failed: {0}")]
    TlsConfig(String),
    #[error("TLS handshake with {host} failed: {source}")]
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
    let timeout = |step: &'static str, host: &str| ConnectError::Timeout {
        step,
        host: host.to_owned(),
        after: step_timeout,
    };

    let tcp: TcpStream = match proxies.proxy_for(url) {
        None => tokio::time::timeout(step_timeout, TcpStream::connect((bare(&host), port)))
            .await
            .map_err(|_| timeout("TCP connect", &host))?
            .map_err(|source| ConnectError::Tcp {
                host: host.clone(),
                source,
            })?,
        Some(proxy) => {
            let proxy_host = proxy.host_str().ok_or(ConnectError::NoHost)?.to_owned();
            let proxy_port = proxy.port_or_known_default().unwrap_or(80);
            let mut tcp = tokio::time::timeout(
                step_timeout,
                TcpStream::connect((bare(&proxy_host), proxy_port)),
            )
            .await
            .map_err(|_| timeout("TCP connect to proxy", &proxy_host))?
            .map_err(|source| ConnectError::Tcp {
                host: proxy_host.clone(),
                source,
            })?;
            tokio::time::timeout(step_timeout, http_connect(&mut tcp, proxy, &host, port))
                .await
                .map_err(|_| timeout("proxy CONNECT", &proxy_host))??;
            tcp
        }
    };
    // Acks are small and must leave at once.
    let _ = tcp.set_nodelay(true);

    let io: BoxedIo = if tls {
        let config = tls_config().await?;
        let name = rustls::pki_types::ServerName::try_from(bare(&host).to_owned())
            .map_err(|e| ConnectError::TlsConfig(format!("bad server name: {e}")))?;
        let stream = tokio::time::timeout(
            step_timeout,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| timeout("TLS handshake", &host))?
        .map_err(|source| ConnectError::Tls {
            host: host.clone(),
            source,
        })?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };

    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, _response) = tokio::time::timeout(
        step_timeout,
        tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(ws_config)),
    )
    .await
    .map_err(|_| timeout("websocket handshake", &host))?
    .map_err(|e| ConnectError::WebSocket {
        host: host.clone(),
        detail: describe_ws_error(&e),
    })?;
    Ok(ws)
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
        Error::Io(io) => format!("I/O: {}", io.kind()),
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
    proxy: &Url,
    host: &str,
    port: u16,
) -> Result<(), ConnectError> {
    let proxy_name = proxy.host_str().unwrap_or_default().to_owned();
    let perr = |detail: String| ConnectError::Proxy {
        proxy: proxy_name.clone(),
        detail,
    };
    // `host` keeps its IPv6 brackets here, as an authority needs them.
    let authority = format!("{host}:{port}");
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if !proxy.username().is_empty() {
        let user = percent_decode(proxy.username());
        let pass = percent_decode(proxy.password().unwrap_or_default());
        let mut credentials = user;
        credentials.push(b':');
        credentials.extend_from_slice(&pass);
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| perr(format!("writing CONNECT: {}", e.kind())))?;

    // Read the answer's head byte by byte: nothing after it may be consumed, it belongs to the
    // tunnel. It is short, and happens once per connection.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16 * 1024 {
            return Err(perr("answer to CONNECT is too long".to_owned()));
        }
        let n = tcp
            .read(&mut byte)
            .await
            .map_err(|e| perr(format!("reading answer to CONNECT: {}", e.kind())))?;
        if n == 0 {
            return Err(perr("closed the connection during CONNECT".to_owned()));
        }
        head.push(byte[0]);
    }
    let status_line = head
        .split(|b| *b == b'\r')
        .next()
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(perr("answer to CONNECT is not HTTP/1.x".to_owned()));
    }
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        let mut status: String = status_line.chars().take(100).collect();
        if code == "407" {
            status.push_str(" (set user:password in the proxy URL)");
        }
        Err(ConnectError::ProxyRefused {
            proxy: proxy_name.clone(),
            status,
        })
    }
}

/// `%XX` decoding of URL user info (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn https_proxy_applies_to_wss_and_http_proxy_to_ws() {
        let c = env(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ]);
        assert_eq!(
            c.proxy_for(&url("wss://wss-primary.slack.com/link")),
            Some(&url("http://secure-proxy:3128"))
        );
        assert_eq!(
            c.proxy_for(&url("ws://127.0.0.1:9/link")),
            Some(&url("http://plain-proxy:8080"))
        );
    }

    #[test]
    fn all_proxy_is_the_fallback_and_upper_case_wins() {
        let c = env(&[
            ("ALL_PROXY", "http://all:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTPS_PROXY", "http://upper:3"),
        ]);
        assert_eq!(
            c.proxy_for(&url("wss://a.example")),
            Some(&url("http://upper:3"))
        );
        assert_eq!(
            c.proxy_for(&url("ws://a.example")),
            Some(&url("http://all:1"))
        );
        let empty_upper = env(&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:2")]);
        assert_eq!(
            empty_upper.proxy_for(&url("wss://a.example")),
            Some(&url("http://lower:2"))
        );
    }

    #[test]
    fn no_proxy_settings_mean_direct() {
        assert_eq!(env(&[]).proxy_for(&url("wss://wss.slack.com/")), None);
        assert_eq!(ProxyConfig::none().proxy_for(&url("ws://x/")), None);
    }

    #[test]
    fn unsupported_proxy_schemes_are_ignored() {
        let c = env(&[("HTTPS_PROXY", "socks5://p:1080")]);
        assert_eq!(c.proxy_for(&url("wss://wss.slack.com/")), None);
    }

    #[test]
    fn no_proxy_matches_suffixes_exact_hosts_and_star_ignoring_ports() {
        let c = env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            (
                "NO_PROXY",
                " localhost, .internal.example ,slack.com:443, 10.0.0.1,[::1]:8443,*.corp",
            ),
        ]);
        let direct = |u: &str| c.proxy_for(&url(u)).is_none();
        assert!(direct("wss://localhost/x"));
        assert!(direct("wss://LOCALHOST:9000/x"));
        assert!(direct("wss://a.internal.example/x"));
        assert!(direct("wss://internal.example/x"));
        assert!(direct("wss://slack.com/x"));
        assert!(direct("wss://wss-primary.slack.com:443/x"));
        assert!(direct("wss://10.0.0.1/x"));
        assert!(direct("wss://[::1]:1234/x"));
        assert!(direct("wss://x.corp/x"));
        assert!(!direct("wss://notslack.com/x"));
        assert!(!direct("wss://example/x"));
        assert!(!direct("wss://10.0.0.10/x"));
        assert!(!direct("wss://internal.example.org/x"));
    }

    #[test]
    fn no_proxy_star_bypasses_everything() {
        let c = env(&[("ALL_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(c.proxy_for(&url("wss://wss.slack.com/")), None);
        let c = ProxyConfig::with_proxy(url("http://p:1")).with_no_proxy("a.test");
        assert_eq!(c.proxy_for(&url("ws://a.test/")), None);
        assert!(c.proxy_for(&url("ws://b.test/")).is_some());
    }

    #[test]
    fn percent_decoding_of_user_info() {
        assert_eq!(percent_decode("p%40ss%3Aw"), b"p@ss:w".to_vec());
        assert_eq!(percent_decode("100%"), b"100%".to_vec());
        assert_eq!(percent_decode("a%zz"), b"a%zz".to_vec());
        assert_eq!(percent_decode("%4"), b"%4".to_vec());
    }
}
