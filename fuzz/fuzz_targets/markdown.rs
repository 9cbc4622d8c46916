//! Arbitrary UTF-8 as the texts of a well-formed webhook body (body_markdown, title, body,
//! title_markdown, notification_name, note, action labels and URLs; NUL-separated), so the
//! fuzzer spends its time in the Markdown → mrkdwn converter and the section splitter instead
//! of in JSON syntax. Same check as `payload_render`.
#![no_main]

use coder_slack_bridge::coder::Notification;
use coder_slack_bridge_fuzz::{options, render_and_check, structured, FALLBACK_NOTE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = structured(data);
    let n = Notification::parse(&input.body, None).expect("the built body is a valid notification");
    let options = options();
    render_and_check(
        &n,
        &options,
        &[None, Some(FALLBACK_NOTE), input.note.as_deref()],
    );
    // Without CODER_URL relative action URLs are skipped instead of resolved.
    render_and_check(&n, &Default::default(), &[None]);
});
