//! Invocation records: one per call, for troubleshooting and forensics — who called, from
//! where, which model was asked for and which answered, the settings, status and error
//! category, tokens, cost, latency, time to first token, attempts, fallback reason, trace id —
//! and, where capture is enabled (per model, route, key or team), the request and response
//! with personal data masked.
//!
//! The sink builds the record from the call's outcome and queues it; a writer task masks and
//! bounds the bodies and writes batches to the store, off the call's path, and a purge task
//! deletes records older than the retention period.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use modelgate_store::{InvocationRecord, InvocationStore};
use modelgate_types::Error;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::outcome::{Captured, Outcome, OutcomeSink};
use crate::pipeline::{Answer, Call, Layer, Next, Operation};
use crate::usage::{drain_by, PriceCatalog};

/// `[invocations]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvocationsConfig {
    /// Keep a record of every model call. Default `true`.
    pub enabled: bool,
    /// How long records are kept. Default 30 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often records past the retention period are deleted. Default hourly.
    #[serde(with = "humantime_serde")]
    pub purge_every: Duration,
    /// `[invocations.capture]`: which calls' bodies are kept.
    pub capture: CaptureConfig,
}

impl Default for InvocationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention: Duration::from_secs(30 * 86_400),
            purge_every: Duration::from_secs(3600),
            capture: CaptureConfig::default(),
        }
    }
}

/// `[invocations.capture]`: request and response bodies are kept for calls that match any
/// list (`*` wildcards); none do by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Model names as the client gave them.
    pub models: Vec<String>,
    /// Routes (`/v1/chat/completions`, `/model/{model_id}/converse`).
    pub routes: Vec<String>,
    /// Key ids (or JWT subjects).
    pub keys: Vec<String>,
    /// Teams.
    pub teams: Vec<String>,
    /// Mask emails, card numbers, phone numbers, US social security numbers and credentials
    /// in captured bodies. Default `true`.
    pub mask: bool,
    /// Bodies longer than this (in bytes of JSON) are cut to this length. Default 64 KiB.
    pub max_body_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            routes: Vec::new(),
            keys: Vec::new(),
            teams: Vec::new(),
            mask: true,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl CaptureConfig {
    /// Whether any call's bodies can be captured.
    pub fn is_enabled(&self) -> bool {
        !(self.models.is_empty()
            && self.routes.is_empty()
            && self.keys.is_empty()
            && self.teams.is_empty())
    }

    fn matches(&self, call: &Call) -> bool {
        let any = |patterns: &[String], value: Option<&str>| {
            value.is_some_and(|v| patterns.iter().any(|p| crate::policy::wildcard(p, v, true)))
        };
        let principal = call.ctx.principal();
        any(&self.models, Some(call.op.model()))
            || any(&self.routes, Some(call.ctx.route()))
            || any(&self.keys, principal.map(|p| p.id.as_str()))
            || any(&self.teams, principal.and_then(|p| p.team.as_deref()))
    }
}

/// The layer that captures a call's request (and asks for its whole answer) when the capture
/// rules match it. First in the pipeline, so refused calls are captured too.
#[derive(Debug)]
pub struct Capture {
    config: CaptureConfig,
}

impl Capture {
    /// A capture layer with these rules.
    pub fn new(config: CaptureConfig) -> Self {
        Self { config }
    }
}

/// A chat request in Converse JSON.
fn request_json(op: &Operation) -> Value {
    match op {
        Operation::Converse(r) | Operation::ConverseStream(r) | Operation::CountTokens(r) => {
            let mut v = serde_json::json!({
                "modelId": r.model,
                "messages": r.messages,
                "inferenceConfig": r.inference,
            });
            if !r.system.is_empty() {
                v["system"] = serde_json::to_value(&r.system).unwrap_or(Value::Null);
            }
            if let Some(t) = &r.tools {
                v["toolConfig"] = serde_json::to_value(t).unwrap_or(Value::Null);
            }
            v
        }
        Operation::Embed(r) => match &r.input {
            modelgate_types::EmbedInput::Texts(t) => {
                serde_json::json!({"modelId": r.model, "input": t})
            }
        },
    }
}

#[async_trait]
impl Layer for Capture {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        if self.config.matches(call) {
            let request = request_json(&call.op);
            call.recorder().outcome().captured = Some(Arc::new(Captured {
                request: Some(request),
                response: None,
            }));
            if call.op.is_answer() {
                call.want_response = true;
                call.recorder().on_finish(Box::new(|f| {
                    let response = f.response.map(|r| {
                        serde_json::json!({
                            "output": {"message": r.message},
                            "stopReason": r.stop_reason,
                            "usage": r.usage,
                        })
                    });
                    if let Some(c) = f.outcome.captured.as_mut() {
                        Arc::make_mut(c).response = response;
                    }
                }));
            }
        }
        next.run(call).await
    }
}

/// What is masked, in order: credentials first (they may hold digit runs that look like phone
/// numbers), then emails, US social security numbers and phone numbers. Card numbers are
/// found first of all, by [`CARD`] and the Luhn check.
const RULES: &[(&str, &str)] = &[
    (r"\b(?:mg|sk|pk|rk)[-_][A-Za-z0-9_\-]{16,}", "[SECRET]"),
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", "[SECRET]"),
    (
        r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        "[SECRET]",
    ),
    (
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*",
        "Bearer [SECRET]",
    ),
    (
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
        "[EMAIL]",
    ),
    (r"\b\d{3}-\d{2}-\d{4}\b", "[SSN]"),
    (
        r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\b\d{2,4}[ .\-])\d{3,4}[ .\-]?\d{3,4}\b",
        "[PHONE]",
    ),
];

/// A run of 13 to 19 digits, possibly grouped by spaces or dashes.
const CARD: &str = r"\b\d(?:[ \-]?\d){12,18}\b";

/// Personal data and credentials found in text, each replaced by a tag.
pub struct Masker {
    rules: Vec<(Regex, &'static str)>,
    card: Option<Regex>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Masker")
    }
}

impl Default for Masker {
    fn default() -> Self {
        Self::new()
    }
}

impl Masker {
    /// The shipped rules (a unit test checks they all compile).
    pub fn new() -> Self {
        Self {
            rules: RULES
                .iter()
                .filter_map(|(p, tag)| Regex::new(p).ok().map(|r| (r, *tag)))
                .collect(),
            card: Regex::new(CARD).ok(),
        }
    }

    /// `text` with every match replaced.
    pub fn mask(&self, text: &str) -> String {
        // Card numbers are checked (Luhn) before the other rules, so a long digit run that is
        // not a card is left to the phone rule or kept.
        let mut out = match &self.card {
            Some(card) => card
                .replace_all(text, |c: &regex::Captures<'_>| {
                    if luhn(&c[0]) {
                        "[CARD]".to_string()
                    } else {
                        c[0].to_string()
                    }
                })
                .into_owned(),
            None => text.to_string(),
        };
        for (re, tag) in &self.rules {
            if re.is_match(&out) {
                out = re.replace_all(&out, *tag).into_owned();
            }
        }
        out
    }

    /// Mask every string in a JSON value (keys are kept).
    pub fn mask_json(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                let masked = self.mask(s);
                if masked != *s {
                    *s = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_json(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.mask_json(i)),
            _ => {}
        }
    }
}

/// Whether the digits of `s` pass the Luhn check (card numbers do).
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A captured body as stored: masked, and cut to `max` bytes of JSON (then stored as
/// `{"truncated": true, "bytes": <full length>, "prefix": "<the first max bytes>"}`).
fn body_text(mut v: Value, masker: Option<&Masker>, max: usize) -> String {
    if let Some(m) = masker {
        m.mask_json(&mut v);
    }
    let text = v.to_string();
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": text.len(), "prefix": &text[..cut]}).to_string()
}

/// A record waiting to be written, with its bodies not yet masked.
struct Pending {
    record: InvocationRecord,
    captured: Option<Arc<Captured>>,
}

/// Records queued while the store is slow or down before new ones are dropped (with a
/// warning).
const QUEUE: usize = 100_000;

/// The invocation-record sink.
pub struct InvocationLog {
    prices: PriceCatalog,
    tx: tokio::sync::mpsc::Sender<Pending>,
}

impl std::fmt::Debug for InvocationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvocationLog")
    }
}

impl InvocationLog {
    /// A sink writing into `store`, with a purge task for the retention period. Returns the
    /// sink and the writer task (which ends once every sender is gone and the queue is
    /// written).
    pub fn spawn(
        config: &InvocationsConfig,
        prices: PriceCatalog,
        store: Arc<dyn InvocationStore>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(QUEUE);
        let masker = config.capture.mask.then(|| Arc::new(Masker::new()));
        let max = config.capture.max_body_bytes.max(256);
        let writer = Arc::clone(&store);
        // Batches of 100: each is one short write, so a core shared with the calls is never
        // held for long (the HTTP benchmark's one-core p99 showed 500-row batches).
        let task = tokio::spawn(drain_by(rx, 100, move |batch: Arc<Vec<Pending>>| {
            let store = Arc::clone(&writer);
            let masker = masker.clone();
            async move {
                let records: Vec<InvocationRecord> = batch
                    .iter()
                    .map(|p| {
                        let mut r = p.record.clone();
                        if let Some(c) = &p.captured {
                            r.request_body = c
                                .request
                                .clone()
                                .map(|v| body_text(v, masker.as_deref(), max));
                            r.response_body = c
                                .response
                                .clone()
                                .map(|v| body_text(v, masker.as_deref(), max));
                        }
                        r
                    })
                    .collect();
                store.append_invocations(&records).await
            }
        }));
        crate::retention::spawn_purge(
            "invocation records",
            config.retention,
            config.purge_every,
            move |cut| {
                let store = Arc::clone(&store);
                async move { store.purge_invocations(cut).await }
            },
        );
        (Arc::new(Self { prices, tx }), task)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl OutcomeSink for InvocationLog {
    fn record(&self, o: &Outcome) {
        // Health probes, metrics scrapes, model listings and the admin API are not model calls
        // (admin actions are in the audit log).
        if !o.is_model_call() {
            return;
        }
        let usage = o.usage.unwrap_or_default();
        let principal = o.ctx.principal();
        let received = o
            .ctx
            .received_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let record = InvocationRecord {
            id: 0,
            ts_ms: received,
            request_id: o.ctx.request_id().to_string(),
            trace_id: Some(o.ctx.trace().trace_id.clone()),
            key_id: principal.map(|p| p.id.clone()),
            team: principal.and_then(|p| p.team.clone()),
            source_ip: o.ctx.source().map(|a| a.ip().to_string()),
            dialect: o.ctx.dialect().as_str().to_string(),
            route: format!("{} {}", o.ctx.method(), o.ctx.route()),
            operation: o.operation.map(|op| op.as_str().to_string()),
            model_requested: o.model_requested.clone(),
            model_routed: o.model_routed.clone(),
            model_served: o.model_served.clone(),
            provider: o.provider.clone(),
            status: i64::from(o.status),
            error_category: crate::metrics::error_category(o).map(str::to_string),
            error_code: o.error.as_ref().and_then(|e| e.code).map(str::to_string),
            attempts: i64::from(o.attempts),
            fallback_reason: o.fallback_reason.map(str::to_string),
            input_tokens: i64::from(usage.input_tokens),
            output_tokens: i64::from(usage.output_tokens),
            cache_read_tokens: i64::from(usage.cache_read_input_tokens),
            cache_write_tokens: i64::from(usage.cache_write_input_tokens),
            cost_nanos: self.prices.cost(o),
            latency_us: micros(o.duration),
            ttft_us: o.time_to_first_token.map(micros),
            streamed: o.streamed,
            cancelled: o.cancelled,
            params: o
                .params
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok())
                .unwrap_or(Value::Null),
            request_body: None,
            response_body: None,
            routing: o
                .routing
                .as_ref()
                .and_then(|d| serde_json::to_value(&**d).ok()),
        };
        let pending = Pending {
            record,
            captured: o.captured.clone(),
        };
        if self.tx.try_send(pending).is_err() {
            tracing::warn!("invocation queue full; an invocation record was dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_personal_data_and_credentials_and_keeps_the_rest() {
        let m = Masker::new();
        assert_eq!(m.rules.len(), RULES.len());
        assert!(m.card.is_some());
        let text = "Mail jane.doe@example.com or call +1 415-555-0132; card 4111 1111 1111 1111, \
                    ssn 123-45-6789, key mg_abcdefghijklmnop1234 and sk-proj-ABCDEFGHIJKLMNOPQRST, \
                    AKIAIOSFODNN7EXAMPLE. Order 1234567890123 ships on 2026-11-30 at 10:30.";
        let masked = m.mask(text);
        for gone in [
            "jane.doe@example.com",
            "4111 1111 1111 1111",
            "123-45-6789",
            "mg_abcdefghijklmnop1234",
            "sk-proj-ABCDEFGHIJKLMNOPQRST",
            "AKIAIOSFODNN7EXAMPLE",
            "415-555-0132",
        ] {
            assert!(!masked.contains(gone), "{gone} survived: {masked}");
        }
        for tag in ["[EMAIL]", "[CARD]", "[SSN]", "[SECRET]", "[PHONE]"] {
            assert!(masked.contains(tag), "{tag} missing: {masked}");
        }
        // Not a card (fails Luhn), a date and a time: kept.
        assert!(masked.contains("1234567890123"), "{masked}");
        assert!(masked.contains("2026-11-30 at 10:30"), "{masked}");
    }

    #[test]
    fn json_strings_are_masked_in_place_and_long_bodies_cut() {
        let m = Masker::new();
        let mut v = serde_json::json!({"messages": [{"content": [{"text": "to a@b.io\nthanks"}]}]});
        m.mask_json(&mut v);
        assert_eq!(v["messages"][0]["content"][0]["text"], "to [EMAIL]\nthanks");
        let long = serde_json::json!({"text": "é".repeat(1000)});
        let stored = body_text(long, Some(&m), 301);
        let back: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(back["truncated"], true);
        assert!(back["prefix"].as_str().unwrap().len() <= 301);
    }

    #[test]
    fn luhn_accepts_cards_only() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500 0000 0000 0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("123456"));
    }
}
