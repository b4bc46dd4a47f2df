//! The legacy OpenAI Completions API, `POST /v1/completions` — still used by many tools and
//! evaluation harnesses. Each prompt becomes a chat request with the prompt as the one user
//! message (so every served model answers it, chat models included, as other gateways do),
//! and the answer comes back as a `text_completion`, whole or as SSE chunks ending in
//! `[DONE]`.
//!
//! Supported: `prompt` as a string or a list of strings (one choice per prompt, in order; a
//! stream takes one prompt), `max_tokens` (default 16, as OpenAI's), `temperature`, `top_p`,
//! `stop`, `echo` (the prompt is put before the text), `stream` and
//! `stream_options.include_usage`, `user` and `metadata` (routing reads them). `seed`, the
//! penalties and `logit_bias` are accepted and ignored, as on the chat door. Refused with a
//! 400 naming the parameter: token-array prompts, `suffix` (insertion), `logprobs`, `n` or
//! `best_of` above 1.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelgate_core::CallContext;
use modelgate_types::vocab;
use modelgate_types::{
    ChatRequest, ContentBlock, ContentBlockDelta, Error, InferenceConfig, Message, Role,
    StreamEvent, Usage,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, json_error, openai_body, respond, OpenAiError};
use crate::openai::{now_secs, usage_json, Stop, StreamOptions};
use crate::streaming;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    model: String,
    prompt: Prompt,
    #[serde(default)]
    max_tokens: Option<i64>,
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
    best_of: Option<u32>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    // Accepted and ignored (documented).
    #[serde(default, rename = "seed")]
    _seed: Option<IgnoredAny>,
    #[serde(default, rename = "presence_penalty")]
    _presence_penalty: Option<IgnoredAny>,
    #[serde(default, rename = "frequency_penalty")]
    _frequency_penalty: Option<IgnoredAny>,
    #[serde(default, rename = "logit_bias")]
    _logit_bias: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
    Tokens(IgnoredAny),
}

fn bad(param: &'static str, message: impl Into<String>) -> Error {
    Error::validation(format!("{param}: {}", message.into())).with_code("invalid_value")
}

/// OpenAI's default for the legacy API.
const DEFAULT_MAX_TOKENS: u32 = 16;

struct Plan {
    prompts: Vec<String>,
    inference: InferenceConfig,
    model: String,
    echo: bool,
    stream: bool,
    include_usage: bool,
}

impl CompletionRequest {
    fn plan(self) -> Result<Plan, Error> {
        let prompts = match self.prompt {
            Prompt::One(p) => vec![p],
            Prompt::Many(p) if !p.is_empty() => p,
            Prompt::Many(_) => return Err(bad("prompt", "must not be an empty list")),
            Prompt::Tokens(_) => {
                return Err(bad(
                    "prompt",
                    "token-array prompts are not supported; send the prompt as text",
                ))
            }
        };
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(bad(
                "suffix",
                "insertion (suffix) is not supported: the served models complete after the prompt only",
            ));
        }
        if self.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(bad("logprobs", "log-probabilities are not supported"));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(bad("n", "must be 1; send one request per completion"));
        }
        if self.best_of.is_some_and(|n| n != 1) {
            return Err(bad("best_of", "must be 1"));
        }
        let stream = self.stream.unwrap_or(false);
        if stream && prompts.len() > 1 {
            return Err(bad(
                "prompt",
                "a streamed completion takes one prompt; send one request per prompt",
            ));
        }
        let max_tokens = match self.max_tokens {
            None => DEFAULT_MAX_TOKENS,
            Some(n) if n <= 0 => return Err(bad("max_tokens", "must be a positive integer")),
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        };
        Ok(Plan {
            prompts,
            inference: InferenceConfig {
                max_tokens: Some(max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                stop_sequences: Stop::sequences(self.stop),
            },
            model: self.model,
            echo: self.echo.unwrap_or(false),
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

fn request(plan: &Plan, prompt: &str) -> ChatRequest {
    ChatRequest {
        model: plan.model.clone(),
        messages: vec![Message::text(Role::User, prompt)],
        inference: plan.inference.clone(),
        ..ChatRequest::default()
    }
}

/// `POST /v1/completions`
pub async fn completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond::<OpenAiError>(inner(state, ctx, body).await)
}

async fn inner(
    state: AppState,
    ctx: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let wire: CompletionRequest = crate::errors::parse_body(&body).map_err(|e| json_error(&e))?;
    if wire.metadata.is_some() || wire.user.is_some() {
        ctx.set_routing_body(
            modelgate_core::routing::metadata_of(wire.metadata.as_ref()),
            wire.user.clone(),
        );
    }
    let plan = wire.plan()?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let prompt = plan.prompts.first().cloned().unwrap_or_default();
        let events = state
            .gateway
            .converse_stream(&ctx, request(&plan, &prompt))
            .await?
            .value;
        let echo = plan.echo.then_some(prompt);
        let body = sse_body(events, id, created, plan.model, plan.include_usage, echo);
        return Ok(streaming::response("text/event-stream", &[], body));
    }
    // One choice per prompt, in order; the usage is their sum.
    let mut choices = Vec::with_capacity(plan.prompts.len());
    let mut usage = Usage::new(0, 0);
    let mut model = plan.model.clone();
    for (index, prompt) in plan.prompts.iter().enumerate() {
        let r = state
            .gateway
            .converse(&ctx, request(&plan, prompt))
            .await?
            .value;
        let mut text = if plan.echo {
            prompt.clone()
        } else {
            String::new()
        };
        for block in &r.message.content {
            if let ContentBlock::Text(t) = block {
                text.push_str(t);
            }
        }
        usage = Usage::new(
            usage.input_tokens + r.usage.input_tokens,
            usage.output_tokens + r.usage.output_tokens,
        );
        model = r.model;
        choices.push(json!({
            "text": text,
            "index": index,
            "logprobs": null,
            "finish_reason": vocab::openai::finish_reason(r.stop_reason),
        }));
    }
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_json(&usage),
        "system_fingerprint": null,
    }))
    .into_response())
}

/// Canonical events as `text_completion` SSE chunks ending in `[DONE]`; an error after the
/// stream started is an `error` event.
fn sse_body(
    events: modelgate_providers::ChatStream,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    echo: Option<String>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let chunk = move |text: &str, finish: Option<&str>, usage: Option<Value>| -> Bytes {
        let choices = if usage.is_some() {
            json!([])
        } else {
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
        };
        let mut v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": null, "choices": choices,
        });
        if include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(streaming::sse_frame(None, &v.to_string()))
    };
    let mut echo = echo;
    let encode = move |event: &StreamEvent| match event {
        StreamEvent::MessageStart { .. } => match echo.take() {
            Some(prompt) => chunk(&prompt, None, None),
            None => Bytes::new(),
        },
        StreamEvent::ContentBlockDelta {
            delta: ContentBlockDelta::Text(t),
            ..
        } if !t.is_empty() => chunk(t, None, None),
        StreamEvent::MessageStop { stop_reason } => {
            chunk("", Some(vocab::openai::finish_reason(*stop_reason)), None)
        }
        StreamEvent::Metadata { usage, .. } if include_usage => {
            chunk("", None, Some(usage_json(usage)))
        }
        _ => Bytes::new(),
    };
    streaming::encode(
        events,
        encode,
        |e| Bytes::from(streaming::sse_frame(None, &openai_body(e).to_string())),
        Some(Bytes::from_static(b"data: [DONE]\n\n")),
    )
}
