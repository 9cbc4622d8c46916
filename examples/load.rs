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
//! Settings (flag or environment, `--help` lists them): `--n`/`N` webhooks (5000), `--c`/`C`
//! concurrency (20), `--u`/`U` users (50), `--members`/`MEMBERS` people the fake Slack's
//! `users.list` lists (U unless given: webhooks go to the first U, the others only fill the
//! bridge's directory), `--warmup`/`WARMUP` webhooks sent before measuring
//! (100), `--bridge-threads`/`BRIDGE_THREADS` and `--driver-threads`/`DRIVER_THREADS` worker
//! threads (the number of CPUs), `--log`/`LOG=1` installs the bridge's own log subscriber as the
//! binary does (info level unless `RUST_LOG`, on stderr), `--bridge-bin`/`BRIDGE_BIN` runs that
//! binary as a child process instead, `--database-url`/`DATABASE_URL` the bridge's store (a
//! fresh SQLite file in a temporary folder unless given; every run uses new `msg_id`s, so one
//! PostgreSQL database serves many runs), `--floor-bin`/`FLOOR_BIN` the bare relay to measure
//! against, `--profile-bytes`/`PROFILE_BYTES` Slack-sized member profiles in `users.list`, and
//! `--bridge-env KEY=VALUE` (repeatable) one more setting for the bridge binary, to measure what
//! a feature costs (e.g. `--bridge-env RUST_LOG=warn`), and `--routes false`/`ROUTES=false` runs it
//! without the routes file it otherwise loads (none of its routes takes the load's notification).
//!
//! The fake Slack is the tests' own (tests/support), in lean mode: it counts calls per method
//! and keeps nothing else, so it is not the bottleneck.

#[path = "../tests/support/mod.rs"]
mod support;

use clap::Parser;
use coder_slack_bridge::config::{Needs, Settings};
use coder_slack_bridge::telemetry::LogFormat;
use coder_slack_bridge::App;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::web_api::Options as FakeOptions;
use support::{FakeSlack, BOT_TOKEN};

const SAMPLE: &str = "TemplateWorkspaceAutoUpdated.json.golden";
const MSG_ID_MARK: &str = "@@MSG_ID@@";
const EMAIL_MARK: &str = "@@EMAIL@@";
/// Longest the whole run may take before it gives up.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// Longest the bridge may take to be ready with a warm directory.
const WARM_LIMIT: Duration = Duration::from_secs(30);

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// At least one.
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// The real bridge against a fast fake Slack on loopback: throughput, latency, CPU per DM.
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Options {
    /// Webhooks to send (measured).
    #[arg(long, env = "N", default_value_t = 5000, value_parser = positive())]
    n: usize,
    /// Webhooks in flight at once.
    #[arg(long, env = "C", default_value_t = 20, value_parser = positive())]
    c: usize,
    /// Users the webhooks are spread over.
    #[arg(long, env = "U", default_value_t = 50, value_parser = positive())]
    u: usize,
    /// Members the fake Slack lists in users.list (at least U; U unless given): the
    /// directory's size. With `--bridge-bin` and more members than users, a baseline bridge
    /// with U members is measured first, and the report gives the memory each member costs.
    #[arg(long, env = "MEMBERS", value_parser = positive())]
    members: Option<usize>,
    /// Bytes of profile fields on each member in the fake Slack's `users.list` pages (Slack's
    /// own are about 1,500–2,000; 0, the default, keeps them lean), to see a sweep's peak.
    #[arg(long, env = "PROFILE_BYTES", default_value_t = 0)]
    profile_bytes: usize,
    /// Webhooks sent before measuring.
    #[arg(long, env = "WARMUP", default_value_t = 100)]
    warmup: usize,
    /// Worker threads of the bridge's runtime.
    #[arg(long, env = "BRIDGE_THREADS", default_value_t = cpus(), value_parser = positive())]
    bridge_threads: usize,
    /// Worker threads of the fake Slack's and the load client's runtime.
    #[arg(long, env = "DRIVER_THREADS", default_value_t = cpus(), value_parser = positive())]
    driver_threads: usize,
    /// Install the bridge's own log subscriber, as the binary does.
    #[arg(long, env = "LOG")]
    log: bool,
    /// Run this binary as a child process instead of the bridge in-process, so CPU and
    /// memory are the bridge's alone.
    #[arg(long, env = "BRIDGE_BIN")]
    bridge_bin: Option<PathBuf>,
    /// Also measure the floor (`examples/floor.rs`: a bare relay, no rendering, dedupe, store
    /// or logging) in the same run against the same fake Slack, and print every figure of
    /// the bridge as a ratio to it. `just bench` builds it and passes it.
    #[arg(long, env = "FLOOR_BIN")]
    floor_bin: Option<PathBuf>,
    /// The bridge's store (sqlite://PATH or postgres://…); by default a fresh SQLite file
    /// in a temporary folder, removed afterwards.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The bridge's THREADS: `workspace` (the default: a card per workspace, edited with each
    /// notification) or `off`.
    #[arg(long, env = "THREADS", value_enum, default_value = "workspace")]
    threads: coder_slack_bridge::config::Threads,
    /// A setting for the bridge binary (with --bridge-bin), e.g. `--bridge-env RUST_LOG=warn`
    /// or `--bridge-env DATABASE_URL=sqlite::memory:`, to measure what one feature costs.
    /// Repeatable; set after the load example's own, so it wins.
    #[arg(long = "bridge-env", value_parser = key_value, requires = "bridge_bin")]
    bridge_env: Vec<(String, String)>,
    /// Whether the bridge runs with a routes file (`ROUTES_FILE`, [`ROUTES`]: the admins'
    /// broadcasts to a channel and two kinds copied to another) that the load's own
    /// notification passes through to its DM, as a deployment with routes does.
    #[arg(long, env = "ROUTES", default_value_t = true, action = clap::ArgAction::Set)]
    routes: bool,
}

/// The routes file the bridge loads unless `--routes false`: none of them takes the load's
/// notification (Workspace Automatically Updated), so each DM pays for looking them up.
const ROUTES: &str = r#"
[[route]]
notifications = ["@admin"]
channel = "C0ADMINS01"
collapse = "10m"

[[route]]
notifications = ["Workspace Autobuild Failed", "Workspace Marked as Dormant"]
channel = "C0PLATFORM"
dm = true
"#;

fn key_value(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {pair:?}")),
    }
}

impl Options {
    /// People in the fake Slack's users.list.
    fn members(&self) -> usize {
        self.members.unwrap_or(self.u)
    }
}

fn threads_value(threads: coder_slack_bridge::config::Threads) -> &'static str {
    match threads {
        coder_slack_bridge::config::Threads::Workspace => "workspace",
        coder_slack_bridge::config::Threads::Off => "off",
    }
}

/// Where the bridge under load keeps its state, and the folder to remove afterwards.
struct Store {
    url: String,
    temp_dir: Option<PathBuf>,
}

impl Store {
    fn new(url: Option<&str>) -> Result<Store, String> {
        let dir = std::env::temp_dir().join(format!("csb-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(match url {
            Some(url) => Store {
                url: url.to_owned(),
                temp_dir: Some(dir),
            },
            None => Store {
                url: format!("sqlite://{}", dir.join("state.db").display()),
                temp_dir: Some(dir),
            },
        })
    }

    /// The working folder of a child bridge (its default store would land there).
    fn dir(&self) -> &std::path::Path {
        self.temp_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
    }

    /// Writes [`ROUTES`] into the store's folder; its path.
    fn routes_file(&self) -> Result<PathBuf, String> {
        let path = self.dir().join("routes.toml");
        std::fs::write(&path, ROUTES)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// The URL without a password, for the report.
    fn shown(&self) -> String {
        coder_slack_bridge::state::Location::parse(&self.url).map_or_else(|e| e, |l| l.shown())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn email(i: usize) -> String {
    format!("user{i:05}@example.com")
}

/// The fake Slack on the current runtime, knowing `users` people, counting calls only.
async fn start_fake_slack(users: usize, profile_bytes: usize) -> FakeSlack {
    let slack = FakeSlack::start_with(FakeOptions {
        lean: true,
        profile_bytes,
        ..FakeOptions::default()
    })
    .await;
    for i in 0..users {
        slack.add_user(&email(i), &format!("U{i:08}"));
    }
    slack
}

/// Calls of one method in `after` that were not yet in `before`.
fn calls_since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(method, n)| (method.clone(), n - before.get(method).copied().unwrap_or(0)))
        .collect()
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
        total += stat_cpu(&dir.join("stat"));
    }
    total
}

/// User + system CPU of process `pid`, from `/proc/PID/stat`.
fn child_cpu(pid: u32) -> Duration {
    stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// User + system CPU from a `stat` file (a process's or a thread's), in clock ticks.
fn stat_cpu(path: &std::path::Path) -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    // Fields after the parenthesised name: utime and stime are the 12th and 13th.
    std::fs::read_to_string(path)
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
        let mut body = support::sample(SAMPLE);
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

/// Webhook `i`'s msg_id: new to every run, so runs on one database are not duplicates.
fn msg_id(i: usize) -> String {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| fastrand::u32(..));
    format!("{run:08x}-0000-4000-8000-{i:012}")
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
                let body = template.fill(&msg_id(i), &email(i % u));
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
// The run: start, warm up, measure, stop, report.

fn main() -> std::process::ExitCode {
    let options = Options::parse();
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

/// The bridge under load, with where to post webhooks.
struct Bridge {
    webhook_url: String,
    how: Running,
}

enum Running {
    /// A child process (`--bridge-bin`), killed if the run ends early.
    Child(KillOnDrop),
    InProcess(App),
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

impl Bridge {
    fn child_pid(&self) -> Option<u32> {
        match &self.how {
            Running::Child(guard) => guard.0.as_ref().map(|c| c.id()),
            Running::InProcess(_) => None,
        }
    }

    /// CPU of the bridge alone: the child process, or the bridge runtime's threads.
    fn cpu(&self) -> Duration {
        match self.child_pid() {
            Some(pid) => child_cpu(pid),
            None => threads_cpu("bridge-rt"),
        }
    }

    /// A `/proc/…/status` line of the bridge's process, in KiB.
    fn memory(&self, key: &str) -> Option<u64> {
        match self.child_pid() {
            Some(pid) => proc_status_kib(&pid.to_string(), key),
            None => status_kib(key),
        }
    }
}

/// Starts `bin` as the bridge against `api_url` and waits until it is ready with all `users`.
fn start_child(
    bin: &std::path::Path,
    api_url: &str,
    (users, threads): (usize, coder_slack_bridge::config::Threads),
    store: &Store,
    (routes, extra_env): (bool, &[(String, String)]),
    driver: &tokio::runtime::Runtime,
) -> Result<Bridge, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot pick a port: {e}"))?
        .port();
    // Absolute: the child works in the store's folder.
    let bin = std::fs::canonicalize(bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut command = std::process::Command::new(&bin);
    command.env_clear();
    if routes {
        command.env("ROUTES_FILE", store.routes_file()?);
    }
    let process = command
        .arg("serve")
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_API_URL", api_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("CODER_URL", "https://coder.test")
        .env("DATABASE_URL", &store.url)
        .env("THREADS", threads_value(threads))
        .current_dir(store.dir())
        // As operators run it: an info line per webhook, here to /dev/null.
        .env("RUST_LOG", "info")
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let bridge = Bridge {
        webhook_url: format!("http://127.0.0.1:{port}/v1/webhook"),
        how: Running::Child(KillOnDrop(Some(process))),
    };
    let base = format!("http://127.0.0.1:{port}");
    let expected = format!("coder_slack_bridge_directory_users {users}\n");
    let client = reqwest::Client::new();
    let warm = || async {
        let ready = client.get(format!("{base}/readyz")).send().await;
        let metrics = client.get(format!("{base}/metrics")).send().await;
        let (Ok(ready), Ok(metrics)) = (ready, metrics) else {
            return false;
        };
        let text = metrics.bytes().await.unwrap_or_default();
        ready.status() == 200 && String::from_utf8_lossy(&text).contains(&expected)
    };
    driver.block_on(poll(warm)).map_err(|()| {
        format!("the bridge process was not ready with a warm directory after {WARM_LIMIT:?}")
    })?;
    Ok(bridge)
}

/// Builds the bridge in-process on `runtime` against `slack` and waits until its directory
/// holds all `users` and auth.test has been answered.
fn start_in_process(
    slack: &FakeSlack,
    (users, threads): (usize, coder_slack_bridge::config::Threads),
    (store, routes): (&Store, bool),
    runtime: &tokio::runtime::Runtime,
) -> Result<Bridge, String> {
    let mut settings = Settings::defaults();
    settings.slack_bot_token = Some(BOT_TOKEN.into());
    settings.slack_app_token = None;
    settings.slack_api_url = slack.api_url();
    settings.listen_addr = Some("127.0.0.1:0".into());
    settings.port = None;
    settings.coder_url = Some("https://coder.test".into());
    settings.webhook_secret = None;
    settings.dry_run = false;
    settings.fallback_channel = None;
    settings.database_url = store.url.clone().into();
    settings.threads = threads;
    settings.routes_file = if routes {
        Some(store.routes_file()?)
    } else {
        None
    };
    let config = settings
        .validate(Needs::Serve)
        .map_err(|e| format!("settings: {e}"))?;
    let app = runtime.block_on(App::build(config))?;
    let directory = app
        .directory()
        .cloned()
        .ok_or("the bridge has no directory (dry run?)")?;
    let bridge = Bridge {
        webhook_url: format!("http://{}/v1/webhook", app.local_addr()),
        how: Running::InProcess(app),
    };
    let warm = || async {
        directory.known_users().await == users as u64
            && slack.counts().get("auth.test").is_some_and(|&n| n > 0)
    };
    runtime.block_on(poll(warm)).map_err(|()| {
        format!("the directory does not hold all {users} users after {WARM_LIMIT:?}")
    })?;
    Ok(bridge)
}

/// Polls `ready` every 10 ms until it holds, for at most [`WARM_LIMIT`].
async fn poll<F, Fut>(ready: F) -> Result<(), ()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WARM_LIMIT;
    while !ready().await {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What the measured phase saw.
struct Measured {
    warmup: Results,
    load: Results,
    elapsed: Duration,
    process_cpu: Duration,
    bridge_cpu: Duration,
    /// Slack calls by method during the load phase.
    slack: BTreeMap<String, u64>,
}

/// Sends the warm-up, then the measured webhooks, and takes CPU and Slack calls around them.
async fn measure(o: &Options, bridge: &Bridge, slack: &FakeSlack) -> Result<Measured, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(o.c)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let template = Arc::new(BodyTemplate::load());
    let url = &bridge.webhook_url;
    let warmup = send_all(&client, url, &template, 0, o.warmup, o.c, o.u).await;
    let slack_before = slack.counts();
    let cpu_before = (process_cpu(), bridge.cpu());
    let started = Instant::now();
    let load = send_all(&client, url, &template, o.warmup, o.n, o.c, o.u).await;
    let elapsed = started.elapsed();
    let cpu_after = (process_cpu(), bridge.cpu());
    Ok(Measured {
        warmup,
        load,
        elapsed,
        process_cpu: cpu_after.0.saturating_sub(cpu_before.0),
        bridge_cpu: cpu_after.1.saturating_sub(cpu_before.1),
        slack: calls_since(&slack_before, &slack.counts()),
    })
}

/// Stops the bridge cleanly; whether it did.
fn stop(bridge: Bridge, runtime: &tokio::runtime::Runtime) -> bool {
    match bridge.how {
        Running::InProcess(app) => {
            app.shutdown_token().cancel();
            runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped()).await
                })
                .is_ok()
        }
        Running::Child(mut guard) => match guard.0.take() {
            Some(mut child) => {
                // SAFETY: kill only sends a signal to our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                child.wait().is_ok_and(|status| status.success())
            }
            None => true,
        },
    }
}

/// The bridge's memory at three moments, in KiB.
struct Memory {
    idle_rss: Option<u64>,
    idle_hwm: Option<u64>,
    peak_rss: Option<u64>,
    end_rss: Option<u64>,
}

/// Returns whether every webhook was delivered.
fn run(o: Options) -> Result<bool, String> {
    if o.log {
        coder_slack_bridge::telemetry::init_logging(LogFormat::Text);
    }
    let run_started = Instant::now();
    support::install_crypto_provider();
    let driver = runtime("driver-rt", o.driver_threads)?;
    let bridge_rt = runtime("bridge-rt", o.bridge_threads)?;
    let baseline = baseline(&o, &driver)?;
    let slack = driver.block_on(start_fake_slack(o.members(), o.profile_bytes));
    let floor = match &o.floor_bin {
        Some(bin) => Some(run_floor(&o, bin, &slack, &driver)?),
        None => None,
    };
    let store = Store::new(o.database_url.as_deref())?;
    let bridge = match &o.bridge_bin {
        Some(bin) => start_child(
            bin,
            &slack.api_url(),
            (o.members(), o.threads),
            &store,
            (o.routes, &o.bridge_env),
            &driver,
        )?,
        None => start_in_process(
            &slack,
            (o.members(), o.threads),
            (&store, o.routes),
            &bridge_rt,
        )?,
    };
    let idle_rss = bridge.memory("VmRSS");
    let idle_hwm = bridge.memory("VmHWM");
    // The timeout's timer belongs to the driver runtime: made inside it.
    let measured = driver
        .block_on(async { tokio::time::timeout(RUN_LIMIT, measure(&o, &bridge, &slack)).await })
        .map_err(|_| format!("the run did not finish within {RUN_LIMIT:?}"))??;
    let memory = Memory {
        idle_rss,
        idle_hwm,
        peak_rss: bridge.memory("VmHWM"),
        end_rss: bridge.memory("VmRSS"),
    };
    let in_child = bridge.child_pid().is_some();
    let stopped = stop(bridge, &bridge_rt);
    bridge_rt.shutdown_timeout(Duration::from_secs(5));
    driver.shutdown_timeout(Duration::from_secs(5));
    report(&o, &measured, &memory, in_child, stopped);
    if o.members.is_some() {
        report_members(&o, &memory, baseline.as_ref(), in_child);
    }
    if let Some((floor, floor_memory)) = &floor {
        report_floor(floor, floor_memory, &measured, &memory, in_child);
    }
    println!(
        "  store:       {}; THREADS={}; routes file: {}",
        store.shown(),
        threads_value(o.threads),
        if o.routes { "loaded" } else { "none" }
    );
    if !o.bridge_env.is_empty() {
        let settings: Vec<String> = o
            .bridge_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  also set:    {} (these win over the above)",
            settings.join(" ")
        );
    }
    println!(
        "  total run time {:.1} s",
        run_started.elapsed().as_secs_f64()
    );
    let floor_ok = floor
        .as_ref()
        .is_none_or(|(f, _)| f.load.delivered as usize == o.n);
    Ok(floor_ok
        && measured.load.delivered as usize == o.n
        && measured.warmup.delivered as usize == o.warmup)
}

/// A baseline run's idle VmRSS and VmHWM, in KiB.
type Baseline = (Option<u64>, Option<u64>);

/// The baseline run `--members` asks for, if any (see [`baseline_memory`]).
fn baseline(o: &Options, driver: &tokio::runtime::Runtime) -> Result<Option<Baseline>, String> {
    if o.members() < o.u {
        return Err(format!(
            "--members {} is fewer than --u {}: the webhooks go to the first U members",
            o.members(),
            o.u
        ));
    }
    match &o.bridge_bin {
        Some(bin) if o.members() > o.u => baseline_memory(o, bin, driver).map(Some),
        _ => Ok(None),
    }
}

/// The bridge binary `bin` against a fake Slack of U members only, started, measured idle
/// and stopped: what the per-member figures are taken against.
fn baseline_memory(
    o: &Options,
    bin: &std::path::Path,
    driver: &tokio::runtime::Runtime,
) -> Result<Baseline, String> {
    let slack = driver.block_on(start_fake_slack(o.u, o.profile_bytes));
    let store = Store::new(o.database_url.as_deref())?;
    let bridge = start_child(
        bin,
        &slack.api_url(),
        (o.u, o.threads),
        &store,
        (o.routes, &o.bridge_env),
        driver,
    )?;
    let idle = (bridge.memory("VmRSS"), bridge.memory("VmHWM"));
    if !stop(bridge, driver) {
        println!("  note: the baseline bridge did not stop cleanly");
    }
    Ok(idle)
}

/// What the directory's members cost: against the baseline run when there is one, else
/// the idle RSS divided by the members (an upper bound: the rest of the process is in it).
fn report_members(o: &Options, memory: &Memory, baseline: Option<&Baseline>, in_child: bool) {
    let members = o.members();
    let Some((base_rss, base_hwm)) = baseline else {
        let per = memory.idle_rss.map_or("n/a".into(), |k| {
            format!("{:.0}", k as f64 * 1024.0 / members as f64)
        });
        let scope = if in_child {
            "bridge process"
        } else {
            "whole process"
        };
        println!(
            "  members:     {members} in users.list; idle RSS {} ({scope}) / {members} = {per} bytes \
             a member, an upper bound (a baseline run with --bridge-bin and --members above --u \
             gives the difference; else compare two runs)",
            mib(memory.idle_rss)
        );
        return;
    };
    let extra = (members - o.u) as f64;
    let per = |with: Option<u64>, without: Option<u64>| match (with, without) {
        (Some(with), Some(without)) => {
            format!("{:.0}", (with as f64 - without as f64) * 1024.0 / extra)
        }
        _ => "n/a".into(),
    };
    println!(
        "  members:     {members} in users.list, against U={} in a baseline run of the same binary: \
         idle RSS {} vs {} = {} bytes a member; VmHWM at idle (the sweep's peak) {} vs {} = {} \
         bytes a member",
        o.u,
        mib(memory.idle_rss),
        mib(*base_rss),
        per(memory.idle_rss, *base_rss),
        mib(memory.idle_hwm),
        mib(*base_hwm),
        per(memory.idle_hwm, *base_hwm),
    );
}

/// Starts the floor relay as a child process against `slack`, measures it as the bridge is
/// measured, and stops it.
fn run_floor(
    o: &Options,
    bin: &std::path::Path,
    slack: &FakeSlack,
    driver: &tokio::runtime::Runtime,
) -> Result<(Measured, Memory), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot pick a port: {e}"))?
        .port();
    let process = std::process::Command::new(bin)
        .env_clear()
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_API_URL", slack.api_url())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let floor = Bridge {
        webhook_url: format!("http://127.0.0.1:{port}/v1/webhook"),
        how: Running::Child(KillOnDrop(Some(process))),
    };
    let client = reqwest::Client::new();
    let up = || async { client.get(&floor.webhook_url).send().await.is_ok() };
    driver
        .block_on(poll(up))
        .map_err(|()| format!("the floor did not answer within {WARM_LIMIT:?}"))?;
    let (idle_rss, idle_hwm) = (floor.memory("VmRSS"), floor.memory("VmHWM"));
    let measured = driver
        .block_on(async { tokio::time::timeout(RUN_LIMIT, measure(o, &floor, slack)).await })
        .map_err(|_| format!("the floor's run did not finish within {RUN_LIMIT:?}"))??;
    let memory = Memory {
        idle_rss,
        idle_hwm,
        peak_rss: floor.memory("VmHWM"),
        end_rss: floor.memory("VmRSS"),
    };
    drop(floor);
    Ok((measured, memory))
}

/// The floor's figures, and the bridge's as ratios to them.
fn report_floor(
    floor: &Measured,
    floor_memory: &Memory,
    bridge: &Measured,
    memory: &Memory,
    in_child: bool,
) {
    let per_dm_us =
        |m: &Measured, cpu: Duration| cpu.as_secs_f64() * 1e6 / (m.load.delivered.max(1) as f64);
    let floor_cpu = per_dm_us(floor, floor.bridge_cpu);
    let bridge_cpu = per_dm_us(bridge, bridge.bridge_cpu);
    let (f50, f99) = (
        percentile(&floor.load.latencies, 50.0),
        percentile(&floor.load.latencies, 99.0),
    );
    let (b50, b99) = (
        percentile(&bridge.load.latencies, 50.0),
        percentile(&bridge.load.latencies, 99.0),
    );
    println!("floor (examples/floor.rs, a bare relay: parse, one chat.postMessage, answer), same fake Slack, same load:");
    println!(
        "  delivered {}/{}; throughput {:.0} webhooks/s; latency p50 {} p99 {}; CPU per DM {:.1} µs; idle RSS {}, peak RSS {}",
        floor.load.delivered,
        floor.load.latencies.len(),
        floor.load.latencies.len() as f64 / floor.elapsed.as_secs_f64(),
        ms(f50),
        ms(f99),
        floor_cpu,
        mib(floor_memory.idle_rss),
        mib(floor_memory.peak_rss),
    );
    let ratio = |bridge: f64, floor: f64| {
        if floor > 0.0 {
            format!("×{:.2}", bridge / floor)
        } else {
            "n/a".into()
        }
    };
    let kib = |k: Option<u64>| k.map_or(0.0, |k| k as f64);
    let scope = if in_child {
        ""
    } else {
        " (bridge in-process: its CPU is its runtime's threads, its memory the whole process's)"
    };
    println!(
        "bridge / floor{scope}: CPU per DM {}, peak RSS {}, idle RSS {}, p50 {}, p99 {}, throughput {}",
        ratio(bridge_cpu, floor_cpu),
        ratio(kib(memory.peak_rss), kib(floor_memory.peak_rss)),
        ratio(kib(memory.idle_rss), kib(floor_memory.idle_rss)),
        ratio(b50.as_secs_f64(), f50.as_secs_f64()),
        ratio(b99.as_secs_f64(), f99.as_secs_f64()),
        ratio(
            bridge.load.latencies.len() as f64 / bridge.elapsed.as_secs_f64(),
            floor.load.latencies.len() as f64 / floor.elapsed.as_secs_f64()
        ),
    );
}

/// Prints what the run measured.
fn report(o: &Options, m: &Measured, memory: &Memory, in_child: bool, stopped: bool) {
    let (warmup, load) = (&m.warmup, &m.load);
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
        o.n as f64 / m.elapsed.as_secs_f64(),
        o.n,
        m.elapsed.as_secs_f64()
    );
    println!(
        "  latency:     p50 {}  p99 {}  max {}  (client-side, request sent → answer read)",
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default())
    );
    if in_child {
        println!(
            "  CPU per DM:  {} bridge process (user+sys from /proc/PID/stat, 10 ms ticks); \
             {} for the fake Slack and load client (this process)",
            per_dm(m.bridge_cpu, delivered),
            per_dm(m.process_cpu, delivered)
        );
        println!(
            "  memory:      bridge process idle RSS {} (directory warm, before any webhook), \
             peak RSS {} (VmHWM), RSS after load {}",
            mib(memory.idle_rss),
            mib(memory.peak_rss),
            mib(memory.end_rss)
        );
    } else {
        println!(
            "  CPU per DM:  {} whole process (getrusage user+sys: bridge + fake Slack + load client \
             share this process, so an upper bound for the bridge)",
            per_dm(m.process_cpu, delivered)
        );
        println!(
            "               {} bridge runtime threads only (bridge-rt, /proc/self/task/*/schedstat); \
             {} for the fake Slack, client and the rest",
            per_dm(m.bridge_cpu, delivered),
            per_dm(m.process_cpu.saturating_sub(m.bridge_cpu), delivered)
        );
        println!(
            "  memory:      idle RSS {} (directory warm, before any webhook; VmHWM then {}), \
             peak RSS {} (VmHWM), RSS after load {} — whole process, so upper bounds for the bridge",
            mib(memory.idle_rss),
            mib(memory.idle_hwm),
            mib(memory.peak_rss),
            mib(memory.end_rss)
        );
    }
    let slack = &m.slack;
    let calls = |method: &str| slack.get(method).copied().unwrap_or(0);
    let other = slack.values().sum::<u64>()
        - [
            "chat.postMessage",
            "users.lookupByEmail",
            "users.list",
            "auth.test",
        ]
        .into_iter()
        .map(calls)
        .sum::<u64>();
    let per = |calls: u64| {
        if delivered == 0 {
            0.0
        } else {
            calls as f64 / delivered as f64
        }
    };
    println!(
        "  Slack calls: {:.3} per DM during the load phase (chat.postMessage {}, users.lookupByEmail {}, users.list {}, auth.test {}, other {})",
        per(slack.values().sum::<u64>() - calls("auth.test")),
        calls("chat.postMessage"),
        calls("users.lookupByEmail"),
        calls("users.list"),
        calls("auth.test"),
        other
    );
    if !stopped {
        println!("  note: the bridge did not stop cleanly");
    }
}
