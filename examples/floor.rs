//! The floor: a bare relay that does only what the bridge cannot avoid doing. It receives
//! Coder's POST, parses the JSON, makes the one `chat.postMessage` call and answers: hyper's
//! server and client, no rendering, dedupe, store, directory, metrics or logging. The load
//! example runs it against the same fake Slack as the bridge, in the same run, so every
//! figure of the bridge is also a ratio to this one (`just bench`).
//!
//! ```sh
//! cargo build --release --example floor
//! SLACK_API_URL=http://127.0.0.1:PORT/api LISTEN_ADDR=127.0.0.1:6001 target/release/examples/floor
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use std::sync::Arc;

/// The little of Coder's body the relay needs.
#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow)]
    payload: Payload<'a>,
    #[serde(borrow, default)]
    title: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    user_email: std::borrow::Cow<'a, str>,
}

/// Slack's answer to chat.postMessage, the part a relay reads.
#[derive(Deserialize)]
struct Posted<'a> {
    ok: bool,
    #[serde(borrow, default)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    ts: std::borrow::Cow<'a, str>,
}

struct Relay {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    post_url: hyper::Uri,
    authorization: String,
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

impl Relay {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST, "{\"error\":\"body\"}");
        };
        let Ok(webhook) = serde_json::from_slice::<Webhook>(&body) else {
            return answer(StatusCode::BAD_REQUEST, "{\"error\":\"json\"}");
        };
        let message = serde_json::json!({
            "channel": webhook.payload.user_email,
            "text": webhook.title,
        });
        let post = Request::post(self.post_url.clone())
            .header("content-type", "application/json; charset=utf-8")
            .header("authorization", &self.authorization)
            .body(Full::new(Bytes::from(message.to_string())));
        let Ok(post) = post else {
            return answer(StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"request\"}");
        };
        match self.client.request(post).await {
            Ok(reply) if reply.status() == StatusCode::OK => {
                // Slack's answer read to the end and checked, as any relay must.
                let Ok(body) = reply.into_body().collect().await.map(|b| b.to_bytes()) else {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"slack\"}");
                };
                match serde_json::from_slice::<Posted>(&body) {
                    Ok(posted) if posted.ok => {
                        let answer = serde_json::json!({
                            "status": "delivered", "channel": posted.channel, "ts": posted.ts,
                        });
                        Response::new(Full::new(Bytes::from(answer.to_string())))
                    }
                    _ => answer(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"slack\"}"),
                }
            }
            _ => answer(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"slack\"}"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let api = std::env::var("SLACK_API_URL").map_err(|_| "SLACK_API_URL is not set")?;
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:6001".into());
    let token = std::env::var("SLACK_BOT_TOKEN").unwrap_or_default();
    let post_url = format!("{}/chat.postMessage", api.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("SLACK_API_URL: {e}"))?;
    let relay = Arc::new(Relay {
        client: Client::builder(TokioExecutor::new()).build_http(),
        post_url,
        authorization: format!("Bearer {token}"),
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("LISTEN_ADDR {listen}: {e}"))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let relay = relay.clone();
                async move { Ok::<_, std::convert::Infallible>(relay.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
