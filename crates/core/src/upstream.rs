//! Building the upstream providers of `[[providers]]` and the `[[models]]` they serve: one
//! pooled, authenticated endpoint per provider, shared by all of its models.

use std::collections::BTreeMap;
use std::sync::Arc;

use modelgate_providers::{
    anthropic, Anthropic, AnthropicConfig, AnthropicEndpoint, AwsCredentials, Bedrock,
    BedrockConfig, BedrockEndpoint, ModelKind, OpenAi, OpenAiConfig, OpenAiEndpoint, Provider,
};
use modelgate_types::Error;

use crate::config::{Config, ModelKindConfig, ProviderConfig, ProviderType};
use crate::gateway::{ModelInfo, ModelPolicy, ServedModel};

enum Endpoint {
    OpenAi(Arc<OpenAiEndpoint>),
    Anthropic(Arc<AnthropicEndpoint>),
    Bedrock(Arc<BedrockEndpoint>),
}

fn startup_error(provider: &str, reason: impl std::fmt::Display) -> Error {
    Error::internal(format!("provider '{provider}': {reason}"))
}

fn endpoint(p: &ProviderConfig) -> Result<Endpoint, Error> {
    let api_key = p.api_key().map_err(|e| startup_error(&p.name, e))?;
    Ok(match p.kind {
        ProviderType::Openai => Endpoint::OpenAi(OpenAiEndpoint::new(OpenAiConfig {
            name: p.name.clone(),
            base_url: p.base_url.clone().unwrap_or_default(),
            api_key,
            azure_api_version: p.api_version.clone(),
            http: p.http(),
        })?),
        ProviderType::Anthropic => Endpoint::Anthropic(AnthropicEndpoint::new(AnthropicConfig {
            name: p.name.clone(),
            base_url: p
                .base_url
                .clone()
                .unwrap_or_else(|| "https://api.anthropic.com".into()),
            api_key,
            version: p
                .anthropic_version
                .clone()
                .unwrap_or_else(|| anthropic::DEFAULT_VERSION.into()),
            http: p.http(),
        })?),
        ProviderType::Bedrock => {
            let credentials = match &p.profile {
                Some(profile) => {
                    AwsCredentials::from_profile(profile).map_err(|e| startup_error(&p.name, e))?
                }
                None => AwsCredentials::from_env().ok_or_else(|| {
                    startup_error(
                        &p.name,
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `profile`",
                    )
                })?,
            };
            Endpoint::Bedrock(BedrockEndpoint::new(BedrockConfig {
                name: p.name.clone(),
                region: p.region.clone().unwrap_or_default(),
                base_url: p.base_url.clone(),
                credentials,
                http: p.http(),
            })?)
        }
    })
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
            .any(|m| m.provider_names().contains(&p.name.as_str()))
        {
            endpoints.insert(p.name.as_str(), (p.kind, endpoint(p)?));
        }
    }
    let mut served = Vec::new();
    for m in &config.models {
        let kind = match m.kind {
            Some(ModelKindConfig::Embedding) => ModelKind::Embedding,
            _ => ModelKind::Chat,
        };
        let mut owners = Vec::new();
        let mut providers = Vec::new();
        for name in m.provider_names() {
            let Some((kind_of_provider, endpoint)) = endpoints.get(name) else {
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
            owners.push(format!("{}:{name}", provider_type_name(*kind_of_provider)));
            providers.push((name.to_string(), provider));
        }
        if providers.is_empty() {
            continue;
        }
        let info = ModelInfo {
            id: m.id.clone(),
            owned_by: owners.join(","),
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

fn provider_type_name(kind: ProviderType) -> &'static str {
    match kind {
        ProviderType::Openai => "openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::Bedrock => "bedrock",
    }
}
