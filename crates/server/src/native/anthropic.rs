//! The Anthropic Messages wire format, shared by the Bedrock InvokeModel family
//! (`anthropic_version: bedrock-2023-05-31`) and the `/v1/messages` front door.
//!
//! Requests map onto canonical types once (content blocks, system blocks, tools, tool choice,
//! thinking, `cache_control` as cache points); answers and stream events map back once. `top_k`
//! and `metadata` are accepted and not acted on (`docs/front-doors.md`).

use std::time::Instant;

use modelgate_types::params::{Native, NativeParam, Wire};
use modelgate_types::vocab;
use modelgate_types::{
    BinarySource, CachePoint, ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta,
    ContentBlockStart, DocumentBlock, Error, Generation, ImageBlock, InferenceConfig, Message,
    Reasoning, ReasoningBlock, ResponseFormat, Role, StopReason, StreamEvent, SystemBlock, Tool,
    ToolConfig, ToolResultBlock, ToolResultContent, ToolSpec, ToolUseBlock,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{invalid, metrics_json, positive};

/// A Messages request body. Which of `model`, `stream` and `anthropic_version` must or must not
/// be present depends on the front door; [`MessagesBody::into_canonical`] leaves that to it.
///
/// Members with no canonical form (`service_tier`, `container`, …, and on the Messages door
/// members it does not know) are kept as native parameters: Anthropic upstreams get them as
/// sent; other providers drop, keep or refuse each (`modelgate_types::params`).
#[derive(Deserialize)]
pub struct MessagesBody {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub anthropic_version: Option<String>,
    #[serde(default)]
    pub anthropic_beta: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Response-cache settings (`no-cache`, `no-store`, `ttl`, `namespace`…), as LiteLLM's
    /// clients send them; the Messages API front door reads them.
    #[serde(default)]
    pub cache: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<i64>,
    messages: Vec<WireMessage>,
    #[serde(default)]
    system: Option<WireSystem>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(default)]
    output_config: Option<OutputConfig>,
    /// `user_id` is the canonical end user and keeps sticky routing on one arm; routing
    /// rules may match on its fields.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Everything else: native parameters.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// `output_config`: `effort` is a hint this gateway's models have no use for; `format`
/// (structured output, `{"type":"json_schema","schema":…}`) becomes the canonical
/// response format, which the gateway refuses for models that cannot honour it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputConfig {
    /// A native parameter (`output_config.effort`).
    #[serde(default)]
    effort: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    role: String,
    content: WireContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<WireBlock>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireSystem {
    Text(String),
    Blocks(Vec<WireBlock>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireBlock {
    Text {
        text: String,
        #[serde(default)]
        cache_control: Option<IgnoredAny>,
        #[serde(default, rename = "citations")]
        _citations: Option<IgnoredAny>,
    },
    Image {
        source: WireSource,
        #[serde(default)]
        cache_control: Option<IgnoredAny>,
    },
    Document {
        source: WireSource,
        #[serde(default)]
        title: Option<String>,
        #[serde(default, rename = "context")]
        _context: Option<IgnoredAny>,
        #[serde(default, rename = "citations")]
        _citations: Option<IgnoredAny>,
        #[serde(default)]
        cache_control: Option<IgnoredAny>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(default)]
        cache_control: Option<IgnoredAny>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<WireContent>,
        #[serde(default)]
        is_error: Option<bool>,
        #[serde(default)]
        cache_control: Option<IgnoredAny>,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

impl WireBlock {
    /// Whether the block carries `cache_control` (a prompt-cache checkpoint after it).
    fn cached(&self) -> bool {
        match self {
            WireBlock::Text { cache_control, .. }
            | WireBlock::Image { cache_control, .. }
            | WireBlock::Document { cache_control, .. }
            | WireBlock::ToolUse { cache_control, .. }
            | WireBlock::ToolResult { cache_control, .. } => cache_control.is_some(),
            WireBlock::Thinking { .. } | WireBlock::RedactedThinking { .. } => false,
        }
    }
}

/// `blocks` converted one by one, with a cache point after each block marked `cache_control`.
fn with_cache_points<T, W>(
    blocks: impl IntoIterator<Item = W>,
    cached: impl Fn(&W) -> bool,
    mut convert: impl FnMut(usize, W) -> Result<T, Error>,
    cache_point: impl Fn() -> T,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for (i, b) in blocks.into_iter().enumerate() {
        let mark = cached(&b);
        out.push(convert(i, b)?);
        if mark {
            out.push(cache_point());
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireSource {
    Base64 { media_type: String, data: String },
    Text { media_type: String, data: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    input_schema: Value,
    #[serde(default, rename = "type")]
    _type: Option<IgnoredAny>,
    #[serde(default)]
    cache_control: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    None {},
}

impl WireToolChoice {
    /// `disable_parallel_tool_use` as OpenAI's `parallel_tool_calls` (its negation).
    fn parallel_tool_calls(&self) -> Option<bool> {
        match self {
            WireToolChoice::Auto {
                disable_parallel_tool_use,
            }
            | WireToolChoice::Any {
                disable_parallel_tool_use,
            }
            | WireToolChoice::Tool {
                disable_parallel_tool_use,
                ..
            } => disable_parallel_tool_use.map(|d| !d),
            WireToolChoice::None {} => None,
        }
    }
}

/// `image/png` → `png`, the Converse image / document format names.
fn format_of(media_type: &str, field: &str) -> Result<String, Error> {
    if let Some(image) = vocab::media::image_format(media_type) {
        return Ok(image.into());
    }
    let format = match media_type {
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/csv" => "csv",
        "text/html" => "html",
        "text/markdown" => "md",
        other => {
            return Err(invalid(format!(
                "{field}.media_type '{other}' is not supported"
            )))
        }
    };
    Ok(format.into())
}

fn media_type_of(format: &str) -> &'static str {
    if let Some(image) = vocab::media::image_media_type(format) {
        return image;
    }
    match format {
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "html" => "text/html",
        "md" => "text/markdown",
        _ => "text/plain",
    }
}

fn base64_of(source: WireSource) -> (String, String) {
    use base64::Engine as _;
    match source {
        WireSource::Base64 { media_type, data } => (media_type, data),
        WireSource::Text { media_type, data } => (
            media_type,
            base64::engine::general_purpose::STANDARD.encode(data),
        ),
    }
}

fn block(b: WireBlock, at: &str) -> Result<ContentBlock, Error> {
    Ok(match b {
        WireBlock::Text { text, .. } => ContentBlock::Text(text),
        WireBlock::Image { source, .. } => {
            let (media_type, data) = base64_of(source);
            ContentBlock::Image(ImageBlock {
                format: format_of(&media_type, at)?,
                source: BinarySource::Bytes(data),
            })
        }
        WireBlock::Document { source, title, .. } => {
            let (media_type, data) = base64_of(source);
            ContentBlock::Document(DocumentBlock {
                format: format_of(&media_type, at)?,
                name: title.unwrap_or_else(|| "document".into()),
                source: BinarySource::Bytes(data),
            })
        }
        WireBlock::ToolUse {
            id, name, input, ..
        } => ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: id,
            name,
            input,
        }),
        WireBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
            ..
        } => {
            let content = match content {
                None => Vec::new(),
                Some(WireContent::Text(t)) => vec![ToolResultContent::Text(t)],
                Some(WireContent::Blocks(blocks)) => blocks
                    .into_iter()
                    .map(|b| match block(b, at)? {
                        ContentBlock::Text(t) => Ok(ToolResultContent::Text(t)),
                        ContentBlock::Image(i) => Ok(ToolResultContent::Image(i)),
                        ContentBlock::Document(d) => Ok(ToolResultContent::Document(d)),
                        _ => Err(invalid(format!(
                            "{at}: tool_result content holds text, image or document blocks"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            };
            ContentBlock::ToolResult(ToolResultBlock {
                tool_use_id,
                content,
                status: is_error.filter(|e| *e).map(|_| "error".to_string()),
            })
        }
        WireBlock::Thinking {
            thinking,
            signature,
        } => ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText {
            text: thinking,
            signature,
        }),
        WireBlock::RedactedThinking { data } => {
            ContentBlock::ReasoningContent(ReasoningBlock::RedactedContent(data))
        }
    })
}

impl MessagesBody {
    /// The first member the Messages API does not define, if any (InvokeModel refuses it).
    pub fn unknown_member(&self) -> Option<&str> {
        self.rest
            .keys()
            .map(String::as_str)
            .find(|k| !Wire::Anthropic.defines(k))
    }

    /// Give `max_tokens` a value when the caller sent none (token counting takes none).
    pub fn set_max_tokens_if_missing(&mut self, n: i64) {
        self.max_tokens.get_or_insert(n);
    }

    /// `max_tokens: 0`, which the direct API accepts to count (and cache) the prompt without
    /// generating. Turns it into 1 for the canonical request and answers whether it was 0.
    pub fn take_zero_max_tokens(&mut self) -> bool {
        if self.max_tokens == Some(0) {
            self.max_tokens = Some(1);
            true
        } else {
            false
        }
    }

    /// Map onto a canonical request for `model`. `max_tokens` is required, as Anthropic
    /// requires it.
    pub fn into_canonical(self, model: String) -> Result<ChatRequest, Error> {
        if self.max_tokens.is_none() {
            return Err(invalid("max_tokens: field required"));
        }
        let max_tokens = positive("max_tokens", self.max_tokens)?;
        if self.top_k == Some(0) {
            return Err(invalid("top_k: Input should be greater than or equal to 1"));
        }
        let end_user = match self.metadata.as_ref().and_then(|m| m.get("user_id")) {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.clone()),
            Some(_) => return Err(invalid("metadata.user_id: Input should be a valid string")),
        };
        let mut native: Vec<NativeParam> = self
            .rest
            .into_iter()
            .map(|(name, value)| NativeParam::top(name, value))
            .collect();
        let reasoning = match self.thinking {
            None | Some(Value::Null) => None,
            Some(thinking) => {
                Reasoning::from_thinking(&thinking, "thinking").map_err(|e| invalid(e.message))?
            }
        };
        if let (Some(r), Some(max)) = (reasoning, max_tokens) {
            if max <= r.budget_tokens {
                return Err(invalid(
                    "max_tokens: must be greater than thinking.budget_tokens",
                ));
            }
        }
        let (effort, format) = self
            .output_config
            .map_or((None, None), |c| (c.effort, c.format));
        if let Some(effort) = effort {
            native.push(NativeParam::under("output_config", "effort", effort));
        }
        let response_format = match format {
            None | Some(Value::Null) => None,
            Some(format) => {
                if format.get("type").and_then(Value::as_str) != Some("json_schema") {
                    return Err(invalid(
                        "output_config.format.type: Input should be 'json_schema'",
                    ));
                }
                let schema = format
                    .get("schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .ok_or_else(|| invalid("output_config.format.schema: Field required"))?;
                Some(ResponseFormat::JsonSchema {
                    name: "response".into(),
                    description: None,
                    schema,
                    strict: true,
                })
            }
        };
        let system = match self.system {
            None => Vec::new(),
            Some(WireSystem::Text(t)) if t.is_empty() => Vec::new(),
            Some(WireSystem::Text(t)) => vec![SystemBlock::Text(t)],
            Some(WireSystem::Blocks(blocks)) => with_cache_points(
                blocks,
                WireBlock::cached,
                |_, b| match b {
                    WireBlock::Text { text, .. } => Ok(SystemBlock::Text(text)),
                    _ => Err(invalid("system: only text blocks are allowed")),
                },
                || SystemBlock::CachePoint(CachePoint::default()),
            )?,
        };
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(invalid(format!(
                        "messages.{i}.role: Input should be 'user' or 'assistant', got '{other}'"
                    )))
                }
            };
            let content = match m.content {
                WireContent::Text(t) => vec![ContentBlock::Text(t)],
                WireContent::Blocks(blocks) => with_cache_points(
                    blocks,
                    WireBlock::cached,
                    |j, b| block(b, &format!("messages.{i}.content.{j}")),
                    || ContentBlock::CachePoint(CachePoint::default()),
                )?,
            };
            messages.push(Message { role, content });
        }
        let mut tools = match self.tools.filter(|t| !t.is_empty()) {
            None => None,
            Some(tools) => Some(ToolConfig {
                tools: with_cache_points(
                    tools,
                    |t: &WireTool| t.cache_control.is_some(),
                    |_, t| {
                        Ok(Tool::ToolSpec(ToolSpec {
                            name: t.name,
                            description: t.description,
                            input_schema: json!({ "json": t.input_schema }),
                        }))
                    },
                    || Tool::CachePoint(CachePoint::default()),
                )?,
                tool_choice: None,
            }),
        };
        let parallel_tool_calls = self
            .tool_choice
            .as_ref()
            .and_then(WireToolChoice::parallel_tool_calls);
        match (self.tool_choice, tools.as_mut()) {
            // `none` without tools asks for nothing.
            (Some(WireToolChoice::None {}), None) | (None, _) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "tool_choice: may only be specified while providing tools",
                ));
            }
            (Some(choice), Some(config)) => {
                let (kind, name) = match &choice {
                    WireToolChoice::Auto { .. } => ("auto", None),
                    WireToolChoice::Any { .. } => ("any", None),
                    WireToolChoice::Tool { name, .. } => ("tool", Some(name.as_str())),
                    WireToolChoice::None {} => ("none", None),
                };
                config.tool_choice =
                    Some(vocab::anthropic::parse_tool_choice(kind, name).map_err(invalid)?);
            }
        }
        Ok(ChatRequest {
            model,
            system,
            messages,
            inference: InferenceConfig {
                max_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                stop_sequences: self.stop_sequences.unwrap_or_default(),
            },
            tools,
            response_format,
            reasoning,
            generation: Generation {
                top_k: self.top_k,
                parallel_tool_calls,
                ..Generation::default()
            },
            end_user,
            native: Native::new(Wire::Anthropic, native),
        })
    }
}

/// Anthropic's name for a stop reason.
pub fn stop_reason(reason: StopReason) -> &'static str {
    vocab::anthropic::stop_reason_name(reason)
}

fn content_json(block: &ContentBlock) -> Option<Value> {
    Some(match block {
        ContentBlock::Text(t) => json!({"type": "text", "text": t}),
        ContentBlock::ToolUse(t) => {
            json!({"type": "tool_use", "id": t.tool_use_id, "name": t.name, "input": t.input})
        }
        ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText { text, signature }) => {
            json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()})
        }
        ContentBlock::ReasoningContent(ReasoningBlock::RedactedContent(data)) => {
            json!({"type": "redacted_thinking", "data": data})
        }
        ContentBlock::Image(i) => json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type_of(&i.format), "data": binary(&i.source)}}),
        ContentBlock::Document(d) => json!({"type": "document", "source": {
            "type": "base64", "media_type": media_type_of(&d.format), "data": binary(&d.source)}}),
        ContentBlock::ToolResult(r) => json!({"type": "tool_result", "tool_use_id": r.tool_use_id}),
        ContentBlock::CachePoint(_) => return None,
    })
}

fn binary(source: &BinarySource) -> &str {
    match source {
        BinarySource::Bytes(b) => b,
    }
}

/// A new message id in Anthropic's form (`msg_bdrk_…` on Bedrock, `msg_…` on the direct API).
pub fn message_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The Messages response body.
pub fn response_json(id: &str, model: &str, r: &ChatResponse) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": r.message.content.iter().filter_map(content_json).collect::<Vec<_>>(),
        "stop_reason": stop_reason(r.stop_reason),
        "stop_sequence": null,
        "usage": {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens},
    })
}

/// Turns canonical stream events into Anthropic stream events (`message_start`,
/// `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`).
///
/// Canonical streams open text blocks implicitly; Anthropic's open every block with
/// `content_block_start`, so one is written before a block's first delta. The stop reason
/// arrives before usage, so `message_delta` waits for the metadata event.
pub struct StreamMapper {
    id: String,
    model: String,
    open: Option<u32>,
    stop: Option<StopReason>,
    started: Instant,
    first_byte_ms: Option<u64>,
    bedrock_metrics: bool,
}

impl StreamMapper {
    /// With `bedrock_metrics` the final event carries `amazon-bedrock-invocationMetrics` as
    /// Bedrock's does.
    pub fn new(id: String, model: String, bedrock_metrics: bool) -> Self {
        Self {
            id,
            model,
            open: None,
            stop: None,
            started: Instant::now(),
            first_byte_ms: None,
            bedrock_metrics,
        }
    }

    fn close_open(&mut self, out: &mut Vec<Value>) {
        if let Some(index) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn open_block(&mut self, index: u32, block: Value, out: &mut Vec<Value>) {
        if self.open == Some(index) {
            return;
        }
        self.close_open(out);
        out.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        self.open = Some(index);
    }

    /// The Anthropic events for one canonical event (zero or more).
    pub fn map(&mut self, event: &StreamEvent) -> Vec<Value> {
        let mut out = Vec::new();
        match event {
            // The prompt size comes from the provider; one that cannot tell reports 0 here and
            // the real count in `message_delta`.
            StreamEvent::MessageStart { input_tokens, .. } => out.push(json!({
                "type": "message_start",
                "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens.unwrap_or(0), "output_tokens": 0},
                }
            })),
            StreamEvent::ContentBlockStart { index, start } => {
                let ContentBlockStart::ToolUse { tool_use_id, name } = start;
                self.open_block(
                    *index,
                    json!({"type": "tool_use", "id": tool_use_id, "name": name, "input": {}}),
                    &mut out,
                );
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                self.first_byte_ms
                    .get_or_insert_with(|| elapsed_ms(self.started));
                let thinking = || json!({"type": "thinking", "thinking": ""});
                let delta = match delta {
                    ContentBlockDelta::Text(t) => {
                        self.open_block(*index, json!({"type": "text", "text": ""}), &mut out);
                        json!({"type": "text_delta", "text": t})
                    }
                    ContentBlockDelta::ReasoningText(t) => {
                        self.open_block(*index, thinking(), &mut out);
                        json!({"type": "thinking_delta", "thinking": t})
                    }
                    ContentBlockDelta::ReasoningSignature(s) => {
                        self.open_block(*index, thinking(), &mut out);
                        json!({"type": "signature_delta", "signature": s})
                    }
                    ContentBlockDelta::RedactedReasoning(data) => {
                        // Anthropic sends redacted thinking whole, in the block's start.
                        self.open_block(
                            *index,
                            json!({"type": "redacted_thinking", "data": data}),
                            &mut out,
                        );
                        return out;
                    }
                    ContentBlockDelta::ToolUseInput(p) => {
                        self.open_block(
                            *index,
                            json!({"type": "tool_use", "id": "", "name": "", "input": {}}),
                            &mut out,
                        );
                        json!({"type": "input_json_delta", "partial_json": p})
                    }
                };
                out.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
            }
            // The Messages API has no log-probabilities (and its requests cannot ask for them).
            StreamEvent::Logprobs { .. } => {}
            StreamEvent::ContentBlockStop { index } => {
                if self.open == Some(*index) {
                    self.close_open(&mut out);
                }
            }
            StreamEvent::MessageStop { stop_reason } => {
                self.close_open(&mut out);
                self.stop = Some(*stop_reason);
            }
            StreamEvent::Metadata { usage, .. } => {
                self.close_open(&mut out);
                out.push(json!({
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": stop_reason(self.stop.unwrap_or(StopReason::EndTurn)),
                        "stop_sequence": null,
                    },
                    "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                }));
                let mut stop = Map::new();
                stop.insert("type".into(), json!("message_stop"));
                if self.bedrock_metrics {
                    stop.insert(
                        "amazon-bedrock-invocationMetrics".into(),
                        metrics_json(usage, elapsed_ms(self.started), self.first_byte_ms),
                    );
                }
                out.push(Value::Object(stop));
            }
        }
        out
    }
}

pub(super) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::Usage;

    fn parse(v: Value) -> Result<ChatRequest, Error> {
        serde_json::from_value::<MessagesBody>(v)
            .map_err(|e| invalid(e.to_string()))?
            .into_canonical("m".into())
    }

    #[test]
    fn maps_blocks_tools_and_params() {
        let r = parse(json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": false}]}
            ],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "temperature": 0.0, "top_k": 5, "stop_sequences": ["END"]
        }))
        .unwrap();
        assert_eq!(r.system[0].text(), Some("be brief"));
        // `cache_control` becomes a cache point after its block.
        assert_eq!(r.system[1], SystemBlock::CachePoint(CachePoint::default()));
        assert_eq!(r.inference.max_tokens, Some(50));
        assert_eq!(r.inference.stop_sequences, vec!["END".to_string()]);
        assert!(matches!(&r.messages[0].content[1], ContentBlock::Image(i) if i.format == "png"));
        assert!(
            matches!(&r.messages[1].content[0], ContentBlock::ToolUse(t) if t.tool_use_id == "t1" && t.input == json!({"a": 1}))
        );
        assert!(
            matches!(&r.messages[2].content[0], ContentBlock::ToolResult(t) if t.content == vec![ToolResultContent::Text("42".into())])
        );
        let tools = r.tools.unwrap();
        assert_eq!(
            tools.tool_choice,
            Some(modelgate_types::ToolChoice::Tool { name: "f".into() })
        );
        assert!(
            matches!(&tools.tools[0], Tool::ToolSpec(s) if s.input_schema == json!({"json": {"type": "object"}}))
        );
    }

    #[test]
    fn refuses_bad_bodies() {
        let base = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(parse(base.clone())
            .unwrap_err()
            .message
            .contains("max_tokens"));
        let mut b = base.clone();
        b["max_tokens"] = json!(0);
        assert!(parse(b).is_err());
        let mut b = base.clone();
        b["max_tokens"] = json!(5);
        b["messages"][0]["role"] = json!("system");
        assert!(parse(b).unwrap_err().message.contains("role"));
        let mut b = base.clone();
        b["max_tokens"] = json!(5);
        b["tool_choice"] = json!({"type": "any"});
        assert!(parse(b).is_err());
        // A member the Messages API does not define is a native parameter here (the
        // provider decides; InvokeModel refuses it before parsing); `top_k` must be positive.
        let mut b = base;
        b["max_tokens"] = json!(5);
        b["bogus"] = json!(1);
        b["service_tier"] = json!("auto");
        b["output_config"] = json!({"effort": "low"});
        b["metadata"] = json!({"user_id": "u-9"});
        b["top_k"] = json!(4);
        let r = parse(b.clone()).unwrap();
        let paths: Vec<String> = r.native.unwrap().params.iter().map(|p| p.path()).collect();
        assert_eq!(paths, ["bogus", "service_tier", "output_config.effort"]);
        assert_eq!(r.end_user.as_deref(), Some("u-9"));
        assert_eq!(r.generation.top_k, Some(4));
        b["top_k"] = json!(0);
        assert!(parse(b).unwrap_err().message.contains("top_k"));
    }

    #[test]
    fn stream_opens_and_closes_every_block() {
        let mut m = StreamMapper::new("msg_1".into(), "claude".into(), true);
        let events = [
            StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: Some(7),
            },
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: ContentBlockDelta::Text("Hi".into()),
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::ContentBlockStart {
                index: 1,
                start: ContentBlockStart::ToolUse {
                    tool_use_id: "t1".into(),
                    name: "f".into(),
                },
            },
            StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("{\"a\":".into()),
            },
            StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("1}".into()),
            },
            StreamEvent::ContentBlockStop { index: 1 },
            StreamEvent::MessageStop {
                stop_reason: StopReason::ToolUse,
            },
            StreamEvent::Metadata {
                usage: Usage::new(7, 3),
                latency_ms: 5,
            },
        ];
        let out: Vec<Value> = events.iter().flat_map(|e| m.map(e)).collect();
        let types: Vec<&str> = out.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(out[0]["message"]["usage"]["input_tokens"], 7);
        assert_eq!(out[4]["content_block"]["id"], "t1");
        assert_eq!(out[5]["delta"]["partial_json"], "{\"a\":");
        assert_eq!(out[8]["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[8]["usage"]["output_tokens"], 3);
        assert_eq!(
            out[9]["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
            3
        );
    }
}
