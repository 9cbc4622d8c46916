//! The Web API client and the Socket Mode websocket make one proxy decision, and both name the
//! cause when a proxy or TLS fails. Loopback only. Proxy settings are passed explicitly
//! (`ProxyConfig::from_vars`): tests run in parallel threads, so none sets a process-wide
//! variable; the `check` binary gets its own environment.

use crate::support;

use coder_slack_bridge::proxy::ProxyConfig;
use coder_slack_bridge::slack::SlackApi;
use coder_slack_bridge::socket_mode::{self, tunnel, Timing};
use coder_slack_bridge::telemetry::Metrics;
use secrecy::SecretString;
use std::time::Duration;
use support::web_api::Options;
use support::{
    bridge_binary, closed_port, fresh_dir, run_for_text, FakeProxy, FakeSlack, FakeSocketServer,
    UntrustedTls, APP_TOKEN, BOT_TOKEN,
};
use tokio::time::timeout;
use url::Url;

/// Every wait in these tests is bounded by this, so a hang fails the test.
const WAIT: Duration = Duration::from_secs(20);
/// In proxy URLs: must never be printed.
const PROXY_PASSWORD: &str = "hunter2";

fn proxies(vars: &[(&str, &str)]) -> ProxyConfig {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProxyConfig::from_vars(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("valid proxy settings")
}

fn slack_api(url: &Url, proxies: &ProxyConfig) -> SlackApi {
    let bot = SecretString::from(BOT_TOKEN);
    let app = SecretString::from(APP_TOKEN);
    SlackApi::new(
        url,
        Some(&bot),
        Some(&app),
        Duration::from_secs(5),
        Metrics::new(),
        proxies,
    )
    .expect("HTTP client")
}

fn tuning() -> Timing {
    Timing {
        hello_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(5),
        ..Timing::default()
    }
}

/// A fake Web API whose `apps.connections.open` hands out a fake Socket Mode server's URL.
struct Slack {
    web: FakeSlack,
    ws: FakeSocketServer,
}

impl Slack {
    async fn start() -> Slack {
        let ws = FakeSocketServer::start().await;
        // A connection per call, so a proxy sees every request line.
        let web = FakeSlack::start_with(Options {
            close_connections: true,
            ..Options::default()
        })
        .await;
        web.set_socket_url(&format!("ws://{}/link?n=1&ticket=secret", ws.addr));
        Slack { web, ws }
    }

    /// `http://127.0.0.1:PORT/api`, for `SlackApi::new`.
    fn api_url(&self) -> Url {
        Url::parse(&self.web.api_url()).expect("URL")
    }
}

/// `auth.test`, then `apps.connections.open` and the websocket, as `check` does.
async fn verify_and_connect(api: &SlackApi, proxies: &ProxyConfig) {
    timeout(WAIT, api.auth_test())
        .await
        .expect("auth.test in time")
        .expect("auth.test");
    let url = timeout(WAIT, api.open_socket_url())
        .await
        .expect("apps.connections.open in time")
        .expect("apps.connections.open");
    timeout(WAIT, socket_mode::probe(&url, proxies, &tuning()))
        .await
        .expect("probe in time")
        .expect("Socket Mode hello");
}

#[tokio::test]
async fn the_web_api_and_the_websocket_both_go_through_the_proxy() {
    let proxy = FakeProxy::start().await;
    let slack = Slack::start().await;
    let p = proxies(&[("http_proxy", &proxy.url()), ("HTTPS_PROXY", &proxy.url())]);
    verify_and_connect(&slack_api(&slack.api_url(), &p), &p).await;
    let lines = proxy.request_lines();
    let web = slack.web.addr;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains(&format!(" http://{web}/api/auth.test ")),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!(" http://{web}/api/apps.connections.open ")),
        "{lines:?}"
    );
    assert_eq!(lines[2], format!("CONNECT {} HTTP/1.1", slack.ws.addr));
    assert_eq!(slack.web.calls().len(), 2);
    assert_eq!(slack.ws.accepted(), 1);
}

#[tokio::test]
async fn a_no_proxy_network_address_or_star_sends_both_paths_direct() {
    for no_proxy in ["127.0.0.0/8", "10.0.0.0/8, 127.0.0.1", "*"] {
        let proxy = FakeProxy::start().await;
        let slack = Slack::start().await;
        let p = proxies(&[("ALL_PROXY", &proxy.url()), ("NO_PROXY", no_proxy)]);
        verify_and_connect(&slack_api(&slack.api_url(), &p), &p).await;
        assert_eq!(proxy.request_lines(), Vec::<String>::new(), "{no_proxy}");
        assert_eq!(slack.web.calls().len(), 2, "{no_proxy}");
        assert_eq!(slack.ws.accepted(), 1, "{no_proxy}");
    }
}

#[tokio::test]
async fn a_no_proxy_host_port_entry_exempts_that_port_only_on_either_path() {
    // The Web API's port is exempt: it goes direct, the websocket through the proxy.
    let proxy = FakeProxy::start().await;
    let slack = Slack::start().await;
    let exempt = format!("127.0.0.1:{}", slack.web.addr.port());
    let p = proxies(&[("ALL_PROXY", &proxy.url()), ("no_proxy", &exempt)]);
    verify_and_connect(&slack_api(&slack.api_url(), &p), &p).await;
    assert_eq!(
        proxy.request_lines(),
        vec![format!("CONNECT {} HTTP/1.1", slack.ws.addr)]
    );

    // The websocket's port is exempt: the Web API goes through the proxy, the websocket not.
    let proxy = FakeProxy::start().await;
    let slack = Slack::start().await;
    let exempt = format!("127.0.0.1:{}", slack.ws.addr.port());
    let p = proxies(&[("ALL_PROXY", &proxy.url()), ("no_proxy", &exempt)]);
    verify_and_connect(&slack_api(&slack.api_url(), &p), &p).await;
    let lines = proxy.request_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("POST http://")),
        "{lines:?}"
    );
    assert_eq!(slack.ws.accepted(), 1);
}

/// The texts of a failed `auth.test` (its own request), `apps.connections.open` (a POST through
/// slack-morphism) and `users.lookupByEmail` (a GET with the address in the query).
async fn web_api_errors(api: &SlackApi) -> Vec<String> {
    let auth = timeout(WAIT, api.auth_test()).await.expect("in time");
    let open = timeout(WAIT, api.open_socket_url()).await.expect("in time");
    let lookup = timeout(WAIT, api.lookup_by_email("alice@example.com"))
        .await
        .expect("in time");
    vec![
        auth.expect_err("auth.test fails").to_string(),
        open.expect_err("apps.connections.open fails").to_string(),
        lookup.expect_err("users.lookupByEmail fails").to_string(),
    ]
}

async fn websocket_error(url: &str, proxies: &ProxyConfig) -> String {
    let url = Url::parse(url).expect("URL");
    let result = timeout(WAIT, tunnel::connect(&url, proxies, Duration::from_secs(5)))
        .await
        .expect("in time");
    result.err().expect("the websocket fails").to_string()
}

/// Neither the URL's path or query, nor a token, nor the proxy's credentials.
fn assert_nothing_secret(text: &str) {
    for secret in [
        PROXY_PASSWORD,
        "proxyuser",
        BOT_TOKEN,
        APP_TOKEN,
        "alice",
        "ticket",
        "/api",
        "/link",
    ] {
        assert!(!text.contains(secret), "{secret:?} in {text}");
    }
}

/// A proxy that refuses with `status`, its URL with credentials, and the settings naming it.
async fn refusing_proxy(status: &'static str) -> (FakeProxy, ProxyConfig) {
    let proxy = FakeProxy::refusing(status).await;
    let url = format!("http://proxyuser:{PROXY_PASSWORD}@{}", proxy.addr);
    let p = proxies(&[("HTTPS_PROXY", &url)]);
    (proxy, p)
}

#[tokio::test]
async fn a_407_from_the_proxy_is_named_on_both_paths() {
    let (proxy, p) = refusing_proxy("407 Proxy Authentication Required").await;
    let api = slack_api(&Url::parse("https://slack.test/api").unwrap(), &p);
    let named = format!("through the proxy http://{}:", proxy.addr);
    for text in web_api_errors(&api).await {
        assert!(text.contains(&named), "{text}");
        assert!(text.contains("proxy authorization required"), "{text}");
        assert_nothing_secret(&text);
    }
    let text = websocket_error("wss://wss-primary.slack.test/link?ticket=secret", &p).await;
    assert!(
        text.contains(&format!("proxy http://{} ", proxy.addr)),
        "{text}"
    );
    assert!(text.contains("407 Proxy Authentication Required"), "{text}");
    assert_nothing_secret(&text);
    let heads = proxy.requests.lock().unwrap().clone();
    assert!(heads.iter().all(|h| h.starts_with("CONNECT ")), "{heads:?}");
}

#[tokio::test]
async fn a_403_from_the_proxy_is_named_on_both_paths() {
    let (proxy, p) = refusing_proxy("403 Forbidden").await;
    let api = slack_api(&Url::parse("https://slack.test/api").unwrap(), &p);
    for text in web_api_errors(&api).await {
        assert!(
            text.contains(&format!("through the proxy http://{}:", proxy.addr)),
            "{text}"
        );
        // hyper-util reports a refused tunnel without its status code.
        assert!(text.contains("tunnel"), "{text}");
        assert_nothing_secret(&text);
    }
    let text = websocket_error("wss://wss-primary.slack.test/link?ticket=secret", &p).await;
    assert!(
        text.contains("tunnel") && text.contains("403 Forbidden"),
        "{text}"
    );
    assert_nothing_secret(&text);
}

#[tokio::test]
async fn a_proxy_that_is_down_is_named_on_both_paths() {
    let closed = closed_port();
    let port = closed.port();
    let url = format!("http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{port}");
    let p = proxies(&[("HTTPS_PROXY", &url)]);
    let named = format!("could not connect to the proxy http://127.0.0.1:{port}: ");
    let api = slack_api(&Url::parse("https://slack.test/api").unwrap(), &p);
    let mut texts = web_api_errors(&api).await;
    texts.push(websocket_error("wss://wss-primary.slack.test/link?ticket=secret", &p).await);
    for text in texts {
        assert!(text.contains(&named), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert_nothing_secret(&text);
    }
}

#[tokio::test]
async fn an_unknown_certificate_authority_is_named_on_both_paths() {
    let tls = UntrustedTls::start().await;
    let proxy = FakeProxy::start().await;
    let port = tls.addr.port();
    for p in [
        ProxyConfig::none(),
        proxies(&[("HTTPS_PROXY", &proxy.url())]),
    ] {
        let api = slack_api(
            &Url::parse(&format!("https://127.0.0.1:{port}/api")).unwrap(),
            &p,
        );
        let mut texts = web_api_errors(&api).await;
        let ws = format!("wss://127.0.0.1:{port}/link?ticket=secret");
        texts.push(websocket_error(&ws, &p).await);
        for text in texts {
            assert!(
                text.contains("invalid peer certificate: UnknownIssuer"),
                "{text}"
            );
            assert_nothing_secret(&text);
        }
    }
    // The second round really went through the proxy, on both paths.
    let lines = proxy.request_lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l.starts_with(&format!("CONNECT 127.0.0.1:{port} "))));
}

/// The bridge binary with only the given variables (and PATH, HOME), run where no `.env` is.
fn bridge(vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = bridge_binary(&fresh_dir("proxy-paths"));
    command
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(vars.iter().copied());
    command
}

/// Runs `bridge check`; (succeeded, stdout, stderr).
async fn check(vars: &[(&str, &str)]) -> (bool, String, String) {
    run_for_text(bridge(vars).arg("check")).await
}

#[tokio::test]
async fn check_passes_with_both_paths_through_the_proxy() {
    let proxy = FakeProxy::start().await;
    let slack = Slack::start().await;
    let api_url = slack.api_url();
    let (ok, out, err) = check(&[
        ("SLACK_API_URL", api_url.as_str()),
        ("HTTP_PROXY", &proxy.url()),
    ])
    .await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let lines = proxy.request_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2], format!("CONNECT {} HTTP/1.1", slack.ws.addr));
}

#[tokio::test]
async fn check_blames_the_network_not_the_app_token_when_the_proxy_fails() {
    let closed = closed_port();
    let port = closed.port();
    let down = format!("http://127.0.0.1:{port}");
    let (refusing, _) = refusing_proxy("407 Proxy Authentication Required").await;
    let cases = [
        (down.clone(), "connection refused".to_owned()),
        (refusing.url(), "proxy authorization required".to_owned()),
    ];
    for (proxy, cause) in cases {
        let (ok, out, err) = check(&[
            ("SLACK_API_URL", "https://slack.test/api"),
            ("HTTPS_PROXY", &proxy),
        ])
        .await;
        assert!(!ok, "{out}");
        assert!(
            out.contains("FAIL  Socket Mode: apps.connections.open: "),
            "{out}"
        );
        assert!(out.contains(&cause) && out.contains(&proxy), "{out}");
        assert!(err.contains("HTTPS_PROXY / NO_PROXY"), "{err}");
        assert!(!err.contains("app-level token"), "{err}");
        assert!(!out.contains("FAIL  SLACK_APP_TOKEN"), "{out}");
    }
}

#[tokio::test]
async fn check_blames_the_app_token_when_slack_refuses_it() {
    let slack = Slack::start().await;
    slack.web.fail_open_with("invalid_auth");
    let api_url = slack.api_url();
    let (ok, out, err) = check(&[("SLACK_API_URL", api_url.as_str())]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  SLACK_APP_TOKEN"), "{out}");
    assert!(
        err.contains("SLACK_APP_TOKEN was refused (invalid_auth)")
            && err.contains("app-level token"),
        "{err}"
    );
}

#[tokio::test]
async fn https_and_socks_proxies_are_refused_at_start_up_in_one_sentence() {
    let (ok, out, err) = check(&[(
        "HTTPS_PROXY",
        &format!("https://proxyuser:{PROXY_PASSWORD}@proxy.test:3129"),
    )])
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.starts_with(
            "error: HTTPS_PROXY names a https:// proxy (https://proxy.test:3129), but only http:// proxies are supported"
        ),
        "{err}"
    );
    assert_nothing_secret(&err);

    // The server refuses too, before it starts: it exits rather than serving.
    let (ok, _, err) = run_for_text(&mut bridge(&[
        ("all_proxy", "socks5://proxy.test:1080"),
        ("SLACK_API_URL", "http://127.0.0.1:9/api"),
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("all_proxy names a socks5:// proxy (socks5://proxy.test:1080), but only http:// proxies are supported"),
        "{err}"
    );
}
