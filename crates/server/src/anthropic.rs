//! The Anthropic Messages front door: `POST /v1/messages` (JSON and SSE) and
//! `POST /v1/messages/count_tokens`, as the anthropic SDKs call them.
//!
//! The wire format is shared with the Bedrock InvokeModel Anthropic family
//! (`crate::native::anthropic`). Errors are `{"type":"error","error":{"type","message"}}` with
//! Anthropic's status codes. A stream that fails after it started ends with an `error` event,
//! never a clean `message_stop`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use modelgate_core::CallContext;
use modelgate_types::{ChatRequest, ChatResponse, Error, Message, Role, StopReason, Usage};
use serde_json::json;

use crate::app::AppState;
use crate::errors::{anthropic_body, body_rejection, json_error, respond, AnthropicError};
use crate::native::anthropic::{message_id, response_json, MessagesBody, StreamMapper};
use crate::streaming::{self, sse_frame};

/// Parse a `/v1/messages` body: `model` is required and `anthropic_version` belongs in the
/// header, not the body.
fn parse(body: &[u8], for_counting: bool, ctx: &CallContext) -> Result<(ChatRequest, Mode), Error> {
    let mut wire: MessagesBody = crate::errors::parse_body(body).map_err(|e| json_error(&e))?;
    if let Some(cache) = wire.cache.take() {
        ctx.merge_cache_body(&cache);
    }
    if let Some(m) = &wire.metadata {
        let metadata = modelgate_core::routing::metadata_of(Some(m));
        let user = metadata.get("user_id").cloned();
        ctx.set_routing_body(metadata, user);
    }
    if wire.anthropic_version.is_some() || wire.anthropic_beta.is_some() {
        return Err(Error::validation(
            "anthropic_version: Extra inputs are not permitted; send the `anthropic-version` header",
        ));
    }
    let model = wire
        .model
        .take()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::validation("model: Field required"))?;
    let stream = wire.stream.unwrap_or(false);
    if for_counting {
        // count_tokens takes no max_tokens; any positive value maps the rest unchanged.
        wire.set_max_tokens_if_missing(1);
    }
    let mode = match (wire.take_zero_max_tokens(), stream) {
        (true, _) => Mode::PromptOnly { stream },
        (false, true) => Mode::Stream,
        (false, false) => Mode::Whole,
    };
    Ok((wire.into_canonical(model)?, mode))
}

/// How a `/v1/messages` call is answered.
#[derive(Debug, PartialEq)]
enum Mode {
    /// One JSON message.
    Whole,
    /// Server-sent events.
    Stream,
    /// `max_tokens: 0`: the prompt is counted, nothing is generated.
    PromptOnly { stream: bool },
}

/// `POST /v1/messages`
pub async fn messages(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond::<AnthropicError>(messages_inner(state, ctx, body).await)
}

async fn messages_inner(
    state: AppState,
    ctx: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let (request, mode) = parse(&body, false, &ctx)?;
    let id = message_id("msg_");
    let model = request.model.clone();
    if mode == Mode::Whole {
        let served = state.gateway.converse(&ctx, request).await?;
        return Ok(Json(response_json(&id, &model, &served.value)).into_response());
    }
    let events = match mode {
        Mode::PromptOnly { stream } => {
            let input_tokens = state.gateway.count_tokens(&ctx, request).await?;
            let response = ChatResponse {
                model: model.clone(),
                message: Message {
                    role: Role::Assistant,
                    content: Vec::new(),
                },
                stop_reason: StopReason::MaxTokens,
                usage: Usage::new(input_tokens, 0),
                latency_ms: 0,
                logprobs: None,
            };
            if !stream {
                return Ok(Json(response_json(&id, &model, &response)).into_response());
            }
            let events = modelgate_providers::response_events(&response);
            futures::stream::iter(events.into_iter().map(Ok)).boxed()
        }
        _ => state.gateway.converse_stream(&ctx, request).await?.value,
    };
    let mut mapper = StreamMapper::new(id, model, false);
    let encode = move |event: &modelgate_types::StreamEvent| {
        let mut out = String::new();
        for v in mapper.map(event) {
            let name = v["type"].as_str().unwrap_or("message").to_string();
            out.push_str(&sse_frame(Some(&name), &v.to_string()));
            if name == "message_start" {
                out.push_str(&sse_frame(
                    Some("ping"),
                    &json!({"type": "ping"}).to_string(),
                ));
            }
        }
        Bytes::from(out)
    };
    let body = streaming::encode(
        events,
        encode,
        |e| Bytes::from(sse_frame(Some("error"), &anthropic_body(e).to_string())),
        None,
    );
    Ok(streaming::response("text/event-stream", &[], body))
}

/// `POST /v1/messages/count_tokens`
pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let (request, _) = parse(&body, true, &ctx)?;
        let n = state.gateway.count_tokens(&ctx, request).await?;
        Ok::<_, Error>(Json(json!({ "input_tokens": n })).into_response())
    }
    .await;
    respond::<AnthropicError>(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_api_body_rules() {
        let ok = json!({"model": "m", "max_tokens": 5, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let (r, mode) = parse(ok.to_string().as_bytes(), false, &CallContext::internal()).unwrap();
        assert_eq!(mode, Mode::Stream);
        assert_eq!(r.model, "m");
        let mut no_model = ok.clone();
        no_model.as_object_mut().unwrap().remove("model");
        assert!(parse(
            no_model.to_string().as_bytes(),
            false,
            &CallContext::internal()
        )
        .is_err());
        let mut versioned = ok.clone();
        versioned["anthropic_version"] = json!("bedrock-2023-05-31");
        assert!(parse(
            versioned.to_string().as_bytes(),
            false,
            &CallContext::internal()
        )
        .is_err());
        let mut zero = ok.clone();
        zero["max_tokens"] = json!(0);
        let (r, mode) =
            parse(zero.to_string().as_bytes(), false, &CallContext::internal()).unwrap();
        assert_eq!(mode, Mode::PromptOnly { stream: true });
        assert_eq!(r.inference.max_tokens, Some(1));
        let mut counting = ok;
        counting.as_object_mut().unwrap().remove("max_tokens");
        assert!(parse(
            counting.to_string().as_bytes(),
            false,
            &CallContext::internal()
        )
        .is_err());
        assert!(parse(
            counting.to_string().as_bytes(),
            true,
            &CallContext::internal()
        )
        .is_ok());
    }
}
