//! OpenTelemetry traces over OTLP (HTTP/protobuf or gRPC).
//!
//! Each sampled call becomes a span tree, built from its one outcome when it ends — the
//! pipeline's seam, so no layer wraps a stream for tracing:
//!
//! ```text
//! chat <model>                 SERVER  the call: GenAI, HTTP and Modelgate attributes
//! ├── preprocess                       authentication, body parsing, translation
//! ├── policy                           authorisation, validation, limits, routing
//! ├── upstream <model>         CLIENT  one per attempt, with its endpoint (its span id is the
//! │                                    `traceparent` parent sent to the upstream)
//! └── stream | postprocess             the answer flowing back (a stream's events)
//! ```
//!
//! The call's ids are the ones the gateway already uses — the trace id is the client's when
//! it sent a `traceparent`, and the one in the invocation record and the logs either way — so
//! spans are written as `SpanData` with those ids rather than through a tracer that would
//! pick its own. The sink queues a copy of the outcome; the export task builds the spans and
//! sends them in small batches (≤ 16 calls, every 50 ms); a collector that is down costs
//! dropped spans (with a warning), never a slower call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde::Deserialize;
use tokio::time::Instant;

use crate::outcome::{f32_decimal, Outcome, OutcomeSink};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// HTTP with protobuf bodies (port 4318, `/v1/traces`).
    #[default]
    Http,
    /// gRPC (port 4317).
    Grpc,
}

/// `[traces]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The collector: `http://host:4318` (HTTP; `/v1/traces` is added) or
    /// `http://host:4317` (gRPC). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: no traces
    /// are exported (trace ids are still made, logged, recorded and propagated).
    pub endpoint: Option<String>,
    /// `http` (default) or `grpc`; unset with the endpoint from the environment,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` decides (`grpc` or `http/protobuf`).
    pub protocol: Option<OtlpProtocol>,
    /// The share of new traces sampled (0–1, default 1). A client's `traceparent` decision is
    /// always kept.
    pub sample_ratio: f64,
    /// `service.name` of the spans. Default `modelgate`.
    pub service_name: String,
    /// Headers (HTTP) or metadata (gRPC) sent with every export, e.g. a collector's API key;
    /// a value `env:NAME` is read from the environment variable `NAME`.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Time allowed for one export. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: None,
            sample_ratio: 1.0,
            service_name: "modelgate".into(),
            headers: std::collections::BTreeMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl TracesConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("key `traces.sample_ratio` must be between 0 and 1".into());
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err("key `traces.endpoint` must be an http:// or https:// URL".into());
            }
        }
        Ok(())
    }

    /// The endpoint and protocol to export to, when traces are exported.
    fn target(&self) -> Option<(String, OtlpProtocol)> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (endpoint, from_env) = match &self.endpoint {
            Some(e) => (e.clone(), false),
            None => (env("OTEL_EXPORTER_OTLP_ENDPOINT")?, true),
        };
        let protocol =
            self.protocol
                .unwrap_or_else(|| match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
                    Some("grpc") if from_env => OtlpProtocol::Grpc,
                    _ => OtlpProtocol::Http,
                });
        Some((endpoint, protocol))
    }
}

/// Export through our own HTTP client (the one the providers use), so the exporter brings no
/// second HTTP stack.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut builder = self.0.request(parts.method, parts.uri.to_string());
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let response = builder.body(body).send().await?;
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let body = response.bytes().await?;
        Ok(out.body(body)?)
    }
}

fn header_values(config: &TracesConfig) -> Result<HashMap<String, String>, String> {
    config
        .headers
        .iter()
        .map(|(k, v)| {
            let value = match v.strip_prefix("env:") {
                Some(var) => std::env::var(var)
                    .map_err(|_| format!("traces.headers.{k}: {var} is not set"))?,
                None => v.clone(),
            };
            Ok((k.clone(), value))
        })
        .collect()
}

fn exporter(
    config: &TracesConfig,
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    let headers = header_values(config)?;
    let built = match protocol {
        OtlpProtocol::Http => {
            let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
                endpoint.to_string()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            let client = reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .map_err(|e| e.to_string())?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(config.timeout)
                .with_http_client(Client(client))
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (k, v) in &headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("traces.headers.{k}: {e}"))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|e| format!("traces.headers.{k}: {e}"))?;
                map.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.timeout)
                .with_metadata(metadata)
                .build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// The trace sink and its export task (which ends once every sender is gone).
pub type Exporting = (std::sync::Arc<Traces>, tokio::task::JoinHandle<()>);

/// Calls whose spans are queued before new ones are dropped.
const QUEUE: usize = 20_000;

/// Most calls' spans in one export request.
const BATCH: usize = 16;

/// The trace sink: outcome → span tree → queue → OTLP.
pub struct Traces {
    tx: tokio::sync::mpsc::Sender<Box<Outcome>>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traces")
    }
}

impl Traces {
    /// The sink and its export task, when `config` names a collector; `Ok(None)` when traces
    /// are off.
    pub fn spawn(config: &TracesConfig) -> Result<Option<Exporting>, String> {
        let Some((endpoint, protocol)) = config.target() else {
            return Ok(None);
        };
        let mut exporter = exporter(config, &endpoint, protocol)?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Box<Outcome>>(QUEUE);
        let scope = InstrumentationScope::builder("modelgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        // Spans are built here, not on the call's path; batches are small and frequent, so a
        // core shared with the calls is never held for long by one export.
        let task = tokio::spawn(async move {
            loop {
                let Some(first) = rx.recv().await else {
                    let _ = exporter.shutdown();
                    return;
                };
                let mut batch = spans(&first, &scope);
                let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
                let mut calls = 1;
                while calls < BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(more)) => {
                            batch.extend(spans(&more, &scope));
                            calls += 1;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let n = batch.len();
                if let Err(e) = exporter.export(batch).await {
                    tracing::warn!(error = %e, spans = n, "cannot export spans; dropped");
                }
            }
        });
        tracing::info!(%endpoint, ?protocol, "exporting traces");
        Ok(Some((std::sync::Arc::new(Self { tx }), task)))
    }
}

fn span_id(hex: &str) -> SpanId {
    SpanId::from_hex(hex).unwrap_or(SpanId::INVALID)
}

/// The GenAI operation name of a pipeline operation.
fn operation_name(o: &Outcome) -> &'static str {
    match o.operation {
        Some(crate::outcome::OperationKind::Embed) => "embeddings",
        Some(crate::outcome::OperationKind::CountTokens) => "count_tokens",
        _ => "chat",
    }
}

/// The span tree of one call.
pub fn spans(o: &Outcome, scope: &InstrumentationScope) -> Vec<SpanData> {
    let ctx = &o.ctx;
    let t = ctx.trace();
    let trace_id = TraceId::from_hex(&t.trace_id).unwrap_or(TraceId::INVALID);
    let flags = if t.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let at = |i: Instant| ctx.received_at() + i.saturating_duration_since(ctx.received());
    let start = ctx.received_at();
    let end = start + o.duration;
    let root_id = span_id(&t.span_id);
    let span = |name: Cow<'static, str>,
                id: SpanId,
                parent: SpanId,
                remote_parent: bool,
                kind: SpanKind,
                (from, to): (SystemTime, SystemTime),
                attributes: Vec<KeyValue>,
                status: Status| SpanData {
        span_context: SpanContext::new(trace_id, id, flags, false, TraceState::default()),
        parent_span_id: parent,
        parent_span_is_remote: remote_parent,
        span_kind: kind,
        name,
        start_time: from,
        end_time: to.max(from),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let model = o.model_requested.clone().unwrap_or_default();
    let op = operation_name(o);
    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", op),
        KeyValue::new("gen_ai.request.model", model.clone()),
        KeyValue::new("http.request.method", ctx.method().to_string()),
        KeyValue::new("http.route", ctx.route().to_string()),
        KeyValue::new("http.response.status_code", i64::from(o.status)),
        KeyValue::new("modelgate.request_id", ctx.request_id().to_string()),
        KeyValue::new("modelgate.dialect", ctx.dialect().as_str()),
        KeyValue::new("modelgate.attempts", i64::from(o.attempts)),
        KeyValue::new("modelgate.streamed", o.streamed),
    ];
    if let Some(system) = o.timeline.attempts.last().map(|a| a.system) {
        attrs.push(KeyValue::new("gen_ai.system", system));
        attrs.push(KeyValue::new("gen_ai.provider.name", system));
    }
    if let Some(a) = ctx.source() {
        attrs.push(KeyValue::new("client.address", a.ip().to_string()));
    }
    if let Some(p) = ctx.principal() {
        attrs.push(KeyValue::new("modelgate.caller", p.id.clone()));
        if let Some(team) = &p.team {
            attrs.push(KeyValue::new("modelgate.team", team.clone()));
        }
    }
    if let Some(m) = &o.model_served {
        attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
    }
    if let Some(p) = &o.params {
        // Input complexity: how much the caller sent and asked for.
        attrs.push(KeyValue::new(
            "modelgate.request.messages",
            p.messages as i64,
        ));
        if let Some(v) = p.max_tokens {
            attrs.push(KeyValue::new("gen_ai.request.max_tokens", i64::from(v)));
        }
        if let Some(v) = p.temperature {
            attrs.push(KeyValue::new("gen_ai.request.temperature", f32_decimal(v)));
        }
        if let Some(v) = p.top_p {
            attrs.push(KeyValue::new("gen_ai.request.top_p", f32_decimal(v)));
        }
        if p.tools > 0 {
            attrs.push(KeyValue::new("modelgate.request.tools", p.tools as i64));
        }
    }
    if let Some(u) = &o.usage {
        attrs.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            i64::from(u.input_tokens),
        ));
        attrs.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            i64::from(u.output_tokens),
        ));
    }
    if let Some(r) = o.stop_reason {
        let reason = serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        attrs.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(reason)].into()),
        ));
    }
    if let Some(r) = o.fallback_reason {
        attrs.push(KeyValue::new("modelgate.fallback_reason", r));
    }
    if let Some(c) = o.time_to_first_token {
        attrs.push(KeyValue::new(
            "modelgate.time_to_first_token_ms",
            c.as_secs_f64() * 1000.0,
        ));
    }
    let category = crate::metrics::error_category(o);
    let status = match category {
        Some(c) => {
            attrs.push(KeyValue::new("error.type", c));
            Status::error(c)
        }
        None => Status::Unset,
    };
    let name: Cow<'static, str> = if model.is_empty() {
        Cow::Borrowed("request")
    } else {
        Cow::Owned(format!("{op} {model}"))
    };
    let (parent, remote) = match &t.parent_span_id {
        Some(p) => (span_id(p), true),
        None => (SpanId::INVALID, false),
    };
    let mut out = vec![span(
        name,
        root_id,
        parent,
        remote,
        SpanKind::Server,
        (start, end),
        attrs,
        status,
    )];
    let child = |name: &'static str, from: SystemTime, to: SystemTime| {
        span(
            Cow::Borrowed(name),
            SpanId::from_bytes(fastrand::u64(1..).to_be_bytes()),
            root_id,
            false,
            SpanKind::Internal,
            (from, to),
            Vec::new(),
            Status::Unset,
        )
    };
    let tl = &o.timeline;
    if let Some(p) = tl.pipeline {
        out.push(child("preprocess", start, at(p)));
        let policy_end = tl.chain.or(tl.answered).unwrap_or(p);
        out.push(child("policy", at(p), at(policy_end)));
    }
    for (i, a) in tl.attempts.iter().enumerate() {
        let mut attrs = vec![
            KeyValue::new("gen_ai.system", a.system),
            KeyValue::new("gen_ai.request.model", a.model.clone()),
            KeyValue::new("modelgate.endpoint", a.provider.clone()),
            KeyValue::new("modelgate.attempt", (i + 1) as i64),
        ];
        let status = match (&a.error, a.status) {
            (Some(e), status) => {
                attrs.push(KeyValue::new("error.type", e.kind.as_str()));
                if let Some(s) = status {
                    attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
                }
                Status::error(e.kind.as_str())
            }
            (None, _) => Status::Unset,
        };
        out.push(span(
            Cow::Owned(format!("upstream {}", a.model)),
            span_id(&a.span_id),
            root_id,
            false,
            SpanKind::Client,
            (at(a.start), at(a.end)),
            attrs,
            status,
        ));
    }
    if let Some(answered) = tl.answered {
        let name = if o.streamed { "stream" } else { "postprocess" };
        out.push(child(name, at(answered), end));
    }
    out
}

impl OutcomeSink for Traces {
    fn record(&self, o: &Outcome) {
        if !o.ctx.trace().sampled {
            return;
        }
        // Probes, scrapes and listings are not worth a trace.
        if !o.is_model_call() {
            return;
        }
        if self.tx.try_send(Box::new(o.clone())).is_err() {
            tracing::debug!("span queue full; a trace was dropped");
        }
    }
}
