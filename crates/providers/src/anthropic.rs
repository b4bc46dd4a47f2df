//! The Anthropic Messages API as an upstream: `/v1/messages` (JSON and SSE with
//! `input_json_delta` tool arguments) and `/v1/messages/count_tokens`.
//!
//! Mapping decisions (also in `docs/providers.md`):
//! - `max_tokens` is required by the API; a request without one is sent with
//!   [`DEFAULT_MAX_TOKENS`].
//! - `temperature` above 1 is outside Anthropic's range and refused, not clamped.
//! - Reasoning blocks go back as `thinking` blocks only with their signature (the API refuses
//!   unsigned ones); unsigned reasoning text is dropped. Streams carry `signature_delta` and
//!   `redacted_thinking` blocks through, so a streamed answer's reasoning can be sent back too.
//! - The canonical reasoning budget goes out as `thinking: {type: enabled, budget_tokens}`. The
//!   API needs `max_tokens` above the budget: a request without `max_tokens` is sent with the
//!   budget plus [`DEFAULT_MAX_TOKENS`]; one whose `max_tokens` is not above the budget is
//!   refused with a validation error rather than sent to fail upstream.
//! - JSON mode without a schema does not exist in the API and is refused; a JSON schema goes
//!   out as `output_config.format`.
//! - Documents: PDF as base64, text formats (txt, md, csv, html) as plain-text sources; Office
//!   formats are refused.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt;
use modelgate_types::params::Wire;
use modelgate_types::{
    BinarySource, ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, ContentBlockStart,
    DocumentBlock, Error, ImageBlock, InferenceConfig, Message, ReasoningBlock, ResponseFormat,
    Role, StopReason, StreamEvent, SystemBlock, Tool, ToolConfig, ToolResultBlock,
    ToolResultContent, ToolUseBlock, Usage,
};
use reqwest::header::HeaderName;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{elapsed_ms, parse_error_body, HttpSettings, Upstream};
use crate::{Capabilities, ChatStream, Provider};

/// `max_tokens` sent when the caller set none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Anthropic API version header sent by default.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// One Anthropic API endpoint.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// The provider's name in the configuration.
    pub name: String,
    /// Base URL without the version path, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// API key, sent as `x-api-key`.
    pub api_key: Option<String>,
    /// The `anthropic-version` header.
    pub version: String,
    /// Connection settings.
    pub http: HttpSettings,
}

/// The shared connection to one Anthropic endpoint.
#[derive(Debug)]
pub struct AnthropicEndpoint {
    upstream: Upstream,
}

impl AnthropicEndpoint {
    /// Build the pooled client.
    pub fn new(config: AnthropicConfig) -> Result<Arc<Self>, Error> {
        let mut headers = vec![(
            HeaderName::from_static("anthropic-version"),
            config.version.clone(),
        )];
        if let Some(key) = &config.api_key {
            headers.push((HeaderName::from_static("x-api-key"), key.clone()));
        }
        Ok(Arc::new(Self {
            upstream: Upstream::new(&config.name, &config.base_url, &config.http, headers)?,
        }))
    }
}

/// One model served by an Anthropic endpoint.
#[derive(Debug)]
pub struct Anthropic {
    endpoint: Arc<AnthropicEndpoint>,
    model: String,
}

impl Anthropic {
    /// `model` is Anthropic's id, e.g. `claude-3-5-haiku-latest`.
    pub fn new(endpoint: Arc<AnthropicEndpoint>, model: String) -> Self {
        Self { endpoint, model }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response, Error> {
        let upstream = &self.endpoint.upstream;
        let body = serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?;
        upstream
            .send(upstream.post(&upstream.url(path), body), parse_error_body)
            .await
    }
}

#[async_trait]
impl Provider for Anthropic {
    fn system(&self) -> &'static str {
        "anthropic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::upstream(crate::ModelKind::Chat).speaking(Wire::Anthropic)
    }

    /// `GET /v1/models`.
    async fn health_check(&self) -> Result<(), Error> {
        let upstream = &self.endpoint.upstream;
        upstream
            .probe(upstream.get(&upstream.url("/v1/models")))
            .await
    }

    async fn converse(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let start = Instant::now();
        let body = messages_body(&self.model, &request, false)?;
        let response = self.post("/v1/messages", &body).await?;
        let upstream = &self.endpoint.upstream;
        let wire: WireResponse = upstream.json(response).await?;
        let mut content = Vec::with_capacity(wire.content.len());
        for block in wire.content {
            match block {
                WireBlock::Text { text } => content.push(ContentBlock::Text(text)),
                WireBlock::ToolUse { id, name, input } => {
                    content.push(ContentBlock::ToolUse(ToolUseBlock {
                        tool_use_id: id,
                        name,
                        input,
                    }))
                }
                WireBlock::Thinking {
                    thinking,
                    signature,
                } => content.push(ContentBlock::ReasoningContent(
                    ReasoningBlock::ReasoningText {
                        text: thinking,
                        signature,
                    },
                )),
                WireBlock::RedactedThinking { data } => content.push(
                    ContentBlock::ReasoningContent(ReasoningBlock::RedactedContent(data)),
                ),
                WireBlock::Other => {}
            }
        }
        if content.is_empty() {
            content.push(ContentBlock::Text(String::new()));
        }
        Ok(ChatResponse {
            model: request.model,
            message: Message {
                role: Role::Assistant,
                content,
            },
            stop_reason: stop_reason(wire.stop_reason.as_deref()),
            usage: wire.usage.canonical(),
            latency_ms: elapsed_ms(start),
            logprobs: None,
        })
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        let start = Instant::now();
        let body = messages_body(&self.model, &request, true)?;
        let response = self.post("/v1/messages", &body).await?;
        let endpoint = Arc::clone(&self.endpoint);
        let mut events = endpoint.upstream.sse(response);
        let stream: ChatStream = Box::pin(async_stream::try_stream! {
            let upstream = &endpoint.upstream;
            let mut state = StreamState::default();
            while let Some(event) = events.next().await {
                let event = event?;
                if event.data.trim().is_empty() {
                    continue;
                }
                let wire: WireEvent =
                    serde_json::from_str(&event.data).map_err(|e| upstream.malformed(&e))?;
                for e in state.on_event(upstream, wire, start)? {
                    yield e;
                }
                if state.done {
                    break;
                }
            }
            if !state.done {
                Err(upstream.cut_short())?;
            }
        });
        Ok(crate::renumber(stream))
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        let mut body = messages_body(&self.model, request, false)?;
        if let Some(map) = body.as_object_mut() {
            for key in [
                "max_tokens",
                "temperature",
                "top_p",
                "stop_sequences",
                "stream",
            ] {
                map.remove(key);
            }
        }
        let response = self.post("/v1/messages/count_tokens", &body).await?;
        let wire: CountTokens = self.endpoint.upstream.json(response).await?;
        Ok(wire.input_tokens)
    }
}

fn refused(what: &str) -> Error {
    Error::validation(format!("{what} cannot be sent to an Anthropic upstream."))
}

/// The Messages body for `request`.
fn messages_body(model: &str, request: &ChatRequest, stream: bool) -> Result<Value, Error> {
    let ChatRequest {
        model: _,
        system,
        messages,
        inference,
        tools,
        response_format,
        reasoning,
        // Seeds and penalties are taken off before the call and named in
        // `x-modelgate-dropped-params`; log-probabilities and logit bias are refused
        // (`Capabilities::fit`).
        generation,
        end_user,
        native,
    } = request;
    let InferenceConfig {
        max_tokens,
        temperature,
        top_p,
        stop_sequences,
    } = inference;
    let budget = reasoning.map(|r| r.budget_tokens);
    let max_tokens = match (max_tokens, budget) {
        (Some(max), Some(budget)) if *max <= budget => {
            return Err(Error::validation(format!(
                "max_tokens ({max}) must be greater than the reasoning budget ({budget} tokens): Anthropic counts thinking tokens against max_tokens."
            )))
        }
        (Some(max), _) => *max,
        (None, budget) => budget.unwrap_or(0).saturating_add(DEFAULT_MAX_TOKENS),
    };
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": crate::user_first(messages)
            .iter()
            .map(message_json)
            .collect::<Result<Vec<_>, _>>()?,
    });
    if stream {
        body["stream"] = json!(true);
    }
    if !system.is_empty() {
        let mut blocks = Vec::with_capacity(system.len());
        for block in system {
            match block {
                SystemBlock::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                SystemBlock::CachePoint(_) => mark_cached(&mut blocks),
            }
        }
        body["system"] = json!(blocks);
    }
    if let Some(t) = temperature {
        if *t > 1.0 {
            return Err(refused("A temperature above 1"));
        }
        body["temperature"] = json!(t);
    }
    if let Some(p) = top_p {
        body["top_p"] = json!(p);
    }
    if !stop_sequences.is_empty() {
        body["stop_sequences"] = json!(stop_sequences);
    }
    if let Some(k) = generation.top_k {
        body["top_k"] = json!(k);
    }
    if let Some(user) = end_user {
        body["metadata"] = json!({"user_id": user});
    }
    if let Some(r) = reasoning {
        body["thinking"] = r.thinking_json();
    }
    if let Some(ToolConfig { tools, tool_choice }) = tools {
        let mut out = Vec::with_capacity(tools.len());
        for tool in tools {
            match tool {
                Tool::ToolSpec(spec) => {
                    let mut tool = json!({
                        "name": spec.name,
                        "input_schema": spec.input_schema.get("json").cloned().unwrap_or_else(|| json!({"type": "object"})),
                    });
                    if let Some(d) = &spec.description {
                        tool["description"] = json!(d);
                    }
                    out.push(tool);
                }
                Tool::CachePoint(_) => mark_cached(&mut out),
            }
        }
        body["tools"] = json!(out);
        if let Some(choice) = tool_choice {
            body["tool_choice"] = modelgate_types::vocab::anthropic::tool_choice(choice);
        }
        // OpenAI's `parallel_tool_calls: false` is Anthropic's `disable_parallel_tool_use`.
        if generation.parallel_tool_calls == Some(false) {
            let choice = &mut body["tool_choice"];
            if choice.is_null() {
                *choice = json!({"type": "auto"});
            }
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
        }
    }
    match response_format {
        None => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(refused(
                "JSON mode without a schema (use a JSON schema response format)",
            ))
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
        }
    }
    // The caller's own Messages API parameters, unchanged.
    if let Some(native) = native.as_ref().filter(|n| n.wire == Wire::Anthropic) {
        native.merge_into(&mut body);
    }
    Ok(body)
}

fn message_json(m: &Message) -> Result<Value, Error> {
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut content = Vec::with_capacity(m.content.len());
    for block in &m.content {
        match block {
            ContentBlock::Text(t) => content.push(json!({"type": "text", "text": t})),
            ContentBlock::Image(image) => content.push(image_json(image)),
            ContentBlock::Document(doc) => content.push(document_json(doc)?),
            ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id,
                name,
                input,
            }) => content
                .push(json!({"type": "tool_use", "id": tool_use_id, "name": name, "input": input})),
            ContentBlock::ToolResult(ToolResultBlock {
                tool_use_id,
                content: parts,
                status,
            }) => {
                let mut out = Vec::with_capacity(parts.len());
                for part in parts {
                    out.push(match part {
                        ToolResultContent::Text(t) => json!({"type": "text", "text": t}),
                        ToolResultContent::Json(v) => {
                            json!({"type": "text", "text": v.to_string()})
                        }
                        ToolResultContent::Image(image) => image_json(image),
                        ToolResultContent::Document(doc) => document_json(doc)?,
                    });
                }
                let mut result =
                    json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": out});
                if status.as_deref() == Some("error") {
                    result["is_error"] = json!(true);
                }
                content.push(result);
            }
            ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText {
                text,
                signature: Some(signature),
            }) => {
                content.push(json!({"type": "thinking", "thinking": text, "signature": signature}))
            }
            ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText {
                signature: None,
                ..
            }) => {}
            ContentBlock::ReasoningContent(ReasoningBlock::RedactedContent(data)) => {
                content.push(json!({"type": "redacted_thinking", "data": data}))
            }
            ContentBlock::CachePoint(_) => mark_cached(&mut content),
        }
    }
    Ok(json!({"role": role, "content": content}))
}

/// A cache point marks the block before it with `cache_control` (a leading one has nothing to
/// mark and is dropped).
fn mark_cached(blocks: &mut [Value]) {
    if let Some(last) = blocks.last_mut() {
        last["cache_control"] = json!({"type": "ephemeral"});
    }
}

fn image_json(image: &ImageBlock) -> Value {
    let BinarySource::Bytes(data) = &image.source;
    json!({
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": modelgate_types::vocab::media::image_media_type(&image.format).unwrap_or("image/png"),
            "data": data,
        },
    })
}

fn document_json(doc: &DocumentBlock) -> Result<Value, Error> {
    let BinarySource::Bytes(data) = &doc.source;
    let source = match doc.format.as_str() {
        "pdf" => json!({"type": "base64", "media_type": "application/pdf", "data": data}),
        "txt" | "md" | "csv" | "html" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Error::validation(format!("document bytes are not base64: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| Error::validation("a text document must be UTF-8"))?;
            json!({"type": "text", "media_type": "text/plain", "data": text})
        }
        other => return Err(refused(&format!("A '{other}' document"))),
    };
    Ok(json!({"type": "document", "title": doc.name, "source": source}))
}

fn stop_reason(reason: Option<&str>) -> StopReason {
    modelgate_types::vocab::anthropic::stop_reason(reason)
}

#[derive(Deserialize)]
struct WireResponse {
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        Usage::new(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
        )
        .with_cache(
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_creation_input_tokens.unwrap_or(0),
        )
    }

    /// Later counts (from `message_delta`) replace earlier ones field by field.
    fn merge(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }
}

#[derive(Deserialize)]
struct CountTokens {
    input_tokens: u32,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Value,
    },
    ContentBlockDelta {
        index: u32,
        delta: Value,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: Value,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Default)]
struct StreamState {
    usage: WireUsage,
    stop: Option<StopReason>,
    done: bool,
}

impl StreamState {
    fn on_event(
        &mut self,
        upstream: &Upstream,
        event: WireEvent,
        start: Instant,
    ) -> Result<Vec<StreamEvent>, Error> {
        let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(match event {
            WireEvent::MessageStart { message } => {
                self.usage.merge(message.usage);
                vec![StreamEvent::MessageStart {
                    role: Role::Assistant,
                    input_tokens: message.usage.input_tokens,
                }]
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block.get("type").and_then(Value::as_str) {
                Some("tool_use") => vec![StreamEvent::ContentBlockStart {
                    index,
                    start: ContentBlockStart::ToolUse {
                        tool_use_id: str_of(&content_block, "id").unwrap_or_default(),
                        name: str_of(&content_block, "name").unwrap_or_default(),
                    },
                }],
                Some("text") => match str_of(&content_block, "text").filter(|t| !t.is_empty()) {
                    Some(text) => vec![StreamEvent::ContentBlockDelta {
                        index,
                        delta: ContentBlockDelta::Text(text),
                    }],
                    None => vec![],
                },
                Some("redacted_thinking") => str_of(&content_block, "data")
                    .map(|data| StreamEvent::ContentBlockDelta {
                        index,
                        delta: ContentBlockDelta::RedactedReasoning(data),
                    })
                    .into_iter()
                    .collect(),
                _ => vec![],
            },
            WireEvent::ContentBlockDelta { index, delta } => {
                let delta = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => str_of(&delta, "text").map(ContentBlockDelta::Text),
                    Some("input_json_delta") => {
                        str_of(&delta, "partial_json").map(ContentBlockDelta::ToolUseInput)
                    }
                    Some("thinking_delta") => {
                        str_of(&delta, "thinking").map(ContentBlockDelta::ReasoningText)
                    }
                    Some("signature_delta") => {
                        str_of(&delta, "signature").map(ContentBlockDelta::ReasoningSignature)
                    }
                    _ => None,
                };
                delta
                    .into_iter()
                    .map(|delta| StreamEvent::ContentBlockDelta { index, delta })
                    .collect()
            }
            WireEvent::ContentBlockStop { index } => vec![StreamEvent::ContentBlockStop { index }],
            WireEvent::MessageDelta { delta, usage } => {
                self.usage.merge(usage);
                if let Some(reason) = delta.get("stop_reason").and_then(Value::as_str) {
                    self.stop = Some(stop_reason(Some(reason)));
                }
                vec![]
            }
            WireEvent::MessageStop => {
                self.done = true;
                vec![
                    StreamEvent::MessageStop {
                        stop_reason: self.stop.unwrap_or(StopReason::EndTurn),
                    },
                    StreamEvent::Metadata {
                        usage: self.usage.canonical(),
                        latency_ms: elapsed_ms(start),
                    },
                ]
            }
            WireEvent::Ping | WireEvent::Other => vec![],
            WireEvent::Error { error } => {
                let message = str_of(&error, "message").unwrap_or_else(|| "unknown error".into());
                let status = match error.get("type").and_then(Value::as_str) {
                    Some("rate_limit_error") => 429,
                    Some("overloaded_error") => 529,
                    Some("invalid_request_error") => 400,
                    Some("timeout_error") => 504,
                    _ => 500,
                };
                return Err(upstream.status_error(status, &message, None, None));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{ErrorKind, ToolSpec};

    #[test]
    fn request_body_maps_every_part() {
        let request = ChatRequest {
            model: "alias".into(),
            system: vec![SystemBlock::Text("be brief".into())],
            messages: vec![
                Message::text(Role::User, "hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText {
                            text: "hmm".into(),
                            signature: Some("sig".into()),
                        }),
                        ContentBlock::ToolUse(ToolUseBlock {
                            tool_use_id: "t1".into(),
                            name: "get".into(),
                            input: json!({"a": 1}),
                        }),
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult(ToolResultBlock {
                        tool_use_id: "t1".into(),
                        content: vec![ToolResultContent::Text("42".into())],
                        status: Some("error".into()),
                    })],
                },
            ],
            inference: InferenceConfig {
                max_tokens: None,
                temperature: Some(0.5),
                top_p: None,
                stop_sequences: vec![],
            },
            tools: Some(ToolConfig {
                tools: vec![Tool::ToolSpec(ToolSpec {
                    name: "get".into(),
                    description: Some("d".into()),
                    input_schema: json!({"json": {"type": "object"}}),
                })],
                tool_choice: Some(modelgate_types::ToolChoice::Tool { name: "get".into() }),
            }),
            response_format: None,
            reasoning: None,
            generation: Default::default(),
            end_user: None,
            native: None,
        };
        let body = messages_body("claude", &request, true).unwrap();
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "be brief"}])
        );
        assert_eq!(body["messages"][1]["content"][0]["type"], "thinking");
        assert_eq!(
            body["messages"][1]["content"][1],
            json!({"type": "tool_use", "id": "t1", "name": "get", "input": {"a": 1}})
        );
        assert_eq!(body["messages"][2]["content"][0]["is_error"], true);
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "get"}));
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        let mut hot = request.clone();
        hot.inference.temperature = Some(1.5);
        assert_eq!(messages_body("c", &hot, false).unwrap_err().status(), 400);
        hot.inference.temperature = None;
        hot.response_format = Some(ResponseFormat::JsonObject);
        assert_eq!(messages_body("c", &hot, false).unwrap_err().status(), 400);
    }

    #[test]
    fn a_conversation_that_starts_with_the_assistant_gets_a_user_turn_first() {
        let request = crate::assistant_first_request();
        let body = messages_body("c", &request, false).unwrap();
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(body["messages"][0]["content"][0]["text"], ".");
    }

    #[test]
    fn reasoning_budget_becomes_thinking_with_room_for_the_answer() {
        let mut request = ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "hi")],
            reasoning: Some(modelgate_types::Reasoning {
                budget_tokens: 2048,
            }),
            ..Default::default()
        };
        let body = messages_body("c", &request, false).unwrap();
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert_eq!(body["max_tokens"], 2048 + DEFAULT_MAX_TOKENS);
        request.inference.max_tokens = Some(3000);
        let body = messages_body("c", &request, false).unwrap();
        assert_eq!(body["max_tokens"], 3000);
        request.inference.max_tokens = Some(2048);
        let e = messages_body("c", &request, false).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("reasoning budget"), "{}", e.message);
    }

    #[test]
    fn cache_points_mark_the_block_before_them() {
        let request = ChatRequest {
            model: "m".into(),
            system: vec![
                SystemBlock::Text("long instructions".into()),
                SystemBlock::CachePoint(Default::default()),
            ],
            messages: vec![Message {
                role: Role::User,
                content: vec![
                    ContentBlock::CachePoint(Default::default()),
                    ContentBlock::Text("a long document".into()),
                    ContentBlock::CachePoint(Default::default()),
                    ContentBlock::Text("question".into()),
                ],
            }],
            tools: Some(ToolConfig {
                tools: vec![
                    Tool::ToolSpec(ToolSpec {
                        name: "f".into(),
                        description: None,
                        input_schema: json!({"json": {"type": "object"}}),
                    }),
                    Tool::CachePoint(Default::default()),
                ],
                tool_choice: None,
            }),
            ..Default::default()
        };
        let body = messages_body("c", &request, false).unwrap();
        let ephemeral = json!({"type": "ephemeral"});
        assert_eq!(body["system"][0]["cache_control"], ephemeral);
        assert_eq!(body["messages"][0]["content"].as_array().unwrap().len(), 2);
        assert_eq!(
            body["messages"][0]["content"][0]["cache_control"],
            ephemeral
        );
        assert!(body["messages"][0]["content"][1]
            .get("cache_control")
            .is_none());
        assert_eq!(body["tools"][0]["cache_control"], ephemeral);
    }

    #[test]
    fn stream_events_map_to_canonical() {
        let u = Upstream::new("a", "http://x", &HttpSettings::default(), vec![]).unwrap();
        let mut s = StreamState::default();
        let start = Instant::now();
        let mut events = Vec::new();
        for e in [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "2}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "ping"}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ] {
            events.extend(
                s.on_event(&u, serde_json::from_value(e).unwrap(), start)
                    .unwrap(),
            );
        }
        assert!(s.done);
        let r = futures::executor::block_on(crate::collect_stream(
            "m".into(),
            futures::stream::iter(events.into_iter().map(Ok)).boxed(),
        ))
        .unwrap();
        assert_eq!(r.message.content[0], ContentBlock::Text("Hi".into()));
        assert!(
            matches!(&r.message.content[1], ContentBlock::ToolUse(t) if t.input == json!({"x": 2}))
        );
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (9, 7));
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        let e = s
            .on_event(
                &u,
                serde_json::from_value(json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})).unwrap(),
                start,
            )
            .unwrap_err();
        assert_eq!((e.kind, e.retryable), (ErrorKind::ServiceUnavailable, true));
    }

    #[test]
    fn sampling_settings_and_native_fields_in_messages_form() {
        use modelgate_types::params::{Native, NativeParam, Wire};
        let native = Native::new(
            Wire::Anthropic,
            vec![
                NativeParam::top("service_tier", json!("auto")),
                NativeParam::under("output_config", "effort", json!("low")),
            ],
        );
        let mut request = crate::sampling_request(native);
        request.response_format = Some(ResponseFormat::JsonSchema {
            name: "r".into(),
            description: None,
            schema: json!({"type": "object"}),
            strict: true,
        });
        let body = messages_body("claude", &request, false).unwrap();
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(body["service_tier"], "auto");
        // The native member joins the canonical structured-output settings.
        assert_eq!(body["output_config"]["effort"], "low");
        assert_eq!(body["output_config"]["format"]["type"], "json_schema");
    }
}
