//! The HTTP face, as warp filters: `POST /v1/webhook` for Coder, probes and metrics for
//! operators. Admission (secret, content type, size, deadline, parse) is a chain of filters
//! (`admit`); every rejection, theirs or warp's own, is answered by one `recover` handler
//! with a JSON body (`answer`). Nothing a client sends can produce a 500. `server` serves
//! the filters on hyper's HTTP/1 connections with the limits warp's own server lacks.

mod admit;
mod answer;

pub use admit::MAX_BODY_BYTES;

use crate::delivery::Delivery;
use crate::readiness::Readiness;
use crate::telemetry::{Metrics, OutcomeLabels};
use answer::{error_reply, json_reply, Label, RefusalLog};
use secrecy::SecretString;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

/// What the routes share.
pub struct State {
    pub metrics: Metrics,
    pub delivery: Arc<Delivery>,
    pub webhook_secret: Option<SecretString>,
    /// Deliveries in flight; shutdown waits for them.
    pub tasks: TaskTracker,
    /// Webhook requests being read or handled; bounds the memory bodies take.
    pub request_permits: Arc<tokio::sync::Semaphore>,
    pub body_read_timeout: Duration,
    pub readiness: Readiness,
    refusals: RefusalLog,
}

impl State {
    pub fn new(
        metrics: Metrics,
        delivery: Arc<Delivery>,
        webhook_secret: Option<SecretString>,
        max_concurrent_requests: usize,
        body_read_timeout: Duration,
        readiness: Readiness,
    ) -> Arc<State> {
        // Every outcome shows from the start (at 0), so rates and shares over it are defined
        // before the first webhook of each kind.
        for label in Label::ALL {
            let _ = metrics.webhooks.get_or_create(&OutcomeLabels {
                outcome: label.as_str(),
            });
        }
        Arc::new(State {
            metrics,
            delivery,
            webhook_secret,
            tasks: TaskTracker::new(),
            request_permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests)),
            body_read_timeout,
            readiness,
            refusals: RefusalLog::default(),
        })
    }

    /// Counts one webhook's answer under `label`, and how long it took.
    fn count(&self, label: Label, started: Instant) {
        let outcome = OutcomeLabels {
            outcome: label.as_str(),
        };
        self.metrics.webhooks.get_or_create(&outcome).inc();
        self.metrics
            .delivery_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The connection's peer, put in each request's extensions by the server: warp's own
/// `addr::remote` is only filled by warp's own server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The server's four paths, matched exactly (no trailing slash), each with its one method;
/// anything else is a JSON 404 or 405.
pub fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let webhook = exact("/v1/webhook")
        .and(warp::post())
        .and(admit::admitted(state.clone()))
        .and(with_state.clone())
        .then(
            |admitted, state: Arc<State>| async move { answer::delivered(&state, admitted).await },
        );
    let healthz = exact("/healthz")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, json!({"status": "ok"})));
    let readyz = exact("/readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<State>| readyz(&state));
    let metrics = exact("/metrics")
        .and(warp::get())
        .and(with_state)
        .map(|state: Arc<State>| metrics(&state));
    webhook
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(move |rejection| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(rejected(&state, rejection)) }
        })
        .unify()
}

/// Matches `path` exactly: warp's `path!` would also take a trailing slash.
fn exact(path: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| async move {
            match full.as_str() == path {
                true => Ok(()),
                false => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
}

/// Every rejection's answer: a refused webhook's own, else 405 or 404, always JSON.
fn rejected(state: &State, rejection: Rejection) -> Response {
    if let Some(refused) = rejection.find::<admit::Refused>() {
        return answer::refused(state, refused);
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    error_reply(StatusCode::NOT_FOUND, "not found")
}

fn metrics(state: &State) -> Response {
    // Readiness is read when asked, so the gauge says what /readyz would.
    let ready = state.readiness.report().ready;
    state.metrics.ready.set(i64::from(ready));
    let mut response = Response::new(state.metrics.encode().into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn readyz(state: &State) -> Response {
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
    if let Some(outbox) = readiness.outbox {
        body["outbox"] = json!(outbox);
    }
    json_reply(status, body)
}
