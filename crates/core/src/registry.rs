//! The model registry: every served model (its endpoints, breakers, health and policy) and the
//! index of the names clients may use for it. Built once when the models have loaded; the
//! pipeline's route layer reads it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use modelgate_providers::{Capabilities, Provider};
use modelgate_types::{ChatRequest, Error, ErrorKind, ErrorSource};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::NativeFormat;
use crate::model_id;
use crate::resilience::{
    Admission, Breaker, BreakerConfig, BreakerState, Health, HealthConfig, ResilienceConfig,
    RetryBudget, RetryConfig, TimeoutConfig,
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

/// How requests are spread over a model's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn, over the endpoints that are healthy and whose breaker admits the request.
    #[default]
    RoundRobin,
    /// Power of two choices over each endpoint's peak-EWMA latency × (calls in flight + 1),
    /// among the same endpoints (ties keep the round-robin order).
    LeastLatency,
}

/// How one model is made resilient: its retry, timeout, breaker and health settings and its
/// fallback chain.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    /// Retries with backoff.
    pub retry: RetryConfig,
    /// Time limits.
    pub timeouts: TimeoutConfig,
    /// Circuit breaker per endpoint.
    pub breaker: BreakerConfig,
    /// Active health checks per endpoint.
    pub health: HealthConfig,
    /// Models to try next, in order (their own fallbacks are not followed).
    pub fallbacks: Vec<String>,
    /// Fall back when the model refuses on content-policy grounds.
    pub fallback_on_content_policy: bool,
    /// Store answers and serve the last good one when the chain failed (opt-in).
    pub fallback_cache: bool,
    /// Serve from the response cache, overriding `[cache] enabled`.
    pub cache: Option<bool>,
    /// Time to live of cached answers, overriding `[cache] ttl`.
    pub cache_ttl: Option<Duration>,
    /// The degraded-service answer.
    pub static_response: Option<String>,
    /// How requests are spread over the model's endpoints.
    pub balance: Balance,
    /// The context window in tokens, when known.
    pub context_window: Option<u32>,
    /// When a client leaves mid-stream, keep reading the model's stream (until its end or the
    /// total timeout) so the usage record carries the provider's final figures.
    pub finish_cancelled_streams: bool,
}

impl ModelPolicy {
    /// The `[resilience]` defaults with no fallbacks.
    pub fn from_defaults(defaults: &ResilienceConfig) -> Self {
        Self {
            retry: defaults.retry.clone(),
            timeouts: defaults.timeouts.clone(),
            breaker: defaults.breaker.clone(),
            health: defaults.health.clone(),
            fallbacks: Vec::new(),
            fallback_on_content_policy: false,
            fallback_cache: false,
            cache: None,
            cache_ttl: None,
            static_response: None,
            balance: Balance::RoundRobin,
            context_window: None,
            finish_cancelled_streams: false,
        }
    }

    /// A `[[models]]` entry's policy: its own tables where it has them, else the defaults.
    pub fn for_model(defaults: &ResilienceConfig, m: &crate::config::ModelConfig) -> Self {
        let base = Self::from_defaults(defaults);
        Self {
            retry: m.retry.clone().unwrap_or(base.retry),
            timeouts: m.timeouts.clone().unwrap_or(base.timeouts),
            breaker: m.breaker.clone().unwrap_or(base.breaker),
            health: m.health.clone().unwrap_or(base.health),
            fallbacks: m.fallbacks.clone(),
            fallback_on_content_policy: m.fallback_on_content_policy,
            fallback_cache: m.fallback_cache,
            cache: m.cache,
            cache_ttl: m.cache_ttl,
            static_response: m.static_response.clone(),
            balance: m.balance,
            context_window: m.context_window,
            finish_cancelled_streams: m.finish_cancelled_streams,
        }
    }
}

impl Default for ModelPolicy {
    fn default() -> Self {
        Self::from_defaults(&ResilienceConfig::default())
    }
}

/// A model, the endpoints that serve it (provider name and provider) and its policy.
pub struct ServedModel {
    /// What clients see.
    pub info: ModelInfo,
    /// One or more endpoints serving the same model.
    pub endpoints: Vec<(String, Arc<dyn Provider>)>,
    /// Retries, timeouts, breakers, health checks and fallbacks.
    pub policy: ModelPolicy,
}

impl ServedModel {
    /// A model with one endpoint.
    pub fn new(
        info: ModelInfo,
        provider_name: impl Into<String>,
        provider: Arc<dyn Provider>,
        policy: ModelPolicy,
    ) -> Self {
        Self {
            info,
            endpoints: vec![(provider_name.into(), provider)],
            policy,
        }
    }
}

/// One endpoint's circuit breaker and health, as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// The model id.
    pub model: String,
    /// The provider serving it (`local` for the embedded models).
    pub provider: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: BreakerState,
    /// Successes in the breaker's current window.
    pub window_successes: u32,
    /// Failures in the breaker's current window.
    pub window_failures: u32,
    /// How many times the breaker has opened.
    pub times_opened: u64,
    /// Active health-check state.
    pub health: Health,
    /// Live latency and load (what `balance = "least_latency"` and the routing strategies
    /// read).
    pub latency: crate::routing::stats::StatsSnapshot,
    /// How busy the endpoint's in-process engine is (embedded models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<modelgate_providers::Load>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One provider serving one model, with its breaker and health.
pub(crate) struct Endpoint {
    pub(crate) provider_name: String,
    pub(crate) provider: Arc<dyn Provider>,
    breaker: Mutex<Breaker>,
    health: Mutex<Health>,
    /// Live latency and load of this endpoint (`balance = "least_latency"` reads them).
    pub(crate) stats: crate::routing::stats::ModelStats,
}

impl Endpoint {
    /// Feed the breaker: `None` for a success. The caller's own mistakes (client errors) and the
    /// gateway's refusals say nothing about the endpoint and are left out, and so is
    /// throttling: an endpoint shedding load is up, and retries with backoff (then the fallback
    /// chain) handle it.
    pub(crate) fn record(&self, error: Option<&Error>) {
        let failed = match error {
            None => false,
            Some(e) if e.kind == ErrorKind::Throttling || e.source == ErrorSource::Gateway => {
                return
            }
            Some(e) if e.retryable || e.source == ErrorSource::Provider => true,
            Some(_) => return,
        };
        lock(&self.breaker).record(Instant::now(), !failed);
    }
}

pub(crate) struct Entry {
    pub(crate) info: ModelInfo,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) policy: ModelPolicy,
    pub(crate) caps: Capabilities,
    pub(crate) budget: Mutex<RetryBudget>,
    /// Live latency, error and load figures (the metric-based routing strategies read them).
    pub(crate) stats: crate::routing::stats::ModelStats,
    next: AtomicUsize,
}

impl Entry {
    /// The next endpoint, round robin, that is healthy and whose breaker admits a request.
    pub(crate) fn pick(&self) -> Result<Arc<Endpoint>, Error> {
        self.pick_with(crate::routing::stats::StatsConfig::default())
    }

    /// The endpoint for the next attempt: in round-robin order, or — with `balance =
    /// "least_latency"` — the cheaper of the next endpoint and a random other by their live
    /// figures (`stats` says how they decay) first; either way the first that is healthy and
    /// whose breaker admits a request.
    pub(crate) fn pick_with(
        &self,
        stats: crate::routing::stats::StatsConfig,
    ) -> Result<Arc<Endpoint>, Error> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Round-robin order from `start`, with position 0 and position `swap` exchanged when
        // least latency prefers the other of its two choices.
        let mut swap = 0;
        if self.policy.balance == Balance::LeastLatency && n > 1 {
            let other = 1 + fastrand::usize(..n - 1);
            let cost = |k: usize| {
                self.endpoints
                    .get((start + k) % n)
                    .map_or(f64::MAX, |e| e.stats.load(now, stats).cost())
            };
            if cost(other) < cost(0) {
                swap = other;
            }
        }
        let mut wait: Option<Duration> = None;
        let mut any_healthy = false;
        for k in 0..n {
            let k = match k {
                0 => swap,
                k if k == swap => 0,
                k => k,
            };
            let Some(endpoint) = self.endpoints.get((start + k) % n) else {
                continue;
            };
            if !lock(&endpoint.health).healthy {
                continue;
            }
            any_healthy = true;
            match lock(&endpoint.breaker).admit(now) {
                Admission::Allow | Admission::Probe => return Ok(Arc::clone(endpoint)),
                Admission::Reject(w) => wait = Some(wait.map_or(w, |x| x.min(w))),
            }
        }
        let id = &self.info.id;
        Err(if any_healthy {
            Error::new(
                ErrorKind::ServiceUnavailable,
                format!(
                    "The model '{id}' is temporarily unavailable: its circuit breaker is open after repeated upstream failures."
                ),
            )
            .with_code("circuit_open")
            .with_retry_after(wait.filter(|w| !w.is_zero()))
        } else {
            Error::new(
                ErrorKind::ServiceUnavailable,
                format!("The model '{id}' is unavailable: no endpoint passes its health checks."),
            )
            .with_code("no_healthy_endpoint")
        })
    }

    /// Whether some endpoint is healthy and its breaker is not open (a routing strategy
    /// prefers such models; the call itself still goes through [`Entry::pick`]).
    pub(crate) fn available(&self) -> bool {
        let now = Instant::now();
        self.endpoints
            .iter()
            .any(|e| lock(&e.health).healthy && lock(&e.breaker).state(now) != BreakerState::Open)
    }

    pub(crate) fn check_capabilities(&self, request: &ChatRequest) -> Result<(), Error> {
        let model = &request.model;
        if !self.caps.chat {
            return Err(Error::validation(format!(
                "The model '{model}' is an embedding model and does not support chat."
            )));
        }
        if !self.caps.tools && request.tools.as_ref().is_some_and(|t| !t.tools.is_empty()) {
            return Err(Error::validation(format!(
                "The model '{model}' does not support tool use."
            )));
        }
        if !self.caps.json_output && request.response_format.is_some() {
            return Err(Error::validation(format!(
                "The model '{model}' does not support structured output (a JSON response format)."
            )));
        }
        // Parameters the provider cannot take: refused here, before any upstream call.
        self.caps.fit(request).map(|_| ())
    }
}

/// Served models and the index of every name (id or alias) clients may use for them.
pub(crate) struct Registry {
    pub(crate) entries: Vec<Arc<Entry>>,
    pub(crate) by_name: BTreeMap<String, usize>,
}

impl Registry {
    /// Index `models` under their ids and aliases. A name given twice keeps its first model
    /// (configuration validation rejects duplicates).
    pub(crate) fn new(models: Vec<ServedModel>) -> Self {
        let mut entries: Vec<Arc<Entry>> = models
            .into_iter()
            .filter_map(|m| {
                let caps = m.endpoints.first()?.1.capabilities();
                let endpoints = m
                    .endpoints
                    .into_iter()
                    .map(|(provider_name, provider)| {
                        Arc::new(Endpoint {
                            provider_name,
                            provider,
                            breaker: Mutex::new(Breaker::new(m.policy.breaker.clone())),
                            health: Mutex::new(Health::default()),
                            stats: crate::routing::stats::ModelStats::default(),
                        })
                    })
                    .collect();
                Some(Arc::new(Entry {
                    info: m.info,
                    endpoints,
                    budget: Mutex::new(RetryBudget::new(&m.policy.retry)),
                    policy: m.policy,
                    caps,
                    stats: crate::routing::stats::ModelStats::default(),
                    next: AtomicUsize::new(0),
                }))
            })
            .collect();
        entries.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut by_name = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            for name in std::iter::once(&e.info.id).chain(&e.info.aliases) {
                by_name.entry(name.clone()).or_insert(i);
            }
        }
        Self { entries, by_name }
    }

    /// Start the active health checks of every endpoint whose model enables them.
    pub(crate) fn spawn_health_checks(
        &self,
        runtime: &tokio::runtime::Handle,
    ) -> Vec<tokio::task::AbortHandle> {
        let mut tasks = Vec::new();
        for e in self.entries.iter().filter(|e| e.policy.health.enabled) {
            for endpoint in &e.endpoints {
                let check = health_loop(
                    e.info.id.clone(),
                    Arc::clone(endpoint),
                    e.policy.health.clone(),
                );
                tasks.push(runtime.spawn(check).abort_handle());
            }
        }
        tasks
    }

    /// The model a client's name refers to: an id or alias, also in its AWS forms
    /// (cross-region profile id, foundation-model or inference-profile ARN).
    pub(crate) fn route(&self, model: &str) -> Result<&Arc<Entry>, Error> {
        model_id::candidates(model)
            .into_iter()
            .find_map(|name| self.by_name.get(name))
            .and_then(|&i| self.entries.get(i))
            .ok_or_else(|| Error::model_not_found(model))
    }

    /// A configured model by its exact id or alias (fallback chains name models this way).
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    /// Whether every provider is ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.entries
            .iter()
            .flat_map(|e| &e.endpoints)
            .all(|e| e.provider.is_ready())
    }

    /// Every endpoint's breaker and health, by model.
    pub(crate) fn endpoint_status(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        let mut out = Vec::new();
        for e in &self.entries {
            for endpoint in &e.endpoints {
                let breaker = lock(&endpoint.breaker);
                let (ok, failed) = breaker.window_counts();
                out.push(EndpointStatus {
                    model: e.info.id.clone(),
                    provider: endpoint.provider_name.clone(),
                    breaker: breaker.state(now),
                    window_successes: ok,
                    window_failures: failed,
                    times_opened: breaker.times_opened(),
                    health: lock(&endpoint.health).clone(),
                    latency: endpoint
                        .stats
                        .snapshot(now, crate::routing::stats::StatsConfig::default()),
                    load: endpoint.provider.load(),
                });
            }
        }
        out
    }
}

/// An endpoint's active health checks: one every `interval`, each allowed `timeout`.
async fn health_loop(model: String, endpoint: Arc<Endpoint>, config: HealthConfig) {
    let mut ticker = tokio::time::interval_at(Instant::now() + config.interval, config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result =
            match tokio::time::timeout(config.timeout, endpoint.provider.health_check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.message),
                Err(_) => Err(format!(
                    "no answer within {}s",
                    config.timeout.as_secs_f64()
                )),
            };
        let changed = lock(&endpoint.health).record(&config, result);
        match changed {
            Some(false) => {
                tracing::warn!(model = %model, provider = %endpoint.provider_name, "endpoint failed its health checks; taken out")
            }
            Some(true) => {
                tracing::info!(model = %model, provider = %endpoint.provider_name, "endpoint passes its health checks again; back in")
            }
            None => {}
        }
    }
}
