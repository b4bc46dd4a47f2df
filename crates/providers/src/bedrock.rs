//! AWS Bedrock Runtime as an upstream: Converse, ConverseStream (the AWS event stream decoded
//! with `aws-smithy-eventstream`), CountTokens, and InvokeModel for embeddings (Titan and
//! Cohere bodies). Every request is signed with SigV4 (`aws-sigv4`, service `bedrock`).
//!
//! The canonical types serialise to Converse JSON, so the request body is the canonical
//! request itself. Mapping decisions (also in `docs/providers.md`):
//! - JSON mode without a schema is refused; a JSON schema goes out as
//!   `outputConfig.textFormat`.
//! - The canonical reasoning budget goes out as
//!   `additionalModelRequestFields.thinking` (the form Claude models on Bedrock take).
//! - Content blocks Converse adds later than Modelgate knows (citations, …) make the answer
//!   unreadable and are reported as a model error rather than dropped silently.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as FrameHeaderValue, Message as Frame};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use modelgate_types::params::Wire;
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, ContentBlockStart, EmbedInput,
    EmbedRequest, EmbedResponse, Error, Message, ResponseFormat, Role, StopReason, StreamEvent,
    ToolChoice, ToolConfig, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{elapsed_ms, parse_error_body, path_segment, HttpSettings, Upstream};
use crate::{Capabilities, ChatStream, ModelKind, Provider};

/// AWS credentials for signing.
#[derive(Clone)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }

    /// A profile of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
    /// `~/.aws/credentials`): its `aws_access_key_id`, `aws_secret_access_key` and
    /// `aws_session_token`.
    pub fn from_profile(profile: &str) -> Result<Self, String> {
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
            })
            .ok_or("cannot locate the AWS shared credentials file")?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse_profile(&text, profile).ok_or_else(|| {
            format!(
                "profile '{profile}' in {} has no complete access key",
                path.display()
            )
        })
    }

    fn parse_profile(text: &str, profile: &str) -> Option<Self> {
        let mut in_profile = false;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let section = section.trim();
                in_profile = section == profile || section == format!("profile {profile}");
                continue;
            }
            if !in_profile {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = Some(v.trim().to_string());
                match k.trim() {
                    "aws_access_key_id" => id = v,
                    "aws_secret_access_key" => secret = v,
                    "aws_session_token" => token = v,
                    _ => {}
                }
            }
        }
        Some(Self {
            access_key_id: id?,
            secret_access_key: secret?,
            session_token: token,
        })
    }
}

/// One Bedrock Runtime endpoint (a region).
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// The provider's name in the configuration.
    pub name: String,
    /// AWS region the requests are signed for.
    pub region: String,
    /// Endpoint URL; `None` is `https://bedrock-runtime.{region}.amazonaws.com`.
    pub base_url: Option<String>,
    /// Signing credentials.
    pub credentials: AwsCredentials,
    /// Connection settings.
    pub http: HttpSettings,
}

/// The shared, signing connection to one Bedrock Runtime endpoint.
#[derive(Debug)]
pub struct BedrockEndpoint {
    upstream: Upstream,
    region: String,
    credentials: AwsCredentials,
}

impl BedrockEndpoint {
    /// Build the pooled client.
    pub fn new(config: BedrockConfig) -> Result<Arc<Self>, Error> {
        let base_url = config
            .base_url
            .unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", config.region));
        Ok(Arc::new(Self {
            upstream: Upstream::new(&config.name, &base_url, &config.http, vec![])?,
            region: config.region,
            credentials: config.credentials,
        }))
    }

    /// POST `body` to `/model/{model}/{operation}`, signed.
    async fn post(
        &self,
        model: &str,
        operation: &str,
        body: &Value,
        accept: &str,
    ) -> Result<reqwest::Response, Error> {
        let url = self
            .upstream
            .url(&format!("/model/{}/{operation}", path_segment(model)));
        self.post_url(url, body, accept).await
    }

    /// `ApplyGuardrail` on this endpoint (`POST /guardrail/{id}/version/{version}/apply`,
    /// signed): the answer's JSON as AWS gives it.
    pub async fn apply_guardrail(
        &self,
        identifier: &str,
        version: &str,
        body: &Value,
    ) -> Result<Value, Error> {
        let url = self.upstream.url(&format!(
            "/guardrail/{}/version/{}/apply",
            path_segment(identifier),
            path_segment(version)
        ));
        let response = self.post_url(url, body, "application/json").await?;
        self.upstream.json(response).await
    }

    /// POST `body` to `url`, signed.
    async fn post_url(
        &self,
        url: String,
        body: &Value,
        accept: &str,
    ) -> Result<reqwest::Response, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?;
        let headers = self.sign(&url, &body, accept)?;
        let mut request = self.upstream.post(&url, body).header("accept", accept);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.upstream.send(request, parse_error_body).await
    }

    /// The SigV4 headers (authorization, x-amz-date, session token) for a POST of `body`.
    fn sign(&self, url: &str, body: &[u8], accept: &str) -> Result<Vec<(String, String)>, Error> {
        let failed =
            |e: &dyn std::fmt::Display| Error::internal(format!("SigV4 signing failed: {e}"));
        let identity = Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            self.credentials.session_token.clone(),
            None,
            "modelgate",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            [("content-type", "application/json"), ("accept", accept)].into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }
}

/// One model served by Bedrock.
#[derive(Debug)]
pub struct Bedrock {
    endpoint: Arc<BedrockEndpoint>,
    model: String,
    kind: ModelKind,
}

impl Bedrock {
    /// `model` is Bedrock's model id or inference profile id.
    pub fn new(endpoint: Arc<BedrockEndpoint>, model: String, kind: ModelKind) -> Self {
        Self {
            endpoint,
            model,
            kind,
        }
    }
}

#[async_trait]
impl Provider for Bedrock {
    fn system(&self) -> &'static str {
        "aws.bedrock"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::upstream(self.kind).speaking(Wire::Bedrock)
    }

    /// Bedrock Runtime has no read-only operation to probe, so the check is that the regional
    /// endpoint answers HTTP at all (an unsigned `GET /`; any status but 5xx passes).
    async fn health_check(&self) -> Result<(), Error> {
        let upstream = &self.endpoint.upstream;
        let request = upstream.get(&upstream.url("/"));
        match upstream.probe(request).await {
            Err(e) if e.kind == modelgate_types::ErrorKind::AccessDenied => Ok(()),
            other => other,
        }
    }

    async fn converse(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let start = Instant::now();
        let body = converse_body(&request)?;
        let response = self
            .endpoint
            .post(&self.model, "converse", &body, "application/json")
            .await?;
        let wire: ConverseResponse = self.endpoint.upstream.json(response).await?;
        Ok(ChatResponse {
            model: request.model,
            message: wire.output.message,
            stop_reason: stop_reason(&wire.stop_reason),
            usage: wire.usage.canonical(),
            latency_ms: wire
                .metrics
                .map_or_else(|| elapsed_ms(start), |m| m.latency_ms),
            logprobs: None,
        })
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        let body = converse_body(&request)?;
        let response = self
            .endpoint
            .post(
                &self.model,
                "converse-stream",
                &body,
                "application/vnd.amazon.eventstream",
            )
            .await?;
        let endpoint = Arc::clone(&self.endpoint);
        let mut chunks = endpoint.upstream.bytes(response);
        let stream: ChatStream = Box::pin(async_stream::try_stream! {
            let upstream = &endpoint.upstream;
            let mut decoder = MessageFrameDecoder::new();
            let mut buffer = BytesMut::new();
            let mut done = false;
            let max_frame = upstream.max_event_bytes();
            while let Some(chunk) = chunks.next().await {
                buffer.extend_from_slice(&chunk?);
                loop {
                    match decoder.decode_frame(&mut buffer) {
                        Ok(DecodedFrame::Complete(frame)) => {
                            let (events, finished) = frame_events(upstream, &frame)?;
                            done |= finished;
                            for e in events {
                                yield e;
                            }
                        }
                        Ok(DecodedFrame::Incomplete) => break,
                        Err(e) => Err(upstream.malformed(&e))?,
                    }
                }
                // What is left is one incomplete frame: it may not outgrow the limit (plus the
                // 16 bytes of a frame's prelude and checksum).
                if buffer.len() > max_frame + 16 {
                    Err(upstream.too_large("single event", max_frame, "max_event_bytes"))?;
                }
                if done {
                    break;
                }
            }
            if !done || buffer.has_remaining() {
                Err(upstream.cut_short())?;
            }
        });
        Ok(crate::renumber(stream))
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        let EmbedInput::Texts(texts) = &request.input;
        let endpoint = &self.endpoint;
        let upstream = &endpoint.upstream;
        if self.model.starts_with("cohere.") || self.model.contains(".cohere.") {
            let body = json!({"texts": texts, "input_type": "search_document"});
            let response = endpoint
                .post(&self.model, "invoke", &body, "application/json")
                .await?;
            let wire: CohereEmbeddings = upstream.json(response).await?;
            if wire.embeddings.len() != texts.len() {
                return Err(upstream.malformed(&"the number of vectors differs from the inputs"));
            }
            return Ok(EmbedResponse {
                model: request.model,
                vectors: wire.embeddings,
                input_tokens: 0,
            });
        }
        // Titan embeddings take one text per call; the calls run concurrently.
        let calls = texts.iter().map(|text| async move {
            let response = endpoint
                .post(
                    &self.model,
                    "invoke",
                    &json!({"inputText": text}),
                    "application/json",
                )
                .await?;
            upstream.json::<TitanEmbedding>(response).await
        });
        let answers = futures::future::try_join_all(calls).await?;
        Ok(EmbedResponse {
            model: request.model,
            input_tokens: answers.iter().map(|a| a.input_text_token_count).sum(),
            vectors: answers.into_iter().map(|a| a.embedding).collect(),
        })
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        let mut converse = converse_body(request)?;
        if let Some(map) = converse.as_object_mut() {
            map.remove("inferenceConfig");
            map.remove("outputConfig");
        }
        let response = self
            .endpoint
            .post(
                &self.model,
                "count-tokens",
                &json!({"input": {"converse": converse}}),
                "application/json",
            )
            .await?;
        let wire: CountTokens = self.endpoint.upstream.json(response).await?;
        Ok(wire.input_tokens)
    }
}

/// The Converse body: the canonical request's own serialisation.
fn converse_body(request: &ChatRequest) -> Result<Value, Error> {
    let ChatRequest {
        model: _,
        system,
        messages,
        inference,
        tools,
        response_format,
        reasoning,
        // Seeds, penalties and `parallel_tool_calls: false` are taken off before the call and
        // named in `x-modelgate-dropped-params`; log-probabilities and logit bias are refused
        // (`Capabilities::fit`).
        generation,
        end_user,
        native,
    } = request;
    let messages = crate::user_first(messages);
    let mut body = json!({"messages": messages, "inferenceConfig": inference});
    if !system.is_empty() {
        body["system"] = json!(system);
    }
    // Model-specific settings go in `additionalModelRequestFields`, in the form Claude models
    // take (`thinking`, `top_k`; Mistral's `top_k` too).
    let mut additional = serde_json::Map::new();
    if let Some(r) = reasoning {
        additional.insert("thinking".into(), r.thinking_json());
    }
    if let Some(k) = generation.top_k {
        additional.insert("top_k".into(), json!(k));
    }
    if !additional.is_empty() {
        body["additionalModelRequestFields"] = Value::Object(additional);
    }
    // Converse's own place for who the call is for (`Capabilities::fit` drops a value
    // `requestMetadata` cannot hold).
    if let Some(user) = end_user {
        body["requestMetadata"] = json!({"user": user});
    }
    match tools {
        // Converse has no "no tool" choice. Without tool blocks in the conversation the tools
        // are simply not offered; with them, Bedrock needs the tool configuration, and it
        // could not be kept from calling a tool, so the request is refused, not changed.
        Some(ToolConfig {
            tool_choice: Some(ToolChoice::None),
            ..
        }) => {
            let has_tool_blocks = messages
                .iter()
                .flat_map(|m| &m.content)
                .any(|b| matches!(b, ContentBlock::ToolUse(_) | ContentBlock::ToolResult(_)));
            if has_tool_blocks {
                return Err(Error::validation(
                    "tool_choice 'none' cannot be honoured by a Bedrock model in a conversation that already holds tool calls: Converse has no such setting.",
                ));
            }
        }
        Some(tools) => body["toolConfig"] = json!(tools),
        None => {}
    }
    match response_format {
        None => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(Error::validation(
                "JSON mode without a schema cannot be sent to a Bedrock upstream (use a JSON schema response format).",
            ))
        }
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict: _,
        }) => {
            let mut definition = json!({"schema": schema.to_string(), "name": name});
            if let Some(d) = description {
                definition["description"] = json!(d);
            }
            body["outputConfig"] = json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}});
        }
    }
    // The caller's own Converse parameters (`additionalModelRequestFields`, `serviceTier`,
    // `performanceConfig`, …), unchanged.
    if let Some(native) = native.as_ref().filter(|n| n.wire == Wire::Bedrock) {
        native.merge_into(&mut body);
    }
    Ok(body)
}

/// Whether `value` fits a Converse `requestMetadata` value: 1–256 characters of letters,
/// digits, white space and `:_@$#=/+,-.`.
pub(crate) fn metadata_value_fits(value: &str) -> bool {
    (1..=256).contains(&value.chars().count())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || ":_@$#=/+,-.".contains(c))
}

fn stop_reason(reason: &str) -> StopReason {
    serde_json::from_value(Value::String(reason.to_string())).unwrap_or(StopReason::EndTurn)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    stop_reason: String,
    #[serde(default)]
    usage: WireUsage,
    #[serde(default)]
    metrics: Option<Metrics>,
}

#[derive(Deserialize)]
struct ConverseOutput {
    message: Message,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    latency_ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
    #[serde(default)]
    cache_write_input_tokens: u32,
}

impl WireUsage {
    fn canonical(&self) -> Usage {
        Usage::new(self.input_tokens, self.output_tokens)
            .with_cache(self.cache_read_input_tokens, self.cache_write_input_tokens)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountTokens {
    input_tokens: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanEmbedding {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: u32,
}

#[derive(Deserialize)]
struct CohereEmbeddings {
    embeddings: Vec<Vec<f32>>,
}

fn frame_header<'a>(frame: &'a Frame, name: &str) -> Option<&'a str> {
    frame
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            FrameHeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// The canonical events of one event-stream message, and whether it was the last one.
fn frame_events(upstream: &Upstream, frame: &Frame) -> Result<(Vec<StreamEvent>, bool), Error> {
    let payload: Value = if frame.payload().is_empty() {
        json!({})
    } else {
        serde_json::from_slice(frame.payload()).map_err(|e| upstream.malformed(&e))?
    };
    match frame_header(frame, ":message-type") {
        Some("event") => {}
        Some("exception") => {
            let message = payload
                .get("message")
                .or_else(|| payload.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            let status = match frame_header(frame, ":exception-type") {
                Some("throttlingException") => 429,
                Some("validationException") => 400,
                Some("modelStreamErrorException") => 424,
                Some("modelTimeoutException") => 408,
                Some("serviceUnavailableException") => 503,
                _ => 500,
            };
            return Err(upstream.status_error(status, message, None, None));
        }
        _ => {
            let message = frame_header(frame, ":error-message").unwrap_or("unknown error");
            return Err(upstream.status_error(500, message, None, None));
        }
    }
    let index = || {
        payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0)
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let events = match frame_header(frame, ":event-type") {
        Some("messageStart") => vec![StreamEvent::MessageStart {
            role: Role::Assistant,
            input_tokens: None,
        }],
        Some("contentBlockStart") => match payload.pointer("/start/toolUse") {
            Some(tool) => vec![StreamEvent::ContentBlockStart {
                index: index(),
                start: ContentBlockStart::ToolUse {
                    tool_use_id: text(tool.get("toolUseId")).unwrap_or_default(),
                    name: text(tool.get("name")).unwrap_or_default(),
                },
            }],
            None => vec![],
        },
        Some("contentBlockDelta") => {
            let delta = payload.get("delta");
            let mapped = if let Some(t) = text(delta.and_then(|d| d.get("text"))) {
                Some(ContentBlockDelta::Text(t))
            } else if let Some(t) = text(delta.and_then(|d| d.pointer("/toolUse/input"))) {
                Some(ContentBlockDelta::ToolUseInput(t))
            } else if let Some(r) = delta.and_then(|d| d.get("reasoningContent")) {
                if let Some(t) = text(r.get("text")) {
                    Some(ContentBlockDelta::ReasoningText(t))
                } else if let Some(s) = text(r.get("signature")) {
                    Some(ContentBlockDelta::ReasoningSignature(s))
                } else {
                    text(r.get("redactedContent")).map(ContentBlockDelta::RedactedReasoning)
                }
            } else {
                None
            };
            mapped
                .into_iter()
                .map(|delta| StreamEvent::ContentBlockDelta {
                    index: index(),
                    delta,
                })
                .collect()
        }
        Some("contentBlockStop") => vec![StreamEvent::ContentBlockStop { index: index() }],
        Some("messageStop") => vec![StreamEvent::MessageStop {
            stop_reason: stop_reason(
                payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn"),
            ),
        }],
        Some("metadata") => {
            let usage: WireUsage = payload
                .get("usage")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| upstream.malformed(&e))?
                .unwrap_or_default();
            let latency_ms = payload
                .pointer("/metrics/latencyMs")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            return Ok((
                vec![StreamEvent::Metadata {
                    usage: usage.canonical(),
                    latency_ms,
                }],
                true,
            ));
        }
        _ => vec![],
    };
    Ok((events, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_the_shared_credentials_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[profile dev]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n";
        let c = AwsCredentials::parse_profile(text, "dev").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("C", Some("E"))
        );
        assert_eq!(
            AwsCredentials::parse_profile(text, "default")
                .unwrap()
                .secret_access_key,
            "B"
        );
        assert!(AwsCredentials::parse_profile(text, "nope").is_none());
        assert!(!format!("{c:?}").contains('D'));
    }

    #[test]
    fn converse_body_is_the_canonical_request() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "hi")],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "r".into(),
                description: None,
                schema: json!({"type": "object"}),
                strict: true,
            }),
            ..Default::default()
        };
        let body = converse_body(&request).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"text": "hi"}]}])
        );
        assert_eq!(
            body.pointer("/outputConfig/textFormat/structure/jsonSchema/schema"),
            Some(&json!("{\"type\":\"object\"}"))
        );
        assert!(body.get("system").is_none());
    }

    #[test]
    fn a_conversation_that_starts_with_the_assistant_gets_a_user_turn_first() {
        let request = crate::assistant_first_request();
        let body = converse_body(&request).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "."}]},
                {"role": "assistant", "content": [{"text": "How can I help?"}]},
                {"role": "user", "content": [{"text": "hi"}]}
            ])
        );
    }

    #[test]
    fn sampling_settings_and_native_fields_in_converse_form() {
        use modelgate_types::params::{Native, NativeParam, Wire};
        let native = Native::new(
            Wire::Bedrock,
            vec![
                NativeParam::under(
                    "additionalModelRequestFields",
                    "anthropic_beta",
                    json!(["b"]),
                ),
                NativeParam::top("serviceTier", json!({"type": "priority"})),
            ],
        );
        let body = converse_body(&crate::sampling_request(native)).unwrap();
        assert_eq!(
            body["additionalModelRequestFields"],
            json!({"top_k": 5, "anthropic_beta": ["b"]})
        );
        assert_eq!(body["serviceTier"], json!({"type": "priority"}));
        assert_eq!(body["requestMetadata"], json!({"user": "u-1"}));
        // Another dialect's parameters never reach a Bedrock body.
        let foreign = Native::new(Wire::OpenAi, vec![NativeParam::top("store", json!(true))]);
        let body = converse_body(&crate::sampling_request(foreign)).unwrap();
        assert!(body.get("store").is_none());
        assert!(metadata_value_fits("user-1 @ team:a"));
        assert!(!metadata_value_fits("Bob <bob@example.com>") && !metadata_value_fits(""));
    }
}
