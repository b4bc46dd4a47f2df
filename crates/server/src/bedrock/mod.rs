//! The Bedrock Runtime front door: `POST /model/{modelId}/converse`,
//! `POST /model/{modelId}/converse-stream` and `POST /model/{modelId}/count-tokens`.
//!
//! Request and response bodies have exactly the shapes of botocore's `bedrock-runtime` model;
//! the canonical types already serialise to Converse JSON, so only the envelope lives here.
//! The model id arrives percent-encoded (`%3A` for `:`, `%2F` inside ARNs); axum's `Path`
//! decodes it. `additionalModelRequestFields.thinking` (Claude's extended thinking) and
//! `additionalModelRequestFields.reasoningConfig` (Nova's `maxReasoningEffort`) become the
//! canonical reasoning budget; other model-specific fields there are ignored. A prompt ARN as
//! the model id runs that stored prompt with `promptVariables` (`crate::prompts`). Members
//! Modelgate does not act on yet (`requestMetadata`,
//! `performanceConfig`, `serviceTier`, `outputConfig.effort`,
//! `additionalModelResponseFieldPaths`) are accepted and ignored, as `docs/front-doors.md`
//! records; unknown members are a `ValidationException`.
//!
//! ConverseStream and InvokeModelWithResponseStream answer in the AWS event-stream framing
//! (`eventstream.rs`); InvokeModel's model-native bodies are in `invoke.rs` and `crate::native`.

mod eventstream;
mod invoke;

pub(crate) use invoke::invocation as invoke_invocation;
pub use invoke::{invoke, invoke_stream};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelgate_core::guardrails::layer::Location;
use modelgate_core::guardrails::{GuardText, GuardrailRequest, Qualifier, StreamMode, TraceMode};
use modelgate_core::CallContext;
use modelgate_types::params::{Native, NativeParam, Wire};
use modelgate_types::{
    ChatRequest, ChatResponse, Error, Generation, InferenceConfig, Message, Reasoning,
    ResponseFormat, StreamEvent, SystemBlock, ToolConfig,
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
    /// The guardrail to apply (Converse `GuardrailConfiguration`, ConverseStream
    /// `GuardrailStreamConfiguration`).
    #[serde(default)]
    guardrail_config: Option<GuardrailConfigBody>,
    #[serde(default, rename = "additionalModelRequestFields")]
    additional_model_request_fields: Option<Value>,
    /// The variables of a prompt run through its ARN as `modelId`.
    #[serde(default)]
    prompt_variables: Option<std::collections::BTreeMap<String, PromptVariable>>,
    // Native parameters: Bedrock upstreams get them as sent (`modelgate_types::params`).
    #[serde(default, rename = "additionalModelResponseFieldPaths")]
    additional_model_response_field_paths: Option<Value>,
    /// Routing rules may match on it; `user` keeps sticky routing on one arm.
    #[serde(default)]
    request_metadata: Option<Value>,
    #[serde(default)]
    performance_config: Option<Value>,
    #[serde(default)]
    service_tier: Option<Value>,
    #[serde(default)]
    output_config: Option<OutputConfig>,
}

/// `PromptVariableValues`: a union with one member, `text`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptVariable {
    text: String,
}

/// `guardrailConfig`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuardrailConfigBody {
    guardrail_identifier: String,
    guardrail_version: String,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    stream_processing_mode: Option<String>,
}

impl GuardrailConfigBody {
    fn request(
        self,
        streaming: bool,
        selected: Option<Vec<(Location, GuardText)>>,
    ) -> Result<GuardrailRequest, Error> {
        let trace = match self.trace.as_deref() {
            None => TraceMode::Disabled,
            Some(t @ ("enabled" | "disabled" | "enabled_full")) => {
                TraceMode::parse(t).unwrap_or_default()
            }
            Some(other) => {
                return Err(crate::errors::aws_enum(
                    other,
                    "guardrailConfig.trace",
                    &["enabled", "disabled", "enabled_full"],
                ))
            }
        };
        let stream_mode = match (self.stream_processing_mode.as_deref(), streaming) {
            (None, _) | (Some("sync"), true) => StreamMode::Sync,
            (Some("async"), true) => StreamMode::Async,
            (Some(m @ ("sync" | "async")), false) => {
                return Err(Error::validation(format!(
                    "guardrailConfig.streamProcessingMode ('{m}') applies to ConverseStream only"
                )))
            }
            (Some(other), _) => {
                return Err(crate::errors::aws_enum(
                    other,
                    "guardrailConfig.streamProcessingMode",
                    &["sync", "async"],
                ))
            }
        };
        if self.guardrail_identifier.is_empty() {
            return Err(Error::validation(
                "guardrailConfig.guardrailIdentifier must not be empty",
            ));
        }
        modelgate_core::guardrails::parse_version(&self.guardrail_version)?;
        Ok(GuardrailRequest {
            identifier: self.guardrail_identifier,
            version: self.guardrail_version,
            trace,
            stream_mode,
            selected,
        })
    }
}

/// The `guardContent` blocks of a request: where they were, and their text and qualifiers.
type Selected = Vec<(Location, GuardText)>;

/// Turn `guardContent` blocks (in `system` and in messages) into plain text blocks, and say
/// where they were and what their qualifiers are: with a guardrail, only they are guarded.
/// Bodies without the word are not touched (the common case costs one substring search).
fn take_guard_content(
    body: &[u8],
) -> Result<(std::borrow::Cow<'_, [u8]>, Option<Selected>), Error> {
    if !body.windows(12).any(|w| w == b"guardContent") {
        return Ok((std::borrow::Cow::Borrowed(body), None));
    }
    let mut value: Value = crate::errors::parse_body(body).map_err(|e| invalid_body(&e))?;
    let mut found = Vec::new();
    let mut convert = |block: &mut Value, loc: Location, field: &str| -> Result<(), Error> {
        let Some(g) = block.get("guardContent") else {
            return Ok(());
        };
        let Some(text) = g.pointer("/text/text").and_then(Value::as_str) else {
            return Err(Error::validation(format!(
                "{field}.guardContent: only text guard content is supported (images are not checked on the box)"
            )));
        };
        let mut qualifiers = Vec::new();
        for q in g
            .pointer("/text/qualifiers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = q.as_str().unwrap_or_default();
            qualifiers.push(Qualifier::parse(name).ok_or_else(|| {
                crate::errors::aws_enum(
                    name,
                    &format!("{field}.guardContent.text.qualifiers"),
                    &["grounding_source", "query", "guard_content"],
                )
            })?);
        }
        found.push((
            loc,
            GuardText {
                text: text.to_string(),
                qualifiers,
            },
        ));
        *block = json!({ "text": text });
        Ok(())
    };
    if let Some(system) = value.get_mut("system").and_then(Value::as_array_mut) {
        for (i, b) in system.iter_mut().enumerate() {
            convert(b, Location::System(i), &format!("system.{i}"))?;
        }
    }
    if let Some(messages) = value.get_mut("messages").and_then(Value::as_array_mut) {
        for (i, m) in messages.iter_mut().enumerate() {
            if let Some(content) = m.get_mut("content").and_then(Value::as_array_mut) {
                for (j, b) in content.iter_mut().enumerate() {
                    convert(
                        b,
                        Location::Text(i, j),
                        &format!("messages.{i}.content.{j}"),
                    )?;
                }
            }
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::internal(e.to_string()))?;
    Ok((
        std::borrow::Cow::Owned(bytes),
        (!found.is_empty()).then_some(found),
    ))
}

/// `outputConfig`: structured output (`textFormat`); `effort` is a native parameter.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OutputConfig {
    #[serde(default)]
    text_format: Option<TextFormat>,
    #[serde(default)]
    effort: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextFormat {
    r#type: String,
    structure: TextFormatStructure,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TextFormatStructure {
    json_schema: JsonSchemaDefinition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaDefinition {
    schema: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl OutputConfig {
    fn response_format(self) -> Result<Option<ResponseFormat>, Error> {
        let Some(format) = self.text_format else {
            return Ok(None);
        };
        if format.r#type != "json_schema" {
            return Err(crate::errors::aws_enum(
                &format.r#type,
                "outputConfig.textFormat.type",
                &["json_schema"],
            ));
        }
        let def = format.structure.json_schema;
        let schema = serde_json::from_str(&def.schema).map_err(|e| {
            Error::validation(format!(
                "outputConfig.textFormat.structure.jsonSchema.schema is not valid JSON: {e}"
            ))
        })?;
        Ok(Some(ResponseFormat::JsonSchema {
            name: def.name.unwrap_or_else(|| "response".into()),
            description: def.description,
            schema,
            strict: true,
        }))
    }
}

/// `additionalModelRequestFields` split: `top_k` becomes canonical (the reasoning settings are
/// read by [`additional_reasoning`]); the model's other settings stay native parameters.
fn additional_fields(fields: Option<&Value>) -> Result<(Option<u32>, Vec<NativeParam>), Error> {
    const PARENT: &str = "additionalModelRequestFields";
    let Some(fields) = fields else {
        return Ok((None, Vec::new()));
    };
    let fields = fields
        .as_object()
        .ok_or_else(|| Error::validation(format!("{PARENT} must be a JSON object")))?;
    let top_k = match fields.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .filter(|k| *k > 0)
                .ok_or_else(|| {
                    Error::validation(format!("{PARENT}.top_k must be a positive integer"))
                })?,
        ),
    };
    let native = fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "top_k" | "thinking" | "reasoningConfig"))
        .map(|(k, v)| NativeParam::under(PARENT, k.clone(), v.clone()))
        .collect();
    Ok((top_k, native))
}

/// The reasoning budget in `additionalModelRequestFields`: Claude's `thinking` object, or
/// Nova's `reasoningConfig` (`{"type": "enabled", "maxReasoningEffort": "low"|"medium"|"high"}`).
fn additional_reasoning(fields: Option<&Value>) -> Result<Option<Reasoning>, Error> {
    let Some(fields) = fields else {
        return Ok(None);
    };
    if let Some(thinking) = fields.get("thinking") {
        return Reasoning::from_thinking(thinking, "additionalModelRequestFields.thinking");
    }
    let Some(config) = fields.get("reasoningConfig") else {
        return Ok(None);
    };
    let field = "additionalModelRequestFields.reasoningConfig";
    match config.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        Some("enabled") => match config.get("maxReasoningEffort") {
            None => Reasoning::from_effort("medium", field),
            Some(Value::String(effort)) => {
                Reasoning::from_effort(effort, &format!("{field}.maxReasoningEffort"))
            }
            Some(_) => Err(Error::validation(format!(
                "{field}.maxReasoningEffort must be a string"
            ))),
        },
        _ => Err(Error::validation(format!(
            "{field}.type must be 'enabled' or 'disabled'"
        ))),
    }
}

/// A body that does not match the operation's shape; the message names the member, as AWS's
/// validation does.
fn invalid_body(e: &impl std::fmt::Display) -> Error {
    Error::validation(format!(
        "1 validation error detected: the request body is invalid: {e}"
    ))
}

/// Parse an AWS JSON body (an empty one is `{}`, as AWS treats it); a failure is a
/// `ValidationException` naming the member.
pub(crate) fn parse_aws_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    crate::errors::parse_body(body).map_err(|e| invalid_body(&e))
}

/// Read and parse an AWS JSON request body (control-plane operations).
pub(crate) fn aws_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    parse_aws_body(&body)
}

/// Parse a Converse body.
#[cfg(test)]
fn parse_converse(model_id: String, body: &[u8]) -> Result<ChatRequest, Error> {
    parse_converse_with_metadata(model_id, body).map(|(r, _)| r)
}

/// A parsed Converse body: the request, its `requestMetadata`, the guardrail it asks for.
struct ParsedConverse {
    request: ChatRequest,
    metadata: Option<Value>,
    guardrail: Option<GuardrailRequest>,
    /// `promptVariables`, when the body has them.
    prompt_variables: Option<serde_json::Map<String, Value>>,
    /// The members a call through a prompt ARN may not set, that this body sets.
    prompt_conflicts: Vec<&'static str>,
}

/// Parse a Converse body; also its `requestMetadata`.
#[cfg(test)]
fn parse_converse_with_metadata(
    model_id: String,
    body: &[u8],
) -> Result<(ChatRequest, Option<Value>), Error> {
    parse_converse_full(model_id, body, false).map(|p| (p.request, p.metadata))
}

fn parse_converse_full(
    model_id: String,
    body: &[u8],
    streaming: bool,
) -> Result<ParsedConverse, Error> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let (body, selected) = take_guard_content(body)?;
    let wire: ConverseBody = parse_aws_body(&body)?;
    let metadata = wire.request_metadata;
    let prompt_conflicts: Vec<&'static str> = [
        ("system", wire.system.is_some()),
        ("inferenceConfig", wire.inference_config.is_some()),
        ("toolConfig", wire.tool_config.is_some()),
        (
            "additionalModelRequestFields",
            wire.additional_model_request_fields.is_some(),
        ),
        ("outputConfig", wire.output_config.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let prompt_variables = wire.prompt_variables.map(|vars| {
        vars.into_iter()
            .map(|(k, v)| (k, Value::String(v.text)))
            .collect()
    });
    let guardrail = match wire.guardrail_config {
        Some(g) => Some(g.request(streaming, selected)?),
        None => None,
    };
    if wire
        .messages
        .as_ref()
        .and_then(|m| m.first())
        .is_some_and(|m| m.role == modelgate_types::Role::Assistant)
    {
        // Bedrock's own rule (the other front doors accept it).
        return Err(Error::validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let additional = wire.additional_model_request_fields.as_ref();
    let (top_k, mut native) = additional_fields(additional)?;
    let (effort, response_format) = match wire.output_config {
        Some(config) => (config.effort.clone(), config.response_format()?),
        None => (None, None),
    };
    native.extend(
        [
            (
                "additionalModelResponseFieldPaths",
                wire.additional_model_response_field_paths,
            ),
            ("performanceConfig", wire.performance_config),
            ("serviceTier", wire.service_tier),
            ("requestMetadata", metadata.clone()),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some(NativeParam::top(name, v?))),
    );
    if let Some(effort) = effort {
        native.push(NativeParam::under("outputConfig", "effort", effort));
    }
    let request = ChatRequest {
        model: model_id,
        system: wire.system.unwrap_or_default(),
        messages: wire.messages.unwrap_or_default(),
        inference: wire.inference_config.unwrap_or_default(),
        tools: wire.tool_config,
        response_format,
        reasoning: additional_reasoning(additional)?,
        generation: Generation {
            top_k,
            ..Generation::default()
        },
        end_user: None,
        native: Native::new(Wire::Bedrock, native),
    };
    Ok(ParsedConverse {
        request,
        metadata,
        guardrail,
        prompt_variables,
        prompt_conflicts,
    })
}

fn converse_json(r: &ChatResponse, ctx: &CallContext) -> Value {
    let mut out = json!({
        "output": {"message": r.message},
        "stopReason": r.stop_reason,
        "usage": r.usage,
        "metrics": {"latencyMs": r.latency_ms},
    });
    if let Some(trace) = ctx.guardrail_trace() {
        out["trace"] = json!({ "guardrail": trace });
    }
    out
}

/// Render a handler's outcome: the answer, or the error in the Bedrock dialect.
fn respond(result: Result<Response, Error>) -> Response {
    crate::errors::respond::<BedrockError>(result)
}

/// Read and parse a Converse / ConverseStream body. A prompt ARN as `modelId` runs that
/// prompt (its draft, or the version the ARN names) with `promptVariables`; the body's
/// messages follow the prompt's, and it may not set what the prompt sets.
async fn converse_request(
    state: &AppState,
    ctx: &CallContext,
    model_id: String,
    body: Result<Bytes, BytesRejection>,
    streaming: bool,
) -> Result<ChatRequest, Error> {
    let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
    let ParsedConverse {
        mut request,
        metadata,
        guardrail,
        prompt_variables,
        prompt_conflicts,
    } = parse_converse_full(model_id, &body, streaming)?;
    if modelgate_core::prompts::is_prompt_arn(&request.model) {
        if !prompt_conflicts.is_empty() {
            return Err(Error::validation(format!(
                "A Converse call that runs a prompt (modelId {}) cannot also set {}; the prompt sets them.",
                request.model,
                prompt_conflicts.join(", ")
            )));
        }
        let at = modelgate_core::prompts::parse_identifier(&request.model)?;
        let prompts = crate::prompts::prompts_of(state)?;
        // AWS's permission to run a managed prompt.
        if ctx.principal().is_some_and(|p| !p.grants.unrestricted) {
            crate::auth::admin_allowed(
                state,
                ctx,
                "bedrock:RenderPrompt",
                &prompts.arn(&at.id, None),
            )?;
        }
        let rendered = prompts
            .render_for(
                ctx,
                &at.id,
                at.version.unwrap_or(0),
                &prompt_variables.unwrap_or_default(),
                "converse",
            )
            .await?;
        if rendered.request.model.is_empty() {
            return Err(Error::validation(format!(
                "The prompt {} names no model (variants[0].modelId) to run on.",
                request.model
            )));
        }
        let extra = std::mem::take(&mut request.messages);
        request = rendered.request;
        request.messages.extend(extra);
    } else if prompt_variables.is_some() {
        return Err(Error::validation(
            "promptVariables apply only when modelId is a prompt ARN (arn:aws:bedrock:REGION:ACCOUNT:prompt/ID[:VERSION]).",
        ));
    }
    if let Some(g) = guardrail {
        if state.gateway.guardrails().is_none() {
            return Err(Error::validation(
                "This gateway has no guardrails configured; guardrailConfig cannot be honoured.",
            ));
        }
        ctx.set_guardrail(g);
    }
    if metadata.is_some() {
        let metadata = modelgate_core::routing::metadata_of(metadata.as_ref());
        let user = metadata.get("user").cloned();
        ctx.set_routing_body(metadata, user);
    }
    Ok(request)
}

/// `POST /model/{modelId}/converse`
pub async fn converse(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let request = converse_request(&state, &ctx, model_id, body, false).await?;
            let served = state.gateway.converse(&ctx, request).await?;
            Ok(Json(converse_json(&served.value, &ctx)).into_response())
        }
        .await,
    )
}

/// `POST /model/{modelId}/converse-stream`
pub async fn converse_stream(
    State(state): State<AppState>,
    Extension(ctx): Extension<CallContext>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let request = converse_request(&state, &ctx, model_id, body, true).await?;
            let events = state.gateway.converse_stream(&ctx, request).await?.value;
            // The guardrail trace rides on the metadata event.
            let trace_ctx = ctx.clone();
            let body = eventstream::body(
                eventstream::Operation::ConverseStream,
                events,
                move |event| {
                    let mut out = eventstream::converse_event(event);
                    if let (StreamEvent::Metadata { .. }, Some(trace)) =
                        (event, trace_ctx.guardrail_trace())
                    {
                        if let Some((_, payload)) = out.last_mut() {
                            payload["trace"] = json!({ "guardrail": trace });
                        }
                    }
                    out
                },
            );
            Ok(crate::streaming::response(
                eventstream::CONTENT_TYPE,
                &[],
                body,
            ))
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
    invoke_model: Option<InvokeModelTokens>,
}

/// botocore's `InvokeModelTokensRequest`: the InvokeModel body, base64-encoded (a blob).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeModelTokens {
    body: String,
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
    Extension(ctx): Extension<CallContext>,
    Path(model_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(|r| body_rejection(r, state.max_body_bytes))?;
        let wire: CountTokensBody = parse_aws_body(&body)?;
        let request = match (wire.input.converse, wire.input.invoke_model) {
            (Some(converse), None) => ChatRequest {
                model: model_id,
                system: converse.system.unwrap_or_default(),
                messages: converse.messages.unwrap_or_default(),
                inference: InferenceConfig::default(),
                tools: converse.tool_config,
                response_format: None,
                reasoning: None,
                generation: Default::default(),
                end_user: None,
                native: None,
            },
            (None, Some(invoke_model)) => {
                use base64::Engine as _;
                let body = base64::engine::general_purpose::STANDARD
                    .decode(invoke_model.body.as_bytes())
                    .map_err(|e| {
                        Error::validation(format!(
                            "input.invokeModel.body is not valid base64: {e}"
                        ))
                    })?;
                invoke::chat_request(&state, &model_id, &body)?
            }
            _ => {
                return Err(Error::validation(
                    "input must set exactly one of `converse` or `invokeModel`",
                ))
            }
        };
        let input_tokens = state.gateway.count_tokens(&ctx, request).await?;
        Ok(Json(json!({ "inputTokens": input_tokens })).into_response())
    }
    .await;
    respond(result)
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
        assert_eq!(r.system[0].text(), Some("be brief"));
    }

    #[test]
    fn reasoning_from_additional_model_request_fields() {
        let parse = |fields: Value| {
            let body = json!({
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                "additionalModelRequestFields": fields,
            });
            parse_converse("m".into(), body.to_string().as_bytes()).map(|r| r.reasoning)
        };
        let budget = |n| Ok(Some(Reasoning { budget_tokens: n }));
        assert_eq!(
            parse(json!({"thinking": {"type": "enabled", "budget_tokens": 3000}})),
            budget(3000)
        );
        assert_eq!(parse(json!({"thinking": {"type": "disabled"}})), Ok(None));
        assert_eq!(
            parse(json!({"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "high"}})),
            budget(4096)
        );
        assert_eq!(parse(json!({"top_k": 5})), Ok(None));
        let e = parse(json!({"thinking": {"type": "enabled", "budget_tokens": 5}})).unwrap_err();
        assert!(
            e.message.contains("additionalModelRequestFields.thinking"),
            "{}",
            e.message
        );
        assert!(parse(json!({"reasoningConfig": {"type": "on"}})).is_err());
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
    fn count_tokens_body_has_botocore_shape() {
        let ok: CountTokensBody = serde_json::from_value(json!({"input": {"converse": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "be brief"}]
        }}}))
        .unwrap();
        let converse = ok.input.converse.unwrap();
        assert_eq!(converse.messages.unwrap().len(), 1);
        assert_eq!(converse.system.unwrap()[0].text(), Some("be brief"));
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
            logprobs: None,
        };
        assert_eq!(
            converse_json(&r, &CallContext::internal()),
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "Paris"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
                "metrics": {"latencyMs": 12}
            })
        );
    }
}
