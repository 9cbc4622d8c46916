//! The SQLite store's files on disk: readable by the bridge's user alone, and a disk that
//! will not take another page takes the bridge out of readiness.

use crate::support::*;
use coder_slack_bridge::state::{Location, Store};
use std::time::Duration;

/// The bridge in `dir` against `slack`, its store the default file there; SIGXFSZ ignored, so
/// a file size limit shows as a failed write, as a full disk does, not as a killed process.
#[cfg(target_os = "linux")]
fn bridge_in(dir: &std::path::Path, slack: &FakeSlack) -> tokio::process::Command {
    let mut command = bridge_binary(dir);
    command
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_API_URL", slack.api_url())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("CODER_URL", "http://test.com");
    // SAFETY: only sets a signal's disposition (one system call) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    command
}

/// Lets the process `pid` write no file past `bytes`: from then on its SQLite file can
/// neither grow nor have its WAL grow, as on a full disk.
#[cfg(target_os = "linux")]
fn limit_file_size(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: prlimit reads `limit` and writes nothing back (null old limit).
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_store_that_cannot_write_a_page_makes_readyz_503_naming_the_store() {
    let slack = FakeSlack::start().await;
    slack.add_user("bobby@coder.com", "UBOBBY");
    let dir = fresh_dir("full-disk");
    let (child, addr, _log) = spawn_bridge(bridge_in(&dir, &slack)).await;
    let client = http_client();
    let readyz = async || {
        let response = client.get(format!("http://{addr}/readyz")).send().await;
        let response = response.expect("readyz answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    };
    wait_until("the bridge is ready", WAIT, async || {
        readyz().await.0 == 200
    })
    .await;

    // The disk is full from now on: nothing may grow past what the database holds now.
    let database = dir.join("coder-slack-bridge.db");
    let size = std::fs::metadata(&database)
        .expect("the store's file")
        .len();
    limit_file_size(child.id().expect("running"), size);
    // Claims fill the pages there are, then the WAL, then every one fails.
    let url = format!("http://{addr}/v1/webhook");
    let mut refused = None;
    for _ in 0..5_000 {
        let (status, _, answer) =
            post_webhook(&client, &url, &workspace_deleted("bobby@coder.com")).await;
        if status != 200 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("the store refuses claims once the disk is full");
    assert_eq!(status, 503, "{answer}");

    // The store's own check notices too (it runs every 5 s), whatever else is sent.
    wait_until(
        "/readyz answers 503 naming the store",
        Duration::from_secs(20),
        async || {
            let (status, body) = readyz().await;
            status == 503 && body.contains("the store (DATABASE_URL)")
        },
    )
    .await;
}
#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_files_are_readable_by_the_bridges_user_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = fresh_dir("modes").join("state.db");
    let store = Store::open(&Location::Sqlite(path.clone()))
        .await
        .expect("opens");
    // A write, so the WAL and its index are there too.
    store.health().await.expect("healthy");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).expect(&file).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {:o}", mode & 0o777);
    }
}
