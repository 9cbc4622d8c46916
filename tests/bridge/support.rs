//! A fake Slack the tests own: the Web API over HTTP and a Socket Mode websocket, both on
//! 127.0.0.1:0. It records every request so tests can assert exactly what Slack received.

use coder_slack_bridge::config::{Config, Needs, Settings};
use coder_slack_bridge::App;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use warp::http::{HeaderMap, StatusCode};
use warp::Filter;

pub const BOT_TOKEN: &str = "xoxb-test-bot-token-0123456789";
pub const APP_TOKEN: &str = "xapp-test-app-token-0123456789";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The JSON body (POST) or the query parameters as an object (GET).
    pub args: Value,
    pub authorization: Option<String>,
}

/// A canned answer, served before the default behaviour.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Canned {
    pub fn error(code: &str) -> Self {
        Canned {
            status: 200,
            headers: vec![],
            body: json!({"ok": false, "error": code}),
        }
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        Canned {
            status: 429,
            headers: vec![("retry-after", retry_after.to_string())],
            body: json!({"ok": false, "error": "ratelimited"}),
        }
    }
    pub fn status(status: u16) -> Self {
        Canned {
            status,
            headers: vec![],
            body: json!({"ok": false, "error": "fatal_error"}),
        }
    }
}

/// How the fake loses the answer to a call it carried out.
#[derive(Debug, Clone, Copy)]
pub enum Lost {
    /// An edge proxy's error status instead of Slack's answer.
    Status(u16),
    /// The answer comes this late (past the bridge's call timeout).
    Late(Duration),
}

#[derive(Default)]
struct State {
    /// Messages posted, by conversation (`D…` for a DM), oldest first.
    messages: HashMap<String, Vec<Value>>,
    /// Channels the app is a member of.
    channels: Vec<String>,
    scheduled: u64,
    /// Calls carried out whose answers are then lost, by method.
    lost: HashMap<String, VecDeque<Lost>>,
    /// e-mail → user ID, in a stable order for users.list pages.
    users: BTreeMap<String, String>,
    calls: Vec<Call>,
    canned: HashMap<String, VecDeque<Canned>>,
    /// Answer every call of a method this way until cleared.
    always: HashMap<String, Canned>,
    delay: HashMap<String, Duration>,
    revoked: bool,
    scopes: String,
    socket_url: Option<String>,
    posts: u64,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let state = Arc::new(Mutex::new(State {
            scopes: "chat:write,users:read,users:read.email,im:write,im:history".into(),
            ..State::default()
        }));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let route = warp::path!("api" / String)
            .and(warp::method())
            .and(warp::header::headers_cloned())
            .and(warp::query::<HashMap<String, String>>())
            .and(warp::body::bytes())
            .then(
                move |method: String,
                      _m,
                      headers: HeaderMap,
                      query: HashMap<String, String>,
                      body: bytes::Bytes| {
                    let (state, changed) = (s.clone(), c.clone());
                    async move { answer(state, changed, method, headers, query, body).await }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake slack");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service =
                    hyper_util::service::TowerToHyperService::new(warp::service(route.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        FakeSlack {
            addr,
            state,
            changed,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn add_user(&self, email: &str, id: &str) {
        self.lock()
            .users
            .insert(email.to_lowercase(), id.to_owned());
    }

    pub fn push(&self, method: &str, canned: Canned) {
        self.lock()
            .canned
            .entry(method.to_owned())
            .or_default()
            .push_back(canned);
    }

    pub fn always(&self, method: &str, canned: Option<Canned>) {
        let mut s = self.lock();
        match canned {
            Some(c) => s.always.insert(method.to_owned(), c),
            None => s.always.remove(method),
        };
    }

    /// The app becomes a member of `channel`.
    pub fn join_channel(&self, channel: &str) {
        self.lock().channels.push(channel.to_owned());
    }

    /// The next call of `method` is carried out, but its answer is lost this way.
    pub fn lose_answer(&self, method: &str, how: Lost) {
        self.lock()
            .lost
            .entry(method.to_owned())
            .or_default()
            .push_back(how);
    }

    /// The messages in a conversation (`D…` for a person's DM), oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Value> {
        self.lock()
            .messages
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    pub fn delay(&self, method: &str, delay: Duration) {
        self.lock().delay.insert(method.to_owned(), delay);
    }

    pub fn revoke_token(&self) {
        self.lock().revoked = true;
    }

    pub fn set_scopes(&self, scopes: &str) {
        self.lock().scopes = scopes.to_owned();
    }

    pub fn set_socket_url(&self, url: &str) {
        self.lock().socket_url = Some(url.to_owned());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Waits until `predicate` holds on the recorded calls, or panics after 10 s.
    pub async fn wait_for(&self, what: &str, predicate: impl Fn(&[Call]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            if predicate(&self.lock().calls) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; calls: {:?}",
                    self.calls().iter().map(|c| &c.method).collect::<Vec<_>>()
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    method: String,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: bytes::Bytes,
) -> warp::reply::Response {
    let args: Value = if body.is_empty() {
        json!(query)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Recorded on arrival, so a test can see a request that Slack is still "working on".
    let delay = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.calls.push(Call {
            method: method.clone(),
            args: args.clone(),
            authorization: authorization.clone(),
        });
        s.delay.get(&method).copied()
    };
    changed.notify_waiters();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (status, extra_headers, reply, lost) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let canned = s
            .canned
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.always.get(&method).cloned());
        let (status, headers, body) = match canned {
            Some(c) => (c.status, c.headers, c.body),
            None => default_answer(&mut s, &method, authorization.as_deref(), &args),
        };
        let lost = s.lost.get_mut(&method).and_then(VecDeque::pop_front);
        (status, headers, body, lost)
    };
    let (status, reply) = match lost {
        None => (status, reply),
        Some(Lost::Status(edge)) => (edge, json!({"ok": false, "error": "edge_error"})),
        Some(Lost::Late(delay)) => {
            tokio::time::sleep(delay).await;
            (status, reply)
        }
    };
    let mut response = warp::reply::with_status(
        warp::reply::json(&reply),
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
    )
    .into_response();
    for (name, value) in extra_headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    if method == "auth.test" {
        let scopes = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .scopes
            .clone();
        response
            .headers_mut()
            .insert("x-oauth-scopes", scopes.parse().expect("scopes"));
    }
    response
}

use warp::Reply;

fn default_answer(
    s: &mut State,
    method: &str,
    authorization: Option<&str>,
    args: &Value,
) -> (u16, Vec<(&'static str, String)>, Value) {
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if authorization != Some(&format!("Bearer {expected}")) {
        return (200, vec![], json!({"ok": false, "error": "invalid_auth"}));
    }
    if s.revoked && method != "apps.connections.open" {
        return (200, vec![], json!({"ok": false, "error": "token_revoked"}));
    }
    let body = match method {
        "auth.test" => {
            json!({"ok": true, "url": "https://fake.slack.com/", "team": "Fake", "user": "coder-bridge", "team_id": "T1", "user_id": "UBOT", "bot_id": "B1"})
        }
        "users.lookupByEmail" => {
            let email = args["email"].as_str().unwrap_or_default().to_lowercase();
            match s.users.get(&email) {
                Some(id) => json!({"ok": true, "user": user_json(id, &email)}),
                None => json!({"ok": false, "error": "users_not_found"}),
            }
        }
        "users.list" => {
            let limit: usize = args["limit"]
                .as_str()
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let start: usize = args["cursor"]
                .as_str()
                .and_then(|c| c.strip_prefix("page-"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let members: Vec<Value> = s
                .users
                .iter()
                .skip(start)
                .take(limit)
                .map(|(e, id)| user_json(id, e))
                .collect();
            let next = if start + limit < s.users.len() {
                format!("page-{}", start + limit)
            } else {
                String::new()
            };
            // A deleted user and a bot, which the directory must skip.
            let mut members = members;
            if start == 0 {
                members.push(json!({"id": "UDELETED", "deleted": true, "profile": {"email": "gone@example.com"}}));
                members.push(
                    json!({"id": "UBOT2", "is_bot": true, "profile": {"email": "bot@example.com"}}),
                );
            }
            json!({"ok": true, "members": members, "response_metadata": {"next_cursor": next}})
        }
        "chat.postMessage" => {
            s.posts += 1;
            let channel = dm_of(args["channel"].as_str().unwrap_or_default());
            // Real time, so `oldest` in a read-back means what it means at Slack.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ts = format!("{}.{:06}", now.as_secs(), s.posts % 1_000_000);
            let mut message = json!({"type": "message", "ts": ts, "text": args["text"]});
            if let Some(blocks) = args.get("blocks") {
                message["blocks"] = blocks.clone();
            }
            if let Some(metadata) = args.get("metadata") {
                message["metadata"] = metadata.clone();
            }
            s.messages.entry(channel.clone()).or_default().push(message);
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": args["text"]}})
        }
        "conversations.open" => {
            let user = args["users"].as_str().unwrap_or_default();
            if user.starts_with('U') && !user.contains(',') {
                json!({"ok": true, "channel": {"id": dm_of(user)}})
            } else {
                json!({"ok": false, "error": "user_not_found"})
            }
        }
        "conversations.history" => history(s, args),
        "chat.scheduleMessage" => {
            let channel = args["channel"].as_str().unwrap_or_default();
            if s.channels.iter().any(|c| c == channel) {
                s.scheduled += 1;
                json!({"ok": true, "channel": channel, "scheduled_message_id": format!("Q{}", s.scheduled), "post_at": args["post_at"]})
            } else {
                json!({"ok": false, "error": "not_in_channel"})
            }
        }
        "chat.deleteScheduledMessage" => json!({"ok": true}),
        "apps.connections.open" => match &s.socket_url {
            Some(url) => json!({"ok": true, "url": url}),
            None => json!({"ok": false, "error": "internal_error"}),
        },
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    (200, vec![], body)
}

/// The app's DM with a user: `U…` → `D…`; channels stay as they are.
fn dm_of(channel: &str) -> String {
    channel
        .strip_prefix('U')
        .map(|rest| format!("D{rest}"))
        .unwrap_or_else(|| channel.to_owned())
}

/// `conversations.history` (a GET: every argument a string), newest first, metadata only
/// with `include_all_metadata`.
fn history(s: &State, args: &Value) -> Value {
    let channel = args["channel"].as_str().unwrap_or_default();
    let oldest: f64 = args["oldest"]
        .as_str()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0.0);
    let with_metadata = args["include_all_metadata"] == "true";
    let messages: Vec<Value> = s
        .messages
        .get(channel)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .rev()
        .filter(|m| {
            m["ts"]
                .as_str()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(0.0)
                >= oldest
        })
        .map(|m| {
            let mut m = m.clone();
            if !with_metadata {
                if let Some(object) = m.as_object_mut() {
                    object.remove("metadata");
                }
            }
            m
        })
        .collect();
    json!({"ok": true, "messages": messages, "has_more": false})
}

fn user_json(id: &str, email: &str) -> Value {
    json!({"id": id, "team_id": "T1", "name": email.split('@').next(), "deleted": false, "is_bot": false, "profile": {"email": email}})
}

/// A Socket Mode server: every connection gets `hello`; tests can drop them all.
#[derive(Clone)]
pub struct FakeSocketMode {
    pub addr: SocketAddr,
    /// Bumped by `drop_all`; every connection open at that moment goes (a watch never misses
    /// a change, whatever the connection was doing).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    pub accepted: Arc<Mutex<u32>>,
}

impl FakeSocketMode {
    pub async fn start() -> FakeSocketMode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let accepted = Arc::new(Mutex::new(0));
        let (g, a) = (generation.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let mut drop_all = g.subscribe();
                drop_all.mark_unchanged();
                *a.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}, "connection_info": {"app_id": "A1"}});
                    if ws
                        .send(tokio_tungstenite::tungstenite::Message::text(
                            hello.to_string(),
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        tokio::select! {
                            _ = drop_all.changed() => return, // abrupt: no close frame
                            msg = ws.next() => if msg.is_none() { return },
                        }
                    }
                });
            }
        });
        FakeSocketMode {
            addr,
            generation,
            accepted,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/link", self.addr)
    }

    pub fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
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
    c.tuning.shutdown_grace = Duration::from_secs(5);
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
        let response = self
            .client
            .post(self.url("/v1/webhook"))
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
        let json = serde_json::from_slice(&response.bytes().await.unwrap_or_default())
            .unwrap_or(Value::Null);
        (status, retry_after, json)
    }

    /// POSTs every body at once and asserts each was answered `200 delivered`.
    pub async fn deliver_all(&self, bodies: &[Value]) {
        let answers = futures_util::future::join_all(bodies.iter().map(|b| self.post(b))).await;
        for (status, _, answer) in &answers {
            assert_eq!(
                (*status, &answer["status"]),
                (200, &json!("delivered")),
                "{answer}"
            );
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("get");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Waits for `/readyz` to answer `status`, or panics after 10 s.
    pub async fn wait_ready(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (got, body) = self.get("/readyz").await;
            if got == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "readyz stayed {got}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the e-mail → user directory holds `users` people, or panics after 10 s.
    pub async fn wait_for_directory(&self, users: u64) {
        let directory = self
            .app
            .as_ref()
            .and_then(|a| a.directory())
            .expect("a directory (not a dry run)")
            .clone();
        wait_until(|| {
            let d = directory.clone();
            async move { d.known_users().await == users }
        })
        .await;
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            app.run_until_stopped().await;
        }
    }
}

/// The samples Coder renders, as (file name, body).
pub fn samples() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/coder-webhook-samples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("samples") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".md") {
            continue;
        }
        let body: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        out.push((name, body));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn sample(name: &str) -> Value {
    samples()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
        .expect("sample exists")
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

/// Polls `condition` until it holds, or panics after 10 s.
pub async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The longest a test waits for a child process or an HTTP answer: it fails, never hangs.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// An HTTP client whose requests give up after 30 s.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; the bridge installs the one it uses.
    coder_slack_bridge::slack::install_crypto_provider();
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
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp folder");
    dir
}

/// The bridge binary working in `dir` with only PATH and HOME from the environment, no
/// standard input, and killed if the test lets go of it.
pub fn bridge_binary(dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coder-slack-bridge"));
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
