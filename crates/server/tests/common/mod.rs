//! Shared by the integration tests: start the real router with the real embedded models
//! (installed by `modelgate models pull`; `MODELGATE_HOME` points at them) on an ephemeral port.

use std::sync::Arc;
use std::time::Duration;

use modelgate_core::config::data_dir;
use modelgate_core::{local, Config, Gateway};
use modelgate_server::app::{self, AppState};
use modelgate_server::sigv4::Verifier;

/// Serve `config`'s models, with SigV4 verification when `sigv4` is given; the base URL.
#[allow(dead_code)] // not every test binary uses it
pub async fn serve(config: Config, sigv4: Option<Verifier>) -> String {
    let data = data_dir();
    local::ensure_models(&data, false).expect(
        "embedded model files missing: run `modelgate models pull` (and set MODELGATE_HOME) before the tests",
    );
    let cfg = config.clone();
    let models = tokio::task::spawn_blocking(move || local::load_models(&cfg, &data))
        .await
        .unwrap()
        .unwrap();
    let cache = modelgate_server::state::open_cache(&config).await.unwrap();
    let gateway = Arc::new(Gateway::builder().cache(Some(cache)).build());
    gateway.install(models);
    let mut state = AppState::new(gateway, config.server.max_body_bytes);
    if let Some(v) = sigv4 {
        state.auth = Arc::new(modelgate_server::auth::Auth::sigv4_only(v));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app::serve(listener, state, Duration::from_secs(5)));
    base
}

/// A gateway observed the way `modelgate serve` observes it: Prometheus metrics and
/// invocation records (in a SQLite file removed on drop), body capture as configured.
#[allow(dead_code)] // not every test binary uses it
pub struct Observed {
    /// The base URL.
    pub base: String,
    /// The invocation records.
    pub records: Arc<modelgate_store::SqliteStore>,
    dir: std::path::PathBuf,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serve `config`'s models with Prometheus metrics (`/metrics`) and invocation records kept.
#[allow(dead_code)] // not every test binary uses it
pub async fn serve_observed(config: Config) -> Observed {
    let data = data_dir();
    let cfg = config.clone();
    let models = tokio::task::spawn_blocking(move || local::load_models(&cfg, &data))
        .await
        .unwrap()
        .unwrap();
    let prices = modelgate_core::usage::PriceCatalog::new(config.prices.clone());
    let metrics = Arc::new(modelgate_core::metrics::Metrics::new(prices.clone()));
    let dir = std::env::temp_dir().join(format!("mg-observed-{}", uuid::Uuid::new_v4().simple()));
    let records = Arc::new(
        modelgate_store::SqliteStore::open(&dir.join("state.db"))
            .await
            .unwrap(),
    );
    let (log, _writer) = modelgate_core::invocations::InvocationLog::spawn(
        &config.invocations,
        prices,
        records.clone(),
    );
    let gateway = Arc::new(
        Gateway::builder()
            .cache(Some(
                modelgate_server::state::open_cache(&config).await.unwrap(),
            ))
            .sink(metrics.clone())
            .sink(log)
            .capture(config.invocations.capture.clone())
            .build(),
    );
    gateway.install(models);
    let mut state = AppState::new(gateway, config.server.max_body_bytes);
    state.metrics = Some(metrics);
    state.invocations = Some(records.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app::serve(listener, state, Duration::from_secs(5)));
    Observed { base, records, dir }
}
