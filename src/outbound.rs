//! Outbound HTTP, one way for every service the bridge calls (Slack's Web API, Coder's API):
//! the proxy decision the websocket uses too, a timeout on every call, rustls with ring, and
//! failures described without a URL's path, a token or a proxy's credentials.

use crate::error_text::error_chain;
use crate::proxy::ProxyConfig;
use std::error::Error as _;
use std::sync::{Arc, Once};
use std::time::Duration;

/// Installs ring as rustls's crypto provider, once per process (reqwest and the Socket Mode
/// websocket both use rustls without choosing one).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A pooled client: `call_timeout` bounds each call, connecting gets at most 5 s of it, and
/// `.no_proxy()` stops reqwest reading HTTPS_PROXY/NO_PROXY itself: `proxies` (the
/// websocket's decision too) is the only one, so the paths cannot disagree.
pub fn client(
    proxies: Arc<ProxyConfig>,
    call_timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder().no_proxy();
    // Without a proxy there is nothing to decide: the hook (which rebuilds each request's URL
    // to ask) would only cost CPU per call.
    if !proxies.is_empty() {
        builder = builder.proxy(reqwest_proxy(proxies));
    }
    builder
        .timeout(call_timeout)
        .connect_timeout(call_timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(user_agent)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// reqwest's proxy setting: [`ProxyConfig::proxy_for`], the decision the websocket uses too.
/// (The client must also be built with `.no_proxy()` so reqwest reads no variables itself.)
fn reqwest_proxy(proxies: Arc<ProxyConfig>) -> reqwest::Proxy {
    reqwest::Proxy::custom(move |url| proxies.proxy_for(url).map(|p| p.url().clone()))
}

/// I/O error kinds that can only come from opening a TCP connection. Behind a proxy the bridge
/// opens TCP connections to the proxy alone, so these mean the proxy could not be reached.
const CONNECT_KINDS: [std::io::ErrorKind; 5] = [
    std::io::ErrorKind::ConnectionRefused,
    std::io::ErrorKind::HostUnreachable,
    std::io::ErrorKind::NetworkUnreachable,
    std::io::ErrorKind::AddrNotAvailable,
    std::io::ErrorKind::TimedOut,
];

pub fn describe_transport_error(
    error: reqwest::Error,
    proxies: &ProxyConfig,
    service: &str,
) -> String {
    // Read the URL before dropping it: its host and port may be shown, its path and query
    // (an e-mail address, a ticket) may not.
    let target = error.url().map(|url| {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        (format!("{host}:{port}"), proxies.proxy_for(url).cloned())
    });
    let error = error.without_url();
    let (what, proxy) = match target {
        Some((what, proxy)) => (what, proxy),
        None => (service.to_owned(), None),
    };
    let lead = match proxy {
        Some(proxy) if error.is_connect() && failed_to_reach_proxy(&error) => {
            format!("could not connect to the proxy {proxy}")
        }
        Some(proxy) if error.is_connect() => {
            format!("could not connect to {what} through the proxy {proxy}")
        }
        Some(proxy) if error.is_timeout() => {
            format!("timed out talking to {what} through the proxy {proxy}")
        }
        Some(proxy) => format!("request to {what} through the proxy {proxy} failed"),
        None if error.is_connect() => format!("could not connect to {what}"),
        None if error.is_timeout() => format!("timed out talking to {what}"),
        None => format!("request to {what} failed"),
    };
    // For a failed connection the lead says what reqwest's own "error sending request" would;
    // the causes follow.
    let causes = match error.source() {
        Some(cause) if error.is_connect() || error.is_timeout() => error_chain(cause),
        _ => error_chain(&error),
    };
    format!("{lead}: {causes}")
}

fn failed_to_reach_proxy(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if CONNECT_KINDS.contains(&io.kind()) {
                return true;
            }
        }
        next = e.source();
    }
    false
}
