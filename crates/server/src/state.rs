//! Opening the state the gateway keeps: the SQL store (SQLite file by default, PostgreSQL when
//! configured), the counters (in-process, or Redis), and the server secret keys are hashed with.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use modelgate_core::config::{data_dir, read_secret};
use modelgate_core::Config;
use modelgate_store::{
    AuditStore, Counters, InvocationStore, KeyStore, MemoryCounters, PostgresStore, RedisCounters,
    SqliteStore, UsageStore,
};

/// A readiness check of the store.
pub type Ping =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Every store the gateway uses.
pub struct Stores {
    /// Keys and teams.
    pub keys: Arc<dyn KeyStore>,
    /// Usage records.
    pub usage: Arc<dyn UsageStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Invocation records.
    pub invocations: Arc<dyn InvocationStore>,
    /// Counters.
    pub counters: Arc<dyn Counters>,
    /// Versions of live configuration (routing).
    pub config_versions: Arc<dyn modelgate_store::ConfigVersions>,
    /// Guardrails created through the API.
    pub guardrails: Arc<dyn modelgate_store::GuardrailStore>,
    /// Prompt templates, their reviews and renders.
    pub prompts: Arc<dyn modelgate_store::PromptStore>,
    /// The job queue.
    pub jobs: Arc<dyn modelgate_store::JobQueue>,
    /// Batch and file metadata.
    pub batches: Arc<dyn modelgate_store::BatchStore>,
    /// Workflow state machines, executions and documents.
    pub flows: Arc<dyn modelgate_store::ExecutionStore>,
    /// Stored Responses API responses.
    pub responses: Arc<dyn modelgate_store::ResponseStore>,
    /// Event bus rules and events.
    pub events: Arc<dyn modelgate_store::EventStore>,
    /// Whether the SQL store answers.
    pub ping: Ping,
    /// Where the state is, for messages.
    pub location: String,
}

/// The SQLite file: `store.sqlite_path`, else `$MODELGATE_STATE_DB`, else
/// `<data dir>/state.db`.
pub fn sqlite_path(config: &Config) -> PathBuf {
    config
        .store
        .sqlite_path
        .clone()
        .or_else(|| {
            std::env::var_os("MODELGATE_STATE_DB")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| data_dir().join("state.db"))
}

/// Open the configured stores (migrations applied).
pub async fn open(config: &Config) -> anyhow::Result<Stores> {
    let postgres = match (&config.store.postgres_url, &config.store.postgres_url_env) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(var)) => Some(
            std::env::var(var)
                .with_context(|| format!("store.postgres_url_env: {var} is not set"))?,
        ),
        (None, None) => None,
    };
    let counters: Arc<dyn Counters> = match &config.store.redis_url {
        Some(url) => Arc::new(
            RedisCounters::connect(
                url,
                config.store.redis_prefix.as_deref().unwrap_or("modelgate:"),
            )
            .await
            .context("cannot connect to Redis")?,
        ),
        None => Arc::new(MemoryCounters::default()),
    };
    Ok(match postgres {
        Some(url) => {
            let s = Arc::new(
                PostgresStore::connect(&url)
                    .await
                    .context("cannot open the PostgreSQL store")?,
            );
            let p = Arc::clone(&s);
            let ping: Ping = Arc::new(move || {
                let p = Arc::clone(&p);
                Box::pin(async move { p.ping().await.map_err(|e| e.to_string()) })
            });
            sql(s, ping, "PostgreSQL".into(), counters)
        }
        None => {
            let path = sqlite_path(config);
            let s = Arc::new(
                SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("cannot open the state file {}", path.display()))?,
            );
            let p = Arc::clone(&s);
            let ping: Ping = Arc::new(move || {
                let p = Arc::clone(&p);
                Box::pin(async move { p.ping().await.map_err(|e| e.to_string()) })
            });
            sql(s, ping, path.display().to_string(), counters)
        }
    })
}

/// The stores of one SQL backend.
fn sql<
    S: KeyStore
        + UsageStore
        + AuditStore
        + InvocationStore
        + modelgate_store::ConfigVersions
        + modelgate_store::GuardrailStore
        + modelgate_store::PromptStore
        + modelgate_store::JobQueue
        + modelgate_store::BatchStore
        + modelgate_store::ExecutionStore
        + modelgate_store::ResponseStore
        + modelgate_store::EventStore,
>(
    s: Arc<S>,
    ping: Ping,
    location: String,
    counters: Arc<dyn Counters>,
) -> Stores {
    Stores {
        keys: s.clone(),
        usage: s.clone(),
        audit: s.clone(),
        invocations: s.clone(),
        config_versions: s.clone(),
        guardrails: s.clone(),
        responses: s.clone(),
        prompts: s.clone(),
        jobs: s.clone(),
        flows: s.clone(),
        events: s.clone(),
        batches: s,
        counters,
        ping,
        location,
    }
}

/// The job service `[jobs]` describes, over the stores' queue (its workers not started yet).
pub fn jobs(
    config: &Config,
    stores: &Stores,
    keys: Option<Arc<modelgate_core::keys::KeyService>>,
    site: modelgate_core::access::Site,
) -> anyhow::Result<Arc<crate::jobs::Jobs>> {
    let c = &config.jobs;
    let objects_dir = c.objects_dir.clone().unwrap_or_else(|| {
        sqlite_path(config)
            .parent()
            .map_or_else(data_dir, PathBuf::from)
            .join("objects")
    });
    let webhooks = match &c.webhook_secret_env {
        None => None,
        Some(var) => {
            let secret = std::env::var(var)
                .ok()
                .filter(|s| !s.is_empty())
                .with_context(|| format!("jobs.webhook_secret_env: {var} is not set"))?;
            Some(crate::jobs::webhook::Deliverer::new(
                secret.into_bytes(),
                c.webhook_allow.clone(),
                c.webhook_timeout,
                c.webhook_max_attempts,
                c.webhook_backoff,
            )?)
        }
    };
    Ok(Arc::new(crate::jobs::Jobs::new(
        Arc::clone(&stores.jobs),
        Arc::clone(&stores.batches),
        crate::jobs::objects::Objects::from_config(&c.object_store, objects_dir)?,
        c.clone(),
        webhooks,
        site,
        keys,
    )))
}

/// The workflow service `[workflows]` describes (its runner not started yet); none when
/// workflows are turned off. `listen` makes the replica id, so a restarted server takes its
/// executions back at once.
pub fn flows(
    config: &Config,
    stores: &Stores,
    keys: Option<Arc<modelgate_core::keys::KeyService>>,
    site: modelgate_core::access::Site,
    listen: &str,
) -> anyhow::Result<Option<Arc<crate::flows::Flows>>> {
    if !config.workflows.enabled {
        return Ok(None);
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let me = format!("{host}:{listen}");
    // `webhook:publish` tasks sign with the jobs' webhook secret.
    let c = &config.jobs;
    let webhooks = match &c.webhook_secret_env {
        Some(var) => match std::env::var(var).ok().filter(|s| !s.is_empty()) {
            Some(secret) => Some(crate::jobs::webhook::Deliverer::new(
                secret.into_bytes(),
                c.webhook_allow.clone(),
                c.webhook_timeout,
                1,
                c.webhook_backoff,
            )?),
            None => None,
        },
        None => None,
    };
    Ok(Some(Arc::new(crate::flows::Flows::new(
        Arc::clone(&stores.flows),
        config.workflows.clone(),
        site,
        keys,
        me,
        webhooks,
    )?)))
}

/// The server secret: from `auth.secret_env`, else a random one made once in
/// `<state dir>/server.secret` (mode 0600).
pub fn server_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = read_secret(config.auth.secret_env.as_deref(), None, "the server secret")
        .map_err(|e| anyhow::anyhow!("configuration error in [auth]: {e}"))?
    {
        return Ok(s.into_bytes());
    }
    let path = sqlite_path(config)
        .parent()
        .map_or_else(data_dir, PathBuf::from)
        .join("server.secret");
    if let Ok(s) = std::fs::read(&path) {
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    let mut secret = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match write_private(&path, &secret) {
        Ok(()) => Ok(secret),
        // Another process made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read(&path)?),
        Err(e) => {
            Err(e).with_context(|| format!("cannot write the server secret to {}", path.display()))
        }
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The response cache `[cache]` describes: in process, or on `[store] redis_url`.
pub async fn open_cache(
    config: &Config,
) -> anyhow::Result<Arc<modelgate_core::cache::ResponseCache>> {
    use modelgate_core::cache::{CacheBackend, ResponseCache};
    let prices = modelgate_core::usage::PriceCatalog::new(config.prices.clone());
    Ok(Arc::new(match config.cache.backend {
        CacheBackend::Memory => {
            let bytes = usize::try_from(config.cache.max_bytes).unwrap_or(usize::MAX);
            let store = Arc::new(modelgate_store::MemoryCache::new(bytes));
            ResponseCache::new(config.cache.clone(), store, prices)
        }
        CacheBackend::Redis => {
            let url = config
                .store
                .redis_url
                .as_deref()
                .context("cache.backend = \"redis\" needs store.redis_url")?;
            let redis = Arc::new(
                modelgate_store::RedisCache::connect(
                    url,
                    config.store.redis_prefix.as_deref().unwrap_or("modelgate:"),
                )
                .await
                .context("cannot connect to Redis for the response cache")?,
            );
            // One connection serves the entries and the shared semantic vectors.
            ResponseCache::new(config.cache.clone(), redis.clone(), prices).with_vector_log(redis)
        }
    }))
}

/// Put the config file's routers in force at start (see `Routing::load_file`). When the stored
/// latest version cannot serve the models loaded now (it names one no longer configured), the
/// file's routers are put in force instead, with a warning.
pub async fn start_routing(
    routing: &modelgate_core::routing::Routing,
    doc: modelgate_core::routing::RoutingDoc,
    file: &str,
) -> anyhow::Result<()> {
    if let Err(e) = routing.load_file(doc.clone(), file).await {
        tracing::warn!(error = %e, "the stored routing version cannot be used; the config file's routers apply");
        routing
            .change(
                doc,
                &format!("file:{file}"),
                "config file (stored version unusable)",
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("routing: {e}"))?;
    }
    Ok(())
}

/// How long a changed config file must stay unchanged before it is read.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Keep routing and the declarative endpoints live: check the config file for edits every
/// `[routing] watch_interval` (an edit that does not validate is logged and changes nothing),
/// and the store for routing versions and endpoints another replica stored every
/// `sync_interval`.
pub fn spawn_config_watch(
    routing: Arc<modelgate_core::routing::Routing>,
    endpoints: Arc<modelgate_core::endpoints::Endpoints>,
    path: Option<PathBuf>,
) {
    let settings = routing.settings().clone();
    if let Some(path) = path.filter(|_| !settings.watch_interval.is_zero()) {
        let routing = Arc::clone(&routing);
        let endpoints = Arc::clone(&endpoints);
        tokio::spawn(async move {
            let stamp = |p: &std::path::Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            };
            let mut last = stamp(&path);
            let file = path.display().to_string();
            loop {
                tokio::time::sleep(settings.watch_interval).await;
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                // A file being written (truncated, then filled) must not be read half-way:
                // it is read once it has looked the same for a moment. (An editor that
                // truncates first leaves an empty file, a valid config with no routers.)
                tokio::time::sleep(settings.watch_interval.min(SETTLE)).await;
                if stamp(&path) != now {
                    continue;
                }
                last = now;
                match Config::load(&path) {
                    Err(e) => {
                        tracing::error!(error = %e, "config file changed but does not validate; routing unchanged")
                    }
                    Ok(c) => {
                        match endpoints.replace(&c.endpoints) {
                            Ok(n) => {
                                tracing::info!(endpoints = n, "config file's endpoints in force")
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "config file's endpoints refused; endpoints unchanged")
                            }
                        }
                        match routing.load_file(c.routing_doc(), &file).await {
                            Ok(Some(v)) => {
                                tracing::info!(
                                    version = v.version,
                                    "config file's routers in force"
                                )
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(error = %e, "config file's routers refused; routing unchanged")
                            }
                        }
                    }
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut failed: Option<String> = None;
        loop {
            tokio::time::sleep(settings.sync_interval).await;
            if let Err(e) = endpoints.sync().await {
                tracing::warn!(error = %e.message, "stored endpoints not applied");
            }
            match routing.sync().await {
                Ok(_) => failed = None,
                Err(e) => {
                    let message = e.to_string();
                    if failed.as_ref() != Some(&message) {
                        tracing::warn!(error = %message, "stored routing version not applied");
                    }
                    failed = Some(message);
                }
            }
        }
    });
}
