//! The Socket Mode client against a fake Slack on loopback.

use crate::support;

use coder_slack_bridge::socket_mode::{
    DefaultHandler, Envelope, EnvelopeHandler, ProxyConfig, SocketMode, SocketModeConfig, Timing,
};
use coder_slack_bridge::telemetry::{EnvelopeLabels, Metrics};
use futures_util::future::BoxFuture;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{
    disconnect, envelope, wait_until, AfterHello, Cmd, FakeOpener, FakeProxy, FakeSocketServer,
    Seen,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

const WAIT: Duration = Duration::from_secs(5);

fn tuning() -> Timing {
    Timing {
        hello_timeout: Duration::from_secs(1),
        ping_interval: Duration::from_millis(100),
        stale_after: Duration::from_millis(500),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        healthy_after: Duration::from_secs(30),
        io_timeout: Duration::from_secs(1),
        dedupe_ttl: Duration::from_secs(60),
        max_handlers: 16,
    }
}

/// A handler that records envelope ids as it is called; a held one then waits until the test
/// releases it.
#[derive(Clone, Default)]
struct Recorder {
    handled: Arc<Mutex<Vec<String>>>,
    /// Handlers wait for it to close, when set.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Recorder {
    fn held() -> Self {
        Recorder {
            handled: Arc::default(),
            gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
        }
    }
    /// Lets every handler waiting (and every later one) go on.
    fn release(&self) {
        if let Some(gate) = &self.gate {
            gate.close();
        }
    }
    fn handled(&self) -> Vec<String> {
        self.handled.lock().unwrap().clone()
    }
    fn count(&self, id: &str) -> usize {
        self.handled().iter().filter(|h| *h == id).count()
    }
}

impl EnvelopeHandler for Recorder {
    fn handle(&self, envelope: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.handled.lock().unwrap().push(envelope.envelope_id);
            if let Some(gate) = &self.gate {
                // Never given a permit: waits until the gate closes.
                let _ = gate.acquire().await;
            }
        })
    }
}

struct Harness {
    fake: FakeSocketServer,
    opener: Arc<FakeOpener>,
    metrics: Metrics,
    socket_mode: SocketMode,
}

impl Harness {
    async fn start(connections: usize, tuning: Timing, handler: Arc<dyn EnvelopeHandler>) -> Self {
        Self::start_with(
            FakeSocketServer::start().await,
            connections,
            tuning,
            ProxyConfig::none(),
            handler,
        )
        .await
    }

    async fn start_with(
        fake: FakeSocketServer,
        connections: usize,
        tuning: Timing,
        proxy: ProxyConfig,
        handler: Arc<dyn EnvelopeHandler>,
    ) -> Self {
        let opener = FakeOpener::new(fake.addr);
        Self::start_full(fake, opener, connections, tuning, proxy, handler)
    }

    /// One connection with the usual tuning, its websocket through `proxy`.
    async fn through(proxy: ProxyConfig) -> Self {
        let fake = FakeSocketServer::start().await;
        Self::start_with(fake, 1, tuning(), proxy, Arc::new(Recorder::default())).await
    }

    /// One connection with the usual tuning, URLs from an opener the test has set up.
    fn with_opener(fake: FakeSocketServer, opener: Arc<FakeOpener>) -> Self {
        let handler = Arc::new(Recorder::default());
        Self::start_full(fake, opener, 1, tuning(), ProxyConfig::none(), handler)
    }

    fn start_full(
        fake: FakeSocketServer,
        opener: Arc<FakeOpener>,
        connections: usize,
        tuning: Timing,
        proxy: ProxyConfig,
        handler: Arc<dyn EnvelopeHandler>,
    ) -> Self {
        let metrics = Metrics::new();
        let socket_mode = SocketMode::spawn(
            opener.clone(),
            SocketModeConfig {
                connections,
                tuning,
                proxy,
            },
            handler,
            metrics.clone(),
        );
        Harness {
            fake,
            opener,
            metrics,
            socket_mode,
        }
    }

    fn open(&self) -> usize {
        self.socket_mode.state().connections_open
    }

    async fn wait_open(&self, n: usize) {
        wait_until(&format!("{n} connections are open"), WAIT, async || {
            self.open() == n
        })
        .await;
    }

    async fn wait_ack(&self, id: &str) -> usize {
        wait_until(&format!("{id} is acked"), WAIT, async || {
            self.fake.acks().iter().any(|(_, a)| a == id)
        })
        .await;
        self.fake.acks().iter().filter(|(_, a)| a == id).count()
    }

    fn acked(&self, kind: &str) -> u64 {
        self.metrics
            .socket_envelopes_acked
            .get_or_create(&EnvelopeLabels {
                r#type: kind.to_owned(),
            })
            .get()
    }

    /// Stops as the bridge does: the handlers of acked envelopes finish, then the sockets close.
    async fn stop(self) -> FakeSocketServer {
        let drained = self.socket_mode.drain(Instant::now() + WAIT).await;
        assert!(drained, "the handlers finished");
        tokio::time::timeout(WAIT, self.socket_mode.close())
            .await
            .expect("the sockets close");
        assert!(self.fake.reused_urls().is_empty(), "a URL was used twice");
        self.fake
    }
}

fn block_actions() -> serde_json::Value {
    json!({
        "type": "block_actions",
        "user": {"id": "U123"},
        "actions": [{"action_id": "coder_action_0", "url": "https://coder.example/reset?token=secret"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_n_connections_and_closes_them_normally_on_shutdown() {
    let h = Harness::start(3, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(3).await;
    let state = h.socket_mode.state();
    assert!(state.ever_connected);
    assert_eq!(state.connections_open, 3);
    assert_eq!(h.metrics.socket_connections_open.get(), 3);
    assert_eq!(h.opener.calls(), 3);
    assert_eq!(h.metrics.socket_reconnects.get(), 0);

    let metrics = h.metrics.clone();
    let fake = h.stop().await;
    for n in 1..=3 {
        assert!(
            fake.has_seen(&Seen::CloseFrame(n, Some(1000))),
            "connection {n} got a normal close frame: {:?}",
            fake.seen()
        );
    }
    assert_eq!(metrics.socket_connections_open.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_type_is_acked_promptly_while_the_handler_is_slow() {
    let handler = Recorder::held();
    let h = Harness::start(1, tuning(), Arc::new(handler.clone())).await;
    h.wait_open(1).await;
    let kinds = [
        ("e-interactive", "interactive"),
        ("e-events", "events_api"),
        ("e-slash", "slash_commands"),
        ("e-new", "brand_new_type"),
    ];
    let sent = Instant::now();
    for (id, kind) in kinds {
        h.fake.send_text(1, envelope(id, kind, block_actions()));
    }
    for (id, _) in kinds {
        assert_eq!(h.wait_ack(id).await, 1);
    }
    // Each handler waits to be released; the acks did not wait for any of them.
    assert!(sent.elapsed() < Duration::from_secs(2));
    wait_until("every envelope reached the handler", WAIT, async || {
        handler.handled().len() == 4
    })
    .await;
    assert_eq!(h.acked("interactive"), 1);
    assert_eq!(h.acked("events_api"), 1);
    assert_eq!(h.acked("slash_commands"), 1);
    assert_eq!(h.acked("other"), 1);
    // The ack is exactly {"envelope_id": …}: nothing else was sent as text.
    assert_eq!(h.fake.count(|s| matches!(s, Seen::Text(..))), 0);
    handler.release();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_acked_envelopes_finish_and_leaves_later_ones_unacked_before_closing() {
    let handler = Recorder::held();
    let h = Harness::start(1, tuning(), Arc::new(handler.clone())).await;
    h.wait_open(1).await;
    h.fake
        .send_text(1, envelope("before", "interactive", block_actions()));
    h.wait_ack("before").await;
    wait_until("the acked envelope is being handled", WAIT, async || {
        handler.count("before") == 1
    })
    .await;

    let pongs = || h.fake.count(|s| *s == Seen::Pong(1));
    let (drained, ()) = tokio::join!(h.socket_mode.drain(Instant::now() + WAIT), async {
        // The drain has begun (join polls it first): what comes now is not taken.
        h.fake
            .send_text(1, envelope("during", "interactive", block_actions()));
        // A ping after it: its pong says the envelope before it was read.
        let before = pongs();
        h.fake.cmd(1, Cmd::Send(Message::Ping("p".into())));
        wait_until(
            "the ping after the envelope is answered",
            WAIT,
            async || pongs() > before,
        )
        .await;
        assert!(!h.fake.has_seen(&Seen::CloseFrame(1, Some(1000))));
        handler.release();
    });
    assert!(drained, "the acked envelope's handler finished");
    let acks: Vec<String> = h.fake.acks().into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        acks,
        ["before"],
        "an ack promises the work: none while stopping"
    );
    assert_eq!(handler.handled(), ["before"]);
    // Only then are the sockets closed.
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_envelope_is_acked_twice_but_handled_once() {
    let handler = Recorder::default();
    let h = Harness::start(2, tuning(), Arc::new(handler.clone())).await;
    h.wait_open(2).await;
    let payload = block_actions();
    h.fake
        .send_text(1, envelope("dup", "interactive", payload.clone()));
    h.wait_ack("dup").await;
    // The redelivery arrives on the other connection: the store is shared.
    h.fake
        .send_text(2, envelope("dup", "interactive", payload.clone()));
    // A later envelope on the same connection is processed after the redelivery.
    h.fake
        .send_text(2, envelope("after", "interactive", payload));
    wait_until("dup acked twice", WAIT, async || {
        h.fake.acks().iter().filter(|(_, id)| id == "dup").count() == 2
    })
    .await;
    h.wait_ack("after").await;
    let acks = h.fake.acks();
    assert!(acks.contains(&(1, "dup".into())) && acks.contains(&(2, "dup".into())));
    // Stopping waits for every handler the acks started: a second handling of the
    // redelivery would have run by then.
    let metrics = h.metrics.clone();
    h.stop().await;
    let acked = EnvelopeLabels {
        r#type: "interactive".to_owned(),
    };
    assert_eq!(
        metrics.socket_envelopes_acked.get_or_create(&acked).get(),
        3
    );
    assert_eq!(handler.count("after"), 1, "{:?}", handler.handled());
    assert_eq!(handler.count("dup"), 1, "{:?}", handler.handled());
}

async fn replacement_opens_before_the_old_socket_closes(reason: &str) {
    let h = Harness::start(1, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    // The replacement gets its hello only when the test says so.
    h.fake.hold_hello(2);
    h.fake.send_text(1, disconnect(reason));
    wait_until("the replacement connected", WAIT, async || {
        h.fake.has_seen(&Seen::Accepted(2))
    })
    .await;
    // Until the replacement has hello, the old connection stays open and keeps acking.
    h.fake
        .send_text(1, envelope("during", "events_api", json!({})));
    h.wait_ack("during").await;
    assert!(!h.fake.has_seen(&Seen::CloseFrame(1, Some(1000))));
    assert_eq!(h.open(), 1);

    h.fake.send_hello(2);
    wait_until("the old connection was closed", WAIT, async || {
        h.fake.has_seen(&Seen::CloseFrame(1, Some(1000)))
    })
    .await;
    let hello2 = h.fake.position(&Seen::HelloSent(2)).unwrap();
    let closed1 = h.fake.position(&Seen::CloseFrame(1, Some(1000))).unwrap();
    assert!(hello2 < closed1, "{:?}", h.fake.seen());
    h.wait_open(1).await;
    assert_eq!(h.metrics.socket_reconnects.get(), 1);
    assert_eq!(h.opener.calls(), 2);
    // The new connection serves.
    h.fake
        .send_text(2, envelope("later", "interactive", json!({})));
    assert_eq!(h.wait_ack("later").await, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_requested_opens_the_replacement_before_closing_the_old_socket() {
    replacement_opens_before_the_old_socket_closes("refresh_requested").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_opens_the_replacement_before_closing_the_old_socket() {
    replacement_opens_before_the_old_socket_closes("warning").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_disabled_closes_and_reconnects_only_after_the_backoff_max() {
    let mut t = tuning();
    t.backoff_max = Duration::from_millis(400);
    let h = Harness::start(1, t, Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    let sent = Instant::now();
    h.fake.send_text(1, disconnect("link_disabled"));
    wait_until("the disabled link was closed", WAIT, async || {
        h.fake.has_seen(&Seen::CloseFrame(1, Some(1000)))
    })
    .await;
    wait_until("a new URL was opened", WAIT, async || h.opener.calls() == 2).await;
    let second_call = h.opener.call_times.lock().unwrap()[1];
    assert!(
        second_call.duration_since(sent) >= Duration::from_millis(400),
        "reconnected after {:?}",
        second_call.duration_since(sent)
    );
    h.wait_open(1).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_close_is_followed_by_a_new_connection() {
    let h = Harness::start(1, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    h.fake.cmd(1, Cmd::DropAbruptly);
    wait_until("a replacement has hello", WAIT, async || {
        h.fake.has_seen(&Seen::HelloSent(2)) && h.open() == 1
    })
    .await;
    assert_eq!(h.opener.calls(), 2);
    assert_eq!(h.metrics.socket_reconnects.get(), 1);
    h.fake.send_text(2, envelope("x", "events_api", json!({})));
    h.wait_ack("x").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_detected_as_stale_and_replaced() {
    let h = Harness::start(1, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    let silent_since = Instant::now();
    h.fake.cmd(1, Cmd::GoSilent);
    wait_until("a replacement has hello", WAIT, async || {
        h.fake.has_seen(&Seen::HelloSent(2))
    })
    .await;
    let replaced_after = h.fake.when(&Seen::Accepted(2)).unwrap() - silent_since;
    // Pings kept going out but went unanswered: stale after 500 ms, not before.
    assert!(
        replaced_after >= Duration::from_millis(450),
        "{replaced_after:?}"
    );
    h.wait_open(1).await;
    assert_eq!(h.opener.calls(), 2);
    assert_eq!(h.metrics.socket_reconnects.get(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_pongs_keep_a_quiet_connection_alive() {
    let h = Harness::start(1, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    // The fake sends no frames of its own, but its websocket answers the client's pings.
    wait_until(
        "the client pinged for longer than stale_after",
        WAIT,
        async || h.fake.count(|s| *s == Seen::Ping(1)) >= 8,
    )
    .await;
    assert_eq!(h.opener.calls(), 1, "{:?}", h.fake.seen());
    // The client answers the server's pings.
    h.fake.cmd(1, Cmd::Send(Message::Ping("p".into())));
    wait_until("the client answered a ping", WAIT, async || {
        h.fake.has_seen(&Seen::Pong(1))
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_opener_is_retried_with_backoff() {
    let fake = FakeSocketServer::start().await;
    let opener = FakeOpener::new(fake.addr);
    opener
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let h = Harness::with_opener(fake, opener);
    wait_until("the opener was retried", WAIT, async || {
        h.opener.calls() >= 4
    })
    .await;
    // A refused token is retried too, still backing off: ten more attempts take their waits.
    h.opener
        .auth_failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let took = time_for_more(10, || h.opener.calls()).await;
    // Ceilings 80, 160, then 200 ms, each wait drawn below its ceiling (full jitter): ten
    // waits come to about 900 ms, and under 100 ms about once in ten million runs; a loop
    // without backoff makes ten calls in a millisecond or two.
    assert!(took >= Duration::from_millis(100), "10 calls in {took:?}");

    h.opener
        .auth_failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.opener
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.wait_open(1).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_hello_is_replaced() {
    let fake = FakeSocketServer::start().await;
    fake.hold_hello(1);
    let h = Harness::start_with(
        fake,
        1,
        tuning(),
        ProxyConfig::none(),
        Arc::new(Recorder::default()),
    )
    .await;
    wait_until("a second connection has hello", WAIT, async || {
        h.fake.has_seen(&Seen::HelloSent(2))
    })
    .await;
    h.wait_open(1).await;
    assert!(h.socket_mode.state().ever_connected);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_skipped_without_dropping_the_connection() {
    let h = Harness::start(1, tuning(), Arc::new(Recorder::default())).await;
    h.wait_open(1).await;
    h.fake.send_text(1, "not json at all xoxb-secret");
    h.fake
        .cmd(1, Cmd::Send(Message::binary(vec![0u8, 159, 146, 150])));
    h.fake.send_text(1, r#"{"no":"type"}"#);
    h.fake.send_text(1, "[1,2,3]");
    h.fake.send_text(1, r#"{"type":"surprise"}"#);
    h.fake.send_text(1, r#"{"type":"nonsense","reason":7}"#);
    h.fake
        .send_text(1, envelope("after-garbage", "events_api", json!({})));
    h.wait_ack("after-garbage").await;
    assert_eq!(h.opener.calls(), 1);
    assert_eq!(h.open(), 1);
    assert!(!h.fake.has_seen(&Seen::Ended(1)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_handler_counts_button_clicks() {
    let metrics_for_handler = Metrics::new();
    let fake = FakeSocketServer::start().await;
    let opener = FakeOpener::new(fake.addr);
    let socket_mode = SocketMode::spawn(
        opener,
        SocketModeConfig {
            connections: 1,
            tuning: tuning(),
            proxy: ProxyConfig::none(),
        },
        Arc::new(DefaultHandler::new(metrics_for_handler.clone())),
        metrics_for_handler.clone(),
    );
    wait_until("connected", WAIT, async || {
        socket_mode.state().connections_open == 1
    })
    .await;
    fake.send_text(1, envelope("click", "interactive", block_actions()));
    fake.send_text(
        1,
        envelope("event", "events_api", json!({"type": "event_callback"})),
    );
    wait_until("the click was counted", WAIT, async || {
        metrics_for_handler.block_actions.get() == 1
    })
    .await;
    wait_until("both acked", WAIT, async || fake.acks().len() == 2).await;
    assert!(socket_mode.drain(Instant::now() + WAIT).await);
    tokio::time::timeout(WAIT, socket_mode.close())
        .await
        .expect("the sockets close");
    assert_eq!(metrics_for_handler.block_actions.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_goes_through_an_http_connect_proxy() {
    let proxy = FakeProxy::start().await;
    let proxy_url = format!("http://bridge:p%40ss@{}", proxy.addr);
    let h = Harness::through(ProxyConfig::with_proxy(&proxy_url).unwrap()).await;
    h.wait_open(1).await;
    h.fake
        .send_text(1, envelope("via-proxy", "interactive", json!({})));
    h.wait_ack("via-proxy").await;
    let requests = proxy.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let target = h.fake.addr.to_string();
    assert!(
        requests[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
        "{}",
        requests[0]
    );
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD.encode("bridge:p@ss");
    assert!(
        requests[0].contains(&format!("Proxy-Authorization: Basic {credentials}\r\n")),
        "{}",
        requests[0]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_bypasses_the_proxy() {
    let proxy = FakeProxy::start().await;
    let proxy_url = format!("http://{}", proxy.addr);
    let h = Harness::through(
        ProxyConfig::with_proxy(&proxy_url)
            .unwrap()
            .with_no_proxy("localhost,127.0.0.1"),
    )
    .await;
    h.wait_open(1).await;
    assert!(proxy.requests.lock().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_is_retried_like_any_failure() {
    let proxy = FakeProxy::refusing("407 Proxy Authentication Required").await;
    let h = Harness::through(ProxyConfig::with_proxy(&proxy.url()).unwrap()).await;
    wait_until("the proxy was tried again", WAIT, async || {
        proxy.requests.lock().unwrap().len() >= 3
    })
    .await;
    assert_eq!(h.open(), 0);
    assert!(!h.socket_mode.state().ever_connected);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_urls_speak_tls_inside_the_proxy_tunnel() {
    // A "Slack" that records the first bytes it gets, then hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        if let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 5];
            let _ = s.read_exact(&mut buf).await;
            let _ = first_tx.send(buf);
        }
    });
    let proxy = FakeProxy::start().await;
    let proxies = ProxyConfig::with_proxy(&format!("http://{}", proxy.addr)).unwrap();
    let url = Url::parse(&format!(
        "wss://localhost:{}/link?ticket=secret",
        addr.port()
    ))
    .unwrap();
    let result =
        coder_slack_bridge::socket_mode::tunnel::connect(&url, &proxies, Duration::from_secs(2))
            .await;
    let err = result
        .err()
        .expect("the fake cannot finish a TLS handshake");
    assert!(!err.to_string().contains("secret"), "{err}");
    let first = tokio::time::timeout(WAIT, first_rx).await.unwrap().unwrap();
    // A TLS handshake record (0x16) with a TLS 1.x version: the ClientHello.
    assert_eq!(first[0], 0x16, "{first:?}");
    assert_eq!(first[1], 0x03, "{first:?}");
    let requests = proxy.requests.lock().unwrap().clone();
    assert!(requests[0].starts_with(&format!("CONNECT localhost:{} HTTP/1.1\r\n", addr.port())));
}

/// A Slack whose connections end (or ask to be replaced) right after hello must not be
/// reconnected to in a tight loop: each replacement waits its backoff step.
async fn connections_ending_right_after_hello_back_off(what: AfterHello) {
    let fake = FakeSocketServer::start().await;
    fake.after_hello(what);
    let mut t = tuning();
    t.backoff_base = Duration::from_millis(200);
    t.backoff_max = Duration::from_millis(200);
    let h = Harness::start_with(
        fake,
        1,
        t,
        ProxyConfig::none(),
        Arc::new(Recorder::default()),
    )
    .await;
    wait_until("a few connections", WAIT, async || h.fake.accepted() >= 3).await;
    let took = time_for_more(10, || h.fake.accepted()).await;
    // Each replacement waits a draw below 200 ms: ten come to about a second, and under
    // 200 ms about once in three million runs; a tight loop makes ten in milliseconds.
    assert!(
        took >= Duration::from_millis(200),
        "10 connections in {took:?}"
    );
    h.stop().await;
}

/// How long `count` takes to grow by `more` from now (each step waited for, with a deadline).
async fn time_for_more(more: usize, count: impl Fn() -> usize) -> Duration {
    let start = count();
    let started = Instant::now();
    wait_until(
        &format!("{more} more"),
        Duration::from_secs(20),
        async || count() >= start + more,
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_right_after_hello_is_not_a_tight_loop() {
    connections_ending_right_after_hello_back_off(AfterHello::Send(disconnect(
        "refresh_requested",
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_right_after_hello_is_not_a_tight_loop() {
    connections_ending_right_after_hello_back_off(AfterHello::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_returns_in_time_when_the_server_stops_reading() {
    use futures_util::SinkExt;
    // A server that floods pings (the client answers each with a pong), then sends hello and
    // never reads: the pongs fill both socket buffers, so nothing more the client writes (its
    // close frame) can leave. `check`'s probe must still return, bounded by io_timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A fixed, small receive buffer: the kernel cannot grow it while nobody reads.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, until_done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // 100,000 pongs of 131 bytes: several times what the socket buffers hold.
        let payload = bytes::Bytes::from(vec![0u8; 125]);
        for _ in 0..100_000 {
            ws.feed(Message::Ping(payload.clone())).await.unwrap();
        }
        ws.send(Message::text(support::hello())).await.unwrap();
        let _ = until_done.await;
    });
    let url = Url::parse(&format!("ws://{addr}/link?ticket=secret")).unwrap();
    let tuning = Timing {
        hello_timeout: Duration::from_secs(15),
        io_timeout: Duration::from_millis(500),
        ..tuning()
    };
    let direct = ProxyConfig::none();
    let probe = coder_slack_bridge::socket_mode::probe(&url, &direct, &tuning);
    let result = tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .expect("probe returned in time");
    assert_eq!(result, Ok(()));
    let _ = done.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_apps_connections_open_waits_its_retry_after() {
    let fake = FakeSocketServer::start().await;
    let opener = FakeOpener::new(fake.addr);
    *opener.rate_limited.lock().unwrap() = Some(Duration::from_secs(1));
    let h = Harness::with_opener(fake, opener);
    let started = Instant::now();
    h.wait_open(1).await;
    // The backoff alone (≤ 10 ms at first) would have retried at once.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.opener.calls(), 2);
    h.stop().await;
}
