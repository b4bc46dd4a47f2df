//! The [`Provider`] trait and one module per provider.
//!
//! A provider turns canonical requests into calls to one model runtime or upstream API and
//! answers in canonical types. Wire types stay private to each provider module; a module exports
//! its config and its provider struct, nothing else.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use modelgate_types::params::{Fate, Wire};
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, ContentBlockDelta, EmbedRequest, EmbedResponse, Error,
    Message, Role, StopReason, StreamEvent, Usage,
};

pub mod anthropic;
pub mod bedrock;
mod constrain;
mod http;
pub mod local_embed;
pub mod local_llama;
pub mod openai;
mod stop;

pub use http::with_traceparent;

pub use anthropic::{Anthropic, AnthropicConfig, AnthropicEndpoint};
pub use bedrock::{AwsCredentials, Bedrock, BedrockConfig, BedrockEndpoint};
pub use http::{
    HttpSettings, DEFAULT_MAX_ERROR_BODY_BYTES, DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_POOL_MAX_IDLE_PER_HOST,
};
pub use local_embed::{LocalEmbedder, LocalEmbedderConfig, LocalEmbedderSettings};
pub use local_llama::{LocalLlama, LocalLlamaConfig, LocalLlamaSettings};
pub use openai::{OpenAi, OpenAiConfig, OpenAiEndpoint};

/// What an upstream model does: answer chats or embed texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Chat / Converse.
    Chat,
    /// Embeddings.
    Embedding,
}

/// A stream of canonical events; an `Err` item ends the stream with an error.
pub type ChatStream = BoxStream<'static, Result<StreamEvent, Error>>;

/// What a provider can do, so the pipeline can reject a request before calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Serves chat / Converse requests.
    pub chat: bool,
    /// Serves embedding requests.
    pub embeddings: bool,
    /// Understands tool definitions and tool-use blocks.
    pub tools: bool,
    /// Understands image blocks.
    pub images: bool,
    /// Honours a response format (JSON mode or a JSON schema).
    pub json_output: bool,
    /// Returns token log-probabilities when asked.
    pub logprobs: bool,
    /// Honours a sampling seed (without it, a seed is dropped and the answer says so).
    pub seed: bool,
    /// Honours OpenAI's sampling controls: frequency and presence penalties (dropped and
    /// named without it) and logit bias (refused without it).
    pub penalties: bool,
    /// The dialect the provider speaks upstream: a request's native parameters of that
    /// dialect are forwarded to it. `None` for the embedded models.
    pub wire: Option<Wire>,
}

impl Capabilities {
    /// What a model of an upstream API does: chat models take tools, images and response
    /// formats; embedding models only embed.
    pub fn upstream(kind: ModelKind) -> Self {
        let chat = kind == ModelKind::Chat;
        Self {
            chat,
            embeddings: !chat,
            tools: chat,
            images: chat,
            json_output: chat,
            logprobs: false,
            seed: false,
            penalties: false,
            wire: None,
        }
    }

    /// The same, for an upstream that speaks `wire`. OpenAI-compatible chat upstreams also
    /// take `logprobs`, `seed`, penalties and logit bias.
    pub fn speaking(mut self, wire: Wire) -> Self {
        self.wire = Some(wire);
        if wire == Wire::OpenAi {
            self.logprobs = self.chat;
            self.seed = self.chat;
            self.penalties = self.chat;
        }
        self
    }

    /// What `request` must lose before it goes to this provider, or why it cannot go at all.
    /// Refusals come first, so a refused request is never half-adapted; see
    /// `docs/front-doors.md` for the table this implements.
    pub fn fit(&self, request: &ChatRequest) -> Result<Fit, Error> {
        let model = &request.model;
        let generation = &request.generation;
        if !self.logprobs && generation.logprobs.is_some() {
            return Err(Error::validation(format!(
                "The model '{model}' does not return log-probabilities (logprobs); its provider has no such output."
            )));
        }
        if !self.penalties
            && generation
                .logit_bias
                .as_ref()
                .is_some_and(|b| !b.is_empty())
        {
            return Err(Error::validation(format!(
                "The model '{model}' cannot take logit_bias: its provider has no such control (token ids are model-specific)."
            )));
        }
        let mut fit = Fit::default();
        if let Some(native) = &request.native {
            if self.wire != Some(native.wire) {
                for param in &native.params {
                    match native.foreign_fate(param) {
                        Fate::Dropped => fit.native_dropped.push(param.path()),
                        Fate::Kept => {}
                        Fate::Refused(why) => {
                            return Err(Error::validation(why).with_code("unsupported_parameter"))
                        }
                    }
                }
                fit.strip_native = true;
            }
        }
        let on_bedrock = self.wire == Some(Wire::Bedrock);
        let unsent = [
            (Unsent::Seed, !self.seed && generation.seed.is_some()),
            (
                Unsent::FrequencyPenalty,
                !self.penalties && generation.frequency_penalty.is_some(),
            ),
            (
                Unsent::PresencePenalty,
                !self.penalties && generation.presence_penalty.is_some(),
            ),
            // Converse has no switch for parallel tool calls: asking for none cannot be kept.
            (
                Unsent::ParallelToolCalls,
                on_bedrock && generation.parallel_tool_calls == Some(false),
            ),
            (
                Unsent::EndUser,
                on_bedrock
                    && request
                        .end_user
                        .as_deref()
                        .is_some_and(|u| !bedrock::metadata_value_fits(u)),
            ),
        ];
        fit.unsent = unsent
            .into_iter()
            .filter_map(|(u, drop)| drop.then_some(u))
            .collect();
        Ok(fit)
    }
}

/// A canonical setting a provider cannot take: left out, and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsent {
    Seed,
    FrequencyPenalty,
    PresencePenalty,
    ParallelToolCalls,
    EndUser,
}

impl Unsent {
    /// The name the OpenAI dialect gives it (`x-modelgate-dropped-params`).
    fn name(self) -> &'static str {
        match self {
            Unsent::Seed => "seed",
            Unsent::FrequencyPenalty => "frequency_penalty",
            Unsent::PresencePenalty => "presence_penalty",
            Unsent::ParallelToolCalls => "parallel_tool_calls",
            Unsent::EndUser => "user",
        }
    }

    fn clear(self, request: &mut ChatRequest) {
        let generation = &mut request.generation;
        match self {
            Unsent::Seed => generation.seed = None,
            Unsent::FrequencyPenalty => generation.frequency_penalty = None,
            Unsent::PresencePenalty => generation.presence_penalty = None,
            Unsent::ParallelToolCalls => generation.parallel_tool_calls = None,
            Unsent::EndUser => request.end_user = None,
        }
    }
}

/// What [`Capabilities::fit`] takes out of a request: canonical settings the provider cannot
/// take, and native parameters of another dialect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    /// Native parameters left out that the answer names (the others are the gateway's own).
    native_dropped: Vec<String>,
    /// Canonical settings left out.
    unsent: Vec<Unsent>,
    /// The request's native parameters cannot be sent (another dialect's).
    strip_native: bool,
}

impl Fit {
    /// Whether the request goes as it is.
    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty() && !self.strip_native
    }

    /// The parameters left out, as the caller named them (`x-modelgate-dropped-params`).
    pub fn dropped(&self) -> Vec<String> {
        let canonical = self.unsent.iter().map(|u| u.name().to_string());
        self.native_dropped
            .iter()
            .cloned()
            .chain(canonical)
            .collect()
    }

    /// Take out of `request` what this provider cannot take.
    pub fn apply(&self, request: &mut ChatRequest) {
        if self.strip_native {
            request.native = None;
        }
        for u in &self.unsent {
            u.clear(request);
        }
    }
}

/// How busy an in-process engine is (for metrics and `/admin/endpoints`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Load {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slots generating now.
    pub active: usize,
    /// Slots in all (requests generated together).
    pub slots: usize,
}

/// One model runtime or upstream API.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// What this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// The kind of model service, as OpenTelemetry's `gen_ai.system` names it (`openai`,
    /// `anthropic`, `aws.bedrock`); `modelgate` for the embedded models.
    fn system(&self) -> &'static str {
        "modelgate"
    }

    /// How busy the provider's own engine is; `None` for upstream APIs.
    fn load(&self) -> Option<Load> {
        None
    }

    /// Whether the provider can take requests now (models loaded, upstream reachable).
    fn is_ready(&self) -> bool {
        true
    }

    /// The active health check: whether the model's runtime or upstream answers. The default
    /// reports [`Provider::is_ready`].
    async fn health_check(&self) -> Result<(), Error> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(Error::new(
                modelgate_types::ErrorKind::ServiceUnavailable,
                "The model is not ready.",
            ))
        }
    }

    /// Stream an answer as canonical events.
    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error>;

    /// Answer in one piece. The default collects [`Provider::converse_stream`].
    async fn converse(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let model = request.model.clone();
        let stream = self.converse_stream(request).await?;
        collect_stream(model, stream).await
    }

    /// Embed texts.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        Err(Error::validation(format!(
            "The model '{}' does not support embeddings.",
            request.model
        )))
    }

    /// Count the input tokens `request` would use, with the model's own tokenizer.
    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error>;
}

/// The most content blocks one answer may have. An upstream that numbers more is refused: the
/// blocks of an answer are held in memory while it is folded or renumbered.
pub const MAX_CONTENT_BLOCKS: usize = 1024;

fn too_many_blocks() -> Error {
    Error::new(
        modelgate_types::ErrorKind::ModelError,
        format!("The model's answer has more than {MAX_CONTENT_BLOCKS} content blocks."),
    )
}

/// Renumber a stream's content-block indices densely from 0, in the order they first appear,
/// and refuse more than [`MAX_CONTENT_BLOCKS`] of them. Upstream providers pass their streams
/// through this, so an index such as `4294967295` never reaches anything that sizes a buffer
/// by it.
/// The text of the user turn put before a conversation that starts with the assistant, for
/// APIs that need a user turn first (Anthropic, Bedrock Converse).
pub const USER_FIRST_PLACEHOLDER: &str = ".";

/// `messages` as APIs that need a user turn first accept them: unchanged, or — when the
/// conversation starts with the assistant (which the OpenAI API accepts) — after a one-character
/// user turn.
pub(crate) fn user_first(
    messages: &[modelgate_types::Message],
) -> std::borrow::Cow<'_, [modelgate_types::Message]> {
    match messages.first() {
        Some(m) if m.role == modelgate_types::Role::Assistant => {
            let mut v = Vec::with_capacity(messages.len() + 1);
            v.push(modelgate_types::Message::text(
                modelgate_types::Role::User,
                USER_FIRST_PLACEHOLDER,
            ));
            v.extend_from_slice(messages);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(messages),
    }
}

/// A conversation that starts with the assistant (for the providers' tests of `user_first`).
#[cfg(test)]
pub(crate) fn assistant_first_request() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![
            modelgate_types::Message::text(modelgate_types::Role::Assistant, "How can I help?"),
            modelgate_types::Message::text(modelgate_types::Role::User, "hi"),
        ],
        ..Default::default()
    }
}

pub(crate) fn renumber(stream: ChatStream) -> ChatStream {
    let mut numbers: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    stream
        .map(move |item| {
            let mut event = item?;
            let index = match &mut event {
                StreamEvent::ContentBlockStart { index, .. }
                | StreamEvent::ContentBlockDelta { index, .. }
                | StreamEvent::Logprobs { index, .. }
                | StreamEvent::ContentBlockStop { index } => index,
                StreamEvent::MessageStart { .. }
                | StreamEvent::MessageStop { .. }
                | StreamEvent::Metadata { .. } => return Ok(event),
            };
            let next = numbers.len();
            *index = match numbers.get(index) {
                Some(n) => *n,
                None if next >= MAX_CONTENT_BLOCKS => return Err(too_many_blocks()),
                None => {
                    let n = u32::try_from(next).map_err(|_| too_many_blocks())?;
                    numbers.insert(*index, n);
                    n
                }
            };
            Ok(event)
        })
        .boxed()
}

/// Fold a canonical event stream into one response.
///
/// Text deltas are concatenated per block; tool-use input fragments are joined and parsed as
/// JSON when the block stops. Blocks keep the order of their indices; at most
/// [`MAX_CONTENT_BLOCKS`] are taken. An `Err` item is returned as the error.
pub async fn collect_stream(model: String, mut stream: ChatStream) -> Result<ChatResponse, Error> {
    #[derive(Default)]
    struct Block {
        text: String,
        tool: Option<(String, String)>,
        input: String,
        reasoning: String,
        signature: Option<String>,
        redacted: Option<String>,
    }
    // Blocks by index: sparse indices cost one entry each, never a gap.
    let mut blocks: std::collections::BTreeMap<u32, Block> = std::collections::BTreeMap::new();
    let mut stop_reason = StopReason::EndTurn;
    let mut usage = Usage::default();
    let mut latency_ms = 0;
    let mut logprobs: Option<Vec<modelgate_types::TokenLogprob>> = None;
    fn block(
        blocks: &mut std::collections::BTreeMap<u32, Block>,
        index: u32,
    ) -> Result<&mut Block, Error> {
        if blocks.len() >= MAX_CONTENT_BLOCKS && !blocks.contains_key(&index) {
            return Err(too_many_blocks());
        }
        Ok(blocks.entry(index).or_default())
    }
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::MessageStart { .. } | StreamEvent::ContentBlockStop { .. } => {}
            StreamEvent::ContentBlockStart { index, start } => {
                let modelgate_types::ContentBlockStart::ToolUse { tool_use_id, name } = start;
                block(&mut blocks, index)?.tool = Some((tool_use_id, name));
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let b = block(&mut blocks, index)?;
                match delta {
                    ContentBlockDelta::Text(t) => b.text.push_str(&t),
                    ContentBlockDelta::ToolUseInput(t) => b.input.push_str(&t),
                    ContentBlockDelta::ReasoningText(t) => b.reasoning.push_str(&t),
                    ContentBlockDelta::ReasoningSignature(s) => {
                        b.signature.get_or_insert_with(String::new).push_str(&s)
                    }
                    ContentBlockDelta::RedactedReasoning(d) => {
                        b.redacted.get_or_insert_with(String::new).push_str(&d)
                    }
                }
            }
            StreamEvent::MessageStop { stop_reason: s } => stop_reason = s,
            StreamEvent::Logprobs { tokens, .. } => {
                logprobs.get_or_insert_with(Vec::new).extend(tokens)
            }
            StreamEvent::Metadata {
                usage: u,
                latency_ms: l,
            } => {
                usage = u;
                latency_ms = l;
            }
        }
    }
    let mut content = Vec::with_capacity(blocks.len());
    for b in blocks.into_values() {
        if let Some((tool_use_id, name)) = b.tool {
            let input = if b.input.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_str(&b.input).map_err(|e| {
                    Error::new(
                        modelgate_types::ErrorKind::ModelError,
                        format!("The model produced tool input that is not valid JSON: {e}"),
                    )
                })?
            };
            content.push(ContentBlock::ToolUse(modelgate_types::ToolUseBlock {
                tool_use_id,
                name,
                input,
            }));
        } else if let Some(data) = b.redacted {
            content.push(ContentBlock::ReasoningContent(
                modelgate_types::ReasoningBlock::RedactedContent(data),
            ));
        } else if !b.reasoning.is_empty() || b.signature.is_some() {
            content.push(ContentBlock::ReasoningContent(
                modelgate_types::ReasoningBlock::ReasoningText {
                    text: b.reasoning,
                    signature: b.signature,
                },
            ));
        } else {
            content.push(ContentBlock::Text(b.text));
        }
    }
    if content.is_empty() {
        content.push(ContentBlock::Text(String::new()));
    }
    Ok(ChatResponse {
        model,
        message: Message {
            role: Role::Assistant,
            content,
        },
        stop_reason,
        usage,
        latency_ms,
        logprobs,
    })
}

/// The stream events that replay a whole answer: each text, reasoning and tool-use block as
/// one delta, then the stop reason and usage. Used where an answer already exists (a cached
/// answer, a configured static answer) but the caller asked for a stream.
pub fn response_events(response: &ChatResponse) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::MessageStart {
        role: Role::Assistant,
        input_tokens: Some(response.usage.input_tokens),
    }];
    let mut index = 0u32;
    // A stored answer's log-probabilities go before its (first) text block.
    let mut logprobs = response.logprobs.clone();
    for block in &response.message.content {
        let delta = match block {
            ContentBlock::Text(t) => {
                if let Some(tokens) = logprobs.take() {
                    events.push(StreamEvent::Logprobs { index, tokens });
                }
                ContentBlockDelta::Text(t.clone())
            }
            ContentBlock::ReasoningContent(modelgate_types::ReasoningBlock::ReasoningText {
                text,
                signature,
            }) => {
                if let Some(signature) = signature {
                    events.push(StreamEvent::ContentBlockDelta {
                        index,
                        delta: ContentBlockDelta::ReasoningText(text.clone()),
                    });
                    ContentBlockDelta::ReasoningSignature(signature.clone())
                } else {
                    ContentBlockDelta::ReasoningText(text.clone())
                }
            }
            ContentBlock::ReasoningContent(modelgate_types::ReasoningBlock::RedactedContent(
                data,
            )) => ContentBlockDelta::RedactedReasoning(data.clone()),
            ContentBlock::ToolUse(t) => {
                events.push(StreamEvent::ContentBlockStart {
                    index,
                    start: modelgate_types::ContentBlockStart::ToolUse {
                        tool_use_id: t.tool_use_id.clone(),
                        name: t.name.clone(),
                    },
                });
                ContentBlockDelta::ToolUseInput(t.input.to_string())
            }
            _ => continue,
        };
        events.push(StreamEvent::ContentBlockDelta { index, delta });
        events.push(StreamEvent::ContentBlockStop { index });
        index += 1;
    }
    events.push(StreamEvent::MessageStop {
        stop_reason: response.stop_reason,
    });
    events.push(StreamEvent::Metadata {
        usage: response.usage,
        latency_ms: response.latency_ms,
    });
    events
}

/// A request with every canonical sampling setting and `native` parameters (provider tests).
#[cfg(test)]
pub(crate) fn sampling_request(native: Option<modelgate_types::params::Native>) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![modelgate_types::Message::text(Role::User, "hi")],
        tools: Some(modelgate_types::ToolConfig {
            tools: vec![modelgate_types::Tool::ToolSpec(modelgate_types::ToolSpec {
                name: "get".into(),
                description: None,
                input_schema: serde_json::json!({"json": {"type": "object"}}),
            })],
            tool_choice: None,
        }),
        generation: modelgate_types::Generation {
            seed: Some(1),
            top_k: Some(5),
            frequency_penalty: Some(0.5),
            presence_penalty: Some(0.25),
            parallel_tool_calls: Some(false),
            ..Default::default()
        },
        end_user: Some("u-1".into()),
        native,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::params::{Native, NativeParam};
    use modelgate_types::ContentBlockStart;
    use serde_json::json;

    fn caps(wire: Option<Wire>) -> Capabilities {
        match wire {
            Some(w) => Capabilities::upstream(ModelKind::Chat).speaking(w),
            None => Capabilities {
                logprobs: true,
                seed: true,
                penalties: true,
                ..Capabilities::upstream(ModelKind::Chat)
            },
        }
    }

    #[test]
    fn fit_drops_maps_and_refuses_per_wire() {
        let native = Native::new(
            Wire::OpenAi,
            vec![
                NativeParam::top("store", json!(true)),
                NativeParam::top("metadata", json!({})),
            ],
        );
        let request = sampling_request(native);
        // The same dialect takes everything as it is.
        assert!(caps(Some(Wire::OpenAi)).fit(&request).unwrap().is_empty());
        // Anthropic: no seed or penalties; `store` is OpenAI's own; metadata stays here.
        let fit = caps(Some(Wire::Anthropic)).fit(&request).unwrap();
        assert_eq!(
            fit.dropped(),
            ["store", "seed", "frequency_penalty", "presence_penalty"]
        );
        assert!(fit.strip_native);
        let mut adapted = request.clone();
        fit.apply(&mut adapted);
        assert_eq!(adapted.native, None);
        assert_eq!(adapted.generation.seed, None);
        assert_eq!(adapted.generation.presence_penalty, None);
        assert_eq!(
            adapted.generation.top_k,
            Some(5),
            "top_k maps, it is not dropped"
        );
        assert_eq!(adapted.end_user.as_deref(), Some("u-1"));
        // Bedrock: no switch for parallel tool calls either.
        let fit = caps(Some(Wire::Bedrock)).fit(&request).unwrap();
        assert!(fit.dropped().iter().any(|d| d == "parallel_tool_calls"));
        // The embedded model honours the canonical settings; native ones are another
        // dialect's.
        let fit = caps(None).fit(&request).unwrap();
        assert_eq!(fit.dropped(), ["store"]);
        // Logit bias and log-probabilities cannot be dropped: the call is refused.
        let mut biased = request.clone();
        biased.generation.logit_bias = Some([(42, 1.0)].into());
        let e = caps(Some(Wire::Bedrock)).fit(&biased).unwrap_err();
        assert!(e.message.contains("logit_bias"), "{}", e.message);
        assert!(caps(None).fit(&biased).is_ok());
        // A user id Converse's requestMetadata cannot hold is dropped there.
        let mut odd = request;
        odd.end_user = Some("Bob <bob@example.com>".into());
        let fit = caps(Some(Wire::Bedrock)).fit(&odd).unwrap();
        assert!(fit.dropped().iter().any(|d| d == "user"));
        assert!(!caps(Some(Wire::Anthropic))
            .fit(&odd)
            .unwrap()
            .dropped()
            .iter()
            .any(|d| d == "user"));
    }

    #[test]
    fn unknown_members_are_refused_off_their_dialect() {
        let native = Native::new(Wire::OpenAi, vec![NativeParam::top("min_p", json!(0.1))]);
        let request = ChatRequest {
            native,
            ..sampling_request(None)
        };
        assert!(caps(Some(Wire::OpenAi)).fit(&request).is_ok());
        let e = caps(Some(Wire::Anthropic)).fit(&request).unwrap_err();
        assert_eq!(e.message, "Unrecognized request argument supplied: min_p");
    }

    #[tokio::test]
    async fn collects_text_and_tool_blocks() {
        let events = vec![
            Ok(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: None,
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 0,
                delta: ContentBlockDelta::Text("Hel".into()),
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 0,
                delta: ContentBlockDelta::Text("lo".into()),
            }),
            Ok(StreamEvent::ContentBlockStop { index: 0 }),
            Ok(StreamEvent::ContentBlockStart {
                index: 1,
                start: ContentBlockStart::ToolUse {
                    tool_use_id: "t1".into(),
                    name: "get".into(),
                },
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("{\"a\":".into()),
            }),
            Ok(StreamEvent::ContentBlockDelta {
                index: 1,
                delta: ContentBlockDelta::ToolUseInput("1}".into()),
            }),
            Ok(StreamEvent::MessageStop {
                stop_reason: StopReason::ToolUse,
            }),
            Ok(StreamEvent::Metadata {
                usage: Usage::new(3, 4),
                latency_ms: 9,
            }),
        ];
        let r = collect_stream("m".into(), futures::stream::iter(events).boxed())
            .await
            .unwrap();
        assert_eq!(r.message.content[0], ContentBlock::Text("Hello".into()));
        assert_eq!(
            r.message.content[1],
            ContentBlock::ToolUse(modelgate_types::ToolUseBlock {
                tool_use_id: "t1".into(),
                name: "get".into(),
                input: serde_json::json!({"a": 1}),
            })
        );
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage.total_tokens, 7);
        let replayed = futures::stream::iter(response_events(&r).into_iter().map(Ok)).boxed();
        assert_eq!(collect_stream("m".into(), replayed).await.unwrap(), r);
    }

    #[tokio::test]
    async fn reasoning_keeps_its_signature_and_redacted_blocks() {
        let delta = |index, delta| Ok(StreamEvent::ContentBlockDelta { index, delta });
        let events = vec![
            delta(0, ContentBlockDelta::ReasoningText("Let me ".into())),
            delta(0, ContentBlockDelta::ReasoningText("think.".into())),
            delta(0, ContentBlockDelta::ReasoningSignature("sig-".into())),
            delta(0, ContentBlockDelta::ReasoningSignature("A1".into())),
            Ok(StreamEvent::ContentBlockStop { index: 0 }),
            delta(1, ContentBlockDelta::RedactedReasoning("ZW5j".into())),
            Ok(StreamEvent::ContentBlockStop { index: 1 }),
            delta(2, ContentBlockDelta::Text("42".into())),
            Ok(StreamEvent::MessageStop {
                stop_reason: StopReason::EndTurn,
            }),
        ];
        let r = collect_stream("m".into(), futures::stream::iter(events).boxed())
            .await
            .unwrap();
        assert_eq!(
            r.message.content,
            vec![
                ContentBlock::ReasoningContent(modelgate_types::ReasoningBlock::ReasoningText {
                    text: "Let me think.".into(),
                    signature: Some("sig-A1".into()),
                }),
                ContentBlock::ReasoningContent(modelgate_types::ReasoningBlock::RedactedContent(
                    "ZW5j".into()
                )),
                ContentBlock::Text("42".into()),
            ]
        );
        let replayed = futures::stream::iter(response_events(&r).into_iter().map(Ok)).boxed();
        assert_eq!(collect_stream("m".into(), replayed).await.unwrap(), r);
    }

    #[tokio::test]
    async fn hostile_block_indices_cost_nothing_and_are_renumbered() {
        let delta = |index, t: &str| {
            Ok(StreamEvent::ContentBlockDelta {
                index,
                delta: ContentBlockDelta::Text(t.into()),
            })
        };
        let events = vec![delta(u32::MAX, "a"), delta(7, "b"), delta(u32::MAX, "c")];
        let r = collect_stream("m".into(), futures::stream::iter(events.clone()).boxed())
            .await
            .unwrap();
        // BTreeMap order: 7 before u32::MAX.
        assert_eq!(
            r.message.content,
            vec![
                ContentBlock::Text("b".into()),
                ContentBlock::Text("ac".into())
            ]
        );
        let renumbered: Vec<u32> = renumber(futures::stream::iter(events).boxed())
            .map(|e| match e.unwrap() {
                StreamEvent::ContentBlockDelta { index, .. } => index,
                _ => 99,
            })
            .collect()
            .await;
        assert_eq!(renumbered, vec![0, 1, 0]);
        let many = (0..=MAX_CONTENT_BLOCKS as u32).map(|i| delta(i * 1000, "x"));
        let e = collect_stream(
            "m".into(),
            futures::stream::iter(many.clone().collect::<Vec<_>>()).boxed(),
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("content blocks"), "{}", e.message);
        let last = renumber(futures::stream::iter(many.collect::<Vec<_>>()).boxed())
            .collect::<Vec<_>>()
            .await;
        assert!(last.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn error_item_is_returned() {
        let events = vec![
            Ok(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: None,
            }),
            Err(Error::internal("boom")),
        ];
        let r = collect_stream("m".into(), futures::stream::iter(events).boxed()).await;
        assert_eq!(r.unwrap_err().message, "boom");
    }
}
