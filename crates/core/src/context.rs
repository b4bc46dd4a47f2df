//! The call context: what the gateway knows about a call before it looks at the body.
//!
//! Made once per HTTP request by the server's middleware (request id, dialect, route, source
//! address, receive time, deadline, principal) and handed to every pipeline stage. It carries
//! the request's `tracing` span, so every log line written while the call runs — the gateway's
//! own warnings included — names the request id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::pipeline::ServedBy;

/// The API dialect a call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// The OpenAI API (`/v1/chat/completions`, `/v1/embeddings`, …).
    OpenAi,
    /// The Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// The AWS Bedrock Runtime API (`/model/{id}/…`).
    Bedrock,
    /// AWS JSON-protocol services (`POST /` with `X-Amz-Target`): Step Functions.
    AwsJson,
    /// Modelgate's own endpoints (health, admin) and calls made from inside (the CLI, tests).
    Modelgate,
}

impl Dialect {
    /// The dialect a request path belongs to.
    pub fn for_path(path: &str) -> Self {
        // Every Bedrock Runtime operation's path: InvokeModel and Converse (`/model/…`),
        // ApplyGuardrail (`/guardrail/…`) and InvokeGuardrailChecks (`/guardrail-checks/…`),
        // the guardrail control plane (`/guardrails…`, the `bedrock` service's), the
        // asynchronous invocations (`/async-invoke…`), prompt management (`/prompts/…`, the
        // `bedrock-agent` service's).
        if path.starts_with("/model/")
            || path.starts_with("/guardrail/")
            || path.starts_with("/guardrails")
            || path.starts_with("/guardrail-checks")
            || path.starts_with("/async-invoke")
            || path.starts_with("/prompts/")
        {
            Dialect::Bedrock
        } else if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else if path.starts_with("/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Modelgate
        }
    }

    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Bedrock => "bedrock",
            Dialect::AwsJson => "awsjson",
            Dialect::Modelgate => "modelgate",
        }
    }
}

/// Who is calling. Filled by the server's authentication middleware; `None` when the gateway
/// is embedded without authentication.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key id, access key id, JWT subject, `admin` or `anonymous` (never a secret).
    pub id: String,
    /// The caller's team, when it has one.
    pub team: Option<String>,
    /// Whether the caller may use the admin API without a policy check.
    pub admin: bool,
    /// What the caller may do: policies, tags, limits, budgets.
    pub grants: std::sync::Arc<crate::access::Grants>,
}

impl Principal {
    /// A caller with full access (open loopback gateway, bootstrap admin, static SigV4 keys).
    pub fn unrestricted(id: impl Into<String>, admin: bool) -> Self {
        Self {
            id: id.into(),
            team: None,
            admin,
            grants: std::sync::Arc::new(crate::access::Grants::unrestricted()),
        }
    }
}

/// What the gateway knows about a call before it reads the body. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct CallContext(Arc<Inner>);

struct Inner {
    request_id: String,
    dialect: Dialect,
    method: String,
    route: String,
    source: Option<SocketAddr>,
    received: Instant,
    received_at: SystemTime,
    deadline: Option<Instant>,
    principal: OnceLock<Principal>,
    trace: TraceContext,
    span: tracing::Span,
    outcome_recorded: AtomicBool,
    served: Mutex<Option<ServedBy>>,
    cache: Mutex<CacheDirectives>,
    routing: Mutex<crate::routing::RoutingHints>,
    guardrail: Mutex<Option<crate::guardrails::GuardrailRequest>>,
    guardrail_trace: Mutex<Option<serde_json::Value>>,
    prompt: Mutex<Option<PromptUse>>,
    route_limit: Mutex<Option<crate::keys::LimitSpec>>,
}

/// The prompt version a call was rendered from (its outcome becomes a render record).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptUse {
    /// The prompt id.
    pub prompt_id: String,
    /// The version (0: the draft).
    pub version: i64,
    /// Through what: `converse`, `endpoint:<name>`, `test`.
    pub source: String,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("request_id", &self.0.request_id)
            .field("dialect", &self.0.dialect)
            .field("route", &self.0.route)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CallContext`].
#[derive(Debug)]
pub struct CallContextBuilder {
    request_id: String,
    dialect: Dialect,
    method: String,
    route: String,
    source: Option<SocketAddr>,
    deadline: Option<Instant>,
    trace: Option<TraceContext>,
    sample_ratio: f64,
    cache: CacheDirectives,
    routing: crate::routing::RoutingHints,
}

impl CallContextBuilder {
    /// The share of new traces (calls that do not continue a client's trace) that are sampled:
    /// 0 to 1, decided from the trace id as OpenTelemetry's ratio sampler does. A client's
    /// own sampling decision is always kept.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio;
        self
    }

    /// Continue the client's W3C trace (`traceparent` header); a header that does not parse
    /// is ignored and a new trace is started, as the W3C recommendation asks.
    pub fn traceparent(mut self, header: Option<&str>) -> Self {
        self.trace = header.and_then(TraceContext::parse);
        self
    }

    /// The HTTP method and matched route (e.g. `POST /model/{model_id}/converse`).
    pub fn route(mut self, method: impl Into<String>, route: impl Into<String>) -> Self {
        self.method = method.into();
        self.route = route.into();
        self
    }

    /// The client's address.
    pub fn source(mut self, source: Option<SocketAddr>) -> Self {
        self.source = source;
        self
    }

    /// A deadline for the whole call, earlier than the model's own total timeout.
    /// What the request's headers ask of the response cache.
    pub fn cache(mut self, directives: CacheDirectives) -> Self {
        self.cache = directives;
        self
    }

    /// What routing rules may read of the request (headers, query string).
    pub fn routing(mut self, hints: crate::routing::RoutingHints) -> Self {
        self.routing = hints;
        self
    }

    /// When the caller needs the answer by.
    pub fn deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The context, with its tracing span opened.
    pub fn build(self) -> CallContext {
        // The client's span is this call's parent; a new trace starts at this call.
        let trace = match &self.trace {
            Some(client) => client.child(),
            None => TraceContext::new_root(self.sample_ratio),
        };
        let span = tracing::info_span!(
            "request",
            id = %self.request_id,
            dialect = self.dialect.as_str(),
            trace_id = %trace.trace_id,
        );
        CallContext(Arc::new(Inner {
            request_id: self.request_id,
            dialect: self.dialect,
            method: self.method,
            route: self.route,
            source: self.source,
            received: Instant::now(),
            received_at: SystemTime::now(),
            deadline: self.deadline,
            principal: OnceLock::new(),
            trace,
            span,
            outcome_recorded: AtomicBool::new(false),
            served: Mutex::new(None),
            cache: Mutex::new(self.cache),
            routing: Mutex::new(self.routing),
            guardrail: Mutex::new(None),
            guardrail_trace: Mutex::new(None),
            prompt: Mutex::new(None),
            route_limit: Mutex::new(None),
        }))
    }
}

impl CallContext {
    /// Start a context for a call in `dialect` with a fresh request id.
    pub fn builder(dialect: Dialect) -> CallContextBuilder {
        Self::builder_with_id(dialect, uuid_v4())
    }

    /// Start a context with a given request id.
    pub fn builder_with_id(dialect: Dialect, request_id: String) -> CallContextBuilder {
        CallContextBuilder {
            request_id,
            dialect,
            method: String::new(),
            route: String::new(),
            source: None,
            deadline: None,
            trace: None,
            sample_ratio: 1.0,
            cache: CacheDirectives::default(),
            routing: crate::routing::RoutingHints::default(),
        }
    }

    /// A context for a call made from inside the process (the CLI, tests).
    pub fn internal() -> Self {
        Self::builder(Dialect::Modelgate).build()
    }

    /// The request id (`x-request-id`).
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// The dialect the call came in.
    pub fn dialect(&self) -> Dialect {
        self.0.dialect
    }

    /// The HTTP method.
    pub fn method(&self) -> &str {
        &self.0.method
    }

    /// The matched route.
    pub fn route(&self) -> &str {
        &self.0.route
    }

    /// The client's address.
    pub fn source(&self) -> Option<SocketAddr> {
        self.0.source
    }

    /// When the gateway received the call.
    pub fn received(&self) -> Instant {
        self.0.received
    }

    /// The wall-clock time the call was received.
    pub fn received_at(&self) -> SystemTime {
        self.0.received_at
    }

    /// The caller's own deadline, when they gave one.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// The authenticated caller.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.principal.get()
    }

    /// Record who is calling (once; the authentication layer does this).
    pub fn set_principal(&self, principal: Principal) {
        let _ = self.0.principal.set(principal);
    }

    /// The call's place in a distributed trace.
    pub fn trace(&self) -> &TraceContext {
        &self.0.trace
    }

    /// The call's tracing span.
    pub fn span(&self) -> &tracing::Span {
        &self.0.span
    }

    /// Mark that the call's outcome has been (or will be) recorded by the pipeline, so the
    /// HTTP layer does not write a second one. Returns whether it was already marked.
    pub fn claim_outcome(&self) -> bool {
        self.0.outcome_recorded.swap(true, Ordering::SeqCst)
    }

    /// Record how the call was served (the pipeline does, success or failure), so the HTTP
    /// layer can say it in the response headers.
    pub fn set_served(&self, served: ServedBy) {
        *crate::registry::lock(&self.0.served) = Some(served);
    }

    /// How the call was served, once the pipeline has run it.
    pub fn served(&self) -> Option<ServedBy> {
        crate::registry::lock(&self.0.served).clone()
    }

    /// What the request asks of the response cache.
    pub fn cache_directives(&self) -> CacheDirectives {
        crate::registry::lock(&self.0.cache).clone()
    }

    /// What routing rules may read of the request.
    pub fn routing_hints(&self) -> crate::routing::RoutingHints {
        crate::registry::lock(&self.0.routing).clone()
    }

    /// Add what the request body says to routing (its metadata, its end user).
    pub fn set_routing_body(
        &self,
        metadata: std::collections::BTreeMap<String, String>,
        user: Option<String>,
    ) {
        let mut h = crate::registry::lock(&self.0.routing);
        h.metadata.extend(metadata);
        if user.is_some() {
            h.user = user;
        }
    }

    /// Add what the body's `cache` object asks (its fields win over the headers').
    pub fn merge_cache_body(&self, cache: &serde_json::Value) {
        crate::registry::lock(&self.0.cache).merge_json(cache);
    }

    /// Ask for a guardrail (the front doors do, from `guardrailConfig`, InvokeModel's headers
    /// or `x-modelgate-guardrail`).
    pub fn set_guardrail(&self, request: crate::guardrails::GuardrailRequest) {
        *crate::registry::lock(&self.0.guardrail) = Some(request);
    }

    /// The guardrail the request asks for.
    pub fn guardrail_request(&self) -> Option<crate::guardrails::GuardrailRequest> {
        crate::registry::lock(&self.0.guardrail).clone()
    }

    /// Keep the guardrail trace for the front door (the guardrail layer does, when the
    /// caller asked for it).
    pub fn set_guardrail_trace(&self, trace: serde_json::Value) {
        *crate::registry::lock(&self.0.guardrail_trace) = Some(trace);
    }

    /// The guardrail trace (`trace.guardrail` of a Converse answer), when there is one.
    pub fn guardrail_trace(&self) -> Option<serde_json::Value> {
        crate::registry::lock(&self.0.guardrail_trace).clone()
    }

    /// Say which prompt version the call was rendered from.
    pub fn set_prompt_use(&self, used: PromptUse) {
        *crate::registry::lock(&self.0.prompt) = Some(used);
    }

    /// The prompt version the call was rendered from, when it was.
    pub fn prompt_use(&self) -> Option<PromptUse> {
        crate::registry::lock(&self.0.prompt).clone()
    }

    /// Give the call's route a limit of its own (a declarative endpoint's `rate_limit`); the
    /// limits layer applies it as the route's.
    pub fn set_route_limit(&self, limit: crate::keys::LimitSpec) {
        *crate::registry::lock(&self.0.route_limit) = Some(limit);
    }

    /// The route's own limit, when the handler gave one.
    pub fn route_limit(&self) -> Option<crate::keys::LimitSpec> {
        *crate::registry::lock(&self.0.route_limit)
    }

    /// Whether the pipeline took the call's outcome.
    pub fn outcome_claimed(&self) -> bool {
        self.0.outcome_recorded.load(Ordering::SeqCst)
    }
}

/// What one request asks of the response cache: from its headers (`Cache-Control:
/// no-cache | no-store | max-age=N`, `x-modelgate-cache-ttl`, `-namespace`, `-refresh`,
/// `-threshold`, `-semantic`) and from the `cache` object of an OpenAI or Anthropic body
/// (`{"no-cache": true, "no-store": true, "ttl": 600, "s-maxage": 60, "namespace": "…"}`,
/// the convention LiteLLM's clients send). A malformed value is kept as `invalid`, and the
/// cache layer refuses the call with it (in the caller's dialect).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheDirectives {
    /// Do not serve from the cache (a fresh answer is still stored): a forced refresh.
    pub no_cache: bool,
    /// Neither serve from nor store into the cache.
    pub no_store: bool,
    /// How long to serve this answer (capped at `[cache] max_ttl`).
    pub ttl: Option<Duration>,
    /// Serve only an entry at most this old.
    pub max_age: Option<Duration>,
    /// A partition of the caller's cache.
    pub namespace: Option<String>,
    /// A semantic similarity floor (raises the configured one, never lowers it).
    pub threshold: Option<f32>,
    /// Opt in to (or out of) semantic matching for this request.
    pub semantic: Option<bool>,
    /// What was malformed, naming the header or field.
    pub invalid: Option<String>,
}

impl CacheDirectives {
    /// Read the cache headers of a request.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut d = Self::default();
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(cc) = get("cache-control") {
            for token in cc.split(',').map(str::trim) {
                let (name, value) = token.split_once('=').unwrap_or((token, ""));
                match name.to_ascii_lowercase().as_str() {
                    "no-cache" => d.no_cache = true,
                    "no-store" => d.no_store = true,
                    "max-age" => match value.trim_matches('"').parse::<u64>() {
                        Ok(s) => d.max_age = Some(Duration::from_secs(s)),
                        Err(_) => {
                            d.bad("header cache-control: max-age must be a whole number of seconds")
                        }
                    },
                    _ => {}
                }
            }
        }
        if let Some(v) = get("x-modelgate-cache-ttl") {
            match parse_duration(v) {
                Some(t) if !t.is_zero() => d.ttl = Some(t),
                _ => {
                    d.bad("header x-modelgate-cache-ttl must be seconds or a duration such as 10m")
                }
            }
        }
        if let Some(v) = get("x-modelgate-cache-namespace") {
            d.set_namespace(v, "header x-modelgate-cache-namespace");
        }
        if let Some(v) = get("x-modelgate-cache-refresh") {
            match parse_bool(v) {
                Some(b) => d.no_cache |= b,
                None => d.bad("header x-modelgate-cache-refresh must be true or false"),
            }
        }
        if let Some(v) = get("x-modelgate-cache-semantic") {
            match parse_bool(v) {
                Some(b) => d.semantic = Some(b),
                None => d.bad("header x-modelgate-cache-semantic must be true or false"),
            }
        }
        if let Some(v) = get("x-modelgate-cache-threshold") {
            match v.trim().parse::<f32>() {
                Ok(t) if t > 0.0 && t <= 1.0 => d.threshold = Some(t),
                _ => d.bad("header x-modelgate-cache-threshold must be a number in (0, 1]"),
            }
        }
        d
    }

    /// Add a body's `cache` object.
    pub fn merge_json(&mut self, cache: &serde_json::Value) {
        let Some(obj) = cache.as_object() else {
            return self.bad("cache must be an object");
        };
        for (k, v) in obj {
            let field = format!("cache.{k}");
            match k.as_str() {
                "no-cache" | "no_cache" => match v.as_bool() {
                    Some(b) => self.no_cache |= b,
                    None => self.bad(&format!("{field} must be a boolean")),
                },
                "no-store" | "no_store" => match v.as_bool() {
                    Some(b) => self.no_store |= b,
                    None => self.bad(&format!("{field} must be a boolean")),
                },
                "ttl" | "s-maxage" | "max-age" | "max_age" => match v.as_u64() {
                    Some(s) if k == "ttl" && s > 0 => self.ttl = Some(Duration::from_secs(s)),
                    Some(s) if k != "ttl" => self.max_age = Some(Duration::from_secs(s)),
                    _ => self.bad(&format!("{field} must be a positive whole number of seconds")),
                },
                "namespace" => match v.as_str() {
                    Some(n) => self.set_namespace(n, &field),
                    None => self.bad(&format!("{field} must be a string")),
                },
                "semantic" => match v.as_bool() {
                    Some(b) => self.semantic = Some(b),
                    None => self.bad(&format!("{field} must be a boolean")),
                },
                "similarity_threshold" | "threshold" => match v.as_f64() {
                    Some(t) if t > 0.0 && t <= 1.0 => self.threshold = Some(t as f32),
                    _ => self.bad(&format!("{field} must be a number in (0, 1]")),
                },
                other => self.bad(&format!(
                    "cache.{other} is not a cache setting (no-cache, no-store, ttl, s-maxage, namespace, semantic, similarity_threshold)"
                )),
            }
        }
    }

    fn set_namespace(&mut self, n: &str, what: &str) {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            self.namespace = Some(n.to_string());
        } else {
            self.bad(&format!(
                "{what} must be 1–64 letters, digits, '-', '_' or '.'"
            ));
        }
    }

    fn bad(&mut self, why: &str) {
        self.invalid.get_or_insert_with(|| why.to_string());
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    v.parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| humantime::parse_duration(v).ok())
}

/// A W3C Trace Context position: the trace, this call's span in it, the caller's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This call's span: 16 lowercase hex digits.
    pub span_id: String,
    /// The caller's span, when the call continued a client's trace.
    pub parent_span_id: Option<String>,
    /// Whether the trace is sampled (the `01` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// Parse a `traceparent` header (`00-<trace id>-<parent id>-<flags>`); `None` when it is
    /// not one (wrong lengths, non-hex, all-zero ids, version `ff`).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        // Version 00 has exactly four fields; later versions may append more.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id: trace.to_string(),
            span_id: parent.to_string(),
            parent_span_id: None,
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace, sampled with probability `ratio` (from the trace id's low 63 bits, as
    /// OpenTelemetry's `TraceIdRatioBased` sampler decides).
    pub fn new_root(ratio: f64) -> Self {
        let id = fastrand::u128(1..);
        let low = (id as u64) >> 1;
        let sampled = ratio >= 1.0 || (ratio > 0.0 && (low as f64) < ratio * (1u64 << 63) as f64);
        Self {
            trace_id: format!("{id:032x}"),
            span_id: span_id(),
            parent_span_id: None,
            sampled,
        }
    }

    /// A span inside this one: same trace, this span as its parent.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: span_id(),
            parent_span_id: Some(self.span_id.clone()),
            sampled: self.sampled,
        }
    }

    /// The `traceparent` header naming this span, for the next hop.
    pub fn header(&self) -> String {
        self.header_for(&self.span_id)
    }

    /// The `traceparent` header naming `span_id`, a span of this trace.
    pub fn header_for(&self, span_id: &str) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// A random, non-zero span id (16 hex digits).
pub fn span_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_from_path() {
        assert_eq!(Dialect::for_path("/model/x/converse"), Dialect::Bedrock);
        assert_eq!(
            Dialect::for_path("/guardrail/g/version/1/apply"),
            Dialect::Bedrock
        );
        assert_eq!(Dialect::for_path("/async-invoke"), Dialect::Bedrock);
        assert_eq!(
            Dialect::for_path("/guardrail-checks/invoke"),
            Dialect::Bedrock
        );
        assert_eq!(Dialect::for_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::for_path("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(Dialect::for_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::for_path("/healthz"), Dialect::Modelgate);
    }

    #[test]
    fn traceparent_is_continued_or_a_new_trace_started() {
        let ctx = CallContext::builder(Dialect::OpenAi)
            .traceparent(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ))
            .build();
        let t = ctx.trace();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(t.sampled);
        assert_eq!(
            TraceContext::parse(&t.header()).unwrap().trace_id,
            t.trace_id
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let fresh = CallContext::builder(Dialect::OpenAi)
            .traceparent(Some("garbage"))
            .build();
        assert_eq!(fresh.trace().trace_id.len(), 32);
        assert_eq!(fresh.trace().parent_span_id, None);
        assert_ne!(fresh.trace().trace_id, t.trace_id);
        assert!(!TraceContext::new_root(0.0).sampled);
        assert!(TraceContext::new_root(1.0).sampled);
        let half = (0..2000)
            .filter(|_| TraceContext::new_root(0.5).sampled)
            .count();
        assert!((800..1200).contains(&half), "{half}");
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn request_ids_are_uuids_and_the_outcome_is_claimed_once() {
        let ctx = CallContext::internal();
        let id = ctx.request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, CallContext::internal().request_id());
        assert!(!ctx.claim_outcome());
        assert!(ctx.claim_outcome());
    }
}
