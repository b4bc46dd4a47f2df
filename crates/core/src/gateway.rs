//! The gateway: the model registry and the request pipeline every front door calls.
//!
//! The pipeline, in order (later issues add auth, rate limits, guardrails and accounting in
//! front of it; `docs/ARCHITECTURE.md` keeps the full list):
//!
//! 1. validate the canonical request and route the client's model name to its entry;
//! 2. check the model can do what is asked (tools, structured output);
//! 3. walk the fallback chain — the model, then its `fallbacks` in order. For each model:
//!    skip it when the input cannot fit its context window; otherwise make up to
//!    `retry.max_attempts` attempts, each on the next endpoint that is healthy and whose
//!    circuit breaker admits it (round robin), under the request's total deadline (and, for
//!    streams, the first-token timeout), waiting between attempts by exponential backoff with
//!    jitter or the upstream's `Retry-After`, while the retry budget allows;
//! 4. when every model failed: the last good answer to the same request, then the model's
//!    static answer, else the last error.
//!
//! A stream is retried or falls back only until its first output is handed to the front door;
//! after that a failure ends it with an error event. The answer says which model served it and
//! why ([`Served`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::Hasher as _;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use modelgate_providers::{Capabilities, ChatStream, Provider};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::NativeFormat;
use crate::model_id;
use crate::resilience::{
    Admission, Breaker, BreakerConfig, BreakerState, Health, HealthConfig, ResilienceConfig,
    RetryBudget, RetryConfig, TimeoutConfig,
};
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, EmbedRequest, EmbedResponse, Error, ErrorKind,
    ErrorSource, Message, Role, StopReason, StreamEvent, ToolResultContent, Usage,
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
    /// Serve the last good answer when the chain failed.
    pub fallback_cache: bool,
    /// The degraded-service answer.
    pub static_response: Option<String>,
    /// The context window in tokens, when known.
    pub context_window: Option<u32>,
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
            fallback_cache: true,
            static_response: None,
            context_window: None,
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
            static_response: m.static_response.clone(),
            context_window: m.context_window,
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

/// An answer and how it was obtained.
#[derive(Debug)]
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// The model that answered, or `cache` / `static` for the degraded levels.
    pub served_by: String,
    /// Why the requested model did not answer (`circuit_open`, `unhealthy`, `timeout`,
    /// `throttled`, `upstream_error`, `context_window`, `content_policy`), when it did not.
    pub fallback_reason: Option<&'static str>,
    /// Upstream attempts made, over every model tried.
    pub attempts: u32,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One provider serving one model, with its breaker and health.
struct Endpoint {
    provider_name: String,
    provider: Arc<dyn Provider>,
    breaker: Mutex<Breaker>,
    health: Mutex<Health>,
}

impl Endpoint {
    /// Feed the breaker: `None` for a success. The caller's own mistakes (client errors) say
    /// nothing about the endpoint and are left out, and so is throttling: an endpoint shedding
    /// load is up, and retries with backoff (then the fallback chain) handle it.
    fn record(&self, error: Option<&Error>) {
        let failed = match error {
            None => false,
            Some(e) if e.kind == ErrorKind::Throttling => return,
            Some(e) if e.retryable || e.source == ErrorSource::Provider => true,
            Some(_) => return,
        };
        lock(&self.breaker).record(Instant::now(), !failed);
    }
}

struct Entry {
    info: ModelInfo,
    endpoints: Vec<Arc<Endpoint>>,
    policy: ModelPolicy,
    caps: Capabilities,
    budget: Mutex<RetryBudget>,
    next: AtomicUsize,
}

impl Entry {
    /// The next endpoint, round robin, that is healthy and whose breaker admits a request.
    fn pick(&self) -> Result<Arc<Endpoint>, Error> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut wait: Option<Duration> = None;
        let mut any_healthy = false;
        for k in 0..n {
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

    fn check_capabilities(&self, request: &ChatRequest) -> Result<(), Error> {
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
        Ok(())
    }
}

/// Served models and the index of every name (id or alias) clients may use for them.
struct Registry {
    entries: Vec<Entry>,
    by_name: BTreeMap<String, usize>,
}

/// The last good answers, by request, for the cached fallback level.
struct FallbackCache(Option<Mutex<lru::LruCache<u64, ChatResponse>>>);

impl FallbackCache {
    fn new(entries: usize) -> Self {
        Self(NonZeroUsize::new(entries).map(|n| Mutex::new(lru::LruCache::new(n))))
    }

    fn put(&self, key: u64, response: ChatResponse) {
        if let Some(c) = &self.0 {
            lock(c).put(key, response);
        }
    }

    fn enabled(&self) -> bool {
        self.0.is_some()
    }

    fn get(&self, key: u64) -> Option<ChatResponse> {
        self.0.as_ref().and_then(|c| lock(c).get(&key).cloned())
    }
}

/// A request's identity for the cached level: a hash of everything in it.
fn request_key(request: &ChatRequest) -> u64 {
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut w = HashWriter(std::collections::hash_map::DefaultHasher::new());
    let _ = std::fmt::Write::write_fmt(&mut w, format_args!("{request:?}"));
    w.0.finish()
}

/// A rough upper estimate of the tokens a request needs: four bytes of text per token, plus
/// a little per message, plus the requested output.
fn estimate_tokens(request: &ChatRequest) -> u64 {
    let text_bytes = |b: &ContentBlock| -> usize {
        match b {
            ContentBlock::Text(t) => t.len(),
            ContentBlock::ToolUse(t) => t.input.to_string().len() + t.name.len(),
            ContentBlock::ToolResult(r) => r
                .content
                .iter()
                .map(|c| match c {
                    ToolResultContent::Text(t) => t.len(),
                    ToolResultContent::Json(v) => v.to_string().len(),
                    _ => 0,
                })
                .sum(),
            _ => 0,
        }
    };
    let bytes: usize = request
        .system
        .iter()
        .filter_map(|s| s.text())
        .map(str::len)
        .sum::<usize>()
        + request
            .messages
            .iter()
            .flat_map(|m| m.content.iter())
            .map(text_bytes)
            .sum::<usize>();
    let messages = request.messages.len() as u64;
    (bytes as u64).div_ceil(4) + 4 * messages + u64::from(request.inference.max_tokens.unwrap_or(0))
}

fn total_timeout() -> Error {
    Error {
        retryable: false,
        ..Error::new(
            ErrorKind::Timeout,
            "The model is taking too long to respond. Please try a simpler query.",
        )
    }
}

/// Why a model's failure sends the request on down the chain, or `None` when it must go back
/// to the caller (their own mistake).
fn fallback_reason(e: &Error, content_policy: bool) -> Option<&'static str> {
    match e.code {
        Some("circuit_open") => return Some("circuit_open"),
        Some("no_healthy_endpoint") => return Some("unhealthy"),
        Some("context_length_exceeded") => return Some("context_window"),
        Some("content_filter") if content_policy => return Some("content_policy"),
        _ => {}
    }
    if e.source == ErrorSource::Client && !e.retryable {
        return None;
    }
    Some(match e.kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::Throttling => "throttled",
        _ => "upstream_error",
    })
}

/// How a walk down the chain ended.
enum Walk<'a, T> {
    /// A model (this entry, at this endpoint) answered.
    Answered(T, &'a Entry, Arc<Endpoint>, Served<()>),
    /// Every model failed; the degraded levels may still answer.
    Exhausted(Error, Served<()>),
    /// A failure that is the caller's to see (a client error).
    Refused(Error),
}

/// The registry of served models; filled once the models have loaded.
pub struct Gateway {
    models: OnceLock<Registry>,
    cache: Arc<FallbackCache>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self::with_fallback_cache(ResilienceConfig::default().fallback_cache_entries)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Gateway {
    /// An empty gateway: every model call answers 503 until [`Gateway::install`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty gateway whose cached fallback level keeps `entries` answers.
    pub fn with_fallback_cache(entries: usize) -> Self {
        Self {
            models: OnceLock::new(),
            cache: Arc::new(FallbackCache::new(entries)),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Make `models` servable under their ids and aliases and start their endpoints' health
    /// checks (when called inside a Tokio runtime). Only the first call takes effect; a name
    /// given twice keeps its first model (configuration validation rejects duplicates).
    pub fn install(&self, models: Vec<ServedModel>) {
        let mut entries: Vec<Entry> = models
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
                        })
                    })
                    .collect();
                Some(Entry {
                    info: m.info,
                    endpoints,
                    budget: Mutex::new(RetryBudget::new(&m.policy.retry)),
                    policy: m.policy,
                    caps,
                    next: AtomicUsize::new(0),
                })
            })
            .collect();
        entries.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        let mut by_name = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            for name in std::iter::once(&e.info.id).chain(&e.info.aliases) {
                by_name.entry(name.clone()).or_insert(i);
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut tasks = lock(&self.tasks);
            for e in entries.iter().filter(|e| e.policy.health.enabled) {
                for endpoint in &e.endpoints {
                    let check = health_loop(
                        e.info.id.clone(),
                        Arc::clone(endpoint),
                        e.policy.health.clone(),
                    );
                    tasks.push(runtime.spawn(check).abort_handle());
                }
            }
        }
        let _ = self.models.set(Registry { entries, by_name });
    }

    /// Whether the models have loaded and every provider is ready.
    pub fn is_ready(&self) -> bool {
        self.models.get().is_some_and(|m| {
            m.entries
                .iter()
                .flat_map(|e| &e.endpoints)
                .all(|e| e.provider.is_ready())
        })
    }

    /// The served models, sorted by id.
    pub fn list(&self) -> Vec<ModelInfo> {
        self.models
            .get()
            .map(|m| m.entries.iter().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Every endpoint's breaker and health, by model.
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        let Some(registry) = self.models.get() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &registry.entries {
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
                });
            }
        }
        out
    }

    /// The model a client's name refers to: an id or alias, also in its AWS forms
    /// (cross-region profile id, foundation-model or inference-profile ARN).
    pub fn resolve(&self, model: &str) -> Result<&ModelInfo, Error> {
        self.route(model).map(|e| &e.info)
    }

    fn registry(&self) -> Result<&Registry, Error> {
        self.models.get().ok_or_else(|| {
            Error::new(
                ErrorKind::ServiceUnavailable,
                "Models are still loading; retry in a moment.",
            )
        })
    }

    fn route(&self, model: &str) -> Result<&Entry, Error> {
        let registry = self.registry()?;
        model_id::candidates(model)
            .into_iter()
            .find_map(|name| registry.by_name.get(name))
            .and_then(|&i| registry.entries.get(i))
            .ok_or_else(|| Error::model_not_found(model))
    }

    /// Steps 1–2 of the pipeline: validate, route and check capabilities; the request's
    /// deadline and, when the model uses the cached level, the request's key there (hashing
    /// the whole request is not free, so it is skipped otherwise).
    fn admit(&self, request: &ChatRequest) -> Result<(&Entry, Instant, Option<u64>), Error> {
        validate_chat(request)?;
        let entry = self.route(&request.model)?;
        entry.check_capabilities(request)?;
        let deadline = Instant::now() + entry.policy.timeouts.total;
        let key =
            (entry.policy.fallback_cache && self.cache.enabled()).then(|| request_key(request));
        Ok((entry, deadline, key))
    }

    /// Stream a chat answer.
    pub async fn converse_stream(&self, request: ChatRequest) -> Result<Served<ChatStream>, Error> {
        let (entry, deadline, key) = self.admit(&request)?;
        let walk = self
            .walk(
                entry,
                &request,
                deadline,
                |_| false,
                |model, provider, request| {
                    let first_token = model.policy.timeouts.first_token;
                    async move { open_stream(provider, request, first_token).await }
                },
            )
            .await;
        match walk {
            Walk::Answered((head, rest), answered_by, endpoint, served) => {
                let idle = answered_by.policy.timeouts.idle;
                let cache = key.map(|k| (Arc::clone(&self.cache), k, served.served_by.clone()));
                let stream = guard(head, rest, endpoint, idle, deadline, cache);
                Ok(served.with(stream))
            }
            Walk::Exhausted(error, served) => {
                let (response, served) = self.degraded(entry, key, error, served)?.split();
                let events = modelgate_providers::response_events(&response);
                let stream = futures::stream::iter(events.into_iter().map(Ok)).boxed();
                Ok(served.with(stream))
            }
            Walk::Refused(error) => Err(error),
        }
    }

    /// Answer a chat request in one piece.
    pub async fn converse(&self, request: ChatRequest) -> Result<Served<ChatResponse>, Error> {
        let (entry, deadline, key) = self.admit(&request)?;
        let walk = self
            .walk(
                entry,
                &request,
                deadline,
                |r: &ChatResponse| r.stop_reason == StopReason::ContentFiltered,
                |_, provider, request| async move { provider.converse(request).await },
            )
            .await;
        match walk {
            Walk::Answered(response, _, endpoint, served) => {
                endpoint.record(None);
                if let Some(key) = key {
                    self.cache.put(key, response.clone());
                }
                Ok(served.with(response))
            }
            Walk::Exhausted(error, served) => self.degraded(entry, key, error, served),
            Walk::Refused(error) => Err(error),
        }
    }

    /// Walk the fallback chain of `entry` until a model answers; see the module docs.
    /// `refused` tells a content-policy refusal among answers.
    async fn walk<'a, T, F, Fut>(
        &'a self,
        entry: &'a Entry,
        request: &ChatRequest,
        deadline: Instant,
        refused: fn(&T) -> bool,
        mut call: F,
    ) -> Walk<'a, T>
    where
        F: FnMut(&Entry, Arc<dyn Provider>, ChatRequest) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let Ok(registry) = self.registry() else {
            return Walk::Refused(Error::internal("no registry"));
        };
        let fallbacks = entry.policy.fallbacks.iter().filter_map(|name| {
            let fallback = registry.by_name.get(name).and_then(|&i| registry.entries.get(i))?;
            let fits = fallback.check_capabilities(request);
            if let Err(e) = &fits {
                tracing::warn!(model = %entry.info.id, fallback = %name, reason = %e, "fallback skipped");
            }
            fits.ok().map(|()| fallback)
        });
        let chain: Vec<&'a Entry> = std::iter::once(entry).chain(fallbacks).collect();
        let estimate = estimate_tokens(request);
        let mut reason = None;
        let mut attempts = 0;
        let mut last_error = None;
        for (i, model) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            if Instant::now() >= deadline {
                reason.get_or_insert("timeout");
                last_error = Some(total_timeout());
                break;
            }
            if let Some(window) = model.policy.context_window {
                if estimate > u64::from(window) {
                    reason.get_or_insert("context_window");
                    last_error = Some(Error::validation(format!(
                        "The input (about {estimate} tokens with the requested output) does not fit the context window of the model '{}' ({window} tokens).",
                        model.info.id
                    )).with_code("context_length_exceeded"));
                    continue;
                }
            }
            // A fallback answers under its own name; the requested model takes the request as is.
            let renamed;
            let req = if i == 0 {
                request
            } else {
                let mut r = request.clone();
                r.model.clone_from(&model.info.id);
                renamed = r;
                &renamed
            };
            let served = |n| Served {
                value: (),
                served_by: model.info.id.clone(),
                fallback_reason: reason,
                attempts: n,
            };
            let attempt = |provider| call(model, provider, req.clone());
            match self.attempts(model, deadline, attempt).await {
                Ok((value, endpoint, n)) => {
                    attempts += n;
                    if !last && entry.policy.fallback_on_content_policy && refused(&value) {
                        endpoint.record(None);
                        reason.get_or_insert("content_policy");
                        continue;
                    }
                    return Walk::Answered(value, model, endpoint, served(attempts));
                }
                Err((error, n)) => {
                    attempts += n;
                    let why = fallback_reason(&error, entry.policy.fallback_on_content_policy);
                    tracing::warn!(
                        model = %model.info.id, kind = ?error.kind, status = error.status(),
                        attempts = n, fallback = ?why.filter(|_| !last), "model failed"
                    );
                    let Some(why) = why else {
                        return Walk::Refused(error);
                    };
                    reason.get_or_insert(why);
                    last_error = Some(error);
                }
            }
        }
        let error = last_error.unwrap_or_else(total_timeout);
        if error.source == ErrorSource::Client {
            return Walk::Refused(error);
        }
        Walk::Exhausted(
            error,
            Served {
                value: (),
                served_by: String::new(),
                fallback_reason: reason,
                attempts,
            },
        )
    }

    /// Up to `retry.max_attempts` attempts on `model`'s endpoints; see the module docs.
    /// Failures feed the endpoints' breakers; the caller records the success.
    async fn attempts<T, F, Fut>(
        &self,
        model: &Entry,
        deadline: Instant,
        mut call: F,
    ) -> Result<(T, Arc<Endpoint>, u32), (Error, u32)>
    where
        F: FnMut(Arc<dyn Provider>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let retry = &model.policy.retry;
        lock(&model.budget).deposit();
        let mut attempt = 0;
        loop {
            let endpoint = model.pick().map_err(|e| (e, attempt))?;
            attempt += 1;
            let pending = call(Arc::clone(&endpoint.provider));
            let error = match tokio::time::timeout_at(deadline, pending).await {
                Ok(Ok(value)) => return Ok((value, endpoint, attempt)),
                Ok(Err(e)) => e,
                Err(_) => total_timeout(),
            };
            endpoint.record(Some(&error));
            if !error.retryable || attempt >= retry.max_attempts {
                return Err((error, attempt));
            }
            let mut wait = retry.backoff(attempt, fastrand::f64());
            if let Some(asked) = error.retry_after {
                if asked > retry.max_backoff {
                    return Err((error, attempt));
                }
                wait = wait.max(asked);
            }
            if Instant::now() + wait >= deadline || !lock(&model.budget).withdraw() {
                return Err((error, attempt));
            }
            tracing::debug!(model = %model.info.id, attempt, wait_ms = wait.as_millis() as u64, kind = ?error.kind, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The degraded levels after every model failed: the last good answer, then the static
    /// answer, else the error.
    fn degraded(
        &self,
        entry: &Entry,
        key: Option<u64>,
        error: Error,
        served: Served<()>,
    ) -> Result<Served<ChatResponse>, Error> {
        let cached = key.and_then(|k| self.cache.get(k));
        let (response, by) = if let Some(r) = cached {
            (r, "cache")
        } else if let Some(text) = &entry.policy.static_response {
            let response = ChatResponse {
                model: entry.info.id.clone(),
                message: Message::text(Role::Assistant, text),
                stop_reason: StopReason::EndTurn,
                usage: Usage::default(),
                latency_ms: 0,
            };
            (response, "static")
        } else {
            return Err(error);
        };
        tracing::warn!(model = %entry.info.id, served_by = by, reason = ?served.fallback_reason, "degraded answer");
        Ok(Served {
            value: response,
            served_by: by.into(),
            fallback_reason: served.fallback_reason,
            attempts: served.attempts,
        })
    }

    /// Count input tokens with the model's tokenizer.
    pub async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        validate_chat(request)?;
        let entry = self.route(&request.model)?;
        let endpoint = entry.pick()?;
        endpoint.provider.count_tokens(request).await
    }

    /// Embed texts, with retries, breakers and health checks but no fallback chain (another
    /// model's vectors would live in a different space).
    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        let entry = self.route(&request.model)?;
        if !entry.caps.embeddings {
            return Err(Error::validation(format!(
                "The model '{}' does not support embeddings.",
                request.model
            )));
        }
        let deadline = Instant::now() + entry.policy.timeouts.total;
        let call = |provider: Arc<dyn Provider>| {
            let request = request.clone();
            async move { provider.embed(request).await }
        };
        match self.attempts(entry, deadline, call).await {
            Ok((response, endpoint, _)) => {
                endpoint.record(None);
                Ok(response)
            }
            Err((error, _)) => Err(error),
        }
    }
}

impl<T> Served<T> {
    /// The answer, and how it was obtained.
    pub fn split(self) -> (T, Served<()>) {
        let Served {
            value,
            served_by,
            fallback_reason,
            attempts,
        } = self;
        let meta = Served {
            value: (),
            served_by,
            fallback_reason,
            attempts,
        };
        (value, meta)
    }
}

impl Served<()> {
    /// The same story about another value.
    pub fn with<T>(self, value: T) -> Served<T> {
        Served {
            value,
            served_by: self.served_by,
            fallback_reason: self.fallback_reason,
            attempts: self.attempts,
        }
    }
}

/// Open a stream and wait for its first output (events up to and including the first one
/// after `MessageStart`), so a failure before anything reached the caller can be retried.
async fn open_stream(
    provider: Arc<dyn Provider>,
    request: ChatRequest,
    first_token: Duration,
) -> Result<(Vec<StreamEvent>, ChatStream), Error> {
    let open = async {
        let mut stream = provider.converse_stream(request).await?;
        let mut head = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event?;
            let started = matches!(event, StreamEvent::MessageStart { .. });
            head.push(event);
            if !started {
                break;
            }
        }
        Ok((head, stream))
    };
    tokio::time::timeout(first_token, open).await.map_err(|_| {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "The model sent no output within the first-token timeout ({}s).",
                first_token.as_secs_f64()
            ),
        )
    })?
}

/// The rest of a started stream under the idle and total time limits. Its end feeds the
/// endpoint's breaker and, when wanted, the cached fallback level.
fn guard(
    head: Vec<StreamEvent>,
    mut rest: ChatStream,
    endpoint: Arc<Endpoint>,
    idle: Duration,
    deadline: Instant,
    cache: Option<(Arc<FallbackCache>, u64, String)>,
) -> ChatStream {
    Box::pin(async_stream::stream! {
        let mut seen: Option<Vec<StreamEvent>> = cache.as_ref().map(|_| Vec::new());
        for event in head {
            if let Some(s) = &mut seen {
                s.push(event.clone());
            }
            yield Ok(event);
        }
        loop {
            let limit = (Instant::now() + idle).min(deadline);
            match tokio::time::timeout_at(limit, rest.next()).await {
                Ok(Some(Ok(event))) => {
                    if let Some(s) = &mut seen {
                        s.push(event.clone());
                    }
                    yield Ok(event);
                }
                Ok(Some(Err(e))) => {
                    endpoint.record(Some(&e));
                    yield Err(e);
                    break;
                }
                Ok(None) => {
                    endpoint.record(None);
                    if let (Some((cache, key, model)), Some(events)) = (&cache, seen.take()) {
                        let replay = futures::stream::iter(events.into_iter().map(Ok)).boxed();
                        if let Ok(r) = modelgate_providers::collect_stream(model.clone(), replay).await {
                            cache.put(*key, r);
                        }
                    }
                    break;
                }
                Err(_) => {
                    let e = if Instant::now() >= deadline {
                        total_timeout()
                    } else {
                        Error::new(
                            ErrorKind::Timeout,
                            format!("The model's stream stalled for {}s (idle timeout).", idle.as_secs_f64()),
                        )
                    };
                    endpoint.record(Some(&e));
                    yield Err(e);
                    break;
                }
            }
        }
    })
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
