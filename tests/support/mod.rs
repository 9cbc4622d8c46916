//! What the tests, the load example and the bench share: a fake Slack (the Web API over HTTP
//! and a Socket Mode server), a CONNECT proxy, TLS helpers, the Coder samples, waiting with a
//! deadline, and the bridge itself (in-process or as a child process), all on loopback.

// Each binary uses part of it, and of the re-exports.
#![allow(dead_code, unused_imports)]

pub mod coder_api;
pub mod postgres;
pub mod proxy;
pub mod relay;
pub mod replica;
pub mod samples;
pub mod socket_mode;
pub mod wait;
pub mod web_api;

pub use proxy::{closed_port, FakeProxy, UntrustedTls};
pub use replica::KillableReplica;
pub use samples::{sample, sample_bytes, sample_path, samples, SAMPLE_COUNT};
pub use socket_mode::{
    disconnect, envelope, hello, AfterHello, Cmd, FakeOpener, FakeSocketServer, Seen,
};
pub use wait::{wait_for_value, wait_until, WAIT};
pub use web_api::{Call, Canned, FakeChannel, FakeSlack, Lost, Outage, APP_TOKEN, BOT_TOKEN};

use coder_slack_bridge::config::{Config, Needs, Settings};
use coder_slack_bridge::delivery::Threads;
use coder_slack_bridge::state::Location;
use coder_slack_bridge::App;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// Installs the TLS crypto provider the bridge uses (reqwest and rustls are built without a
/// default one); idempotent, so every helper that needs it calls it.
pub fn install_crypto_provider() {
    coder_slack_bridge::slack::install_crypto_provider();
}

/// Settings pointing at `slack`, listening on a free loopback port.
pub fn settings(slack: &FakeSlack) -> Settings {
    let mut s = Settings::defaults();
    s.slack_bot_token = Some(BOT_TOKEN.into());
    s.slack_api_url = slack.api_url();
    s.listen_addr = Some("127.0.0.1:0".into());
    s.coder_url = Some("http://test.com".into());
    s
}

pub fn config(settings: Settings) -> Config {
    let mut c = settings
        .validate(Needs::Serve)
        .expect("valid test settings");
    c.tuning.retry_base_delay = Duration::from_millis(20);
    c.tuning.shutdown_budget = Duration::from_secs(5);
    // Stopping at once: only the test of the grace itself waits it.
    c.shutdown_grace = Duration::ZERO;
    // Each card edit at once, so a test sees the card as each notification leaves it;
    // tests/threads.rs tests the coalescing itself.
    c.tuning.card_edit_delay = Duration::ZERO;
    // Each bridge a store of its own; the store's own tests give them files and databases.
    c.database = Location::SqliteMemory;
    // One message per notification, so posts can be counted; tests/threads.rs turns them on.
    c.threads = Threads::Off;
    // The outbox's sender at a test's pace: tries 50 ms apart at first, at most 1 s apart
    // (30 s in production), and a look every 200 ms when nothing woke it.
    c.tuning.outbox.retry_base = Duration::from_millis(50);
    c.tuning.outbox.retry_cap = Duration::from_secs(1);
    c.tuning.outbox.poll = Duration::from_millis(200);
    c
}

pub struct Bridge {
    pub app_addr: SocketAddr,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub app: Option<App>,
    pub client: reqwest::Client,
}

impl Bridge {
    pub async fn start(config: Config) -> Bridge {
        let app = App::build(config).await.expect("app starts");
        Bridge {
            app_addr: app.local_addr(),
            shutdown: app.shutdown_token(),
            app: Some(app),
            client: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.app_addr, path)
    }

    /// POSTs a webhook body; returns status, Retry-After and the JSON answer.
    pub async fn post(&self, body: &Value) -> (u16, Option<String>, Value) {
        post_webhook(&self.client, &self.url("/v1/webhook"), body).await
    }

    /// POSTs a webhook body, asserts it was answered `200 delivered`, and returns the answer.
    pub async fn deliver(&self, body: &Value) -> Value {
        let (status, _, answer) = self.post(body).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("delivered")),
            "{answer}"
        );
        answer
    }

    /// POSTs every body at once and asserts each was answered `200 delivered`.
    pub async fn deliver_all(&self, bodies: &[Value]) {
        futures_util::future::join_all(bodies.iter().map(|b| self.deliver(b))).await;
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("get");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Asserts `/metrics` answers 200 with every one of `expected` in it.
    pub async fn assert_metrics(&self, expected: &[&str]) {
        let (status, metrics) = self.get("/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        for line in expected {
            assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
        }
    }

    /// Waits until `/metrics` has every one of `expected` in it, or panics after [`WAIT`].
    pub async fn wait_metrics(&self, what: &str, expected: &[&str]) {
        wait_until(what, WAIT, async || {
            let (_, metrics) = self.get("/metrics").await;
            expected.iter().all(|line| metrics.contains(line))
        })
        .await;
    }

    /// Waits for `/readyz` to answer `status`, or panics after [`WAIT`].
    pub async fn wait_ready(&self, status: u16) {
        wait_until(&format!("/readyz answers {status}"), WAIT, async || {
            self.get("/readyz").await.0 == status
        })
        .await;
    }

    /// Waits until `/readyz` reports `n` Socket Mode connections open, or panics after [`WAIT`].
    pub async fn wait_for_socket_mode(&self, n: u64) {
        wait_until(
            &format!("{n} Socket Mode connections are open"),
            WAIT,
            async || {
                let (_, body) = self.get("/readyz").await;
                serde_json::from_str::<Value>(&body)
                    .is_ok_and(|r| r["socket_mode"]["connections_open"] == n)
            },
        )
        .await;
    }

    /// Waits until the e-mail → user directory holds `users` people, or panics after [`WAIT`].
    pub async fn wait_for_directory(&self, users: u64) {
        let directory = self
            .app
            .as_ref()
            .and_then(|a| a.directory())
            .expect("a directory (not a dry run)")
            .clone();
        wait_until(
            &format!("the directory holds {users} users"),
            WAIT,
            async || directory.known_users().await == users,
        )
        .await;
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            app.run_until_stopped().await;
        }
    }
}

/// POSTs a webhook body to `url`; returns status, Retry-After and the JSON answer.
pub async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("webhook request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json =
        serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    (status, retry_after, json)
}

/// A fake Slack that knows bobby@coder.com, and a bridge on it (its config first adjusted)
/// that is ready with Bobby in its directory.
pub async fn bridge_with_bobby(adjust: impl FnOnce(&mut Config)) -> (FakeSlack, Bridge) {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let mut c = config(settings(&slack));
    adjust(&mut c);
    let bridge = Bridge::start(c).await;
    bridge.wait_ready(200).await;
    bridge.wait_for_directory(1).await;
    (slack, bridge)
}

/// A bridge on `slack` with Socket Mode on through `socket` (one connection), its config
/// first adjusted; returned once the connection is open and the directory holds `users`.
pub async fn bridge_with_socket_mode(
    slack: &FakeSlack,
    socket: &FakeSocketServer,
    users: u64,
    adjust: impl FnOnce(&mut Config),
) -> Bridge {
    slack.set_socket_url(&socket.url());
    let mut s = settings(slack);
    s.slack_app_token = Some(APP_TOKEN.into());
    s.socket_mode_connections = "1".into();
    let mut c = config(s);
    adjust(&mut c);
    let bridge = Bridge::start(c).await;
    bridge.wait_for_socket_mode(1).await;
    bridge.wait_for_directory(users).await;
    bridge
}

/// The `app_home_opened` event Slack sends when `user` opens the app's Home tab.
pub fn home_opened(envelope_id: &str, user: &str) -> String {
    envelope(
        envelope_id,
        "events_api",
        json!({"type": "event_callback", "event": {"type": "app_home_opened", "user": user, "tab": "home"}}),
    )
}

/// A workspace-deleted notification for `email`, with a fresh msg_id.
pub fn workspace_deleted(email: &str) -> Value {
    notification(
        sample("TemplateWorkspaceDeleted.json.golden"),
        &fresh_id(),
        email,
    )
}

/// A sample for Bobby about `workspace` (in whichever label the sample names it), with a
/// fresh msg_id.
pub fn about(sample_name: &str, workspace: &str) -> Value {
    let mut body = notification(sample(sample_name), &fresh_id(), "bobby@coder.com");
    let labels = &mut body["payload"]["labels"];
    for key in ["workspace", "name", "workspace_name"] {
        if labels.get(key).is_some() {
            labels[key] = workspace.into();
        }
    }
    body
}

/// A body with a fresh msg_id and the given recipient.
pub fn notification(mut body: Value, msg_id: &str, email: &str) -> Value {
    body["msg_id"] = msg_id.into();
    body["payload"]["user_email"] = email.into();
    body
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn fresh_id() -> String {
    format!(
        "00000000-0000-4000-8000-{:012}",
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The longest a test waits for a child process or an HTTP answer: it fails, never hangs.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// An HTTP client whose requests give up after 30 s.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A new empty folder of its own under the target's temp folder, e.g. a child's working
/// folder (so no `.env` but the test's own is there).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Cargo names the target's temp folder to tests and benches, not examples.
    let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tmp.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp folder");
    dir
}

/// The bridge binary working in `dir` with only PATH and HOME from the environment, no
/// standard input, and killed if the test lets go of it.
pub fn bridge_binary(dir: &std::path::Path) -> tokio::process::Command {
    // Cargo names the binary to tests and benches, not examples (which share this module).
    let Some(bin) = option_env!("CARGO_BIN_EXE_coder-slack-bridge") else {
        panic!("only tests and benches know the bridge binary");
    };
    let mut command = tokio::process::Command::new(bin);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end and returns what it printed; past [`DEADLINE`] the process is
/// killed and the test fails.
pub async fn run_to_end(command: &mut tokio::process::Command) -> std::process::Output {
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the bridge");
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the bridge exits within the deadline (a server that kept running was killed)")
        .expect("the bridge's output")
}

/// Runs `command` to its end (see [`run_to_end`]): whether it succeeded, its stdout and stderr.
pub async fn run_for_text(command: &mut tokio::process::Command) -> (bool, String, String) {
    let output = run_to_end(command).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The binary against `slack`, in an empty working folder of its own.
pub fn bridge_command(slack: &FakeSlack) -> tokio::process::Command {
    let mut command = bridge_binary(&fresh_dir("bridge"));
    command
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_API_URL", slack.api_url())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("CODER_URL", "http://test.com");
    command
}

/// Starts the binary and reads its address from the start-up log line.
pub async fn spawn_bridge(
    mut command: tokio::process::Command,
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    let mut child = command.spawn().expect("spawn bridge");
    let stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let log = tokio::spawn(async move {
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        let mut all = String::new();
        let mut addr_tx = Some(addr_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find("local_addr=") {
                let addr: String = line[at + 11..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\u{1b}')
                    .collect();
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .expect("bridge starts")
        .expect("address logged");
    (child, addr, log)
}
