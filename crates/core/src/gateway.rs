//! The gateway: the model registry and the request pipeline every front door calls.
//!
//! Today's pipeline is: validate → route (model id → provider) → capability check → provider
//! call. Later layers (auth, rate limits, guardrails, cache, retries, breakers, fallbacks,
//! accounting) slot into [`Gateway::converse_stream`] / [`Gateway::converse`] in that order; the
//! architecture document keeps the full list.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use modelgate_providers::{ChatStream, Provider};

use crate::config::NativeFormat;
use crate::model_id;
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, EmbedRequest, EmbedResponse, Error, ErrorKind, Role,
};

/// What `/v1/models` lists about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Id clients use.
    pub id: String,
    /// Who serves it.
    pub owned_by: String,
    /// `chat` or `embedding`.
    pub kind: &'static str,
    /// More names that route to this model.
    pub aliases: Vec<String>,
    /// The InvokeModel body format, when configured.
    pub format: Option<NativeFormat>,
}

/// A model and the provider that serves it.
pub type ServedModel = (ModelInfo, Arc<dyn Provider>);

struct Entry {
    info: ModelInfo,
    provider: Arc<dyn Provider>,
}

/// Served models and the index of every name (id or alias) clients may use for them.
struct Registry {
    entries: Vec<Entry>,
    by_name: BTreeMap<String, usize>,
}

/// The registry of served models; filled once the models have loaded.
#[derive(Default)]
pub struct Gateway {
    models: OnceLock<Registry>,
}

impl Gateway {
    /// An empty gateway: every model call answers 503 until [`Gateway::install`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `models` servable under their ids and aliases. Only the first call takes effect;
    /// a name given twice keeps its first model (configuration validation rejects duplicates).
    pub fn install(&self, models: Vec<ServedModel>) {
        let mut entries: Vec<Entry> = models
            .into_iter()
            .map(|(info, provider)| Entry { info, provider })
            .collect();
        entries.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut by_name = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            for name in std::iter::once(&e.info.id).chain(&e.info.aliases) {
                by_name.entry(name.clone()).or_insert(i);
            }
        }
        let _ = self.models.set(Registry { entries, by_name });
    }

    /// Whether the models have loaded and every provider is ready.
    pub fn is_ready(&self) -> bool {
        self.models
            .get()
            .is_some_and(|m| m.entries.iter().all(|e| e.provider.is_ready()))
    }

    /// The served models, sorted by id.
    pub fn list(&self) -> Vec<ModelInfo> {
        self.models
            .get()
            .map(|m| m.entries.iter().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    /// The model a client's name refers to: an id or alias, also in its AWS forms
    /// (cross-region profile id, foundation-model or inference-profile ARN).
    pub fn resolve(&self, model: &str) -> Result<&ModelInfo, Error> {
        self.route(model).map(|e| &e.info)
    }

    fn route(&self, model: &str) -> Result<&Entry, Error> {
        let registry = self.models.get().ok_or_else(|| {
            Error::new(
                ErrorKind::ServiceUnavailable,
                "Models are still loading; retry in a moment.",
            )
        })?;
        model_id::candidates(model)
            .into_iter()
            .find_map(|name| registry.by_name.get(name))
            .and_then(|&i| registry.entries.get(i))
            .ok_or_else(|| Error::model_not_found(model))
    }

    /// Stream a chat answer.
    pub async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        validate_chat(&request)?;
        let entry = self.chat_entry(&request)?;
        entry.provider.converse_stream(request).await
    }

    /// Answer a chat request in one piece.
    pub async fn converse(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        validate_chat(&request)?;
        let entry = self.chat_entry(&request)?;
        entry.provider.converse(request).await
    }

    /// Count input tokens with the model's tokenizer.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        validate_chat(request)?;
        let entry = self.route(&request.model)?;
        entry.provider.count_tokens(request).await
    }

    /// Embed texts.
    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        let entry = self.route(&request.model)?;
        if !entry.provider.capabilities().embeddings {
            return Err(Error::validation(format!(
                "The model '{}' does not support embeddings.",
                request.model
            )));
        }
        entry.provider.embed(request).await
    }

    fn chat_entry(&self, request: &ChatRequest) -> Result<&Entry, Error> {
        let entry = self.route(&request.model)?;
        let caps = entry.provider.capabilities();
        if !caps.chat {
            return Err(Error::validation(format!(
                "The model '{}' is an embedding model and does not support chat.",
                request.model
            )));
        }
        if !caps.tools && request.tools.as_ref().is_some_and(|t| !t.tools.is_empty()) {
            return Err(Error::validation(format!(
                "The model '{}' does not support tool use.",
                request.model
            )));
        }
        if !caps.json_output && request.response_format.is_some() {
            return Err(Error::validation(format!(
                "The model '{}' does not support structured output (a JSON response format).",
                request.model
            )));
        }
        Ok(entry)
    }
}

/// Checks every chat request passes, whatever the dialect it came in.
pub fn validate_chat(request: &ChatRequest) -> Result<(), Error> {
    if request.model.is_empty() {
        return Err(Error::validation("A model id is required."));
    }
    let Some(first) = request.messages.first() else {
        return Err(Error::validation(
            "The conversation must contain at least one message.",
        ));
    };
    if first.role != Role::User {
        return Err(Error::validation(
            "A conversation must start with a user message.",
        ));
    }
    for (i, m) in request.messages.iter().enumerate() {
        if m.content.is_empty() {
            return Err(Error::validation(format!(
                "messages[{i}] has no content; each message needs at least one content block."
            )));
        }
        if m.content
            .iter()
            .all(|b| matches!(b, ContentBlock::Text(t) if t.trim().is_empty()))
            && !(i + 1 == request.messages.len() && m.role == Role::Assistant)
        {
            return Err(Error::validation(format!(
                "messages[{i}] has only blank text; text content must not be blank."
            )));
        }
    }
    request.inference.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{InferenceConfig, Message};

    fn req(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn validation_rules() {
        assert!(validate_chat(&req(vec![Message::text(Role::User, "hi")])).is_ok());
        assert_eq!(validate_chat(&req(vec![])).unwrap_err().status(), 400);
        assert_eq!(
            validate_chat(&req(vec![Message::text(Role::Assistant, "hi")]))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            validate_chat(&req(vec![Message::text(Role::User, "  ")]))
                .unwrap_err()
                .status(),
            400
        );
        let mut r = req(vec![Message::text(Role::User, "hi")]);
        r.inference = InferenceConfig {
            max_tokens: Some(0),
            ..Default::default()
        };
        assert!(validate_chat(&r).unwrap_err().message.contains("maxTokens"));
    }

    #[tokio::test]
    async fn unloaded_gateway_is_unavailable_and_unknown_model_is_404() {
        let g = Gateway::new();
        assert!(!g.is_ready());
        let e = g
            .converse(req(vec![Message::text(Role::User, "hi")]))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 503);
        g.install(vec![]);
        assert_eq!(g.resolve("x").unwrap_err().status(), 404);
        let e = g
            .converse(req(vec![Message::text(Role::User, "hi")]))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 404);
    }
}
