//! The OpenAI front door: `/v1/chat/completions` (JSON and SSE), `/v1/embeddings`, `/v1/models`
//! (the legacy `/v1/completions` is in `crate::completions`).
//!
//! Wire types are private to this module; requests are mapped to canonical types once and
//! answers are mapped back once. `seed`, `logprobs`, the penalties, `logit_bias`, `top_k`,
//! `parallel_tool_calls` and `user` are canonical (`Generation`, `end_user`): each provider
//! honours, maps, drops (naming it in `x-modelgate-dropped-params`) or refuses them
//! (`Capabilities::fit`). Members the door does not know, with `metadata`, are kept as native
//! parameters: OpenAI-compatible upstreams get them as sent, other providers drop, keep or
//! refuse each (`modelgate_types::params`). The table is in `docs/front-doors.md`; `n > 1` is
//! refused with a 400, never silently changed.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use modelgate_core::CallContext;
use modelgate_types::params::{Native, NativeParam, Wire};
use modelgate_types::vocab;
use modelgate_types::{
    BinarySource, ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, ContentBlockStart,
    EmbedInput, EmbedRequest, Error, Generation, ImageBlock, InferenceConfig, Message, Reasoning,
    ResponseFormat, Role, StreamEvent, SystemBlock, Tool, ToolChoice, ToolConfig, ToolResultBlock,
    ToolResultContent, ToolSpec, ToolUseBlock, Usage,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, json_error, openai_body, respond, OpenAiError};
use crate::streaming;

/// Members the door does not know stay in `rest`: they are forwarded to OpenAI-compatible
/// upstreams as sent, and refused, dropped or kept for any other (`modelgate_types::params`).
#[derive(Deserialize)]
struct ChatCompletionRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(default)]
    seed: Option<i64>,
    /// The end user (sticky routing reads it).
    #[serde(default)]
    user: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<HashMap<String, f32>>,
    /// Not OpenAI's own: the extension OpenAI-compatible servers (vLLM, Ollama, llama.cpp)
    /// take, which the embedded model and the Anthropic and Bedrock upstreams honour too.
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// Routing rules may match on it; forwarded to OpenAI-compatible upstreams.
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    /// Response-cache settings (`no-cache`, `no-store`, `ttl`, `namespace`…), as LiteLLM's
    /// clients send them.
    #[serde(default)]
    cache: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// OpenAI's sampling controls beyond `inferenceConfig` (chat and legacy completions alike).
pub(crate) struct Sampling {
    pub(crate) seed: Option<i64>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) logit_bias: Option<HashMap<String, f32>>,
    pub(crate) top_k: Option<u32>,
}

impl Sampling {
    /// The canonical settings, with `logprobs` already checked by the door; token ids in
    /// `logit_bias` must be integers.
    pub(crate) fn into_generation(self, logprobs: Option<u8>) -> Result<Generation, Error> {
        let logit_bias = match self.logit_bias {
            None => None,
            Some(map) if map.is_empty() => None,
            Some(map) => Some(
                map.into_iter()
                    .map(|(token, bias)| match token.parse::<u32>() {
                        Ok(id) => Ok((id, bias)),
                        Err(_) => Err(bad(format!(
                            "logit_bias: '{token}' is not a token id (keys are token ids as strings)"
                        ))
                        .with_code("invalid_value")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let generation = Generation {
            seed: self.seed.map(|s| s as u64),
            logprobs,
            top_k: self.top_k,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias,
            parallel_tool_calls: None,
        };
        // Checked here too, so the error comes before any other work on the request.
        generation.validate()?;
        Ok(generation)
    }
}

/// The end user of an OpenAI request (`user`), which must be a string.
pub(crate) fn end_user(user: Option<&Value>) -> Result<Option<String>, Error> {
    match user {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) => Ok(Some(u.clone())),
        Some(_) => Err(bad("user must be a string").with_code("invalid_type")),
    }
}

/// An OpenAI request's own parameters that have no canonical form: its unknown members and
/// its `metadata`, for OpenAI-compatible upstreams.
pub(crate) fn native(
    rest: serde_json::Map<String, Value>,
    metadata: Option<&Value>,
) -> Option<Native> {
    let params = rest
        .into_iter()
        .chain(metadata.map(|m| ("metadata".to_string(), m.clone())))
        .map(|(name, value)| NativeParam::top(name, value))
        .collect();
    Native::new(Wire::OpenAi, params)
}

/// `stop`: one sequence or a list (chat and legacy completions alike).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences of an optional `stop`.
    pub(crate) fn sequences(stop: Option<Stop>) -> Vec<String> {
        match stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        }
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default, rename = "name")]
    _name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::validation(message)
}

fn text_of(content: Option<WireContent>, role: &str) -> Result<String, Error> {
    match content {
        None => Ok(String::new()),
        Some(WireContent::Text(t)) => Ok(t),
        Some(WireContent::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    WirePart::Text { text } => out.push_str(&text),
                    WirePart::ImageUrl { .. } => {
                        return Err(bad(format!(
                            "'{role}' messages may contain only text parts"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn content_blocks(content: Option<WireContent>) -> Result<Vec<ContentBlock>, Error> {
    match content {
        None => Ok(Vec::new()),
        Some(WireContent::Text(t)) => Ok(vec![ContentBlock::Text(t)]),
        Some(WireContent::Parts(parts)) => parts
            .into_iter()
            .map(|p| match p {
                WirePart::Text { text } => Ok(ContentBlock::Text(text)),
                WirePart::ImageUrl { image_url } => image_block(&image_url.url),
            })
            .collect(),
    }
}

/// `response_format`: `text` (the default), `json_object`, or `json_schema` with a schema.
fn response_format(value: Option<Value>) -> Result<Option<ResponseFormat>, Error> {
    let Some(value) = value else { return Ok(None) };
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = value.get("json_schema").ok_or_else(|| {
                bad("response_format.json_schema is required for type json_schema")
            })?;
            json_schema_format(spec, "response_format.json_schema").map(Some)
        }
        _ => Err(bad(
            "response_format.type must be one of text, json_object or json_schema",
        )),
    }
}

/// A JSON-schema format's `name` (required), `description`, `schema` (any object when absent)
/// and `strict`: under `response_format.json_schema` on the chat door, beside `type` in the
/// Responses API's `text.format`. `at` names the object in errors.
pub(crate) fn json_schema_format(spec: &Value, at: &str) -> Result<ResponseFormat, Error> {
    let name = spec
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.name is required")))?;
    Ok(ResponseFormat::JsonSchema {
        name: name.to_string(),
        description: spec
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        schema: spec
            .get("schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
        strict: spec.get("strict").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Only `data:` URLs are accepted: the gateway does not fetch URLs on a caller's behalf.
pub(crate) fn image_block(url: &str) -> Result<ContentBlock, Error> {
    let (format, data) = vocab::media::parse_data_url(url).map_err(bad)?;
    Ok(ContentBlock::Image(ImageBlock {
        format: format.to_string(),
        source: BinarySource::Bytes(data.to_string()),
    }))
}

impl ChatCompletionRequest {
    fn into_canonical(self) -> Result<(ChatRequest, bool, bool), Error> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(bad("n must be 1; Modelgate returns one choice per request"));
        }
        let logprobs = logprobs(self.logprobs, self.top_logprobs)?;
        let mut generation = Sampling {
            seed: self.seed,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias: self.logit_bias,
            top_k: self.top_k,
        }
        .into_generation(logprobs)?;
        generation.parallel_tool_calls = self.parallel_tool_calls;
        let end_user = end_user(self.user.as_ref())?;
        let native = native(self.rest, self.metadata.as_ref());
        let response_format = response_format(self.response_format)?;
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(n) if n <= 0 => {
                return Err(bad("max_tokens must be a positive integer").with_code("invalid_value"))
            }
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let mut system = Vec::new();
        let mut messages: Vec<Message> = Vec::new();
        for m in self.messages {
            match m.role.as_str() {
                "system" | "developer" => {
                    system.push(SystemBlock::Text(text_of(m.content, &m.role)?));
                }
                "user" => push_message(&mut messages, Role::User, content_blocks(m.content)?),
                "assistant" => {
                    let mut blocks: Vec<ContentBlock> = content_blocks(m.content)?
                        .into_iter()
                        .filter(|b| !matches!(b, ContentBlock::Text(t) if t.is_empty()))
                        .collect();
                    for call in m.tool_calls.unwrap_or_default() {
                        let input = if call.function.arguments.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(&call.function.arguments).map_err(|e| {
                                bad(format!("tool_calls arguments must be JSON: {e}"))
                            })?
                        };
                        blocks.push(ContentBlock::ToolUse(ToolUseBlock {
                            tool_use_id: call.id,
                            name: call.function.name,
                            input,
                        }));
                    }
                    push_message(&mut messages, Role::Assistant, blocks);
                }
                "tool" => {
                    let id = m
                        .tool_call_id
                        .ok_or_else(|| bad("'tool' messages need tool_call_id"))?;
                    let text = text_of(m.content, "tool")?;
                    push_message(
                        &mut messages,
                        Role::User,
                        vec![ContentBlock::ToolResult(ToolResultBlock {
                            tool_use_id: id,
                            content: vec![ToolResultContent::Text(text)],
                            status: None,
                        })],
                    );
                }
                other => {
                    return Err(bad(format!(
                        "unknown message role '{other}'; expected system, developer, user, assistant or tool"
                    )))
                }
            }
        }
        let stop_sequences = Stop::sequences(self.stop);
        let tools = match self.tools {
            Some(tools) if !tools.is_empty() => Some(ToolConfig {
                tools: tools
                    .into_iter()
                    .map(|t| {
                        Tool::ToolSpec(ToolSpec {
                            name: t.function.name,
                            description: t.function.description,
                            input_schema: json!({
                                "json": t.function.parameters.unwrap_or_else(|| json!({"type":"object","properties":{}}))
                            }),
                        })
                    })
                    .collect(),
                tool_choice: tool_choice(self.tool_choice)?,
            }),
            _ => None,
        };
        let request = ChatRequest {
            model: self.model,
            system,
            messages,
            inference: InferenceConfig {
                max_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                stop_sequences,
            },
            tools,
            response_format,
            reasoning: match self.reasoning_effort.as_deref() {
                None => None,
                Some(effort) => Reasoning::from_effort(effort, "reasoning_effort")?,
            },
            generation,
            end_user,
            native,
        };
        let stream = self.stream.unwrap_or(false);
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        Ok((request, stream, include_usage))
    }
}

/// `logprobs` and `top_logprobs` with OpenAI's rules: `top_logprobs` is 0–20 and needs
/// `logprobs: true`.
pub(crate) fn logprobs(
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
) -> Result<Option<u8>, Error> {
    let max = i64::from(Generation::MAX_TOP_LOGPROBS);
    let top = match top_logprobs {
        Some(n) if !(0..=max).contains(&n) => {
            return Err(
                bad(format!("top_logprobs must be between 0 and {max}")).with_code("invalid_value")
            )
        }
        Some(_) if logprobs != Some(true) => {
            return Err(bad("top_logprobs requires logprobs to be true").with_code("invalid_value"))
        }
        Some(n) => n as u8,
        None => 0,
    };
    Ok((logprobs == Some(true)).then_some(top))
}

/// Consecutive messages of one role merge (tool results after tool results, for instance).
pub(crate) fn push_message(messages: &mut Vec<Message>, role: Role, content: Vec<ContentBlock>) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(content),
        _ => messages.push(Message { role, content }),
    }
}

fn tool_choice(choice: Option<Value>) -> Result<Option<ToolChoice>, Error> {
    choice
        .map(|v| vocab::openai::parse_tool_choice(&v).map_err(bad))
        .transpose()
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_json(id: &str, created: u64, r: &ChatResponse) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &r.message.content {
        match block {
            ContentBlock::Text(t) => text.push_str(t),
            ContentBlock::ToolUse(t) => tool_calls.push(json!({
                "id": t.tool_use_id,
                "type": "function",
                "function": {"name": t.name, "arguments": t.input.to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": r.logprobs.as_deref().map(|t| json!({
                "content": vocab::openai::logprobs(t), "refusal": null,
            })),
            "finish_reason": vocab::openai::finish_reason(r.stop_reason),
        }],
        "usage": usage_json(&r.usage),
        "system_fingerprint": null,
    })
}

/// Routing rules read a request's `metadata` and `user` (chat, completions, responses).
pub(crate) fn routing_hints(ctx: &CallContext, metadata: Option<&Value>, user: Option<&str>) {
    if metadata.is_some() || user.is_some() {
        ctx.set_routing_body(
            modelgate_core::routing::metadata_of(metadata),
            user.map(str::to_string),
        );
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond::<OpenAiError>(chat_inner(state, ctx, body).await)
}

async fn chat_inner(
    state: AppState,
    ctx: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let mut wire: ChatCompletionRequest =
        crate::errors::parse_body(&body).map_err(|e| json_error(&e))?;
    if let Some(cache) = wire.cache.take() {
        ctx.merge_cache_body(&cache);
    }
    routing_hints(
        &ctx,
        wire.metadata.as_ref(),
        wire.user.as_ref().and_then(Value::as_str),
    );
    let (request, stream, include_usage) = wire.into_canonical()?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if !stream {
        let served = state.gateway.converse(&ctx, request).await?;
        return Ok(Json(completion_json(&id, created, &served.value)).into_response());
    }
    let model = request.model.clone();
    let events = state.gateway.converse_stream(&ctx, request).await?.value;
    let body = sse_body(events, id, created, model, include_usage);
    Ok(streaming::response("text/event-stream", &[], body))
}

/// Turn canonical events into OpenAI `chat.completion.chunk` SSE frames ending in `[DONE]`.
/// A failure after the stream started is sent as an `error` event (which the openai SDK raises),
/// never as a clean `[DONE]`.
fn sse_body(
    events: modelgate_providers::ChatStream,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let chunk = move |choices: Value, usage: Option<Value>| -> Bytes {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(streaming::sse_frame(None, &v.to_string()))
    };
    let delta = |d: Value, logprobs: Option<Vec<modelgate_types::TokenLogprob>>| {
        let logprobs =
            logprobs.map(|t| json!({"content": vocab::openai::logprobs(&t), "refusal": null}));
        json!([{"index": 0, "delta": d, "logprobs": logprobs, "finish_reason": null}])
    };
    let mut tool_index: HashMap<u32, usize> = HashMap::new();
    // Log-probabilities come just before the text they describe and go out in its chunk.
    let mut logprobs: Option<Vec<modelgate_types::TokenLogprob>> = None;
    let encode = move |event: &StreamEvent| match event {
        StreamEvent::MessageStart { .. } => chunk(
            delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            None,
        ),
        StreamEvent::ContentBlockStart {
            index,
            start: ContentBlockStart::ToolUse { tool_use_id, name },
        } => {
            let n = tool_index.len();
            tool_index.insert(*index, n);
            chunk(
                delta(
                    json!({"tool_calls": [{
                        "index": n, "id": tool_use_id, "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }]}),
                    None,
                ),
                None,
            )
        }
        StreamEvent::ContentBlockDelta { index, delta: d } => match d {
            ContentBlockDelta::Text(t) if !t.is_empty() => {
                chunk(delta(json!({"content": t}), logprobs.take()), None)
            }
            ContentBlockDelta::ToolUseInput(fragment) => {
                let n = tool_index.get(index).copied().unwrap_or(0);
                chunk(
                    delta(
                        json!({"tool_calls": [{"index": n, "function": {"arguments": fragment}}]}),
                        None,
                    ),
                    None,
                )
            }
            // The Chat Completions API has no reasoning output (documented).
            ContentBlockDelta::Text(_)
            | ContentBlockDelta::ReasoningText(_)
            | ContentBlockDelta::ReasoningSignature(_)
            | ContentBlockDelta::RedactedReasoning(_) => Bytes::new(),
        },
        StreamEvent::Logprobs { tokens, .. } => {
            logprobs
                .get_or_insert_with(Vec::new)
                .extend(tokens.iter().cloned());
            Bytes::new()
        }
        StreamEvent::ContentBlockStop { .. } => Bytes::new(),
        StreamEvent::MessageStop { stop_reason } => chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": vocab::openai::finish_reason(*stop_reason)}]),
            None,
        ),
        StreamEvent::Metadata { usage, .. } if include_usage => {
            chunk(json!([]), Some(usage_json(usage)))
        }
        StreamEvent::Metadata { .. } => Bytes::new(),
    };
    streaming::encode(
        events,
        encode,
        |e| Bytes::from(streaming::sse_frame(None, &openai_body(e).to_string())),
        Some(Bytes::from_static(b"data: [DONE]\n\n")),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default, rename = "user")]
    _user: Option<IgnoredAny>,
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond::<OpenAiError>(embeddings_inner(state, ctx, body).await)
}

async fn embeddings_inner(
    state: AppState,
    ctx: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let wire: EmbeddingsRequest = crate::errors::parse_body(&body).map_err(|e| json_error(&e))?;
    let texts = match wire.input {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => {
            return Err(bad(
                "input must be a string or an array of strings; token arrays are not supported",
            ))
        }
    };
    if texts.iter().any(String::is_empty) {
        return Err(bad("input must not contain empty strings"));
    }
    let base64 = match wire.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(format!(
                "encoding_format must be 'float' or 'base64', not '{other}'"
            )))
        }
    };
    let response = state
        .gateway
        .embed(
            &ctx,
            EmbedRequest {
                model: wire.model,
                input: EmbedInput::Texts(texts),
            },
        )
        .await?;
    if let Some(d) = wire.dimensions {
        let native = response.vectors.first().map_or(0, Vec::len);
        if d as usize != native {
            return Err(bad(format!(
                "dimensions must be {native} for '{}'; it cannot be shortened",
                response.model
            )));
        }
    }
    let data: Vec<Value> = response
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": response.model,
        "usage": {"prompt_tokens": response.input_tokens, "total_tokens": response.input_tokens},
    }))
    .into_response())
}

fn model_json(m: &modelgate_core::ModelInfo, created: u64) -> Value {
    json!({"id": m.id, "object": "model", "created": created, "owned_by": m.owned_by})
}

/// `GET /v1/models`
pub async fn list_models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .gateway
        .list()
        .iter()
        .map(|m| model_json(m, state.started_at))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`
pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.gateway.resolve(&id) {
        Ok(m) => Json(model_json(&m, state.started_at)).into_response(),
        Err(e) => OpenAiError(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<(ChatRequest, bool, bool), Error> {
        serde_json::from_value::<ChatCompletionRequest>(v)
            .map_err(|e| json_error(&e))?
            .into_canonical()
    }

    #[test]
    fn maps_roles_and_params() {
        let (r, stream, usage) = parse(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "max_tokens": 7, "temperature": 0, "stop": "\n", "stream": true,
            "stream_options": {"include_usage": true}, "seed": 3
        }))
        .unwrap();
        assert!(stream && usage);
        assert_eq!(r.system, vec![SystemBlock::Text("be brief".into())]);
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.inference.max_tokens, Some(7));
        assert_eq!(r.inference.stop_sequences, vec!["\n".to_string()]);
        assert_eq!(r.generation.seed, Some(3));
        assert_eq!(r.generation.logprobs, None);
        assert!(
            matches!(&r.messages[1].content[0], ContentBlock::ToolUse(t) if t.input == json!({"a":1}))
        );
        assert!(
            matches!(&r.messages[2].content[0], ContentBlock::ToolResult(t) if t.tool_use_id == "c1")
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let base = |extra: Value| {
            let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            parse(v).map(|_| ()).map_err(|e| e.status())
        };
        assert_eq!(base(json!({"n": 2})), Err(400));
        assert_eq!(base(json!({"max_tokens": 0})), Err(400));
        assert_eq!(base(json!({"max_tokens": -5})), Err(400));
        assert_eq!(base(json!({"logprobs": true, "top_logprobs": 3})), Ok(()));
        assert_eq!(base(json!({"top_logprobs": 3})), Err(400));
        assert_eq!(
            base(json!({"logprobs": true, "top_logprobs": 21})),
            Err(400)
        );
        assert_eq!(base(json!({"seed": -1})), Ok(()));
        // A member the door does not know is a native parameter; the provider decides
        // (`Capabilities::fit`), so it is not refused here.
        assert_eq!(base(json!({"bogus": true})), Ok(()));
        let (r, _, _) = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "bogus": true, "metadata": {"a": "b"}, "user": "u", "top_k": 3,
            "logit_bias": {"7": 2.5}, "parallel_tool_calls": false}),
        )
        .unwrap();
        let native = r.native.unwrap();
        let names: Vec<_> = native.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bogus", "metadata"]);
        assert_eq!(r.end_user.as_deref(), Some("u"));
        assert_eq!(r.generation.top_k, Some(3));
        assert_eq!(r.generation.logit_bias, Some([(7, 2.5)].into()));
        assert_eq!(r.generation.parallel_tool_calls, Some(false));
        assert_eq!(base(json!({"logit_bias": {"x": 1}})), Err(400));
        assert_eq!(base(json!({"presence_penalty": 2.5})), Err(400));
        assert_eq!(base(json!({"user": 5})), Err(400));
        assert_eq!(base(json!({"response_format": {"type": "yaml"}})), Err(400));
        assert_eq!(
            base(json!({"response_format": {"type": "json_schema"}})),
            Err(400)
        );
        assert_eq!(
            base(json!({"response_format": {"type": "json_object"}})),
            Ok(())
        );
        assert_eq!(
            base(json!({"messages": [{"role": "wizard", "content": "x"}]})),
            Err(400)
        );
        assert_eq!(base(json!({"seed": 1, "user": "u"})), Ok(()));
    }
}
