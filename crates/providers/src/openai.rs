//! OpenAI-compatible upstreams: OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp server, LM Studio,
//! Together, Groq … — chat completions (JSON and SSE), embeddings, tools, JSON output.
//!
//! Mapping decisions (also in `docs/providers.md`):
//! - system blocks become one `system` message; a user turn's tool results become `tool`
//!   messages placed before the turn's other content; images become `data:` URLs.
//! - Document blocks are refused (chat completions has no portable document part).
//! - Reasoning blocks sent back in assistant turns are dropped (the API has no field for them);
//!   `reasoning_content` in answers (vLLM, DeepSeek) becomes a reasoning block.
//! - The canonical reasoning budget goes out as `reasoning_effort` (up to 1024 tokens `low`, up
//!   to 2048 `medium`, above `high`); servers that do not reason ignore or refuse it.
//! - A tool result's `status: error` has no equivalent and is not sent.
//! - `finish_reason: stop` is `end_turn` (the API does not say whether a stop sequence hit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use modelgate_types::params::Wire;
use modelgate_types::{
    BinarySource, ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, ContentBlockStart,
    EmbedInput, EmbedRequest, EmbedResponse, Error, ErrorKind, InferenceConfig, Message,
    ReasoningBlock, ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolConfig,
    ToolResultBlock, ToolResultContent, ToolUseBlock, Usage,
};
use reqwest::header::{HeaderName, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{elapsed_ms, parse_error_body, HttpSettings, Upstream};
use crate::{Capabilities, ChatStream, ModelKind, Provider};

/// One OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The provider's name in the configuration.
    pub name: String,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`; for Azure,
    /// `https://{resource}.openai.azure.com/openai`.
    pub base_url: String,
    /// API key (sent as `Authorization: Bearer`, or `api-key` for Azure). `None` for servers
    /// without authentication.
    pub api_key: Option<String>,
    /// Azure OpenAI: the `api-version` query parameter. Setting it switches to Azure's URL
    /// scheme (`/deployments/{upstream_id}/…`) and `api-key` header.
    pub azure_api_version: Option<String>,
    /// Connection settings.
    pub http: HttpSettings,
}

/// The shared connection to one OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiEndpoint {
    upstream: Upstream,
    azure_api_version: Option<String>,
}

impl OpenAiEndpoint {
    /// Build the pooled client.
    pub fn new(config: OpenAiConfig) -> Result<Arc<Self>, Error> {
        let auth = match (&config.api_key, &config.azure_api_version) {
            (None, _) => vec![],
            (Some(key), None) => vec![(AUTHORIZATION, format!("Bearer {key}"))],
            (Some(key), Some(_)) => vec![(HeaderName::from_static("api-key"), key.clone())],
        };
        Ok(Arc::new(Self {
            upstream: Upstream::new(&config.name, &config.base_url, &config.http, auth)?,
            azure_api_version: config.azure_api_version,
        }))
    }

    fn url(&self, model: &str, operation: &str) -> String {
        match &self.azure_api_version {
            None => self.upstream.url(&format!("/{operation}")),
            Some(version) => self.upstream.url(&format!(
                "/deployments/{}/{operation}?api-version={}",
                crate::http::path_segment(model),
                crate::http::path_segment(version)
            )),
        }
    }
}

/// One model served by an OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAi {
    endpoint: Arc<OpenAiEndpoint>,
    model: String,
    kind: ModelKind,
}

impl OpenAi {
    /// `model` is the upstream's id (or the Azure deployment name).
    pub fn new(endpoint: Arc<OpenAiEndpoint>, model: String, kind: ModelKind) -> Self {
        Self {
            endpoint,
            model,
            kind,
        }
    }

    async fn post(&self, operation: &str, body: &Value) -> Result<reqwest::Response, Error> {
        let upstream = &self.endpoint.upstream;
        let body = serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?;
        upstream
            .send(
                upstream.post(&self.endpoint.url(&self.model, operation), body),
                parse_error_body,
            )
            .await
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn system(&self) -> &'static str {
        "openai"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::upstream(self.kind).speaking(Wire::OpenAi)
    }

    /// `GET /models` (Azure: with the `api-version`).
    async fn health_check(&self) -> Result<(), Error> {
        let upstream = &self.endpoint.upstream;
        let url = match &self.endpoint.azure_api_version {
            None => upstream.url("/models"),
            Some(v) => upstream.url(&format!(
                "/models?api-version={}",
                crate::http::path_segment(v)
            )),
        };
        upstream.probe(upstream.get(&url)).await
    }

    async fn converse(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let start = Instant::now();
        let body = chat_body(&self.model, &request, false)?;
        let response = self.post("chat/completions", &body).await?;
        let upstream = &self.endpoint.upstream;
        let wire: Completion = upstream.json(response).await?;
        let choice = wire
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| upstream.malformed(&"the answer has no choices"))?;
        let mut content = Vec::new();
        if let Some(reasoning) = choice.message.reasoning_content.filter(|r| !r.is_empty()) {
            content.push(ContentBlock::ReasoningContent(
                ReasoningBlock::ReasoningText {
                    text: reasoning,
                    signature: None,
                },
            ));
        }
        if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
            content.push(ContentBlock::Text(text));
        }
        for (i, call) in choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let arguments = call.function.arguments.unwrap_or_default();
            content.push(ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.function.name.unwrap_or_default(),
                input: tool_input(upstream, &arguments)?,
            }));
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
            stop_reason: stop_reason(choice.finish_reason.as_deref()),
            usage: wire.usage.map(WireUsage::canonical).unwrap_or_default(),
            latency_ms: elapsed_ms(start),
            logprobs: choice
                .logprobs
                .map(|l| modelgate_types::vocab::openai::parse_logprobs(&l.content)),
        })
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        let start = Instant::now();
        let body = chat_body(&self.model, &request, true)?;
        let response = self.post("chat/completions", &body).await?;
        let endpoint = Arc::clone(&self.endpoint);
        let mut events = endpoint.upstream.sse(response);
        let stream: ChatStream = Box::pin(async_stream::try_stream! {
            let upstream = &endpoint.upstream;
            let mut state = StreamState::default();
            while let Some(event) = events.next().await {
                let event = event?;
                let data = event.data.trim();
                if data == "[DONE]" {
                    state.done = true;
                    break;
                }
                if data.is_empty() {
                    continue;
                }
                let mut chunk: Chunk = serde_json::from_str(data).map_err(|e| upstream.malformed(&e))?;
                if let Some(error) = chunk.error.take() {
                    Err(stream_error(upstream, error))?;
                }
                for e in state.on_chunk(chunk) {
                    yield e;
                }
            }
            for e in state.finish(upstream, elapsed_ms(start))? {
                yield e;
            }
        });
        Ok(crate::renumber(stream))
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        let EmbedInput::Texts(texts) = &request.input;
        let body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
        let response = self.post("embeddings", &body).await?;
        let upstream = &self.endpoint.upstream;
        let mut wire: Embeddings = upstream.json(response).await?;
        wire.data.sort_by_key(|d| d.index);
        if wire.data.len() != texts.len() {
            return Err(upstream.malformed(&format!(
                "{} vectors for {} inputs",
                wire.data.len(),
                texts.len()
            )));
        }
        Ok(EmbedResponse {
            model: request.model,
            vectors: wire.data.into_iter().map(|d| d.embedding).collect(),
            input_tokens: wire.usage.map_or(0, |u| u.prompt_tokens),
        })
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        Err(Error::validation(format!(
            "The model '{}' is served by an OpenAI-compatible upstream, which cannot count tokens.",
            request.model
        )))
    }
}

fn tool_input(upstream: &Upstream, arguments: &str) -> Result<Value, Error> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments).map_err(|e| {
        Error::new(
            ErrorKind::ModelError,
            format!(
                "The upstream provider '{}' produced tool arguments that are not valid JSON: {e}",
                upstream.name
            ),
        )
    })
}

fn unsupported(what: &str) -> Error {
    Error::validation(format!(
        "{what} cannot be sent to an OpenAI-compatible upstream."
    ))
}

/// The chat completions body for `request`.
fn chat_body(model: &str, request: &ChatRequest, stream: bool) -> Result<Value, Error> {
    let ChatRequest {
        model: _,
        system,
        messages,
        inference,
        tools,
        response_format,
        reasoning,
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
    let mut out = Vec::with_capacity(messages.len() + 1);
    let system: Vec<&str> = system.iter().filter_map(|s| s.text()).collect();
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system.join("\n")}));
    }
    for m in messages {
        match m.role {
            Role::User => user_messages(m, &mut out)?,
            Role::Assistant => out.push(assistant_message(m)?),
        }
    }
    let mut body = json!({"model": model, "messages": out, "stream": stream});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(r) = reasoning {
        body["reasoning_effort"] = json!(r.effort());
    }
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = top_p {
        body["top_p"] = json!(p);
    }
    if !stop_sequences.is_empty() {
        body["stop"] = json!(stop_sequences);
    }
    // The same dialect: sent as they came.
    if let Some(seed) = generation.seed {
        body["seed"] = json!(seed);
    }
    if let Some(top) = generation.logprobs {
        body["logprobs"] = json!(true);
        if top > 0 {
            body["top_logprobs"] = json!(top);
        }
    }
    // `top_k` is not OpenAI's own; vLLM, Ollama and llama.cpp's servers take it by this name.
    if let Some(k) = generation.top_k {
        body["top_k"] = json!(k);
    }
    if let Some(p) = generation.frequency_penalty {
        body["frequency_penalty"] = json!(p);
    }
    if let Some(p) = generation.presence_penalty {
        body["presence_penalty"] = json!(p);
    }
    if let Some(bias) = &generation.logit_bias {
        body["logit_bias"] = bias
            .iter()
            .map(|(t, b)| (t.to_string(), json!(b)))
            .collect();
    }
    if let Some(parallel) = generation.parallel_tool_calls {
        body["parallel_tool_calls"] = json!(parallel);
    }
    if let Some(user) = end_user {
        body["user"] = json!(user);
    }
    if let Some(ToolConfig { tools, tool_choice }) = tools {
        body["tools"] = tools
            .iter()
            .filter_map(Tool::spec)
            .map(|spec| {
                let mut function = json!({
                    "name": spec.name,
                    "parameters": spec.input_schema.get("json").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = &spec.description {
                    function["description"] = json!(d);
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        if let Some(choice) = tool_choice {
            body["tool_choice"] = modelgate_types::vocab::openai::tool_choice(choice);
        }
    }
    match response_format {
        None => {}
        Some(ResponseFormat::JsonObject) => {
            body["response_format"] = json!({"type": "json_object"})
        }
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            let mut spec = json!({"name": name, "schema": schema, "strict": strict});
            if let Some(d) = description {
                spec["description"] = json!(d);
            }
            body["response_format"] = json!({"type": "json_schema", "json_schema": spec});
        }
    }
    // The caller's own OpenAI parameters (and the upstream server's extensions), unchanged.
    if let Some(native) = native.as_ref().filter(|n| n.wire == Wire::OpenAi) {
        native.merge_into(&mut body);
    }
    Ok(body)
}

fn user_messages(m: &Message, out: &mut Vec<Value>) -> Result<(), Error> {
    let mut parts = Vec::new();
    for block in &m.content {
        match block {
            ContentBlock::Text(t) => parts.push(json!({"type": "text", "text": t})),
            ContentBlock::Image(image) => {
                let BinarySource::Bytes(data) = &image.source;
                parts.push(json!({
                    "type": "image_url",
                    "image_url": {"url": modelgate_types::vocab::media::data_url(&image.format, data)},
                }));
            }
            ContentBlock::ToolResult(ToolResultBlock {
                tool_use_id,
                content,
                status: _,
            }) => {
                let mut text = String::new();
                for c in content {
                    match c {
                        ToolResultContent::Text(t) => text.push_str(t),
                        ToolResultContent::Json(v) => text.push_str(&v.to_string()),
                        ToolResultContent::Image(_) | ToolResultContent::Document(_) => {
                            return Err(unsupported("An image or document inside a tool result"))
                        }
                    }
                }
                out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
            }
            ContentBlock::Document(_) => return Err(unsupported("A document block")),
            // OpenAI caches prompt prefixes on its own; there is no marker to send.
            ContentBlock::CachePoint(_) => {}
            ContentBlock::ToolUse(_) | ContentBlock::ReasoningContent(_) => {
                return Err(Error::validation(
                    "toolUse and reasoningContent blocks belong in assistant messages.",
                ))
            }
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => {
            out.push(json!({"role": "user", "content": only["text"]}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn assistant_message(m: &Message) -> Result<Value, Error> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &m.content {
        match block {
            ContentBlock::Text(t) => text.push_str(t),
            ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id,
                name,
                input,
            }) => calls.push(json!({
                "id": tool_use_id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            ContentBlock::ReasoningContent(_) | ContentBlock::CachePoint(_) => {}
            ContentBlock::Image(_) | ContentBlock::Document(_) | ContentBlock::ToolResult(_) => {
                return Err(unsupported(
                    "An image, document or tool result in an assistant turn",
                ))
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    Ok(message)
}

fn stop_reason(finish: Option<&str>) -> StopReason {
    modelgate_types::vocab::openai::stop_reason(finish)
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<WireLogprobs>,
}

/// `choices[].logprobs`: the tokens of the content.
#[derive(Deserialize)]
struct WireLogprobs {
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        let cached = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage::new(self.prompt_tokens, self.completion_tokens).with_cache(cached, 0)
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: WireDelta,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

/// An `{"error": …}` chunk in the middle of a stream.
fn stream_error(upstream: &Upstream, error: Value) -> Error {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .and_then(Value::as_str);
    let status = match kind {
        Some("rate_limit_exceeded" | "rate_limit_error") => 429,
        Some("invalid_request_error") => 400,
        Some("overloaded_error" | "service_unavailable") => 503,
        _ => 500,
    };
    upstream.status_error(status, message, None, None)
}

/// A tool call being assembled from stream fragments.
#[derive(Default)]
struct PendingCall {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
    /// The canonical block index, once the start event went out.
    index: Option<u32>,
}

/// What an open canonical block holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    Text,
    Reasoning,
    ToolCall,
}

/// Turns OpenAI chunks into canonical events: one block per text run, reasoning run and tool
/// call; a block is stopped when the next one starts.
#[derive(Default)]
struct StreamState {
    started: bool,
    next_index: u32,
    /// The open block's index and what it holds.
    open: Option<(u32, Run)>,
    calls: BTreeMap<u32, PendingCall>,
    finish: Option<StopReason>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamState {
    fn open_block(&mut self, run: Run, events: &mut Vec<StreamEvent>) -> u32 {
        if let Some((open, _)) = self.open.take() {
            events.push(StreamEvent::ContentBlockStop { index: open });
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, run));
        index
    }

    /// Append a text or reasoning delta: to the open block when it holds the same kind of run,
    /// else to a new block.
    fn run_delta(&mut self, run: Run, delta: ContentBlockDelta, events: &mut Vec<StreamEvent>) {
        let index = match self.open {
            Some((i, open)) if open == run => i,
            _ => self.open_block(run, events),
        };
        events.push(StreamEvent::ContentBlockDelta { index, delta });
    }

    fn on_chunk(&mut self, chunk: Chunk) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            events.push(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: None,
            });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.canonical());
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return events;
        };
        let WireDelta {
            content,
            reasoning_content,
            tool_calls,
        } = choice.delta;
        if let Some(text) = reasoning_content.filter(|t| !t.is_empty()) {
            self.run_delta(
                Run::Reasoning,
                ContentBlockDelta::ReasoningText(text),
                &mut events,
            );
        }
        if let Some(text) = content.filter(|t| !t.is_empty()) {
            let tokens = choice
                .logprobs
                .map(|l| modelgate_types::vocab::openai::parse_logprobs(&l.content))
                .filter(|t| !t.is_empty());
            if let Some(tokens) = tokens {
                // Log-probabilities go just before the text they describe, in its block.
                let index = match self.open {
                    Some((i, Run::Text)) => i,
                    _ => self.open_block(Run::Text, &mut events),
                };
                events.push(StreamEvent::Logprobs { index, tokens });
            }
            self.run_delta(Run::Text, ContentBlockDelta::Text(text), &mut events);
        }
        for (position, call) in tool_calls.unwrap_or_default().into_iter().enumerate() {
            let key = call
                .index
                .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
            let fragment = call.function.arguments.unwrap_or_default();
            let pending = self.calls.entry(key).or_default();
            if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                pending.id.get_or_insert(id);
            }
            if let Some(name) = call.function.name.filter(|n| !n.is_empty()) {
                pending.name.get_or_insert(name);
            }
            match pending.index {
                Some(index) => {
                    if !fragment.is_empty() {
                        events.push(StreamEvent::ContentBlockDelta {
                            index,
                            delta: ContentBlockDelta::ToolUseInput(fragment),
                        });
                    }
                }
                None => {
                    pending.arguments.push_str(&fragment);
                    if pending.name.is_some() {
                        self.start_call(key, &mut events);
                    }
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(stop_reason(Some(&reason)));
        }
        events
    }

    fn start_call(&mut self, key: u32, events: &mut Vec<StreamEvent>) {
        let index = self.open_block(Run::ToolCall, events);
        let Some(pending) = self.calls.get_mut(&key) else {
            return;
        };
        pending.index = Some(index);
        events.push(StreamEvent::ContentBlockStart {
            index,
            start: ContentBlockStart::ToolUse {
                tool_use_id: pending.id.clone().unwrap_or_else(|| format!("call_{key}")),
                name: pending.name.clone().unwrap_or_default(),
            },
        });
        if !pending.arguments.is_empty() {
            events.push(StreamEvent::ContentBlockDelta {
                index,
                delta: ContentBlockDelta::ToolUseInput(std::mem::take(&mut pending.arguments)),
            });
        }
    }

    /// The closing events, or an error when the upstream stopped before finishing.
    fn finish(&mut self, upstream: &Upstream, latency_ms: u64) -> Result<Vec<StreamEvent>, Error> {
        if !self.done && self.finish.is_none() {
            return Err(upstream.cut_short());
        }
        let mut events = Vec::new();
        if !self.started {
            events.push(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: None,
            });
        }
        let unstarted: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.index.is_none())
            .map(|(k, _)| *k)
            .collect();
        for key in unstarted {
            self.start_call(key, &mut events);
        }
        if let Some((open, _)) = self.open.take() {
            events.push(StreamEvent::ContentBlockStop { index: open });
        }
        events.push(StreamEvent::MessageStop {
            stop_reason: self.finish.unwrap_or(StopReason::EndTurn),
        });
        events.push(StreamEvent::Metadata {
            usage: self.usage.unwrap_or_default(),
            latency_ms,
        });
        Ok(events)
    }
}

#[derive(Deserialize)]
struct Embeddings {
    data: Vec<EmbeddingData>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{SystemBlock, ToolSpec};

    fn upstream() -> Upstream {
        Upstream::new("up", "http://x", &HttpSettings::default(), vec![]).unwrap()
    }

    #[test]
    fn request_body_maps_every_part() {
        let request = ChatRequest {
            model: "alias".into(),
            system: vec![SystemBlock::Text("be brief".into())],
            messages: vec![
                Message::text(Role::User, "weather?"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse(ToolUseBlock {
                        tool_use_id: "c1".into(),
                        name: "get".into(),
                        input: json!({"city": "Paris"}),
                    })],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        ContentBlock::ToolResult(ToolResultBlock {
                            tool_use_id: "c1".into(),
                            content: vec![ToolResultContent::Json(json!({"t": 20}))],
                            status: None,
                        }),
                        ContentBlock::Text("and?".into()),
                    ],
                },
            ],
            inference: InferenceConfig {
                max_tokens: Some(5),
                temperature: Some(0.0),
                top_p: None,
                stop_sequences: vec!["x".into()],
            },
            tools: Some(ToolConfig {
                tools: vec![Tool::ToolSpec(ToolSpec {
                    name: "get".into(),
                    description: None,
                    input_schema: json!({"json": {"type": "object"}}),
                })],
                tool_choice: Some(modelgate_types::ToolChoice::Any(json!({}))),
            }),
            response_format: Some(ResponseFormat::JsonObject),
            reasoning: Some(modelgate_types::Reasoning {
                budget_tokens: 1500,
            }),
            generation: Default::default(),
            end_user: None,
            native: None,
        };
        let body = chat_body("gpt", &request, true).unwrap();
        assert_eq!(body["reasoning_effort"], "medium");
        assert_eq!(body["model"], "gpt");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "{\"t\":20}"})
        );
        assert_eq!(
            body["messages"][4],
            json!({"role": "user", "content": "and?"})
        );
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["stop"], json!(["x"]));
    }

    fn chunk(v: Value) -> Chunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn stream_tool_calls_split_anywhere_become_one_block_each() {
        let u = upstream();
        let mut s = StreamState::default();
        let mut events = Vec::new();
        for c in [
            json!({"choices": [{"delta": {"role": "assistant", "content": "Let me"}}]}),
            json!({"choices": [{"delta": {"content": " check."}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "get", "arguments": ""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "time", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}}),
        ] {
            events.extend(s.on_chunk(chunk(c)));
        }
        s.done = true;
        events.extend(s.finish(&u, 1).unwrap());
        let collected = futures::executor::block_on(crate::collect_stream(
            "m".into(),
            futures::stream::iter(events.into_iter().map(Ok)).boxed(),
        ))
        .unwrap();
        assert_eq!(
            collected.message.content[0],
            ContentBlock::Text("Let me check.".into())
        );
        assert_eq!(
            collected.message.content[1],
            ContentBlock::ToolUse(ToolUseBlock {
                tool_use_id: "a".into(),
                name: "get".into(),
                input: json!({"city": "Paris"}),
            })
        );
        assert!(
            matches!(&collected.message.content[2], ContentBlock::ToolUse(t) if t.name == "time")
        );
        assert_eq!(collected.stop_reason, StopReason::ToolUse);
        assert_eq!(collected.usage.cache_read_input_tokens, 2);
        assert_eq!(collected.usage.total_tokens, 7);
    }

    #[test]
    fn streamed_logprobs_go_before_their_text_and_collect_with_it() {
        let u = upstream();
        let mut s = StreamState::default();
        let mut events = Vec::new();
        let lp = |t: &str, p: f64| {
            json!({"token": t, "logprob": p, "bytes": t.as_bytes(),
                   "top_logprobs": [{"token": t, "logprob": p, "bytes": t.as_bytes()}]})
        };
        for c in [
            json!({"choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": [lp("Hi", -0.1)]}}]}),
            json!({"choices": [{"delta": {"content": " there"}, "logprobs": {"content": [lp(" there", -0.5)]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
        ] {
            events.extend(s.on_chunk(chunk(c)));
        }
        s.done = true;
        events.extend(s.finish(&u, 1).unwrap());
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                StreamEvent::Logprobs { .. } => "logprobs",
                StreamEvent::ContentBlockDelta { .. } => "text",
                _ => "other",
            })
            .filter(|k| *k != "other")
            .collect();
        assert_eq!(kinds, ["logprobs", "text", "logprobs", "text"]);
        let collected = futures::executor::block_on(crate::collect_stream(
            "m".into(),
            futures::stream::iter(events.into_iter().map(Ok)).boxed(),
        ))
        .unwrap();
        let tokens = collected.logprobs.unwrap();
        assert_eq!(
            tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
            ["Hi", " there"]
        );
        assert!((tokens[1].logprob + 0.5).abs() < 1e-6);
        assert_eq!(tokens[0].top.len(), 1);
        assert_eq!(tokens[0].bytes, b"Hi");
    }

    #[test]
    fn seed_and_logprobs_are_sent_as_they_came() {
        let mut request = ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "hi")],
            ..Default::default()
        };
        let body = chat_body("gpt", &request, false).unwrap();
        assert!(body.get("seed").is_none() && body.get("logprobs").is_none());
        request.generation = modelgate_types::Generation {
            seed: Some(7),
            logprobs: Some(3),
            ..Default::default()
        };
        let body = chat_body("gpt", &request, false).unwrap();
        assert_eq!(
            (&body["seed"], &body["logprobs"], &body["top_logprobs"]),
            (&json!(7), &json!(true), &json!(3))
        );
    }

    #[test]
    fn a_stream_without_an_end_is_an_error() {
        let u = upstream();
        let mut s = StreamState::default();
        s.on_chunk(chunk(json!({"choices": [{"delta": {"content": "Hi"}}]})));
        let e = s.finish(&u, 1).unwrap_err();
        assert_eq!((e.kind, e.retryable), (ErrorKind::ServiceUnavailable, true));
    }

    #[test]
    fn azure_urls_use_deployments() {
        let e = OpenAiEndpoint::new(OpenAiConfig {
            name: "az".into(),
            base_url: "https://r.openai.azure.com/openai".into(),
            api_key: Some("k".into()),
            azure_api_version: Some("2024-10-21".into()),
            http: HttpSettings::default(),
        })
        .unwrap();
        assert_eq!(
            e.url("gpt-4o", "chat/completions"),
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn sampling_settings_and_native_fields_as_sent() {
        use modelgate_types::params::{Native, NativeParam, Wire};
        let native = Native::new(
            Wire::OpenAi,
            vec![
                NativeParam::top("min_p", json!(0.1)),
                NativeParam::top("user", json!("ignored: the canonical one wins")),
            ],
        );
        let mut request = crate::sampling_request(native);
        request.generation.logit_bias = Some([(42, -3.0)].into());
        let body = chat_body("gpt", &request, false).unwrap();
        assert_eq!(body["seed"], 1);
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["frequency_penalty"], 0.5);
        assert_eq!(body["presence_penalty"], 0.25);
        assert_eq!(body["logit_bias"], json!({"42": -3.0}));
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["user"], "u-1");
        assert_eq!(body["min_p"], 0.1);
    }
}
