//! Arbitrary bytes as a webhook body: whatever `Notification::parse` accepts must render, with
//! and without the fallback note, into a message within every Block Kit limit.
#![no_main]

use coder_slack_bridge::coder::Notification;
use coder_slack_bridge_fuzz::{options, render_and_check, FALLBACK_NOTE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(n) = Notification::parse(data, None) else {
        return;
    };
    render_and_check(&n, &options(), &[None, Some(FALLBACK_NOTE)]);
});
