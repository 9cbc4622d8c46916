//! Waiting for something that happens on another task: poll with a deadline, so a test
//! fails with a message rather than hangs. Where a signal exists (e.g.
//! `FakeSlack::wait_for`), prefer it.

use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The usual bound on a wait in the bridge tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a condition is polled: short, since each check is cheap.
const POLL: Duration = Duration::from_millis(5);

/// Polls `condition` until it holds; panics naming `what` once `within` has passed.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `find` until it finds something, and gives that; panics naming `what` once
/// `within` has passed.
pub async fn wait_for_value<T>(
    what: &str,
    within: Duration,
    mut find: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = find().await {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `holds` is true, looking again each time `changed` is signalled; panics after
/// [`WAIT`] naming `what` and what `seen` describes. For fakes that signal each request.
pub async fn wait_signalled(
    changed: &Notify,
    what: &str,
    holds: impl Fn() -> bool,
    seen: impl Fn() -> String,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let notified = changed.notified();
        if holds() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("timed out waiting for {what}; {}", seen());
        }
    }
}
