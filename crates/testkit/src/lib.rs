//! Dev-only test kit: [`MockUpstream`], an HTTP server that speaks the upstream wire formats
//! Modelgate's providers call — OpenAI chat completions and embeddings (JSON and SSE),
//! Anthropic Messages (JSON and SSE) and Bedrock Runtime (Converse, ConverseStream over the AWS
//! event stream, InvokeModel embeddings, CountTokens) — with scripted replies.
//!
//! A test queues [`Reply`]s; each request takes the next one (whatever its dialect) and gets it
//! rendered in the dialect it spoke, so one script drives every provider alike. Faults are part
//! of the script: error statuses with `Retry-After`, a slow first byte, slow chunks, bodies
//! split at awkward byte boundaries, a connection cut mid-stream, malformed JSON. Every request
//! is counted and recorded. With the queue empty the mock answers with the default reply (an
//! echo of the last user text unless set otherwise), so it also serves as a benchmark upstream.

pub mod scripted;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as Frame};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use futures::StreamExt;
use serde_json::{json, Value};

/// Why a scripted answer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model finished.
    EndTurn,
    /// The model called tools.
    ToolUse,
    /// The token limit was reached.
    MaxTokens,
}

/// One block of a scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text, streamed in pieces of [`Reply::text_piece`] characters.
    Text(String),
    /// A tool call; `arguments` is JSON text, streamed in pieces too.
    ToolCall {
        /// The call id.
        id: String,
        /// The tool name.
        name: String,
        /// The arguments as JSON text.
        arguments: String,
    },
    /// Reasoning ("thinking") text, streamed in pieces, then its signature where the dialect
    /// has one (Anthropic, Converse); OpenAI dialects send it as `reasoning_content`.
    Thinking {
        /// The reasoning text.
        text: String,
        /// The provider's signature.
        signature: Option<String>,
    },
    /// Encrypted reasoning (Anthropic `redacted_thinking`, Converse `redactedContent`); the
    /// OpenAI dialect has none and leaves it out.
    RedactedThinking(String),
}

/// What a reply contains.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// An answer: blocks, stop reason, token counts.
    Answer {
        /// The content blocks.
        blocks: Vec<Block>,
        /// Why it stopped.
        stop: Stop,
        /// Prompt tokens reported.
        input_tokens: u32,
        /// Generated tokens reported.
        output_tokens: u32,
    },
    /// An error status with a message, in the dialect's error shape.
    Status(u16, String),
    /// A 200 whose body does not parse.
    Malformed,
    /// Embedding vectors.
    Embeddings(Vec<Vec<f32>>),
    /// A token count (CountTokens endpoints).
    Tokens(u32),
    /// Echo the last user text as the answer (the default reply).
    Echo,
    /// An upstream that tries to exhaust the gateway.
    Hostile(Hostile),
}

/// Replies that try to exhaust a gateway's memory. Large bodies are generated as they are
/// sent, so the mock itself stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// An error status whose JSON body is `bytes` long.
    HugeErrorBody {
        /// The status.
        status: u16,
        /// The body's length.
        bytes: u64,
    },
    /// A `200` event stream whose first event never ends: `data: ` and then `bytes` of text
    /// without a line break.
    EndlessEvent {
        /// How much is sent before the connection closes.
        bytes: u64,
    },
    /// A streamed answer (Anthropic or OpenAI wire format) whose content block carries this
    /// index.
    BlockIndex(u32),
}

/// A scripted reply and how it is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What is sent.
    pub body: ReplyBody,
    /// Wait before the response headers.
    pub first_byte_delay: Duration,
    /// Wait between body pieces.
    pub chunk_delay: Duration,
    /// Write the body in pieces of this many bytes (splitting frames, JSON and UTF-8
    /// anywhere); `None` writes one piece per event.
    pub split_bytes: Option<usize>,
    /// Characters per streamed text or argument delta.
    pub text_piece: usize,
    /// Cut the connection after this many stream events, without an end.
    pub cut_after_events: Option<usize>,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
}

impl Reply {
    fn of(body: ReplyBody) -> Self {
        Self {
            body,
            first_byte_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            split_bytes: None,
            text_piece: 4,
            cut_after_events: None,
            retry_after: None,
        }
    }

    /// A text answer.
    pub fn text(text: &str) -> Self {
        Self::answer(vec![Block::Text(text.into())], Stop::EndTurn)
    }

    /// An answer of `blocks`, with token counts 10 in and 5 out.
    pub fn answer(blocks: Vec<Block>, stop: Stop) -> Self {
        Self::of(ReplyBody::Answer {
            blocks,
            stop,
            input_tokens: 10,
            output_tokens: 5,
        })
    }

    /// One tool call (after an optional text block).
    pub fn tool_call(text: Option<&str>, id: &str, name: &str, arguments: Value) -> Self {
        let mut blocks: Vec<Block> = text.map(|t| Block::Text(t.into())).into_iter().collect();
        blocks.push(Block::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.to_string(),
        });
        Self::answer(blocks, Stop::ToolUse)
    }

    /// An error status with a message.
    pub fn status(status: u16, message: &str) -> Self {
        Self::of(ReplyBody::Status(status, message.into()))
    }

    /// A 200 whose body does not parse.
    pub fn malformed() -> Self {
        Self::of(ReplyBody::Malformed)
    }

    /// Embedding vectors.
    pub fn embeddings(vectors: Vec<Vec<f32>>) -> Self {
        Self::of(ReplyBody::Embeddings(vectors))
    }

    /// A token count.
    pub fn tokens(n: u32) -> Self {
        Self::of(ReplyBody::Tokens(n))
    }

    /// An echo of the last user text.
    pub fn echo() -> Self {
        Self::of(ReplyBody::Echo)
    }

    /// A hostile reply.
    pub fn hostile(h: Hostile) -> Self {
        Self::of(ReplyBody::Hostile(h))
    }

    /// Token counts of an answer.
    pub fn usage(mut self, input: u32, output: u32) -> Self {
        if let ReplyBody::Answer {
            input_tokens,
            output_tokens,
            ..
        } = &mut self.body
        {
            *input_tokens = input;
            *output_tokens = output;
        }
        self
    }

    /// Add `Retry-After: value`.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Wait before the response headers.
    pub fn first_byte_delay(mut self, d: Duration) -> Self {
        self.first_byte_delay = d;
        self
    }

    /// Wait between body pieces.
    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = d;
        self
    }

    /// Write the body in pieces of `n` bytes.
    pub fn split(mut self, n: usize) -> Self {
        self.split_bytes = Some(n.max(1));
        self
    }

    /// Stream text and arguments `n` characters per delta.
    pub fn pieces(mut self, n: usize) -> Self {
        self.text_piece = n.max(1);
        self
    }

    /// Cut the connection after `n` stream events.
    pub fn cut_after(mut self, n: usize) -> Self {
        self.cut_after_events = Some(n);
        self
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    calls: AtomicUsize,
    api_key: Mutex<Option<String>>,
    /// Health checks (GETs) answer 503 when set.
    unhealthy: AtomicBool,
    health_checks: AtomicUsize,
    /// Per-million chance that a model call fails with a 503 instead of its reply.
    fault_ppm: AtomicU32,
    /// Skip recording requests (benchmarks: no memory growth, no per-call copies).
    no_record: AtomicBool,
}

/// A fraction (0–1) in parts per million, the fault rate's unit.
fn ppm(rate: f64) -> u32 {
    (rate.clamp(0.0, 1.0) * 1e6).round() as u32
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mock upstream server; it stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Start on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Start on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let state = Arc::clone(&shared);
            async move { handle(state, request).await }
        });
        let task = tokio::spawn(async move {
            // No Nagle delay between stream chunks (see the server's `serve`).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue a reply for the next request.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.state.script).push_back(reply);
        self
    }

    /// The reply used when the queue is empty (an echo unless set).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.state.default) = Some(reply);
    }

    /// Require this API key (or AWS access key id); other credentials get the dialect's 401/403.
    pub fn require_key(&self, key: &str) {
        *lock(&self.state.api_key) = Some(key.into());
    }

    /// Make health checks (any GET) answer 503 (`false`) or 200 (`true`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Health checks (GETs) received so far; they are not counted in [`MockUpstream::calls`].
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Fail this fraction of model calls, at random, with a 503 (scripted replies included).
    pub fn set_fault_rate(&self, rate: f64) {
        self.state.fault_ppm.store(ppm(rate), Ordering::SeqCst);
    }

    /// Model requests received so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Recorded> {
        lock(&self.state.requests).last().cloned()
    }
}

/// The wire format a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAiChat,
    OpenAiEmbeddings,
    AnthropicMessages,
    AnthropicCount,
    BedrockConverse,
    BedrockStream,
    BedrockInvoke,
    BedrockCount,
}

fn dialect(path: &str) -> Option<Dialect> {
    let path = path.split('?').next().unwrap_or(path);
    Some(if path.ends_with("/chat/completions") {
        Dialect::OpenAiChat
    } else if path.ends_with("/embeddings") {
        Dialect::OpenAiEmbeddings
    } else if path.ends_with("/v1/messages/count_tokens") {
        Dialect::AnthropicCount
    } else if path.ends_with("/v1/messages") {
        Dialect::AnthropicMessages
    } else if path.starts_with("/model/") && path.ends_with("/converse-stream") {
        Dialect::BedrockStream
    } else if path.starts_with("/model/") && path.ends_with("/converse") {
        Dialect::BedrockConverse
    } else if path.starts_with("/model/") && path.ends_with("/invoke") {
        Dialect::BedrockInvoke
    } else if path.starts_with("/model/") && path.ends_with("/count-tokens") {
        Dialect::BedrockCount
    } else {
        return None;
    })
}

fn is_bedrock(d: Dialect) -> bool {
    matches!(
        d,
        Dialect::BedrockConverse
            | Dialect::BedrockStream
            | Dialect::BedrockInvoke
            | Dialect::BedrockCount
    )
}

fn is_anthropic(d: Dialect) -> bool {
    matches!(d, Dialect::AnthropicMessages | Dialect::AnthropicCount)
}

impl Reply {
    /// A reply described in JSON, for scripts sent over HTTP (`POST /_mock/push`):
    /// `{"blocks": [{"text": …}, {"tool_call": {"id", "name", "arguments": {…}}},
    /// {"thinking": …, "signature": …}, {"redacted_thinking": …}],
    /// "stop": "end_turn|tool_use|max_tokens", "usage": [in, out]}` for an answer, or
    /// `{"status": 429, "message": …}`, `{"malformed": true}`, `{"tokens": n}`,
    /// `{"embeddings": [[…]]}`; delivery keys: `retry_after`, `split`, `pieces`, `cut_after`,
    /// `first_byte_delay_ms`, `chunk_delay_ms`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let mut reply = if let Some(status) = v.get("status").and_then(Value::as_u64) {
            let status = u16::try_from(status).map_err(|e| e.to_string())?;
            Reply::status(
                status,
                v.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("scripted error"),
            )
        } else if v.get("malformed") == Some(&json!(true)) {
            Reply::malformed()
        } else if let Some(n) = v.get("tokens").and_then(Value::as_u64) {
            Reply::tokens(u32::try_from(n).map_err(|e| e.to_string())?)
        } else if let Some(vectors) = v.get("embeddings") {
            Reply::embeddings(serde_json::from_value(vectors.clone()).map_err(|e| e.to_string())?)
        } else if let Some(blocks) = v.get("blocks").and_then(Value::as_array) {
            let mut out = Vec::new();
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    out.push(Block::Text(t.into()));
                } else if let Some(t) = b.get("thinking").and_then(Value::as_str) {
                    out.push(Block::Thinking {
                        text: t.into(),
                        signature: b.get("signature").and_then(Value::as_str).map(Into::into),
                    });
                } else if let Some(d) = b.get("redacted_thinking").and_then(Value::as_str) {
                    out.push(Block::RedactedThinking(d.into()));
                } else if let Some(call) = b.get("tool_call") {
                    out.push(Block::ToolCall {
                        id: call
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("call_1")
                            .into(),
                        name: call
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or("tool_call.name is required")?
                            .into(),
                        arguments: call
                            .get("arguments")
                            .cloned()
                            .unwrap_or_else(|| json!({}))
                            .to_string(),
                    });
                } else {
                    return Err(format!("unknown block {b}"));
                }
            }
            let stop = match v.get("stop").and_then(Value::as_str) {
                Some("tool_use") => Stop::ToolUse,
                Some("max_tokens") => Stop::MaxTokens,
                None if out.iter().any(|b| matches!(b, Block::ToolCall { .. })) => Stop::ToolUse,
                _ => Stop::EndTurn,
            };
            Reply::answer(out, stop)
        } else {
            Reply::echo()
        };
        if let Some([i, o]) = v
            .get("usage")
            .and_then(|u| serde_json::from_value::<[u32; 2]>(u.clone()).ok())
        {
            reply = reply.usage(i, o);
        }
        let number = |k: &str| v.get(k).and_then(Value::as_u64);
        if let Some(r) = v.get("retry_after").and_then(Value::as_str) {
            reply = reply.retry_after(r);
        }
        if let Some(n) = number("split") {
            reply = reply.split(usize::try_from(n).unwrap_or(1));
        }
        if let Some(n) = number("pieces") {
            reply = reply.pieces(usize::try_from(n).unwrap_or(1));
        }
        if let Some(n) = number("cut_after") {
            reply = reply.cut_after(usize::try_from(n).unwrap_or(0));
        }
        if let Some(ms) = number("first_byte_delay_ms") {
            reply = reply.first_byte_delay(Duration::from_millis(ms));
        }
        if let Some(ms) = number("chunk_delay_ms") {
            reply = reply.chunk_delay(Duration::from_millis(ms));
        }
        Ok(reply)
    }
}

/// The control API: `POST /_mock/push` (a reply or a list of them, see [`Reply::from_json`]),
/// `POST /_mock/default`, `POST /_mock/require_key` (`{"key": …}`), `GET /_mock/calls`,
/// `GET /_mock/requests`, `POST /_mock/healthy` (`{"healthy": false}` fails health checks),
/// `POST /_mock/faults` (`{"rate": 0.1}` fails that fraction of calls with a 503),
/// `POST /_mock/record` (`{"record": false}` stops recording requests, for benchmarks),
/// `POST /_mock/reset`.
fn control(state: &State, path: &str, body: &Value) -> Response {
    let replies = || -> Result<Vec<Reply>, String> {
        match body {
            Value::Array(items) => items.iter().map(Reply::from_json).collect(),
            one => Reply::from_json(one).map(|r| vec![r]),
        }
    };
    match path {
        "/_mock/push" => match replies() {
            Ok(r) => {
                lock(&state.script).extend(r);
                json_response(200, &json!({"queued": lock(&state.script).len()}), None)
            }
            Err(e) => json_response(400, &json!({"error": e}), None),
        },
        "/_mock/default" => match Reply::from_json(body) {
            Ok(r) => {
                *lock(&state.default) = Some(r);
                json_response(200, &json!({}), None)
            }
            Err(e) => json_response(400, &json!({"error": e}), None),
        },
        "/_mock/calls" => json_response(
            200,
            &json!({"calls": state.calls.load(Ordering::SeqCst)}),
            None,
        ),
        "/_mock/requests" => {
            let requests: Vec<Value> = lock(&state.requests)
                .iter()
                .map(|r| {
                    let headers: serde_json::Map<String, Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    json!({"path": r.path, "headers": headers, "body": r.body})
                })
                .collect();
            json_response(200, &json!(requests), None)
        }
        "/_mock/healthy" => {
            let healthy = body.get("healthy").and_then(Value::as_bool).unwrap_or(true);
            state.unhealthy.store(!healthy, Ordering::SeqCst);
            json_response(200, &json!({}), None)
        }
        "/_mock/faults" => {
            let rate = body.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
            state.fault_ppm.store(ppm(rate), Ordering::SeqCst);
            json_response(200, &json!({}), None)
        }
        "/_mock/record" => {
            let record = body.get("record").and_then(Value::as_bool).unwrap_or(true);
            state.no_record.store(!record, Ordering::SeqCst);
            json_response(200, &json!({}), None)
        }
        "/_mock/require_key" => {
            *lock(&state.api_key) = body.get("key").and_then(Value::as_str).map(str::to_string);
            json_response(200, &json!({}), None)
        }
        "/_mock/reset" => {
            *lock(&state.api_key) = None;
            lock(&state.script).clear();
            lock(&state.requests).clear();
            state.calls.store(0, Ordering::SeqCst);
            state.health_checks.store(0, Ordering::SeqCst);
            state.unhealthy.store(false, Ordering::SeqCst);
            state.fault_ppm.store(0, Ordering::SeqCst);
            json_response(200, &json!({}), None)
        }
        _ => plain(StatusCode::NOT_FOUND, "unknown control path"),
    }
}

async fn handle(state: Arc<State>, request: Request<Body>) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let headers = request.headers().clone();
    if request.method() == axum::http::Method::GET && !path.starts_with("/_mock/") {
        // Health checks: `GET /models` (OpenAI), `GET /v1/models` (Anthropic), `GET /` (Bedrock).
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        return if state.unhealthy.load(Ordering::SeqCst) {
            plain(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
        } else {
            json_response(200, &json!({"object": "list", "data": []}), None)
        };
    }
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.starts_with("/_mock/") {
        return control(&state, &path, &json);
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    if !state.no_record.load(Ordering::Relaxed) {
        lock(&state.requests).push(Recorded {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: json.clone(),
        });
    }
    let Some(dialect) = dialect(&path) else {
        return plain(StatusCode::NOT_FOUND, "unknown path");
    };
    if let Some(key) = lock(&state.api_key).clone() {
        if !authorised(dialect, &headers, &key) {
            let status = if is_bedrock(dialect) { 403 } else { 401 };
            return error_response(dialect, status, "The credentials are not valid.", None);
        }
    }
    let reply = lock(&state.script)
        .pop_front()
        .or_else(|| lock(&state.default).clone())
        .unwrap_or_else(Reply::echo);
    let fault_ppm = state.fault_ppm.load(Ordering::SeqCst);
    if fault_ppm > 0 && fastrand::u32(0..1_000_000) < fault_ppm {
        return error_response(
            dialect,
            503,
            "Injected fault: the upstream is overloaded.",
            None,
        );
    }
    if !reply.first_byte_delay.is_zero() {
        tokio::time::sleep(reply.first_byte_delay).await;
    }
    render(dialect, &json, reply)
}

fn authorised(dialect: Dialect, headers: &HeaderMap, key: &str) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if is_bedrock(dialect) {
        get("authorization").is_some_and(|a| {
            a.starts_with("AWS4-HMAC-SHA256") && a.contains(&format!("Credential={key}/"))
        })
    } else if is_anthropic(dialect) {
        get("x-api-key") == Some(key)
    } else {
        get("authorization") == Some(&format!("Bearer {key}")) || get("api-key") == Some(key)
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response
}

fn json_response(status: u16, value: &Value, retry_after: Option<&str>) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    if let Some(v) = retry_after.and_then(|v| axum::http::HeaderValue::from_str(v).ok()) {
        headers.insert("retry-after", v);
    }
    response
}

/// An error in the dialect's own shape.
fn error_response(
    dialect: Dialect,
    status: u16,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    if is_bedrock(dialect) {
        let name = match status {
            400 => "ValidationException",
            403 => "UnrecognizedClientException",
            404 => "ResourceNotFoundException",
            408 => "ModelTimeoutException",
            424 => "ModelErrorException",
            429 => "ThrottlingException",
            503 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        let mut response = json_response(status, &json!({"message": message}), retry_after);
        response.headers_mut().insert(
            "x-amzn-errortype",
            axum::http::HeaderValue::from_static(name),
        );
        return response;
    }
    if is_anthropic(dialect) {
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        return json_response(
            status,
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
            retry_after,
        );
    }
    let (kind, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("rate_limit_exceeded", json!("rate_limit_exceeded")),
        _ => ("server_error", Value::Null),
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        retry_after,
    )
}

/// The last user text of any dialect's request body.
fn last_user_text(body: &Value) -> String {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(m) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn render(dialect: Dialect, request: &Value, reply: Reply) -> Response {
    let retry_after = reply.retry_after.clone();
    let body = match &reply.body {
        ReplyBody::Echo => ReplyBody::Answer {
            blocks: vec![Block::Text(format!("echo: {}", last_user_text(request)))],
            stop: Stop::EndTurn,
            input_tokens: 10,
            output_tokens: 5,
        },
        other => other.clone(),
    };
    match body {
        ReplyBody::Status(status, message) => {
            error_response(dialect, status, &message, retry_after.as_deref())
        }
        ReplyBody::Malformed => {
            let text = match dialect {
                Dialect::BedrockStream => {
                    return stream_response(
                        "application/vnd.amazon.eventstream",
                        vec![Bytes::from_static(b"\x00\x00\x00\x10garbage-frame!!")],
                        &reply,
                    )
                }
                _ if request.get("stream") == Some(&json!(true)) => {
                    return stream_response(
                        "text/event-stream",
                        vec![Bytes::from_static(b"data: {\"choices\": [\n\n")],
                        &reply,
                    )
                }
                _ => "{\"choices\": [",
            };
            let mut response = Response::new(Body::from(text));
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        ReplyBody::Tokens(n) => match dialect {
            Dialect::AnthropicCount => json_response(200, &json!({"input_tokens": n}), None),
            _ => json_response(200, &json!({"inputTokens": n}), None),
        },
        ReplyBody::Embeddings(vectors) => embeddings(dialect, request, Some(vectors)),
        ReplyBody::Answer { .. }
            if matches!(dialect, Dialect::OpenAiEmbeddings | Dialect::BedrockInvoke) =>
        {
            embeddings(dialect, request, None)
        }
        ReplyBody::Answer { .. }
            if matches!(dialect, Dialect::AnthropicCount | Dialect::BedrockCount) =>
        {
            render(dialect, request, Reply::tokens(10))
        }
        ReplyBody::Echo => plain(StatusCode::INTERNAL_SERVER_ERROR, "unreachable"),
        ReplyBody::Hostile(h) => hostile(dialect, h, &reply),
        ReplyBody::Answer {
            blocks,
            stop,
            input_tokens,
            output_tokens,
        } => {
            let answer = Answer {
                blocks,
                stop,
                input_tokens,
                output_tokens,
                piece: reply.text_piece,
            };
            let stream = request.get("stream") == Some(&json!(true));
            match dialect {
                Dialect::OpenAiChat if stream => {
                    stream_response("text/event-stream", openai_stream(&answer), &reply)
                }
                Dialect::OpenAiChat => json_response(200, &openai_json(&answer), None),
                Dialect::AnthropicMessages if stream => {
                    stream_response("text/event-stream", anthropic_stream(&answer), &reply)
                }
                Dialect::AnthropicMessages => json_response(200, &anthropic_json(&answer), None),
                Dialect::BedrockStream => stream_response(
                    "application/vnd.amazon.eventstream",
                    bedrock_stream(&answer),
                    &reply,
                ),
                _ => json_response(200, &bedrock_json(&answer), None),
            }
        }
    }
}

/// Deterministic vectors: 8 dimensions from each text's bytes.
fn fake_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for (i, b) in text.bytes().enumerate() {
        v[i % 8] += f32::from(b) / 255.0;
    }
    v
}

fn embeddings(dialect: Dialect, request: &Value, vectors: Option<Vec<Vec<f32>>>) -> Response {
    let texts: Vec<String> = match request.get("input").or_else(|| request.get("texts")) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => request
            .get("inputText")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
    };
    let vectors = vectors.unwrap_or_else(|| texts.iter().map(|t| fake_vector(t)).collect());
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    match dialect {
        Dialect::OpenAiEmbeddings => json_response(
            200,
            &json!({
                "object": "list",
                "data": vectors.iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect::<Vec<_>>(),
                "model": request.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }),
            None,
        ),
        _ if request.get("texts").is_some() => json_response(
            200,
            &json!({"embeddings": vectors, "id": "mock", "texts": texts, "response_type": "embeddings_floats"}),
            None,
        ),
        _ => json_response(
            200,
            &json!({"embedding": vectors.first().cloned().unwrap_or_default(), "inputTextTokenCount": tokens}),
            None,
        ),
    }
}

struct Answer {
    blocks: Vec<Block>,
    stop: Stop,
    input_tokens: u32,
    output_tokens: u32,
    piece: usize,
}

/// `text` in pieces of `n` characters (never splitting a character).
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn openai_json(a: &Answer) -> Value {
    let text: String = a
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let reasoning: String = a
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = a
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({
                "id": id, "type": "function", "function": {"name": name, "arguments": arguments},
            })),
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
        "choices": [{"index": 0, "message": message, "finish_reason": openai_finish(a.stop)}],
        "usage": {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens, "total_tokens": a.input_tokens + a.output_tokens},
    })
}

fn openai_finish(stop: Stop) -> &'static str {
    modelgate_types::vocab::openai::finish_reason(stop.canonical())
}

fn openai_stream(a: &Answer) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        sse(
            None,
            &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut call_index = 0;
    for block in &a.blocks {
        match block {
            Block::Text(t) => {
                for p in pieces(t, a.piece) {
                    out.push(chunk(json!({"content": p}), Value::Null));
                }
            }
            Block::Thinking { text, .. } => {
                for p in pieces(text, a.piece) {
                    out.push(chunk(json!({"reasoning_content": p}), Value::Null));
                }
            }
            Block::RedactedThinking(_) => {}
            Block::ToolCall {
                id,
                name,
                arguments,
            } => {
                out.push(chunk(
                    json!({"tool_calls": [{"index": call_index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for p in pieces(arguments, a.piece) {
                    out.push(chunk(
                        json!({"tool_calls": [{"index": call_index, "function": {"arguments": p}}]}),
                        Value::Null,
                    ));
                }
                call_index += 1;
            }
        }
    }
    out.push(chunk(json!({}), json!(openai_finish(a.stop))));
    out.push(sse(
        None,
        &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock", "choices": [],
                "usage": {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens, "total_tokens": a.input_tokens + a.output_tokens}}),
    ));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// The stop reason's name in Anthropic and Converse (they agree).
/// Anthropic's and Converse's name of a stop (the same words for these three).
fn stop_name(stop: Stop) -> &'static str {
    modelgate_types::vocab::anthropic::stop_reason_name(stop.canonical())
}

impl Stop {
    fn canonical(self) -> modelgate_types::StopReason {
        match self {
            Stop::EndTurn => modelgate_types::StopReason::EndTurn,
            Stop::ToolUse => modelgate_types::StopReason::ToolUse,
            Stop::MaxTokens => modelgate_types::StopReason::MaxTokens,
        }
    }
}

fn anthropic_json(a: &Answer) -> Value {
    let content: Vec<Value> = a
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::Thinking { text, signature } => {
                json!({"type": "thinking", "thinking": text, "signature": signature})
            }
            Block::RedactedThinking(data) => json!({"type": "redacted_thinking", "data": data}),
            Block::ToolCall {
                id,
                name,
                arguments,
            } => json!({
                "type": "tool_use", "id": id, "name": name,
                "input": serde_json::from_str::<Value>(arguments).unwrap_or(Value::Null),
            }),
        })
        .collect();
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": "mock", "content": content,
        "stop_reason": stop_name(a.stop), "stop_sequence": null,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
    })
}

fn anthropic_stream(a: &Answer) -> Vec<Bytes> {
    let mut out = vec![sse(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": "mock",
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": a.input_tokens, "output_tokens": 1}}}),
    )];
    out.push(sse(Some("ping"), &json!({"type": "ping"})));
    for (index, block) in a.blocks.iter().enumerate() {
        let (start, deltas) = match block {
            Block::Text(t) => (
                json!({"type": "text", "text": ""}),
                pieces(t, a.piece)
                    .into_iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect::<Vec<_>>(),
            ),
            Block::ToolCall {
                id,
                name,
                arguments,
            } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                pieces(arguments, a.piece)
                    .into_iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
            Block::Thinking { text, signature } => (
                json!({"type": "thinking", "thinking": ""}),
                pieces(text, a.piece)
                    .into_iter()
                    .map(|p| json!({"type": "thinking_delta", "thinking": p}))
                    .chain(
                        signature
                            .iter()
                            .map(|s| json!({"type": "signature_delta", "signature": s})),
                    )
                    .collect(),
            ),
            Block::RedactedThinking(data) => (
                json!({"type": "redacted_thinking", "data": data}),
                Vec::new(),
            ),
        };
        out.push(sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for d in deltas {
            out.push(sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": index, "delta": d}),
            ));
        }
        out.push(sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(sse(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_name(a.stop), "stop_sequence": null},
                "usage": {"output_tokens": a.output_tokens}}),
    ));
    out.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
    out
}

fn bedrock_json(a: &Answer) -> Value {
    let content: Vec<Value> = a
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"text": t}),
            Block::Thinking { text, signature } => {
                let mut reasoning = json!({"text": text});
                if let Some(s) = signature {
                    reasoning["signature"] = json!(s);
                }
                json!({"reasoningContent": {"reasoningText": reasoning}})
            }
            Block::RedactedThinking(data) => {
                json!({"reasoningContent": {"redactedContent": data}})
            }
            Block::ToolCall {
                id,
                name,
                arguments,
            } => json!({"toolUse": {
                "toolUseId": id, "name": name,
                "input": serde_json::from_str::<Value>(arguments).unwrap_or(Value::Null),
            }}),
        })
        .collect();
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_name(a.stop),
        "usage": {"inputTokens": a.input_tokens, "outputTokens": a.output_tokens, "totalTokens": a.input_tokens + a.output_tokens},
        "metrics": {"latencyMs": 1},
    })
}

/// One event-stream message.
pub fn event_frame(event_type: &str, payload: &Value) -> Bytes {
    let message = Frame::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    let _ = write_message_to(&message, &mut out);
    Bytes::from(out)
}

fn bedrock_stream(a: &Answer) -> Vec<Bytes> {
    let mut out = vec![event_frame("messageStart", &json!({"role": "assistant"}))];
    for (index, block) in a.blocks.iter().enumerate() {
        match block {
            Block::Text(t) => {
                for p in pieces(t, a.piece) {
                    out.push(event_frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": index, "delta": {"text": p}}),
                    ));
                }
            }
            Block::Thinking { text, signature } => {
                let deltas = pieces(text, a.piece)
                    .into_iter()
                    .map(|p| json!({"text": p}))
                    .chain(signature.iter().map(|s| json!({"signature": s})));
                for d in deltas {
                    out.push(event_frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": index, "delta": {"reasoningContent": d}}),
                    ));
                }
            }
            Block::RedactedThinking(data) => out.push(event_frame(
                "contentBlockDelta",
                &json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"redactedContent": data}}}),
            )),
            Block::ToolCall {
                id,
                name,
                arguments,
            } => {
                out.push(event_frame(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                ));
                for p in pieces(arguments, a.piece) {
                    out.push(event_frame(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}}),
                    ));
                }
            }
        }
        out.push(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": index}),
        ));
    }
    out.push(event_frame(
        "messageStop",
        &json!({"stopReason": stop_name(a.stop)}),
    ));
    out.push(event_frame(
        "metadata",
        &json!({"usage": {"inputTokens": a.input_tokens, "outputTokens": a.output_tokens, "totalTokens": a.input_tokens + a.output_tokens},
                "metrics": {"latencyMs": 1}}),
    ));
    out
}

/// A streaming 200 of `events`, delivered as the reply says: cut after some events, re-split
/// into pieces of a fixed byte size, with a delay between pieces.
fn stream_response(content_type: &'static str, mut events: Vec<Bytes>, reply: &Reply) -> Response {
    let cut = reply.cut_after_events.is_some_and(|n| n < events.len());
    if let Some(n) = reply.cut_after_events {
        events.truncate(n);
    }
    let pieces: Vec<Bytes> = match reply.split_bytes {
        None => events,
        Some(size) => {
            let all: Vec<u8> = events.iter().flat_map(|b| b.iter().copied()).collect();
            all.chunks(size).map(Bytes::copy_from_slice).collect()
        }
    };
    let delay = reply.chunk_delay;
    let body = futures::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>))
        .then(move |piece| async move {
            if delay.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(delay).await;
            }
            piece
        })
        .chain(futures::stream::iter(cut.then(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "scripted cut",
            ))
        })));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static(content_type),
    );
    response
}

/// `total` bytes of `fill`, generated in 64 KiB pieces as they are sent, after `prefix`.
fn generated(prefix: &'static [u8], fill: u8, total: u64) -> Body {
    const PIECE: u64 = 64 << 10;
    let piece = Bytes::from(vec![fill; PIECE as usize]);
    let first =
        futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from_static(prefix)) });
    let rest = futures::stream::unfold(total, move |left| {
        let piece = piece.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(PIECE);
            tokio::task::yield_now().await;
            Some((Ok(piece.slice(..n as usize)), left - n))
        }
    });
    Body::from_stream(first.chain(rest))
}

fn hostile(dialect: Dialect, h: Hostile, reply: &Reply) -> Response {
    match h {
        Hostile::HugeErrorBody { status, bytes } => {
            let mut response =
                Response::new(generated(b"{\"error\": {\"message\": \"", b'x', bytes));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Hostile::EndlessEvent { bytes } => {
            let mut response = Response::new(generated(b"data: ", b'a', bytes));
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
        Hostile::BlockIndex(index) => {
            let events = if is_anthropic(dialect) {
                vec![
                    sse(
                        Some("message_start"),
                        &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": "mock",
                        "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                    ),
                    sse(
                        Some("content_block_start"),
                        &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                    ),
                    sse(
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": "hostile"}}),
                    ),
                    sse(
                        Some("content_block_stop"),
                        &json!({"type": "content_block_stop", "index": index}),
                    ),
                    sse(
                        Some("message_delta"),
                        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 1}}),
                    ),
                    sse(Some("message_stop"), &json!({"type": "message_stop"})),
                ]
            } else {
                let chunk = |delta: Value, finish: Value| {
                    sse(
                        None,
                        &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
                    )
                };
                vec![
                    chunk(
                        json!({"role": "assistant", "tool_calls": [{"index": index, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
                        Value::Null,
                    ),
                    chunk(json!({}), json!("tool_calls")),
                    Bytes::from_static(b"data: [DONE]\n\n"),
                ]
            };
            stream_response("text/event-stream", events, reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_never_split_characters() {
        assert_eq!(pieces("héllo", 2), vec!["hé", "ll", "o"]);
    }

    #[test]
    fn dialects_follow_paths() {
        assert_eq!(dialect("/v1/chat/completions"), Some(Dialect::OpenAiChat));
        assert_eq!(
            dialect("/openai/deployments/d/chat/completions?api-version=1"),
            Some(Dialect::OpenAiChat)
        );
        assert_eq!(
            dialect("/model/a%3A0/converse-stream"),
            Some(Dialect::BedrockStream)
        );
        assert_eq!(
            dialect("/v1/messages/count_tokens"),
            Some(Dialect::AnthropicCount)
        );
        assert_eq!(dialect("/nope"), None);
    }
}
