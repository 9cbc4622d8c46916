//! A fake Slack Web API over HTTP on 127.0.0.1:0. It records every request so tests can
//! assert exactly what Slack received; in lean mode (the load example) it only counts them.

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

/// The scopes the README's manifest grants (`chat:write.public` is optional, so left out).
pub const DEFAULT_SCOPES: &str = "chat:write,users:read,users:read.email,im:write,im:history,channels:read,groups:read,channels:history,groups:history";

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

/// Slack down as a whole: every method answers this way, and nothing is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// An edge's error status (503, 502, …) at once.
    Status(u16),
    /// No answer at all, for longer than any call waits.
    Hang,
}

/// A channel of the fake workspace, as `conversations.list` and `conversations.info` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    pub id: String,
    pub name: String,
    pub private: bool,
    /// Whether the app is in it.
    pub is_member: bool,
    pub archived: bool,
}

impl FakeChannel {
    /// A public channel the app is not in.
    pub fn public(id: &str, name: &str) -> Self {
        FakeChannel {
            id: id.to_owned(),
            name: name.to_owned(),
            private: false,
            is_member: false,
            archived: false,
        }
    }

    /// A private channel the app is not in (so it cannot see it).
    pub fn private(id: &str, name: &str) -> Self {
        FakeChannel {
            private: true,
            ..Self::public(id, name)
        }
    }

    /// The app is in it.
    pub fn member(mut self) -> Self {
        self.is_member = true;
        self
    }

    pub fn archived(mut self) -> Self {
        self.archived = true;
        self
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "is_channel": !self.private,
            "is_group": self.private,
            "is_private": self.private,
            "is_member": self.is_member,
            "is_archived": self.archived,
        })
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
    /// The workspace's channels, for `conversations.list` and `conversations.info`.
    conversations: Vec<FakeChannel>,
    /// The most channels a `conversations.list` page holds, whatever `limit` asks (Slack may
    /// send fewer than asked).
    channel_page_size: Option<usize>,
    scheduled: u64,
    /// Calls carried out whose answers are then lost, by method.
    lost: HashMap<String, VecDeque<Lost>>,
    /// e-mail → user ID, in a stable order for users.list pages.
    users: BTreeMap<String, String>,
    /// See [`Options::profile_bytes`].
    profile_bytes: usize,
    calls: Vec<Call>,
    canned: HashMap<String, VecDeque<Canned>>,
    /// Answer every call of a method this way until cleared.
    always: HashMap<String, Canned>,
    delay: HashMap<String, Duration>,
    /// Delays for the next calls of a method, one each, before `delay`.
    delay_next: HashMap<String, VecDeque<Duration>>,
    /// Calls being answered (arrived, answer not sent yet), by method, and the most at once.
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
    /// The same for `views.publish`, by the user whose Home it is.
    publishing: HashMap<String, usize>,
    max_publishing: HashMap<String, usize>,
    /// Answers sent, by method.
    answered: BTreeMap<String, u64>,
    /// Each user's App Home as Slack holds it: its hash and the view published.
    homes: HashMap<String, (String, Value)>,
    /// Hashes handed out so far (each view gets a new one).
    hashes: u64,
    revoked: bool,
    /// Slack down as a whole (see [`Outage`]); calls then are counted in `outage_calls` only.
    outage: Option<Outage>,
    outage_calls: u64,
    scopes: String,
    socket_url: Option<String>,
    posts: u64,
    /// Calls by method, in every mode.
    counts: BTreeMap<String, u64>,
    /// Count calls only: neither `calls` nor `messages` grow (see [`Options::lean`]).
    lean: bool,
}

/// How the fake serves; `Options::default()` is what most tests want.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Only count calls per method, keeping neither the calls nor the messages, so the fake
    /// stays cheap at thousands of calls per second (the load example measures the bridge).
    pub lean: bool,
    /// Answer with `Connection: close`, so every call is a new connection (and a proxy sees
    /// each request line).
    pub close_connections: bool,
    /// Bytes of profile fields each `users.list` member carries besides its e-mail, as
    /// Slack's do (about 1,500–2,000: names, title, status, image URLs); 0 keeps them lean.
    pub profile_bytes: usize,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> FakeSlack {
        super::install_crypto_provider();
        let state = Arc::new(Mutex::new(State {
            scopes: DEFAULT_SCOPES.into(),
            lean: options.lean,
            profile_bytes: options.profile_bytes,
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
                // Small answers: don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let service =
                    hyper_util::service::TowerToHyperService::new(warp::service(route.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(!options.close_connections)
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

    /// The bridge's Web API client pointed at this fake, with the bot token and no proxy.
    pub fn bot_api(&self) -> coder_slack_bridge::slack::SlackApi {
        super::install_crypto_provider();
        coder_slack_bridge::slack::SlackApi::new(
            &self.api_url().parse().expect("url"),
            Some(&super::BOT_TOKEN.into()),
            None,
            Duration::from_secs(5),
            coder_slack_bridge::telemetry::Metrics::new(),
            &coder_slack_bridge::proxy::ProxyConfig::none(),
        )
        .expect("client")
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

    /// A channel of the workspace; the app is a member of it if it says so.
    pub fn add_channel(&self, channel: FakeChannel) {
        let mut s = self.lock();
        if channel.is_member {
            s.channels.push(channel.id.clone());
        }
        s.conversations.push(channel);
    }

    /// `conversations.list` pages hold at most `size` channels.
    pub fn set_channel_page_size(&self, size: usize) {
        self.lock().channel_page_size = Some(size);
    }

    /// The next call of `method` is carried out, but its answer is lost this way.
    pub fn lose_answer(&self, method: &str, how: Lost) {
        self.lock()
            .lost
            .entry(method.to_owned())
            .or_default()
            .push_back(how);
    }

    /// The top-level messages of a conversation (what the person sees without opening a
    /// thread: broadcast replies too), oldest first.
    pub fn top_level(&self, channel: &str) -> Vec<Value> {
        self.messages_in(channel)
            .into_iter()
            .filter(|m| m.get("thread_ts").is_none() || m["reply_broadcast"] == true)
            .collect()
    }

    /// The replies in the thread under `ts`, oldest first.
    pub fn replies(&self, channel: &str, ts: &str) -> Vec<Value> {
        self.messages_in(channel)
            .into_iter()
            .filter(|m| m["thread_ts"] == ts)
            .collect()
    }

    /// Deletes a message, as its reader can (a card, say).
    pub fn delete_message(&self, channel: &str, ts: &str) {
        if let Some(messages) = self.lock().messages.get_mut(channel) {
            messages.retain(|m| m["ts"] != ts);
        }
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

    /// The next call of `method` (after those already given one) is answered `delay` late.
    pub fn delay_next(&self, method: &str, delay: Duration) {
        self.lock()
            .delay_next
            .entry(method.to_owned())
            .or_default()
            .push_back(delay);
    }

    /// The most calls of `method` that were being answered at once.
    pub fn max_in_flight(&self, method: &str) -> usize {
        self.lock().max_in_flight.get(method).copied().unwrap_or(0)
    }

    /// The most `views.publish` calls for `user`'s Home that were being answered at once.
    pub fn max_publishing(&self, user: &str) -> usize {
        self.lock().max_publishing.get(user).copied().unwrap_or(0)
    }

    /// Answers sent to calls of `method` (a call is recorded on arrival, answered after its
    /// delay).
    pub fn answered(&self, method: &str) -> u64 {
        self.lock().answered.get(method).copied().unwrap_or(0)
    }

    /// Waits until `n` calls of `method` were answered, or panics after 10 s.
    pub async fn wait_answered(&self, method: &str, n: u64) {
        let what = format!("{n} answers to {method}");
        let seen = || format!("{} answered", self.answered(method));
        super::wait::wait_signalled(&self.changed, &what, || self.answered(method) >= n, seen)
            .await;
    }

    /// The view Slack shows as `user`'s App Home, if one was published.
    pub fn home_view(&self, user: &str) -> Option<Value> {
        self.lock().homes.get(user).map(|(_, view)| view.clone())
    }

    /// Someone else (another replica) publishes `user`'s Home: its hash changes.
    pub fn publish_elsewhere(&self, user: &str, view: Value) {
        let mut s = self.lock();
        let hash = next_hash(&mut s);
        s.homes.insert(user.to_owned(), (hash, view));
    }

    /// Takes Slack down as a whole (`None`: back up). Calls meanwhile carry nothing out and
    /// are not recorded as calls; [`FakeSlack::outage_calls`] counts them.
    pub fn outage(&self, outage: Option<Outage>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).outage = outage;
    }

    /// Calls that met an outage.
    pub fn outage_calls(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outage_calls
    }

    /// Gives the bot token back after [`FakeSlack::revoke_token`].
    pub fn restore_token(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).revoked = false;
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

    /// Calls so far by method (kept in lean mode too).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    /// Answer `apps.connections.open` with `{"ok":false,"error":code}` from now on.
    pub fn fail_open_with(&self, code: &str) {
        self.always("apps.connections.open", Some(Canned::error(code)));
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
        let seen = || {
            let methods: Vec<String> = self.calls().into_iter().map(|c| c.method).collect();
            format!("calls: {methods:?}")
        };
        super::wait::wait_signalled(&self.changed, what, || predicate(&self.lock().calls), seen)
            .await;
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
    if let Some(response) = outage_answer(&state).await {
        return response;
    }
    let publishing_for = (method == "views.publish")
        .then(|| args["user_id"].as_str().unwrap_or_default().to_owned());
    let delay = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        *s.counts.entry(method.clone()).or_default() += 1;
        if !s.lean {
            s.calls.push(Call {
                method: method.clone(),
                args: args.clone(),
                authorization: authorization.clone(),
            });
        }
        let State {
            in_flight,
            max_in_flight,
            publishing,
            max_publishing,
            ..
        } = &mut *s;
        arrived(in_flight, max_in_flight, &method);
        if let Some(user) = &publishing_for {
            arrived(publishing, max_publishing, user);
        }
        let next = s.delay_next.get_mut(&method).and_then(VecDeque::pop_front);
        next.or_else(|| s.delay.get(&method).copied())
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
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if method == "auth.test" {
        response
            .headers_mut()
            .insert("x-oauth-scopes", s.scopes.parse().expect("scopes"));
    }
    if let Some(n) = s.in_flight.get_mut(&method) {
        *n -= 1;
    }
    if let Some(n) = publishing_for.and_then(|user| s.publishing.get_mut(&user)) {
        *n -= 1;
    }
    *s.answered.entry(method).or_default() += 1;
    drop(s);
    changed.notify_waiters();
    response
}

/// The answer while Slack is down as a whole, if it is.
async fn outage_answer(state: &Mutex<State>) -> Option<warp::reply::Response> {
    let outage = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let outage = s.outage?;
        s.outage_calls += 1;
        outage
    };
    let status = match outage {
        Outage::Status(status) => status,
        Outage::Hang => {
            // Longer than any call of the bridge waits; the answer then goes nowhere.
            tokio::time::sleep(Duration::from_secs(120)).await;
            503
        }
    };
    let reply = json!({"ok": false, "error": "service_unavailable"});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(warp::reply::with_status(warp::reply::json(&reply), status).into_response())
}

/// Counts a call of `key` as being answered, and the most at once.
fn arrived(in_flight: &mut HashMap<String, usize>, max: &mut HashMap<String, usize>, key: &str) {
    let now = in_flight.entry(key.to_owned()).or_default();
    *now += 1;
    let most = max.entry(key.to_owned()).or_default();
    *most = (*most).max(*now);
}

/// A view hash Slack has not handed out before.
fn next_hash(s: &mut State) -> String {
    s.hashes += 1;
    format!("{}.hash{:04}", 1_700_000_000 + s.hashes, s.hashes)
}

/// `views.publish`: `hash`, when sent, must be the hash of the view Slack holds for that
/// user (`hash_conflict` otherwise: someone published since); each view gets a new hash.
fn publish(s: &mut State, args: &Value) -> Value {
    let Some(user) = args["user_id"].as_str().filter(|u| u.starts_with('U')) else {
        return json!({"ok": false, "error": "invalid_arguments"});
    };
    match args.get("hash") {
        None | Some(Value::Null) => {}
        Some(Value::String(hash)) => {
            if s.homes.get(user).map(|(current, _)| current) != Some(hash) {
                return json!({"ok": false, "error": "hash_conflict"});
            }
        }
        Some(_) => return json!({"ok": false, "error": "invalid_arguments"}),
    }
    let hash = next_hash(s);
    s.homes
        .insert(user.to_owned(), (hash.clone(), args["view"].clone()));
    json!({"ok": true, "view": {"id": "VHOME", "type": "home", "hash": hash, "blocks": args["view"]["blocks"]}})
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
                .map(|(e, id)| with_profile_fields(user_json(id, e), s.profile_bytes))
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
            let channel = dm_of(args["channel"].as_str().unwrap_or_default());
            let thread_ts = args["thread_ts"].as_str().map(str::to_owned);
            if let Some(parent) = &thread_ts {
                // Lean keeps no messages, so it cannot know a thread is gone.
                if !s.lean && find(s, &channel, parent).is_none() {
                    return (
                        200,
                        vec![],
                        json!({"ok": false, "error": "thread_not_found"}),
                    );
                }
            }
            s.posts += 1;
            // Real time, so `oldest` in a read-back means what it means at Slack.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ts = format!("{}.{:06}", now.as_secs(), s.posts % 1_000_000);
            // Lean: no read-backs to serve, so nothing to keep.
            if !s.lean {
                let mut message = json!({"type": "message", "ts": ts, "text": args["text"]});
                if let Some(blocks) = args.get("blocks") {
                    message["blocks"] = blocks.clone();
                }
                if let Some(metadata) = args.get("metadata") {
                    message["metadata"] = metadata.clone();
                }
                if let Some(parent) = thread_ts {
                    message["thread_ts"] = parent.into();
                    message["reply_broadcast"] =
                        args["reply_broadcast"].as_bool().unwrap_or(false).into();
                }
                s.messages.entry(channel.clone()).or_default().push(message);
            }
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
        "conversations.list" => list_channels(s, args),
        "conversations.info" => channel_info(s, args),
        "conversations.replies" => replies(s, args),
        "chat.update" => {
            let channel = args["channel"].as_str().unwrap_or_default().to_owned();
            let ts = args["ts"].as_str().unwrap_or_default().to_owned();
            match find(s, &channel, &ts) {
                None if s.lean => json!({"ok": true, "channel": channel, "ts": ts}),
                Some(index) => {
                    let message = &mut s.messages.get_mut(&channel).expect("found")[index];
                    message["text"] = args["text"].clone();
                    message["blocks"] = args.get("blocks").cloned().unwrap_or(Value::Null);
                    message["edits"] = (message["edits"].as_u64().unwrap_or(0) + 1).into();
                    json!({"ok": true, "channel": channel, "ts": ts})
                }
                None => json!({"ok": false, "error": "message_not_found"}),
            }
        }
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
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1.000001"}),
        "views.publish" => publish(s, args),
        "apps.connections.open" => match &s.socket_url {
            Some(url) => json!({"ok": true, "url": url}),
            None => json!({"ok": false, "error": "internal_error"}),
        },
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    (200, vec![], body)
}

/// Whether the token has `scope`; `missing_scope` as Slack words it when not.
fn lacks_scope(s: &State, scope: &str) -> Option<Value> {
    let has = s.scopes.split(',').any(|have| have.trim() == scope);
    (!has).then(|| json!({"ok": false, "error": "missing_scope", "needed": scope}))
}

/// `conversations.list` (a GET): the `types` asked for (each needs its read scope), archived
/// ones left out on request, private channels only those the app is in; paged by `limit`
/// (capped by the page size set) with a cursor.
fn list_channels(s: &State, args: &Value) -> Value {
    let types = args["types"].as_str().unwrap_or("public_channel");
    let public = types.split(',').any(|t| t == "public_channel");
    let private = types.split(',').any(|t| t == "private_channel");
    let needed = [(public, "channels:read"), (private, "groups:read")];
    if let Some(refusal) = needed
        .iter()
        .filter(|(asked, _)| *asked)
        .find_map(|(_, scope)| lacks_scope(s, scope))
    {
        return refusal;
    }
    let exclude_archived = args["exclude_archived"] == "true";
    let visible: Vec<&FakeChannel> = s
        .conversations
        .iter()
        .filter(|c| {
            if c.private {
                private && c.is_member
            } else {
                public
            }
        })
        .filter(|c| !(exclude_archived && c.archived))
        .collect();
    let limit: usize = args["limit"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(s.channel_page_size.unwrap_or(usize::MAX));
    let start: usize = args["cursor"]
        .as_str()
        .and_then(|c| c.strip_prefix("chan-"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let channels: Vec<Value> = visible
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| c.json())
        .collect();
    let next = if start + limit < visible.len() {
        format!("chan-{}", start + limit)
    } else {
        String::new()
    };
    json!({"ok": true, "channels": channels, "response_metadata": {"next_cursor": next}})
}

/// `conversations.info` (a GET): a private channel the app is not in is not found, as at
/// Slack; reading one needs `channels:read` (public) or `groups:read` (private).
fn channel_info(s: &State, args: &Value) -> Value {
    let id = args["channel"].as_str().unwrap_or_default();
    let found = s.conversations.iter().find(|c| c.id == id);
    match found {
        Some(c) if !c.private || c.is_member => {
            let scope = if c.private {
                "groups:read"
            } else {
                "channels:read"
            };
            lacks_scope(s, scope).unwrap_or_else(|| json!({"ok": true, "channel": c.json()}))
        }
        _ => json!({"ok": false, "error": "channel_not_found"}),
    }
}

/// The app's DM with a user: `U…` → `D…`; channels stay as they are.
fn dm_of(channel: &str) -> String {
    channel
        .strip_prefix('U')
        .map(|rest| format!("D{rest}"))
        .unwrap_or_else(|| channel.to_owned())
}

/// Where the message at `ts` is in `channel`'s list.
fn find(s: &State, channel: &str, ts: &str) -> Option<usize> {
    s.messages.get(channel)?.iter().position(|m| m["ts"] == ts)
}

/// `conversations.replies` (a GET): the parent at `ts`, then its replies, oldest first.
fn replies(s: &State, args: &Value) -> Value {
    let channel = args["channel"].as_str().unwrap_or_default();
    let ts = args["ts"].as_str().unwrap_or_default();
    if find(s, channel, ts).is_none() {
        return json!({"ok": false, "error": "thread_not_found"});
    }
    let with_metadata = args["include_all_metadata"] == "true";
    let messages: Vec<Value> = s.messages[channel]
        .iter()
        .filter(|m| m["ts"] == ts || m["thread_ts"] == ts)
        .map(|m| without_metadata_unless(m, with_metadata))
        .collect();
    json!({"ok": true, "messages": messages, "has_more": false})
}

fn without_metadata_unless(message: &Value, with_metadata: bool) -> Value {
    let mut message = message.clone();
    if !with_metadata {
        if let Some(object) = message.as_object_mut() {
            object.remove("metadata");
        }
    }
    message
}

/// `conversations.history` (a GET: every argument a string), newest first, metadata only
/// with `include_all_metadata`. Replies in threads are left out, unless broadcast.
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
        .filter(|m| m.get("thread_ts").is_none() || m["reply_broadcast"] == true)
        .filter(|m| {
            m["ts"]
                .as_str()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(0.0)
                >= oldest
        })
        .map(|m| without_metadata_unless(m, with_metadata))
        .collect();
    json!({"ok": true, "messages": messages, "has_more": false})
}

/// `member` with `bytes` of profile fields beside its e-mail, spread over the fields a real
/// Slack profile has.
fn with_profile_fields(mut member: Value, bytes: usize) -> Value {
    if bytes == 0 {
        return member;
    }
    let fields = [
        "real_name",
        "title",
        "status_text",
        "image_512",
        "image_1024",
        "phone",
    ];
    let each = bytes / fields.len();
    for field in fields {
        member["profile"][field] = json!("x".repeat(each));
    }
    member
}

fn user_json(id: &str, email: &str) -> Value {
    json!({"id": id, "team_id": "T1", "name": email.split('@').next(), "deleted": false, "is_bot": false, "profile": {"email": email}})
}
