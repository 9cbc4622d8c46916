//! A fake of Coder's HTTP API on 127.0.0.1:0: build info, `users/me`, users by ID (with their
//! status: active, suspended, dormant; a deleted one is not found), and the workspace calls
//! the bridge makes (read, extend, build, dormancy), answered as Coder's handlers answer them.
//! It records every request (refused ones too), so tests can assert exactly what Coder got.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use coder_slack_bridge::state::Location;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::{Filter, Reply};

pub const CODER_TOKEN: &str = "coder-test-token-0123456789abcdef";
/// Coder's message on every 401 from its API-key middleware (the detail says why).
pub const SIGNED_OUT: &str =
    "You are signed out or your session has expired. Please sign in again to continue.";
pub const NOT_FOUND: &str = "Resource not found or you do not have access to this resource";
const TEMPLATE_ID: &str = "c0de0000-0000-4000-8000-7e3a1a7e0001";
const ORGANIZATION_ID: &str = "c0de0000-0000-4000-8000-0a9000000001";
const USER_ID: &str = "c0de0000-0000-4000-8000-05e400000001";
const DEPLOYMENT_ID: &str = "c0de0000-0000-4000-8000-de9100000001";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct CoderCall {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// The JSON body; Null when there is none, a JSON string holding the text when it is not JSON.
    pub body: Value,
    /// The `Coder-Session-Token` header.
    pub token: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeWorkspace {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    /// The latest build's: "start" | "stop" | "delete".
    pub transition: String,
    /// The latest build's job: "succeeded" | "failed" | "running" | "pending" | "canceled".
    pub job_status: String,
    /// None: shutdown is manual.
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub dormant_at: Option<DateTime<Utc>>,
    pub deleting_at: Option<DateTime<Utc>>,
}

impl FakeWorkspace {
    /// Started and built, stopping in 30 minutes, no max deadline, not dormant.
    pub fn running(id: &str, owner_id: &str, owner_name: &str, name: &str) -> Self {
        FakeWorkspace {
            id: id.into(),
            owner_id: owner_id.into(),
            owner_name: owner_name.into(),
            name: name.into(),
            transition: "start".into(),
            job_status: "succeeded".into(),
            deadline: Some(now() + TimeDelta::minutes(30)),
            ..FakeWorkspace::default()
        }
    }
}

/// A Coder user, as `GET /api/v2/users/{id}` answers it.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: String,
    pub username: String,
    /// "active" | "suspended" | "dormant".
    pub status: String,
}

/// Now, to the second (what Coder's RFC 3339 answers carry anyway).
pub fn now() -> DateTime<Utc> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    DateTime::from_timestamp(since_epoch.as_secs() as i64, 0).expect("a time in range")
}

/// A workspace with the IDs of its latest build and job (new ones with each build).
struct Stored {
    workspace: FakeWorkspace,
    build_id: String,
    job_id: String,
}

#[derive(Default)]
struct State {
    workspaces: Vec<Stored>,
    users: Vec<FakeUser>,
    me: (String, Vec<String>),
    version: String,
    revoked: bool,
    /// (method, path prefix, status, body): served once, before the default behaviour.
    canned: Vec<(String, String, u16, Value)>,
    /// (method, path prefix, delay before answering).
    hangs: Vec<(String, String, Duration)>,
    calls: Vec<CoderCall>,
    next_id: u64,
}

impl State {
    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("c0de0000-0000-4000-8000-{:012x}", self.next_id)
    }

    fn find(&mut self, id: &str) -> Option<&mut Stored> {
        self.workspaces.iter_mut().find(|s| s.workspace.id == id)
    }
}

fn matches(method: &str, path_prefix: &str, call: &CoderCall) -> bool {
    call.method.eq_ignore_ascii_case(method) && call.path.starts_with(path_prefix)
}

#[derive(Clone)]
pub struct FakeCoder {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeCoder {
    pub async fn start() -> FakeCoder {
        let state = Arc::new(Mutex::new(State {
            me: ("slack-bridge".into(), vec![]),
            version: "v2.24.1+deadbee".into(),
            ..State::default()
        }));
        let changed = Arc::new(Notify::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake coder");
        let addr = listener.local_addr().expect("addr");
        let (s, c) = (state.clone(), changed.clone());
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let call = CoderCall {
                        method: method.as_str().to_owned(),
                        path: path.as_str().to_owned(),
                        body: parse_body(&body),
                        token: header(&headers, "coder-session-token"),
                        user_agent: header(&headers, "user-agent"),
                    };
                    answer(s.clone(), c.clone(), call, format!("http://{addr}"))
                },
            );
        tokio::spawn(warp::serve(route).incoming(listener).run());
        FakeCoder {
            addr,
            state,
            changed,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a workspace, or replaces the one with the same ID (keeping its build's IDs). Its
    /// owner becomes an active user, unless Coder knows them already: in Coder a workspace
    /// always has its owner.
    pub fn add_workspace(&self, workspace: FakeWorkspace) {
        let mut s = self.lock();
        if !s.users.iter().any(|u| u.id == workspace.owner_id) {
            s.users.push(FakeUser {
                id: workspace.owner_id.clone(),
                username: workspace.owner_name.clone(),
                status: "active".into(),
            });
        }
        if let Some(stored) = s.find(&workspace.id) {
            stored.workspace = workspace;
            return;
        }
        let (build_id, job_id) = (s.fresh_id(), s.fresh_id());
        s.workspaces.push(Stored {
            workspace,
            build_id,
            job_id,
        });
    }

    pub fn workspace(&self, id: &str) -> Option<FakeWorkspace> {
        self.lock().find(id).map(|s| s.workspace.clone())
    }

    /// Deletes a workspace (at once, without a delete build).
    pub fn delete_workspace(&self, id: &str) {
        self.lock().workspaces.retain(|s| s.workspace.id != id);
    }

    pub fn user(&self, id: &str) -> Option<FakeUser> {
        self.lock().users.iter().find(|u| u.id == id).cloned()
    }

    /// Sets a user's status ("active", "suspended", "dormant"), as an admin does.
    pub fn set_user_status(&self, id: &str, status: &str) {
        let mut s = self.lock();
        let user = s.users.iter_mut().find(|u| u.id == id);
        user.unwrap_or_else(|| panic!("no user {id}")).status = status.into();
    }

    /// Deletes a user. Coder refuses while they own workspaces, so a test deletes those first.
    pub fn delete_user(&self, id: &str) {
        let mut s = self.lock();
        let owns = s.workspaces.iter().any(|w| w.workspace.owner_id == id);
        assert!(
            !owns,
            "Coder: You cannot delete a user that has workspaces. Delete their workspaces and try again!"
        );
        s.users.retain(|u| u.id != id);
    }

    /// Ends the latest build's job with `job_status` ("succeeded", "failed", "canceled", ...).
    pub fn finish_build(&self, id: &str, job_status: &str) {
        let mut s = self.lock();
        let stored = s.find(id).unwrap_or_else(|| panic!("no workspace {id}"));
        stored.workspace.job_status = job_status.into();
    }

    /// Who `users/me` says the token belongs to; `roles` are site roles by name.
    pub fn set_me(&self, username: &str, roles: &[&str]) {
        self.lock().me = (
            username.into(),
            roles.iter().map(|r| r.to_string()).collect(),
        );
    }

    pub fn set_version(&self, version: &str) {
        self.lock().version = version.into();
    }

    /// From now on every authenticated call is answered 401.
    pub fn revoke_token(&self) {
        self.lock().revoked = true;
    }

    /// Serves `status` and `body` once, before anything else (authentication included), to
    /// the first request with `method` whose path starts with `path_prefix`.
    pub fn push(&self, method: &str, path_prefix: &str, status: u16, body: Value) {
        let canned = (method.into(), path_prefix.into(), status, body);
        self.lock().canned.push(canned);
    }

    /// Every matching request is recorded at once but answered only after `for_`.
    pub fn hang(&self, method: &str, path_prefix: &str, for_: Duration) {
        self.lock()
            .hangs
            .push((method.into(), path_prefix.into(), for_));
    }

    pub fn calls(&self) -> Vec<CoderCall> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str, path_prefix: &str) -> Vec<CoderCall> {
        let s = self.lock();
        s.calls
            .iter()
            .filter(|c| matches(method, path_prefix, c))
            .cloned()
            .collect()
    }

    /// Calls that change something: anything but GET and HEAD (PUT and POST, here).
    pub fn actions(&self) -> Vec<CoderCall> {
        let s = self.lock();
        let changes = |c: &&CoderCall| c.method != "GET" && c.method != "HEAD";
        s.calls.iter().filter(changes).cloned().collect()
    }

    /// Waits until `predicate` holds on the recorded calls, or panics after 10 s.
    pub async fn wait_for(&self, what: &str, predicate: impl Fn(&[CoderCall]) -> bool) {
        let seen = || {
            let calls: Vec<String> = self
                .calls()
                .iter()
                .map(|c| format!("{} {}", c.method, c.path))
                .collect();
            format!("Coder's calls: {calls:?}")
        };
        super::wait::wait_signalled(&self.changed, what, || predicate(&self.lock().calls), seen)
            .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn answer(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    call: CoderCall,
    self_url: String,
) -> warp::reply::Response {
    // Recorded on arrival, so a test can see a request Coder is still "working on".
    let hang = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.calls.push(call.clone());
        let hang = s.hangs.iter().find(|(m, p, _)| matches(m, p, &call));
        hang.map(|(_, _, d)| *d)
    };
    changed.notify_waiters();
    if let Some(hang) = hang {
        tokio::time::sleep(hang).await;
    }
    let (status, body) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let canned = s.canned.iter().position(|(m, p, ..)| matches(m, p, &call));
        match canned.map(|i| s.canned.remove(i)) {
            Some((_, _, status, body)) => (status, Some(body)),
            None => default_answer(&mut s, &call, &self_url),
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(body) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        None => warp::reply::with_status(warp::reply(), status).into_response(),
    }
}

type Answer = (u16, Option<Value>);

fn error(status: u16, message: &str, detail: &str) -> Answer {
    (status, Some(json!({"message": message, "detail": detail})))
}

fn not_found() -> Answer {
    error(404, NOT_FOUND, "")
}

fn bad_json() -> Answer {
    error(400, "Request body must be valid JSON.", "")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| rfc3339(t).into())
}

fn default_answer(s: &mut State, call: &CoderCall, self_url: &str) -> Answer {
    let Some(rest) = call.path.strip_prefix("/api/v2/") else {
        return error(404, "Route not found.", "");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if let (["buildinfo"], "GET") = (parts.as_slice(), call.method.as_str()) {
        let external_url = "https://github.com/coder/coder/commit/deadbee";
        let info = json!({"version": s.version, "external_url": external_url, "dashboard_url": self_url, "deployment_id": DEPLOYMENT_ID});
        return (200, Some(info));
    }
    // Coder's API-key middleware runs before its routes: one message, the detail says why.
    match call.token.as_deref() {
        None | Some("") => {
            let detail = "Cookie \"coder_session_token\" or query parameter must be provided.";
            return error(401, SIGNED_OUT, detail);
        }
        Some(token) if token != CODER_TOKEN || s.revoked => {
            return error(401, SIGNED_OUT, "API key is invalid.")
        }
        Some(_) => {}
    }
    match (call.method.as_str(), parts.as_slice()) {
        ("GET", ["users", "me"]) => {
            let (username, roles) = &s.me;
            let roles: Vec<Value> = roles
                .iter()
                .map(|r| json!({"name": r, "display_name": r}))
                .collect();
            let me = json!({"id": USER_ID, "username": username, "email": "bridge@example.com", "status": "active", "roles": roles, "organization_ids": [ORGANIZATION_ID]});
            (200, Some(me))
        }
        ("GET", ["users", id]) => s.users.iter().find(|u| u.id == *id).map_or_else(
            // A deleted user is not found.
            not_found,
            |u| (200, Some(user_json(u))),
        ),
        ("GET", ["users", owner, "workspace", name]) => {
            let found = s.workspaces.iter().find(|w| {
                w.workspace.owner_name.eq_ignore_ascii_case(owner)
                    && w.workspace.name.eq_ignore_ascii_case(name)
            });
            found.map_or_else(not_found, |w| (200, Some(workspace_json(w))))
        }
        ("GET", ["workspaces", id]) => s
            .find(id)
            .map_or_else(not_found, |w| (200, Some(workspace_json(w)))),
        ("PUT", ["workspaces", id, "extend"]) => extend(s, id, &call.body),
        ("POST", ["workspaces", id, "builds"]) => build(s, id, &call.body),
        ("PUT", ["workspaces", id, "dormant"]) => dormant(s, id, &call.body),
        _ => error(404, "Route not found.", ""),
    }
}

/// The part of `codersdk.User` a user's own page shows.
fn user_json(user: &FakeUser) -> Value {
    json!({
        "id": user.id, "username": user.username, "name": "", "email": format!("{}@coder.com", user.username),
        "created_at": "2024-01-02T03:04:05Z", "last_seen_at": "2024-03-15T12:00:00Z",
        "status": user.status, "login_type": "password", "organization_ids": [ORGANIZATION_ID],
        "roles": [], "avatar_url": "", "theme_preference": "",
    })
}

fn workspace_json(stored: &Stored) -> Value {
    let w = &stored.workspace;
    // Coder's convertWorkspaceStatus: the job's state, then the transition.
    let status = match (w.job_status.as_str(), w.transition.as_str()) {
        ("running", "start") => "starting",
        ("running", "stop") => "stopping",
        ("running", "delete") => "deleting",
        ("succeeded", "start") => "running",
        ("succeeded", "stop") => "stopped",
        ("succeeded", "delete") => "deleted",
        (other, _) => other, // pending, failed, canceling, canceled
    };
    json!({
        "id": w.id, "owner_id": w.owner_id, "owner_name": w.owner_name, "name": w.name,
        "template_id": TEMPLATE_ID, "organization_id": ORGANIZATION_ID, "outdated": false,
        "latest_build": {
            "id": stored.build_id, "workspace_id": w.id, "transition": w.transition,
            "status": status, "job": {"id": stored.job_id, "status": w.job_status},
            "deadline": time(w.deadline), "max_deadline": time(w.max_deadline),
        },
        "dormant_at": time(w.dormant_at), "deleting_at": time(w.deleting_at),
    })
}

fn is_building(w: &FakeWorkspace) -> bool {
    matches!(w.job_status.as_str(), "pending" | "running")
}

/// Coder's putExtendWorkspace: the body is read first, then the checks in its order.
fn extend(s: &mut State, id: &str, body: &Value) -> Answer {
    let Some(stored) = s.find(id) else {
        return not_found();
    };
    // Coder's request type marks the deadline required; a non-time is a decoding error.
    let new = match body.as_object().map(|b| b.get("deadline")) {
        None => return bad_json(),
        Some(None | Some(Value::Null)) => return error(400, "Validation failed.", "deadline"),
        Some(Some(d)) => match d.as_str().map(DateTime::parse_from_rfc3339) {
            Some(Ok(d)) => d.with_timezone(&Utc),
            _ => return bad_json(),
        },
    };
    let w = &mut stored.workspace;
    if w.transition != "start" {
        let status = &w.transition;
        return error(
            409,
            &format!("Workspace must be started, current status: {status}"),
            "",
        );
    }
    if is_building(w) {
        return error(409, "Workspace is still building!", "");
    }
    if w.deadline.is_none() {
        return error(409, "Workspace shutdown is manual.", "");
    }
    // Coder wants 30 minutes; a minute's grace keeps tests from racing the clock.
    if new < now() + TimeDelta::minutes(29) {
        let message =
            "Cannot extend workspace: new deadline must be at least 30 minutes in the future";
        return error(400, message, "");
    }
    if w.max_deadline.is_some_and(|max| new > max) {
        return error(400, "Cannot extend workspace beyond max deadline.", "");
    }
    w.deadline = Some(new);
    let message = format!("Deadline updated to {}.", rfc3339(new));
    (200, Some(json!({"message": message})))
}

/// Coder's postWorkspaceBuilds: the new build's job stays pending until `finish_build`.
fn build(s: &mut State, id: &str, body: &Value) -> Answer {
    if s.find(id).is_none() {
        return not_found();
    }
    let Some(body) = body.as_object() else {
        return bad_json();
    };
    let transition = match body.get("transition").and_then(Value::as_str) {
        Some(t @ ("start" | "stop" | "delete")) => t.to_owned(),
        _ => return error(400, "Validation failed.", "transition"),
    };
    let (build_id, job_id) = (s.fresh_id(), s.fresh_id());
    let stored = s.find(id).expect("found above");
    if is_building(&stored.workspace) {
        return error(409, "A workspace build is already active.", "");
    }
    stored.workspace.transition = transition.clone();
    stored.workspace.job_status = "pending".into();
    stored.build_id = build_id.clone();
    stored.job_id = job_id.clone();
    let build = json!({"id": build_id, "workspace_id": id, "transition": transition, "status": "pending", "job": {"id": job_id, "status": "pending"}});
    (201, Some(build))
}

/// Coder's putWorkspaceDormant: 304 when nothing changes; waking clears the deletion date.
fn dormant(s: &mut State, id: &str, body: &Value) -> Answer {
    let Some(stored) = s.find(id) else {
        return not_found();
    };
    let dormant = match body.as_object().map(|b| b.get("dormant")) {
        None => return bad_json(),
        Some(None) => false,
        Some(Some(d)) => match d.as_bool() {
            Some(d) => d,
            None => return bad_json(),
        },
    };
    let w = &mut stored.workspace;
    if w.dormant_at.is_some() == dormant {
        return (304, None);
    }
    if dormant {
        w.dormant_at = Some(now());
    } else {
        w.dormant_at = None;
        w.deleting_at = None;
    }
    (200, Some(workspace_json(stored)))
}

/// Bobby's Coder user ID, and his workspace `dev`'s.
pub const BOBBY: &str = "b0bb1e00-0000-4000-8000-000000000001";
pub const DEV: &str = "de000000-0000-4000-8000-000000000003";

/// Bobby in Slack (with Socket Mode), his running workspace `dev` in a fake Coder, and a
/// bridge on both, ready with Bobby in its directory and one Socket Mode connection open.
pub struct World {
    pub slack: super::FakeSlack,
    pub socket: super::FakeSocketServer,
    pub coder: FakeCoder,
    pub bridge: super::Bridge,
}

impl World {
    /// With `CODER_TOKEN` when `token`; Coder's calls time out after 1 s.
    pub async fn start(token: bool, threads: coder_slack_bridge::config::Threads) -> World {
        World::start_on(token, threads, Location::SqliteMemory).await
    }

    /// The same, with the bridge's store at `database` (a file a test can open too).
    pub async fn start_on(
        token: bool,
        threads: coder_slack_bridge::config::Threads,
        database: Location,
    ) -> World {
        let slack = super::FakeSlack::start().await;
        slack.add_user("bobby@coder.com", "UBOBBY");
        let socket = super::FakeSocketServer::start().await;
        slack.set_socket_url(&socket.url());
        let coder = FakeCoder::start().await;
        coder.add_workspace(FakeWorkspace::running(DEV, BOBBY, "bobby", "dev"));
        let mut s = super::settings(&slack);
        s.slack_app_token = Some(super::APP_TOKEN.into());
        s.socket_mode_connections = "1".into();
        s.coder_url = Some(coder.url());
        s.coder_token = token.then(|| CODER_TOKEN.into());
        let mut c = super::config(s);
        c.tuning.coder_call_timeout = Duration::from_secs(1);
        c.threads = threads;
        c.database = database;
        let bridge = super::Bridge::start(c).await;
        bridge.wait_for_socket_mode(1).await;
        bridge.wait_for_directory(1).await;
        World {
            slack,
            socket,
            coder,
            bridge,
        }
    }
}
