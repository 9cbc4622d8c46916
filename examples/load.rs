//! Load driver: the real bridge against a fast fake Slack, both on loopback, in one process.
//!
//! ```sh
//! cargo run --release --example load                 # N=5000 C=20 U=50
//! N=20000 C=50 cargo run --release --example load
//! cargo run --release --example load -- --n 1000 --c 10 --u 5
//! cargo build --release && BRIDGE_BIN=target/release/coder-slack-bridge cargo run --release --example load
//! ```
//!
//! It starts the bridge with `App::build` on its own tokio runtime (threads named
//! `bridge-rt`), and the fake Slack plus the HTTP client on another (`driver-rt`), waits until
//! the directory has every user, sends a short warm-up, then N webhooks at concurrency C with
//! fresh `msg_id`s spread over U users, and prints throughput, latency, CPU per DM (whole
//! process, and the bridge runtime's threads alone), idle and peak RSS, and Slack calls per DM.
//! Every webhook must be answered `200 {"status":"delivered"}`; anything else is reported and
//! makes the exit status non-zero.
//!
//! Settings (flag or environment): `--n`/`N` webhooks (5000), `--c`/`C` concurrency (20),
//! `--u`/`U` users (50), `--warmup`/`WARMUP` webhooks sent before measuring (100),
//! `--bridge-threads`/`BRIDGE_THREADS` and `--driver-threads`/`DRIVER_THREADS` worker threads
//! (the number of CPUs), `--log`/`LOG=1` installs the bridge's own log subscriber as the
//! binary does (info level unless `RUST_LOG`, on stderr).

use coder_slack_bridge::config::{Needs, Settings};
use coder_slack_bridge::telemetry::LogFormat;
use coder_slack_bridge::App;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::Filter;

const BOT_TOKEN: &str = "xoxb-load-test-0000000000";
const SAMPLE: &str = "TemplateWorkspaceAutoUpdated.json.golden";
const MSG_ID_MARK: &str = "@@MSG_ID@@";
const EMAIL_MARK: &str = "@@EMAIL@@";
/// Longest the whole run may take before it gives up.
const RUN_LIMIT: Duration = Duration::from_secs(600);

struct Options {
    n: usize,
    c: usize,
    u: usize,
    warmup: usize,
    bridge_threads: usize,
    driver_threads: usize,
    log: bool,
    /// Run this binary as a child process instead of the bridge in-process, so CPU and
    /// memory are the bridge's alone.
    bridge_bin: Option<std::path::PathBuf>,
}

impl Options {
    fn from_args_and_env() -> Result<Options, String> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut values: HashMap<String, String> = HashMap::new();
        for key in [
            "N",
            "C",
            "U",
            "WARMUP",
            "BRIDGE_THREADS",
            "DRIVER_THREADS",
            "LOG",
            "BRIDGE_BIN",
        ] {
            if let Ok(v) = std::env::var(key) {
                values.insert(key.to_owned(), v);
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let flag = arg.trim_start_matches('-').replace('-', "_").to_uppercase();
            if !arg.starts_with('-') || !is_known(&flag) {
                return Err(format!(
                    "unknown argument {arg:?}; use --n, --c, --u, --warmup, --bridge-threads, --driver-threads, --log, --bridge-bin"
                ));
            }
            if flag == "LOG" {
                values.insert(flag, "1".into());
                continue;
            }
            let value = args.next().ok_or(format!("{arg} needs a value"))?;
            values.insert(flag, value);
        }
        let number = |key: &str, default: usize, min: usize| -> Result<usize, String> {
            match values.get(key) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(format!("{key} must be a whole number ≥ {min}, not {v:?}")),
                },
            }
        };
        Ok(Options {
            n: number("N", 5000, 1)?,
            c: number("C", 20, 1)?,
            u: number("U", 50, 1)?,
            warmup: number("WARMUP", 100, 0)?,
            bridge_threads: number("BRIDGE_THREADS", cpus, 1)?,
            driver_threads: number("DRIVER_THREADS", cpus, 1)?,
            log: values
                .get("LOG")
                .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false" | "off")),
            bridge_bin: values
                .get("BRIDGE_BIN")
                .filter(|v| !v.trim().is_empty())
                .map(std::path::PathBuf::from),
        })
    }
}

fn is_known(flag: &str) -> bool {
    matches!(
        flag,
        "N" | "C" | "U" | "WARMUP" | "BRIDGE_THREADS" | "DRIVER_THREADS" | "LOG" | "BRIDGE_BIN"
    )
}

// ---------------------------------------------------------------------------------------------
// The fake Slack: just enough of the Web API, answering as fast as it can, counting calls.

#[derive(Default)]
struct Counts {
    auth_test: AtomicU64,
    users_list: AtomicU64,
    lookup_by_email: AtomicU64,
    post_message: AtomicU64,
    other: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CountsSnapshot {
    auth_test: u64,
    users_list: u64,
    lookup_by_email: u64,
    post_message: u64,
    other: u64,
}

impl Counts {
    fn snapshot(&self) -> CountsSnapshot {
        CountsSnapshot {
            auth_test: self.auth_test.load(Ordering::Relaxed),
            users_list: self.users_list.load(Ordering::Relaxed),
            lookup_by_email: self.lookup_by_email.load(Ordering::Relaxed),
            post_message: self.post_message.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for CountsSnapshot {
    type Output = CountsSnapshot;
    fn sub(self, before: CountsSnapshot) -> CountsSnapshot {
        CountsSnapshot {
            auth_test: self.auth_test - before.auth_test,
            users_list: self.users_list - before.users_list,
            lookup_by_email: self.lookup_by_email - before.lookup_by_email,
            post_message: self.post_message - before.post_message,
            other: self.other - before.other,
        }
    }
}

struct FakeSlack {
    /// (lowercased e-mail, user ID), in users.list order.
    users: Vec<(String, String)>,
    by_email: HashMap<String, String>,
    counts: Counts,
    authorization: String,
}

#[derive(serde::Deserialize)]
struct PostMessage {
    channel: String,
}

type Reply = warp::http::Response<String>;

fn json(status: u16, body: String) -> Reply {
    warp::http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .unwrap_or_default()
}

fn error(code: &str) -> Reply {
    json(200, format!(r#"{{"ok":false,"error":"{code}"}}"#))
}

fn user_json(id: &str, email: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "team_id": "T1", "name": id, "deleted": false, "is_bot": false, "profile": {"email": email}})
}

impl FakeSlack {
    fn new(users: usize) -> FakeSlack {
        let users: Vec<(String, String)> =
            (0..users).map(|i| (email(i), format!("U{i:08}"))).collect();
        FakeSlack {
            by_email: users.iter().cloned().collect(),
            users,
            counts: Counts::default(),
            authorization: format!("Bearer {BOT_TOKEN}"),
        }
    }

    /// Binds 127.0.0.1:0 on the current runtime and serves until the runtime stops.
    async fn start(self: Arc<Self>) -> SocketAddr {
        let fake = self.clone();
        let route = warp::path!("api" / String)
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::query::<HashMap<String, String>>())
            .and(warp::body::bytes())
            .map(
                move |method: String,
                      authorization: Option<String>,
                      query: HashMap<String, String>,
                      body: bytes::Bytes| {
                    fake.answer(&method, authorization.as_deref(), &query, &body)
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Slack");
        let addr = listener.local_addr().expect("fake Slack address");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service =
                    hyper_util::service::TowerToHyperService::new(warp::service(route.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    fn answer(
        &self,
        method: &str,
        authorization: Option<&str>,
        query: &HashMap<String, String>,
        body: &[u8],
    ) -> Reply {
        let counter = match method {
            "auth.test" => &self.counts.auth_test,
            "users.list" => &self.counts.users_list,
            "users.lookupByEmail" => &self.counts.lookup_by_email,
            "chat.postMessage" => &self.counts.post_message,
            _ => &self.counts.other,
        };
        let seq = counter.fetch_add(1, Ordering::Relaxed);
        if authorization != Some(self.authorization.as_str()) {
            return error("invalid_auth");
        }
        // Slack takes arguments as a query string, a form or JSON: look in both places.
        let arg = |name: &str| -> Option<String> {
            query.get(name).cloned().or_else(|| {
                let value: serde_json::Value = serde_json::from_slice(body).ok()?;
                value[name].as_str().map(str::to_owned)
            })
        };
        match method {
            "auth.test" => {
                let mut reply = json(
                    200,
                    r#"{"ok":true,"url":"https://fake.slack.com/","team":"Fake","user":"coder","team_id":"T1","user_id":"UBOT","bot_id":"B1"}"#.into(),
                );
                reply.headers_mut().insert(
                    "x-oauth-scopes",
                    warp::http::HeaderValue::from_static("chat:write,users:read,users:read.email"),
                );
                reply
            }
            "users.list" => {
                let limit = arg("limit")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(100)
                    .clamp(1, 1000);
                let start = arg("cursor")
                    .and_then(|c| c.strip_prefix("page-").and_then(|n| n.parse().ok()))
                    .unwrap_or(0usize);
                let members: Vec<serde_json::Value> = self
                    .users
                    .iter()
                    .skip(start)
                    .take(limit)
                    .map(|(email, id)| user_json(id, email))
                    .collect();
                let next = if start + limit < self.users.len() {
                    format!("page-{}", start + limit)
                } else {
                    String::new()
                };
                json(
                    200,
                    serde_json::json!({"ok": true, "members": members, "response_metadata": {"next_cursor": next}})
                        .to_string(),
                )
            }
            "users.lookupByEmail" => {
                let email = arg("email").unwrap_or_default().to_lowercase();
                match self.by_email.get(&email) {
                    Some(id) => json(
                        200,
                        serde_json::json!({"ok": true, "user": user_json(id, &email)}).to_string(),
                    ),
                    None => error("users_not_found"),
                }
            }
            "chat.postMessage" => {
                let Ok(post) = serde_json::from_slice::<PostMessage>(body) else {
                    return error("invalid_arguments");
                };
                let channel = match post.channel.strip_prefix('U') {
                    Some(rest) => format!("D{rest}"),
                    None => post.channel,
                };
                json(
                    200,
                    format!(
                        r#"{{"ok":true,"channel":"{channel}","ts":"1700000000.{:06}"}}"#,
                        seq % 1_000_000
                    ),
                )
            }
            _ => error("unknown_method"),
        }
    }
}

fn email(i: usize) -> String {
    format!("user{i:05}@example.com")
}

// ---------------------------------------------------------------------------------------------
// Measurements: CPU from getrusage and /proc/self/task, memory from /proc/self/status.

/// User + system CPU of the whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of the live threads whose name starts with `prefix`: nanoseconds from
/// `schedstat` (user + system), or clock ticks from `stat` where schedstat is missing.
fn threads_cpu(prefix: &str) -> Duration {
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        if let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += Duration::from_nanos(ns);
            continue;
        }
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        if let Some(ticks) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
        {
            total += Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_second);
        }
    }
    total
}

/// User + system CPU of process `pid`, from `/proc/PID/stat`.
fn child_cpu(pid: u32) -> Duration {
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(Duration::ZERO, |ticks| {
            Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_second)
        })
}

/// A `/proc/self/status` line such as VmRSS or VmHWM, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    proc_status_kib("self", key)
}

/// The same line for process `pid` (`self` for this one).
fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// A webhook body with markers where the msg_id and the recipient go.
struct BodyTemplate {
    parts: Vec<(String, Option<bool>)>,
}

impl BodyTemplate {
    fn load() -> BodyTemplate {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/coder-webhook-samples")
            .join(SAMPLE);
        let raw =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut body: serde_json::Value = serde_json::from_slice(&raw).expect("sample is JSON");
        body["msg_id"] = MSG_ID_MARK.into();
        body["payload"]["user_email"] = EMAIL_MARK.into();
        let text = body.to_string();
        // Split into literal parts and holes: Some(true) = msg_id, Some(false) = e-mail.
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = [(MSG_ID_MARK, true), (EMAIL_MARK, false)]
                .into_iter()
                .filter_map(|(mark, is_id)| rest.find(mark).map(|at| (at, mark, is_id)))
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, mark, is_id)) => {
                    parts.push((rest[..at].to_owned(), Some(is_id)));
                    rest = &rest[at + mark.len()..];
                }
                None => {
                    parts.push((rest.to_owned(), None));
                    break;
                }
            }
        }
        BodyTemplate { parts }
    }

    fn fill(&self, msg_id: &str, email: &str) -> String {
        let mut out =
            String::with_capacity(self.parts.iter().map(|(p, _)| p.len()).sum::<usize>() + 128);
        for (literal, hole) in &self.parts {
            out.push_str(literal);
            match hole {
                Some(true) => out.push_str(msg_id),
                Some(false) => out.push_str(email),
                None => {}
            }
        }
        out
    }
}

#[derive(Default)]
struct Results {
    latencies: Vec<Duration>,
    delivered: u64,
    /// "HTTP 503 …" → count.
    others: BTreeMap<String, u64>,
}

/// Sends webhooks `first..first+count` at concurrency `c`; webhook `i` goes to user `i % u`.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    template: &Arc<BodyTemplate>,
    first: usize,
    count: usize,
    c: usize,
    u: usize,
) -> Results {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Results::default()));
    let mut workers = Vec::new();
    for _ in 0..c.min(count.max(1)) {
        let (client, url, template) = (client.clone(), url.to_owned(), template.clone());
        let (next, results) = (next.clone(), results.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Results::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let i = first + i;
                let body =
                    template.fill(&format!("00000000-0000-4000-8000-{i:012}"), &email(i % u));
                let started = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let answer = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let bytes = response.bytes().await.unwrap_or_default();
                        Ok((status, bytes))
                    }
                    Err(e) => Err(e),
                };
                mine.latencies.push(started.elapsed());
                match answer {
                    Ok((200, bytes)) if is_delivered(&bytes) => mine.delivered += 1,
                    Ok((status, bytes)) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let text: String = text.chars().take(160).collect();
                        *mine
                            .others
                            .entry(format!("HTTP {status} {text}"))
                            .or_default() += 1;
                    }
                    Err(e) => {
                        *mine
                            .others
                            .entry(format!("request failed: {}", e.without_url()))
                            .or_default() += 1
                    }
                }
            }
            let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
            all.latencies.append(&mut mine.latencies);
            all.delivered += mine.delivered;
            for (k, v) in mine.others {
                *all.others.entry(k).or_default() += v;
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    results.latencies.sort_unstable();
    results
}

fn is_delivered(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["status"] == "delivered" && v["channel"].is_string())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn per_dm(cpu: Duration, delivered: u64) -> String {
    if delivered == 0 {
        return "n/a".into();
    }
    format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / delivered as f64)
}

// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let options = match Options::from_args_and_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the {name} runtime: {e}"))
}

/// A bridge child process that is killed if the run ends early.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Returns whether every webhook was delivered.
fn run(o: Options) -> Result<bool, String> {
    if o.log {
        coder_slack_bridge::telemetry::init_logging(LogFormat::Text);
    }
    let run_started = Instant::now();
    // reqwest is built without a default crypto provider; the bridge installs ring.
    coder_slack_bridge::slack::install_crypto_provider();
    let driver = runtime("driver-rt", o.driver_threads)?;
    let bridge = runtime("bridge-rt", o.bridge_threads)?;

    // Fake Slack on the driver runtime.
    let fake = Arc::new(FakeSlack::new(o.u));
    let fake_addr = driver.block_on(fake.clone().start());

    // The bridge: a child process (BRIDGE_BIN), or in-process on its own runtime.
    let mut child = None;
    let mut app = None;
    let webhook_url;
    if let Some(bin) = &o.bridge_bin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot pick a port: {e}"))?
            .port();
        let process = std::process::Command::new(bin)
            .arg("serve")
            .env_clear()
            .env("SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SLACK_API_URL", format!("http://{fake_addr}/api"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("CODER_URL", "https://coder.example.com")
            // As operators run it: an info line per webhook, here to /dev/null.
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        child = Some(KillOnDrop(Some(process)));
        let base = format!("http://127.0.0.1:{port}");
        webhook_url = format!("{base}/v1/webhook");
        let expected = format!("coder_slack_bridge_directory_users {}\n", o.u);
        let warm = driver.block_on(async {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ready = client.get(format!("{base}/readyz")).send().await;
                let metrics = client.get(format!("{base}/metrics")).send().await;
                if let (Ok(ready), Ok(metrics)) = (ready, metrics) {
                    let text = metrics.bytes().await.unwrap_or_default();
                    if ready.status() == 200 && String::from_utf8_lossy(&text).contains(&expected) {
                        return Ok(());
                    }
                }
                if Instant::now() > deadline {
                    return Err(
                        "the bridge process was not ready with a warm directory after 30 s"
                            .to_owned(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        warm?;
    } else {
        let mut settings = Settings::defaults();
        settings.slack_bot_token = Some(BOT_TOKEN.into());
        settings.slack_app_token = None;
        settings.slack_api_url = format!("http://{fake_addr}/api");
        settings.listen_addr = Some("127.0.0.1:0".into());
        settings.port = None;
        settings.coder_url = Some("https://coder.example.com".into());
        settings.webhook_secret = None;
        settings.dry_run = false;
        settings.fallback_channel = None;
        let config = settings
            .validate(Needs::Serve)
            .map_err(|e| format!("settings: {e}"))?;
        let started = bridge.block_on(App::build(config))?;
        webhook_url = format!("http://{}/v1/webhook", started.local_addr());
        let directory = started
            .directory()
            .cloned()
            .ok_or("the bridge has no directory (dry run?)")?;
        app = Some(started);

        // Wait until the directory is warm and auth.test has been answered.
        let warm = bridge.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let len = directory.known_users().await;
                if len == o.u as u64 && fake.counts.auth_test.load(Ordering::Relaxed) > 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the directory holds {len} of {} users after 30 s",
                        o.u
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        warm?;
    }
    let child_pid = child.as_ref().and_then(|c| c.0.as_ref()).map(|c| c.id());
    // CPU of the bridge alone: the child process, or the bridge runtime's threads.
    let bridge_cpu = || match child_pid {
        Some(pid) => child_cpu(pid),
        None => threads_cpu("bridge-rt"),
    };
    let memory = |key: &str| match child_pid {
        Some(pid) => proc_status_kib(&pid.to_string(), key),
        None => status_kib(key),
    };
    let idle_rss = memory("VmRSS");
    let idle_hwm = memory("VmHWM");

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(o.c)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let template = Arc::new(BodyTemplate::load());

    let outcome = driver.block_on(async {
        tokio::time::timeout(RUN_LIMIT, async {
            let warmup = send_all(&client, &webhook_url, &template, 0, o.warmup, o.c, o.u).await;
            let slack_before = fake.counts.snapshot();
            let cpu_before = (process_cpu(), bridge_cpu());
            let started = Instant::now();
            let load = send_all(&client, &webhook_url, &template, o.warmup, o.n, o.c, o.u).await;
            let elapsed = started.elapsed();
            let cpu_after = (process_cpu(), bridge_cpu());
            let slack = fake.counts.snapshot() - slack_before;
            (
                warmup,
                load,
                elapsed,
                cpu_after.0.saturating_sub(cpu_before.0),
                cpu_after.1.saturating_sub(cpu_before.1),
                slack,
            )
        })
        .await
    });
    let Ok((warmup, load, elapsed, process_cpu_used, bridge_cpu_used, slack)) = outcome else {
        return Err(format!("the run did not finish within {RUN_LIMIT:?}"));
    };
    let peak_rss = memory("VmHWM");
    let end_rss = memory("VmRSS");

    // Stop the bridge cleanly, then both runtimes.
    let stopped = match (app, child) {
        (Some(app), _) => {
            app.shutdown_token().cancel();
            bridge
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped()).await
                })
                .is_ok()
        }
        (None, Some(mut guard)) => match guard.0.take() {
            Some(mut child) => {
                // SAFETY: kill only sends a signal to our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                child.wait().is_ok_and(|status| status.success())
            }
            None => true,
        },
        (None, None) => true,
    };
    bridge.shutdown_timeout(Duration::from_secs(5));
    driver.shutdown_timeout(Duration::from_secs(5));

    let delivered = load.delivered;
    let lat = &load.latencies;
    println!(
        "coder-slack-bridge load run (release={})",
        !cfg!(debug_assertions)
    );
    println!(
        "  setup: N={} webhooks, C={} concurrent, U={} users, {} warm-up webhooks not measured; \
         sample {SAMPLE}; bridge runtime {} threads, driver+fake Slack runtime {} threads, {} CPUs; bridge {}",
        o.n,
        o.c,
        o.u,
        o.warmup,
        o.bridge_threads,
        o.driver_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        match (&o.bridge_bin, o.log) {
            (Some(bin), _) => format!("{} as a child process, logging at info to /dev/null", bin.display()),
            (None, true) => "in-process, logging on (RUST_LOG or info, stderr)".to_owned(),
            (None, false) => "in-process, logging off (no subscriber)".to_owned(),
        },
    );
    println!(
        "  delivered:   {delivered}/{} (200 \"delivered\"){}",
        o.n,
        if warmup.delivered as usize == o.warmup {
            String::new()
        } else {
            format!("; warm-up delivered {}/{}", warmup.delivered, o.warmup)
        }
    );
    for (answer, count) in warmup.others.iter().chain(load.others.iter()) {
        println!("  OTHER ANSWER ×{count}: {answer}");
    }
    println!(
        "  throughput:  {:.0} webhooks/s ({} in {:.3} s)",
        o.n as f64 / elapsed.as_secs_f64(),
        o.n,
        elapsed.as_secs_f64()
    );
    println!(
        "  latency:     p50 {}  p99 {}  max {}  (client-side, request sent → answer read)",
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
    if child_pid.is_some() {
        println!(
            "  CPU per DM:  {} bridge process (user+sys from /proc/PID/stat, 10 ms ticks); \
             {} for the fake Slack and load client (this process)",
            per_dm(bridge_cpu_used, delivered),
            per_dm(process_cpu_used, delivered)
        );
        println!(
            "  memory:      bridge process idle RSS {} (directory warm, before any webhook), \
             peak RSS {} (VmHWM), RSS after load {}",
            mib(idle_rss),
            mib(peak_rss),
            mib(end_rss)
        );
    } else {
        println!(
            "  CPU per DM:  {} whole process (getrusage user+sys: bridge + fake Slack + load client \
             share this process, so an upper bound for the bridge)",
            per_dm(process_cpu_used, delivered)
        );
        println!(
            "               {} bridge runtime threads only (bridge-rt, /proc/self/task/*/schedstat); \
             {} for the fake Slack, client and the rest",
            per_dm(bridge_cpu_used, delivered),
            per_dm(process_cpu_used.saturating_sub(bridge_cpu_used), delivered)
        );
        println!(
            "  memory:      idle RSS {} (directory warm, before any webhook; VmHWM then {}), \
             peak RSS {} (VmHWM), RSS after load {} — whole process, so upper bounds for the bridge",
            mib(idle_rss),
            mib(idle_hwm),
            mib(peak_rss),
            mib(end_rss)
        );
    }
    let per = |calls: u64| {
        if delivered == 0 {
            0.0
        } else {
            calls as f64 / delivered as f64
        }
    };
    println!(
        "  Slack calls: {:.3} per DM during the load phase (chat.postMessage {}, users.lookupByEmail {}, users.list {}, auth.test {}, other {})",
        per(slack.post_message + slack.lookup_by_email + slack.users_list + slack.other),
        slack.post_message,
        slack.lookup_by_email,
        slack.users_list,
        slack.auth_test,
        slack.other
    );
    if !stopped {
        println!("  note: the bridge did not stop cleanly");
    }
    println!(
        "  total run time {:.1} s",
        run_started.elapsed().as_secs_f64()
    );
    Ok(delivered as usize == o.n && warmup.delivered as usize == o.warmup)
}
