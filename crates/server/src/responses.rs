//! The OpenAI Responses API: `POST /v1/responses` (whole and streamed), `GET` / `DELETE
//! /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, on every provider.
//!
//! A request maps onto one canonical chat request (string or item input: messages with
//! `input_text` / `input_image` / `output_text` parts, `function_call`, `function_call_output`;
//! `instructions`, function `tools`, `tool_choice`, `text.format`, `reasoning.effort`,
//! `max_output_tokens`, `temperature`, `top_p`, `top_logprobs`, `metadata`, `user`), and the
//! answer back into output items: one `message` with its `output_text`, one `function_call`
//! per tool call, a `reasoning` item when the model reasoned. A stream is the full event
//! sequence (`response.created` … `response.completed` / `incomplete` / `failed`), each event
//! with its `sequence_number` and no `[DONE]`.
//!
//! Responses are stored by default (`store: false` opts out) in the store's `ResponseStore`,
//! scoped to the caller (its key; `anonymous` when authentication is off), so
//! `previous_response_id` continues a conversation on any upstream: the new call's input is
//! the previous responses' inputs and outputs, oldest first, then its own (the previous
//! `instructions` are not carried over, as in OpenAI's API). Another caller's id reads as
//! missing. Reasoning items sent back as input are dropped (the canonical form needs the
//! provider's signature, which they do not carry).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use modelgate_core::CallContext;
use modelgate_store::{ResponseRecord, ResponseStore};
use modelgate_types::params::{Native, NativeParam, Wire};
use modelgate_types::{
    vocab, ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, ContentBlockStart, Error,
    ErrorKind, Generation, InferenceConfig, Message, Reasoning, ReasoningBlock, ResponseFormat,
    Role, StopReason, StreamEvent, SystemBlock, TokenLogprob, Tool, ToolConfig, ToolResultBlock,
    ToolResultContent, ToolSpec, ToolUseBlock, Usage,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, json_error, respond, OpenAiError};
use crate::streaming;

/// Most responses a `previous_response_id` chain is followed through.
const MAX_CHAIN: u32 = 100;
/// What `include` asks for to get the output text's log-probabilities.
const INCLUDE_LOGPROBS: &str = "message.output_text.logprobs";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateResponse {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    reasoning: Option<ReasoningConfig>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, rename = "stream_options")]
    _stream_options: Option<IgnoredAny>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    truncation: Option<String>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    conversation: Option<IgnoredAny>,
    #[serde(default)]
    prompt: Option<IgnoredAny>,
    // Chat Completions has these too: OpenAI-compatible upstreams get them as sent, others
    // drop them and say so (`modelgate_types::params`).
    #[serde(default)]
    service_tier: Option<Value>,
    #[serde(default)]
    prompt_cache_key: Option<Value>,
    #[serde(default)]
    safety_identifier: Option<Value>,
    // Accepted and ignored (documented).
    #[serde(default, rename = "max_tool_calls")]
    _max_tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextConfig {
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    verbosity: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasoningConfig {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default, rename = "summary")]
    _summary: Option<IgnoredAny>,
    #[serde(default, rename = "generate_summary")]
    _generate_summary: Option<IgnoredAny>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::validation(message)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// What the answer echoes of the request, and how it is served.
#[derive(Clone)]
struct Plan {
    id: String,
    created_at: u64,
    model: String,
    stream: bool,
    store: bool,
    previous: Option<String>,
    /// The request's own input items, with ids, for `input_items`.
    input: Vec<Value>,
    /// The fields a response object repeats from its request.
    echo: Map<String, Value>,
}

impl CreateResponse {
    /// The canonical request (without the history of `previous_response_id`) and the plan.
    fn into_canonical(self) -> Result<(ChatRequest, Plan), Error> {
        if self.background == Some(true) {
            return Err(bad("background: background responses are not supported; use the job API (POST /v1/jobs) for asynchronous calls")
                .with_code("unsupported_parameter"));
        }
        if self.conversation.is_some() {
            return Err(bad(
                "conversation: the Conversations API is not supported; use previous_response_id",
            )
            .with_code("unsupported_parameter"));
        }
        if self.prompt.is_some() {
            return Err(bad("prompt: stored OpenAI prompts are not supported; Modelgate's prompt templates are served through Converse and /generate endpoints")
                .with_code("unsupported_parameter"));
        }
        if let Some(t) = self
            .truncation
            .as_deref()
            .filter(|t| *t != "disabled" && *t != "auto")
        {
            return Err(bad(format!(
                "truncation must be 'auto' or 'disabled' (got '{t}')"
            )));
        }
        // Log-probabilities are asked for by `include` or by `top_logprobs`.
        let logprobs = self.top_logprobs.is_some()
            || self.include.iter().flatten().any(|i| i == INCLUDE_LOGPROBS);
        let mut generation = Generation {
            logprobs: crate::openai::logprobs(Some(logprobs), self.top_logprobs)?,
            ..Generation::default()
        };
        let max_tokens = match self.max_output_tokens {
            None => None,
            Some(n) if n < 16 => {
                return Err(bad(format!(
                    "max_output_tokens: integer below minimum value. Expected a value >= 16, but got {n} instead."
                ))
                .with_code("integer_below_min_value"))
            }
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let mut items = match self.input {
            None => Vec::new(),
            Some(Input::Text(text)) => vec![json!({"role": "user", "content": text})],
            Some(Input::Items(items)) => items,
        };
        // Ids for the input items that have none, as `input_items` lists them.
        for item in &mut items {
            if let Some(obj) = item.as_object_mut() {
                if !obj.contains_key("id") {
                    let prefix = match obj.get("type").and_then(Value::as_str) {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        Some("reasoning") => "rs",
                        _ => "msg",
                    };
                    obj.insert("id".into(), json!(new_id(prefix)));
                }
                if !obj.contains_key("type") {
                    obj.insert("type".into(), json!("message"));
                }
                // A message's string content is listed as one text part, as OpenAI lists it.
                if obj.get("type").and_then(Value::as_str) == Some("message") {
                    if let Some(Value::String(text)) = obj.get("content") {
                        let part = match obj.get("role").and_then(Value::as_str) {
                            Some("assistant") => output_text(text, None),
                            _ => json!({"type": "input_text", "text": text}),
                        };
                        obj.insert("content".into(), json!([part]));
                    }
                }
            }
        }
        let mut system = Vec::new();
        if let Some(instructions) = self.instructions.clone().filter(|i| !i.is_empty()) {
            system.push(SystemBlock::Text(instructions));
        }
        let mut messages = Vec::new();
        push_items(&items, "input", &mut system, &mut messages)?;
        let (tools, tools_echo) = tools(self.tools, self.tool_choice.clone())?;
        // Its default is `true`; only a caller's explicit choice for a call with tools is sent.
        generation.parallel_tool_calls = self.parallel_tool_calls.filter(|_| tools.is_some());
        let native = {
            let verbosity = self.text.as_ref().and_then(|t| t.verbosity.clone());
            let params = [
                ("service_tier", self.service_tier.clone()),
                ("prompt_cache_key", self.prompt_cache_key.clone()),
                ("safety_identifier", self.safety_identifier.clone()),
                ("verbosity", verbosity),
            ];
            Native::new(
                Wire::OpenAi,
                params
                    .into_iter()
                    .filter_map(|(name, v)| Some(NativeParam::top(name, v?)))
                    .collect(),
            )
        };
        let format = self.text.as_ref().and_then(|t| t.format.clone());
        let response_format = text_format(format.as_ref())?;
        let reasoning = match self.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
            None => None,
            Some(effort) => Reasoning::from_effort(effort, "reasoning.effort")?,
        };
        let request = ChatRequest {
            model: self.model.clone(),
            system,
            messages,
            inference: InferenceConfig {
                max_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                stop_sequences: Vec::new(),
            },
            tools,
            response_format,
            reasoning,
            generation,
            end_user: self.user.clone(),
            native,
        };
        let mut echo = Map::new();
        echo.insert("instructions".into(), json!(self.instructions));
        echo.insert("max_output_tokens".into(), json!(self.max_output_tokens));
        echo.insert(
            "metadata".into(),
            self.metadata.clone().unwrap_or_else(|| json!({})),
        );
        echo.insert(
            "parallel_tool_calls".into(),
            json!(self.parallel_tool_calls.unwrap_or(true)),
        );
        echo.insert(
            "previous_response_id".into(),
            json!(self.previous_response_id),
        );
        echo.insert(
            "reasoning".into(),
            json!({"effort": self.reasoning.as_ref().and_then(|r| r.effort.clone()), "summary": null}),
        );
        echo.insert("store".into(), json!(self.store.unwrap_or(true)));
        echo.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        echo.insert(
            "text".into(),
            json!({"format": format.unwrap_or_else(|| json!({"type": "text"}))}),
        );
        echo.insert(
            "tool_choice".into(),
            self.tool_choice.unwrap_or_else(|| json!("auto")),
        );
        echo.insert("tools".into(), Value::Array(tools_echo));
        echo.insert("top_logprobs".into(), json!(self.top_logprobs.unwrap_or(0)));
        echo.insert("top_p".into(), json!(self.top_p.unwrap_or(1.0)));
        echo.insert(
            "truncation".into(),
            json!(self.truncation.unwrap_or_else(|| "disabled".into())),
        );
        echo.insert("user".into(), json!(self.user));
        Ok((
            request,
            Plan {
                id: new_id("resp"),
                created_at: crate::openai::now_secs(),
                model: self.model,
                stream: self.stream.unwrap_or(false),
                store: self.store.unwrap_or(true),
                previous: self.previous_response_id,
                input: items,
                echo,
            },
        ))
    }
}

/// Function tools (the only kind a gateway can run on every provider) and their echo.
fn tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
) -> Result<(Option<ToolConfig>, Vec<Value>), Error> {
    let tools = tools.unwrap_or_default();
    let mut specs = Vec::with_capacity(tools.len());
    let mut echo = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(format!(
                    "tools[{i}].type: the built-in tool '{other}' is not supported; only function tools are"
                ))
                .with_code("unsupported_parameter"))
            }
            None => return Err(bad(format!("tools[{i}].type is required"))),
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools[{i}].name is required")))?;
        let parameters = tool
            .get("parameters")
            .cloned()
            .filter(|p| !p.is_null())
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let description = tool
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        specs.push(Tool::ToolSpec(ToolSpec {
            name: name.to_string(),
            description: description.clone(),
            input_schema: json!({ "json": parameters }),
        }));
        echo.push(json!({
            "type": "function", "name": name, "description": description,
            "parameters": parameters,
            "strict": tool.get("strict").cloned().unwrap_or(json!(true)),
        }));
    }
    if specs.is_empty() {
        return Ok((None, echo));
    }
    let tool_choice = match choice {
        None => None,
        Some(Value::String(s)) => Some(vocab::openai::parse_tool_choice(&json!(s)).map_err(bad)?),
        Some(v) => match (
            v.get("type").and_then(Value::as_str),
            v.get("name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => Some(modelgate_types::ToolChoice::Tool {
                name: name.to_string(),
            }),
            _ => {
                return Err(bad(
                "tool_choice must be 'auto', 'required', 'none' or {\"type\": \"function\", \"name\": …}",
            ))
            }
        },
    };
    Ok((
        Some(ToolConfig {
            tools: specs,
            tool_choice,
        }),
        echo,
    ))
}

/// `text.format`: `text`, `json_object` or `json_schema` (`name`, `schema`, `strict`,
/// `description` beside `type`).
fn text_format(format: Option<&Value>) -> Result<Option<ResponseFormat>, Error> {
    let Some(format) = format else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => crate::openai::json_schema_format(format, "text.format").map(Some),
        _ => Err(bad(
            "text.format.type must be one of text, json_object or json_schema",
        )),
    }
}

/// Input items (or a stored response's output items) appended to `messages` as canonical
/// messages (a turn of the same role as the last one joins it); system and developer messages
/// go to `system`. `at` names the list in errors (`input[3].content`).
fn push_items(
    items: &[Value],
    at: &str,
    system: &mut Vec<SystemBlock>,
    messages: &mut Vec<Message>,
) -> Result<(), Error> {
    let mut push = |role: Role, blocks: Vec<ContentBlock>| {
        if !blocks.is_empty() {
            crate::openai::push_message(messages, role, blocks);
        }
    };
    for (i, item) in items.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{here}.role is required")))?;
                let blocks = content_blocks(item.get("content"), &format!("{here}.content"))?;
                match role {
                    "user" => push(Role::User, blocks),
                    "assistant" => push(Role::Assistant, blocks),
                    "system" | "developer" => {
                        for b in blocks {
                            match b {
                                ContentBlock::Text(t) => system.push(SystemBlock::Text(t)),
                                _ => {
                                    return Err(bad(format!(
                                        "{here}.content: {role} messages take text only"
                                    )))
                                }
                            }
                        }
                    }
                    other => {
                        return Err(bad(format!(
                        "{here}.role must be one of user, assistant, system or developer (got '{other}')"
                    )))
                    }
                }
            }
            "function_call" => {
                let field = |name: &str| {
                    item.get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("{here}.{name} is required")))
                };
                let arguments = field("arguments")?;
                let input = if arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(arguments).map_err(|e| {
                        bad(format!("{here}.arguments must be a JSON object: {e}"))
                    })?
                };
                push(
                    Role::Assistant,
                    vec![ContentBlock::ToolUse(ToolUseBlock {
                        tool_use_id: field("call_id")?.to_string(),
                        name: field("name")?.to_string(),
                        input,
                    })],
                );
            }
            "function_call_output" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{here}.call_id is required")))?;
                let text = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => return Err(bad(format!("{here}.output is required"))),
                };
                push(
                    Role::User,
                    vec![ContentBlock::ToolResult(ToolResultBlock {
                        tool_use_id: call_id.to_string(),
                        content: vec![ToolResultContent::Text(text)],
                        status: None,
                    })],
                );
            }
            // A reasoning item cannot go back without the provider's signature.
            "reasoning" => {}
            other => {
                return Err(bad(format!(
                    "{here}.type: the item type '{other}' is not supported (message, function_call, function_call_output, reasoning are)"
                )))
            }
        }
    }
    Ok(())
}

/// A message's `content`: a string, or parts (`input_text`, `output_text`, `refusal`,
/// `input_image` with a `data:` URL).
fn content_blocks(content: Option<&Value>, at: &str) -> Result<Vec<ContentBlock>, Error> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![ContentBlock::Text(s.clone())]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let here = format!("{at}[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => Ok(ContentBlock::Text(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("{here}.text is required")))?
                            .to_string(),
                    )),
                    Some("refusal") => Ok(ContentBlock::Text(
                        part.get("refusal")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    )),
                    Some("input_image") => match part.get("image_url").and_then(Value::as_str) {
                        Some(url) => crate::openai::image_block(url)
                            .map_err(|e| bad(format!("{here}.image_url: {}", e.message))),
                        None => Err(bad(format!(
                            "{here}: images are taken as image_url data: URLs (file_id is not supported)"
                        ))),
                    },
                    Some(other) => Err(bad(format!(
                        "{here}.type: the content type '{other}' is not supported"
                    ))),
                    None => Err(bad(format!("{here}.type is required"))),
                }
            })
            .collect(),
        Some(_) => Err(bad(format!("{at} must be a string or a list of parts"))),
    }
}

/// Delete stored responses past `[responses] retention`, every `purge_every`.
pub fn spawn_purge(store: Arc<dyn ResponseStore>, config: modelgate_core::config::ResponsesConfig) {
    modelgate_core::retention::spawn_purge(
        "stored responses",
        config.retention,
        config.purge_every,
        move |cut| {
            let store = Arc::clone(&store);
            async move { store.purge_responses(cut).await }
        },
    );
}

fn store_of(state: &AppState) -> Result<&Arc<dyn ResponseStore>, Error> {
    state.responses.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::ServiceUnavailable,
            "Stored responses are not available on this gateway (no store is configured).",
        )
    })
}

fn store_error(e: modelgate_store::StoreError) -> Error {
    Error::new(
        ErrorKind::ServiceUnavailable,
        format!("The response store is unavailable: {e}"),
    )
}

fn not_found(id: &str, code: &'static str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("Response with id '{id}' not found."),
    )
    .with_code(code)
}

/// The conversation before `previous`: every response of the chain, oldest first, as its
/// input items then its output items (read in one store query).
async fn history(
    store: &Arc<dyn ResponseStore>,
    owner: &str,
    previous: &str,
) -> Result<Vec<Value>, Error> {
    let missing = |id: &str| {
        bad(format!("Previous response with id '{id}' not found."))
            .with_code("previous_response_not_found")
    };
    let chain = store
        .response_chain(owner, previous, MAX_CHAIN + 1)
        .await
        .map_err(store_error)?;
    // The walk stops where the chain ends, at a gap, or past the limit.
    match chain.last().and_then(|r| r.previous_id.as_deref()) {
        _ if chain.is_empty() => return Err(missing(previous)),
        Some(_) if chain.len() > MAX_CHAIN as usize => {
            return Err(bad(format!(
                "previous_response_id: the conversation is longer than {MAX_CHAIN} responses"
            )))
        }
        Some(gap) => return Err(missing(gap)),
        None => {}
    }
    let mut items = Vec::new();
    for record in chain.into_iter().rev() {
        items.extend(record.input.as_array().cloned().unwrap_or_default());
        items.extend(
            record
                .response
                .get("output")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    Ok(items)
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

/// `status` and `incomplete_details` of a stop reason.
fn status_of(stop: StopReason) -> (&'static str, Value) {
    match stop {
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => {
            ("incomplete", json!({"reason": "max_output_tokens"}))
        }
        StopReason::ContentFiltered | StopReason::GuardrailIntervened => {
            ("incomplete", json!({"reason": "content_filter"}))
        }
        _ => ("completed", Value::Null),
    }
}

/// A response object: the request's echo, the output so far, status and usage.
fn response_object(
    plan: &Plan,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    incomplete: Value,
    error: Value,
) -> Value {
    let mut v = json!({
        "id": plan.id,
        "object": "response",
        "created_at": plan.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": usage.map(usage_json),
    });
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in &plan.echo {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

fn output_text(text: &str, logprobs: Option<&[TokenLogprob]>) -> Value {
    json!({
        "type": "output_text", "text": text, "annotations": [],
        "logprobs": logprobs.map(vocab::openai::logprobs).unwrap_or_else(|| json!([])),
    })
}

/// The output items of a whole answer.
fn output_items(r: &ChatResponse) -> Vec<Value> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut reasoning = String::new();
    for block in &r.message.content {
        match block {
            ContentBlock::Text(t) => text.push_str(t),
            ContentBlock::ReasoningContent(ReasoningBlock::ReasoningText { text: t, .. }) => {
                reasoning.push_str(t)
            }
            _ => {}
        }
    }
    if !reasoning.is_empty() {
        out.push(json!({
            "type": "reasoning", "id": new_id("rs"), "summary": [],
            "content": [{"type": "reasoning_text", "text": reasoning}],
        }));
    }
    if !text.is_empty()
        || !r
            .message
            .content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse(_)))
    {
        out.push(json!({
            "type": "message", "id": new_id("msg"), "status": "completed", "role": "assistant",
            "content": [output_text(&text, r.logprobs.as_deref())],
        }));
    }
    for block in &r.message.content {
        if let ContentBlock::ToolUse(t) = block {
            out.push(json!({
                "type": "function_call", "id": new_id("fc"), "call_id": t.tool_use_id,
                "name": t.name, "arguments": t.input.to_string(), "status": "completed",
            }));
        }
    }
    out
}

/// `POST /v1/responses`
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond::<OpenAiError>(create_inner(state, ctx, body).await)
}

async fn create_inner(
    state: AppState,
    ctx: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let wire: CreateResponse = crate::errors::parse_body(&body).map_err(|e| json_error(&e))?;
    crate::openai::routing_hints(&ctx, wire.metadata.as_ref(), wire.user.as_deref());
    let (mut request, plan) = wire.into_canonical()?;
    let owner = crate::jobs::api::owner(&ctx);
    if let Some(previous) = &plan.previous {
        let store = store_of(&state)?;
        let before = history(store, &owner, previous).await?;
        let (mut system, mut messages) = (Vec::new(), Vec::new());
        push_items(&before, "previous_response", &mut system, &mut messages)?;
        // Earlier instructions are not carried over; system messages in the input are.
        system.append(&mut request.system);
        for m in std::mem::take(&mut request.messages) {
            crate::openai::push_message(&mut messages, m.role, m.content);
        }
        request.system = system;
        request.messages = messages;
    }
    if request.messages.is_empty() {
        return Err(bad("input is required: the conversation has no messages"));
    }
    let store = if plan.store {
        Some(Arc::clone(store_of(&state)?))
    } else {
        None
    };
    if !plan.stream {
        let served = state.gateway.converse(&ctx, request).await?.value;
        let (status, incomplete) = status_of(served.stop_reason);
        let response = response_object(
            &plan,
            &served.model,
            status,
            output_items(&served),
            Some(&served.usage),
            incomplete,
            Value::Null,
        );
        if let Some(store) = store {
            store
                .put_response(&record(&plan, &owner, &response))
                .await
                .map_err(store_error)?;
        }
        return Ok(Json(response).into_response());
    }
    let with_logprobs = request.generation.logprobs.is_some();
    let events = state.gateway.converse_stream(&ctx, request).await?.value;
    Ok(stream_response(plan, owner, events, store, with_logprobs))
}

fn record(plan: &Plan, owner: &str, response: &Value) -> ResponseRecord {
    ResponseRecord {
        id: plan.id.clone(),
        owner: owner.to_string(),
        created_ms: i64::try_from(plan.created_at)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
        previous_id: plan.previous.clone(),
        input: Value::Array(plan.input.clone()),
        response: response.clone(),
    }
}

/// One output item of a stream, as it is being built.
struct Item {
    /// Position in `output`.
    index: usize,
    id: String,
    kind: ItemKind,
}

enum ItemKind {
    Message {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Reasoning {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    /// The item as `output_item.done` and the final response carry it.
    fn done(&self, with_logprobs: bool) -> Value {
        match &self.kind {
            ItemKind::Message { text, logprobs } => json!({
                "type": "message", "id": self.id, "status": "completed", "role": "assistant",
                "content": [output_text(text, with_logprobs.then_some(logprobs.as_slice()))],
            }),
            ItemKind::Reasoning { text } => json!({
                "type": "reasoning", "id": self.id, "summary": [],
                "content": [{"type": "reasoning_text", "text": text}],
            }),
            ItemKind::Call {
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": self.id, "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed",
            }),
        }
    }
}

/// Canonical events → Responses stream events, and the final response object.
struct Events {
    plan: Plan,
    seq: u64,
    /// Canonical block index → item.
    items: std::collections::BTreeMap<u32, Item>,
    next_index: usize,
    done: Vec<(usize, Value)>,
    pending_logprobs: Vec<TokenLogprob>,
    with_logprobs: bool,
    stop: StopReason,
    /// Filled when the final event is written: the record to store before it goes out.
    finished: Arc<Mutex<Option<Value>>>,
}

impl Events {
    fn frame(&mut self, kind: &str, mut data: Value) -> String {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        streaming::sse_frame(Some(kind), &data.to_string())
    }

    fn response(
        &self,
        status: &str,
        usage: Option<&Usage>,
        incomplete: Value,
        error: Value,
    ) -> Value {
        let mut output: Vec<(usize, Value)> = self.done.clone();
        output.sort_by_key(|(i, _)| *i);
        response_object(
            &self.plan,
            &self.plan.model,
            status,
            output.into_iter().map(|(_, v)| v).collect(),
            usage,
            incomplete,
            error,
        )
    }

    /// Open the item for block `index` when it is not open yet.
    fn open(&mut self, index: u32, kind: ItemKind, out: &mut String) {
        if self.items.contains_key(&index) {
            return;
        }
        let output_index = self.next_index;
        self.next_index += 1;
        let (id, added) = match &kind {
            ItemKind::Message { .. } => {
                let id = new_id("msg");
                let added = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                (id, added)
            }
            ItemKind::Reasoning { .. } => {
                let id = new_id("rs");
                (
                    id.clone(),
                    json!({"type": "reasoning", "id": id, "summary": [], "content": []}),
                )
            }
            ItemKind::Call { call_id, name, .. } => {
                let id = new_id("fc");
                let added = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"});
                (id, added)
            }
        };
        let part = matches!(kind, ItemKind::Message { .. });
        out.push_str(&self.frame(
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        ));
        if part {
            out.push_str(&self.frame(
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0,
                       "part": output_text("", Some(&[]))}),
            ));
        }
        self.items.insert(
            index,
            Item {
                index: output_index,
                id,
                kind,
            },
        );
    }

    /// Close the item of block `index`: its `.done` events.
    fn close(&mut self, index: u32, out: &mut String) {
        let Some(item) = self.items.remove(&index) else {
            return;
        };
        let final_item = item.done(self.with_logprobs);
        let (id, at) = (item.id.clone(), item.index);
        match &item.kind {
            ItemKind::Message { text, logprobs } => {
                let lp = if self.with_logprobs {
                    vocab::openai::logprobs(logprobs)
                } else {
                    json!([])
                };
                out.push_str(&self.frame(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": at, "content_index": 0, "text": text, "logprobs": lp}),
                ));
                out.push_str(&self.frame(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": at, "content_index": 0,
                           "part": final_item["content"][0].clone()}),
                ));
            }
            ItemKind::Reasoning { text } => {
                out.push_str(&self.frame(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": at, "content_index": 0, "text": text}),
                ));
            }
            ItemKind::Call {
                arguments, name, ..
            } => {
                out.push_str(&self.frame(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": at, "arguments": arguments, "name": name}),
                ));
            }
        }
        out.push_str(&self.frame(
            "response.output_item.done",
            json!({"output_index": at, "item": final_item.clone()}),
        ));
        self.done.push((at, final_item));
    }

    fn encode(&mut self, event: &StreamEvent) -> String {
        let mut out = String::new();
        match event {
            StreamEvent::MessageStart { .. } => {
                let skeleton = self.response("in_progress", None, Value::Null, Value::Null);
                out.push_str(
                    &self.frame("response.created", json!({"response": skeleton.clone()})),
                );
                out.push_str(&self.frame("response.in_progress", json!({"response": skeleton})));
            }
            StreamEvent::ContentBlockStart {
                index,
                start: ContentBlockStart::ToolUse { tool_use_id, name },
            } => self.open(
                *index,
                ItemKind::Call {
                    call_id: tool_use_id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                },
                &mut out,
            ),
            StreamEvent::Logprobs { tokens, .. } => {
                self.pending_logprobs.extend(tokens.iter().cloned())
            }
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                ContentBlockDelta::Text(t) => {
                    self.open(
                        *index,
                        ItemKind::Message {
                            text: String::new(),
                            logprobs: Vec::new(),
                        },
                        &mut out,
                    );
                    let tokens = std::mem::take(&mut self.pending_logprobs);
                    let Some(item) = self.items.get_mut(index) else {
                        return out;
                    };
                    let (id, at) = (item.id.clone(), item.index);
                    if let ItemKind::Message { text, logprobs } = &mut item.kind {
                        text.push_str(t);
                        logprobs.extend(tokens.iter().cloned());
                    }
                    if !t.is_empty() {
                        let lp = if self.with_logprobs {
                            vocab::openai::logprobs(&tokens)
                        } else {
                            json!([])
                        };
                        out.push_str(&self.frame(
                            "response.output_text.delta",
                            json!({"item_id": id, "output_index": at, "content_index": 0, "delta": t, "logprobs": lp}),
                        ));
                    }
                }
                ContentBlockDelta::ToolUseInput(fragment) => {
                    let Some(item) = self.items.get_mut(index) else {
                        return out;
                    };
                    let (id, at) = (item.id.clone(), item.index);
                    if let ItemKind::Call { arguments, .. } = &mut item.kind {
                        arguments.push_str(fragment);
                    }
                    out.push_str(&self.frame(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": at, "delta": fragment}),
                    ));
                }
                ContentBlockDelta::ReasoningText(t) => {
                    self.open(
                        *index,
                        ItemKind::Reasoning {
                            text: String::new(),
                        },
                        &mut out,
                    );
                    let Some(item) = self.items.get_mut(index) else {
                        return out;
                    };
                    let (id, at) = (item.id.clone(), item.index);
                    if let ItemKind::Reasoning { text } = &mut item.kind {
                        text.push_str(t);
                    }
                    out.push_str(&self.frame(
                        "response.reasoning_text.delta",
                        json!({"item_id": id, "output_index": at, "content_index": 0, "delta": t}),
                    ));
                }
                // Signatures and encrypted reasoning have no place in the Responses output.
                ContentBlockDelta::ReasoningSignature(_)
                | ContentBlockDelta::RedactedReasoning(_) => {}
            },
            StreamEvent::ContentBlockStop { index } => self.close(*index, &mut out),
            StreamEvent::MessageStop { stop_reason } => {
                let open: Vec<u32> = self.items.keys().copied().collect();
                for index in open {
                    self.close(index, &mut out);
                }
                self.stop = *stop_reason;
            }
            StreamEvent::Metadata { usage, .. } => {
                let (status, incomplete) = status_of(self.stop);
                let response = self.response(status, Some(usage), incomplete, Value::Null);
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                if let Ok(mut slot) = self.finished.lock() {
                    *slot = Some(response.clone());
                }
                out.push_str(&self.frame(kind, json!({"response": response})));
            }
        }
        out
    }

    fn failed(&mut self, e: &Error) -> String {
        let code = e.code.unwrap_or(match e.kind {
            ErrorKind::Throttling => "rate_limit_exceeded",
            _ => "server_error",
        });
        let error = json!({"code": code, "message": e.message});
        let response = self.response("failed", None, Value::Null, error);
        if let Ok(mut slot) = self.finished.lock() {
            *slot = Some(response.clone());
        }
        self.frame("response.failed", json!({"response": response}))
    }
}

/// The SSE answer; a stored response is written before its final event goes out, so a
/// client that continues from it at once finds it.
fn stream_response(
    plan: Plan,
    owner: String,
    events: modelgate_providers::ChatStream,
    store: Option<Arc<dyn ResponseStore>>,
    with_logprobs: bool,
) -> Response {
    let finished = Arc::new(Mutex::new(None));
    let stored = Arc::new((
        Plan {
            echo: Map::new(),
            ..plan.clone()
        },
        owner,
    ));
    let state = Arc::new(Mutex::new(Events {
        plan,
        seq: 0,
        items: Default::default(),
        next_index: 0,
        done: Vec::new(),
        pending_logprobs: Vec::new(),
        with_logprobs,
        stop: StopReason::EndTurn,
        finished: Arc::clone(&finished),
    }));
    let on_event = Arc::clone(&state);
    let on_error = state;
    let body = streaming::encode(
        events,
        move |e| Bytes::from(on_event.lock().map(|mut s| s.encode(e)).unwrap_or_default()),
        move |e| Bytes::from(on_error.lock().map(|mut s| s.failed(e)).unwrap_or_default()),
        None,
    );
    let body = body.then(move |chunk| {
        let done = finished.lock().ok().and_then(|mut f| f.take());
        let (store, stored) = (store.clone(), Arc::clone(&stored));
        async move {
            if let (Some(response), Some(store)) = (done, store) {
                let (plan, owner) = &*stored;
                if let Err(e) = store.put_response(&record(plan, owner, &response)).await {
                    tracing::warn!(error = %e, "the streamed response could not be stored");
                }
            }
            chunk
        }
    });
    streaming::response("text/event-stream", &[], body)
}

/// `GET /v1/responses/{id}`
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    respond::<OpenAiError>(
        async {
            let record = store_of(&state)?
                .response(&crate::jobs::api::owner(&ctx), &id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(&id, "response_not_found"))?;
            Ok(Json(record.response).into_response())
        }
        .await,
    )
}

/// `DELETE /v1/responses/{id}`
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    respond::<OpenAiError>(
        async {
            if !store_of(&state)?
                .delete_response(&crate::jobs::api::owner(&ctx), &id)
                .await
                .map_err(store_error)?
            {
                return Err(not_found(&id, "response_not_found"));
            }
            Ok(
                Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
                    .into_response(),
            )
        }
        .await,
    )
}

/// Paging of `input_items`: `limit` 1–100 (default 20), `order` `desc` (default) or `asc`,
/// `after` / `before` an item id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default, rename = "include")]
    _include: Option<IgnoredAny>,
    #[serde(default, rename = "include[]")]
    _include_list: Option<IgnoredAny>,
}

/// `GET /v1/responses/{id}/input_items`
pub async fn input_items(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    query: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond::<OpenAiError>(
        async {
            let Query(q) = query.map_err(|e| bad(format!("invalid query: {}", e.body_text())))?;
            let limit = q.limit.unwrap_or(20);
            if !(1..=100).contains(&limit) {
                return Err(bad("limit must be between 1 and 100").with_code("invalid_value"));
            }
            let record = store_of(&state)?
                .response(&crate::jobs::api::owner(&ctx), &id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(&id, "response_not_found"))?;
            let mut items = record.input.as_array().cloned().unwrap_or_default();
            match q.order.as_deref() {
                None | Some("desc") => items.reverse(),
                Some("asc") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "order must be 'asc' or 'desc' (got '{other}')"
                    )))
                }
            }
            let position = |cursor: &str| {
                items
                    .iter()
                    .position(|i| i.get("id").and_then(Value::as_str) == Some(cursor))
            };
            let start = match &q.after {
                Some(after) => position(after).map_or(items.len(), |p| p + 1),
                None => 0,
            };
            let end = match &q.before {
                Some(before) => position(before).unwrap_or(items.len()),
                None => items.len(),
            };
            let window: Vec<Value> = items
                .get(start..end.max(start))
                .unwrap_or_default()
                .iter()
                .take(usize::try_from(limit).unwrap_or(20))
                .cloned()
                .collect();
            let has_more = start + window.len() < end;
            let id_of =
                |v: Option<&Value>| v.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
            Ok(Json(json!({
                "object": "list",
                "data": window,
                "first_id": id_of(window.first()),
                "last_id": id_of(window.last()),
                "has_more": has_more,
            }))
            .into_response())
        }
        .await,
    )
}
