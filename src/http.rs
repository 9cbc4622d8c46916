//! The HTTP face: `POST /v1/webhook` for Coder, probes and metrics for operators. Every answer
//! is JSON; nothing a client sends can produce a 500.

use crate::coder::Notification;
use crate::delivery::{Answer, Outcome};
use crate::telemetry::OutcomeLabels;
use crate::AppState;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use warp::http::{header, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

/// Largest webhook body accepted; Coder's are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = warp::any().map(move || state.clone());
    let webhook = warp::path!("v1" / "webhook")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(webhook);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, json!({"status": "ok"})));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| readyz(&state));
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(with_state)
            .map(|state: Arc<AppState>| {
                let mut response = Response::new(state.metrics.encode().into());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            });
    webhook
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(rejection)
        .unify()
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn error_reply(status: StatusCode, message: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": message.into() }))
}

async fn rejection(rejection: warp::Rejection) -> Result<Response, Infallible> {
    Ok(if rejection.is_not_found() {
        error_reply(StatusCode::NOT_FOUND, "not found")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error_reply(StatusCode::BAD_REQUEST, "bad request")
    })
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

async fn webhook(
    state: Arc<AppState>,
    headers: warp::http::HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin + Send,
) -> Response {
    let started = Instant::now();
    let (outcome, response) = handle_webhook(&state, &headers, body, started).await;
    state
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    state
        .metrics
        .delivery_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle_webhook(
    state: &Arc<AppState>,
    headers: &warp::http::HeaderMap,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin + Send,
    started: Instant,
) -> (&'static str, Response) {
    if let Some(secret) = &state.webhook_secret {
        if !authorized(headers, secret.expose_secret().as_bytes()) {
            let mut response = error_reply(
                StatusCode::UNAUTHORIZED,
                "missing or wrong webhook credentials: put WEBHOOK_SECRET in Coder's webhook URL as http://coder:SECRET@host/v1/webhook",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"coder-slack-bridge\""),
            );
            return ("unauthorized", response);
        }
    }
    if !is_json(headers) {
        return (
            "rejected",
            error_reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ),
        );
    }
    // A slot per request bounds the memory bodies take; a client that sends its body slowly
    // loses its slot after `body_read_timeout`.
    let Ok(Ok(_slot)) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.request_slots.acquire(),
    )
    .await
    else {
        return (
            "retry",
            retry_reply(
                "too many webhook requests at once",
                std::time::Duration::from_secs(5),
            ),
        );
    };
    let body = match tokio::time::timeout(state.body_read_timeout, read_body(headers, body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(response)) => return ("rejected", response),
        Err(_) => {
            return (
                "rejected",
                error_reply(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body was not received in time",
                ),
            )
        }
    };
    let header_msg_id = headers.get("x-message-id").and_then(|v| v.to_str().ok());
    let notification = match Notification::parse(&body, header_msg_id) {
        Ok(n) => n,
        Err(e) => return ("rejected", error_reply(StatusCode::BAD_REQUEST, e.0)),
    };
    drop(body);

    // Delivery runs in its own task so that Coder giving up on this request (or the
    // connection dropping) cannot cut a Slack call in half; shutdown waits for it.
    let delivery = state.delivery.clone();
    let task = state
        .tasks
        .spawn(async move { (delivery.deliver(&notification).await, notification) });
    let (result, notification) = match task.await {
        Ok(done) => done,
        Err(_) => {
            return (
                "retry",
                retry_reply(
                    "delivery was interrupted",
                    std::time::Duration::from_secs(60),
                ),
            )
        }
    };
    let (label, response) = match result {
        Ok(Answer::Duplicate) => (
            "duplicate",
            json_reply(StatusCode::OK, json!({"status": "duplicate"})),
        ),
        Ok(Answer::Fresh(outcome)) => {
            let label = match &outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Undeliverable { .. } => "undeliverable",
                Outcome::DryRun => "dry_run",
            };
            (label, warp::reply::json(&outcome).into_response())
        }
        Err(retry) => ("retry", retry_reply(&retry.reason, retry.retry_after)),
    };
    tracing::info!(
        msg_id = %notification.msg_id,
        template = %notification.notification_name,
        outcome = label,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "webhook answered"
    );
    (label, response)
}

fn retry_reply(reason: &str, retry_after: std::time::Duration) -> Response {
    let mut response = error_reply(StatusCode::SERVICE_UNAVAILABLE, reason);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after.as_secs().max(1)),
    );
    response
}

fn is_json(headers: &warp::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads at most [`MAX_BODY_BYTES`], whether or not a Content-Length was sent.
async fn read_body(
    headers: &warp::http::HeaderMap,
    mut body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin + Send,
) -> Result<Bytes, Response> {
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| error_reply(StatusCode::BAD_REQUEST, "body could not be read"))?;
        if buffer.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        buffer.put(chunk);
    }
    Ok(buffer.freeze())
}

/// The secret as a Basic-auth password (any user name) or a Bearer token, compared in
/// constant time.
fn authorized(headers: &warp::http::HeaderMap, secret: &[u8]) -> bool {
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
    use warp::http::HeaderMap;

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
}
