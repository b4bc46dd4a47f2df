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
}

impl Outcome {
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
    /// The outcome being recorded.
    pub outcome: &'a Outcome,
    /// The error the call ended with.
    pub error: Option<&'a Error>,
    /// The whole answer, when the call produced one and a layer asked for it
    /// ([`crate::pipeline::Call::want_response`]); a stream's events folded.
    pub response: Option<&'a ChatResponse>,
}

/// Per-call work to do when the call ends, before the outcome reaches the sinks.
pub type Finisher = Box<dyn FnOnce(&Finished<'_>) + Send>;

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
        let finished = Finished {
            outcome: &outcome,
            error,
            response,
        };
        for finisher in self.finishers.drain(..) {
            finisher(&finished);
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
