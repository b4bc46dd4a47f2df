//! The gateway: the handle the front doors hold. It owns the model registry (filled once the
//! models have loaded), the pipeline assembled by [`crate::pipeline::build`], the sinks every
//! call's outcome goes to, and the background tasks (health checks) it started.
//!
//! Each model call takes the caller's [`CallContext`] and runs through the pipeline; the
//! answer comes back as [`Served`], which also says which model served it and why.

use std::sync::{Arc, Mutex, OnceLock};

use modelgate_providers::ChatStream;
use modelgate_types::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Error};

use crate::context::CallContext;
use crate::outcome::{AccessLog, OutcomeSink, Sinks};
use crate::pipeline::{build, Answer, Layer, Models, Operation, Pipeline, PolicyLayers, Served};
use crate::registry::{lock, EndpointStatus, ModelInfo, Registry, ServedModel};

/// How a [`Gateway`] is put together.
pub struct GatewayBuilder {
    cache: Option<Arc<crate::cache::ResponseCache>>,
    sinks: Vec<Arc<dyn OutcomeSink>>,
    extra_layers: Vec<Arc<dyn Layer>>,
    policy: Option<PolicyLayers>,
    capture: Option<Arc<crate::invocations::Capture>>,
    routing: Option<Arc<crate::routing::Routing>>,
    guardrails: Option<Arc<crate::guardrails::Guardrails>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("cache", &self.cache.is_some())
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            cache: Some(Arc::default()),
            sinks: vec![Arc::new(AccessLog)],
            extra_layers: Vec::new(),
            policy: None,
            capture: None,
            routing: None,
            guardrails: None,
        }
    }
}

impl GatewayBuilder {
    /// The response cache (also the degraded last-good-answer level); `None` leaves the
    /// layer out. Default: in process, with `[cache]`'s defaults (off except for models with
    /// `fallback_cache`).
    pub fn cache(mut self, cache: Option<Arc<crate::cache::ResponseCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// Also send every outcome to `sink`.
    pub fn sink(mut self, sink: Arc<dyn OutcomeSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Put `layer` in front of the pipeline's own layers (before validation). For tests of
    /// the pipeline's contract and for embedding applications; the shipped policy layers are
    /// listed in [`crate::pipeline::build`].
    pub fn outer_layer(mut self, layer: Arc<dyn Layer>) -> Self {
        self.extra_layers.push(layer);
        self
    }

    /// Authorise and limit every call (see [`crate::pipeline::build`]).
    pub fn policy(mut self, layers: PolicyLayers) -> Self {
        self.policy = Some(layers);
        self
    }

    /// Capture the request and response bodies of the calls `rules` match, for the
    /// invocation records.
    pub fn capture(mut self, rules: crate::invocations::CaptureConfig) -> Self {
        if rules.is_enabled() {
            self.capture = Some(Arc::new(crate::invocations::Capture::new(rules)));
        }
        self
    }

    /// Route virtual models (see [`crate::routing`]).
    pub fn routing(mut self, routing: Arc<crate::routing::Routing>) -> Self {
        self.routing = Some(routing);
        self
    }

    /// Guard prompts and answers (see [`crate::guardrails`]).
    pub fn guardrails(mut self, guardrails: Arc<crate::guardrails::Guardrails>) -> Self {
        self.guardrails = Some(guardrails);
        self
    }

    /// The gateway, with no models yet.
    pub fn build(self) -> Gateway {
        let models: Models = Arc::new(OnceLock::new());
        let mut layers = self.extra_layers;
        let cache = self.cache.clone();
        let routing = self.routing.clone();
        let guardrails = self.guardrails.clone();
        let stats = routing
            .as_ref()
            .map(|r| r.settings().stats())
            .unwrap_or_default();
        layers.extend(build(
            Arc::clone(&models),
            self.cache,
            self.policy,
            self.capture,
            self.routing,
            self.guardrails,
        ));
        Gateway {
            models,
            pipeline: Pipeline::new(layers, Sinks::new(self.sinks), stats),
            cache,
            routing,
            guardrails,
            tasks: Mutex::new(Vec::new()),
        }
    }
}

/// The registry of served models and the pipeline every model call goes through.
pub struct Gateway {
    models: Models,
    pipeline: Pipeline,
    cache: Option<Arc<crate::cache::ResponseCache>>,
    routing: Option<Arc<crate::routing::Routing>>,
    guardrails: Option<Arc<crate::guardrails::Guardrails>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Default for Gateway {
    fn default() -> Self {
        GatewayBuilder::default().build()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn unexpected(what: &str) -> Error {
    Error::internal(format!(
        "the pipeline answered {what} with another kind of answer"
    ))
}

impl Gateway {
    /// An empty gateway with the default pipeline: every model call answers 503 until
    /// [`Gateway::install`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The response cache, when the pipeline has one (for the admin API).
    pub fn response_cache(&self) -> Option<&Arc<crate::cache::ResponseCache>> {
        self.cache.as_ref()
    }

    /// The guardrails, when the pipeline has them (for the control-plane API).
    pub fn guardrails(&self) -> Option<&Arc<crate::guardrails::Guardrails>> {
        self.guardrails.as_ref()
    }

    /// The live routing, when the pipeline routes virtual models (for the admin API).
    pub fn routing(&self) -> Option<&Arc<crate::routing::Routing>> {
        self.routing.as_ref()
    }

    /// Build a gateway with other settings.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Make `models` servable under their ids and aliases and start their endpoints' health
    /// checks (when called inside a Tokio runtime). Only the first call takes effect.
    pub fn install(&self, models: Vec<ServedModel>) {
        let registry = Registry::new(models);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            lock(&self.tasks).extend(registry.spawn_health_checks(&runtime));
        }
        let _ = self.models.set(Arc::new(registry));
    }

    /// Whether the models have loaded and every provider is ready.
    pub fn is_ready(&self) -> bool {
        self.models.get().is_some_and(|m| m.is_ready())
    }

    /// The served models and the virtual ones, sorted by id.
    pub fn list(&self) -> Vec<ModelInfo> {
        let mut all: Vec<ModelInfo> = self
            .models
            .get()
            .map(|m| m.entries.iter().map(|e| e.info.clone()).collect())
            .unwrap_or_default();
        if let Some(r) = &self.routing {
            all.extend(r.list());
            all.sort_by(|a, b| a.id.cmp(&b.id));
        }
        all
    }

    /// Every endpoint's breaker and health, by model.
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.models
            .get()
            .map(|m| m.endpoint_status())
            .unwrap_or_default()
    }

    /// The model a client's name refers to: an id or alias, also in its AWS forms
    /// (cross-region profile id, foundation-model or inference-profile ARN).
    pub fn resolve(&self, model: &str) -> Result<ModelInfo, Error> {
        let registry = self.models.get().ok_or_else(|| {
            Error::new(
                modelgate_types::ErrorKind::ServiceUnavailable,
                "Models are still loading; retry in a moment.",
            )
        })?;
        if let Some((mut info, first)) = self.routing.as_ref().and_then(|r| r.resolve(model)) {
            // A virtual model's native body format is that of the model it starts from.
            info.format = registry.route(&first).ok().and_then(|e| e.info.format);
            return Ok(info);
        }
        registry.route(model).map(|e| e.info.clone())
    }

    /// The sinks every outcome goes to (the HTTP layer records calls that never reached the
    /// pipeline through them too).
    pub fn sinks(&self) -> &Sinks {
        self.pipeline.sinks()
    }

    /// Answer a chat request in one piece.
    pub async fn converse(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
    ) -> Result<Served<ChatResponse>, Error> {
        let served = self.pipeline.run(ctx, Operation::Converse(request)).await?;
        served.try_map(|answer| match answer {
            Answer::Response(r) => Ok(r),
            _ => Err(unexpected("a chat")),
        })
    }

    /// Stream a chat answer. The stream records the call's outcome when it ends, or when it is
    /// dropped before that (the client went away).
    pub async fn converse_stream(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
    ) -> Result<Served<ChatStream>, Error> {
        let served = self
            .pipeline
            .run(ctx, Operation::ConverseStream(request))
            .await?;
        served.try_map(|answer| match answer {
            Answer::Stream(s) => Ok(s),
            _ => Err(unexpected("a stream")),
        })
    }

    /// Embed texts.
    pub async fn embed(
        &self,
        ctx: &CallContext,
        request: EmbedRequest,
    ) -> Result<EmbedResponse, Error> {
        match self
            .pipeline
            .run(ctx, Operation::Embed(request))
            .await?
            .value
        {
            Answer::Embeddings(r) => Ok(r),
            _ => Err(unexpected("an embedding")),
        }
    }

    /// Count input tokens with the model's tokenizer.
    pub async fn count_tokens(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
    ) -> Result<u32, Error> {
        match self
            .pipeline
            .run(ctx, Operation::CountTokens(request))
            .await?
            .value
        {
            Answer::Tokens(n) => Ok(n),
            _ => Err(unexpected("a token count")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{Message, Role};

    fn req() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "hi")],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn unloaded_gateway_is_unavailable_and_unknown_model_is_404() {
        let g = Gateway::new();
        let ctx = CallContext::internal();
        assert!(!g.is_ready());
        let e = g.converse(&ctx, req()).await.unwrap_err();
        assert_eq!(e.status(), 503);
        g.install(vec![]);
        assert_eq!(g.resolve("x").unwrap_err().status(), 404);
        let e = g.converse(&ctx, req()).await.unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
