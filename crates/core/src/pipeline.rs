//! The request pipeline: one list of layers, assembled in [`build`], that every model call of
//! every front door goes through.
//!
//! A call is one [`Operation`] (a chat answered whole or streamed, embeddings, token counting)
//! travelling with its [`CallContext`]. Each [`Layer`] sees the [`Call`] and the rest of the
//! pipeline ([`Next`]); it may refuse the call, rewrite it, answer it itself, or watch what
//! comes back. The last layer is the innermost service: the fallback chain, retries, breakers
//! and the provider call ([`crate::chain`]).
//!
//! Whatever happens, the call ends in exactly one [`crate::outcome::Outcome`]: when the answer
//! or error is returned, or — for a stream — when the stream ends or the client goes away.
//! That happens here, in [`Pipeline::run`], and in the one stream observer
//! ([`crate::stream::observe`]); layers report into the call, they never wrap the stream.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use modelgate_providers::ChatStream;
use modelgate_types::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Error, ErrorKind};
use tokio::time::Instant;

use crate::chain::Chain;
use crate::context::CallContext;
use crate::degraded::StaticAnswer;
use crate::outcome::{OperationKind, Recorder, Sinks};
use crate::registry::{Entry, Registry};
use crate::validate::Validate;

/// What a call asks for.
#[derive(Debug, Clone)]
pub enum Operation {
    /// A chat answered in one piece.
    Converse(ChatRequest),
    /// A chat answered as a stream of events.
    ConverseStream(ChatRequest),
    /// Embeddings of texts.
    Embed(EmbedRequest),
    /// The input tokens a chat request would use.
    CountTokens(ChatRequest),
}

impl Operation {
    /// Which operation this is.
    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::Converse(_) => OperationKind::Converse,
            Operation::ConverseStream(_) => OperationKind::ConverseStream,
            Operation::Embed(_) => OperationKind::Embed,
            Operation::CountTokens(_) => OperationKind::CountTokens,
        }
    }

    /// The model the client named.
    pub fn model(&self) -> &str {
        match self {
            Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
                &r.model
            }
            Operation::Embed(r) => &r.model,
        }
    }

    /// The chat request, for the operations that carry one.
    pub fn chat(&self) -> Option<&ChatRequest> {
        match self {
            Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
                Some(r)
            }
            Operation::Embed(_) => None,
        }
    }

    /// Name another model (routing does, for virtual models).
    pub fn set_model(&mut self, model: &str) {
        match self {
            Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
                model.clone_into(&mut r.model);
            }
            Operation::Embed(r) => model.clone_into(&mut r.model),
        }
    }

    /// Whether the call asks for a chat answer (whole or streamed).
    pub fn is_answer(&self) -> bool {
        matches!(self, Operation::Converse(_) | Operation::ConverseStream(_))
    }
}

/// What a call returns.
pub enum Answer {
    /// A whole chat answer.
    Response(ChatResponse),
    /// A chat answer as events.
    Stream(ChatStream),
    /// Embeddings.
    Embeddings(EmbedResponse),
    /// A token count.
    Tokens(u32),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Response(r) => f.debug_tuple("Response").field(r).finish(),
            Answer::Stream(_) => f.write_str("Stream"),
            Answer::Embeddings(r) => f.debug_tuple("Embeddings").field(r).finish(),
            Answer::Tokens(n) => f.debug_tuple("Tokens").field(n).finish(),
        }
    }
}

impl Answer {
    /// A whole answer in the form `op` asks for: as is, or replayed as a stream (a cached or
    /// static answer to a streaming call).
    pub fn from_response(response: ChatResponse, op: &Operation) -> Self {
        if matches!(op, Operation::ConverseStream(_)) {
            let events = modelgate_providers::response_events(&response);
            Answer::Stream(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
        } else {
            Answer::Response(response)
        }
    }
}

/// An answer and how it was obtained.
#[derive(Debug)]
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// The model that answered, or `cache` / `static` for the degraded levels.
    pub served_by: String,
    /// Why the requested model did not answer (`circuit_open`, `unhealthy`, `timeout`,
    /// `throttled`, `upstream_error`, `context_window`, `content_policy`), when it did not.
    pub fallback_reason: Option<&'static str>,
    /// Upstream attempts made, over every model tried.
    pub attempts: u32,
}

impl<T> Served<T> {
    /// The same story about the value `f` makes of this one (or `f`'s error).
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Served<U>, E> {
        Ok(Served {
            value: f(self.value)?,
            served_by: self.served_by,
            fallback_reason: self.fallback_reason,
            attempts: self.attempts,
        })
    }
}

/// How a call was served so far: which model answered, why the requested one did not, how
/// many upstream attempts were made. The pipeline keeps it on the call (and copies it to the
/// call context for the response headers), success or failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServedBy {
    /// The model that answered (empty while none has).
    pub served_by: String,
    /// Why the requested model did not answer.
    pub fallback_reason: Option<&'static str>,
    /// Upstream attempts, over every model tried.
    pub attempts: u32,
    /// What the response cache did, when it looked at the call.
    pub cache: Option<crate::cache::CacheReport>,
    /// How a virtual model was routed, when the call named one.
    pub routing: Option<Arc<crate::routing::RoutingDecision>>,
    /// Request parameters the serving model cannot take and that were left out.
    pub dropped: Vec<String>,
}

/// How the one stream observer treats a started stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamLimits {
    /// Longest gap between two events.
    pub idle: Option<Duration>,
    /// When the whole call must be over.
    pub deadline: Option<Instant>,
    /// When the client leaves mid-stream, read the rest for the final usage.
    pub finish_cancelled: bool,
}

/// One call on its way through the pipeline.
pub struct Call {
    /// What the gateway knows about the caller and the request.
    pub ctx: CallContext,
    /// What is asked.
    pub op: Operation,
    /// How it was served so far.
    pub served: ServedBy,
    /// The provider endpoint that answered.
    pub provider: Option<String>,
    /// When the call must be over (set by routing from the model's total timeout and the
    /// caller's own deadline).
    pub deadline: Option<Instant>,
    /// Time limits for a started stream.
    pub stream_limits: StreamLimits,
    /// Set by a layer that needs the whole answer when the call ends (a stream's events are
    /// then folded into one response for the finishers).
    pub want_response: bool,
    /// Set by a layer that asks the model chain for an answer that must neither come from
    /// nor go to the response cache (a cascade's first, smaller model).
    pub(crate) skip_cache: bool,
    /// Set by the guardrail layer for a streamed answer: the one stream observer runs every
    /// event through it (the layer does not wrap the stream itself).
    pub stream_guard: Option<Box<dyn crate::guardrails::layer::StreamFilter>>,
    /// How the live latency figures move (from `[routing]`).
    pub(crate) stats_config: crate::routing::stats::StatsConfig,
    pub(crate) registry: Option<Arc<Registry>>,
    pub(crate) entry: Option<Arc<Entry>>,
    pub(crate) recorder: Recorder,
}

impl Call {
    /// The routed model (after the route layer).
    pub(crate) fn entry(&self) -> Result<Arc<Entry>, Error> {
        self.entry
            .clone()
            .ok_or_else(|| Error::internal("the call reached the model chain unrouted"))
    }

    /// The recorder of the call's outcome.
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.recorder
    }
}

/// One stage of the pipeline.
#[async_trait]
pub trait Layer: Send + Sync + 'static {
    /// Handle `call`, usually by running `next` (the rest of the pipeline) and looking at what
    /// comes back. A layer that refuses a call returns an error made with
    /// [`Error::refusal`], which no later stage retries or falls back from.
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error>;
}

/// The rest of the pipeline after the current layer (a layer may run it more than once: a
/// cascade asks a second model).
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Layer>],
}

impl Next<'_> {
    /// Run the rest of the pipeline.
    pub async fn run(self, call: &mut Call) -> Result<Answer, Error> {
        match self.rest.split_first() {
            Some((layer, rest)) => layer.call(call, Next { rest }).await,
            None => Err(Error::internal("the pipeline has no innermost service")),
        }
    }
}

/// Where the pipeline finds the served models (filled once they have loaded).
pub(crate) type Models = Arc<OnceLock<Arc<Registry>>>;

/// The policy layers that need state (the store, the counters): present when the gateway is
/// built with them.
#[derive(Clone)]
pub struct PolicyLayers {
    /// Authorisation against the caller's policies.
    pub authorize: Arc<crate::access::Authorize>,
    /// Rate limits, tokens per minute, concurrency, budgets.
    pub limits: Arc<crate::access::Limits>,
}

/// Assemble the pipeline. Every model call goes through these layers, in this order. (The
/// caller was authenticated before the call reached the pipeline, by the server's middleware,
/// which puts the principal in the call context.)
pub(crate) fn build(
    models: Models,
    cache: Option<Arc<crate::cache::ResponseCache>>,
    policy: Option<PolicyLayers>,
    capture: Option<Arc<crate::invocations::Capture>>,
    routing: Option<Arc<crate::routing::Routing>>,
    guardrails: Option<Arc<crate::guardrails::Guardrails>>,
) -> Vec<Arc<dyn Layer>> {
    let mut layers: Vec<Arc<dyn Layer>> = Vec::new();
    if let Some(c) = capture {
        // 0. Capture (when configured for the model, route, key or team): keep the request,
        //    and the whole answer when the call ends, for the invocation record — first, so
        //    refused calls are captured too.
        layers.push(c);
    }
    if let Some(p) = &policy {
        let _ = p.authorize.models.set(Arc::clone(&models));
        // 1. Authorise: the caller's IAM-grammar policies allow this action on this model
        //    with these parameters (explicit deny wins); the decision goes to the audit log.
        layers.push(p.authorize.clone());
    }
    // 2. Validate: the canonical request is well formed, whatever its dialect (at least one
    //    message, no blank turns, inference settings in range).
    layers.push(Arc::new(Validate));
    if let Some(p) = policy {
        // 3. Limits: requests per second with burst, tokens per minute (settled from the real
        //    usage when the call ends), calls in flight, hard budgets — per key, team, model,
        //    route and globally.
        layers.push(p.limits);
    }
    if let Some(g) = guardrails {
        g.attach(Arc::clone(&models));
        // 3b. Guardrails: the guardrails attached to the call by the config or asked for by
        //     the caller (Converse `guardrailConfig`, InvokeModel headers) check the prompt —
        //     block in the caller's dialect, or mask before any model sees it — and the
        //     answer: a whole one here, a stream through the guard the observer runs.
        layers.push(Arc::new(crate::guardrails::layer::GuardrailLayer::new(g)));
    }
    if let Some(r) = routing {
        r.attach(Arc::clone(&models));
        // 4. Router: a virtual model's name becomes the real model its router picks — by
        //    rule (route, key, team, header, query, metadata, size, language, keywords),
        //    weighted split or canary, least latency, least busy, cheapest within a latency
        //    objective, an embedding classifier, or a cascade that escalates on low
        //    confidence; the decision goes into the outcome.
        layers.push(Arc::new(crate::routing::RouterLayer::new(r)));
    }
    layers.extend([
        // 5. Route: the model name (id, alias, AWS id or ARN) selects a served model that can
        //    do what is asked (chat or embeddings, tools, structured output); sets the call's
        //    deadline from the model's total timeout.
        Arc::new(Route { models }) as Arc<dyn Layer>,
        // 6. Static answer: when every model and the cached level failed, the model's
        //    configured degraded-service text.
        Arc::new(StaticAnswer),
    ]);
    if let Some(cache) = cache {
        // 7. Response cache: serve a stored answer to the same request (or, semantically, one
        //    that means the same) from the same tenant; store complete answers when the call
        //    ends; when every model failed, serve a stale entry (models with fallback_cache).
        layers.push(Arc::new(crate::cache::Cache::new(cache)));
    }
    // 8. The model chain (innermost): the fallback chain → retries with backoff → circuit
    //    breaker and health-checked endpoint choice → the provider call.
    layers.push(Arc::new(Chain));
    layers
}

/// The pipeline: its layers and the sinks every outcome goes to.
pub(crate) struct Pipeline {
    layers: Vec<Arc<dyn Layer>>,
    sinks: Sinks,
    stats_config: crate::routing::stats::StatsConfig,
}

impl Pipeline {
    pub(crate) fn new(
        layers: Vec<Arc<dyn Layer>>,
        sinks: Sinks,
        stats_config: crate::routing::stats::StatsConfig,
    ) -> Self {
        Self {
            layers,
            sinks,
            stats_config,
        }
    }

    pub(crate) fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    /// Run `op` through every layer and record its outcome: now for a whole answer or an
    /// error, when it ends for a stream.
    pub(crate) async fn run(
        &self,
        ctx: &CallContext,
        op: Operation,
    ) -> Result<Served<Answer>, Error> {
        let mut recorder = Recorder::new(ctx, self.sinks.clone());
        let o = recorder.outcome();
        o.timeline.pipeline = Some(Instant::now());
        o.operation = Some(op.kind());
        o.model_requested = Some(op.model().to_string());
        o.streamed = matches!(op, Operation::ConverseStream(_));
        o.params = Some(match &op {
            Operation::Embed(r) => crate::outcome::CallParams {
                messages: match &r.input {
                    modelgate_types::EmbedInput::Texts(t) => t.len(),
                },
                ..Default::default()
            },
            Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
                crate::outcome::CallParams::of_chat(r)
            }
        });
        let mut call = Call {
            ctx: ctx.clone(),
            op,
            served: ServedBy::default(),
            provider: None,
            deadline: ctx.deadline(),
            stream_limits: StreamLimits::default(),
            want_response: false,
            skip_cache: false,
            stream_guard: None,
            stats_config: self.stats_config,
            registry: None,
            entry: None,
            recorder,
        };
        // The caller runs the call inside the context's span (the HTTP middleware does); a
        // started stream is polled outside it, so the stream observer enters it on each poll.
        let result = Next { rest: &self.layers }.run(&mut call).await;
        let Call {
            served,
            provider,
            stream_limits,
            want_response,
            stream_guard,
            mut recorder,
            ..
        } = call;
        ctx.set_served(served.clone());
        let o = recorder.outcome();
        o.timeline.answered = Some(Instant::now());
        o.model_served = Some(served.served_by.clone()).filter(|s| !s.is_empty());
        o.provider = provider;
        o.attempts = served.attempts;
        o.fallback_reason = served.fallback_reason;
        o.cache.clone_from(&served.cache);
        o.routing.clone_from(&served.routing);
        let answer = match result {
            Err(e) => {
                recorder.finish(Some(&e), None);
                return Err(e);
            }
            Ok(Answer::Stream(stream)) => Answer::Stream(crate::stream::observe(
                stream,
                stream_limits,
                want_response,
                stream_guard,
                recorder,
                ctx.span().clone(),
            )),
            Ok(answer) => {
                recorder.first_token();
                let o = recorder.outcome();
                match &answer {
                    Answer::Response(r) => {
                        o.usage = Some(r.usage);
                        o.stop_reason = Some(r.stop_reason);
                    }
                    Answer::Embeddings(r) => {
                        o.usage = Some(modelgate_types::Usage::new(r.input_tokens, 0));
                    }
                    Answer::Tokens(n) => o.usage = Some(modelgate_types::Usage::new(*n, 0)),
                    Answer::Stream(_) => {}
                }
                o.usage_complete = true;
                let response = match &answer {
                    Answer::Response(r) => Some(r),
                    _ => None,
                };
                recorder.finish(None, response);
                answer
            }
        };
        let ServedBy {
            served_by,
            fallback_reason,
            attempts,
            ..
        } = served;
        Ok(Served {
            value: answer,
            served_by,
            fallback_reason,
            attempts,
        })
    }
}

/// For a model without tool use: tools declared with `tool_choice: none` may not be called, so
/// when the conversation holds no tool calls or results they are dropped rather than refused
/// (the answer is the same text either way).
fn drop_forbidden_tools(request: &mut ChatRequest) {
    let forbidden = request
        .tools
        .as_ref()
        .is_some_and(|t| t.tool_choice == Some(modelgate_types::ToolChoice::None));
    let history = request.messages.iter().flat_map(|m| &m.content).any(|b| {
        matches!(
            b,
            modelgate_types::ContentBlock::ToolUse(_)
                | modelgate_types::ContentBlock::ToolResult(_)
        )
    });
    if forbidden && !history {
        request.tools = None;
    }
}

/// Layer 2: find the served model, check it can do what is asked, set the deadline.
struct Route {
    models: Models,
}

#[async_trait]
impl Layer for Route {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let registry = self.models.get().cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::ServiceUnavailable,
                "Models are still loading; retry in a moment.",
            )
        })?;
        let entry = Arc::clone(registry.route(call.op.model())?);
        match &mut call.op {
            Operation::Converse(r) | Operation::ConverseStream(r) => {
                if !entry.caps.tools {
                    drop_forbidden_tools(r);
                }
                entry.check_capabilities(r)?;
            }
            Operation::Embed(r) => {
                if !entry.caps.embeddings {
                    return Err(Error::validation(format!(
                        "The model '{}' does not support embeddings.",
                        r.model
                    )));
                }
            }
            Operation::CountTokens(_) => {}
        }
        call.recorder().outcome().model_routed = Some(entry.info.id.clone());
        let total = Instant::now() + entry.policy.timeouts.total;
        call.deadline = Some(call.deadline.map_or(total, |d| d.min(total)));
        call.registry = Some(registry);
        call.entry = Some(entry);
        next.run(call).await
    }
}
