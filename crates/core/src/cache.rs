//! The response cache: exact (a 128-bit hash of the canonical request, the stored request
//! compared on every hit) and, when enabled, semantic (embeddings of the last user turn, a
//! similarity floor and a content-word gate, [`crate::semantic`]). Entries are scoped to the
//! caller's team or key by default, stored in canonical form (so one entry answers every
//! dialect, whole or streamed) and kept in process or in Redis
//! ([`modelgate_store::CacheStore`]).
//!
//! The same layer is the pipeline's degraded "last good answer" level: for models with
//! `fallback_cache = true`, answers are stored (even with the cache off) and kept past their
//! time to live, and when every model of the chain failed a stale entry is served, marked
//! `x-modelgate-cache: stale`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use modelgate_providers::Provider;
use modelgate_store::{CacheEntryInfo, CacheFilter, CacheKey, CacheStore, MemoryCache, VectorLog};
use modelgate_types::{
    ChatRequest, ChatResponse, ContentBlock, EmbedInput, EmbedRequest, Error, Message,
    ResponseFormat, Role, StopReason, Usage,
};
use serde::{Deserialize, Serialize};

use crate::context::{CacheDirectives, CallContext};
use crate::keys::now_ms;
use crate::pipeline::{Answer, Call, Layer, Next};
use crate::semantic::{SemanticIndex, SemanticQuery};
use crate::usage::PriceCatalog;

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Serve repeated requests from the cache (every model, unless a model says
    /// `cache = false`; a model's `cache = true` turns it on for that model alone).
    pub enabled: bool,
    /// `memory` (this process, LRU bounded by `max_bytes`) or `redis` (`[store] redis_url`,
    /// shared by every replica).
    pub backend: CacheBackend,
    /// Bytes the in-process cache may hold.
    pub max_bytes: u64,
    /// How long an answer is served (a model's `cache_ttl`, then the request's TTL, replace
    /// it; a request's TTL is capped at `max_ttl`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The longest TTL a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long past its TTL an answer is kept for the degraded level (models with
    /// `fallback_cache = true`).
    #[serde(with = "humantime_serde")]
    pub stale_for: Duration,
    /// Whose answers a caller may be served: `team` (the caller's team, else its key),
    /// `key`, or `global` (everyone shares).
    pub scope: CacheScope,
    /// Also store answers that end in a tool call.
    pub tool_calls: bool,
    /// `[cache.semantic]`
    pub semantic: SemanticConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            backend: CacheBackend::Memory,
            max_bytes: 256 << 20,
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            stale_for: Duration::from_secs(24 * 3600),
            scope: CacheScope::Team,
            tool_calls: false,
            semantic: SemanticConfig::default(),
        }
    }
}

/// Where cached answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// In this process.
    Memory,
    /// In Redis (`[store] redis_url`).
    Redis,
}

/// Whose answers a caller may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// The caller's team, else its key.
    Team,
    /// The caller's key.
    Key,
    /// Every caller shares one cache.
    Global,
}

/// `[cache.semantic]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    /// Also serve answers to requests that mean the same (off by default).
    pub enabled: bool,
    /// The embedding model (any served embedding model).
    pub model: String,
    /// The similarity floor (cosine, 0–1); a request may raise it, never lower it.
    pub threshold: f32,
    /// Only conversations of at most this many messages are matched semantically.
    pub max_messages: usize,
    /// Vectors kept in the in-process index (oldest dropped first).
    pub max_entries: usize,
    /// Only requests with temperature 0 are matched, unless a request opts in.
    pub require_zero_temperature: bool,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: "local.all-minilm-l6-v2".into(),
            threshold: 0.95,
            max_messages: 1,
            max_entries: 100_000,
            require_zero_temperature: true,
        }
    }
}

impl CacheConfig {
    /// Range checks; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.semantic;
        if !(s.threshold > 0.0 && s.threshold <= 1.0) {
            return Err("key `cache.semantic.threshold` must be in (0, 1]".into());
        }
        if s.max_messages == 0 || s.max_entries == 0 {
            return Err(
                "keys `cache.semantic.max_messages` and `max_entries` must be greater than 0"
                    .into(),
            );
        }
        if self.ttl.is_zero() || self.max_ttl.is_zero() {
            return Err("keys `cache.ttl` and `cache.max_ttl` must be greater than 0".into());
        }
        Ok(())
    }
}

/// How a call met the cache, for the response headers, the outcome and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// Served from the exact cache.
    Hit,
    /// Served from a semantically matching entry.
    SemanticHit,
    /// Looked up, not found (the answer is stored if it qualifies).
    Miss,
    /// Not looked up (`no-cache`, refresh, or not eligible); the answer may still be stored.
    Bypass,
    /// Served a stale entry because every model failed.
    Stale,
}

impl CacheStatus {
    /// The header and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::SemanticHit => "semantic-hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Stale => "stale",
        }
    }

    /// Whether the answer came from the cache.
    pub fn served(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit | CacheStatus::SemanticHit | CacheStatus::Stale
        )
    }
}

/// What the cache did for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheReport {
    /// Hit, miss…
    pub status: CacheStatus,
    /// The entry's request hash (32 hex digits).
    pub key: String,
    /// For a semantic hit: the similarity of the two requests.
    pub similarity: Option<f32>,
    /// For a hit: the entry's age.
    pub age: Option<Duration>,
    /// For a hit: the tokens the original call used (not used again).
    pub saved_usage: Option<Usage>,
    /// For a hit: what the original call cost, in nano-dollars.
    pub saved_nanos: i64,
}

/// The response cache: its settings, its store and (when enabled) its semantic index.
pub struct ResponseCache {
    config: CacheConfig,
    store: Arc<dyn CacheStore>,
    semantic: Option<SemanticIndex>,
    /// Where replicas share their semantic vectors (with the Redis backend).
    vectors: Option<Arc<dyn VectorLog>>,
    prices: PriceCatalog,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        let config = CacheConfig::default();
        let store = Arc::new(MemoryCache::new(config.max_bytes as usize));
        Self::new(config, store, PriceCatalog::new(Default::default()))
    }
}

impl ResponseCache {
    /// A cache with these settings over `store`, pricing saved calls with `prices`.
    pub fn new(config: CacheConfig, store: Arc<dyn CacheStore>, prices: PriceCatalog) -> Self {
        let semantic = config
            .semantic
            .enabled
            .then(|| SemanticIndex::new(config.semantic.max_entries));
        Self {
            config,
            store,
            semantic,
            vectors: None,
            prices,
        }
    }

    /// Share the semantic index's vectors with every replica through `log`: each replica
    /// appends the vectors of the answers it stores and, before a semantic search, reads what
    /// the others appended to that partition since it last looked.
    pub fn with_vector_log(mut self, log: Arc<dyn VectorLog>) -> Self {
        self.vectors = Some(log);
        self
    }

    /// Its settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Up to `limit` stored entries matching `filter`.
    pub async fn entries(
        &self,
        filter: &CacheFilter,
        limit: usize,
    ) -> Result<Vec<CacheEntryInfo>, Error> {
        self.store
            .entries(filter, limit)
            .await
            .map_err(|e| Error::internal(format!("cache store: {e}")))
    }

    /// Drop every entry matching `filter` (semantic vectors included); how many were dropped.
    pub async fn invalidate(&self, filter: &CacheFilter) -> Result<u64, Error> {
        if let Some(s) = &self.semantic {
            s.remove(filter);
        }
        // A log holds many entries' vectors: it goes only when a whole namespace, model or
        // scope does (a single entry's vector stays, and can no longer lead to its answer).
        if let (Some(log), None) = (&self.vectors, filter.hash) {
            log.remove_logs(filter)
                .await
                .map_err(|e| Error::internal(format!("cache store: {e}")))?;
        }
        self.store
            .remove(filter)
            .await
            .map_err(|e| Error::internal(format!("cache store: {e}")))
    }

    /// The scope a caller's entries live in.
    fn scope(&self, ctx: &CallContext) -> String {
        match (self.config.scope, ctx.principal()) {
            (CacheScope::Global, _) => "global".into(),
            (_, None) => "anonymous".into(),
            (CacheScope::Team, Some(p)) => match &p.team {
                Some(team) => format!("team:{team}"),
                None => format!("key:{}", p.id),
            },
            (CacheScope::Key, Some(p)) => format!("key:{}", p.id),
        }
    }

    /// The entry under `key`; with `canonical`, only if it answers exactly that request (a
    /// semantic match reads its target without).
    async fn read(&self, key: &CacheKey, canonical: Option<&[u8]>) -> Option<Stored> {
        let bytes = match self.store.get(key).await {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!(error = %e, "cache read failed; answering without the cache");
                return None;
            }
        };
        let (stored_request, stored) = decode(&bytes)?;
        canonical
            .is_none_or(|c| c == stored_request)
            .then_some(stored)
    }

    /// Read what other replicas appended to `partition`'s vector log since this one last did.
    async fn catch_up(&self, partition: u128, key: &CacheKey) {
        let (Some(log), Some(index)) = (&self.vectors, &self.semantic) else {
            return;
        };
        let from = index.synced(partition);
        match log.read(key, partition, from).await {
            Ok((start, records)) => {
                let n = records.len() as u64;
                for r in records {
                    if let Some((hash, expires, vector, text)) = decode_vector(&r) {
                        let k = CacheKey {
                            hash,
                            ..key.clone()
                        };
                        index.insert(partition, &k, vector, text, expires);
                    }
                }
                index.mark_synced(partition, start, start + n);
            }
            Err(e) => {
                tracing::warn!(error = %e, "semantic cache: reading the shared vectors failed")
            }
        }
    }
}

/// One stored answer and when it was stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The model that produced it.
    model: String,
    message: Message,
    stop_reason: StopReason,
    usage: Usage,
    latency_ms: u64,
    /// Per-token log-probabilities, when the request asked for them (they are in the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<modelgate_types::TokenLogprob>>,
    stored_at_ms: i64,
    ttl_ms: i64,
    /// What producing it cost (nano-dollars).
    cost_nanos: i64,
}

impl Stored {
    fn age(&self) -> Duration {
        Duration::from_millis(u64::try_from(now_ms() - self.stored_at_ms).unwrap_or(0))
    }

    fn fresh(&self, max_age: Option<Duration>) -> bool {
        let age = self.age();
        age.as_millis() <= u128::try_from(self.ttl_ms).unwrap_or(0)
            && max_age.is_none_or(|m| age <= m)
    }

    fn response(&self) -> ChatResponse {
        ChatResponse {
            model: self.model.clone(),
            message: self.message.clone(),
            stop_reason: self.stop_reason,
            usage: self.usage,
            latency_ms: self.latency_ms,
            logprobs: self.logprobs.clone(),
        }
    }
}

/// A shared vector record: the entry's hash (16 bytes), its expiry (i64), the vector's length
/// (u32) and floats, all little-endian, then the text.
fn encode_vector(hash: u128, expires_at_ms: i64, vector: &[f32], text: &str) -> Option<Bytes> {
    let mut out = Vec::with_capacity(28 + vector.len() * 4 + text.len());
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(&u32::try_from(vector.len()).ok()?.to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    Some(Bytes::from(out))
}

fn decode_vector(b: &[u8]) -> Option<(u128, i64, Vec<f32>, String)> {
    let (hash, rest) = b.split_first_chunk::<16>()?;
    let (expires, rest) = rest.split_first_chunk::<8>()?;
    let (dims, rest) = rest.split_first_chunk::<4>()?;
    let dims = usize::try_from(u32::from_le_bytes(*dims)).ok()?;
    let (floats, text) = rest.split_at_checked(dims.checked_mul(4)?)?;
    let vector = floats
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((
        u128::from_le_bytes(*hash),
        i64::from_le_bytes(*expires),
        vector,
        String::from_utf8(text.to_vec()).ok()?,
    ))
}

const MAGIC: &[u8; 4] = b"MGC1";

/// `MGC1`, the canonical request's length (u32 LE), the canonical request, the answer as JSON.
fn encode(canonical: &[u8], stored: &Stored) -> Option<Bytes> {
    let mut out = Vec::with_capacity(8 + canonical.len() + 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(canonical.len()).ok()?.to_le_bytes());
    out.extend_from_slice(canonical);
    serde_json::to_writer(&mut out, stored).ok()?;
    Some(Bytes::from(out))
}

fn decode(bytes: &[u8]) -> Option<(&[u8], Stored)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let (canonical, json) = rest.split_at_checked(len)?;
    Some((canonical, serde_json::from_slice(json).ok()?))
}

/// The canonical bytes of a request as routed to `model`: everything that shapes the answer,
/// each part followed by 0xFF (which never occurs in UTF-8 JSON, so parts cannot run into
/// each other). With `context_only`, the last message is left out (the semantic index keys its
/// partitions by the rest and embeds that message).
pub(crate) fn canonical(request: &ChatRequest, model: &str, context_only: bool) -> Vec<u8> {
    let ChatRequest {
        model: _,
        system,
        messages,
        inference,
        tools,
        response_format,
        reasoning,
        generation,
        // Who asks does not shape the answer (entries are scoped to the caller anyway).
        end_user: _,
        native,
    } = request;
    let mut w = Vec::with_capacity(256);
    let end = |w: &mut Vec<u8>| w.push(0xFF);
    w.extend_from_slice(model.as_bytes());
    end(&mut w);
    let _ = serde_json::to_writer(&mut w, system);
    end(&mut w);
    let messages = match (context_only, messages.split_last()) {
        (true, Some((_, rest))) => rest,
        _ => messages.as_slice(),
    };
    let _ = serde_json::to_writer(&mut w, messages);
    end(&mut w);
    let _ = serde_json::to_writer(&mut w, inference);
    end(&mut w);
    let _ = serde_json::to_writer(&mut w, tools);
    end(&mut w);
    match response_format {
        None => w.push(b'-'),
        Some(ResponseFormat::JsonObject) => w.extend_from_slice(b"json_object"),
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            w.extend_from_slice(b"json_schema");
            end(&mut w);
            w.extend_from_slice(name.as_bytes());
            end(&mut w);
            w.extend_from_slice(description.as_deref().unwrap_or("\u{0}").as_bytes());
            end(&mut w);
            let _ = serde_json::to_writer(&mut w, schema);
            w.push(if *strict { b'1' } else { b'0' });
        }
    }
    end(&mut w);
    match reasoning {
        None => w.push(b'-'),
        Some(r) => w.extend_from_slice(&r.budget_tokens.to_le_bytes()),
    }
    // Only when set, so the keys of requests without them stay what they were.
    if !generation.is_empty() {
        end(&mut w);
        let _ = serde_json::to_writer(&mut w, generation);
    }
    if let Some(native) = native {
        end(&mut w);
        for p in &native.params {
            w.extend_from_slice(p.path().as_bytes());
            w.push(b'=');
            let _ = serde_json::to_writer(&mut w, &p.value);
            end(&mut w);
        }
    }
    w
}

/// A 128-bit XXH3 hash of canonical bytes.
pub(crate) fn hash(canonical: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(canonical)
}

/// The text the semantic index compares: the last message's text, when it is a user turn of
/// text only.
fn semantic_text(request: &ChatRequest) -> Option<String> {
    let last = request.messages.last()?;
    if last.role != Role::User {
        return None;
    }
    let mut text = String::new();
    for block in &last.content {
        match block {
            ContentBlock::Text(t) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
            _ => return None,
        }
    }
    (!text.trim().is_empty()).then_some(text)
}

/// Whether an answer may be stored: a model's own, complete answer (never an error, a
/// truncated or cancelled stream, a filtered answer; a tool call only when configured).
fn storable(response: &ChatResponse, tool_calls: bool) -> bool {
    match response.stop_reason {
        StopReason::EndTurn | StopReason::StopSequence => true,
        StopReason::ToolUse => tool_calls,
        _ => false,
    }
}

/// What the layer decided about one call before running it.
struct Plan {
    key: CacheKey,
    canonical: Arc<Vec<u8>>,
    /// Serve from the cache when found.
    read: bool,
    /// Store the answer for normal hits.
    store: bool,
    /// Store (and keep past the TTL) for the degraded level, and serve stale on failure.
    fallback: bool,
    ttl: Duration,
    max_age: Option<Duration>,
    semantic: Option<SemanticPlan>,
}

struct SemanticPlan {
    partition: u128,
    text: String,
    threshold: f32,
    embedder: Arc<dyn Provider>,
    embed_model: String,
}

/// The cache layer (see the module docs).
pub(crate) struct Cache {
    cache: Arc<ResponseCache>,
}

impl Cache {
    pub(crate) fn new(cache: Arc<ResponseCache>) -> Self {
        Self { cache }
    }

    /// What to do for this call: `None` when the cache has nothing to do with it; an error
    /// when the request's cache directives are malformed.
    fn plan(&self, call: &Call) -> Result<Option<Plan>, Error> {
        let config = &self.cache.config;
        let Some(request) = call
            .op
            .chat()
            .filter(|_| call.op.is_answer() && !call.skip_cache)
        else {
            return Ok(None);
        };
        let d: CacheDirectives = call.ctx.cache_directives();
        if let Some(why) = &d.invalid {
            return Err(Error::validation(why.clone()));
        }
        let Some(entry) = call.entry.as_ref() else {
            return Ok(None);
        };
        let enabled = entry.policy.cache.unwrap_or(config.enabled);
        let fallback = entry.policy.fallback_cache;
        if !enabled && !fallback {
            return Ok(None);
        }
        let model = entry.info.id.clone();
        let canonical = canonical(request, &model, false);
        let key = CacheKey {
            namespace: d.namespace.clone().unwrap_or_else(|| "default".into()),
            model,
            scope: self.cache.scope(&call.ctx),
            hash: hash(&canonical),
        };
        let ttl = d
            .ttl
            .map(|t| t.min(config.max_ttl))
            .or(entry.policy.cache_ttl)
            .unwrap_or(config.ttl);
        let read = enabled && !d.no_cache && !d.no_store;
        let semantic = self
            .semantic_plan(call, request, &key, &d)
            .filter(|_| enabled && !d.no_store);
        Ok(Some(Plan {
            canonical: Arc::new(canonical),
            read,
            store: enabled && !d.no_store,
            fallback,
            ttl,
            max_age: d.max_age,
            semantic,
            key,
        }))
    }

    fn semantic_plan(
        &self,
        call: &Call,
        request: &ChatRequest,
        key: &CacheKey,
        d: &CacheDirectives,
    ) -> Option<SemanticPlan> {
        let s = &self.cache.config.semantic;
        self.cache.semantic.as_ref()?;
        if d.semantic == Some(false) || request.messages.len() > s.max_messages {
            return None;
        }
        let cold = request.inference.temperature == Some(0.0);
        if s.require_zero_temperature && !cold && d.semantic != Some(true) {
            return None;
        }
        let text = semantic_text(request)?;
        let embedder = call.registry.as_ref()?.get(&s.model)?;
        if !embedder.caps.embeddings {
            return None;
        }
        let context = canonical(request, &key.model, true);
        let mut partition = Vec::with_capacity(context.len() + 64);
        for part in [&key.namespace, &key.model, &key.scope] {
            partition.extend_from_slice(part.as_bytes());
            partition.push(0xFF);
        }
        partition.extend_from_slice(&context);
        Some(SemanticPlan {
            partition: hash(&partition),
            text,
            threshold: d.threshold.map_or(s.threshold, |t| t.max(s.threshold)),
            embedder: Arc::clone(&embedder.endpoints.first()?.provider),
            embed_model: embedder.info.id.clone(),
        })
    }

    /// Serve `stored` for this call.
    fn serve(
        &self,
        call: &mut Call,
        stored: &Stored,
        status: CacheStatus,
        key: &CacheKey,
        similarity: Option<f32>,
    ) -> Answer {
        call.served.served_by = "cache".into();
        call.served.cache = Some(CacheReport {
            status,
            key: format!("{:032x}", key.hash),
            similarity,
            age: Some(stored.age()),
            saved_usage: Some(stored.usage),
            saved_nanos: stored.cost_nanos,
        });
        // Nothing was spent: the outcome (usage records, token limits, budgets) says zero
        // tokens; the client still sees the original call's usage in the answer.
        call.recorder().on_finish(Box::new(|f| {
            f.outcome.usage = Some(Usage::default());
        }));
        let mut response = stored.response();
        if let Some(r) = call.op.chat() {
            response.model.clone_from(&r.model);
        }
        Answer::from_response(response, &call.op)
    }

    /// Store the answer when the call ends, if it qualifies.
    fn store_on_finish(&self, call: &mut Call, plan: &Plan, vector: Option<Vec<f32>>) {
        let cache = Arc::clone(&self.cache);
        let key = plan.key.clone();
        let canonical = Arc::clone(&plan.canonical);
        let keep_for = plan.ttl
            + if plan.fallback {
                cache.config.stale_for
            } else {
                Duration::ZERO
            };
        let ttl = if plan.store { plan.ttl } else { Duration::ZERO };
        let semantic = plan
            .semantic
            .as_ref()
            .filter(|_| plan.store)
            .map(|s| ToIndex {
                partition: s.partition,
                text: s.text.clone(),
                embedder: Arc::clone(&s.embedder),
                model: s.embed_model.clone(),
                vector,
            });
        call.want_response = true;
        call.recorder().on_finish(Box::new(move |f| {
            let (Some(response), None, false) = (f.response, f.error, f.outcome.cancelled) else {
                return;
            };
            // Only a model's own answer is stored, never a degraded one.
            let Some(served) = f
                .outcome
                .model_served
                .clone()
                .filter(|m| m != "cache" && m != "static")
            else {
                return;
            };
            if !storable(response, cache.config.tool_calls) {
                return;
            }
            let stored = Stored {
                model: served,
                message: response.message.clone(),
                stop_reason: response.stop_reason,
                usage: response.usage,
                latency_ms: response.latency_ms,
                logprobs: response.logprobs.clone(),
                stored_at_ms: now_ms(),
                ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
                cost_nanos: cache.prices.cost(f.outcome),
            };
            let expires = stored.stored_at_ms.saturating_add(stored.ttl_ms);
            let Some(bytes) = encode(&canonical, &stored) else {
                return;
            };
            // In process the entry (and its vector, when the lookup computed one) is in place
            // before the answer leaves; anything needing IO is done in the background.
            let stored_now = cache.store.put_now(&key, &bytes, keep_for);
            let semantic = match semantic {
                Some(s) if stored_now && s.vector.is_some() && cache.vectors.is_none() => {
                    s.index(&cache, &key, expires);
                    return;
                }
                None if stored_now => return,
                other => other,
            };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            rt.spawn(async move {
                if !stored_now {
                    if let Err(e) = cache.store.put(&key, bytes, keep_for).await {
                        tracing::warn!(error = %e, "cache write failed");
                        return;
                    }
                }
                if let Some(mut s) = semantic {
                    if s.vector.is_none() {
                        s.vector = embed(&s.embedder, &s.model, &s.text).await;
                    }
                    if let Some(record) = s.index(&cache, &key, expires) {
                        cache.share(&key, record, keep_for).await;
                    }
                }
            });
        }));
    }
}

/// A stored answer's place in the semantic index.
struct ToIndex {
    partition: u128,
    text: String,
    embedder: Arc<dyn Provider>,
    model: String,
    /// The text's vector, when the lookup already computed it.
    vector: Option<Vec<f32>>,
}

impl ToIndex {
    /// Put the vector in this replica's index; returns the partition and record to share with
    /// the other replicas, when they share vectors.
    fn index(
        self,
        cache: &ResponseCache,
        key: &CacheKey,
        expires_at_ms: i64,
    ) -> Option<(u128, Bytes)> {
        let (Some(index), Some(v)) = (&cache.semantic, self.vector) else {
            return None;
        };
        let shared = cache
            .vectors
            .as_ref()
            .and_then(|_| encode_vector(key.hash, expires_at_ms, &v, &self.text))
            .map(|r| (self.partition, r));
        index.insert(self.partition, key, v, self.text, expires_at_ms);
        shared
    }
}

impl ResponseCache {
    /// Append a stored answer's vector to its partition's shared log.
    async fn share(&self, key: &CacheKey, (partition, record): (u128, Bytes), keep_for: Duration) {
        let Some(log) = &self.vectors else {
            return;
        };
        let max = self.config.semantic.max_entries;
        if let Err(e) = log.append(key, partition, record, max, keep_for).await {
            tracing::warn!(error = %e, "semantic cache: sharing a vector failed");
        }
    }
}

async fn embed(embedder: &Arc<dyn Provider>, model: &str, text: &str) -> Option<Vec<f32>> {
    let request = EmbedRequest {
        model: model.to_string(),
        input: EmbedInput::Texts(vec![text.to_string()]),
    };
    match embedder.embed(request).await {
        Ok(r) => r.vectors.into_iter().next(),
        Err(e) => {
            tracing::warn!(error = %e, "semantic cache: embedding failed");
            None
        }
    }
}

#[async_trait]
impl Layer for Cache {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let Some(plan) = self.plan(call)? else {
            return next.run(call).await;
        };
        let mut vector = None;
        if plan.read {
            if let Some(stored) = self
                .cache
                .read(&plan.key, Some(&plan.canonical))
                .await
                .filter(|s| s.fresh(plan.max_age))
            {
                return Ok(self.serve(call, &stored, CacheStatus::Hit, &plan.key, None));
            }
            if let (Some(s), Some(index)) = (&plan.semantic, &self.cache.semantic) {
                self.cache.catch_up(s.partition, &plan.key).await;
                vector = embed(&s.embedder, &s.embed_model, &s.text).await;
                let query = vector.as_deref().map(|v| SemanticQuery {
                    partition: s.partition,
                    vector: v,
                    text: &s.text,
                    threshold: s.threshold,
                });
                if let Some(found) = query.and_then(|q| index.search(&q)) {
                    let key = CacheKey {
                        hash: found.hash,
                        ..plan.key.clone()
                    };
                    if let Some(stored) = self
                        .cache
                        .read(&key, None)
                        .await
                        .filter(|st| st.fresh(plan.max_age))
                    {
                        return Ok(self.serve(
                            call,
                            &stored,
                            CacheStatus::SemanticHit,
                            &key,
                            Some(found.similarity),
                        ));
                    }
                }
            }
        }
        if plan.store || plan.fallback {
            self.store_on_finish(call, &plan, vector);
        }
        if plan.store {
            call.served.cache = Some(CacheReport {
                status: if plan.read {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Bypass
                },
                key: format!("{:032x}", plan.key.hash),
                similarity: None,
                age: None,
                saved_usage: None,
                saved_nanos: 0,
            });
        }
        let error = match next.run(call).await {
            Err(e) if !e.is_final() && plan.fallback => e,
            other => return other,
        };
        let Some(stored) = self.cache.read(&plan.key, Some(&plan.canonical)).await else {
            return Err(error);
        };
        tracing::warn!(model = %plan.key.model, reason = ?call.served.fallback_reason, "degraded answer: cached answer");
        Ok(self.serve(call, &stored, CacheStatus::Stale, &plan.key, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, text)],
            ..Default::default()
        }
    }

    #[test]
    fn canonical_bytes_differ_by_content_and_settings() {
        let a = canonical(&req("a"), "m", false);
        assert_eq!(a, canonical(&req("a"), "m", false));
        assert_ne!(a, canonical(&req("b"), "m", false));
        assert_ne!(a, canonical(&req("a"), "other", false));
        let mut hot = req("a");
        hot.inference.temperature = Some(0.9);
        assert_ne!(a, canonical(&hot, "m", false));
        let mut seeded = req("a");
        seeded.generation.seed = Some(1);
        assert_ne!(a, canonical(&seeded, "m", false));
        // The context leaves the last message out.
        assert_eq!(
            canonical(&req("a"), "m", true),
            canonical(&req("b"), "m", true)
        );
    }

    #[test]
    fn entries_round_trip_and_refuse_garbage() {
        let stored = Stored {
            model: "m".into(),
            message: Message::text(Role::Assistant, "x"),
            stop_reason: StopReason::EndTurn,
            usage: Usage::new(3, 1),
            latency_ms: 5,
            logprobs: None,
            // Stored ten seconds ago, so the age checks below do not depend
            // on which millisecond the clock reads between two calls.
            stored_at_ms: now_ms() - 10_000,
            ttl_ms: 60_000,
            cost_nanos: 7,
        };
        let bytes = encode(b"request", &stored).unwrap();
        let (canonical, back) = decode(&bytes).unwrap();
        assert_eq!(canonical, b"request");
        assert_eq!(back.response(), stored.response());
        assert!(back.fresh(None));
        assert!(back.fresh(Some(Duration::from_secs(30))));
        assert!(!back.fresh(Some(Duration::from_secs(5))));
        let expired = Stored {
            ttl_ms: 5_000,
            ..back
        };
        assert!(!expired.fresh(None));
        assert!(decode(b"MGC1\xff\xff\xff\xffx").is_none());
        assert!(decode(b"nope").is_none());
    }

    #[test]
    fn vector_records_round_trip() {
        let r = encode_vector(u128::MAX - 1, 1234, &[0.5, -0.25, 1.0], "héllo").unwrap();
        assert_eq!(
            decode_vector(&r),
            Some((
                u128::MAX - 1,
                1234,
                vec![0.5, -0.25, 1.0],
                "héllo".to_string()
            ))
        );
        assert_eq!(decode_vector(&r[..20]), None);
    }

    #[test]
    fn only_complete_answers_are_storable() {
        let mut r = ChatResponse {
            model: "m".into(),
            message: Message::text(Role::Assistant, "x"),
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
            latency_ms: 0,
            logprobs: None,
        };
        assert!(storable(&r, false));
        r.stop_reason = StopReason::MaxTokens;
        assert!(!storable(&r, false));
        r.stop_reason = StopReason::ToolUse;
        assert!(!storable(&r, false));
        assert!(storable(&r, true));
        r.stop_reason = StopReason::ContentFiltered;
        assert!(!storable(&r, true));
    }
}
