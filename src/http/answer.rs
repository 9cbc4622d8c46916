//! What the webhook answers: JSON bodies with the status Coder acts on (2xx is final, any
//! other status is retried), the `outcome` label each answer is counted under, and the
//! rate-limited warnings about refused webhooks.

use super::admit::{Admitted, Refusal, Refused, MAX_BODY_BYTES};
use super::State;
use crate::delivery::{Answer, Outcome, RetryLater};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;

pub fn json_reply(status: StatusCode, body: impl serde::Serialize) -> Response {
    // Serialising our own values cannot fail; the fallback keeps the answer JSON regardless.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(bytes::Bytes::from(bytes).into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error_reply(status: StatusCode, message: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": message.into() }))
}

fn retry_reply(reason: &str, retry_after: Duration) -> Response {
    let mut response = error_reply(StatusCode::SERVICE_UNAVAILABLE, reason);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    response
}

/// The `outcome` label of the webhooks counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Unauthorized,
    Rejected,
    Retry,
    Duplicate,
    Delivered,
    Undeliverable,
    DryRun,
    Snoozed,
    Queued,
    Collapsed,
}

impl Label {
    pub const ALL: [Label; 10] = [
        Label::Unauthorized,
        Label::Rejected,
        Label::Retry,
        Label::Duplicate,
        Label::Delivered,
        Label::Undeliverable,
        Label::DryRun,
        Label::Snoozed,
        Label::Queued,
        Label::Collapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Unauthorized => "unauthorized",
            Label::Rejected => "rejected",
            Label::Retry => "retry",
            Label::Duplicate => "duplicate",
            Label::Delivered => "delivered",
            Label::Undeliverable => "undeliverable",
            Label::DryRun => "dry_run",
            Label::Snoozed => "snoozed",
            Label::Queued => "queued",
            Label::Collapsed => "collapsed",
        }
    }

    fn of_refusal(refusal: Refusal) -> Label {
        match refusal {
            Refusal::WrongSecret => Label::Unauthorized,
            Refusal::Busy => Label::Retry,
            _ => Label::Rejected,
        }
    }
}

/// Delivers an admitted notification and answers; counted and timed.
pub async fn delivered(state: &State, admitted: Admitted) -> Response {
    let started = admitted.started;
    let (label, response) = deliver(state, admitted).await;
    state.count(label, started);
    response
}

/// Answers a refused webhook; warned about (rate-limited), counted and timed.
pub fn refused(state: &State, refused: &Refused) -> Response {
    let response = refusal_reply(refused);
    state
        .refusals
        .warn(refused, response.status(), refused.peer);
    state.count(Label::of_refusal(refused.refusal), refused.started);
    response
}

fn refusal_reply(refused: &Refused) -> Response {
    let (status, message) = match refused.refusal {
        Refusal::WrongSecret => {
            let mut response = error_reply(
                StatusCode::UNAUTHORIZED,
                "missing or wrong webhook credentials: put WEBHOOK_SECRET in Coder's webhook URL as http://coder:SECRET@host/v1/webhook",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"coder-slack-bridge\""),
            );
            return response;
        }
        Refusal::Busy => {
            return retry_reply("too many webhook requests at once", Duration::from_secs(5))
        }
        Refusal::NotJson => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json".to_owned(),
        ),
        Refusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        Refusal::Unreadable => (StatusCode::BAD_REQUEST, "body could not be read".to_owned()),
        Refusal::TooSlow => (
            StatusCode::REQUEST_TIMEOUT,
            "the body was not received in time".to_owned(),
        ),
        Refusal::Invalid => (
            StatusCode::BAD_REQUEST,
            refused.detail.clone().unwrap_or_default(),
        ),
    };
    error_reply(status, message)
}

/// Delivery runs in its own task so that Coder giving up on this request (or the connection
/// dropping) cannot cut a Slack call in half; shutdown waits for it.
async fn deliver(state: &State, admitted: Admitted) -> (Label, Response) {
    let delivery = state.delivery.clone();
    let Admitted {
        started,
        notification,
        body,
        permit: _permit,
    } = admitted;
    let task = state
        .tasks
        .spawn(async move { (delivery.deliver(&notification, &body).await, notification) });
    let Ok((result, notification)) = task.await else {
        return (
            Label::Retry,
            retry_reply("delivery was interrupted", Duration::from_secs(60)),
        );
    };
    let (label, response) = answer(result);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (msg_id, template) = (&notification.msg_id, &notification.notification_name);
    // Routine outcomes are counted in webhooks_total and logged at debug (a line per webhook
    // at info cost ~10% of the CPU per DM); the ones an operator acts on stay at info.
    match label {
        Label::Delivered | Label::Duplicate | Label::Snoozed | Label::DryRun | Label::Collapsed => {
            tracing::debug!(%msg_id, %template, outcome = label.as_str(), elapsed_ms, "webhook answered")
        }
        _ => {
            tracing::info!(%msg_id, %template, outcome = label.as_str(), elapsed_ms, "webhook answered")
        }
    }
    (label, response)
}

fn answer(result: Result<Answer, RetryLater>) -> (Label, Response) {
    match result {
        Ok(Answer::Duplicate) => (
            Label::Duplicate,
            json_reply(StatusCode::OK, json!({"status": "duplicate"})),
        ),
        Ok(Answer::Fresh(outcome)) => {
            let label = match &outcome {
                Outcome::Delivered { .. } => Label::Delivered,
                Outcome::Undeliverable { .. } => Label::Undeliverable,
                Outcome::DryRun => Label::DryRun,
                Outcome::Snoozed => Label::Snoozed,
                Outcome::Queued => Label::Queued,
                Outcome::Collapsed { .. } => Label::Collapsed,
            };
            (label, json_reply(StatusCode::OK, &outcome))
        }
        Err(retry) => (Label::Retry, retry_reply(&retry.reason, retry.retry_after)),
    }
}

/// At most one warning per kind of refusal per [`RefusalLog::WINDOW`], so a misconfigured
/// sender cannot flood the log; the warnings left out are counted in the next one.
#[derive(Default)]
pub struct RefusalLog {
    kinds: std::sync::Mutex<[RefusalCount; Refusal::COUNT]>,
}

#[derive(Default, Clone, Copy)]
struct RefusalCount {
    last_warned: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Whether to warn now, and how many were left out since the last warning.
    fn admit(&self, refusal: Refusal, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let count = &mut kinds[refusal as usize];
        match count.last_warned {
            Some(last) if now.saturating_duration_since(last) < Self::WINDOW => {
                count.suppressed += 1;
                None
            }
            _ => {
                count.last_warned = Some(now);
                Some(std::mem::take(&mut count.suppressed))
            }
        }
    }

    fn warn(&self, refused: &Refused, status: StatusCode, remote: SocketAddr) {
        let Some(suppressed) = self.admit(refused.refusal, Instant::now()) else {
            return;
        };
        let status = status.as_u16();
        let reason = refused.refusal.reason();
        let detail = refused
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        if suppressed == 0 {
            tracing::warn!(status, %remote, "webhook rejected: {reason}{detail}");
        } else {
            tracing::warn!(
                status,
                %remote,
                suppressed,
                "webhook rejected: {reason}{detail} ({suppressed} more like it were not logged)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_warnings_are_rate_limited_per_reason_and_count_the_rest() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(log.admit(Refusal::WrongSecret, at(0)), Some(0));
        assert_eq!(log.admit(Refusal::WrongSecret, at(1)), None);
        assert_eq!(log.admit(Refusal::WrongSecret, at(9)), None);
        // Another reason has its own allowance.
        assert_eq!(log.admit(Refusal::NotJson, at(9)), Some(0));
        assert_eq!(log.admit(Refusal::WrongSecret, at(10)), Some(2));
        assert_eq!(log.admit(Refusal::WrongSecret, at(30)), Some(0));
    }

    #[test]
    fn outcome_labels_are_the_metric_names() {
        let labels = Label::ALL.map(Label::as_str);
        assert_eq!(
            labels,
            [
                "unauthorized",
                "rejected",
                "retry",
                "duplicate",
                "delivered",
                "undeliverable",
                "dry_run",
                "snoozed",
                "queued",
                "collapsed"
            ]
        );
        assert_eq!(Label::of_refusal(Refusal::WrongSecret), Label::Unauthorized);
        assert_eq!(Label::of_refusal(Refusal::Busy), Label::Retry);
        assert_eq!(Label::of_refusal(Refusal::TooLarge), Label::Rejected);
    }
}
