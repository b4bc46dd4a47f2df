//! The Bedrock Runtime front door: `POST /model/{modelId}/converse`,
//! `POST /model/{modelId}/converse-stream` and `POST /model/{modelId}/count-tokens`.
//!
//! Request and response bodies have exactly the shapes of botocore's `bedrock-runtime` model;
//! the canonical types already serialise to Converse JSON, so only the envelope lives here.
//! The model id arrives percent-encoded (`%3A` for `:`, `%2F` inside ARNs); axum's `Path`
//! decodes it. Members Modelgate does not act on yet (`guardrailConfig`,
//! `additionalModelRequestFields`, `promptVariables`, `requestMetadata`, `performanceConfig`,
//! `serviceTier`, `outputConfig`, `additionalModelResponseFieldPaths`) are accepted and ignored,
//! as `docs/front-doors.md` records; unknown members are a `ValidationException`.
//!
//! ConverseStream answers with the AWS event-stream binary framing
//! (`application/vnd.amazon.eventstream`, written by `aws-smithy-eventstream`): one message per
//! event with `:message-type=event`, `:event-type=<member>` and a JSON payload. A failure after
//! the stream started is an exception message (`:message-type=exception`,
//! `:exception-type=<member>`), which the AWS SDKs raise — never a silent clean end.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as EventMessage};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlockDelta, ContentBlockStart, Error, ErrorKind,
    InferenceConfig, Message, StreamEvent, SystemBlock, ToolConfig,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::errors::{body_rejection, BedrockError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConverseBody {
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    system: Option<Vec<SystemBlock>>,
    #[serde(default)]
    inference_config: Option<InferenceConfig>,
    #[serde(default)]
    tool_config: Option<ToolConfig>,
    // Accepted, not acted on yet (documented).
    #[serde(default, rename = "guardrailConfig")]
    _guardrail_config: Option<IgnoredAny>,
    #[serde(default, rename = "additionalModelRequestFields")]
    _additional_model_request_fields: Option<IgnoredAny>,
    #[serde(default, rename = "promptVariables")]
    _prompt_variables: Option<IgnoredAny>,
    #[serde(default, rename = "additionalModelResponseFieldPaths")]
    _additional_model_response_field_paths: Option<IgnoredAny>,
    #[serde(default, rename = "requestMetadata")]
    _request_metadata: Option<IgnoredAny>,
    #[serde(default, rename = "performanceConfig")]
    _performance_config: Option<IgnoredAny>,
    #[serde(default, rename = "serviceTier")]
    _service_tier: Option<IgnoredAny>,
    #[serde(default, rename = "outputConfig")]
    _output_config: Option<IgnoredAny>,
}

/// A body that does not match the operation's shape; the message names the member, as AWS's
/// validation does.
fn invalid_body(e: &serde_json::Error) -> Error {
    Error::validation(format!(
        "1 validation error detected: the request body is invalid: {e}"
    ))
}

/// Parse a Converse body.
fn parse_converse(model_id: String, body: &[u8]) -> Result<ChatRequest, Error> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let wire: ConverseBody = serde_json::from_slice(body).map_err(|e| invalid_body(&e))?;
    Ok(ChatRequest {
        model: model_id,
        system: wire.system.unwrap_or_default(),
        messages: wire.messages.unwrap_or_default(),
        inference: wire.inference_config.unwrap_or_default(),
        tools: wire.tool_config,
    })
}

fn converse_json(r: &ChatResponse) -> Value {
    json!({
        "output": {"message": r.message},
        "stopReason": r.stop_reason,
        "usage": r.usage,
        "metrics": {"latencyMs": r.latency_ms},
    })
}

/// Render a handler's outcome: the answer, or the error in the Bedrock dialect.
fn respond(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| BedrockError(e).into_response())
}

/// Read and parse a Converse / ConverseStream body.
fn converse_request(
    state: &AppState,
    model_id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<ChatRequest, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    parse_converse(model_id, &body)
}

/// `POST /model/{modelId}/converse`
pub async fn converse(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let request = converse_request(&state, model_id, body)?;
            let response = state.gateway.converse(request).await?;
            Ok(Json(converse_json(&response)).into_response())
        }
        .await,
    )
}

/// `POST /model/{modelId}/converse-stream`
pub async fn converse_stream(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let request = converse_request(&state, model_id, body)?;
            let events = state.gateway.converse_stream(request).await?;
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
                Body::from_stream(event_stream_body(events)),
            )
                .into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CountTokensBody {
    input: CountTokensInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CountTokensInput {
    #[serde(default)]
    converse: Option<ConverseTokensBody>,
    #[serde(default)]
    invoke_model: Option<IgnoredAny>,
}

/// botocore's `ConverseTokensRequest`: the parts of a Converse request that make up its input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConverseTokensBody {
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    system: Option<Vec<SystemBlock>>,
    #[serde(default)]
    tool_config: Option<ToolConfig>,
    #[serde(default, rename = "additionalModelRequestFields")]
    _additional_model_request_fields: Option<IgnoredAny>,
}

/// `POST /model/{modelId}/count-tokens`: the input tokens the request would use, counted by the
/// serving model's own tokenizer over exactly the prompt the model would see.
pub async fn count_tokens(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let wire: CountTokensBody =
            serde_json::from_slice(&body).map_err(|e| invalid_body(&e))?;
        let request = match (wire.input.converse, wire.input.invoke_model) {
            (Some(converse), None) => ChatRequest {
                model: model_id,
                system: converse.system.unwrap_or_default(),
                messages: converse.messages.unwrap_or_default(),
                inference: InferenceConfig::default(),
                tools: converse.tool_config,
            },
            (None, Some(_)) => {
                return Err(Error::validation(
                    "input.invokeModel is not supported yet: model-native request bodies arrive with InvokeModel support; count with input.converse",
                ))
            }
            _ => {
                return Err(Error::validation(
                    "input must set exactly one of `converse` or `invokeModel`",
                ))
            }
        };
        let input_tokens = state.gateway.count_tokens(&request).await?;
        Ok(Json(json!({ "inputTokens": input_tokens })).into_response())
    }
    .await;
    respond(result)
}

/// Frame canonical events as ConverseStream event-stream messages; stop after an exception.
fn event_stream_body(
    events: modelgate_providers::ChatStream,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold((events, false), |(mut events, done)| async move {
        if done {
            return None;
        }
        let item = events.next().await?;
        let (frame, done) = match item {
            Ok(event) => (encode_event(&event), false),
            Err(e) => (encode_exception(&e), true),
        };
        Some((frame.map_err(std::io::Error::other), (events, done)))
    })
}

/// The ConverseStream member name and JSON payload of a canonical event.
fn event_payload(event: &StreamEvent) -> (&'static str, Value) {
    match event {
        StreamEvent::MessageStart { role } => ("messageStart", json!({ "role": role })),
        StreamEvent::ContentBlockStart { index, start } => {
            let ContentBlockStart::ToolUse { tool_use_id, name } = start;
            (
                "contentBlockStart",
                json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}),
            )
        }
        StreamEvent::ContentBlockDelta { index, delta } => {
            let delta = match delta {
                ContentBlockDelta::Text(t) => json!({ "text": t }),
                ContentBlockDelta::ToolUseInput(i) => json!({"toolUse": {"input": i}}),
                ContentBlockDelta::ReasoningText(t) => json!({"reasoningContent": {"text": t}}),
            };
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": delta}),
            )
        }
        StreamEvent::ContentBlockStop { index } => {
            ("contentBlockStop", json!({ "contentBlockIndex": index }))
        }
        StreamEvent::MessageStop { stop_reason } => {
            ("messageStop", json!({ "stopReason": stop_reason }))
        }
        StreamEvent::Metadata { usage, latency_ms } => (
            "metadata",
            json!({"usage": usage, "metrics": {"latencyMs": latency_ms}}),
        ),
    }
}

/// The ConverseStream exception member for an error that ends a started stream.
fn stream_exception(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Validation | ErrorKind::PayloadTooLarge => "validationException",
        ErrorKind::Throttling => "throttlingException",
        ErrorKind::ServiceUnavailable => "serviceUnavailableException",
        ErrorKind::Internal => "internalServerException",
        ErrorKind::ModelError
        | ErrorKind::Timeout
        | ErrorKind::NotFound
        | ErrorKind::Unauthenticated
        | ErrorKind::AccessDenied => "modelStreamErrorException",
    }
}

fn frame(headers: [(&'static str, &'static str); 3], payload: &Value) -> Result<Bytes, String> {
    let message = EventMessage::new_from_parts(
        headers
            .into_iter()
            .map(|(name, value)| Header::new(name, HeaderValue::String(value.into())))
            .collect(),
        Bytes::from(payload.to_string()),
    );
    let mut out = Vec::with_capacity(96 + message.payload().len());
    write_message_to(&message, &mut out).map_err(|e| format!("event-stream framing: {e}"))?;
    Ok(Bytes::from(out))
}

fn encode_event(event: &StreamEvent) -> Result<Bytes, String> {
    let (name, payload) = event_payload(event);
    frame(
        [
            (":event-type", name),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload,
    )
}

fn encode_exception(error: &Error) -> Result<Bytes, String> {
    frame(
        [
            (":exception-type", stream_exception(error.kind)),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &json!({ "message": error.message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{ContentBlock, Role, StopReason, Usage};

    #[test]
    fn parses_boto3_shape() {
        let body = json!({
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "be brief"}],
            "inferenceConfig": {"maxTokens": 20, "temperature": 0.0, "stopSequences": ["."]},
            "requestMetadata": {"team": "a"}
        });
        let r = parse_converse("m:0".into(), body.to_string().as_bytes()).unwrap();
        assert_eq!(r.model, "m:0");
        assert_eq!(r.messages[0].content[0], ContentBlock::Text("hi".into()));
        assert_eq!(r.inference.max_tokens, Some(20));
        assert_eq!(r.system[0].as_text(), "be brief");
    }

    #[test]
    fn rejects_unknown_members_and_bad_json() {
        assert!(parse_converse("m".into(), br#"{"mesages": []}"#).is_err());
        assert!(parse_converse("m".into(), b"{not json").is_err());
        let e =
            parse_converse("m".into(), br#"{"inferenceConfig": {"maxTokens": -1}}"#).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    fn decode_all(mut bytes: &[u8]) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let m = aws_smithy_eventstream::frame::read_message_from(&mut bytes).unwrap();
            let h = |n: &str| {
                m.headers()
                    .iter()
                    .find(|h| h.name().as_str() == n)
                    .map(|h| h.value().as_string().unwrap().as_str().to_string())
                    .unwrap_or_default()
            };
            let kind = h(":message-type");
            let name = if kind == "event" {
                h(":event-type")
            } else {
                h(":exception-type")
            };
            out.push((kind, name, serde_json::from_slice(m.payload()).unwrap()));
        }
        out
    }

    #[tokio::test]
    async fn stream_frames_decode_in_order_and_errors_become_exceptions() {
        let events: Vec<Result<StreamEvent, Error>> = vec![
            Ok(StreamEvent::MessageStart {
                role: Role::Assistant,
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 0,
                delta: ContentBlockDelta::Text("Pa".into()),
            }),
            Ok(StreamEvent::ContentBlockStart {
                index: 1,
                start: ContentBlockStart::ToolUse {
                    tool_use_id: "t1".into(),
                    name: "f".into(),
                },
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("{\"a\":".into()),
            }),
            Err(Error::new(ErrorKind::Throttling, "slow down")),
            Ok(StreamEvent::ContentBlockStop { index: 1 }),
        ];
        let body: Vec<Bytes> = event_stream_body(futures::stream::iter(events).boxed())
            .map(|r| r.unwrap())
            .collect()
            .await;
        let frames = decode_all(&body.concat());
        let names: Vec<&str> = frames.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockStart",
                "contentBlockDelta",
                "throttlingException"
            ]
        );
        assert_eq!(
            frames[1].2,
            json!({"contentBlockIndex": 0, "delta": {"text": "Pa"}})
        );
        assert_eq!(
            frames[2].2,
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}})
        );
        assert_eq!(
            frames[3].2,
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}})
        );
        assert_eq!(frames[4].0, "exception");
        assert_eq!(frames[4].2, json!({"message": "slow down"}));
    }

    #[test]
    fn count_tokens_body_has_botocore_shape() {
        let ok: CountTokensBody = serde_json::from_value(json!({"input": {"converse": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "be brief"}]
        }}}))
        .unwrap();
        let converse = ok.input.converse.unwrap();
        assert_eq!(converse.messages.unwrap().len(), 1);
        assert_eq!(converse.system.unwrap()[0].as_text(), "be brief");
        // inferenceConfig belongs to Converse, not to ConverseTokensRequest.
        assert!(
            serde_json::from_value::<CountTokensBody>(json!({"input": {"converse": {
                "messages": [], "inferenceConfig": {"maxTokens": 5}
            }}}))
            .is_err()
        );
    }

    #[test]
    fn response_has_converse_shape() {
        let r = ChatResponse {
            model: "m".into(),
            message: Message::text(Role::Assistant, "Paris"),
            stop_reason: StopReason::EndTurn,
            usage: Usage::new(5, 2),
            latency_ms: 12,
        };
        assert_eq!(
            converse_json(&r),
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "Paris"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
                "metrics": {"latencyMs": 12}
            })
        );
    }
}
