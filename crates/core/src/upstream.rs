//! Building the upstream providers of `[[providers]]` and the `[[models]]` they serve: one
//! pooled, authenticated endpoint per provider, shared by all of its models.

use std::collections::BTreeMap;
use std::sync::Arc;

use modelgate_providers::{
    anthropic, Anthropic, AnthropicConfig, AnthropicEndpoint, AwsCredentials, Bedrock,
    BedrockConfig, BedrockEndpoint, ModelKind, OpenAi, OpenAiConfig, OpenAiEndpoint, Provider,
};
use modelgate_types::Error;

use crate::config::{Config, ModelKindConfig, ProviderConfig};
use crate::registry::{ModelInfo, ModelPolicy, ServedModel};

enum Endpoint {
    OpenAi(Arc<OpenAiEndpoint>),
    Anthropic(Arc<AnthropicEndpoint>),
    Bedrock(Arc<BedrockEndpoint>),
}

fn startup_error(provider: &str, reason: impl std::fmt::Display) -> Error {
    Error::internal(format!("provider '{provider}': {reason}"))
}

fn endpoint(p: &ProviderConfig) -> Result<Endpoint, Error> {
    let api_key = p.api_key().map_err(|e| startup_error(p.name(), e))?;
    let http = p.http();
    Ok(match p {
        ProviderConfig::Openai(c) => Endpoint::OpenAi(OpenAiEndpoint::new(OpenAiConfig {
            name: c.name.clone(),
            base_url: c.base_url.clone(),
            api_key,
            azure_api_version: c.api_version.clone(),
            http,
        })?),
        ProviderConfig::Anthropic(c) => {
            Endpoint::Anthropic(AnthropicEndpoint::new(AnthropicConfig {
                name: c.name.clone(),
                base_url: c
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "https://api.anthropic.com".into()),
                api_key,
                version: c
                    .anthropic_version
                    .clone()
                    .unwrap_or_else(|| anthropic::DEFAULT_VERSION.into()),
                http,
            })?)
        }
        ProviderConfig::Bedrock(c) => {
            let credentials = match &c.profile {
                Some(profile) => {
                    AwsCredentials::from_profile(profile).map_err(|e| startup_error(&c.name, e))?
                }
                None => AwsCredentials::from_env().ok_or_else(|| {
                    startup_error(
                        &c.name,
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `profile`",
                    )
                })?,
            };
            Endpoint::Bedrock(BedrockEndpoint::new(BedrockConfig {
                name: c.name.clone(),
                region: c.region.clone(),
                base_url: c.base_url.clone(),
                credentials,
                http,
            })?)
        }
    })
}

/// The Bedrock Runtime endpoint of the `[[providers]]` entry `name` (for the guardrails that
/// delegate to AWS's ApplyGuardrail).
pub fn bedrock_endpoint(config: &Config, name: &str) -> Result<Arc<BedrockEndpoint>, Error> {
    let p = config
        .providers
        .iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| startup_error(name, "no such provider"))?;
    match endpoint(p)? {
        Endpoint::Bedrock(e) => Ok(e),
        _ => Err(startup_error(name, "is not a bedrock provider")),
    }
}

/// The models `config` maps onto upstream providers, each with an endpoint per provider that
/// serves it. Reads secrets (environment, files); a missing one fails start-up with a message
/// naming the provider.
pub fn build_models(config: &Config) -> Result<Vec<ServedModel>, Error> {
    let mut endpoints = BTreeMap::new();
    for p in &config.providers {
        if config
            .models
            .iter()
            .any(|m| m.provider_names().contains(&p.name()))
        {
            endpoints.insert(p.name(), endpoint(p)?);
        }
    }
    let mut served = Vec::new();
    for m in &config.models {
        let kind = match m.kind {
            Some(ModelKindConfig::Embedding) => ModelKind::Embedding,
            _ => ModelKind::Chat,
        };
        let mut providers = Vec::new();
        for name in m.provider_names() {
            let Some(endpoint) = endpoints.get(name) else {
                continue;
            };
            let provider: Arc<dyn Provider> = match endpoint {
                Endpoint::OpenAi(e) => {
                    Arc::new(OpenAi::new(Arc::clone(e), m.upstream_id.clone(), kind))
                }
                Endpoint::Anthropic(e) => {
                    Arc::new(Anthropic::new(Arc::clone(e), m.upstream_id.clone()))
                }
                Endpoint::Bedrock(e) => {
                    Arc::new(Bedrock::new(Arc::clone(e), m.upstream_id.clone(), kind))
                }
            };
            let provider: Arc<dyn Provider> = Arc::new(Concealed {
                inner: provider,
                upstream_id: m.upstream_id.clone(),
            });
            providers.push((name.to_string(), provider));
        }
        if providers.is_empty() {
            continue;
        }
        let info = ModelInfo {
            id: m.id.clone(),
            // Which providers serve it is the operator's business (`/admin/endpoints`).
            owned_by: "modelgate".into(),
            kind: match kind {
                ModelKind::Chat => "chat",
                ModelKind::Embedding => "embedding",
            },
            aliases: m.aliases.clone(),
            format: m.format,
        };
        served.push(ServedModel {
            info,
            endpoints: providers,
            policy: ModelPolicy::for_model(&config.resilience, m),
        });
    }
    Ok(served)
}

/// An upstream model under the name clients know it by: the upstream's own id, which may
/// appear in the upstream's error messages ("The model `gpt-4o-2024-08-06` does not exist"),
/// is replaced by the client's name for the model before any error leaves the provider.
struct Concealed {
    inner: Arc<dyn Provider>,
    upstream_id: String,
}

impl Concealed {
    fn conceal(&self, e: Error, client_name: &str) -> Error {
        conceal(e, &self.upstream_id, client_name)
    }
}

/// `e` with every mention of `upstream_id` replaced by the client's name for the model.
fn conceal(mut e: Error, upstream_id: &str, client_name: &str) -> Error {
    if !upstream_id.is_empty() && e.message.contains(upstream_id) {
        e.message = e.message.replace(upstream_id, client_name);
    }
    e
}

#[async_trait::async_trait]
impl Provider for Concealed {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn capabilities(&self) -> modelgate_providers::Capabilities {
        self.inner.capabilities()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    async fn health_check(&self) -> Result<(), Error> {
        self.inner.health_check().await
    }

    async fn converse_stream(
        &self,
        request: modelgate_types::ChatRequest,
    ) -> Result<modelgate_providers::ChatStream, Error> {
        use futures::StreamExt as _;
        let name = request.model.clone();
        let stream = self
            .inner
            .converse_stream(request)
            .await
            .map_err(|e| self.conceal(e, &name))?;
        let upstream_id = self.upstream_id.clone();
        Ok(stream
            .map(move |item| item.map_err(|e| conceal(e, &upstream_id, &name)))
            .boxed())
    }

    async fn converse(
        &self,
        request: modelgate_types::ChatRequest,
    ) -> Result<modelgate_types::ChatResponse, Error> {
        let name = request.model.clone();
        self.inner
            .converse(request)
            .await
            .map_err(|e| self.conceal(e, &name))
    }

    async fn embed(
        &self,
        request: modelgate_types::EmbedRequest,
    ) -> Result<modelgate_types::EmbedResponse, Error> {
        let name = request.model.clone();
        self.inner
            .embed(request)
            .await
            .map_err(|e| self.conceal(e, &name))
    }

    async fn count_tokens(&self, request: &modelgate_types::ChatRequest) -> Result<u32, Error> {
        self.inner
            .count_tokens(request)
            .await
            .map_err(|e| self.conceal(e, &request.model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_testkit::scripted::{ScriptedProvider, Step};
    use modelgate_types::{ChatRequest, ErrorKind, Message, Role};

    #[tokio::test]
    async fn the_upstream_id_never_reaches_the_client() {
        let inner = ScriptedProvider::new("x");
        inner.set_default(Step::Fail(Error::upstream(
            ErrorKind::NotFound,
            "The model `gpt-4o-2024-08-06` does not exist (upstream provider 'p', HTTP 404)",
        )));
        let p = Concealed {
            inner,
            upstream_id: "gpt-4o-2024-08-06".into(),
        };
        let request = ChatRequest {
            model: "support-bot".into(),
            messages: vec![Message::text(Role::User, "hi")],
            ..Default::default()
        };
        let e = p.converse(request.clone()).await.unwrap_err();
        assert!(!e.message.contains("gpt-4o"), "{}", e.message);
        assert!(e.message.contains("support-bot"), "{}", e.message);
        assert!(p.converse_stream(request).await.is_err());
    }
}
