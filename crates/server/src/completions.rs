//! The legacy OpenAI Completions API, `POST /v1/completions` — still used by many tools and
//! evaluation harnesses. Each prompt becomes a chat request with the prompt as the one user
//! message (so every served model answers it, chat models included, as other gateways do),
//! and the answer comes back as a `text_completion`, whole or as SSE chunks ending in
//! `[DONE]`.
//!
//! Supported: `prompt` as a string or a list of strings (one choice per prompt, in order; a
//! stream takes one prompt), `max_tokens` (default 16, as OpenAI's), `temperature`, `top_p`,
//! `stop`, `echo` (the prompt is put before the text), `stream` and
//! `stream_options.include_usage`, `user` and `metadata` (routing reads them), `seed` and
//! `logprobs` (0–5 alternatives per token, the legacy shape: `tokens`, `token_logprobs`,
//! `top_logprobs`, `text_offset`) as on the chat door; the penalties, `logit_bias`, `top_k`
//! and members the door does not know follow the chat door's rules. Refused with a 400 naming the parameter: token-array prompts, `suffix`
//! (insertion), `logprobs` with `echo` (the prompt's own tokens are not scored), `n` or
//! `best_of` above 1.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelgate_core::CallContext;
use modelgate_types::params::Native;
use modelgate_types::vocab;
use modelgate_types::{
    ChatRequest, ContentBlock, ContentBlockDelta, Error, Generation, InferenceConfig, Message,
    Role, StreamEvent, TokenLogprob, Usage,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, json_error, openai_body, respond, OpenAiError};
use crate::openai::{now_secs, usage_json, Sampling, Stop, StreamOptions};
use crate::streaming;

/// Unknown members go to OpenAI-compatible upstreams as sent, as on the chat door.
#[derive(Deserialize)]
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
    logprobs: Option<i64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<HashMap<String, f32>>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
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
    generation: Generation,
    end_user: Option<String>,
    native: Option<Native>,
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
        let logprobs = match self.logprobs {
            None => None,
            Some(n) if !(0..=5).contains(&n) => {
                return Err(bad("logprobs", "must be between 0 and 5"))
            }
            Some(_) if self.echo == Some(true) => {
                return Err(bad(
                    "logprobs",
                    "cannot be combined with echo: the prompt's own tokens are not scored",
                ))
            }
            Some(n) => Some(n as u8),
        };
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
            generation: Sampling {
                seed: self.seed,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                logit_bias: self.logit_bias,
                top_k: self.top_k,
            }
            .into_generation(logprobs)?,
            end_user: self.user,
            native: crate::openai::native(self.rest, self.metadata.as_ref()),
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
        generation: plan.generation.clone(),
        end_user: plan.end_user.clone(),
        native: plan.native.clone(),
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
    crate::openai::routing_hints(&ctx, wire.metadata.as_ref(), wire.user.as_deref());
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
            "logprobs": r.logprobs.as_deref().map(|t| legacy_logprobs(t, 0)),
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

/// The legacy `logprobs` object: parallel arrays, alternatives as `{token: logprob}` maps, and
/// each token's character offset in the text (counting from `offset`).
fn legacy_logprobs(tokens: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(at);
        at += t.token.chars().count();
    }
    json!({
        "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
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
    let chunk = move |text: &str,
                      logprobs: Option<Value>,
                      finish: Option<&str>,
                      usage: Option<Value>|
          -> Bytes {
        let choices = if usage.is_some() {
            json!([])
        } else {
            json!([{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}])
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
    // Log-probabilities come just before their text and go out in its chunk; offsets count
    // through the whole text.
    let mut pending: Option<Vec<TokenLogprob>> = None;
    let mut offset = 0;
    let encode = move |event: &StreamEvent| match event {
        StreamEvent::MessageStart { .. } => match echo.take() {
            Some(prompt) => chunk(&prompt, None, None, None),
            None => Bytes::new(),
        },
        StreamEvent::Logprobs { tokens, .. } => {
            pending
                .get_or_insert_with(Vec::new)
                .extend(tokens.iter().cloned());
            Bytes::new()
        }
        StreamEvent::ContentBlockDelta {
            delta: ContentBlockDelta::Text(t),
            ..
        } if !t.is_empty() => {
            let logprobs = pending.take().map(|l| legacy_logprobs(&l, offset));
            offset += t.chars().count();
            chunk(t, logprobs, None, None)
        }
        StreamEvent::MessageStop { stop_reason } => chunk(
            "",
            None,
            Some(vocab::openai::finish_reason(*stop_reason)),
            None,
        ),
        StreamEvent::Metadata { usage, .. } if include_usage => {
            chunk("", None, None, Some(usage_json(usage)))
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
