//! The HTTP face: `POST /v1/webhook` for Coder, probes and metrics for operators. Every answer
//! is JSON; nothing a client sends can produce a 500.

use crate::coder::Notification;
use crate::delivery::{Answer, Outcome, RetryLater};
use crate::startup::AppState;
use crate::telemetry::OutcomeLabels;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::SemaphorePermit;

/// Largest webhook body accepted; Coder's are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every answer: a whole body, JSON or the metrics' text.
pub type Response = hyper::Response<Full<Bytes>>;

/// The server's four paths, matched exactly (no trailing slash), each with its one method.
pub struct Routes {
    state: Arc<AppState>,
    refusals: RefusalLog,
}

impl Routes {
    pub fn new(state: Arc<AppState>) -> Arc<Routes> {
        // Every outcome shows from the start (at 0), so rates and shares over it are defined
        // before the first webhook of each kind.
        for label in Label::ALL {
            let outcome = OutcomeLabels {
                outcome: label.as_str(),
            };
            let _ = state.metrics.webhooks.get_or_create(&outcome);
        }
        Arc::new(Routes {
            state,
            refusals: RefusalLog::default(),
        })
    }

    /// The answer to one request from `peer` (named in the warnings about refused webhooks).
    pub async fn answer(&self, request: Request<Incoming>, peer: SocketAddr) -> Response {
        let (parts, body) = request.into_parts();
        let state = &self.state;
        match (parts.uri.path(), parts.method) {
            ("/v1/webhook", Method::POST) => {
                let body = BodyDataStream::new(body);
                webhook(state, &self.refusals, peer, &parts.headers, body).await
            }
            ("/healthz", Method::GET) => json_reply(StatusCode::OK, json!({"status": "ok"})),
            ("/readyz", Method::GET) => readyz(state),
            ("/metrics", Method::GET) => metrics(state),
            ("/v1/webhook" | "/healthz" | "/readyz" | "/metrics", _) => {
                error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error_reply(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

fn json_reply(status: StatusCode, body: impl serde::Serialize) -> Response {
    // Serialising our own values cannot fail; the fallback keeps the answer JSON regardless.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_reply(status: StatusCode, message: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": message.into() }))
}

fn metrics(state: &AppState) -> Response {
    // Readiness is read when asked, so the gauge says what /readyz would.
    let ready = state.readiness.report().ready;
    state.metrics.ready.set(i64::from(ready));
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn readyz(state: &AppState) -> Response {
    let readiness = state.readiness.report();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if readiness.ready { "ready" } else { "not_ready" },
        "reason": readiness.reason,
    });
    if let Some(socket_mode) = readiness.socket_mode {
        body["socket_mode"] = json!(socket_mode);
    }
    json_reply(status, body)
}

/// The `outcome` label of the webhooks counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Unauthorized,
    Rejected,
    Retry,
    Duplicate,
    Delivered,
    Undeliverable,
    DryRun,
    Snoozed,
}

impl Label {
    const ALL: [Label; 8] = [
        Label::Unauthorized,
        Label::Rejected,
        Label::Retry,
        Label::Duplicate,
        Label::Delivered,
        Label::Undeliverable,
        Label::DryRun,
        Label::Snoozed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Label::Unauthorized => "unauthorized",
            Label::Rejected => "rejected",
            Label::Retry => "retry",
            Label::Duplicate => "duplicate",
            Label::Delivered => "delivered",
            Label::Undeliverable => "undeliverable",
            Label::DryRun => "dry_run",
            Label::Snoozed => "snoozed",
        }
    }
}

async fn webhook(
    state: &AppState,
    refusals: &RefusalLog,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: impl Stream<Item = Result<impl Buf, hyper::Error>> + Unpin + Send,
) -> Response {
    let started = Instant::now();
    let (label, response) = match admit(state, headers, body).await {
        Ok((permit, notification)) => {
            let answered = deliver(state, notification, started).await;
            drop(permit);
            answered
        }
        Err(refused) => {
            let response = refused.response();
            refusals.warn(&refused, response.status(), peer);
            (refused.refusal.label(), response)
        }
    };
    state
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabels {
            outcome: label.as_str(),
        })
        .inc();
    state
        .metrics
        .delivery_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Why a webhook was refused before delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    WrongSecret,
    NotJson,
    Busy,
    TooLarge,
    Unreadable,
    TooSlow,
    Invalid,
}

// `Invalid` is the last refusal, so this many counters cover them all.
const _: () = assert!(Refusal::Invalid as usize + 1 == Refusal::COUNT);

impl Refusal {
    const COUNT: usize = 7;

    fn label(self) -> Label {
        match self {
            Refusal::WrongSecret => Label::Unauthorized,
            Refusal::Busy => Label::Retry,
            _ => Label::Rejected,
        }
    }

    /// For the log: what an operator looks for in Coder's webhook settings or the sender.
    fn reason(self) -> &'static str {
        match self {
            Refusal::WrongSecret => "wrong or missing webhook secret",
            Refusal::NotJson => "Content-Type is not application/json",
            Refusal::Busy => "too many webhook requests at once",
            Refusal::TooLarge => "body is larger than 1 MiB",
            Refusal::Unreadable => "body could not be read",
            Refusal::TooSlow => "body was not received in time",
            Refusal::Invalid => "body is not a Coder notification",
        }
    }
}

struct Refused {
    refusal: Refusal,
    /// Said after the reason in the log (and, for a body that is not a notification, the
    /// answer); never the body or a credential.
    detail: Option<String>,
}

impl Refused {
    fn new(refusal: Refusal) -> Self {
        Refused {
            refusal,
            detail: None,
        }
    }

    fn response(&self) -> Response {
        let (status, message) = match self.refusal {
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
                self.detail.clone().unwrap_or_default(),
            ),
        };
        error_reply(status, message)
    }
}

/// At most one warning per kind of refusal per [`RefusalLog::WINDOW`], so a misconfigured
/// sender cannot flood the log; the warnings left out are counted in the next one.
#[derive(Default)]
struct RefusalLog {
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

/// Everything before delivery: credentials, content type, a request permit, the body, the
/// parse. The permit is held until the answer, bounding the memory requests take.
async fn admit<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    mut body: impl Stream<Item = Result<impl Buf, hyper::Error>> + Unpin + Send,
) -> Result<(SemaphorePermit<'s>, Notification), Refused> {
    if let Err(refused) = check_secret(state, headers).and_then(|()| check_json(headers)) {
        drain(headers, &mut body).await;
        return Err(refused);
    }
    let permit = request_permit(state).await?;
    let body = receive_body(state, headers, &mut body).await?;
    let header_msg_id = headers.get("x-message-id").and_then(|v| v.to_str().ok());
    let notification = Notification::parse(&body, header_msg_id).map_err(|e| Refused {
        refusal: Refusal::Invalid,
        detail: Some(e.0),
    })?;
    Ok((permit, notification))
}

fn check_secret(state: &AppState, headers: &HeaderMap) -> Result<(), Refused> {
    match &state.webhook_secret {
        Some(secret) if !authorized(headers, secret.expose_secret().as_bytes()) => {
            Err(Refused::new(Refusal::WrongSecret))
        }
        _ => Ok(()),
    }
}

fn check_json(headers: &HeaderMap) -> Result<(), Refused> {
    if is_json(headers) {
        return Ok(());
    }
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(80)
                .collect()
        })
        .unwrap_or_else(|| "none".to_owned());
    Err(Refused {
        refusal: Refusal::NotJson,
        detail: Some(format!("it is {given}")),
    })
}

/// A permit per request bounds the memory bodies take; a client that sends its body slowly
/// loses its permit after `body_read_timeout`.
async fn request_permit(state: &AppState) -> Result<SemaphorePermit<'_>, Refused> {
    match tokio::time::timeout(Duration::from_secs(5), state.request_permits.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Refused::new(Refusal::Busy)),
    }
}

async fn receive_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &mut (impl Stream<Item = Result<impl Buf, hyper::Error>> + Unpin + Send),
) -> Result<Bytes, Refused> {
    match tokio::time::timeout(state.body_read_timeout, read_body(headers, &mut *body)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(BodyError::TooLarge)) => {
            drain(headers, body).await;
            Err(Refused::new(Refusal::TooLarge))
        }
        Ok(Err(BodyError::Unreadable)) => Err(Refused::new(Refusal::Unreadable)),
        Err(_) => Err(Refused::new(Refusal::TooSlow)),
    }
}

/// Most of a refused body that is still being sent is read and dropped before the answer:
/// closing a connection with unread data makes the TCP stack reset it, and the client then
/// sees a broken pipe instead of the answer.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain(
    headers: &HeaderMap,
    body: &mut (impl Stream<Item = Result<impl Buf, hyper::Error>> + Unpin + Send),
) {
    // A client that asked to wait (`Expect: 100-continue`) has sent nothing yet; answering at
    // once spares it the upload.
    let waits = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.remaining());
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

/// Delivery runs in its own task so that Coder giving up on this request (or the connection
/// dropping) cannot cut a Slack call in half; shutdown waits for it.
async fn deliver(
    state: &AppState,
    notification: Notification,
    started: Instant,
) -> (Label, Response) {
    let delivery = state.delivery.clone();
    let task = state
        .tasks
        .spawn(async move { (delivery.deliver(&notification).await, notification) });
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
        Label::Delivered | Label::Duplicate | Label::Snoozed | Label::DryRun => {
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
            };
            (label, json_reply(StatusCode::OK, &outcome))
        }
        Err(retry) => (Label::Retry, retry_reply(&retry.reason, retry.retry_after)),
    }
}

fn retry_reply(reason: &str, retry_after: Duration) -> Response {
    let mut response = error_reply(StatusCode::SERVICE_UNAVAILABLE, reason);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// Reads at most [`MAX_BODY_BYTES`], whether or not a Content-Length was sent.
async fn read_body(
    headers: &HeaderMap,
    body: &mut (impl Stream<Item = Result<impl Buf, hyper::Error>> + Unpin + Send),
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if buffer.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        buffer.put(chunk);
    }
    Ok(buffer.freeze())
}

/// The secret as a Basic-auth password (any user name) or a Bearer token, compared in
/// constant time.
fn authorized(headers: &HeaderMap, secret: &[u8]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return bool::from(credentials.as_bytes().ct_eq(secret));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => return false,
        };
        return bool::from(password.ct_eq(secret));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header"));
        h
    }

    #[test]
    fn basic_and_bearer_credentials() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(&with_auth(&basic("coder:s3cret")), b"s3cret"));
        assert!(authorized(&with_auth(&basic(":s3cret")), b"s3cret"));
        assert!(authorized(&with_auth("Bearer s3cret"), b"s3cret"));
        assert!(authorized(&with_auth("bearer  s3cret "), b"s3cret"));
        assert!(!authorized(&with_auth(&basic("coder:wrong")), b"s3cret"));
        assert!(!authorized(&with_auth(&basic("s3cret")), b"s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cre"), b"s3cret"));
        assert!(!authorized(&with_auth("Basic !!!"), b"s3cret"));
        assert!(!authorized(&with_auth("Digest s3cret"), b"s3cret"));
        assert!(!authorized(&HeaderMap::new(), b"s3cret"));
    }

    #[test]
    fn json_content_types() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().expect("header"));
            is_json(&h)
        };
        assert!(ct("application/json"));
        assert!(ct("application/json; charset=utf-8"));
        assert!(ct("Application/JSON"));
        assert!(!ct("text/plain"));
        assert!(!is_json(&HeaderMap::new()));
    }

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
                "snoozed"
            ]
        );
        assert_eq!(Refusal::WrongSecret.label(), Label::Unauthorized);
        assert_eq!(Refusal::Busy.label(), Label::Retry);
        assert_eq!(Refusal::TooLarge.label(), Label::Rejected);
    }
}
