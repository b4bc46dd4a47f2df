//! What every HTTP upstream provider shares: the pooled client built from its settings, sending
//! with a time limit on the response headers, turning upstream failures into classified
//! canonical errors, and reading server-sent-event bodies.
//!
//! Errors are classified from the HTTP status and the transport error's type, never from
//! message text; the resilience layers read `kind`, `source`, `retryable` and `retry_after`.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures::stream::{BoxStream, StreamExt};
use modelgate_types::{Error, ErrorKind};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

tokio::task_local! {
    /// The W3C `traceparent` of the upstream attempt being made.
    static TRACEPARENT: String;
}

/// Run `attempt` with `traceparent` sent on every upstream request it makes, so the
/// provider's own traces join the caller's.
pub async fn with_traceparent<F: std::future::Future>(
    traceparent: String,
    attempt: F,
) -> F::Output {
    TRACEPARENT.scope(traceparent, attempt).await
}

/// Connection settings of one upstream provider (`[[providers]]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to the upstream's response headers (for a stream,
    /// the first byte).
    pub response_timeout: Duration,
    /// Longest gap allowed between two reads of a response body (a stalled stream ends with a
    /// timeout error).
    pub read_timeout: Duration,
    /// Idle connections kept per host for reuse.
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Speak HTTP/2 without negotiation (h2c) — for upstreams known to support it over plain
    /// HTTP. Over TLS, HTTP/2 is negotiated by ALPN whatever this says.
    pub http2_prior_knowledge: bool,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Largest whole response body read (a JSON answer); a larger one is an error naming
    /// this limit, and reading stops there.
    pub max_response_bytes: usize,
    /// Largest single streamed event (one server-sent event, one AWS event-stream message).
    pub max_event_bytes: usize,
    /// Most of an error body read for its message; the rest is discarded unread.
    pub max_error_body_bytes: usize,
}

/// Default for [`HttpSettings::pool_max_idle_per_host`]: enough idle connections that a busy
/// gateway reuses its upstream connections instead of closing and reopening them.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// Default for [`HttpSettings::max_response_bytes`]: 32 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;
/// Default for [`HttpSettings::max_event_bytes`]: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
/// Default for [`HttpSettings::max_error_body_bytes`]: 64 KiB.
pub const DEFAULT_MAX_ERROR_BODY_BYTES: usize = 64 << 10;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: Duration::from_secs(90),
            http2_prior_knowledge: false,
            headers: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_error_body_bytes: DEFAULT_MAX_ERROR_BODY_BYTES,
        }
    }
}

/// One upstream: its name (for messages), base URL and pooled client.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub name: String,
    base_url: String,
    client: reqwest::Client,
    response_timeout: Duration,
    max_response_bytes: usize,
    max_event_bytes: usize,
    max_error_body_bytes: usize,
}

/// Turns an upstream's error body into its message and error code / type, per dialect.
pub(crate) type ErrorBodyParser = fn(&[u8]) -> Option<(String, Option<String>)>;

impl Upstream {
    /// Build the pooled client. `auth` headers are added to every request and marked
    /// sensitive so they never appear in debug output.
    pub fn new(
        name: &str,
        base_url: &str,
        settings: &HttpSettings,
        auth: Vec<(HeaderName, String)>,
    ) -> Result<Self, Error> {
        let config_error =
            |what: String| Error::internal(format!("upstream provider '{name}': {what}"));
        let mut headers = HeaderMap::new();
        for (k, v) in &settings.headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| config_error(format!("header name '{k}': {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| config_error(format!("header '{k}' value: {e}")))?;
            headers.insert(key, value);
        }
        for (key, v) in auth {
            let mut value = HeaderValue::from_str(&v).map_err(|_| {
                config_error(format!("the {key} credential is not a valid header value"))
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")));
        if settings.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
            response_timeout: settings.response_timeout,
            max_response_bytes: settings.max_response_bytes,
            max_event_bytes: settings.max_event_bytes,
            max_error_body_bytes: settings.max_error_body_bytes,
        })
    }

    /// `base_url` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A POST of `body` (JSON bytes) to `url`, carrying the call's `traceparent` when the
    /// gateway set one ([`with_traceparent`]).
    pub fn post(&self, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        match TRACEPARENT.try_with(Clone::clone) {
            Ok(traceparent) => request.header("traceparent", traceparent),
            Err(_) => request,
        }
    }

    /// Send `request`; a non-2xx answer becomes a classified error with the message the
    /// dialect's `parse_error` finds in its body.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        parse_error: ErrorBodyParser,
    ) -> Result<reqwest::Response, Error> {
        let response = tokio::time::timeout(self.response_timeout, request.send())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "The upstream provider '{}' did not answer within {:?}.",
                        self.name, self.response_timeout
                    ),
                )
            })?
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        // At most `max_error_body_bytes` of an error body is read; the rest is never buffered.
        let body = self
            .read_capped(response, self.max_error_body_bytes)
            .await
            .map(|(b, _)| b)
            .unwrap_or_default();
        let (message, code) = parse_error(&body).unwrap_or_else(|| {
            (
                String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
                None,
            )
        });
        Err(self.status_error(status.as_u16(), &message, code.as_deref(), retry_after))
    }

    /// The active health check: a GET of `url` (with the provider's credentials) that must get
    /// an answer. Transport failures, 5xx and rejected credentials (401/403) fail it; any other
    /// status means the upstream is up, so a server without the probed path still passes.
    pub async fn probe(&self, request: reqwest::RequestBuilder) -> Result<(), Error> {
        let response = tokio::time::timeout(self.response_timeout, request.send())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("The upstream provider '{}' did not answer.", self.name),
                )
            })?
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        if status >= 500 || matches!(status, 401 | 403) {
            return Err(self.status_error(status, "health check failed", None, None));
        }
        Ok(())
    }

    /// A GET of `url`.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    /// Read a whole JSON body, at most `max_response_bytes` of it.
    pub async fn json<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, Error> {
        let (body, complete) = self.read_capped(response, self.max_response_bytes).await?;
        if !complete {
            return Err(self.too_large(
                "response body",
                self.max_response_bytes,
                "max_response_bytes",
            ));
        }
        serde_json::from_slice(&body).map_err(|e| self.malformed(&e))
    }

    /// Read a body up to `limit` bytes: the bytes, and whether that was all of it. Nothing past
    /// the limit is buffered.
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<(Bytes, bool), Error> {
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Ok((Bytes::new(), false));
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            let room = limit - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body.freeze(), false));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), true))
    }

    /// An upstream answer over one of the configured byte limits.
    pub fn too_large(&self, what: &str, limit: usize, key: &str) -> Error {
        too_large(&self.name, what, limit, key)
    }

    /// The largest single streamed event, for decoders outside this module (Bedrock's
    /// event-stream frames).
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// A response body the upstream sent that does not parse.
    pub fn malformed(&self, e: &dyn std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::ModelError,
            format!(
                "The upstream provider '{}' sent a response Modelgate cannot read: {e}",
                self.name
            ),
        )
    }

    /// A stream that ended before the answer was complete.
    pub fn cut_short(&self) -> Error {
        Error::new(
            ErrorKind::ServiceUnavailable,
            format!(
                "The upstream provider '{}' closed the stream before the answer was complete.",
                self.name
            ),
        )
    }

    /// Classify a failure to talk to the upstream at all.
    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        let name = &self.name;
        if e.is_timeout() {
            Error::new(
                ErrorKind::Timeout,
                format!("The upstream provider '{name}' timed out."),
            )
        } else if e.is_connect() {
            Error::new(
                ErrorKind::ServiceUnavailable,
                format!("Cannot connect to the upstream provider '{name}'."),
            )
        } else {
            Error::new(
                ErrorKind::ServiceUnavailable,
                format!("The connection to the upstream provider '{name}' failed: {e}"),
            )
        }
    }

    /// Classify a non-2xx status. The upstream's message is passed on, except for credential
    /// failures: those are the gateway's configuration problem, and their messages may quote
    /// part of a key.
    pub fn status_error(
        &self,
        status: u16,
        message: &str,
        code: Option<&str>,
        retry_after: Option<Duration>,
    ) -> Error {
        let name = &self.name;
        let kind = match status {
            401 | 403 => ErrorKind::AccessDenied,
            404 => ErrorKind::NotFound,
            408 | 504 => ErrorKind::Timeout,
            413 => ErrorKind::PayloadTooLarge,
            424 => ErrorKind::ModelError,
            429 => ErrorKind::Throttling,
            500 => ErrorKind::Internal,
            400..=499 => ErrorKind::Validation,
            _ => ErrorKind::ServiceUnavailable,
        };
        let text = match kind {
            ErrorKind::AccessDenied => {
                tracing::warn!(provider = %name, status, "upstream rejected the gateway's credentials");
                format!(
                    "The upstream provider '{name}' rejected the gateway's credentials (HTTP {status})."
                )
            }
            ErrorKind::Validation | ErrorKind::NotFound | ErrorKind::PayloadTooLarge => {
                format!("{message} (upstream provider '{name}', HTTP {status})")
            }
            _ => format!("The upstream provider '{name}' failed with HTTP {status}: {message}"),
        };
        let error = Error::upstream(kind, text).with_retry_after(retry_after);
        match code {
            Some("context_length_exceeded") => error.with_code("context_length_exceeded"),
            Some("content_filter" | "content_policy_violation") => {
                error.with_code("content_filter")
            }
            _ => error,
        }
    }

    /// The events of a `text/event-stream` body. Transport failures (a reset, a read timeout)
    /// become classified errors; the caller decides whether the stream ended too early.
    pub fn sse(
        &self,
        response: reqwest::Response,
    ) -> BoxStream<'static, Result<eventsource_stream::Event, Error>> {
        let name = self.name.clone();
        let limit = self.max_event_bytes;
        let mut sizer = EventSizer::new(limit);
        response
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(SseInput::Transport)?;
                if sizer.feed(&chunk) {
                    Ok(chunk)
                } else {
                    Err(SseInput::Oversized)
                }
            })
            .eventsource()
            .map(move |item| {
                item.map_err(|e| match e {
                    eventsource_stream::EventStreamError::Transport(SseInput::Oversized) => {
                        too_large(&name, "single event", limit, "max_event_bytes")
                    }
                    eventsource_stream::EventStreamError::Transport(SseInput::Transport(e)) => {
                        stream_transport_error(&name, &e)
                    }
                    other => Error::new(
                        ErrorKind::ModelError,
                        format!(
                            "The upstream provider '{name}' sent a malformed event stream: {other}"
                        ),
                    ),
                })
            })
            .boxed()
    }

    /// The raw body chunks of a streaming response.
    pub fn bytes(&self, response: reqwest::Response) -> BoxStream<'static, Result<Bytes, Error>> {
        let name = self.name.clone();
        response
            .bytes_stream()
            .map(move |item| item.map_err(|e| stream_transport_error(&name, &e)))
            .boxed()
    }
}

fn too_large(name: &str, what: &str, limit: usize, key: &str) -> Error {
    Error::new(
        ErrorKind::ModelError,
        format!(
            "The upstream provider '{name}' sent a {what} larger than {limit} bytes (the provider's `{key}` limit)."
        ),
    )
}

/// What the byte stream under the SSE decoder can fail with.
#[derive(Debug)]
enum SseInput {
    Transport(reqwest::Error),
    Oversized,
}

impl std::fmt::Display for SseInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseInput::Transport(e) => e.fmt(f),
            SseInput::Oversized => f.write_str("event over the size limit"),
        }
    }
}

/// Counts the bytes of the server-sent event being received, so one endless event cannot grow
/// the decoder's buffer without bound. An event ends at an empty line (`\n\n`, with or
/// without `\r`).
struct EventSizer {
    limit: usize,
    since_boundary: usize,
    line_len: usize,
}

impl EventSizer {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            since_boundary: 0,
            line_len: 0,
        }
    }

    /// Note `chunk`; false once the current event is over the limit.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            match b {
                b'\n' => {
                    if self.line_len == 0 {
                        self.since_boundary = 0;
                    }
                    self.line_len = 0;
                }
                b'\r' => {}
                _ => {
                    self.line_len += 1;
                    self.since_boundary += 1;
                    if self.since_boundary > self.limit {
                        return false;
                    }
                }
            }
        }
        true
    }
}

fn stream_transport_error(name: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::new(
            ErrorKind::Timeout,
            format!("The upstream provider '{name}' stopped sending (read timeout)."),
        )
    } else {
        Error::new(
            ErrorKind::ServiceUnavailable,
            format!("The stream from the upstream provider '{name}' broke off."),
        )
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, or OpenAI's `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| -> Option<&str> { Some(headers.get(name)?.to_str().ok()?.trim()) };
    let seconds =
        |v: &str| -> Option<Duration> { Duration::try_from_secs_f64(v.parse::<f64>().ok()?).ok() };
    if let Some(ms) = text("retry-after-ms").and_then(seconds) {
        return Some(ms / 1000);
    }
    let value = text("retry-after")?;
    // Either delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past means now.
    seconds(value).or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    })
}

/// `{"error": {"message": …, "type": …, "code": …}}` (OpenAI) and
/// `{"type": "error", "error": {"type": …, "message": …}}` (Anthropic); `{"message": …}` (AWS).
pub(crate) fn parse_error_body(body: &[u8]) -> Option<(String, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let message = error
        .get("message")
        .or_else(|| error.get("Message"))
        .and_then(serde_json::Value::as_str)?
        .to_string();
    let code = error
        .get("code")
        .and_then(serde_json::Value::as_str)
        .or_else(|| error.get("type").and_then(serde_json::Value::as_str))
        .map(str::to_string);
    Some((message, code))
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` encoded for one URL path segment or query value (`:` becomes `%3A`, as AWS SDKs send
/// model ids).
pub(crate) fn path_segment(value: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(value, SEGMENT)
}

/// Millisecond count since `start`, saturating.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new("up", "http://x/", &HttpSettings::default(), vec![]).unwrap()
    }

    #[test]
    fn statuses_are_classified() {
        let u = upstream();
        let e = u.status_error(429, "slow", None, Some(Duration::from_secs(2)));
        assert_eq!((e.kind, e.retryable), (ErrorKind::Throttling, true));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        for (status, kind, retryable) in [
            (400, ErrorKind::Validation, false),
            (401, ErrorKind::AccessDenied, false),
            (403, ErrorKind::AccessDenied, false),
            (404, ErrorKind::NotFound, false),
            (422, ErrorKind::Validation, false),
            (500, ErrorKind::Internal, true),
            (502, ErrorKind::ServiceUnavailable, true),
            (503, ErrorKind::ServiceUnavailable, true),
            (504, ErrorKind::Timeout, true),
            (529, ErrorKind::ServiceUnavailable, true),
        ] {
            let e = u.status_error(status, "m", None, None);
            assert_eq!((e.kind, e.retryable), (kind, retryable), "{status}");
        }
        let e = u.status_error(401, "Incorrect API key provided: sk-abc", None, None);
        assert!(!e.message.contains("sk-abc"));
        let e = u.status_error(400, "too long", Some("context_length_exceeded"), None);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(u.url("/v1/x"), "http://x/v1/x");
    }

    #[test]
    fn error_bodies_of_each_dialect() {
        assert_eq!(
            parse_error_body(
                br#"{"error":{"message":"m","type":"invalid_request_error","code":"c"}}"#
            ),
            Some(("m".into(), Some("c".into())))
        );
        assert_eq!(
            parse_error_body(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            Some(("busy".into(), Some("overloaded_error".into())))
        );
        assert_eq!(
            parse_error_body(br#"{"message":"nope"}"#),
            Some(("nope".into(), None))
        );
        assert_eq!(parse_error_body(b"<html>"), None);
    }

    #[test]
    fn one_event_may_not_exceed_the_limit_but_a_long_stream_may() {
        let mut s = EventSizer::new(10);
        for _ in 0..1000 {
            assert!(s.feed(b"data: 1234\r\n\r\n"));
        }
        assert!(s.feed(b"data: 12"));
        assert!(!s.feed(b"345"), "11 bytes without a boundary");
        let mut s = EventSizer::new(10);
        // A line break alone is not a boundary: the lines of one event add up.
        assert!(s.feed(b"data: a\n"));
        assert!(!s.feed(b"data: b\n"));
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(115) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        // Nonsense never panics: huge, negative or unparseable values are ignored.
        for bad in ["1e300", "-5", "soon"] {
            h.insert("retry-after", HeaderValue::from_static(bad));
            assert_eq!(retry_after(&h), None, "{bad}");
        }
    }
}
