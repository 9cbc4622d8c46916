//! The one proxy decision for every outbound connection. The Web API's HTTP client and the
//! Socket Mode websocket both ask [`ProxyConfig::proxy_for`], so the two paths cannot disagree
//! about which proxy (if any) a host goes through.
//!
//! Settings, read once at start-up (the upper-case name wins; an empty value means unset):
//! `HTTPS_PROXY` for `https`/`wss`, `HTTP_PROXY` for `http`/`ws`, `ALL_PROXY` for either when the
//! specific one is unset, and `NO_PROXY` for hosts that go direct (see [`NoProxy`]).
//!
//! Only `http://` proxies are supported: the bridge speaks plain HTTP `CONNECT` to the proxy and
//! TLS inside the tunnel. An `https://` or SOCKS proxy is refused at start-up rather than half
//! used (it would work for one path and not the other).
//!
//! Nothing here prints a proxy's credentials: [`ProxyUrl`] displays as `scheme://host:port`.

use std::fmt;
use std::net::IpAddr;
use url::{Host, Url};

/// An `http://[user:password@]host[:port]` proxy. `Display` and `Debug` show `http://host:port`
/// only: credentials must never reach a log or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    url: Url,
}

impl ProxyUrl {
    /// Parses a proxy setting; `proxy:3128` (no scheme) means `http://proxy:3128`.
    /// `name` is the variable it came from, for the error message.
    pub fn parse(name: &str, raw: &str) -> Result<ProxyUrl, String> {
        let raw = raw.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("http://{raw}")
        };
        // The parser's error never echoes the input, which may hold a password.
        let url = Url::parse(&with_scheme)
            .map_err(|e| format!("{name} is not a valid proxy URL ({e})"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "{name} is not a valid proxy URL (it names no host)"
            ));
        }
        if url.scheme() != "http" {
            return Err(format!(
                "{name} names a {}:// proxy ({}), but only http:// proxies are supported \
                 (the bridge tunnels TLS through the proxy with HTTP CONNECT): give the proxy's \
                 http:// address or unset {name}",
                url.scheme(),
                redacted(&url)
            ));
        }
        Ok(ProxyUrl { url })
    }

    /// The full URL, credentials included: for connecting, never for printing.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host as a URL writes it (IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port; 80 when the URL has none, as reqwest assumes too.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// `user:password`, percent-decoded, for `Proxy-Authorization: Basic`; `None` without a user.
    pub fn credentials(&self) -> Option<Vec<u8>> {
        if self.url.username().is_empty() {
            return None;
        }
        let mut credentials = percent_decode(self.url.username());
        credentials.push(b':');
        credentials.extend(percent_decode(self.url.password().unwrap_or_default()));
        Some(credentials)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.url))
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// `scheme://host:port` of `url`, without user info, path or query.
fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Which proxy (if any) each URL goes through. Built once; both network paths use the same one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    pub https: Option<ProxyUrl>,
    pub http: Option<ProxyUrl>,
    pub all: Option<ProxyUrl>,
    pub no_proxy: NoProxy,
}

impl ProxyConfig {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxyConfig::default()
    }

    /// From the process environment; an unsupported or malformed proxy setting is an error
    /// (one sentence, naming the variable, without credentials).
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with the variables looked up by `get`, so tests need
    /// not touch the process environment.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        // (name it was found under, value): upper case first, empty means unset.
        let var = |upper: &str| {
            [upper.to_owned(), upper.to_ascii_lowercase()]
                .into_iter()
                .filter_map(|name| get(&name).map(|v| (name, v)))
                .find(|(_, v)| !v.trim().is_empty())
        };
        let proxy = |upper: &str| {
            var(upper)
                .map(|(name, raw)| ProxyUrl::parse(&name, &raw))
                .transpose()
        };
        Ok(ProxyConfig {
            https: proxy("HTTPS_PROXY")?,
            http: proxy("HTTP_PROXY")?,
            all: proxy("ALL_PROXY")?,
            no_proxy: var("NO_PROXY")
                .map(|(_, list)| NoProxy::parse(&list))
                .unwrap_or_default(),
        })
    }

    /// Every connection through `proxy` (`http://[user:pass@]host:port`).
    pub fn with_proxy(proxy: &str) -> Result<Self, String> {
        Ok(ProxyConfig {
            all: Some(ProxyUrl::parse("the proxy", proxy)?),
            ..ProxyConfig::default()
        })
    }

    /// Adds `NO_PROXY`-style entries (comma-separated).
    pub fn with_no_proxy(mut self, list: &str) -> Self {
        self.no_proxy.extend(NoProxy::parse(list));
        self
    }

    /// The proxy for `url`, or `None` for a direct connection. `https`/`wss` and `http`/`ws`
    /// are decided alike, so the websocket and the Web API agree.
    pub fn proxy_for(&self, url: &Url) -> Option<&ProxyUrl> {
        let specific = match url.scheme() {
            "wss" | "https" => self.https.as_ref(),
            "ws" | "http" => self.http.as_ref(),
            _ => return None,
        };
        let proxy = specific.or(self.all.as_ref())?;
        (!self.no_proxy.matches(url)).then_some(proxy)
    }

    /// Whether any proxy is configured (for start-up logs, and so clients skip the per-call
    /// decision when there is none).
    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none() && self.all.is_none()
    }
}

/// `NO_PROXY`: comma-separated entries; a URL that matches any of them goes direct.
///
/// - `*` matches everything;
/// - `example.com`, `.example.com` and `*.example.com` match `example.com` and every subdomain;
/// - `10.1.2.3`, `::1`, `[::1]` match that address (compared as addresses, not text);
/// - `10.0.0.0/8`, `fd00::/8` match addresses in the network (host names are not resolved:
///   `localhost` is not in `127.0.0.0/8` unless listed itself);
/// - `host:port`, `10.1.2.3:port`, `[::1]:port` match that host on that port only (the port
///   a URL implies counts: `https://slack.com` is port 443).
///
/// Entries that cannot be understood (a bad port or prefix length) are skipped with a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<Bypass>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Bypass {
    rule: Rule,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// Lower case, without leading `*.`/`.` or a trailing dot.
    Domain(String),
    Ip(IpAddr),
    Net {
        network: IpAddr,
        prefix: u8,
    },
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.everything = true;
                continue;
            }
            match parse_entry(entry) {
                Ok(Some(bypass)) => no_proxy.entries.push(bypass),
                Ok(None) => {}
                Err(reason) => tracing::warn!(entry, %reason, "ignoring a NO_PROXY entry"),
            }
        }
        no_proxy
    }

    fn extend(&mut self, other: NoProxy) {
        self.everything |= other.everything;
        self.entries.extend(other.entries);
    }

    /// Whether `url` goes direct.
    pub fn matches(&self, url: &Url) -> bool {
        if self.everything {
            return true;
        }
        let Some(host) = url.host() else {
            return false;
        };
        let port = url.port_or_known_default();
        self.entries
            .iter()
            .any(|bypass| bypass.port.is_none_or(|p| Some(p) == port) && bypass.rule.matches(&host))
    }
}

fn parse_entry(entry: &str) -> Result<Option<Bypass>, String> {
    let any_port = |rule| Ok(Some(Bypass { rule, port: None }));
    if let Some((address, prefix)) = entry.split_once('/') {
        let network: IpAddr = unbracket(address)
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("the prefix length must be 0–{max}"))?;
        return any_port(Rule::Net { network, prefix });
    }
    // A bare IPv6 address has several colons and no port.
    if let Ok(ip) = unbracket(entry).parse::<IpAddr>() {
        return any_port(Rule::Ip(ip));
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?;
            (host, Some(port))
        }
        None => (entry, None),
    };
    let rule = match unbracket(host).parse::<IpAddr>() {
        Ok(ip) => Rule::Ip(ip),
        Err(_) => {
            let domain = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if domain.is_empty() {
                return Ok(None);
            }
            Rule::Domain(domain)
        }
    };
    Ok(Some(Bypass { rule, port }))
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl Rule {
    fn matches(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (Rule::Domain(domain), Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == *domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            (Rule::Ip(ip), Host::Ipv4(v4)) => *ip == IpAddr::V4(*v4),
            (Rule::Ip(ip), Host::Ipv6(v6)) => *ip == IpAddr::V6(*v6),
            (Rule::Net { network, prefix }, Host::Ipv4(v4)) => {
                in_network(*network, *prefix, IpAddr::V4(*v4))
            }
            (Rule::Net { network, prefix }, Host::Ipv6(v6)) => {
                in_network(*network, *prefix, IpAddr::V6(*v6))
            }
            _ => false,
        }
    }
}

fn in_network(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    let (network, address, width) = match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n).into(), u32::from(a).into(), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let shift = width - u32::from(prefix);
    // A /0 network keeps no bits (a shift by the full width would overflow).
    let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
    network & mask == address & mask
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

    fn vars(pairs: &[(&str, &str)]) -> Result<ProxyConfig, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn env(pairs: &[(&str, &str)]) -> ProxyConfig {
        vars(pairs).unwrap()
    }

    fn via(c: &ProxyConfig, u: &str) -> Option<String> {
        c.proxy_for(&url(u)).map(|p| p.to_string())
    }

    #[test]
    fn https_proxy_applies_to_https_and_wss_and_http_proxy_to_http_and_ws() {
        let c = env(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ]);
        let secure = Some("http://secure-proxy:3128".to_owned());
        let plain = Some("http://plain-proxy:8080".to_owned());
        assert_eq!(via(&c, "wss://wss-primary.slack.com/link"), secure);
        assert_eq!(via(&c, "https://slack.com/api/auth.test"), secure);
        assert_eq!(via(&c, "ws://127.0.0.1:9/link"), plain);
        assert_eq!(via(&c, "http://127.0.0.1:9/api"), plain);
        assert_eq!(via(&c, "ftp://example.com/"), None);
    }

    #[test]
    fn all_proxy_is_the_fallback_upper_case_wins_and_empty_means_unset() {
        let c = env(&[
            ("ALL_PROXY", "http://all:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTPS_PROXY", "http://upper:3"),
        ]);
        assert_eq!(via(&c, "wss://a.example"), Some("http://upper:3".into()));
        assert_eq!(via(&c, "ws://a.example"), Some("http://all:1".into()));
        let c = env(&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:2")]);
        assert_eq!(via(&c, "https://a.example"), Some("http://lower:2".into()));
        let c = env(&[("all_proxy", "http://all-lower:4"), ("HTTP_PROXY", "  ")]);
        assert_eq!(
            via(&c, "http://a.example"),
            Some("http://all-lower:4".into())
        );
        let c = env(&[
            ("NO_PROXY", ""),
            ("no_proxy", "a.example"),
            ("ALL_PROXY", "p:1"),
        ]);
        assert_eq!(via(&c, "https://a.example"), None);
    }

    #[test]
    fn no_settings_mean_direct() {
        assert_eq!(via(&env(&[]), "wss://wss.slack.com/"), None);
        assert_eq!(via(&ProxyConfig::none(), "https://slack.com/"), None);
        assert!(env(&[("NO_PROXY", "*")]).is_empty());
    }

    #[test]
    fn a_proxy_without_scheme_is_http_and_without_port_is_80() {
        let c = env(&[("HTTPS_PROXY", "proxy.corp:3128")]);
        assert_eq!(
            via(&c, "https://slack.com"),
            Some("http://proxy.corp:3128".into())
        );
        let c = env(&[("HTTPS_PROXY", "user:p%40ss@10.0.0.1:3128")]);
        let p = c.https.as_ref().unwrap();
        assert_eq!(p.to_string(), "http://10.0.0.1:3128");
        assert_eq!(p.credentials(), Some(b"user:p@ss".to_vec()));
        let c = env(&[("HTTPS_PROXY", "http://proxy.corp")]);
        assert_eq!(c.https.as_ref().unwrap().port(), 80);
        let c = env(&[("HTTPS_PROXY", "[::1]:3128")]);
        assert_eq!(c.https.as_ref().unwrap().host(), "[::1]");
    }

    #[test]
    fn https_and_socks_proxies_are_refused_in_one_sentence_without_credentials() {
        for (name, value, scheme) in [
            (
                "HTTPS_PROXY",
                "https://user:hunter2@proxy.corp:3129",
                "https",
            ),
            ("https_proxy", "https://proxy.corp", "https"),
            (
                "ALL_PROXY",
                "socks5://user:hunter2@socks.corp:1080",
                "socks5",
            ),
            ("http_proxy", "socks5h://socks.corp:1080", "socks5h"),
            ("HTTP_PROXY", "socks4://socks.corp", "socks4"),
        ] {
            let err = vars(&[(name, value)]).unwrap_err();
            assert!(
                err.starts_with(&format!("{name} names a {scheme}:// proxy")),
                "{err}"
            );
            assert!(err.contains("only http:// proxies are supported"), "{err}");
            assert!(!err.contains("hunter2") && !err.contains("user"), "{err}");
            assert!(!err.contains(". "), "one sentence: {err}");
        }
        let err = vars(&[("HTTPS_PROXY", "https://proxy.corp:3129")]).unwrap_err();
        assert!(err.contains("(https://proxy.corp:3129)"), "{err}");
    }

    #[test]
    fn malformed_proxy_urls_are_errors_that_do_not_echo_the_value() {
        for value in [
            "http://user:hunter2@",
            "http://us er:hunter2@[::1",
            "http://",
        ] {
            let err = vars(&[("HTTPS_PROXY", value)]).unwrap_err();
            assert!(
                err.starts_with("HTTPS_PROXY is not a valid proxy URL"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn credentials_never_show_in_display_or_debug() {
        let c = env(&[("HTTPS_PROXY", "http://bridge:hunter2@proxy:3128/")]);
        let shown = format!("{c:?} {}", c.https.as_ref().unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("bridge"),
            "{shown}"
        );
        assert!(shown.contains("http://proxy:3128"), "{shown}");
    }

    fn direct(no_proxy: &str, u: &str) -> bool {
        let c = env(&[("ALL_PROXY", "http://p:3128"), ("NO_PROXY", no_proxy)]);
        c.proxy_for(&url(u)).is_none()
    }

    #[test]
    fn no_proxy_domains_match_the_domain_and_its_subdomains() {
        for entry in [
            "slack.com",
            ".slack.com",
            "*.slack.com",
            "SLACK.COM.",
            " slack.com ",
        ] {
            assert!(direct(entry, "https://slack.com/api"), "{entry}");
            assert!(direct(entry, "wss://wss-primary.slack.com/link"), "{entry}");
            assert!(direct(entry, "https://Slack.Com./x"), "{entry}");
            assert!(!direct(entry, "https://notslack.com/"), "{entry}");
            assert!(!direct(entry, "https://slack.com.evil.example/"), "{entry}");
        }
        assert!(direct("localhost", "ws://localhost:9000/"));
        assert!(!direct("localhost", "ws://127.0.0.1:9000/"), "no resolving");
    }

    #[test]
    fn no_proxy_ip_literals_and_cidr_networks() {
        assert!(direct("10.0.0.1", "https://10.0.0.1/"));
        assert!(!direct("10.0.0.1", "https://10.0.0.10/"));
        assert!(direct("127.0.0.0/8", "http://127.1.2.3:8080/"));
        assert!(direct("127.0.0.0/8", "wss://127.0.0.1:9/"));
        assert!(!direct("127.0.0.0/8", "https://128.0.0.1/"));
        assert!(!direct("127.0.0.0/8", "https://localhost/"));
        assert!(direct("10.20.0.0/16", "https://10.20.255.1/"));
        assert!(!direct("10.20.0.0/16", "https://10.21.0.1/"));
        assert!(direct("0.0.0.0/0", "https://192.0.2.1/"));
        assert!(!direct("0.0.0.0/0", "https://[::1]/"));
        assert!(direct("::1", "https://[::1]:8443/"));
        assert!(direct("[::1]", "https://[0:0:0:0:0:0:0:1]/"));
        assert!(direct("fd00::/8", "wss://[fd12:3456::1]/"));
        assert!(!direct("fd00::/8", "wss://[fe80::1]/"));
        assert!(direct("::/0", "wss://[2001:db8::1]/"));
        assert!(direct("2001:db8::/128", "https://[2001:db8::]/"));
        assert!(!direct("2001:db8::/128", "https://[2001:db8::1]/"));
    }

    #[test]
    fn no_proxy_host_port_matches_that_port_only() {
        assert!(direct("slack.com:443", "https://slack.com/api"));
        assert!(direct("slack.com:443", "wss://wss-primary.slack.com/link"));
        assert!(!direct("slack.com:443", "http://slack.com/"));
        assert!(!direct("slack.com:443", "https://slack.com:8443/"));
        assert!(direct("127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(!direct("127.0.0.1:8080", "http://127.0.0.1:8081/"));
        assert!(direct("[::1]:8443", "https://[::1]:8443/"));
        assert!(!direct("[::1]:8443", "https://[::1]/"));
        assert!(direct("*.corp:80", "ws://a.corp/"));
    }

    #[test]
    fn no_proxy_star_and_lists() {
        assert!(direct("*", "wss://wss.slack.com/"));
        assert!(direct("a.test, *", "https://b.test/"));
        let list = " localhost, .internal.example ,, 10.0.0.0/8,[::1]:8443,*.corp";
        assert!(direct(list, "https://a.internal.example/"));
        assert!(direct(list, "https://10.9.8.7/"));
        assert!(direct(list, "https://x.corp/"));
        assert!(!direct(list, "https://slack.com/"));
        let c = ProxyConfig::with_proxy("http://p:1")
            .unwrap()
            .with_no_proxy("a.test");
        assert_eq!(via(&c, "ws://a.test/"), None);
        assert!(via(&c, "ws://b.test/").is_some());
        assert!(!direct("", "https://slack.com/"));
        assert!(!direct(" , ,", "https://slack.com/"));
    }

    #[test]
    fn malformed_no_proxy_entries_are_skipped() {
        for entry in [
            "10.0.0.0/33",
            "::/129",
            "host:notaport",
            "host:70000",
            "nonsense/8",
            "*.",
        ] {
            assert_eq!(NoProxy::parse(entry), NoProxy::default(), "{entry}");
        }
        assert!(direct("10.0.0.0/33,slack.com", "https://slack.com/"));
    }

    #[test]
    fn percent_decoding_of_user_info() {
        assert_eq!(percent_decode("p%40ss%3Aw"), b"p@ss:w".to_vec());
        assert_eq!(percent_decode("100%"), b"100%".to_vec());
        assert_eq!(percent_decode("a%zz"), b"a%zz".to_vec());
        assert_eq!(percent_decode("%4"), b"%4".to_vec());
        assert_eq!(percent_decode("%41"), b"A".to_vec());
    }
}
