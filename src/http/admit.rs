//! Webhook admission, as warp filters: the secret, the content type, a request permit, the
//! body (at most [`MAX_BODY_BYTES`], chunked or not, within a deadline) and the parse. Each
//! refusal is a [`Refused`] rejection that the routes' `recover` turns into its answer.

use super::{Peer, State};
use crate::coder::Notification;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;
use warp::http::header::{self, HeaderMap};
use warp::{Filter, Rejection};

/// Largest webhook body accepted; Coder's are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The request's body as it arrives, boxed so the filters between taking it and reading it
/// can name it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// What a webhook request brings, before anything is checked.
pub struct Arrival {
    pub started: Instant,
    pub peer: SocketAddr,
    pub headers: HeaderMap,
    body: BodyStream,
}

/// A notification admitted for delivery; the permit is held until the answer, bounding
/// the memory requests take.
pub struct Admitted {
    pub started: Instant,
    pub notification: Notification,
    /// The body as Coder sent it: what the outbox keeps when Slack cannot take it now.
    pub body: bytes::Bytes,
    pub(super) permit: OwnedSemaphorePermit,
}

/// `POST /v1/webhook`'s admission: arrival → secret → content type → permit and body → parse.
pub fn admitted(
    state: Arc<State>,
) -> impl Filter<Extract = (Admitted,), Error = Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    arrival()
        .and(with_state)
        .and_then(|arrival: Arrival, state: Arc<State>| async move {
            let arrival = check_secret(&state, arrival).await?;
            let arrival = check_json(arrival).await?;
            receive(&state, arrival).await
        })
}

fn arrival() -> impl Filter<Extract = (Arrival,), Error = Rejection> + Clone {
    warp::ext::optional::<Peer>()
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .map(|peer: Option<Peer>, headers, body| Arrival {
            started: Instant::now(),
            peer: peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0),
            headers,
            body: boxed(body),
        })
}

fn boxed<B: Buf>(body: impl Stream<Item = Result<B, warp::Error>> + Send + 'static) -> BodyStream {
    Box::pin(body.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

/// Why a webhook was refused before delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
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
    pub const COUNT: usize = 7;

    /// For the log: what an operator looks for in Coder's webhook settings or the sender.
    pub fn reason(self) -> &'static str {
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

/// A refused webhook, as a warp rejection: what `recover` needs to answer, log and count it.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    /// Said after the reason in the log (and, for a body that is not a notification, the
    /// answer); never the body or a credential.
    pub detail: Option<String>,
    pub peer: SocketAddr,
    pub started: Instant,
}

impl warp::reject::Reject for Refused {}

impl Arrival {
    fn refuse(&self, refusal: Refusal, detail: Option<String>) -> Rejection {
        warp::reject::custom(Refused {
            refusal,
            detail,
            peer: self.peer,
            started: self.started,
        })
    }
}

async fn check_secret(state: &State, mut arrival: Arrival) -> Result<Arrival, Rejection> {
    match &state.webhook_secret {
        Some(secret) if !authorized(&arrival.headers, secret.expose_secret().as_bytes()) => {
            drain(&arrival.headers, &mut arrival.body).await;
            Err(arrival.refuse(Refusal::WrongSecret, None))
        }
        _ => Ok(arrival),
    }
}

async fn check_json(mut arrival: Arrival) -> Result<Arrival, Rejection> {
    if is_json(&arrival.headers) {
        return Ok(arrival);
    }
    let given = arrival
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(80)
                .collect()
        })
        .unwrap_or_else(|| "none".to_owned());
    drain(&arrival.headers, &mut arrival.body).await;
    Err(arrival.refuse(Refusal::NotJson, Some(format!("it is {given}"))))
}

/// A permit per request bounds the memory bodies take; a client that sends its body slowly
/// loses its permit after `body_read_timeout`. Then the body, then the parse.
async fn receive(state: &State, mut arrival: Arrival) -> Result<Admitted, Rejection> {
    let permit = tokio::time::timeout(
        Duration::from_secs(5),
        state.request_permits.clone().acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = permit else {
        return Err(arrival.refuse(Refusal::Busy, None));
    };
    let read = read_body(&arrival.headers, &mut arrival.body);
    let body = match tokio::time::timeout(state.body_read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => {
            drain(&arrival.headers, &mut arrival.body).await;
            return Err(arrival.refuse(Refusal::TooLarge, None));
        }
        Ok(Err(BodyError::Unreadable)) => return Err(arrival.refuse(Refusal::Unreadable, None)),
        Err(_) => return Err(arrival.refuse(Refusal::TooSlow, None)),
    };
    let header_msg_id = arrival
        .headers
        .get("x-message-id")
        .and_then(|v| v.to_str().ok());
    match Notification::parse(&body, header_msg_id) {
        Ok(notification) => Ok(Admitted {
            started: arrival.started,
            notification,
            body,
            permit,
        }),
        Err(e) => Err(arrival.refuse(Refusal::Invalid, Some(e.0))),
    }
}

/// Most of a refused body that is still being sent is read and dropped before the answer:
/// closing a connection with unread data makes the TCP stack reset it, and the client then
/// sees a broken pipe instead of the answer.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain(headers: &HeaderMap, body: &mut BodyStream) {
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
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    })
    .await;
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
async fn read_body(headers: &HeaderMap, body: &mut BodyStream) -> Result<Bytes, BodyError> {
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
        if buffer.len() + chunk.len() > MAX_BODY_BYTES {
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
}
