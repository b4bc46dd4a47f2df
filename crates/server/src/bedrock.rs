//! The Bedrock Runtime front door: `POST /model/{modelId}/converse`.
//!
//! Request and response bodies have exactly the shapes of botocore's `bedrock-runtime` model;
//! the canonical types already serialise to Converse JSON, so only the envelope lives here.
//! The model id arrives percent-encoded (`%3A` for `:`, `%2F` inside ARNs); axum's `Path`
//! decodes it. Members Modelgate does not act on yet (`guardrailConfig`,
//! `additionalModelRequestFields`, `promptVariables`, `requestMetadata`, `performanceConfig`,
//! `serviceTier`, `outputConfig`, `additionalModelResponseFieldPaths`) are accepted and ignored,
//! as `docs/front-doors.md` records; unknown members are a `ValidationException`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelgate_types::{
    ChatRequest, ChatResponse, Error, InferenceConfig, Message, SystemBlock, ToolConfig,
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

/// Parse a Converse body; the error message names the member, as AWS's validation does.
fn parse_converse(model_id: String, body: &[u8]) -> Result<ChatRequest, Error> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let wire: ConverseBody = serde_json::from_slice(body).map_err(|e| {
        Error::validation(format!(
            "1 validation error detected: the request body is invalid: {e}"
        ))
    })?;
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

/// `POST /model/{modelId}/converse`
pub async fn converse(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let request = parse_converse(model_id, &body)?;
        let response = state.gateway.converse(request).await?;
        Ok::<_, Error>(Json(converse_json(&response)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| BedrockError(e).into_response())
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
