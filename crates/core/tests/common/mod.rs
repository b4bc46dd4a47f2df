//! Shared by the tests that need the real embedded MiniLM.

use std::sync::Arc;

use modelgate_core::models::{self, LOCAL_EMBED_MODEL};
use modelgate_providers::{LocalEmbedder, LocalEmbedderConfig, Provider};

/// The embedded MiniLM, loaded from the data directory (`modelgate models pull`; `.ci/run`
/// installs it). Panics with that advice when the files are missing.
#[allow(clippy::unwrap_used, clippy::panic)]
pub fn minilm() -> Arc<dyn Provider> {
    let data = modelgate_core::config::data_dir();
    let spec = models::spec(LOCAL_EMBED_MODEL).unwrap();
    let dir = models::model_dir(&data, spec);
    assert!(
        models::is_installed(&data, spec),
        "the embedded embedding model is not installed in {} (run `modelgate models pull`)",
        dir.display()
    );
    Arc::new(
        LocalEmbedder::load(LocalEmbedderConfig {
            model_dir: dir,
            settings: Default::default(),
        })
        .unwrap(),
    )
}
