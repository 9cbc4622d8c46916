//! slack-morphism's HTTP connector, on reqwest: one pooled client for every Web API call,
//! with timeouts and the bridge's own proxy decision (slack-morphism's own hyper connector
//! supports neither a proxy nor a per-call timeout).

use crate::proxy::ProxyConfig;
use futures_util::future::{BoxFuture, FutureExt};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use slack_morphism::errors::*;
use slack_morphism::multipart_form::FileMultipartData;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

#[derive(Clone, Debug)]
pub struct ReqwestConnector {
    client: reqwest::Client,
    api_url: String,
    /// Each method's URL, parsed once: slack-morphism asks for it on every call.
    method_urls: Arc<Mutex<HashMap<String, Url>>>,
    /// The decision the client was built with, to say which proxy a failure went through.
    proxies: Arc<ProxyConfig>,
}

impl ReqwestConnector {
    pub fn new(client: reqwest::Client, api_url: &Url, proxies: Arc<ProxyConfig>) -> Self {
        ReqwestConnector {
            client,
            api_url: api_url.as_str().trim_end_matches('/').to_owned(),
            method_urls: Arc::default(),
            proxies,
        }
    }

    /// A transport failure in words: what failed (naming the proxy when there was one) and
    /// every cause. Never the URL's path or query, a token, or the proxy's credentials.
    pub fn describe_error(&self, error: reqwest::Error) -> String {
        crate::outbound::describe_transport_error(error, &self.proxies, "Slack")
    }

    async fn send<RS>(
        &self,
        request: reqwest::RequestBuilder,
        token: Option<&SlackApiToken>,
    ) -> ClientResult<RS>
    where
        RS: for<'de> serde::de::Deserialize<'de>,
    {
        let request = match token {
            Some(t) => request.header(AUTHORIZATION, format!("Bearer {}", t.token_value.0)),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(response.headers()))
            .flatten();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        decode(status, retry_after, &body)
    }

    fn transport_error(&self, error: reqwest::Error) -> SlackClientError {
        SlackClientError::HttpProtocolError(
            SlackClientHttpProtocolError::new()
                .with_cause(Box::new(TransportError(self.describe_error(error)))),
        )
    }
}

/// Maps Slack's answer the way slack-morphism's own connector does, so its typed API works
/// unchanged: 200 with `ok:false` → `ApiError`, 429 → `RateLimitError` with `Retry-After`.
fn decode<RS>(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ClientResult<RS>
where
    RS: for<'de> serde::de::Deserialize<'de>,
{
    let body_text = || String::from_utf8_lossy(body).into_owned();
    match status {
        StatusCode::OK => {
            let envelope: SlackEnvelopeMessage =
                serde_json::from_slice(body).map_err(|e| protocol_error(e, body_text()))?;
            let errors = envelope.errors_as_strings();
            if let Some(code) = envelope.error {
                return Err(SlackClientError::ApiError(
                    SlackClientApiError::new(code)
                        .opt_errors(errors)
                        .opt_warnings(envelope.warnings)
                        .with_http_response_body(body_text()),
                ));
            }
            serde_json::from_slice(body).map_err(|e| protocol_error(e, body_text()))
        }
        StatusCode::TOO_MANY_REQUESTS => Err(SlackClientError::RateLimitError(
            SlackRateLimitError::new().opt_retry_after(retry_after),
        )),
        _ => Err(SlackClientError::HttpError(
            SlackClientHttpError::new(status).with_http_response_body(body_text()),
        )),
    }
}

/// The shortest wait a `Retry-After` asks for: `0` would make a tight loop.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest: a huge value would overflow `Instant` arithmetic, and no caller waits longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Slack's `Retry-After` (whole seconds), clamped to [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

fn protocol_error(json_error: serde_json::Error, body: String) -> SlackClientError {
    SlackClientError::ProtocolError(SlackClientProtocolError::new(json_error).with_json_body(body))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn unsupported<'a, RS: Send + 'a>(what: &str) -> BoxFuture<'a, ClientResult<RS>> {
    let error = SlackClientError::SystemError(
        SlackClientSystemError::new().with_message(format!("{what} is not used by this bridge")),
    );
    std::future::ready(Err(error)).boxed()
}

impl SlackClientHttpConnector for ReqwestConnector {
    fn create_method_uri_path(&self, method_relative_uri: &str) -> ClientResult<Url> {
        let mut urls = self.method_urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = urls.get(method_relative_uri) {
            return Ok(url.clone());
        }
        let url: Url = format!("{}/{}", self.api_url, method_relative_uri).parse()?;
        // The bridge calls a handful of methods; the bound only guards against a surprise.
        if urls.len() < 64 {
            urls.insert(method_relative_uri.to_owned(), url.clone());
        }
        Ok(url)
    }

    fn http_get_uri<'a, RS>(
        &'a self,
        full_uri: Url,
        context: SlackClientApiCallContext<'a>,
    ) -> BoxFuture<'a, ClientResult<RS>>
    where
        RS: for<'de> serde::de::Deserialize<'de> + Send + 'a,
    {
        async move { self.send(self.client.get(full_uri), context.token).await }.boxed()
    }

    fn http_get_with_client_secret<'a, RS>(
        &'a self,
        _full_uri: Url,
        _client_id: &'a SlackClientId,
        _client_secret: &'a SlackClientSecret,
    ) -> BoxFuture<'a, ClientResult<RS>>
    where
        RS: for<'de> serde::de::Deserialize<'de> + Send + 'a,
    {
        unsupported("OAuth")
    }

    fn http_post_uri<'a, RQ, RS>(
        &'a self,
        full_uri: Url,
        request_body: &'a RQ,
        context: SlackClientApiCallContext<'a>,
    ) -> BoxFuture<'a, ClientResult<RS>>
    where
        RQ: serde::ser::Serialize + Send + Sync,
        RS: for<'de> serde::de::Deserialize<'de> + Send + 'a,
    {
        async move {
            let body =
                serde_json::to_vec(request_body).map_err(|e| protocol_error(e, String::new()))?;
            let request = self
                .client
                .post(full_uri)
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body);
            self.send(request, context.token).await
        }
        .boxed()
    }

    fn http_post_uri_multipart_form<'a, 'p, RS, PT, TS>(
        &'a self,
        _full_uri: Url,
        _file: Option<FileMultipartData<'p>>,
        _params: &'p PT,
        _context: SlackClientApiCallContext<'a>,
    ) -> BoxFuture<'a, ClientResult<RS>>
    where
        RS: for<'de> serde::de::Deserialize<'de> + Send + 'a,
        PT: std::iter::IntoIterator<Item = (&'p str, Option<TS>)> + Clone,
        TS: AsRef<str> + 'p + Send,
    {
        unsupported("file upload")
    }

    fn http_post_uri_binary<'a, 'p, RS>(
        &'a self,
        _full_uri: Url,
        _content_type: String,
        _data: &'a [u8],
        _context: SlackClientApiCallContext<'a>,
    ) -> BoxFuture<'a, ClientResult<RS>>
    where
        RS: for<'de> serde::de::Deserialize<'de> + Send + 'a,
    {
        unsupported("binary upload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().expect("header"));
        headers
    }

    #[test]
    fn retry_after_is_clamped_where_it_is_parsed() {
        let parse = |v: &str| retry_after(&with_retry_after(v));
        assert_eq!(parse("0"), Some(MIN_RETRY_AFTER));
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        // The clamped value can be added to any instant.
        let _ = std::time::Instant::now() + parse("99999999999").unwrap_or_default();
    }
}
