//! The subcommands besides `serve`, each in the library so its whole path is tested.

mod check;
mod check_coder;
mod check_listen;
mod check_routes;
mod preview;
mod send_test;

pub use check::check;
pub use preview::preview;
pub use send_test::send_test;

use crate::config::{human_duration, Config};

/// What `check` and `preview` say of store and forward (`QUEUE_MAX_AGE`, `QUEUE_MAX_DEPTH`):
/// `ok` and how it is set, or `warn` when it is off, since then a long Slack outage loses
/// notifications.
fn store_and_forward(config: &Config) -> (&'static str, String) {
    let Some(limits) = config.queue else {
        return ("warn", "store and forward: off (QUEUE_MAX_AGE=0): a Slack outage longer than Coder's retries (about 20 minutes) loses notifications".into());
    };
    let expired = match &config.fallback_channel {
        Some(channel) => format!("go to FALLBACK_CHANNEL {channel}"),
        None => "are dropped, with an error log (set FALLBACK_CHANNEL to keep them)".into(),
    };
    let text = format!(
        "store and forward: on (QUEUE_MAX_AGE {}, QUEUE_MAX_DEPTH {}): what Slack cannot take waits in the outbox in the store until it can; notifications older than QUEUE_MAX_AGE {expired}",
        human_duration(limits.max_age),
        limits.max_depth,
    );
    ("ok", text)
}
