//! One outcome per call: the single record of how a call ended, written exactly once — when
//! a whole answer or an error is returned, when a stream ends (cleanly or with an error), or
//! when the client goes away mid-stream.
//!
//! Everything that reports on calls reads this one value: the access log line today, and
//! usage accounting, metrics, invocation records and alerts as they arrive. They register an
//! [`OutcomeSink`]; none of them wraps a stream on its own. Per-call work that depends on how
//! the call ended (the breaker's verdict on a stream, storing an answer for the degraded
//! levels) registers a [`Finisher`] on the call instead.

use std::sync::Arc;
use std::time::Duration;

use modelgate_types::{ChatResponse, Error, ErrorKind, ErrorSource, Usage};
use tokio::time::Instant;

use crate::context::CallContext;

/// Which pipeline operation a call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// A chat answered whole.
    Converse,
    /// A streamed chat.
    ConverseStream,
    /// Embeddings.
    Embed,
    /// Token counting.
    CountTokens,
}

impl OperationKind {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Converse => "converse",
            OperationKind::ConverseStream => "converse_stream",
            OperationKind::Embed => "embed",
            OperationKind::CountTokens => "count_tokens",
        }
    }
}

/// The classification of a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Who is at fault.
    pub source: ErrorSource,
    /// The machine-readable code, when there is one.
    pub code: Option<&'static str>,
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind,
            source: e.source,
            code: e.code,
        }
    }
}

/// How one call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Who called and how: request id, dialect, method and route, source address, principal
    /// (shared with the call, not copied).
    pub ctx: CallContext,
    /// The pipeline operation, `None` for calls that never reached the pipeline (a body that
    /// does not parse, a health probe).
    pub operation: Option<OperationKind>,
    /// The model the client asked for.
    pub model_requested: Option<String>,
    /// The configured id of the model the request was routed to (aliases and AWS id forms
    /// resolved); `None` when routing did not happen or failed. A bounded label for metrics.
    pub model_routed: Option<String>,
    /// The model that answered (`cache` / `static` for the degraded levels).
    pub model_served: Option<String>,
    /// The provider endpoint that answered.
    pub provider: Option<String>,
    /// Upstream attempts made, over every model tried.
    pub attempts: u32,
    /// Why the requested model did not answer, when it did not.
    pub fallback_reason: Option<&'static str>,
    /// Tokens used. For a stream cut short this is what was streamed so far
    /// (`usage_complete` false): the prompt's count when the provider gave it, and one output
    /// token per content delta.
    pub usage: Option<Usage>,
    /// Whether `usage` is the provider's final figure.
    pub usage_complete: bool,
    /// The HTTP status the call ended with: for a stream that failed midway, the status of its
    /// error (the client saw a 200 head and then the error event).
    pub status: u16,
    /// The error, when the call failed.
    pub error: Option<ErrorInfo>,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Whether the client went away before the call ended.
    pub cancelled: bool,
    /// Time from receipt to the first content sent (streams and whole answers alike).
    pub time_to_first_token: Option<Duration>,
    /// Time from receipt to the end of the call (a stream's last byte).
    pub duration: Duration,
    /// The settings the call asked for (never content).
    pub params: Option<CallParams>,
    /// The request and response, when body capture is enabled for the call
    /// ([`crate::invocations::Capture`]).
    pub captured: Option<std::sync::Arc<Captured>>,
    /// Why the model stopped, when it answered.
    pub stop_reason: Option<modelgate_types::StopReason>,
    /// When each stage of the call began and ended (for traces).
    pub timeline: Timeline,
    /// What the response cache did (hit, miss…, what a hit saved), when it looked.
    pub cache: Option<crate::cache::CacheReport>,
    /// How a virtual model was routed.
    pub routing: Option<Arc<crate::routing::RoutingDecision>>,
    /// What the guardrails did, when any applied.
    pub guardrail: Option<crate::guardrails::layer::GuardrailReport>,
}

/// When the stages of a call happened: the pipeline's start, the model chain's start, each
/// upstream attempt, the answer in hand. Instants on the call's clock; the trace exporter
/// turns them into spans.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The pipeline took the call (everything before: authentication, body parsing and
    /// translation).
    pub pipeline: Option<Instant>,
    /// The model chain started (everything between: authorisation, validation, limits,
    /// routing).
    pub chain: Option<Instant>,
    /// The upstream attempts, in order.
    pub attempts: Vec<Attempt>,
    /// The answer (or a stream's first output) was in hand.
    pub answered: Option<Instant>,
}

/// One upstream attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Its span id in the call's trace (sent upstream in `traceparent`).
    pub span_id: String,
    /// The model tried.
    pub model: String,
    /// The provider endpoint tried.
    pub provider: String,
    /// The upstream's kind (`openai`, `anthropic`, `aws.bedrock`, `modelgate`).
    pub system: &'static str,
    /// When it started.
    pub start: Instant,
    /// When it ended (a stream: its first output).
    pub end: Instant,
    /// How it failed.
    pub error: Option<ErrorInfo>,
    /// The HTTP status it failed with.
    pub status: Option<u16>,
}

/// The settings a call asked for, for the invocation record: sizes and switches, never
/// content.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CallParams {
    /// Messages in the conversation (or texts to embed).
    pub messages: usize,
    /// The most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "decimal")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "decimal")]
    pub top_p: Option<f32>,
    /// Stop sequences given.
    #[serde(skip_serializing_if = "is_zero")]
    pub stop_sequences: usize,
    /// Tools declared.
    #[serde(skip_serializing_if = "is_zero")]
    pub tools: usize,
    /// Structured output asked for (`json_object`, `json_schema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<&'static str>,
    /// The reasoning budget, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_budget: Option<u32>,
}

/// An `f32` as the decimal the caller wrote (0.3, not 0.30000001192092896).
pub fn f32_decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

fn decimal<S: serde::Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_f64(f32_decimal(*v)),
        None => s.serialize_none(),
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CallParams {
    /// The settings of a chat request.
    pub fn of_chat(r: &modelgate_types::ChatRequest) -> Self {
        Self {
            messages: r.messages.len(),
            max_tokens: r.inference.max_tokens,
            temperature: r.inference.temperature,
            top_p: r.inference.top_p,
            stop_sequences: r.inference.stop_sequences.len(),
            tools: r.tools.as_ref().map_or(0, |t| t.tools.len()),
            response_format: r.response_format.as_ref().map(|f| match f {
                modelgate_types::ResponseFormat::JsonObject => "json_object",
                modelgate_types::ResponseFormat::JsonSchema { .. } => "json_schema",
            }),
            reasoning_budget: r.reasoning.map(|r| r.budget_tokens),
        }
    }
}

/// A call's request and response in canonical (Converse) JSON, as captured — masked and
/// bounded in size when the record is written, off the call's path.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The request.
    pub request: Option<serde_json::Value>,
    /// The answer (a stream's events folded); `None` for a failed or cancelled call.
    pub response: Option<serde_json::Value>,
}

impl Outcome {
    /// Whether the call was (or tried to be) a model call: it reached the pipeline, or it was
    /// a request to a model route refused before (a body that does not parse, a credential
    /// refused). Not: health probes, scrapes, the admin API, model listings.
    pub fn is_model_call(&self) -> bool {
        self.operation.is_some()
            || (self.ctx.dialect() != crate::context::Dialect::Modelgate
                && self.ctx.method() != "GET")
    }

    /// An outcome for `ctx` with nothing known yet beyond the context.
    pub fn for_context(ctx: &CallContext) -> Self {
        Self {
            ctx: ctx.clone(),
            operation: None,
            model_requested: None,
            model_routed: None,
            model_served: None,
            provider: None,
            attempts: 0,
            fallback_reason: None,
            usage: None,
            usage_complete: false,
            status: 200,
            error: None,
            streamed: false,
            cancelled: false,
            time_to_first_token: None,
            duration: Duration::ZERO,
            params: None,
            captured: None,
            stop_reason: None,
            timeline: Timeline::default(),
            cache: None,
            routing: None,
            guardrail: None,
        }
    }
}

/// Something that reads every call's outcome (access log, usage, metrics, records).
///
/// `record` runs on the request's task when the call ends; a sink that does IO queues the
/// outcome and writes it elsewhere, off the hot path.
pub trait OutcomeSink: Send + Sync + 'static {
    /// Take one outcome.
    fn record(&self, outcome: &Outcome);
}

/// The access log: one line per call, written from its outcome (for a stream, at its end, with
/// its real final status and full duration). Never contains bodies or prompt text.
#[derive(Debug, Default)]
pub struct AccessLog;

impl OutcomeSink for AccessLog {
    /// The line is written inside the request's span, which carries the request id and
    /// dialect; flags and figures are written only when they say something, and times are
    /// whole microseconds — the line is on the hot path of every call.
    fn record(&self, o: &Outcome) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let error = o.error.as_ref().map(|e| e.kind.as_str());
        let (input_tokens, output_tokens) = o.usage.map_or((None, None), |u| {
            (Some(u.input_tokens), Some(u.output_tokens))
        });
        tracing::info!(
            method = o.ctx.method(),
            route = o.ctx.route(),
            status = o.status,
            latency_us = us(o.duration),
            ttft_us = o.time_to_first_token.map(us),
            model = o.model_requested.as_deref(),
            served_by = o
                .model_served
                .as_deref()
                .filter(|s| Some(*s) != o.model_requested.as_deref()),
            provider = o.provider.as_deref(),
            attempts = (o.attempts > 1).then_some(o.attempts),
            fallback = o.fallback_reason,
            cache = o.cache.as_ref().map(|c| c.status.as_str()),
            router = o.routing.as_ref().map(|d| d.router.as_str()),
            arm = o.routing.as_ref().and_then(|d| d.arm.as_deref()),
            guardrail = o.guardrail.as_ref().map(|g| g.action()),
            input_tokens,
            output_tokens,
            streamed = o.streamed.then_some(true),
            cancelled = o.cancelled.then_some(true),
            error,
            error_code = o.error.as_ref().and_then(|e| e.code),
            "request"
        );
    }
}

/// What the finishing call hands each [`Finisher`].
#[derive(Debug)]
pub struct Finished<'a> {
    /// The outcome being recorded (a finisher may add what only it knows).
    pub outcome: &'a mut Outcome,
    /// The error the call ended with.
    pub error: Option<&'a Error>,
    /// The whole answer, when the call produced one and a layer asked for it
    /// ([`crate::pipeline::Call::want_response`]); a stream's events folded.
    pub response: Option<&'a ChatResponse>,
}

/// Per-call work to do when the call ends, before the outcome reaches the sinks.
pub type Finisher = Box<dyn FnOnce(&mut Finished<'_>) + Send>;

/// The sinks every outcome goes to.
#[derive(Clone, Default)]
pub struct Sinks(Arc<Vec<Arc<dyn OutcomeSink>>>);

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sinks({})", self.0.len())
    }
}

impl Sinks {
    /// These sinks.
    pub fn new(sinks: Vec<Arc<dyn OutcomeSink>>) -> Self {
        Self(Arc::new(sinks))
    }

    /// Send `outcome` to every sink.
    pub fn emit(&self, outcome: &Outcome) {
        for sink in self.0.iter() {
            sink.record(outcome);
        }
    }
}

/// The pending outcome of one call: filled as the call runs, recorded exactly once by
/// [`Recorder::finish`] — or, if it is dropped unfinished (the client went away while a stream
/// was being sent), as a cancelled call.
pub struct Recorder {
    ctx: CallContext,
    outcome: Option<Outcome>,
    finishers: Vec<Finisher>,
    sinks: Sinks,
}

impl Recorder {
    /// A recorder for a call the pipeline now owns.
    pub fn new(ctx: &CallContext, sinks: Sinks) -> Self {
        ctx.claim_outcome();
        Self {
            ctx: ctx.clone(),
            outcome: Some(Outcome::for_context(ctx)),
            finishers: Vec::new(),
            sinks,
        }
    }

    /// The outcome so far.
    pub fn outcome(&mut self) -> &mut Outcome {
        self.outcome
            .get_or_insert_with(|| Outcome::for_context(&self.ctx))
    }

    /// Work to run when the call ends.
    pub fn on_finish(&mut self, finisher: Finisher) {
        self.finishers.push(finisher);
    }

    /// Mark the first content as sent now.
    pub fn first_token(&mut self) {
        let at = self.ctx.received().elapsed();
        self.outcome().time_to_first_token.get_or_insert(at);
    }

    /// End the call: run the finishers, then hand the outcome to every sink.
    pub fn finish(mut self, error: Option<&Error>, response: Option<&ChatResponse>) {
        self.complete(error, response, false);
    }

    fn complete(
        &mut self,
        error: Option<&Error>,
        response: Option<&ChatResponse>,
        cancelled: bool,
    ) {
        let Some(mut outcome) = self.outcome.take() else {
            return;
        };
        outcome.duration = Instant::now().saturating_duration_since(self.ctx.received());
        outcome.cancelled = cancelled;
        if let Some(e) = error {
            outcome.status = e.status();
            outcome.error = Some(ErrorInfo::from(e));
        } else if cancelled {
            // nginx's "client closed request": the client left before the answer ended.
            outcome.status = 499;
        }
        let mut finished = Finished {
            outcome: &mut outcome,
            error,
            response,
        };
        for finisher in self.finishers.drain(..) {
            finisher(&mut finished);
        }
        let _entered = self.ctx.span().enter();
        self.sinks.emit(&outcome);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.outcome.is_some() {
            self.complete(None, None, true);
        }
    }
}

/// Record the outcome of a request that never reached the pipeline (a body that does not
/// parse, an unknown route, a health probe) — unless the pipeline already took it.
pub fn record_plain(ctx: &CallContext, sinks: &Sinks, status: u16, error: Option<ErrorInfo>) {
    if ctx.claim_outcome() {
        return;
    }
    let mut outcome = Outcome::for_context(ctx);
    outcome.status = status;
    outcome.error = error;
    outcome.duration = Instant::now().saturating_duration_since(ctx.received());
    let _entered = ctx.span().enter();
    sinks.emit(&outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Capture(Mutex<Vec<Outcome>>);
    impl OutcomeSink for Capture {
        fn record(&self, o: &Outcome) {
            self.0.lock().unwrap().push(o.clone());
        }
    }

    #[test]
    fn a_dropped_recorder_is_a_cancelled_call_and_each_call_records_once() {
        let capture = Arc::new(Capture::default());
        let sinks = Sinks::new(vec![capture.clone()]);
        let ctx = CallContext::internal();
        let mut r = Recorder::new(&ctx, sinks.clone());
        r.outcome().usage = Some(Usage::new(3, 2));
        drop(r);
        // The pipeline owned it: the HTTP layer's plain record is skipped.
        record_plain(&ctx, &sinks, 200, None);
        let seen = capture.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].cancelled);
        assert_eq!(seen[0].status, 499);
        assert_eq!(seen[0].usage.unwrap().output_tokens, 2);

        let other = CallContext::internal();
        record_plain(&other, &sinks, 404, None);
        assert_eq!(capture.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn finishers_see_the_error_before_the_sinks() {
        let capture = Arc::new(Capture::default());
        let ctx = CallContext::internal();
        let mut r = Recorder::new(&ctx, Sinks::new(vec![capture.clone()]));
        let seen = Arc::new(Mutex::new(None));
        let s = Arc::clone(&seen);
        r.on_finish(Box::new(move |f| {
            *s.lock().unwrap() = f.error.map(|e| e.status());
        }));
        r.finish(
            Some(&Error::new(ErrorKind::ServiceUnavailable, "down")),
            None,
        );
        assert_eq!(*seen.lock().unwrap(), Some(503));
        let o = capture.0.lock().unwrap()[0].clone();
        assert_eq!((o.status, o.cancelled), (503, false));
        assert_eq!(o.error.unwrap().kind, ErrorKind::ServiceUnavailable);
    }
}
